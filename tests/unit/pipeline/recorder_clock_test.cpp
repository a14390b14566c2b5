// Unit tests of the recorder-clock rule: a recorder provably ahead of the station (beyond the tolerance) is
// corrected, one within the tolerance or behind is left as it is, and the station's offset always applies.
#include "daemon/pipeline/recorder_clock.h"

#include <gtest/gtest.h>

namespace cpd::pipeline {
using adapters::DockFile;
using adapters::StationClock;
namespace {

constexpr UnixMs kListed = 1'795'750'730'000;

DockFile recording(std::int64_t collect_after_listing_ms, std::int64_t end_after_collect_ms = -60'000) {
  DockFile f;
  f.collect_ms = kListed + collect_after_listing_ms;
  f.end_ms = f.collect_ms + end_after_collect_ms;
  f.start_ms = f.end_ms - 120'000;
  return f;
}

TEST(RecorderClockTest, OnTimeRecorderKeepsItsTimes) {
  const DockFile f = recording(-30'000);
  const RecorderClockReading r = read_recorder_clock(f, kListed, std::nullopt, 5);
  EXPECT_FALSE(r.recorder_clock_off);
  EXPECT_EQ(r.recorder_offset_ms, 0);
  EXPECT_EQ(r.start_ms, f.start_ms);
  EXPECT_EQ(r.end_ms, f.end_ms);
}

TEST(RecorderClockTest, CollectedAfterTheListingIsAhead) {
  const DockFile f = recording(600'000);
  const RecorderClockReading r = read_recorder_clock(f, kListed, std::nullopt, 5);
  EXPECT_TRUE(r.recorder_clock_off);
  EXPECT_EQ(r.recorder_offset_ms, 600'000);
  EXPECT_EQ(r.start_ms, f.start_ms - 600'000);
  EXPECT_EQ(r.end_ms, f.end_ms - 600'000);
}

TEST(RecorderClockTest, EndedAfterCollectionIsAhead) {
  const DockFile f = recording(-3'600'000, 90'000);
  const RecorderClockReading r = read_recorder_clock(f, kListed, std::nullopt, 5);
  EXPECT_TRUE(r.recorder_clock_off);
  EXPECT_EQ(r.recorder_offset_ms, 90'000);
}

TEST(RecorderClockTest, ToleranceIsExclusive) {
  EXPECT_FALSE(read_recorder_clock(recording(5'000), kListed, std::nullopt, 5).recorder_clock_off);
  EXPECT_TRUE(read_recorder_clock(recording(5'001), kListed, std::nullopt, 5).recorder_clock_off);
  EXPECT_TRUE(read_recorder_clock(recording(1), kListed, std::nullopt, 0).recorder_clock_off);
}

TEST(RecorderClockTest, StationOffsetAppliesToTheRuleAndTheSpan) {
  // The station runs 2 minutes ahead of the gateway: a collect time 1 minute after the gateway's listing
  // time is still before the station's clock, so the recorder is not ahead; the span moves by 2 minutes.
  const DockFile f = recording(60'000);
  const StationClock station{120'000, 50, kListed};
  const RecorderClockReading r = read_recorder_clock(f, kListed, station, 5);
  EXPECT_FALSE(r.recorder_clock_off);
  EXPECT_EQ(r.start_ms, f.start_ms - 120'000);
  EXPECT_EQ(r.end_ms, f.end_ms - 120'000);
  // 10 minutes after the station's clock: corrected by both offsets.
  const DockFile g = recording(720'000);
  const RecorderClockReading q = read_recorder_clock(g, kListed, station, 5);
  EXPECT_TRUE(q.recorder_clock_off);
  EXPECT_EQ(q.recorder_offset_ms, 600'000);
  EXPECT_EQ(q.start_ms, g.start_ms - 720'000);
}

}  // namespace
}  // namespace cpd::pipeline
