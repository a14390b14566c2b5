// The time formats devices send, parsed without I/O or a clock: ISO 8601 instants with their UTC offset
// (camera ISAPI, recorder dock), and the camera's "yyyyMMddHHmmssSSS" local picture time.
#pragma once

#include <optional>
#include <string_view>

#include "daemon/core/time.h"

namespace cpd::adapters {

// An ISO 8601 instant with a UTC offset ("2026-11-27T11:38:54.123+08:00", "...Z"; 1 to 9 fraction digits,
// milliseconds kept). The offset is required: a time without one has no instant.
struct IsoTime {
  UnixMs unix_ms = 0;
  int utc_offset_min = 0;  // minutes east of UTC as written
  bool has_fraction = false;
};
std::optional<IsoTime> parse_iso8601(std::string_view text);

// The picture timestamp "yyyyMMddHHmmssSSS" in the camera's local time, given that time's UTC offset.
std::optional<UnixMs> parse_abs_time(std::string_view text, int utc_offset_min);

}  // namespace cpd::adapters
