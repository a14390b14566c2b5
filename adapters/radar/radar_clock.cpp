// Radar clock -> UTC: unwraps the 100000 s wrap, keeps a minimum-of-(receive - radar) offset over a
// sliding window of receive-time buckets (delay only adds), starts a new epoch when the radar clock
// restarts, and declares the clock unstable when it keeps stepping while the link stays up.
#include "adapters/radar/radar_clock.h"

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "adapters/radar/radar_frame_parser.h"

namespace cpd::adapters {
namespace {

// The radar clock never runs backwards; a step back of more than this (and not a wrap) is a restart.
constexpr std::int64_t kBackwardToleranceCs = 100;

UnixMs bucket_start(UnixMs t) {
  const UnixMs q = t / RadarClockMapper::kBucketMs;
  return (t % RadarClockMapper::kBucketMs < 0 ? q - 1 : q) * RadarClockMapper::kBucketMs;
}

}  // namespace

RadarClockMapper::RadarClockMapper(int window_s, int reboot_threshold_ms)
    : window_ms_(static_cast<std::int64_t>(window_s > 0 ? window_s : 1) * 1000),
      reboot_threshold_ms_(reboot_threshold_ms) {}

void RadarClockMapper::clear_window() {
  buckets_.clear();
  mins_.clear();
  window_samples_ = 0;
}

void RadarClockMapper::start_epoch(std::int64_t raw_cs, bool count_epoch) {
  if (count_epoch) {
    ++epoch_;
  }
  wraps_ = 0;
  clear_window();
  last_raw_cs_ = raw_cs;
}

void RadarClockMapper::push(UnixMs received_ms, std::int64_t offset) {
  // A gateway clock that went back puts its samples into the newest bucket: buckets only ever grow in
  // time, so their number stays bounded by the window.
  const UnixMs start = buckets_.empty() ? bucket_start(received_ms)
                                        : std::max(bucket_start(received_ms), buckets_.back().start_ms);
  if (buckets_.empty() || buckets_.back().start_ms != start) {
    buckets_.push_back({start, offset, 1});
  } else {
    Bucket& b = buckets_.back();
    ++b.samples;
    b.min_offset_ms = std::min(b.min_offset_ms, offset);
  }
  ++window_samples_;
  // The newest bucket is always the last entry of mins_: it replaces every older one it undercuts.
  if (mins_.empty() || mins_.back().start_ms != start || offset < mins_.back().min_offset_ms) {
    while (!mins_.empty() && mins_.back().min_offset_ms >= offset) {
      mins_.pop_back();
    }
    mins_.push_back({start, offset, 0});
  }
  // A bucket leaves once all of it is older than the window; at least the newest stays, so there is
  // always an estimate.
  const UnixMs oldest = received_ms - window_ms_;
  while (buckets_.size() > 1 && buckets_.front().start_ms + kBucketMs <= oldest) {
    window_samples_ -= buckets_.front().samples;
    buckets_.pop_front();
  }
  while (mins_.front().start_ms < buckets_.front().start_ms) {
    mins_.pop_front();
  }
}

bool RadarClockMapper::count_step(UnixMs received_ms) {
  recent_steps_.push_back(received_ms);
  while (recent_steps_.size() > static_cast<std::size_t>(kUnstableSteps)) {
    recent_steps_.pop_front();
  }
  return recent_steps_.size() == static_cast<std::size_t>(kUnstableSteps) &&
         received_ms - recent_steps_.front() <= kUnstableWindowMs;
}

RadarClockMapper::Mapping RadarClockMapper::observe(std::int64_t raw_cs, UnixMs received_ms) {
  Mapping m;
  bool restart = false;
  std::int32_t wraps = wraps_;
  const bool after_link_loss = disconnected_;
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
    if (diff < -reboot_threshold_ms_ || (after_link_loss && std::llabs(diff) > reboot_threshold_ms_)) {
      restart = true;
    }
  }
  if (restart) {
    m.step = true;
    ++steps_total_;
    if (unstable_) {
      // Already reported: the window starts over so that a clock that holds again is measured from
      // here, but tracks go on (they are timed by receive time while unstable).
      start_epoch(raw_cs, false);
      last_step_ms_ = received_ms;
    } else {
      // A reboot after a link loss is the radar's normal restart, not a clock fault.
      if (!after_link_loss && count_step(received_ms)) {
        unstable_ = true;
        last_step_ms_ = received_ms;
        m.change = Change::kBecameUnstable;
      }
      start_epoch(raw_cs, true);
      m.new_epoch = true;
    }
    wraps = 0;
  } else if (unstable_) {
    if (received_ms < last_step_ms_) {
      last_step_ms_ = received_ms;  // the gateway clock went back: count the stable time afresh
    } else if (received_ms - last_step_ms_ >= kStableMs) {
      unstable_ = false;
      recent_steps_.clear();
      ++epoch_;  // the window since the last step is a good estimate; tracks timed by receive time end
      m.new_epoch = true;
      m.change = Change::kBecameStable;
    }
  }
  wraps_ = wraps;
  last_raw_cs_ = raw_cs;
  disconnected_ = false;
  m.radar_time_cs = wraps_ * kRadarClockWrapCs + raw_cs;
  push(received_ms, received_ms - m.radar_time_cs * 10);
  m.unstable = unstable_;
  m.utc_ms = unstable_ ? received_ms : to_utc(m.radar_time_cs);
  return m;
}

RadarClockEstimate RadarClockMapper::estimate() const {
  RadarClockEstimate e;
  e.offset_ms = offset_ms();
  e.samples = static_cast<std::int32_t>(
      std::min<std::int64_t>(window_samples_, std::numeric_limits<std::int32_t>::max()));
  e.window_ms = static_cast<std::int32_t>(window_ms_);
  e.epoch = epoch_;
  e.wraps = wraps_;
  e.unstable = unstable_;
  return e;
}

}  // namespace cpd::adapters
