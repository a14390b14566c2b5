// The recorder-clock rule (docs/records.md, "Recorder clocks"), beside the rest of validity: whether a
// collected file's recorder times are provably off, by how much, and its span corrected to the gateway clock.
// Pure: times come in (the dock adapter reports when it listed the file and the station's measured offset).
#pragma once

#include <cstdint>
#include <optional>

#include "adapters/events.h"

namespace cpd::pipeline {

struct RecorderClockReading {
  std::int64_t recorder_offset_ms = 0;  // recorder clock minus station clock, 0 unless provably off
  bool recorder_clock_off = false;      // provably ahead by more than the tolerance: corrected
  UnixMs start_ms = 0;                  // the recording's span on the gateway clock
  UnixMs end_ms = 0;
};

// The recorder is provably ahead when it collected "after" the station's clock at the listing (listed_ms,
// gateway time, plus the station's offset when measured), or ended a recording after collecting it; a
// recorder that is behind cannot be seen from the dock's interface.
RecorderClockReading read_recorder_clock(const adapters::DockFile& file, UnixMs listed_ms,
                                         const std::optional<adapters::StationClock>& station,
                                         int tolerance_s);

}  // namespace cpd::pipeline
