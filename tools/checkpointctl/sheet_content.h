// What an evidence sheet says, decided from a verified record alone (pure: no PDF, no files): the title, a
// warning when the record may not be used for enforcement, every case-file element in Chinese with the units
// a person reads, the validity checks, the pictures and how to verify the record offline. sheet_pdf.cpp lays
// it out; tests read it without rendering.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace cpd::ctl {

struct SheetRow {
  std::string label;  // Chinese, with the English word after it
  std::string value;
};

struct SheetSection {
  std::string title;
  std::vector<SheetRow> rows;
};

struct SheetCheck {
  std::string label;
  bool ok = false;
  std::string detail;  // what the check saw, e.g. "2 / 2"
};

struct SheetPicture {
  std::string sha256;
  std::string caption;  // role, size in pixels, capture time
};

struct SheetContent {
  std::string title;     // e.g. 道路交通安全违法行为图像取证记录
  std::string subtitle;  // the same in English
  std::string record_id;
  // Set when the record carries `enforceable: false`: shown at the top of the first page, with `reasons`.
  bool not_enforceable = false;
  std::vector<std::string> reasons;  // each as "中文 (code)"
  std::vector<SheetSection> sections;
  std::vector<SheetCheck> checks;
  std::vector<SheetPicture> pictures;
  std::string qr_text;                       // what the QR code holds: id, kid, SHA-256 of the JWS
  std::vector<std::string> verify_commands;  // shell lines a reader types to verify the record with openssl
};

// `body`: the verified record's body; `kid`: its JWS key id; `jws_sha256`: lower-case hex SHA-256 of the
// exact JWS bytes; `links`: the bodies of verified `link` records naming this record (found beside it in an
// export or a store): each is listed, and for a `speeding` record GA/T 832's "one panorama plus video"
// becomes a check of its own (met when a link says so). Values from the record are cut at 300 characters (a
// device's text is bounded here too).
SheetContent sheet_content(const nlohmann::json& body, std::string_view kid, std::string_view jws_sha256,
                           const std::vector<nlohmann::json>& links = {});

// "2026-11-27 11:38:54.123 (UTC+08:00)": `ms` (UTC) in the site's offset (`±HH:MM`); UTC when malformed.
std::string local_time_text(std::int64_t ms, std::string_view utc_offset);

}  // namespace cpd::ctl
