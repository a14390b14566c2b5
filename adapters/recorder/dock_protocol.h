// The recorder docking station's HTTP/JSON interface (specs/recorder-dock.md): request targets and the
// parsing of its answers, with bounds and errors that name the field. Pure: no I/O, no clock (fuzzable).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/events.h"

namespace cpd::adapters {

// Bounds on what a station may send; beyond them the answer is rejected with a counted reason.
inline constexpr std::size_t kDockMaxJsonBytes = 8 * 1024 * 1024;  // one listing (500 files with GPS)
inline constexpr std::size_t kDockMaxFiles = 500;                  // per listing (spec: limit <= 500)
inline constexpr std::size_t kDockMaxGpsPoints = 100000;           // per file
inline constexpr std::size_t kDockMaxText = 1024;                  // any string field
inline constexpr std::int64_t kDockMaxFileBytes = std::int64_t{64} * 1024 * 1024 * 1024;  // 64 GiB

struct DockStatus {
  std::string station_id;
  std::string firmware;
  std::string time;                // as sent
  UnixMs time_ms = 0;              // the instant
  bool time_has_fraction = false;  // false: whole seconds (resolution 1000 ms)
  int slots = 0;
  std::vector<std::string> docked;
  std::int64_t free_bytes = 0;
};

// A parse failure: `reason` is a short counter key (json, schema, bounds, not_utf8, duplicate_key);
// `detail` names the field, e.g. "files[3].md5: expected 32 hex digits".
struct DockParseError {
  std::string reason;
  std::string detail;
};

// A listing entry refused on its own (the other entries are still read): it becomes a recording_fault
// record, so one bad entry never blocks the files listed with or after it.
struct DockRefusedEntry {
  std::size_t index = 0;  // position in the answer's `files`
  DockParseError error;   // detail starts with "files[<index>]"
  std::string raw;        // the entry's bytes exactly as sent (may be invalid UTF-8)
  // The ledger key: the listed uniqueId and md5 when both are well-formed, else
  // "refused-<first 32 hex digits of the SHA-256 of raw>" and "" (never a station's key: its md5 is empty).
  std::string unique_id;
  std::string md5;
};

struct DockListing {
  std::vector<DockFile> files;            // entries read, in listing order
  std::vector<DockRefusedEntry> refused;  // entries refused, in listing order
  std::string next;                       // as sent (may be any bytes: it is opaque and only sent back)
};

// Exactly one of value/error is set.
template <typename T>
struct DockParsed {
  std::optional<T> value;
  DockParseError error;
  explicit operator bool() const { return value.has_value(); }
};

DockParsed<DockStatus> parse_dock_status(std::string_view body);
// Every entry is checked (valid UTF-8, no member named twice, types, required fields, fileType/format
// values, md5 = 32 hex digits (stored lower case), length >= 0 and <= kDockMaxFileBytes, times ISO 8601
// with an offset, uniqueId a safe path component). A bad entry is refused alone (DockListing::refused);
// only a broken envelope (not JSON, files/next missing or malformed, too many entries, too deep outside
// the entries, a top-level member named twice) fails the whole listing.
DockParsed<DockListing> parse_dock_listing(std::string_view body);
// One listing entry on its own (DockFile::raw_json or DockRefusedEntry::raw as persisted in the dock
// ledger), same checks; errors name the field without the "files[i]." prefix.
DockParsed<DockFile> parse_dock_file(std::string_view entry_json);
// The "error" member of a 4xx body ("unauthorized", "bad cursor", ...); empty when there is none.
std::string dock_error_text(std::string_view body);

// Request targets below the station's base path ("" or "/prefix" from the configured URL).
std::string dock_status_target(std::string_view base_path);
std::string dock_files_target(std::string_view base_path, std::string_view cursor,
                              int limit);  // cursor "" = first call
std::string dock_content_target(std::string_view base_path, std::string_view unique_id);
std::string dock_ack_target(std::string_view base_path, std::string_view unique_id);
std::string dock_ack_body(std::string_view sha256_hex);  // {"sha256":"<hex>"}

// A 206 answer's Content-Range, "bytes <from>-<to>/<total>", as numbers; nullopt when it is anything else
// (another unit, "*", a missing part, more than 18 digits).
struct DockContentRange {
  std::int64_t from = 0;
  std::int64_t to = 0;
  std::int64_t total = 0;
};
std::optional<DockContentRange> parse_content_range(std::string_view value);

// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
std::string url_encode_query(std::string_view value);

}  // namespace cpd::adapters
