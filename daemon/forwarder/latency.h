// LatencyRecorder: ready-to-PUBACK latencies, kept as a bounded ring of recent samples for percentiles
// and as cumulative histogram buckets (Prometheus-style). Pure and not thread-safe: one owner.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace cpd::forwarder {

class LatencyRecorder {
 public:
  static constexpr std::array<double, 12> kBucketsMs{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 30000};

  explicit LatencyRecorder(std::size_t ring = 65536) : ring_(ring) {}

  void add(double ms) {
    if (samples_.size() < ring_) {
      samples_.push_back(ms);
    } else {
      samples_[next_] = ms;
    }
    next_ = (next_ + 1) % ring_;
    ++count_;
    sum_ms_ += ms;
    for (std::size_t i = 0; i < kBucketsMs.size(); ++i) {
      if (ms <= kBucketsMs[i]) {
        ++buckets_[i];
      }
    }
  }

  // q in [0, 1] over the recent samples; 0 when there are none.
  double percentile(double q) const {
    if (samples_.empty()) {
      return 0.0;
    }
    std::vector<double> sorted(samples_);
    const auto k = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(k), sorted.end());
    return sorted[k];
  }

  std::uint64_t count() const { return count_; }
  double sum_ms() const { return sum_ms_; }
  const std::array<std::uint64_t, kBucketsMs.size()>& buckets() const { return buckets_; }

 private:
  std::size_t ring_;
  std::vector<double> samples_;
  std::size_t next_ = 0;
  std::uint64_t count_ = 0;
  double sum_ms_ = 0;
  std::array<std::uint64_t, kBucketsMs.size()> buckets_{};
};

}  // namespace cpd::forwarder
