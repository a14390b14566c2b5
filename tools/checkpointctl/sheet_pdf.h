// Lays out an evidence sheet (sheet_content.h) as an A4 PDF with cairo and pango (CJK shaping, the font
// embedded as a subset), the pictures embedded as their original JPEG bytes, and a QR code (libqrencode).
#pragma once

#include <map>
#include <string>

#include "tools/checkpointctl/sheet_content.h"

namespace cpd::ctl {

// Writes the PDF at `path`. `pictures` maps sha256 to the picture's bytes, already checked against the hash
// by the caller; a picture that cannot be decoded is shown as a box saying why. Returns an error message, or
// an empty string on success. Releases pango's and fontconfig's process-wide caches before it returns: one
// sheet per process (checkpointctl), or the next call builds them again.
std::string render_sheet_pdf(const SheetContent& content, const std::map<std::string, std::string>& pictures,
                             const std::string& path);

}  // namespace cpd::ctl
