// RadarClockMapper: offset from the minimum delay, 100 ppm drift, the 100000 s wrap, reboots, jitter.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "adapters/radar/radar_clock.h"
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
    const std::int64_t radar_cs = 1000 + i * 5;  // a frame every 50 ms
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

}  // namespace
}  // namespace cpd::adapters
