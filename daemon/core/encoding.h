// Byte encodings used by the evidence format: lower-case hex, base64url without padding, SHA-256.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cpd {

std::string hex_lower(std::string_view bytes);
std::string base64url_encode(std::string_view bytes);
// nullopt on any character outside the base64url alphabet, on padding, or an impossible length.
std::optional<std::string> base64url_decode(std::string_view text);
std::string sha256_raw(std::string_view bytes);   // 32 bytes
std::string sha256_hex(std::string_view bytes);   // 64 lower-case hex digits

}  // namespace cpd
