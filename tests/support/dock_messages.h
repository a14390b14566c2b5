// Builders for the docking station's JSON messages (../shared/specs/recorder-dock.md): a listed file entry,
// a listing page, the station status, an error body, an ack answer. Shared by the dock simulator and the
// recorder adapter's unit fake, so both answer in one form; members in the spec's order. Hostile variants
// (raw bytes no JSON library writes) stay hand-written in the tests that need them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cpd::test {

struct DockGpsFix {
  std::string time;  // ISO 8601 with offset
  double lat = 0;
  double lon = 0;
};

// One file as `GET /api/v1/files` lists it.
struct DockEntry {
  std::string unique_id;
  std::string device_id = "BWC-00917";
  std::string officer_id = "330102198801010011";
  std::string officer_name = "王伟";
  std::string case_code;
  std::string file_name;
  std::string file_type = "video";  // video, audio, photo
  std::string format = "mp4";       // mp4, wav, jpg
  std::int64_t length = 0;
  std::string md5;
  std::string start_time;
  std::string end_time;
  std::string collect_time;
  bool important = false;
  std::vector<DockGpsFix> gps;
};

// `GET /api/v1/status`.
struct DockStatus {
  std::string station_id = "DS-2011-0042";
  std::string firmware = "3.4.1";
  std::string time;
  int slots = 8;
  std::vector<std::string> docked;
  std::int64_t free_bytes = 512000000000;
};

// The examples of recorder-dock.md, verbatim (its whitespace and cursor included): the parser's tests and
// the fuzz seeds start from the vendor's own text.
extern const char* const kDockSpecStatus;
extern const char* const kDockSpecEntry;
// `{"files":[<kDockSpecEntry>], "next":"<cursor>"}` as the spec writes it.
std::string dock_spec_listing();

nlohmann::ordered_json dock_entry_json(const DockEntry& entry);
// `{"files":[…],"next":"…"}` from entries already serialised (a test may splice in a raw, hostile one).
std::string dock_listing_json(const std::vector<std::string>& entries, const std::string& next);
std::string dock_status_json(const DockStatus& status);
// `{"error":"…"}` (401 unauthorized, 400 bad cursor, 404 not found, 409 checksum mismatch).
std::string dock_error_json(const std::string& what);
// The answer to an accepted ack: `{"acked":true}`.
std::string dock_acked_json();

}  // namespace cpd::test
