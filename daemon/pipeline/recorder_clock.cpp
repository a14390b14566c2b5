// The recorder-clock rule (recorder_clock.h).
#include "daemon/pipeline/recorder_clock.h"

#include <algorithm>

namespace cpd::pipeline {

RecorderClockReading read_recorder_clock(const adapters::DockFile& file, UnixMs listed_ms,
                                         const std::optional<adapters::StationClock>& station,
                                         int tolerance_s) {
  const std::int64_t station_offset = station ? station->offset_ms : 0;
  const std::int64_t beyond_station = file.collect_ms - (listed_ms + station_offset);
  const std::int64_t beyond_collect = file.end_ms - file.collect_ms;
  const std::int64_t ahead = std::max(beyond_station, beyond_collect);
  RecorderClockReading r;
  if (ahead > std::int64_t{tolerance_s} * 1000) {
    r.recorder_offset_ms = ahead;
    r.recorder_clock_off = true;
  }
  r.start_ms = file.start_ms - r.recorder_offset_ms - station_offset;
  r.end_ms = file.end_ms - r.recorder_offset_ms - station_offset;
  return r;
}

}  // namespace cpd::pipeline
