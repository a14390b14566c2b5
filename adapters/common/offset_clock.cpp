// Interval intersection for the camera clock offset (see offset_clock.h); integer milliseconds throughout.
#include "adapters/common/offset_clock.h"

#include <algorithm>

namespace cpd::adapters {
namespace {

constexpr std::int64_t kSecondMs = 1000;

// Drift allowance for a sample age_ms old, rounded up so the bound stays a bound.
std::int64_t drift_allowance(std::int64_t age_ms, std::int64_t ppm) {
  if (age_ms <= 0 || ppm <= 0) {
    return 0;
  }
  return (age_ms * ppm + 999'999) / 1'000'000;
}

std::int64_t floor_mod(std::int64_t a, std::int64_t m) {
  return ((a % m) + m) % m;
}

}  // namespace

OffsetClockEstimator::OffsetClockEstimator(OffsetClockOptions options) : options_(options) {
  options_.max_samples = std::max<std::size_t>(1, options_.max_samples);
}

OffsetClockEstimator::Outcome OffsetClockEstimator::add(UnixMs camera_ms, std::int64_t resolution_ms,
                                                        UnixMs sent_ms, UnixMs received_ms) {
  if (received_ms < sent_ms || resolution_ms < 1 || resolution_ms > kSecondMs) {
    return Outcome::kRejected;
  }
  // The camera's clock showed some c in [camera_ms, camera_ms + resolution) at some gateway g in
  // [sent, received]; the offset c - g is bounded by the extremes.
  Sample s{camera_ms - received_ms, camera_ms + resolution_ms - 1 - sent_ms, received_ms, resolution_ms};

  // A gateway clock that went back (stepped by its own NTP) makes the ages meaningless: start over.
  const bool gateway_went_back = !samples_.empty() && received_ms < samples_.back().at_ms;
  const bool first = samples_.empty();
  if (first || gateway_went_back) {
    samples_.clear();
  }
  samples_.push_back(s);
  while (samples_.size() > options_.max_samples ||
         (samples_.size() > 1 && received_ms - samples_.front().at_ms > options_.max_age_ms)) {
    samples_.pop_front();
  }
  if (first) {
    ++epoch_;
    intersect();
    return Outcome::kStarted;
  }
  if (gateway_went_back || !intersect()) {
    // The camera clock was set, or drifted faster than allowed: what the window says no longer holds.
    samples_.erase(samples_.begin(), samples_.end() - 1);
    ++epoch_;
    intersect();
    return Outcome::kRestarted;
  }
  return Outcome::kAccepted;
}

bool OffsetClockEstimator::intersect() {
  const UnixMs now = samples_.back().at_ms;
  std::int64_t lo = samples_.back().lo;
  std::int64_t hi = samples_.back().hi;
  for (const auto& s : samples_) {
    const std::int64_t widen = drift_allowance(now - s.at_ms, options_.max_drift_ppm);
    lo = std::max(lo, s.lo - widen);
    hi = std::min(hi, s.hi + widen);
  }
  if (lo > hi) {
    return false;
  }
  lo_ = lo;
  hi_ = hi;
  return true;
}

std::optional<OffsetClockEstimate> OffsetClockEstimator::estimate() const {
  if (samples_.empty()) {
    return std::nullopt;
  }
  // Rounded so that both ends are within the uncertainty: the interval is closed at both ends.
  const std::int64_t half = (hi_ - lo_ + 1) / 2;
  OffsetClockEstimate e;
  e.offset_ms = lo_ + half;
  e.uncertainty_ms = half;
  e.measured_ms = samples_.back().at_ms;
  e.samples = samples_.size();
  e.epoch = epoch_;
  return e;
}

UnixMs OffsetClockEstimator::next_probe_ms(UnixMs earliest_ms) const {
  if (samples_.empty() || samples_.back().resolution_ms < 2 || hi_ <= lo_) {
    return earliest_ms;
  }
  // Read at gateway g, the camera shows a new whole second (resolution step) exactly when g + split is
  // one: offsets >= split then read that second, smaller ones the one before, and the answer cuts there.
  const std::int64_t split = lo_ + (hi_ - lo_ + 1) / 2;
  return earliest_ms + floor_mod(-(earliest_ms + split), samples_.back().resolution_ms);
}

void OffsetClockEstimator::reset() {
  samples_.clear();
  lo_ = 0;
  hi_ = 0;
}

}  // namespace cpd::adapters
