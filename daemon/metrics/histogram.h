// Histogram: a thread-safe fixed-bucket latency histogram (seconds) that the forwarder and the store worker
// observe into and the /metrics renderer snapshots; Histograms groups the daemon's two.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace cpd::metrics {

// A consistent copy of a histogram: per-bucket (not cumulative) counts, one more than bounds (the last is
// the overflow bucket, above every bound). The exposition writer makes them cumulative.
struct HistogramSnapshot {
  std::vector<double> bounds;         // upper bounds, strictly increasing, finite
  std::vector<std::uint64_t> counts;  // bounds.size() + 1 entries
  std::uint64_t count = 0;
  double sum = 0.0;
};

class Histogram {
 public:
  // Bounds are sorted and de-duplicated; non-finite ones are dropped (+Inf is implicit).
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // One observation in seconds. NaN is ignored; a negative value (a clock stepping back) counts as 0 so
  // the sum never decreases.
  void observe(double seconds);

  HistogramSnapshot snapshot() const;

  // Default bounds: MQTT ready-to-PUBACK latency (1 ms .. 30 s, as the forwarder's LatencyRecorder) and
  // SQLite commit fsync (0.5 ms .. 5 s; flash on gateways is slow and uneven).
  static std::vector<double> publish_latency_bounds();
  static std::vector<double> fsync_latency_bounds();

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  double sum_ = 0.0;
};

// The histograms the daemon keeps for /metrics. The lead's daemon owns one and hands publish_latency to the
// forwarder and fsync_latency to the store worker.
struct Histograms {
  Histogram publish_latency{Histogram::publish_latency_bounds()};
  Histogram fsync_latency{Histogram::fsync_latency_bounds()};
};

}  // namespace cpd::metrics
