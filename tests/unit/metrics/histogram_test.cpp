// Histogram: le bucket semantics, odd observations, and consistency under concurrent observers.
#include "daemon/metrics/histogram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace cpd::metrics {
namespace {

TEST(Histogram, ValueOnABoundCountsInThatBucket) {
  Histogram h({0.1, 0.01, 1, 0.1, std::numeric_limits<double>::infinity()});  // unsorted, duplicate, +Inf
  h.observe(0.01);
  h.observe(0.05);
  h.observe(0.1);
  h.observe(2);
  const auto s = h.snapshot();
  ASSERT_EQ(s.bounds, (std::vector<double>{0.01, 0.1, 1}));
  EXPECT_EQ(s.counts, (std::vector<std::uint64_t>{1, 2, 0, 1}));
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.sum, 2.16);
}

TEST(Histogram, NegativeCountsAsZeroAndNanIsIgnored) {
  Histogram h({0.5});
  h.observe(-3);
  h.observe(std::nan(""));
  const auto s = h.snapshot();
  EXPECT_EQ(s.counts, (std::vector<std::uint64_t>{1, 0}));
  EXPECT_EQ(s.count, 1u);
  EXPECT_EQ(s.sum, 0.0);
}

TEST(Histogram, ConcurrentObserversLoseNothing) {
  Histogram h(Histogram::publish_latency_bounds());
  constexpr int kThreads = 4;
  constexpr int kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) {
        h.observe(0.001 * ((i + t) % 50));  // 0 .. 49 ms
      }
    });
  }
  // Snapshots taken meanwhile must each be consistent.
  for (int i = 0; i < 200; ++i) {
    const auto s = h.snapshot();
    std::uint64_t total = 0;
    for (auto c : s.counts) {
      total += c;
    }
    ASSERT_EQ(total, s.count);
  }
  for (auto& t : threads) {
    t.join();
  }
  const auto s = h.snapshot();
  EXPECT_EQ(s.count, static_cast<std::uint64_t>(kThreads * kEach));
  EXPECT_EQ(s.counts.back(), 0u) << "nothing above 30 s";
}

TEST(Histogram, DefaultBoundsAreSortedAndFinite) {
  for (const auto& bounds : {Histogram::publish_latency_bounds(), Histogram::fsync_latency_bounds()}) {
    Histogram h(bounds);
    EXPECT_EQ(h.snapshot().bounds, bounds);
  }
}

}  // namespace
}  // namespace cpd::metrics
