// RadarTrackBuilder: grouping by target, timeout by receive time, lanes, units, polar, test targets,
// peak and its status, reboot closing tracks, and the per-track frame bound.
#include "adapters/radar/radar_tracks.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "tests/support/radar_frames.h"

namespace cpd::adapters {
namespace {

constexpr UnixMs kTracksT0 = 1'700'000'000'000;  // UTC at radar time 0
constexpr UnixMs kDelay = 20;

RadarConfig config() {
  RadarConfig c;
  c.id = "radar-1";
  c.lanes = {{1, 0.0, 3.75}, {2, 3.75, 7.5}};
  c.track_timeout_ms = 400;
  c.clock_window_s = 120;
  return c;
}

RadarFrame parse(const std::string& bytes) {
  RadarFrameParser p;
  auto frames = p.feed(bytes);
  EXPECT_EQ(frames.size(), 1u) << bytes;
  return frames.at(0);
}

test::DetectFields detect(std::int64_t time_cs, int target, std::int32_t speed, std::int32_t x = 18) {
  test::DetectFields f;
  f.time_cs = time_cs;
  f.target = target;
  f.targets = 1;
  f.speed_tenths = speed;
  f.range_dm = 300;
  f.x_tenths = x;
  f.amplitude_ddb = 550;
  return f;
}

class Harness {
 public:
  explicit Harness(RadarConfig c = config(), std::size_t max_frames = 400) : b_(c, max_frames) {}
  // Feeds a frame as received `kDelay` after its radar time.
  RadarTrackBuilder::Outcome feed(const std::string& bytes, std::int64_t radar_cs) {
    now_ = kTracksT0 + radar_cs * 10 + kDelay;
    return b_.on_frame(parse(bytes), now_);
  }
  RadarTrackBuilder::Outcome feed_detect(const test::DetectFields& f) {
    return feed(test::detect_frame(f), f.time_cs);
  }
  std::vector<RadarTrack> expire_after(UnixMs ms) { return b_.expire(now_ + ms); }
  RadarTrackBuilder& builder() { return b_; }

 private:
  RadarTrackBuilder b_;
  UnixMs now_ = 0;
};

TEST(RadarTrackBuilder, OneVehicleOneTrackWithPeak) {
  Harness h;
  const std::int32_t speeds[] = {850, 862, 871, 868, 860};
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(h.feed_detect(detect(100000 + i * 5, 7, speeds[i])).closed.empty());
  }
  EXPECT_EQ(h.builder().open_tracks(), 1u);
  EXPECT_TRUE(h.expire_after(399).empty());
  auto closed = h.expire_after(400);
  ASSERT_EQ(closed.size(), 1u);
  const auto& t = closed[0];
  EXPECT_EQ(t.device_id, "radar-1");
  EXPECT_EQ(t.target, 7);
  EXPECT_EQ(t.lane, 1);
  EXPECT_TRUE(t.approaching);
  EXPECT_EQ(t.peak_speed_dkmh, 871);
  EXPECT_EQ(t.units, 'K');
  EXPECT_EQ(t.time_ms, kTracksT0 + (100000 + 10) * 10 + kDelay);
  EXPECT_EQ(t.first_ms, kTracksT0 + 100000 * 10 + kDelay);
  EXPECT_EQ(t.last_ms, kTracksT0 + (100000 + 20) * 10 + kDelay);
  ASSERT_EQ(t.samples.size(), 5u);
  ASSERT_EQ(t.raw_frames.size(), 5u);
  EXPECT_EQ(t.raw_frames[2], test::detect_frame(detect(100010, 7, 871)));
  EXPECT_EQ(t.samples[2].range_cm, 3000);
  EXPECT_EQ(t.samples[2].lateral_cm, 180);
  EXPECT_EQ(t.samples[2].amplitude_ddb, 550);
  EXPECT_EQ(t.clock.offset_ms, kTracksT0 + kDelay);
  EXPECT_EQ(t.clock.epoch, 0);
  EXPECT_EQ(h.builder().counters().tracks, 1u);
  EXPECT_EQ(h.builder().open_tracks(), 0u);
}

TEST(RadarTrackBuilder, SeveralTargetsInDifferentLanes) {
  Harness h;
  for (int i = 0; i < 4; ++i) {
    h.feed_detect(detect(1000 + i * 5, 3, 700 + i, 10));  // 1.0 m: lane 1
    h.feed_detect(detect(1001 + i * 5, 4, 900 - i, 50));  // 5.0 m: lane 2
    h.feed_detect(detect(1002 + i * 5, 5, 500, 80));      // 8.0 m: no lane
  }
  auto closed = h.expire_after(1000);
  ASSERT_EQ(closed.size(), 3u);
  std::map<int, RadarTrack> by_target;
  for (auto& t : closed) {
    by_target[t.target] = t;
  }
  EXPECT_EQ(by_target[3].lane, 1);
  EXPECT_EQ(by_target[3].peak_speed_dkmh, 703);
  EXPECT_EQ(by_target[4].lane, 2);
  EXPECT_EQ(by_target[4].peak_speed_dkmh, 900);
  EXPECT_EQ(by_target[5].lane, 0);
}

TEST(RadarTrackBuilder, LaneBoundaryIsHalfOpenAndUsesMedian) {
  Harness h;
  // Median of {3.7, 3.8, 3.8} = 3.8 -> lane 2 despite one sample in lane 1; 9.0 outlier ignored.
  h.feed_detect(detect(1000, 1, 500, 37));
  h.feed_detect(detect(1005, 1, 500, 38));
  h.feed_detect(detect(1010, 1, 500, 38));
  h.feed_detect(detect(1015, 1, 500, 90));
  // Exactly on the boundary 3.75 (even count median = mean of 3.7 and 3.8).
  h.feed_detect(detect(1000, 2, 500, 37));
  h.feed_detect(detect(1005, 2, 500, 38));
  auto closed = h.expire_after(1000);
  ASSERT_EQ(closed.size(), 2u);
  for (const auto& t : closed) {
    EXPECT_EQ(t.lane, 2) << t.target;
    // The record keeps what the lane was decided with: the median in mm and the bands in mm.
    ASSERT_EQ(t.lane_bands.size(), 2u);
    EXPECT_EQ(t.lane_bands[1].x_min_mm, 3750);
    EXPECT_EQ(t.lane_bands[1].x_max_mm, 7500);
    EXPECT_EQ(radar_lane_for_mm(t.lane_bands, t.median_lateral_mm), t.lane);
  }
  const auto on_boundary =
      std::find_if(closed.begin(), closed.end(), [](const auto& t) { return t.target == 2; });
  ASSERT_NE(on_boundary, closed.end());
  EXPECT_EQ(on_boundary->median_lateral_mm, 3750) << "mean of 3.7 m and 3.8 m";
  EXPECT_EQ(radar_lane_for_mm(radar_lane_bands(config().lanes), 3749), 1);
  EXPECT_EQ(radar_lane_for_mm(radar_lane_bands(config().lanes), 7500), 0);
  EXPECT_EQ(radar_lane_for(config().lanes, 3.75), 2);
  EXPECT_EQ(radar_lane_for(config().lanes, 7.5), 0);
  EXPECT_EQ(radar_lane_for(config().lanes, -0.01), 0);
  EXPECT_EQ(radar_lane_for(config().lanes, 0.0), 1);
}

TEST(RadarTrackBuilder, MphIsNormalisedToTenthsKmh) {
  EXPECT_EQ(radar_speed_dkmh(543, 'M'), 874);    // 54.3 mph = 87.387 km/h -> 87.4
  EXPECT_EQ(radar_speed_dkmh(1000, 'M'), 1609);  // 100.0 mph = 160.93 km/h
  EXPECT_EQ(radar_speed_dkmh(873, 'K'), 873);
  Harness h;
  auto f = detect(1000, 9, 500);
  f.units = 'M';
  h.feed_detect(f);
  f.time_cs = 1005;
  f.units = 'K';
  f.speed_tenths = 800;  // 80.0 km/h < 50.0 mph (80.5 km/h): the mph frame stays the peak
  h.feed_detect(f);
  auto closed = h.expire_after(500);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].peak_speed_dkmh, 805);
  EXPECT_EQ(closed[0].units, 'M');
  EXPECT_EQ(closed[0].samples[1].speed_dkmh, 800);
}

TEST(RadarTrackBuilder, PolarFramesUseRangeTimesSinAzimuth) {
  test::DetectFields f = detect(1000, 2, 600);
  f.coord = 'P';
  f.range_dm = 200;  // 20.0 m
  f.x_tenths = 150;  // 15 degrees -> 5.176 m: lane 2
  RadarDetect d;
  d.coord = 'P';
  d.range_dm = 200;
  d.x_tenths = 150;
  EXPECT_EQ(radar_lateral_cm(d), 518);
  d.x_tenths = -300;  // -30 degrees -> -10 m
  EXPECT_EQ(radar_lateral_cm(d), -1000);
  Harness h;
  h.feed_detect(f);
  auto closed = h.expire_after(500);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].lane, 2);
  EXPECT_EQ(closed[0].samples[0].lateral_cm, 518);
}

TEST(RadarTrackBuilder, TestTargetsNeverBecomeTracks) {
  Harness h;
  auto x = detect(1000, 98, 1000);
  x.dir = 'X';
  auto y = detect(1000, 99, 1000);
  y.dir = 'Y';
  for (int i = 0; i < 3; ++i) {
    x.time_cs = y.time_cs = 1000 + i * 5;
    h.feed_detect(x);
    h.feed_detect(y);
  }
  EXPECT_EQ(h.builder().open_tracks(), 0u);
  EXPECT_TRUE(h.expire_after(10000).empty());
  EXPECT_EQ(h.builder().counters().test_targets, 6u);
  EXPECT_EQ(h.builder().counters().tracks, 0u);
}

TEST(RadarTrackBuilder, RecedingTarget) {
  Harness h;
  auto f = detect(1000, 4, 600);
  f.dir = 'R';
  h.feed_detect(f);
  auto closed = h.expire_after(500);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_FALSE(closed[0].approaching);
}

TEST(RadarTrackBuilder, TimeoutIsByReceiveTimeAndReusedNumberStartsNewTrack) {
  Harness h;
  h.feed_detect(detect(1000, 1, 500));
  h.feed_detect(detect(1030, 1, 510));  // 300 ms later: same track
  EXPECT_EQ(h.builder().open_tracks(), 1u);
  // The same number again 2 s later in radar time but delivered in one burst: a new vehicle.
  auto out = h.feed_detect(detect(1230, 1, 800));
  ASSERT_EQ(out.closed.size(), 1u);
  EXPECT_EQ(out.closed[0].peak_speed_dkmh, 510);
  EXPECT_EQ(out.closed[0].samples.size(), 2u);
  auto rest = h.expire_after(400);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].peak_speed_dkmh, 800);
}

TEST(RadarTrackBuilder, StatusInForceAtPeakAndStatusChanges) {
  Harness h;
  auto o1 = h.feed(test::status_frame(900, 0, "OK"), 900);
  ASSERT_TRUE(o1.status_change.has_value());
  EXPECT_EQ(o1.status_change->code, 0);
  EXPECT_EQ(o1.status_change->since_ms, kTracksT0 + 9000 + kDelay);
  EXPECT_FALSE(h.feed(test::status_frame(950, 0, "OK"), 950).status_change.has_value());
  h.feed_detect(detect(1000, 1, 500));
  h.feed_detect(detect(1005, 1, 520));  // peak under status 00
  auto o2 = h.feed(test::status_frame(1008, 20, "ANTENNA FAULT"), 1008);
  ASSERT_TRUE(o2.status_change.has_value());
  EXPECT_EQ(o2.status_change->code, 20);
  h.feed_detect(detect(1010, 1, 510));
  h.feed_detect(detect(1015, 2, 900));  // another vehicle, peak under status 20
  auto closed = h.expire_after(400);
  ASSERT_EQ(closed.size(), 2u);
  EXPECT_EQ(closed[0].target, 1);
  EXPECT_EQ(closed[0].status.code, 0);
  EXPECT_EQ(closed[1].target, 2);
  EXPECT_EQ(closed[1].status.code, 20);
  EXPECT_EQ(closed[1].status.text, "ANTENNA FAULT");
  EXPECT_EQ(h.builder().status().code, 20);
}

TEST(RadarTrackBuilder, RebootClosesOpenTracksWithTheOldEpochClock) {
  Harness h;
  h.feed_detect(detect(500000, 1, 500));
  h.feed_detect(detect(500005, 1, 600));
  auto out = h.feed(test::status_frame(500, 0, "OK"), 500006);  // clock restarted at 5 s
  EXPECT_TRUE(out.new_epoch);
  ASSERT_EQ(out.closed.size(), 1u);
  EXPECT_EQ(out.closed[0].clock.epoch, 0);
  EXPECT_EQ(out.closed[0].time_ms, kTracksT0 + 5'000'050 + kDelay);
  EXPECT_EQ(h.builder().clock_estimate().epoch, 1);
  EXPECT_EQ(h.builder().counters().epochs, 1u);
}

TEST(RadarTrackBuilder, DisconnectClosesEverything) {
  Harness h;
  h.feed_detect(detect(1000, 1, 500));
  h.feed_detect(detect(1000, 2, 500));
  auto closed = h.builder().on_disconnect();
  EXPECT_EQ(closed.size(), 2u);
  EXPECT_EQ(h.builder().open_tracks(), 0u);
}

TEST(RadarTrackBuilder, FrameBoundKeepsPeak) {
  Harness h(config(), 10);
  for (int i = 0; i < 30; ++i) {
    h.feed_detect(detect(1000 + i, 1, i == 25 ? 999 : 500 + i % 3));
  }
  auto closed = h.expire_after(400);
  ASSERT_EQ(closed.size(), 1u);
  const auto& t = closed[0];
  EXPECT_EQ(t.samples.size(), 10u);
  EXPECT_EQ(t.raw_frames.size(), 10u);
  EXPECT_EQ(t.peak_speed_dkmh, 999);
  EXPECT_EQ(t.samples.back().speed_dkmh, 999);
  EXPECT_EQ(t.time_ms, kTracksT0 + 10250 + kDelay);
  EXPECT_EQ(h.builder().counters().dropped_frames, 20u);
}

// Issue 12, defect 6: a radar clock that steps back on every frame made every frame a new epoch, and so a
// one-frame track (a record) each. Now the first steps are reboots, then the clock is unstable: vehicles
// are still tracked by number and receive-time gaps, timed by receive time and marked unstable.
TEST(RadarTrackBuilder, AClockSteppingBackOnEveryFrameStillBuildsTracksMarkedUnstable) {
  RadarTrackBuilder b(config());
  std::int64_t raw = 5'000'000;
  UnixMs now = kTracksT0;
  std::vector<RadarTrack> closed;
  int became_unstable = 0;
  // Two vehicles one after the other (targets 1 and 2), 200 frames each at 10 ms, then a gap.
  for (int vehicle = 1; vehicle <= 2; ++vehicle) {
    for (int i = 0; i < 200; ++i, now += 10) {
      auto out = b.on_frame(parse(test::detect_frame(detect(raw, vehicle, i == 100 ? 900 : 500))), now);
      became_unstable += out.clock_change == RadarClockMapper::Change::kBecameUnstable ? 1 : 0;
      for (auto& t : out.closed) {
        closed.push_back(std::move(t));
      }
      raw -= 200;  // 2 s back, every frame
    }
    now += 500;
    for (auto& t : b.expire(now)) {
      closed.push_back(std::move(t));
    }
  }
  EXPECT_EQ(became_unstable, 1);
  // The frames before the clock was found unstable closed at its steps (one frame each): a bounded few.
  std::vector<RadarTrack> unstable;
  for (auto& t : closed) {
    if (t.clock.unstable) {
      unstable.push_back(t);
    }
  }
  EXPECT_EQ(closed.size() - unstable.size(), static_cast<std::size_t>(RadarClockMapper::kUnstableSteps));
  ASSERT_EQ(unstable.size(), 2u);
  EXPECT_EQ(unstable[0].target, 1);
  EXPECT_EQ(unstable[0].samples.size(), 200u - RadarClockMapper::kUnstableSteps);
  EXPECT_EQ(unstable[0].peak_speed_dkmh, 900);
  EXPECT_EQ(unstable[1].target, 2);
  EXPECT_EQ(unstable[1].samples.size(), 200u);
  // Timed by the gateway's receive time: the frame of the peak came 100 frames (1 s) into vehicle 2.
  EXPECT_EQ(unstable[1].time_ms, kTracksT0 + 200 * 10 + 500 + 100 * 10);
  EXPECT_EQ(unstable[1].first_ms, kTracksT0 + 200 * 10 + 500);
  EXPECT_GE(b.counters().clock_steps, 399u);
  EXPECT_EQ(b.counters().epochs, static_cast<std::uint64_t>(RadarClockMapper::kUnstableSteps));
}

}  // namespace
}  // namespace cpd::adapters
