// RadarClockMapper: offset from the minimum delay, 100 ppm drift, the 100000 s wrap, reboots, jitter,
// memory bounded under a frame flood, and a clock that keeps stepping (unstable, reported once).
#include "adapters/radar/radar_clock.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <random>

#include "adapters/radar/radar_frame_parser.h"

namespace cpd::adapters {
namespace {

constexpr UnixMs kT0 = 1'700'000'000'000;  // UTC at radar time 0

TEST(RadarClockMapper, FirstSampleGivesOffset) {
  RadarClockMapper m(120);
  auto r = m.observe(123456, kT0 + 1'234'560 + 30);
  EXPECT_FALSE(r.new_epoch);
  EXPECT_EQ(r.radar_time_cs, 123456);
  EXPECT_EQ(m.estimate().offset_ms, kT0 + 30);
  EXPECT_EQ(r.utc_ms, kT0 + 1'234'560 + 30);
  EXPECT_EQ(m.estimate().samples, 1);
  EXPECT_EQ(m.estimate().window_ms, 120000);
}

TEST(RadarClockMapper, MinimumDelayWinsOverJitter) {
  RadarClockMapper m(120);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 500; ++i) {
    const std::int64_t radar_cs = 1000 + i * 5;                 // a frame every 50 ms
    const UnixMs delay = 5 + static_cast<UnixMs>(rng() % 200);  // 5..204 ms of transport delay
    m.observe(radar_cs, kT0 + radar_cs * 10 + delay);
  }
  m.observe(1000 + 500 * 5, kT0 + (1000 + 500 * 5) * 10 + 5);
  EXPECT_EQ(m.estimate().offset_ms, kT0 + 5);
  EXPECT_EQ(m.to_utc(2000), kT0 + 20000 + 5);
  EXPECT_EQ(m.estimate().epoch, 0);
}

TEST(RadarClockMapper, DelaySpikeIsNotAReboot) {
  RadarClockMapper m(120);
  m.observe(1000, kT0 + 10000 + 20);
  auto r = m.observe(1100, kT0 + 11000 + 20 + 8000);  // an 8 s stall in the link
  EXPECT_FALSE(r.new_epoch);
  EXPECT_EQ(m.estimate().offset_ms, kT0 + 20);
}

// Radar clock off by +/-100 ppm: the estimate follows within window * 100 ppm (12 ms for 120 s).
class RadarClockDrift : public ::testing::TestWithParam<double> {};

TEST_P(RadarClockDrift, TracksDriftOverHours) {
  const double ppm = GetParam();
  RadarClockMapper m(120);
  std::mt19937_64 rng(11);
  std::int64_t worst = 0;
  for (std::int64_t t_ms = 0; t_ms <= 6LL * 3600 * 1000; t_ms += 500) {
    const auto radar_cs = static_cast<std::int64_t>(static_cast<double>(t_ms) * (1.0 + ppm * 1e-6) / 10.0);
    const UnixMs delay = 2 + static_cast<UnixMs>(rng() % 50);
    const UnixMs received = kT0 + t_ms + delay;
    auto r = m.observe(radar_cs, received);
    ASSERT_FALSE(r.new_epoch) << t_ms;
    if (t_ms > 10'000) {
      // The mapped time of this frame against the true event time.
      worst = std::max<std::int64_t>(worst, std::llabs(m.to_utc(radar_cs) - (kT0 + t_ms)));
    }
  }
  EXPECT_LE(worst, 2 + 50 + 12 + 10);  // delay floor + jitter bound + drift lag + cs rounding
  EXPECT_EQ(m.estimate().epoch, 0);
}

INSTANTIATE_TEST_SUITE_P(Ppm, RadarClockDrift, ::testing::Values(-100.0, 0.0, 100.0));

TEST(RadarClockMapper, UnwrapsAt100000Seconds) {
  RadarClockMapper m(120);
  const std::int64_t before = kRadarClockWrapCs - 150;  // 99998.50 s
  m.observe(before, kT0 + before * 10 + 10);
  auto r = m.observe(50, kT0 + (kRadarClockWrapCs + 50) * 10 + 10);  // 00000.50 after the wrap
  EXPECT_FALSE(r.new_epoch);
  EXPECT_EQ(r.radar_time_cs, kRadarClockWrapCs + 50);
  EXPECT_EQ(m.estimate().wraps, 1);
  EXPECT_EQ(m.estimate().offset_ms, kT0 + 10);
  EXPECT_EQ(r.utc_ms, kT0 + (kRadarClockWrapCs + 50) * 10 + 10);
}

TEST(RadarClockMapper, RebootWhenClockGoesBack) {
  RadarClockMapper m(120);
  m.observe(500000, kT0 + 5'000'000 + 10);
  auto r = m.observe(600, kT0 + 5'000'000 + 10'000);  // restarted, 6 s since power-up
  EXPECT_TRUE(r.new_epoch);
  EXPECT_EQ(r.radar_time_cs, 600);
  EXPECT_EQ(m.estimate().epoch, 1);
  EXPECT_EQ(m.estimate().wraps, 0);
  EXPECT_EQ(m.estimate().samples, 1);  // window reset
  EXPECT_EQ(m.estimate().offset_ms, kT0 + 5'000'000 + 10'000 - 6000);
}

TEST(RadarClockMapper, RebootLateInTheCycleIsNotMistakenForAWrap) {
  RadarClockMapper m(120);
  const std::int64_t late = 9'000'000;  // 90000 s
  m.observe(late, kT0 + late * 10);
  auto r = m.observe(500, kT0 + late * 10 + 12'000);  // 5 s after power-up, 12 s later
  EXPECT_TRUE(r.new_epoch);
  EXPECT_EQ(m.estimate().wraps, 0);
}

TEST(RadarClockMapper, RebootAfterDisconnectEvenIfClockIsAhead) {
  RadarClockMapper m(120);
  m.observe(300, kT0 + 3000);  // radar had been up 3 s
  m.on_disconnect();
  // An hour later it has rebooted and been up 20 min: its clock is ahead of the old value.
  auto r = m.observe(120'000, kT0 + 3'600'000);
  EXPECT_TRUE(r.new_epoch);
  EXPECT_EQ(m.estimate().epoch, 1);
}

TEST(RadarClockMapper, ReconnectWithoutRebootKeepsEpoch) {
  RadarClockMapper m(120);
  m.observe(100'000, kT0 + 1'000'000 + 20);
  m.on_disconnect();
  auto r = m.observe(100'600, kT0 + 1'006'000 + 40);
  EXPECT_FALSE(r.new_epoch);
  EXPECT_EQ(m.estimate().epoch, 0);
}

TEST(RadarClockMapper, SlightBackwardStepIsTolerated) {
  RadarClockMapper m(120);
  m.observe(100'000, kT0 + 1'000'000 + 20);
  auto r = m.observe(99'950, kT0 + 1'000'000 + 25);
  EXPECT_FALSE(r.new_epoch);
  EXPECT_EQ(r.radar_time_cs, 99'950);
}

TEST(RadarClockMapper, WindowForgetsOldMinimum) {
  RadarClockMapper m(10);
  m.observe(0, kT0 + 5);  // unusually small delay
  for (int i = 1; i <= 30; ++i) {
    m.observe(i * 100, kT0 + i * 1000 + 50);
  }
  EXPECT_EQ(m.estimate().offset_ms, kT0 + 50);
  EXPECT_LE(m.estimate().samples, 11);
}

// The window as the mapper kept it before it was bucketed: every sample that could still become the
// minimum, exactly [received - window, received]. The reference for "the same estimate".
class ExactWindowReference {
 public:
  explicit ExactWindowReference(std::int64_t window_ms) : window_ms_(window_ms) {}
  void push(UnixMs received_ms, std::int64_t offset) {
    while (!window_.empty() && window_.back().second >= offset) {
      window_.pop_back();
    }
    window_.emplace_back(received_ms, offset);
    while (window_.size() > 1 && window_.front().first < received_ms - window_ms_) {
      window_.pop_front();
    }
  }
  std::int64_t offset_ms() const { return window_.front().second; }

 private:
  std::int64_t window_ms_;
  std::deque<std::pair<UnixMs, std::int64_t>> window_;
};

// Heap bytes in use (glibc); the sanitizers' allocator does not report it.
std::int64_t heap_in_use() {
  return static_cast<std::int64_t>(mallinfo2().uordblks);
}

// Issue 12, defect 4: a radar flooding valid frames grew the gateway without limit, one sample per frame
// for the whole window. 100 000 frames/s for twice the window: the heap must not grow with the frames.
TEST(RadarClockMapper, AFrameFloodKeepsTheWindowInBoundedMemory) {
  constexpr int kWindowS = 10;
  constexpr std::int64_t kFramesPerS = 100'000;
  constexpr std::int64_t kSeconds = 2 * kWindowS;
  RadarClockMapper m(kWindowS);
  std::mt19937_64 rng(5);
  const std::int64_t heap_before = heap_in_use();
  std::int64_t max_buckets = 0;
  for (std::int64_t i = 0; i < kFramesPerS * kSeconds; ++i) {
    const std::int64_t t_us = i * 1'000'000 / kFramesPerS;
    // A radar clock 100 ppm slow: (receive - radar) keeps rising, so no sample ever undercuts an older one.
    const auto radar_cs = static_cast<std::int64_t>(static_cast<double>(t_us) * (1.0 - 100e-6) / 10'000.0);
    const UnixMs received = kT0 + t_us / 1000 + 2 + static_cast<UnixMs>(rng() % 20);
    const auto r = m.observe(radar_cs, received);
    ASSERT_FALSE(r.new_epoch) << i;
    max_buckets = std::max<std::int64_t>(max_buckets, static_cast<std::int64_t>(m.buckets()));
  }
  const std::int64_t growth = heap_in_use() - heap_before;
  std::printf(
      "clock flood: %lld frames at %lld/s, window %d s: heap growth %lld bytes, %lld buckets at most, "
      "%d samples in the window\n",
      static_cast<long long>(kFramesPerS * kSeconds), static_cast<long long>(kFramesPerS), kWindowS,
      static_cast<long long>(growth), static_cast<long long>(max_buckets), m.estimate().samples);
  EXPECT_LE(max_buckets, kWindowS + 2);
  // Every frame of the window still counts as a sample of the estimate (bucket-granular window).
  EXPECT_GE(m.estimate().samples, kFramesPerS * kWindowS);
  EXPECT_LE(m.estimate().samples, kFramesPerS * (kWindowS + 1));
  EXPECT_NEAR(static_cast<double>(m.estimate().offset_ms), static_cast<double>(kT0),
              20.0 + kSeconds * 0.1 + 10);
#ifndef CPD_SANITIZED
  // A sample per frame was 24+ bytes: 1 000 000 frames in the window would be over 24 MB.
  EXPECT_LT(growth, 64 * 1024) << "the clock window grows with the frame rate";
#endif
}

// Normal traffic (20 frames/s, 100 ppm drift either way, transport jitter) over an hour: the bucketed
// window gives the exact window's estimate at nearly every frame, never more than one radar tick (10 ms)
// from it, and maps frames onto the true event time at least as well.
class RadarClockSameEstimate : public ::testing::TestWithParam<double> {};

TEST_P(RadarClockSameEstimate, AsTheExactWindowOnNormalInput) {
  const double ppm = GetParam();
  RadarClockMapper m(120);
  ExactWindowReference ref(120'000);
  std::mt19937_64 rng(17);
  std::int64_t worst_diff = 0;
  std::int64_t equal = 0;
  std::int64_t n = 0;
  std::int64_t worst_error = 0;
  std::int64_t worst_error_ref = 0;
  for (std::int64_t t_ms = 0; t_ms <= 3600LL * 1000; t_ms += 50, ++n) {
    const auto radar_cs = static_cast<std::int64_t>(static_cast<double>(t_ms) * (1.0 + ppm * 1e-6) / 10.0);
    const UnixMs received = kT0 + t_ms + 2 + static_cast<UnixMs>(rng() % 50);
    m.observe(radar_cs, received);
    ref.push(received, received - radar_cs * 10);
    const std::int64_t d = std::llabs(m.estimate().offset_ms - ref.offset_ms());
    worst_diff = std::max(worst_diff, d);
    equal += d == 0 ? 1 : 0;
    if (t_ms > 10'000) {
      worst_error = std::max<std::int64_t>(worst_error, std::llabs(m.to_utc(radar_cs) - (kT0 + t_ms)));
      worst_error_ref =
          std::max<std::int64_t>(worst_error_ref, std::llabs(radar_cs * 10 + ref.offset_ms() - (kT0 + t_ms)));
    }
  }
  std::printf(
      "drift %+.0f ppm: %lld frames, estimate equal to the exact window's at %lld, at most %lld ms apart; "
      "worst mapping error %lld ms (exact window %lld ms)\n",
      ppm, static_cast<long long>(n), static_cast<long long>(equal), static_cast<long long>(worst_diff),
      static_cast<long long>(worst_error), static_cast<long long>(worst_error_ref));
  EXPECT_GE(equal * 100, n * 98) << "the same estimate at 98% of the frames at least";
  EXPECT_LE(worst_diff, 10) << "never more than one radar tick apart";
  EXPECT_LE(worst_error, worst_error_ref) << "no less accurate against the true event time";
}

INSTANTIATE_TEST_SUITE_P(Ppm, RadarClockSameEstimate, ::testing::Values(-100.0, 0.0, 100.0));

// Issue 12, defect 6: a clock that steps back on every frame. The first steps are reboots (new epochs);
// the third within a minute makes the clock unstable, reported once; then no epoch per frame.
TEST(RadarClockMapper, AClockSteppingOnEveryFrameIsUnstableOnce) {
  RadarClockMapper m(120);
  std::int64_t raw = 5'000'000;
  int new_epochs = 0;
  int became_unstable = 0;
  for (int i = 0; i < 10'000; ++i) {
    const UnixMs received = kT0 + i;  // 1000 frames/s
    const auto r = m.observe(raw, received);
    new_epochs += r.new_epoch ? 1 : 0;
    became_unstable += r.change == RadarClockMapper::Change::kBecameUnstable ? 1 : 0;
    if (i >= RadarClockMapper::kUnstableSteps) {
      EXPECT_TRUE(r.unstable) << i;
      EXPECT_EQ(r.utc_ms, received) << "while unstable, the receive time is the time";
    }
    raw -= 200;  // 2 s back, every frame
  }
  EXPECT_EQ(became_unstable, 1);
  EXPECT_EQ(new_epochs,
            RadarClockMapper::kUnstableSteps);  // the steps before, and the one that made it unstable
  EXPECT_EQ(m.steps(), 9'999u);
  EXPECT_TRUE(m.estimate().unstable);
  EXPECT_LE(m.buckets(), 1u);
}

TEST(RadarClockMapper, AnUnstableClockThatHoldsAgainIsStableInANewEpoch) {
  RadarClockMapper m(120);
  UnixMs t = kT0;
  std::int64_t raw = 1'000'000;
  for (int i = 0; i < 3; ++i, t += 1000) {
    m.observe(raw, t);
    raw -= 500;  // 5 s back
  }
  m.observe(raw, t + 7);
  ASSERT_TRUE(m.unstable());
  const std::int32_t epoch = m.estimate().epoch;
  // The clock now runs true: a frame every 100 ms for the stable period.
  const UnixMs last_step = t;
  const std::int64_t raw0 = raw;
  RadarClockMapper::Mapping r;
  for (UnixMs dt = 100; dt <= RadarClockMapper::kStableMs; dt += 100) {
    r = m.observe(raw0 + dt / 10, last_step + dt + 7);
    if (dt < RadarClockMapper::kStableMs) {
      ASSERT_EQ(r.change, RadarClockMapper::Change::kNone) << dt;
    }
  }
  EXPECT_EQ(r.change, RadarClockMapper::Change::kBecameStable);
  EXPECT_TRUE(r.new_epoch);
  EXPECT_FALSE(r.unstable);
  EXPECT_EQ(m.estimate().epoch, epoch + 1);
  EXPECT_EQ(m.estimate().offset_ms, last_step + 7 - raw0 * 10);  // measured since the last step
}

// Reboots that come with a link loss are the radar's normal restart: never a clock fault.
TEST(RadarClockMapper, RebootsAfterLinkLossAreNotAFault) {
  RadarClockMapper m(120);
  UnixMs t = kT0;
  for (int i = 0; i < 10; ++i, t += 6000) {
    m.on_disconnect();
    const auto r = m.observe(300, t);  // 3 s after power-up, every 6 s
    EXPECT_EQ(r.new_epoch, i > 0) << i;
    EXPECT_FALSE(r.unstable);
    m.observe(400, t + 1000);
  }
  EXPECT_EQ(m.estimate().epoch, 9);
  EXPECT_FALSE(m.unstable());
}

}  // namespace
}  // namespace cpd::adapters
