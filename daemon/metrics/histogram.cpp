// Histogram: bucket lookup by binary search under a mutex, so a snapshot's counts, count and sum agree.
#include "daemon/metrics/histogram.h"

#include <algorithm>
#include <cmath>

namespace cpd::metrics {
namespace {

std::vector<double> clean_bounds(std::vector<double> bounds) {
  std::erase_if(bounds, [](double b) { return !std::isfinite(b); });
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  return bounds;
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(clean_bounds(std::move(upper_bounds))), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double seconds) {
  if (std::isnan(seconds)) {
    return;
  }
  seconds = std::max(seconds, 0.0);
  // le semantics: a value equal to a bound belongs to that bound's bucket.
  const auto idx =
      static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin());
  std::lock_guard lock(mutex_);
  ++counts_[idx];
  ++count_;
  sum_ += seconds;
}

HistogramSnapshot Histogram::snapshot() const {
  HistogramSnapshot s;
  s.bounds = bounds_;
  std::lock_guard lock(mutex_);
  s.counts = counts_;
  s.count = count_;
  s.sum = sum_;
  return s;
}

std::vector<double> Histogram::publish_latency_bounds() {
  return {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5, 30};
}

std::vector<double> Histogram::fsync_latency_bounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
}

}  // namespace cpd::metrics
