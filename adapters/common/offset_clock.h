// The camera's clock offset from ISAPI time polls: each poll bounds the offset to an interval, and the
// intervals of a sliding window are intersected. Pure: every gateway time is passed in, so tests fix it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

#include "daemon/core/time.h"

namespace cpd::adapters {

struct OffsetClockOptions {
  std::size_t max_samples = 10;              // the newest polls kept
  std::int64_t max_age_ms = 30 * 60 * 1000;  // and none older than this (clocks drift)
  // How fast the two clocks may drift apart: an older sample's interval is widened by this rate times
  // its age, so a crystal's drift is no reason to restart and the true offset stays inside the result.
  std::int64_t max_drift_ppm = 200;
};

// Offset = camera clock minus gateway clock (ms). The true offset lies in offset_ms ± uncertainty_ms at
// measured_ms, as long as the clocks drift apart no faster than max_drift_ppm.
struct OffsetClockEstimate {
  std::int64_t offset_ms = 0;
  std::int64_t uncertainty_ms = 0;
  UnixMs measured_ms = 0;   // gateway time of the newest sample (its response)
  std::size_t samples = 0;  // samples in the window
  std::uint64_t epoch = 0;  // 1 at the first sample; +1 on every restart
};

class OffsetClockEstimator {
 public:
  enum class Outcome {
    kStarted,    // the first sample (or the first after reset())
    kAccepted,   // intersected with the window
    kRestarted,  // disagreed with the window (clock set or drifted beyond the bound): only it is kept
    kRejected,   // impossible sample (response before request, bad resolution): ignored
  };

  explicit OffsetClockEstimator(OffsetClockOptions options = {});

  // The camera read camera_ms (truncated to resolution_ms: 1000 for whole seconds, 1 with milliseconds)
  // somewhere between the gateway times sent_ms (request sent) and received_ms (response received).
  Outcome add(UnixMs camera_ms, std::int64_t resolution_ms, UnixMs sent_ms, UnixMs received_ms);

  std::optional<OffsetClockEstimate> estimate() const;

  // The gateway time, not before earliest_ms, at which the camera should read its clock so that its
  // next whole second falls at the middle of the current interval: the answer then halves the interval,
  // where a random phase narrows it only by about 1/n. earliest_ms when there is nothing to halve.
  UnixMs next_probe_ms(UnixMs earliest_ms) const;

  void reset();

 private:
  struct Sample {
    std::int64_t lo = 0;  // offset bounds by this sample alone
    std::int64_t hi = 0;
    UnixMs at_ms = 0;  // gateway time of the response
    std::int64_t resolution_ms = 1000;
  };

  // Intersects the window at the newest sample's time; false when it is empty.
  bool intersect();

  OffsetClockOptions options_;
  std::deque<Sample> samples_;
  std::int64_t lo_ = 0;  // the current intersection, valid while samples_ is not empty
  std::int64_t hi_ = 0;
  std::uint64_t epoch_ = 0;
};

}  // namespace cpd::adapters
