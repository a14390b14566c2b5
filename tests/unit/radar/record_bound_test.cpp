// RecordBound: the token bucket that bounds the records one device causes, and its suppression episodes.
#include "adapters/record_bound.h"

#include <gtest/gtest.h>

namespace cpd::adapters {
namespace {

constexpr UnixMs kBoundT0 = 1'700'000'000'000;

TEST(RecordBound, PassesABurstThenTheRate) {
  RecordBound b(50, 128);
  int passed = 0;
  for (int i = 0; i < 200; ++i) {
    passed += b.admit(kBoundT0) ? 1 : 0;
  }
  EXPECT_EQ(passed, 128);
  EXPECT_EQ(b.suppressed(), 72u);
  // One second later, one second's worth.
  passed = 0;
  for (int i = 0; i < 200; ++i) {
    passed += b.admit(kBoundT0 + 1000) ? 1 : 0;
  }
  EXPECT_EQ(passed, 50);
}

TEST(RecordBound, AFloodAt100000PerSecondGetsTheBoundAndIsCounted) {
  RecordBound b(50, RecordBound::default_burst(50));
  std::uint64_t passed = 0;
  int episodes = 0;
  constexpr int kSeconds = 10;
  for (std::int64_t i = 0; i < 100'000LL * kSeconds; ++i) {
    bool started = false;
    passed += b.admit(kBoundT0 + i / 100, &started) ? 1 : 0;
    episodes += started ? 1 : 0;
  }
  EXPECT_LE(passed, static_cast<std::uint64_t>(128 + 50 * kSeconds));
  EXPECT_GE(passed, static_cast<std::uint64_t>(128 + 50 * (kSeconds - 1)));
  EXPECT_EQ(passed + b.suppressed(), 100'000u * kSeconds);
  EXPECT_EQ(episodes, 1) << "one episode while the flood lasts";
  EXPECT_TRUE(b.suppressing());
}

TEST(RecordBound, AnEpisodeEndsAfterAQuietPeriodWithItsCount) {
  RecordBound b(1, 1);
  EXPECT_TRUE(b.admit(kBoundT0));
  bool started = false;
  EXPECT_FALSE(b.admit(kBoundT0 + 10, &started));
  EXPECT_TRUE(started);
  EXPECT_FALSE(b.admit(kBoundT0 + 20, &started));
  EXPECT_FALSE(started);
  EXPECT_FALSE(b.take_ended(kBoundT0 + 20 + RecordBound::kQuietMs - 1));
  const auto e = b.take_ended(kBoundT0 + 20 + RecordBound::kQuietMs);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->count, 2u);
  EXPECT_EQ(e->first_ms, kBoundT0 + 10);
  EXPECT_EQ(e->last_ms, kBoundT0 + 20);
  EXPECT_FALSE(b.suppressing());
  EXPECT_FALSE(b.take_ended(kBoundT0 + 100'000)) << "reported once";
  EXPECT_EQ(b.suppressed(), 2u);
}

TEST(RecordBound, AGatewayClockGoingBackRefillsNothing) {
  RecordBound b(10, 1);
  EXPECT_TRUE(b.admit(kBoundT0));
  EXPECT_FALSE(b.admit(kBoundT0 - 3'600'000));
  EXPECT_FALSE(b.admit(kBoundT0 + 50));
  EXPECT_TRUE(b.admit(kBoundT0 + 100));
}

}  // namespace
}  // namespace cpd::adapters
