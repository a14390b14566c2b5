// Radar clock -> UTC: unwraps the 100000 s wrap, keeps a minimum-of-(receive - radar) offset over a
// sliding window (delay only adds), and starts a new epoch when the radar clock restarts.
#include "adapters/radar/radar_clock.h"

#include <cstdlib>

#include "adapters/radar/radar_frame_parser.h"

namespace cpd::adapters {
namespace {

// The radar clock never runs backwards; a step back of more than this (and not a wrap) is a restart.
constexpr std::int64_t kBackwardToleranceCs = 100;

}  // namespace

RadarClockMapper::RadarClockMapper(int window_s, int reboot_threshold_ms)
    : window_ms_(static_cast<std::int64_t>(window_s > 0 ? window_s : 1) * 1000),
      reboot_threshold_ms_(reboot_threshold_ms) {}

void RadarClockMapper::start_epoch(std::int64_t raw_cs, bool count_epoch) {
  if (count_epoch) {
    ++epoch_;
  }
  wraps_ = 0;
  window_.clear();
  sample_times_.clear();
  last_raw_cs_ = raw_cs;
}

void RadarClockMapper::push(UnixMs received_ms, std::int64_t offset) {
  while (!window_.empty() && window_.back().offset_ms >= offset) {
    window_.pop_back();
  }
  window_.push_back({received_ms, offset});
  sample_times_.push_back(received_ms);
  const UnixMs oldest = received_ms - window_ms_;
  // Keep at least the newest sample so there is always an estimate.
  while (window_.size() > 1 && window_.front().received_ms < oldest) {
    window_.pop_front();
  }
  while (sample_times_.size() > 1 && sample_times_.front() < oldest) {
    sample_times_.pop_front();
  }
}

RadarClockMapper::Mapping RadarClockMapper::observe(std::int64_t raw_cs, UnixMs received_ms) {
  Mapping m;
  bool restart = false;
  std::int32_t wraps = wraps_;
  if (!last_raw_cs_) {
    start_epoch(raw_cs, false);
  } else if (raw_cs < *last_raw_cs_) {
    if (*last_raw_cs_ - raw_cs > kRadarClockWrapCs / 2) {
      ++wraps;  // checked against the offset below: a restart late in the cycle looks like a wrap
    } else if (*last_raw_cs_ - raw_cs > kBackwardToleranceCs) {
      restart = true;
    }
  }
  if (!restart && has_estimate()) {
    const std::int64_t unwrapped = wraps * kRadarClockWrapCs + raw_cs;
    const std::int64_t diff = (received_ms - unwrapped * 10) - offset_ms();
    // Radar time running ahead of real time is not delay: the clock (or the wall clock) stepped.
    // After a disconnect the radar may have restarted and counted past its old time: either way.
    if (diff < -reboot_threshold_ms_ || (disconnected_ && std::llabs(diff) > reboot_threshold_ms_)) {
      restart = true;
    }
  }
  if (restart) {
    start_epoch(raw_cs, true);
    wraps = 0;
    m.new_epoch = true;
  }
  wraps_ = wraps;
  last_raw_cs_ = raw_cs;
  disconnected_ = false;
  m.radar_time_cs = wraps_ * kRadarClockWrapCs + raw_cs;
  push(received_ms, received_ms - m.radar_time_cs * 10);
  m.utc_ms = to_utc(m.radar_time_cs);
  return m;
}

RadarClockEstimate RadarClockMapper::estimate() const {
  RadarClockEstimate e;
  e.offset_ms = offset_ms();
  e.samples = static_cast<std::int32_t>(sample_times_.size());
  e.window_ms = static_cast<std::int32_t>(window_ms_);
  e.epoch = epoch_;
  e.wraps = wraps_;
  return e;
}

}  // namespace cpd::adapters
