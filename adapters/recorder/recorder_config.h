// The recorder docking station's config section (kind: recorder_dock): where the station is, its token,
// how often to poll and how many files to download at once.
#pragma once

#include <cstdint>
#include <string>

namespace cpd::config {
class Section;
}

namespace cpd::adapters {

struct RecorderDockConfig {
  std::string id;
  std::string url;   // http://host[:port][/base]
  std::string host;  // parsed from url
  std::uint16_t port = 80;
  std::string base_path;  // "" or "/base" (no trailing slash)
  std::string
      token_file;     // bearer token read from this file (mode 0600 or stricter, trailing newline stripped)
  std::string token;  // filled at load; never logged or written to records
  int poll_interval_ms = 5000;       // /status and /files
  int list_limit = 100;              // `limit` per listing, 1..500
  int max_parallel_downloads = 2;    // 1..16
  int request_timeout_s = 30;        // status, listing, ack
  int download_idle_timeout_s = 60;  // a download with no bytes for this long is broken (resumed with Range)
  int max_md5_attempts = 3;          // whole-file downloads before the file becomes a fault record
  int reconnect_initial_ms = 500;
  int reconnect_max_ms = 30000;
  int auth_backoff_s = 60;             // after a 401: wait this long before asking again
  int recorder_clock_tolerance_s = 5;  // recorder times this far beyond the station's clock count as off
  // Files taken from the station (listed and persisted) and not yet acknowledged or closed by a fault
  // record, and the bytes of their listing entries: beyond either, new files stay on the station (the
  // cursor does not move past them) until there is room. Bounds memory and the dock ledger per station.
  int max_pending_files = 1000;
  std::int64_t max_pending_entry_bytes = std::int64_t{16} * 1024 * 1024;

  bool operator==(const RecorderDockConfig&) const = default;
};

// Reads and checks the section; errors name file:line:column and key (config::ConfigError).
RecorderDockConfig parse_recorder_dock_config(config::Section& device);

}  // namespace cpd::adapters
