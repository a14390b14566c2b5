// Maps the radar's own clock (centiseconds since power-up, wrapping at 100000 s) to UTC milliseconds.
// Pure: receive times come in as arguments, so tests drive drift, wraps, jitter and reboots.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

#include "adapters/events.h"
#include "daemon/core/time.h"

namespace cpd::adapters {

class RadarClockMapper {
 public:
  struct Mapping {
    std::int64_t radar_time_cs = 0;  // unwrapped within the current epoch
    UnixMs utc_ms = 0;               // with the estimate after this sample
    bool new_epoch = false;          // this sample started a new epoch (radar reboot or clock step)
  };

  // window_s: sliding window of the minimum-offset filter. reboot_threshold_ms: an offset change
  // beyond this that delay cannot explain means the radar clock restarted (or the wall clock stepped).
  explicit RadarClockMapper(int window_s, int reboot_threshold_ms = 5000);

  // One radar timestamp (0..9999999 cs as sent) observed at `received_ms` (UTC).
  Mapping observe(std::int64_t raw_cs, UnixMs received_ms);

  // UTC for an unwrapped radar time of the current epoch.
  UnixMs to_utc(std::int64_t radar_time_cs) const { return radar_time_cs * 10 + offset_ms(); }

  // The link went down: the radar may reboot before the next sample, so the next one is checked
  // against the estimate in both directions.
  void on_disconnect() { disconnected_ = true; }

  bool has_estimate() const { return !window_.empty(); }
  RadarClockEstimate estimate() const;

 private:
  struct Sample {
    UnixMs received_ms;
    std::int64_t offset_ms;
  };

  std::int64_t offset_ms() const { return window_.empty() ? 0 : window_.front().offset_ms; }
  void start_epoch(std::int64_t raw_cs, bool count_epoch);
  void push(UnixMs received_ms, std::int64_t offset);

  std::int64_t window_ms_;
  std::int64_t reboot_threshold_ms_;
  // Monotonic deque: offsets increase front to back, so front() is the window minimum. Delay only
  // ever adds to (receive - radar), so the minimum is the best estimate of the true offset.
  std::deque<Sample> window_;
  std::deque<UnixMs> sample_times_;  // every sample's receive time in the window, for the count
  std::optional<std::int64_t> last_raw_cs_;
  std::int32_t epoch_ = 0;
  std::int32_t wraps_ = 0;
  bool disconnected_ = false;
};

}  // namespace cpd::adapters
