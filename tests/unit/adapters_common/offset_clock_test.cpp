// OffsetClockEstimator against a simulated camera clock (offset, drift, steps) read in whole seconds at
// chosen gateway times: no I/O, no real clock.
#include "adapters/common/offset_clock.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>

namespace cpd::adapters {
namespace {

constexpr UnixMs kClockT0 = 1795750730000;  // 2026-11-27T03:38:50Z, gateway clock

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

// A camera clock: camera = gateway + offset + drift * (gateway - kClockT0), whole seconds when read over
// ISAPI.
struct SimCamera {
  std::int64_t offset_ms = 0;
  std::int64_t drift_ppm = 0;

  UnixMs camera_ms(UnixMs gateway_ms) const {
    return gateway_ms + offset_ms + floor_div((gateway_ms - kClockT0) * drift_ppm, 1'000'000);
  }
  std::int64_t true_offset(UnixMs gateway_ms) const { return camera_ms(gateway_ms) - gateway_ms; }

  // One poll sent at t0 with round trip rtt; the camera reads its clock at t0 + read_after.
  OffsetClockEstimator::Outcome poll(OffsetClockEstimator& est, UnixMs t0, std::int64_t rtt,
                                     std::int64_t read_after) const {
    const UnixMs whole = floor_div(camera_ms(t0 + read_after), 1000) * 1000;
    return est.add(whole, 1000, t0, t0 + rtt);
  }
};

// The estimate must bracket the truth: that is what the uncertainty promises.
void expect_brackets(const OffsetClockEstimator& est, std::int64_t truth) {
  const auto e = est.estimate();
  ASSERT_TRUE(e);
  EXPECT_LE(e->offset_ms - e->uncertainty_ms, truth)
      << "offset " << e->offset_ms << " ± " << e->uncertainty_ms;
  EXPECT_GE(e->offset_ms + e->uncertainty_ms, truth)
      << "offset " << e->offset_ms << " ± " << e->uncertainty_ms;
}

TEST(OffsetClockEstimator, NothingMeasuredNoEstimate) {
  OffsetClockEstimator est;
  EXPECT_FALSE(est.estimate());
  EXPECT_EQ(est.next_probe_ms(kClockT0 + 123), kClockT0 + 123);
}

TEST(OffsetClockEstimator, SingleSampleUncertaintyIsHalfASecondPlusHalfTheRoundTrip) {
  for (const std::int64_t rtt : {0, 1, 40, 333}) {
    for (const std::int64_t phase : {0, 1, 250, 499, 500, 999}) {
      const SimCamera cam{4000 + phase, 0};
      OffsetClockEstimator est;
      EXPECT_EQ(cam.poll(est, kClockT0, rtt, rtt / 2), OffsetClockEstimator::Outcome::kStarted);
      const auto e = est.estimate();
      ASSERT_TRUE(e);
      EXPECT_LE(e->uncertainty_ms, 500 + (rtt + 1) / 2) << "rtt " << rtt;
      EXPECT_GE(e->uncertainty_ms, 500) << "rtt " << rtt;
      EXPECT_EQ(e->samples, 1U);
      EXPECT_EQ(e->epoch, 1U);
      EXPECT_EQ(e->measured_ms, kClockT0 + rtt);
      expect_brackets(est, cam.true_offset(kClockT0));
    }
  }
}

TEST(OffsetClockEstimator, WholeSecondReadInstantlyIsCentredOnItsMiddle) {
  OffsetClockEstimator est;
  // 11:38:54 read at gateway 11:38:50.000 exactly: the camera was 4000..4999 ms ahead.
  est.add(kClockT0 + 4000, 1000, kClockT0, kClockT0);
  const auto e = est.estimate();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->offset_ms, 4500);
  EXPECT_EQ(e->uncertainty_ms, 500);
}

TEST(OffsetClockEstimator, MillisecondReadingsNeedOnlyTheRoundTrip) {
  OffsetClockEstimator est;
  est.add(kClockT0 + 1234 + 5, 1, kClockT0,
          kClockT0 + 10);  // the camera read at t0 + 5 with a clock 1234 ms ahead
  const auto e = est.estimate();
  ASSERT_TRUE(e);
  EXPECT_LE(e->uncertainty_ms, 6);
  expect_brackets(est, 1234);
  EXPECT_EQ(est.next_probe_ms(kClockT0 + 50), kClockT0 + 50);  // nothing to gain from a phase
}

TEST(OffsetClockEstimator, ProbesAtTheMiddleConvergeExactly) {
  for (const std::int64_t offset : {4237, -1, 0, 999, -73501}) {
    const SimCamera cam{offset, 0};
    OffsetClockEstimator est({.max_drift_ppm = 0});
    UnixMs t = kClockT0 + 17;
    cam.poll(est, t, 0, 0);
    for (int i = 1; i < 14; ++i) {
      t = est.next_probe_ms(t + 170);
      EXPECT_GE(t, kClockT0 + 17 + 170 * i);
      EXPECT_EQ(cam.poll(est, t, 0, 0), OffsetClockEstimator::Outcome::kAccepted);
      expect_brackets(est, offset);
      if (i == 5) {  // six polls: 1000 ms halved five times
        EXPECT_LE(est.estimate()->uncertainty_ms, 16);
      }
    }
    EXPECT_EQ(est.estimate()->offset_ms, offset);
    EXPECT_EQ(est.estimate()->uncertainty_ms, 0);
  }
}

TEST(OffsetClockEstimator, ProbesWithLoopbackRoundTripsGetTensOfMilliseconds) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int64_t> rtt_of(1, 4);
  std::uniform_int_distribution<std::int64_t> offset_of(-5000, 5000);
  for (int run = 0; run < 200; ++run) {
    const SimCamera cam{offset_of(rng), 0};
    OffsetClockEstimator est;  // default drift allowance
    UnixMs t = kClockT0 + run * 37;
    std::int64_t rtt = rtt_of(rng);
    cam.poll(est, t, rtt, std::uniform_int_distribution<std::int64_t>(0, rtt)(rng));
    for (int i = 1; i < 6; ++i) {
      rtt = rtt_of(rng);
      // Aimed so the camera reads at the probe time, about half a round trip after sending.
      t = est.next_probe_ms(t + 170 + rtt / 2) - rtt / 2;
      EXPECT_EQ(cam.poll(est, t, rtt, std::uniform_int_distribution<std::int64_t>(0, rtt)(rng)),
                OffsetClockEstimator::Outcome::kAccepted);
      expect_brackets(est, cam.offset_ms);
    }
    EXPECT_LE(est.estimate()->uncertainty_ms, 30) << "offset " << cam.offset_ms;
  }
}

TEST(OffsetClockEstimator, RandomPhasesOnlyNarrowSlowlyButStillBracket) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<std::int64_t> spacing(170, 230);
  const SimCamera cam{-2611, 0};
  OffsetClockEstimator est({.max_drift_ppm = 0});
  UnixMs t = kClockT0;
  std::int64_t previous = 1'000'000;
  for (int i = 0; i < 10; ++i) {
    cam.poll(est, t, 2, 1);
    expect_brackets(est, cam.offset_ms);
    EXPECT_LE(est.estimate()->uncertainty_ms, previous);  // an intersection never widens
    previous = est.estimate()->uncertainty_ms;
    t += spacing(rng);
  }
  EXPECT_LT(previous, 500);
}

// Polls every 60 s for an hour, each aimed at the middle, against a camera clock drifting at ±100 ppm
// (360 ms over the hour): the drift allowance keeps the truth inside and the estimate tight.
TEST(OffsetClockEstimator, FollowsADriftOf100PpmForAnHourWithoutRestarting) {
  for (const std::int64_t ppm : {100, -100}) {
    const SimCamera cam{1500, ppm};
    OffsetClockEstimator est;
    UnixMs t = kClockT0;
    cam.poll(est, t, 3, 1);
    for (int i = 1; i < 6; ++i) {  // the start-up burst
      t = est.next_probe_ms(t + 170 + 1) - 1;
      ASSERT_EQ(cam.poll(est, t, 3, 1), OffsetClockEstimator::Outcome::kAccepted);
    }
    std::int64_t worst = 0;
    while (t < kClockT0 + 3'600'000) {
      t = est.next_probe_ms(t + 60'000 + 1) - 1;
      ASSERT_EQ(cam.poll(est, t, 3, 1), OffsetClockEstimator::Outcome::kAccepted)
          << "at " << (t - kClockT0) << " ms";
      expect_brackets(est, cam.true_offset(t + 1));
      worst = std::max(worst, est.estimate()->uncertainty_ms);
      EXPECT_LE(est.estimate()->samples, 10U);
    }
    EXPECT_LE(worst, 25) << ppm << " ppm";
    EXPECT_EQ(est.estimate()->epoch, 1U);
    EXPECT_NEAR(static_cast<double>(cam.true_offset(t)), 1500.0 + 3.6 * static_cast<double>(ppm), 10.0);
  }
}

// The same drift with no allowance: the stale samples pin the intersection to the past, and the
// estimate claims a precision that excludes the truth. (Checks that the drift test above can fail.)
TEST(OffsetClockEstimator, WithoutADriftAllowanceTheSameDriftIsMissed) {
  const SimCamera cam{1500, 100};
  OffsetClockEstimator est({.max_drift_ppm = 0});
  UnixMs t = kClockT0;
  cam.poll(est, t, 3, 1);
  for (int i = 1; i < 6; ++i) {
    t = est.next_probe_ms(t + 171) - 1;
    cam.poll(est, t, 3, 1);
  }
  int missed = 0;
  while (t < kClockT0 + 3'600'000) {
    t = est.next_probe_ms(t + 60'001) - 1;
    cam.poll(est, t, 3, 1);
    const auto e = est.estimate();
    missed += std::abs(e->offset_ms - cam.true_offset(t + 1)) > e->uncertainty_ms ? 1 : 0;
  }
  EXPECT_GT(missed, 0);
}

TEST(OffsetClockEstimator, AClockStepRestartsFromTheNewestSample) {
  SimCamera cam{800, 0};
  OffsetClockEstimator est;
  UnixMs t = kClockT0;
  cam.poll(est, t, 2, 1);
  for (int i = 1; i < 8; ++i) {
    t = est.next_probe_ms(t + 171) - 1;
    cam.poll(est, t, 2, 1);
  }
  ASSERT_LE(est.estimate()->uncertainty_ms, 20);
  ASSERT_EQ(est.estimate()->epoch, 1U);

  for (const std::int64_t step : {2500, -1700}) {
    cam.offset_ms += step;  // someone set the camera's clock
    t += 60'000;
    EXPECT_EQ(cam.poll(est, t, 2, 1), OffsetClockEstimator::Outcome::kRestarted);
    auto e = est.estimate();
    ASSERT_TRUE(e);
    EXPECT_EQ(e->samples, 1U);
    EXPECT_LE(e->uncertainty_ms, 501);
    expect_brackets(est, cam.offset_ms);
    const auto epoch = e->epoch;
    // And it converges again on the new offset.
    for (int i = 1; i < 8; ++i) {
      t = est.next_probe_ms(t + 171) - 1;
      EXPECT_EQ(cam.poll(est, t, 2, 1), OffsetClockEstimator::Outcome::kAccepted);
    }
    e = est.estimate();
    EXPECT_LE(e->uncertainty_ms, 20);
    EXPECT_EQ(e->epoch, epoch);
    expect_brackets(est, cam.offset_ms);
  }
  EXPECT_EQ(est.estimate()->epoch, 3U);
}

TEST(OffsetClockEstimator, WindowKeepsTheNewestSamplesAndNoneTooOld) {
  const SimCamera cam{300, 0};
  OffsetClockEstimator est({.max_samples = 4, .max_age_ms = 25 * 60 * 1000});
  for (int i = 0; i < 9; ++i) {
    cam.poll(est, kClockT0 + i * 1000, 1, 0);
  }
  EXPECT_EQ(est.estimate()->samples, 4U);
  for (int i = 1; i <= 3; ++i) {
    cam.poll(est, kClockT0 + 8000 + i * 10 * 60 * 1000, 1, 0);
  }
  // Samples at +10, +20, +30 min remain; those of the first seconds are older than 25 min.
  EXPECT_EQ(est.estimate()->samples, 3U);
  expect_brackets(est, 300);
}

TEST(OffsetClockEstimator, ImpossibleSamplesAreRejected) {
  OffsetClockEstimator est;
  EXPECT_EQ(est.add(kClockT0, 1000, kClockT0 + 10, kClockT0), OffsetClockEstimator::Outcome::kRejected);
  EXPECT_EQ(est.add(kClockT0, 0, kClockT0, kClockT0 + 10), OffsetClockEstimator::Outcome::kRejected);
  EXPECT_FALSE(est.estimate());
  EXPECT_EQ(est.add(kClockT0 + 2000, 1000, kClockT0, kClockT0 + 10), OffsetClockEstimator::Outcome::kStarted);
  const auto before = est.estimate();
  EXPECT_EQ(est.add(kClockT0, 1000, kClockT0 + 10, kClockT0), OffsetClockEstimator::Outcome::kRejected);
  EXPECT_EQ(est.estimate()->offset_ms, before->offset_ms);
  EXPECT_EQ(est.estimate()->samples, 1U);
}

TEST(OffsetClockEstimator, AGatewayClockGoingBackRestarts) {
  const SimCamera cam{300, 0};
  OffsetClockEstimator est;
  cam.poll(est, kClockT0 + 60'000, 1, 0);
  cam.poll(est, kClockT0 + 120'000, 1, 0);
  // The gateway's own clock was stepped back a minute; the camera's was not.
  EXPECT_EQ(
      est.add(cam.camera_ms(kClockT0 + 120'500) / 1000 * 1000, 1000, kClockT0 + 60'500, kClockT0 + 60'501),
      OffsetClockEstimator::Outcome::kRestarted);
  EXPECT_EQ(est.estimate()->samples, 1U);
}

TEST(OffsetClockEstimator, ResetStartsANewEpoch) {
  OffsetClockEstimator est;
  est.add(kClockT0 + 1000, 1000, kClockT0, kClockT0 + 1);
  est.reset();
  EXPECT_FALSE(est.estimate());
  EXPECT_EQ(est.add(kClockT0 + 1000, 1000, kClockT0, kClockT0 + 1), OffsetClockEstimator::Outcome::kStarted);
  EXPECT_EQ(est.estimate()->epoch, 2U);
}

// Issue 12, the class of defect 4: the estimator's memory must not depend on how often it is fed. Its
// samples are gateway time polls, but nothing stops a caller (or a camera answering at once, or a clock
// stepping on every poll) from feeding it at any rate: 100 000 samples per second, accepted or restarting,
// keep at most max_samples.
TEST(OffsetClockEstimator, StaysBoundedAtAnySampleRate) {
  OffsetClockEstimator est;
  const SimCamera cam{.offset_ms = 2500, .drift_ppm = 50};
  std::size_t most = 0;
  for (std::int64_t i = 0; i < 200'000; ++i) {
    const UnixMs t = kClockT0 + i / 100;  // 100 per ms
    cam.poll(est, t, 3, 1);
    most = std::max(most, est.estimate()->samples);
  }
  EXPECT_LE(most, OffsetClockOptions{}.max_samples);
  expect_brackets(est, cam.true_offset(kClockT0 + 1999));
  // A clock stepping by 10 s on every sample: each one restarts the window, which stays one sample.
  OffsetClockEstimator stepping;
  for (std::int64_t i = 0; i < 100'000; ++i) {
    const UnixMs t = kClockT0 + i / 100;
    const auto out = stepping.add(t + (i % 2 == 0 ? 0 : 10'000), 1000, t, t + 3);
    if (i > 0) {
      ASSERT_EQ(out, OffsetClockEstimator::Outcome::kRestarted) << i;
    }
    ASSERT_LE(stepping.estimate()->samples, 1u);
  }
}

}  // namespace
}  // namespace cpd::adapters
