// Unit tests of the correlator: matching of radar tracks and plate reads, speeding bands, validity checks
// and record contents. No I/O and no clock: every event and tick carries its own gateway time.
#include "daemon/pipeline/correlator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "adapters/common/jpeg_header.h"
#include "daemon/core/jcs.h"
#include "tests/support/jpeg_samples.h"

namespace cpd::pipeline {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::ElementsAre;

constexpr UnixMs kT0 = 1'750'000'000'000;              // 2025-06-15T15:06:40Z
constexpr UnixMs kCalibrationEnd = 1'814'371'200'000;  // 2027-07-01T00:00+08:00

config::Config make_config() {
  config::Config c;
  c.gateway.id = "gw-1";
  c.gateway.site.name = "Test site";
  c.gateway.site.road = "G60";
  c.gateway.site.direction = "N";
  c.gateway.site.lat = 30.0;
  c.gateway.site.lon = 120.0;
  c.gateway.site.utc_offset = "+08:00";
  c.gateway.site.utc_offset_min = 480;
  adapters::RadarConfig radar;
  radar.id = "radar-1";
  radar.lanes = {{1, 0.0, 3.75}, {2, 3.75, 7.5}, {3, 7.5, 11.25}};
  radar.calibration = {"JJG527-2026-0412", "2027-06-30", kCalibrationEnd, ""};
  radar.track_timeout_ms = 400;
  adapters::RadarConfig lone = radar;  // a radar no camera watches
  lone.id = "radar-2";
  adapters::CameraConfig camera;
  camera.id = "cam-1";
  camera.radar = "radar-1";
  c.devices.push_back({"radar-1", "radar", "gw.yaml:10:5", radar});
  c.devices.push_back({"radar-2", "radar", "gw.yaml:20:5", lone});
  c.devices.push_back({"cam-1", "camera", "gw.yaml:30:5", camera});
  c.correlation.window_ms = 500;
  c.correlation.max_wait_ms = 2000;
  c.correlation.lanes = {{1, 100, {{"truck", 80}}}, {2, 120, {}}, {3, 100, {}}};
  c.validity.max_camera_clock_offset_ms = 1000;
  c.validity.clock_sync = "kernel";
  c.validity.min_pictures_speeding = 2;
  // The GA/T 832 panorama rule has its own tests (below); the others use a single-stage camera's pictures.
  c.validity.min_panoramas_speeding = 0;
  return c;
}

adapters::RadarTrack make_track(int target, int lane, std::int32_t speed_dkmh, UnixMs time_ms,
                                std::string radar = "radar-1") {
  adapters::RadarTrack t;
  t.device_id = std::move(radar);
  t.target = target;
  t.lane = lane;
  t.approaching = true;
  t.peak_speed_dkmh = speed_dkmh;
  t.time_ms = time_ms;
  t.first_ms = time_ms - 600;
  t.last_ms = time_ms + 200;
  t.units = 'K';
  t.median_lateral_mm = 1500;
  t.lane_bands = {{1, 0, 3750}, {2, 3750, 7500}};
  for (int i = 0; i < 3; ++i) {
    t.samples.push_back(
        {time_ms - 600 + i * 400, 100000 + i * 40, speed_dkmh - 2 + i, 5000 - i * 1000, 150, 420});
    t.raw_frames.push_back(
        "\x02"
        "frame" +
        std::to_string(target) + "-" + std::to_string(i) + "\x03");
  }
  t.clock = {.offset_ms = kT0 - 1'000'000, .samples = 40, .window_ms = 120000, .epoch = 0, .wraps = 0};
  t.status = {.code = 0, .text = "OK", .since_ms = kT0 - 60'000};
  return t;
}

const adapters::JpegHeader kFullHd{.width = 1920,
                                   .height = 1080,
                                   .components = 3,
                                   .bits_per_sample = 8,
                                   .color_space = "ycbcr",
                                   .progressive = false,
                                   .arithmetic = false};

adapters::PlateRead make_read(std::string uuid, int lane, std::string plate, UnixMs time_ms,
                              std::optional<std::int64_t> offset_ms = 120, int pictures = 2) {
  adapters::PlateRead r;
  r.device_id = "cam-1";
  r.radar_id = "radar-1";
  r.uuid = std::move(uuid);
  r.clock_offset_ms = offset_ms;
  r.camera_time_ms = time_ms + offset_ms.value_or(0);
  r.camera_time = "2025-06-15T23:06:40.000+08:00";
  r.time_ms = time_ms;
  r.clock_offset_measured_ms = kT0 - 30'000;
  r.lane = lane;
  r.direction = "forward";
  r.plate = std::move(plate);
  r.plate_color = "blue";
  r.plate_type = "92TypeCivil";
  r.vehicle_type = "vehicle";
  r.country = "CN";
  r.confidence = 97;
  r.active_post_count = 3;
  for (int i = 0; i < pictures; ++i) {
    r.pictures.push_back({.sha256 = std::string(63, 'a') + std::to_string(i),
                          .bytes = 200000 + i,
                          .content_type = "image/jpeg",
                          .kind = i == 0 ? "licensePlatePicture" : "detectionPicture",
                          .file_name = "pic" + std::to_string(i) + ".jpg",
                          .capture_ms = time_ms,
                          .header = kFullHd,
                          .header_error = ""});
  }
  r.raw_xml = "<EventNotificationAlert>" + r.uuid + "</EventNotificationAlert>";
  return r;
}

ClockSync synced() {
  return {.synchronized = true, .source = "kernel", .max_error_us = 16000, .est_error_us = 500};
}

// Feeds the events at `arrive`, then ticks until `until` in 100 ms steps; returns every fact in order.
std::vector<Fact> run(Correlator& c, const std::vector<adapters::DeviceEvent>& events, UnixMs arrive,
                      UnixMs until) {
  std::vector<Fact> facts;
  for (const auto& e : events) {
    for (auto& f : c.on_event(e, arrive)) {
      facts.push_back(std::move(f));
    }
  }
  for (UnixMs now = arrive; now <= until; now += 100) {
    for (auto& f : c.tick(now)) {
      facts.push_back(std::move(f));
    }
  }
  return facts;
}

std::vector<Fact> run(const config::Config& cfg, const std::vector<adapters::DeviceEvent>& events,
                      UnixMs arrive = kT0 + 700, UnixMs until = kT0 + 5000) {
  Correlator c(cfg);
  c.set_clock_sync(synced());
  auto facts = run(c, events, arrive, until);
  EXPECT_EQ(c.pending(), 0U);
  return facts;
}

std::vector<std::string> types_of(const std::vector<Fact>& facts) {
  std::vector<std::string> out;
  for (const auto& f : facts) {
    out.push_back(f.type);
  }
  return out;
}

// Evidence numbers are integers only: walks the whole value.
bool integers_only(const json& j) {
  if (j.is_number_float()) {
    return false;
  }
  if (j.is_structured()) {
    for (const auto& item : j) {
      if (!integers_only(item)) {
        return false;
      }
    }
  }
  return true;
}

std::string dump_all(const std::vector<Fact>& facts) {
  std::string out;
  for (const auto& f : facts) {
    out += f.type + " " + std::to_string(f.time_ms) + " " + f.fields.dump() + "\n";
  }
  return out;
}

// The facts as a set: when an unmatched item's wait ends depends on when it arrived, so the order in
// which records are released may follow arrival order; what they say must not.
std::vector<std::string> fact_set(const std::vector<Fact>& facts) {
  std::vector<std::string> out;
  for (const auto& f : facts) {
    out.push_back(f.type + " " + std::to_string(f.time_ms) + " " + f.fields.dump());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(CorrelatorTest, PassageWithEveryPart) {
  const auto facts =
      run(make_config(), {make_track(7, 1, 953, kT0), make_read("uuid-a", 1, "浙A12345", kT0 + 120)});
  ASSERT_THAT(types_of(facts), ElementsAre("passage"));
  const Fact& f = facts[0];
  EXPECT_EQ(f.time_ms, kT0);  // the radar track's time
  const json& b = f.fields;
  EXPECT_EQ(b["plate"], "浙A12345");
  EXPECT_EQ(b["plate_color"], "blue");
  EXPECT_EQ(b["plate_type"], "92TypeCivil");
  EXPECT_EQ(b["vehicle_type"], "vehicle");
  EXPECT_EQ(b["confidence"], 97);
  EXPECT_EQ(b["lane"], 1);
  EXPECT_EQ(b["direction"], "approaching");
  EXPECT_EQ(b["speed_dkmh"], 953);
  EXPECT_EQ(b["limit_kmh"], 100);
  EXPECT_FALSE(b.contains("limit_vehicle_type"));
  EXPECT_FALSE(b.contains("over_dkmh"));
  EXPECT_EQ(b["radar"], "radar-1");
  EXPECT_EQ(b["camera"], "cam-1");
  EXPECT_EQ(b["site"]["gateway"], "gw-1");
  EXPECT_EQ(b["site"]["utc_offset"], "+08:00");
  EXPECT_EQ(b["lane_rule"],
            json::parse(R"({"median_lateral_mm":1500,"bands":[{"lane":1,"x_min_mm":0,"x_max_mm":3750},)"
                        R"({"lane":2,"x_min_mm":3750,"x_max_mm":7500}]})"));
  EXPECT_EQ(b["site"]["lat_e7"], 300000000);
  ASSERT_EQ(b["pictures"].size(), 2U);
  EXPECT_EQ(b["pictures"][0]["sha256"], std::string(63, 'a') + "0");
  EXPECT_EQ(b["pictures"][0]["bytes"], 200000);
  EXPECT_EQ(b["pictures"][0]["type"], "licensePlatePicture");
  EXPECT_EQ(b["pictures"][0]["content_type"], "image/jpeg");
  EXPECT_EQ(b["pictures"][0]["capture_ms"], kT0 + 120);
  EXPECT_EQ(b["missing_pictures"], json::array());
  EXPECT_THAT(f.media, ElementsAre(std::string(63, 'a') + "0", std::string(63, 'a') + "1"));
  EXPECT_EQ(b["track"]["target"], 7);
  EXPECT_EQ(b["track"]["frames"], 3);
  EXPECT_EQ(b["raw_frames"].size(), 3U);
  EXPECT_EQ(b["speeds_dkmh"], json({951, 952, 953}));
  EXPECT_EQ(b["radar_clock"]["offset_ms"], kT0 - 1'000'000);
  EXPECT_EQ(b["calibration"]["valid"], true);
  EXPECT_EQ(b["radar_status"]["code"], 0);
  EXPECT_EQ(b["camera_event"]["uuid"], "uuid-a");
  EXPECT_EQ(b["camera_event"]["camera_time_ms"], kT0 + 240);
  EXPECT_EQ(b["camera_event"]["clock_offset_ms"], 120);
  EXPECT_EQ(b["camera_event"]["clock_offset_measured_ms"], kT0 - 30'000);
  EXPECT_EQ(b["camera_event"]["active_post_count"], 3);
  EXPECT_EQ(b["camera_event"]["raw_xml"], "<EventNotificationAlert>uuid-a</EventNotificationAlert>");
  EXPECT_EQ(b["clock_offsets"], json({{"radar_ms", kT0 - 1'000'000}, {"camera_ms", 120}}));
  EXPECT_EQ(b["match"],
            json({{"dt_ms", 120}, {"window_ms", 500}, {"track_candidates", 1}, {"read_candidates", 1}}));
  EXPECT_EQ(b["enforceable"], true);
  EXPECT_EQ(b["reasons"], json::array());
  EXPECT_EQ(b["checks"]["calibration"]["ok"], true);
  EXPECT_EQ(b["checks"]["radar_status"]["ok"], true);
  EXPECT_EQ(b["checks"]["camera_clock"]["ok"], true);
  EXPECT_EQ(b["checks"]["clock_sync"], json({{"ok", true},
                                             {"source", "kernel"},
                                             {"synchronized", true},
                                             {"max_error_us", 16000},
                                             {"est_error_us", 500}}));
  EXPECT_EQ(b["checks"]["pictures"], json({{"ok", true}, {"count", 2}, {"min", 0}}));
  EXPECT_TRUE(integers_only(b));
  for (const char* common : {"v", "gateway", "seq", "prev", "id", "type", "time_ms", "created_ms"}) {
    EXPECT_FALSE(b.contains(common)) << common;  // the sealer adds these
  }
}

TEST(CorrelatorTest, MatchWaitsForTheSettleDelayThenComesOut) {
  Correlator c(make_config());
  c.set_clock_sync(synced());
  EXPECT_TRUE(c.on_event(make_track(1, 1, 900, kT0), kT0 + 700).empty());
  EXPECT_TRUE(c.on_event(make_read("u", 1, "A1", kT0 + 100), kT0 + 300).empty());
  EXPECT_EQ(c.pending(), 2U);
  // Settled once now >= time + window (500) + track_timeout (400) + margin (500), for both items.
  EXPECT_TRUE(c.tick(kT0 + 100 + 1399).empty());
  const auto facts = c.tick(kT0 + 100 + 1400);
  EXPECT_THAT(types_of(facts), ElementsAre("passage"));
  EXPECT_EQ(c.pending(), 0U);
  EXPECT_TRUE(c.tick(kT0 + 10'000).empty());
}

struct SpeedCase {
  std::int32_t speed_dkmh;
  int lane;
  std::string vehicle_type;
  std::string type;
  std::int64_t limit_kmh;
  std::int64_t over_dkmh;
  std::int64_t over_permille;
  std::string band;
};

TEST(CorrelatorTest, SpeedersAndBandsAreExact) {
  const std::vector<SpeedCase> cases = {
      {1000, 1, "vehicle", "passage", 100, 0, 0, ""},  // at the limit: not speeding
      {1001, 1, "vehicle", "speeding", 100, 1, 1, "under_10"},
      {1100, 1, "vehicle", "speeding", 100, 100, 100, "under_10"},  // exactly 10 % over: not "over 10 %"
      {1101, 1, "vehicle", "speeding", 100, 101, 101, "over_10"},
      {1200, 1, "vehicle", "speeding", 100, 200, 200, "over_10"},
      {1201, 1, "vehicle", "speeding", 100, 201, 201, "over_20"},
      {1500, 1, "vehicle", "speeding", 100, 500, 500, "over_20"},
      {1501, 1, "vehicle", "speeding", 100, 501, 501, "over_50"},
      {2500, 1, "vehicle", "speeding", 100, 1500, 1500, "over_50"},
      {900, 1, "truck", "speeding", 80, 100, 125, "over_10"},  // the lane's truck limit
      {800, 1, "truck", "passage", 80, 0, 0, ""},
      {1203, 2, "vehicle", "speeding", 120, 3, 3, "under_10"},  // 2.5 permille rounds half up
      {1205, 2, "vehicle", "speeding", 120, 5, 4, "under_10"},  // 4.17
      {1207, 2, "vehicle", "speeding", 120, 7, 6, "under_10"},  // 5.83
      {1199, 2, "truck", "passage", 120, 0, 0, ""},             // no truck override in lane 2
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(std::to_string(k.speed_dkmh) + " lane " + std::to_string(k.lane) + " " + k.vehicle_type);
    auto read = make_read("u", k.lane, "A1", kT0);
    read.vehicle_type = k.vehicle_type;
    const auto facts = run(make_config(), {make_track(1, k.lane, k.speed_dkmh, kT0), read});
    ASSERT_THAT(types_of(facts), ElementsAre(k.type));
    const json& b = facts[0].fields;
    EXPECT_EQ(b["limit_kmh"], k.limit_kmh);
    EXPECT_EQ(b["speed_dkmh"], k.speed_dkmh);
    EXPECT_EQ(b.contains("limit_vehicle_type"), k.vehicle_type == "truck" && k.lane == 1);
    if (k.type == "speeding") {
      EXPECT_EQ(b["over_dkmh"], k.over_dkmh);
      EXPECT_EQ(b["over_permille"], k.over_permille);
      EXPECT_EQ(b["band"], k.band);
      EXPECT_EQ(b["checks"]["pictures"]["min"], 2);
      EXPECT_EQ(b["enforceable"], true);
    } else {
      EXPECT_FALSE(b.contains("over_dkmh"));
      EXPECT_FALSE(b.contains("band"));
    }
  }
}

TEST(CorrelatorTest, LaneWithoutLimitIsAPassageWithoutLimit) {
  auto cfg = make_config();
  cfg.correlation.lanes.clear();
  const auto facts = run(cfg, {make_track(1, 1, 2000, kT0), make_read("u", 1, "A1", kT0)});
  ASSERT_THAT(types_of(facts), ElementsAre("passage"));
  EXPECT_FALSE(facts[0].fields.contains("limit_kmh"));
}

TEST(CorrelatorTest, UnmatchedBothSidesAfterMaxWait) {
  Correlator c(make_config());
  c.set_clock_sync(synced());
  // Other lane, and the same lane but 501 ms apart: neither pairs.
  EXPECT_TRUE(c.on_event(make_track(1, 1, 900, kT0), kT0 + 600).empty());
  EXPECT_TRUE(c.on_event(make_read("u2", 2, "B2", kT0), kT0 + 600).empty());
  EXPECT_TRUE(c.on_event(make_read("u1", 1, "A1", kT0 + 501), kT0 + 700).empty());
  // The wait is max_wait_ms (2000) from arrival.
  EXPECT_TRUE(c.tick(kT0 + 2599).empty());
  const auto first = c.tick(kT0 + 2600);
  // Equal times: released in a fixed order (reads before tracks), not in arrival order.
  ASSERT_THAT(types_of(first), ElementsAre("plate_read", "speed_measurement"));
  EXPECT_EQ(c.pending(), 1U);
  const auto second = c.tick(kT0 + 2700);
  ASSERT_THAT(types_of(second), ElementsAre("plate_read"));
  EXPECT_EQ(c.pending(), 0U);

  // The unmatched track is today's speed_measurement, unchanged.
  const json& m = first[1].fields;
  EXPECT_EQ(first[1].time_ms, kT0);
  EXPECT_EQ(m["device"], "radar-1");
  EXPECT_EQ(m["speed_dkmh"], 900);
  EXPECT_EQ(m["valid"], true);
  EXPECT_EQ(m["invalid_reasons"], json::array());
  EXPECT_FALSE(m.contains("plate"));
  EXPECT_FALSE(m.contains("enforceable"));

  const json& p = first[0].fields;
  EXPECT_EQ(first[0].time_ms, kT0);
  EXPECT_EQ(p["plate"], "B2");
  EXPECT_EQ(p["lane"], 2);
  EXPECT_EQ(p["camera"], "cam-1");
  EXPECT_EQ(p["radar"], "radar-1");
  EXPECT_EQ(p["camera_event"]["uuid"], "u2");
  EXPECT_EQ(p["pictures"].size(), 2U);
  EXPECT_EQ(first[0].media.size(), 2U);
  EXPECT_TRUE(first[1].media.empty());
  EXPECT_EQ(p["match"], json({{"candidates", 0}, {"unmatched", "no_candidate"}, {"window_ms", 500}}));
  EXPECT_EQ(p["enforceable"], true);
  EXPECT_EQ(p["checks"]["camera_clock"]["ok"], true);
  EXPECT_EQ(p["checks"]["clock_sync"]["ok"], true);
  EXPECT_FALSE(p["checks"].contains("calibration"));
  EXPECT_TRUE(integers_only(p));
  EXPECT_EQ(second[0].fields["camera_event"]["uuid"], "u1");
}

TEST(CorrelatorTest, ATrackTimedByAnUnstableRadarClockIsMarkedAndNotValid) {
  Correlator c(make_config());
  c.set_clock_sync(synced());
  auto track = make_track(1, 1, 900, kT0);
  track.clock.unstable = true;
  EXPECT_TRUE(c.on_event(track, kT0 + 600).empty());
  const auto facts = c.tick(kT0 + 2600);
  ASSERT_THAT(types_of(facts), ElementsAre("speed_measurement"));
  EXPECT_EQ(facts[0].fields["radar_clock"]["unstable"], true);
  EXPECT_EQ(facts[0].fields["valid"], false);
  EXPECT_EQ(facts[0].fields["invalid_reasons"], json::array({"radar_clock_unstable"}));
}

TEST(CorrelatorTest, UnreadablePlateNeverMatches) {
  const auto facts =
      run(make_config(), {make_track(1, 1, 1300, kT0), make_read("u", 1, "unknown", kT0 + 20)});
  ASSERT_THAT(types_of(facts), ElementsAre("speed_measurement", "plate_read"));
  EXPECT_EQ(facts[1].fields["plate"], "unknown");
  EXPECT_EQ(facts[1].fields["match"]["unmatched"], "plate_unreadable");
  EXPECT_EQ(facts[1].fields["match"]["candidates"], 1);
  EXPECT_EQ(facts[0].fields["speed_dkmh"], 1300);
}

TEST(CorrelatorTest, UnreadableReadKeepsItsTrackFromTheNeighboursRead) {
  // Vehicle A (unreadable) and its track; vehicle B 400 ms behind, whose track the radar missed. B's read
  // must not take A's speed.
  const auto facts = run(make_config(), {make_track(1, 1, 1300, kT0), make_read("ua", 1, "unknown", kT0),
                                         make_read("ub", 1, "B1", kT0 + 400)});
  ASSERT_THAT(types_of(facts), ElementsAre("plate_read", "speed_measurement", "plate_read"));
  EXPECT_EQ(facts[0].fields["plate"], "unknown");
  EXPECT_EQ(facts[1].fields["speed_dkmh"], 1300);
  EXPECT_EQ(facts[2].fields["plate"], "B1");
  EXPECT_EQ(facts[2].fields["match"]["unmatched"], "candidates_taken");
  EXPECT_EQ(facts[2].fields["match"]["candidates"], 1);
}

TEST(CorrelatorTest, SeveralLanesAtOnce) {
  const auto facts = run(make_config(), {
                                            make_track(1, 1, 950, kT0),
                                            make_track(2, 2, 1300, kT0 + 10),
                                            make_track(3, 3, 800, kT0 + 20),
                                            make_read("u3", 3, "C3", kT0 + 15),
                                            make_read("u1", 1, "A1", kT0 + 5),
                                            make_read("u2", 2, "B2", kT0 + 30),
                                        });
  ASSERT_THAT(types_of(facts), ElementsAre("passage", "speeding", "passage"));
  EXPECT_EQ(facts[0].fields["plate"], "A1");
  EXPECT_EQ(facts[0].fields["lane"], 1);
  EXPECT_EQ(facts[0].fields["match"]["dt_ms"], 5);
  EXPECT_EQ(facts[1].fields["plate"], "B2");
  EXPECT_EQ(facts[1].fields["speed_dkmh"], 1300);
  EXPECT_EQ(facts[1].fields["match"]["dt_ms"], 20);
  EXPECT_EQ(facts[2].fields["plate"], "C3");
  EXPECT_EQ(facts[2].fields["match"]["dt_ms"], -5);
  for (const auto& f : facts) {
    EXPECT_EQ(f.fields["match"]["track_candidates"], 1);
  }
}

// Every arrival order of `events` (each arriving at its own time, before any decision) gives the same facts.
void expect_order_independent(const std::vector<adapters::DeviceEvent>& events,
                              const std::vector<std::string>& expected) {
  std::vector<std::size_t> order(events.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  int permutations = 0;
  do {
    std::vector<adapters::DeviceEvent> shuffled;
    for (auto i : order) {
      shuffled.push_back(events[i]);
    }
    Correlator c(make_config());
    c.set_clock_sync(synced());
    std::vector<Fact> facts;
    UnixMs arrive = kT0 + 400;
    for (const auto& e : shuffled) {
      for (auto& f : c.on_event(e, arrive)) {
        facts.push_back(std::move(f));
      }
      arrive += 37;
      for (auto& f : c.tick(arrive)) {  // ticks between arrivals decide nothing early
        facts.push_back(std::move(f));
      }
    }
    for (UnixMs now = arrive; now <= kT0 + 5000; now += 100) {
      for (auto& f : c.tick(now)) {
        facts.push_back(std::move(f));
      }
    }
    ASSERT_EQ(fact_set(facts), expected) << "order #" << permutations;
    ++permutations;
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST(CorrelatorTest, TwoCloseVehiclesInOneLaneBestMatchWhateverTheOrder) {
  // Tracks 300 ms apart; read A lies nearer the second track, but B is nearer still: greedy by |dt| gives
  // B to track 2 (10 ms) and then A to track 1 (160 ms). A first-come matcher would give A track 2.
  const std::vector<adapters::DeviceEvent> events = {
      make_track(1, 1, 1000, kT0), make_track(2, 1, 1150, kT0 + 300), make_read("ua", 1, "A1", kT0 + 160),
      make_read("ub", 1, "B1", kT0 + 290)};
  const auto facts = run(make_config(), events);
  ASSERT_THAT(types_of(facts), ElementsAre("passage", "speeding"));
  EXPECT_EQ(facts[0].fields["plate"], "A1");
  EXPECT_EQ(facts[0].fields["track"]["target"], 1);
  EXPECT_EQ(facts[0].fields["match"],
            json({{"dt_ms", 160}, {"window_ms", 500}, {"track_candidates", 2}, {"read_candidates", 2}}));
  EXPECT_EQ(facts[1].fields["plate"], "B1");
  EXPECT_EQ(facts[1].fields["track"]["target"], 2);
  EXPECT_EQ(facts[1].fields["match"]["dt_ms"], -10);
  expect_order_independent(events, fact_set(facts));
}

TEST(CorrelatorTest, EqualDistanceTieGoesToTheEarlierTrack) {
  const std::vector<adapters::DeviceEvent> events = {
      make_track(2, 1, 1000, kT0), make_track(1, 1, 900, kT0 + 300), make_read("u", 1, "A1", kT0 + 150)};
  const auto facts = run(make_config(), events);
  ASSERT_THAT(types_of(facts), ElementsAre("passage", "speed_measurement"));
  EXPECT_EQ(facts[0].fields["track"]["target"], 2);
  EXPECT_EQ(facts[0].fields["match"]["dt_ms"], 150);
  EXPECT_EQ(facts[1].fields["track"]["target"], 1);
  expect_order_independent(events, fact_set(facts));
}

TEST(CorrelatorTest, EqualTimesTieGoesToTheLowerTarget) {
  const std::vector<adapters::DeviceEvent> events = {make_track(9, 1, 1000, kT0), make_track(4, 1, 900, kT0),
                                                     make_read("u", 1, "A1", kT0 + 100)};
  const auto facts = run(make_config(), events);
  ASSERT_THAT(types_of(facts), ElementsAre("passage", "speed_measurement"));
  EXPECT_EQ(facts[0].fields["track"]["target"], 4);
  expect_order_independent(events, fact_set(facts));
}

TEST(CorrelatorTest, BusyMultiLaneTrafficIsOrderIndependent) {
  const std::vector<adapters::DeviceEvent> events = {make_track(1, 1, 1000, kT0),
                                                     make_track(2, 1, 1250, kT0 + 420),
                                                     make_track(3, 2, 1300, kT0 + 100),
                                                     make_read("a", 1, "A1", kT0 + 200),
                                                     make_read("b", 1, "B1", kT0 + 380),
                                                     make_read("c", 2, "C1", kT0 + 90),
                                                     make_read("d", 2, "unknown", kT0 + 150)};
  const auto facts = run(make_config(), events);
  // Lane 2's group settles first (its items are earlier); the unreadable read waits out max_wait_ms.
  ASSERT_THAT(types_of(facts), ElementsAre("speeding", "passage", "speeding", "plate_read"))
      << dump_all(facts);
  EXPECT_EQ(facts[0].fields["plate"], "C1");
  EXPECT_EQ(facts[0].fields["track"]["target"], 3);
  EXPECT_EQ(facts[0].fields["match"]["read_candidates"], 2);
  EXPECT_EQ(facts[1].fields["plate"], "A1");
  EXPECT_EQ(facts[1].fields["track"]["target"], 1);
  EXPECT_EQ(facts[2].fields["plate"], "B1");
  EXPECT_EQ(facts[2].fields["track"]["target"], 2);
  EXPECT_EQ(facts[3].fields["plate"], "unknown");
  EXPECT_EQ(facts[3].fields["match"],
            json({{"candidates", 1}, {"unmatched", "plate_unreadable"}, {"window_ms", 500}}));
  expect_order_independent(events, fact_set(facts));
}

TEST(CorrelatorTest, LatePartnerWithinMaxWaitStillMatches) {
  Correlator c(make_config());
  c.set_clock_sync(synced());
  EXPECT_TRUE(c.on_event(make_read("u", 1, "A1", kT0), kT0 + 100).empty());
  EXPECT_TRUE(c.tick(kT0 + 1500).empty());  // settled, no candidate: it waits on
  EXPECT_TRUE(c.on_event(make_track(1, 1, 900, kT0 - 50), kT0 + 2000).empty());  // a long track, closed late
  const auto facts = c.tick(kT0 + 2000);
  EXPECT_THAT(types_of(facts), ElementsAre("passage"));
  EXPECT_EQ(c.pending(), 0U);
}

TEST(CorrelatorTest, ClockOffsetsWithinToleranceStillMatch) {
  for (const std::int64_t offset : {-1000, -950, 0, 900, 1000}) {
    SCOPED_TRACE(offset);
    const auto facts =
        run(make_config(), {make_track(1, 1, 900, kT0), make_read("u", 1, "A1", kT0 + 30, offset)});
    ASSERT_THAT(types_of(facts), ElementsAre("passage"));
    EXPECT_EQ(facts[0].fields["enforceable"], true);
    EXPECT_EQ(facts[0].fields["clock_offsets"]["camera_ms"], offset);
    EXPECT_EQ(facts[0].fields["checks"]["camera_clock"]["offset_ms"], offset);
  }
}

TEST(CorrelatorTest, RadarWithoutCameraIsReleasedAtOnce) {
  Correlator c(make_config());
  const auto facts = c.on_event(make_track(1, 1, 1500, kT0, "radar-2"), kT0 + 600);
  ASSERT_THAT(types_of(facts), ElementsAre("speed_measurement"));
  EXPECT_EQ(facts[0].fields["device"], "radar-2");
  EXPECT_EQ(facts[0].fields["valid"], true);
  EXPECT_EQ(c.pending(), 0U);
}

TEST(CorrelatorTest, TrackOutsideLanesAndReadWithoutLaneAreReleasedAtOnce) {
  Correlator c(make_config());
  const auto track = c.on_event(make_track(1, 0, 900, kT0), kT0 + 600);
  ASSERT_THAT(types_of(track), ElementsAre("speed_measurement"));
  EXPECT_EQ(track[0].fields["invalid_reasons"], json({"outside_lanes"}));
  const auto read = c.on_event(make_read("u", 0, "A1", kT0), kT0 + 600);
  ASSERT_THAT(types_of(read), ElementsAre("plate_read"));
  EXPECT_EQ(read[0].fields["match"]["unmatched"], "outside_lanes");
  EXPECT_EQ(c.pending(), 0U);
}

TEST(CorrelatorTest, DeviceStatusPassesThrough) {
  Correlator c(make_config());
  adapters::DeviceStatusEvent s{.device_id = "cam-1",
                                .kind = "camera",
                                .state = "connected",
                                .code = -1,
                                .text = "stream open",
                                .time_ms = kT0,
                                .raw_frame = std::nullopt};
  const auto facts = c.on_event(s, kT0);
  ASSERT_THAT(types_of(facts), ElementsAre("device_status"));
  EXPECT_EQ(facts[0].fields["kind"], "camera");
  EXPECT_FALSE(facts[0].fields.contains("raw_frame"));
}

// One failed condition: the record is still produced, not enforceable, with exactly that reason.
void expect_only_reason(const std::vector<Fact>& facts, const std::string& type, const std::string& reason,
                        const std::string& check) {
  ASSERT_THAT(types_of(facts), ElementsAre(type));
  const json& b = facts[0].fields;
  EXPECT_EQ(b["enforceable"], false);
  EXPECT_EQ(b["reasons"], json({reason}));
  EXPECT_EQ(b["checks"][check]["ok"], false);
  for (const auto& [name, value] : b["checks"].items()) {
    if (name != check) {
      EXPECT_EQ(value["ok"], true) << name;
    }
  }
}

TEST(CorrelatorTest, ExpiredCalibration) {
  const auto facts = run(
      make_config(), {make_track(1, 1, 1300, kCalibrationEnd), make_read("u", 1, "A1", kCalibrationEnd + 10)},
      kCalibrationEnd + 700, kCalibrationEnd + 5000);
  expect_only_reason(facts, "speeding", "calibration_expired", "calibration");
  EXPECT_EQ(facts[0].fields["calibration"]["valid"], false);
  // One millisecond earlier it was still valid.
  const auto before =
      run(make_config(),
          {make_track(1, 1, 1300, kCalibrationEnd - 1), make_read("u", 1, "A1", kCalibrationEnd + 10)},
          kCalibrationEnd + 700, kCalibrationEnd + 5000);
  EXPECT_EQ(before[0].fields["enforceable"], true);
}

TEST(CorrelatorTest, ACalibrationNamingAnotherRadarSerialFailsTheCalibrationCheck) {
  auto cfg = make_config();
  auto& radar = std::get<adapters::RadarConfig>(cfg.devices[0].settings);
  radar.identity = {.model = "SR-200", .serial = "SR-0001", .firmware = "2.4.1", .truncated = false};
  radar.calibration.radar_serial = "SR-0002";
  const auto facts = run(cfg, {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0)});
  expect_only_reason(facts, "speeding", "calibration_serial_mismatch", "calibration");
  const json& b = facts[0].fields;
  EXPECT_EQ(b["calibration"]["valid"], false);
  EXPECT_EQ(b["calibration"]["radar_serial"], "SR-0002");
  EXPECT_EQ(b["checks"]["calibration"]["radar_serial"], "SR-0002");
  EXPECT_EQ(b["checks"]["calibration"]["device_serial"], "SR-0001");

  // The certificate naming this radar's serial: valid, and the binding is shown.
  radar.calibration.radar_serial = "SR-0001";
  const auto bound = run(cfg, {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0)});
  ASSERT_EQ(bound.size(), 1U);
  EXPECT_EQ(bound[0].fields["enforceable"], true);
  EXPECT_EQ(bound[0].fields["checks"]["calibration"]["device_serial"], "SR-0001");

  // A certificate naming a serial, for a radar whose serial is not configured: not bound, so not valid.
  radar.identity.serial.clear();
  const auto unknown = run(cfg, {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0)});
  expect_only_reason(unknown, "speeding", "calibration_serial_mismatch", "calibration");

  // A speed_measurement (radar no camera watches) fails the same way.
  auto& lone = std::get<adapters::RadarConfig>(cfg.devices[1].settings);
  lone.calibration.radar_serial = "SR-0009";
  const auto alone = run(cfg, {make_track(1, 1, 1300, kT0, "radar-2")});
  ASSERT_THAT(types_of(alone), ElementsAre("speed_measurement"));
  EXPECT_EQ(alone[0].fields["invalid_reasons"], json({"calibration_serial_mismatch"}));
}

TEST(CorrelatorTest, RecordsCarryTheCaseFileSiteDevicesAndConfigHash) {
  auto cfg = make_config();
  cfg.gateway.site.area_code = "330106";
  cfg.gateway.site.road_code = "G60";
  cfg.gateway.site.km_marker = "K1234+500";
  cfg.gateway.site.km_m = 1234500;
  cfg.gateway.site.carriageway = "up";
  cfg.sha256 = std::string(64, 'c');
  std::get<adapters::RadarConfig>(cfg.devices[0].settings).identity = {
      .model = "SR-200", .serial = "SR-0001", .firmware = "2.4.1"};
  auto read = make_read("u", 1, "A1", kT0);
  read.camera_device = {.model = "iDS-TCM403", .serial = "DS-123", .firmware = "V5.5.0", .truncated = false};
  const auto facts = run(cfg, {make_track(1, 1, 1300, kT0), read});
  ASSERT_THAT(types_of(facts), ElementsAre("speeding"));
  const json& b = facts[0].fields;
  EXPECT_EQ(b["site"]["area_code"], "330106");
  EXPECT_EQ(b["site"]["road_code"], "G60");
  EXPECT_EQ(b["site"]["km_marker"], "K1234+500");
  EXPECT_EQ(b["site"]["km_m"], 1234500);
  EXPECT_EQ(b["site"]["carriageway"], "up");
  EXPECT_EQ(b["site"]["utc_offset"], "+08:00");
  EXPECT_EQ(b["radar_device"], json({{"model", "SR-200"}, {"serial", "SR-0001"}, {"firmware", "2.4.1"}}));
  EXPECT_EQ(b["camera_device"],
            json({{"model", "iDS-TCM403"}, {"serial", "DS-123"}, {"firmware", "V5.5.0"}}));
  EXPECT_EQ(b["config_sha256"], std::string(64, 'c'));
  EXPECT_FALSE(b["checks"]["calibration"].contains("radar_serial"));  // the certificate names none

  // Not configured: the site has none of them, and the device objects are empty, never guessed.
  const auto plain = run(make_config(), {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0)});
  const json& p = plain[0].fields;
  for (const char* name : {"area_code", "road_code", "km_marker", "km_m", "carriageway"}) {
    EXPECT_FALSE(p["site"].contains(name)) << name;
  }
  EXPECT_EQ(p["camera_device"], json({{"model", ""}, {"serial", ""}, {"firmware", ""}}));

  // A reload brings the new file's hash.
  Correlator c(cfg);
  c.set_clock_sync(synced());
  auto next = cfg;
  next.sha256 = std::string(64, 'd');
  c.reconfigure(next);
  const auto after = run(c, {make_track(1, 1, 1300, kT0), read}, kT0 + 700, kT0 + 5000);
  ASSERT_EQ(after.size(), 1U);
  EXPECT_EQ(after[0].fields["config_sha256"], std::string(64, 'd'));
}

TEST(CorrelatorTest, NationalCodesAreMappedFromTheTableAndNeverGuessed) {
  auto cfg = make_config();
  cfg.codes = config::default_codes();
  auto read = make_read("u", 1, "A1", kT0);  // 92TypeCivil, blue, vehicleType "vehicle"
  const auto facts = run(cfg, {make_track(1, 1, 1300, kT0), read});
  ASSERT_EQ(facts.size(), 1U);
  const json& codes = facts[0].fields["codes"];
  EXPECT_EQ(codes["plate_type"],
            json({{"table", "GA 24.7"}, {"mapped", true}, {"code", "02"}, {"name", "小型汽车号牌"}}));
  // "vehicle" says nothing about the class: unmapped, the vendor's string kept beside it.
  EXPECT_EQ(codes["vehicle_type"], json({{"table", "GA 24.4"}, {"mapped", false}}));
  EXPECT_EQ(facts[0].fields["vehicle_type"], "vehicle");
  EXPECT_EQ(facts[0].fields["enforceable"], true) << "an unmapped code is not a validity failure";

  // A colour the table does not pair with the type: unmapped, not the nearest entry.
  read.plate_color = "green";
  read.vehicle_type = "largeBus";
  const auto other = run(cfg, {make_track(1, 1, 1300, kT0), read});
  EXPECT_EQ(other[0].fields["codes"]["plate_type"]["mapped"], false);
  EXPECT_EQ(other[0].fields["codes"]["vehicle_type"]["code"], "K11");

  // A configured entry for any colour, and an empty table.
  cfg.codes.plate_types = {{"92TypeCivil", "", "99", "其他号牌"}};
  cfg.codes.vehicle_types.clear();
  const auto configured = run(cfg, {make_track(1, 1, 1300, kT0), read});
  EXPECT_EQ(configured[0].fields["codes"]["plate_type"]["code"], "99");
  EXPECT_EQ(configured[0].fields["codes"]["vehicle_type"]["mapped"], false);

  // An unpaired read carries them too.
  const auto alone = run(cfg, {read});
  ASSERT_THAT(types_of(alone), ElementsAre("plate_read"));
  EXPECT_EQ(alone[0].fields["codes"]["plate_type"]["code"], "99");
}

// GA/T 832: two panoramas taken at different times, each at least 1280x720 in 24-bit colour by its own
// JPEG header; a plate close-up does not count, and neither does the camera's word.
TEST(CorrelatorTest, SpeedingNeedsTwoPanoramasAtDifferentTimesByTheirOwnHeaders) {
  auto cfg = make_config();
  cfg.validity.min_panoramas_speeding = 2;
  cfg.validity.min_picture_width = 1280;
  cfg.validity.min_picture_height = 720;
  auto two_stage = [](UnixMs first, UnixMs second) {
    auto r = make_read("u", 1, "A1", kT0, 0, 3);
    r.pictures[0].kind = "detectionPicture";
    r.pictures[0].capture_ms = first;
    r.pictures[1].kind = "detectionPicture";
    r.pictures[1].capture_ms = second;
    r.pictures[2].kind = "licensePlatePicture";
    return r;
  };
  const auto good = run(cfg, {make_track(1, 1, 1300, kT0), two_stage(kT0 - 300, kT0)});
  ASSERT_THAT(types_of(good), ElementsAre("speeding"));
  EXPECT_EQ(good[0].fields["enforceable"], true) << good[0].fields["reasons"];
  EXPECT_EQ(good[0].fields["checks"]["panoramas"],
            json({{"ok", true}, {"count", 2}, {"min", 2}, {"min_width", 1280}, {"min_height", 720}}));
  const json& pic = good[0].fields["pictures"][0];
  EXPECT_EQ(pic["role"], "panorama");
  EXPECT_EQ(pic["width"], 1920);
  EXPECT_EQ(pic["height"], 1080);
  EXPECT_EQ(pic["components"], 3);
  EXPECT_EQ(pic["bits_per_sample"], 8);
  EXPECT_EQ(pic["progressive"], false);
  EXPECT_EQ(good[0].fields["pictures"][2]["role"], "plate_closeup");

  // Both at one instant: one panorama, not two.
  const auto same_time = run(cfg, {make_track(1, 1, 1300, kT0), two_stage(kT0, kT0)});
  expect_only_reason(same_time, "speeding", "too_few_panoramas", "panoramas");
  EXPECT_EQ(same_time[0].fields["checks"]["panoramas"]["count"], 1);

  // A single-stage camera: one panorama and a plate close-up.
  const auto single = run(cfg, {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0, 0, 2)});
  expect_only_reason(single, "speeding", "too_few_panoramas", "panoramas");

  // Too small, grey, not a JPEG at all: each named, none counted.
  auto bad = two_stage(kT0 - 300, kT0);
  bad.pictures.push_back(bad.pictures[0]);
  bad.pictures[0].header->width = 1024;
  bad.pictures[0].header->height = 576;
  bad.pictures[1].header->components = 1;
  bad.pictures[1].header->color_space = "grey";
  bad.pictures[3].header.reset();
  bad.pictures[3].header_error = "not a JPEG (no SOI marker)";
  bad.pictures[3].sha256 = std::string(64, 'f');
  const auto refused = run(cfg, {make_track(1, 1, 1300, kT0), bad});
  expect_only_reason(refused, "speeding", "too_few_panoramas", "panoramas");
  const json& check = refused[0].fields["checks"]["panoramas"];
  EXPECT_EQ(check["count"], 0);
  EXPECT_EQ(check["rejected"], json({{{"sha256", bad.pictures[0].sha256}, {"why", "too_small"}},
                                     {{"sha256", bad.pictures[1].sha256}, {"why", "not_24bit_colour"}},
                                     {{"sha256", std::string(64, 'f')}, {"why", "not_a_jpeg"}}}));
  EXPECT_EQ(refused[0].fields["pictures"][3]["header_error"], "not a JPEG (no SOI marker)");
  EXPECT_FALSE(refused[0].fields["pictures"][3].contains("width"));

  // A passage needs none.
  const auto passage = run(cfg, {make_track(1, 1, 900, kT0), make_read("u", 1, "A1", kT0, 0, 0)});
  ASSERT_THAT(types_of(passage), ElementsAre("passage"));
  EXPECT_EQ(passage[0].fields["enforceable"], true);
  EXPECT_EQ(passage[0].fields["checks"]["panoramas"]["min"], 0);
}

// The same rule on real JPEG headers (read as the camera adapter reads them): too small, grey and
// progressive.
TEST(CorrelatorTest, PanoramasAreJudgedByTheirRealJpegHeaders) {
  auto cfg = make_config();
  cfg.validity.min_panoramas_speeding = 2;
  const auto with = [](const std::string& first, const std::string& second) {
    auto r = make_read("u", 1, "A1", kT0, 0, 2);
    const std::string* jpegs[] = {&first, &second};
    for (std::size_t i = 0; i < 2; ++i) {
      auto header = adapters::read_jpeg_header(*jpegs[i]);
      r.pictures[i].kind = "detectionPicture";
      r.pictures[i].capture_ms = kT0 - 300 + static_cast<UnixMs>(i) * 300;
      r.pictures[i].header = header.header;
      r.pictures[i].header_error = header.error;
    }
    return r;
  };
  const std::string full_hd = test::sample_jpeg(1920, 1080, TJSAMP_420);
  const std::string hd = test::sample_jpeg(1280, 720, TJSAMP_444);
  const std::string small = test::sample_jpeg(1024, 576, TJSAMP_420);
  const std::string grey = test::sample_jpeg(1920, 1080, TJSAMP_GRAY);
  const std::string progressive = test::sample_jpeg(1920, 1080, TJSAMP_420, TJFLAG_PROGRESSIVE);

  const auto ok = run(cfg, {make_track(1, 1, 1300, kT0), with(full_hd, hd)});
  ASSERT_THAT(types_of(ok), ElementsAre("speeding"));
  EXPECT_EQ(ok[0].fields["enforceable"], true) << ok[0].fields["checks"]["panoramas"];
  EXPECT_EQ(ok[0].fields["pictures"][1]["width"], 1280);

  const auto prog = run(cfg, {make_track(1, 1, 1300, kT0), with(full_hd, progressive)});
  EXPECT_EQ(prog[0].fields["enforceable"], true) << "progressive is still a 24-bit colour JPEG";
  EXPECT_EQ(prog[0].fields["pictures"][1]["progressive"], true);

  for (const auto& [bad, why] : {std::pair{small, "too_small"},
                                 {grey, "not_24bit_colour"},
                                 {std::string("\xff\xd8not a jpeg"), "not_a_jpeg"}}) {
    const auto facts = run(cfg, {make_track(1, 1, 1300, kT0), with(full_hd, bad)});
    expect_only_reason(facts, "speeding", "too_few_panoramas", "panoramas");
    EXPECT_EQ(facts[0].fields["checks"]["panoramas"]["rejected"][0]["why"], why);
  }
}

TEST(CorrelatorTest, RadarFault) {
  auto track = make_track(1, 1, 1300, kT0);
  track.status = {.code = 21, .text = "TX FAULT", .since_ms = kT0 - 5000};
  const auto facts = run(make_config(), {track, make_read("u", 1, "A1", kT0)});
  expect_only_reason(facts, "speeding", "radar_fault", "radar_status");
  EXPECT_EQ(facts[0].fields["checks"]["radar_status"]["code"], 21);
}

TEST(CorrelatorTest, RadarStatusUnknown) {
  auto track = make_track(1, 1, 900, kT0);
  track.status = {};
  const auto facts = run(make_config(), {track, make_read("u", 1, "A1", kT0)});
  expect_only_reason(facts, "passage", "radar_status_unknown", "radar_status");
}

TEST(CorrelatorTest, CameraClockThreeSecondsOff) {
  const auto facts = run(make_config(), {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0, 3000)});
  expect_only_reason(facts, "speeding", "camera_clock_offset_too_large", "camera_clock");
  EXPECT_EQ(facts[0].fields["checks"]["camera_clock"]["offset_ms"], 3000);
  EXPECT_EQ(facts[0].fields["checks"]["camera_clock"]["max_offset_ms"], 1000);
  const auto negative = run(make_config(), {make_track(1, 1, 900, kT0), make_read("u", 1, "A1", kT0, -1001)});
  expect_only_reason(negative, "passage", "camera_clock_offset_too_large", "camera_clock");
}

TEST(CorrelatorTest, CameraClockOffsetUnknown) {
  const auto facts =
      run(make_config(), {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0, std::nullopt)});
  expect_only_reason(facts, "speeding", "camera_clock_offset_unknown", "camera_clock");
  EXPECT_FALSE(facts[0].fields["camera_event"].contains("clock_offset_ms"));
  EXPECT_FALSE(facts[0].fields["clock_offsets"].contains("camera_ms"));
  EXPECT_FALSE(facts[0].fields["checks"]["camera_clock"].contains("offset_ms"));
}

TEST(CorrelatorTest, KernelClockUnsynchronised) {
  Correlator c(make_config());
  c.set_clock_sync(
      {.synchronized = false, .source = "kernel", .max_error_us = 16000000, .est_error_us = 16000000});
  const auto facts =
      run(c, {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0)}, kT0 + 700, kT0 + 5000);
  expect_only_reason(facts, "speeding", "clock_unsynchronized", "clock_sync");
  EXPECT_EQ(facts[0].fields["checks"]["clock_sync"]["source"], "kernel");
  EXPECT_EQ(facts[0].fields["checks"]["clock_sync"]["max_error_us"], 16000000);

  // Never told: unsynchronised too, and the lone plate read says so as well.
  Correlator fresh(make_config());
  const auto reads = run(fresh, {make_read("u", 1, "A1", kT0)}, kT0 + 700, kT0 + 5000);
  expect_only_reason(reads, "plate_read", "clock_unsynchronized", "clock_sync");
  EXPECT_FALSE(reads[0].fields["checks"]["clock_sync"].contains("max_error_us"));
}

TEST(CorrelatorTest, AssumeIsSynchronisedAndSaysSo) {
  auto cfg = make_config();
  cfg.validity.clock_sync = "assume";
  Correlator c(cfg);
  c.set_clock_sync({.synchronized = false, .source = "kernel"});  // what the kernel says does not count
  const auto facts =
      run(c, {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0)}, kT0 + 700, kT0 + 5000);
  ASSERT_THAT(types_of(facts), ElementsAre("speeding"));
  EXPECT_EQ(facts[0].fields["enforceable"], true);
  EXPECT_EQ(facts[0].fields["checks"]["clock_sync"],
            json({{"ok", true}, {"source", "assume"}, {"synchronized", true}}));
}

TEST(CorrelatorTest, OnePictureIsTooFewForSpeedingButEnoughForAPassage) {
  const auto speeding = run(make_config(), {make_track(1, 1, 1300, kT0), make_read("u", 1, "A1", kT0, 0, 1)});
  expect_only_reason(speeding, "speeding", "too_few_pictures", "pictures");
  EXPECT_EQ(speeding[0].fields["checks"]["pictures"], json({{"ok", false}, {"count", 1}, {"min", 2}}));
  const auto passage = run(make_config(), {make_track(1, 1, 900, kT0), make_read("u", 1, "A1", kT0, 0, 0)});
  ASSERT_THAT(types_of(passage), ElementsAre("passage"));
  EXPECT_EQ(passage[0].fields["enforceable"], true);
}

TEST(CorrelatorTest, PlateReadCarriesCameraClockValidity) {
  auto read = make_read("u", 1, "A1", kT0, 3000);
  read.missing_pictures = {"pic9.jpg"};
  const auto facts = run(make_config(), {read});
  expect_only_reason(facts, "plate_read", "camera_clock_offset_too_large", "camera_clock");
  EXPECT_EQ(facts[0].fields["missing_pictures"], json({"pic9.jpg"}));
}

TEST(CorrelatorTest, FlushReleasesEverythingPending) {
  Correlator c(make_config());
  c.set_clock_sync(synced());
  EXPECT_TRUE(c.on_event(make_track(1, 1, 900, kT0), kT0 + 600).empty());
  EXPECT_TRUE(c.on_event(make_read("u1", 1, "A1", kT0 + 50), kT0 + 600).empty());
  EXPECT_TRUE(c.on_event(make_track(2, 2, 1300, kT0 + 100), kT0 + 600).empty());
  EXPECT_TRUE(c.on_event(make_read("u3", 3, "C3", kT0 + 200), kT0 + 600).empty());
  EXPECT_TRUE(c.tick(kT0 + 700).empty());
  EXPECT_EQ(c.pending(), 4U);
  const auto facts = c.flush();
  EXPECT_THAT(types_of(facts), ElementsAre("passage", "speed_measurement", "plate_read"));
  EXPECT_EQ(c.pending(), 0U);
  EXPECT_TRUE(c.flush().empty());
}

TEST(CorrelatorTest, HostileDeviceTimesDoNotOverflow) {
  Correlator c(make_config());
  constexpr UnixMs kMax = std::numeric_limits<UnixMs>::max();
  constexpr UnixMs kMin = std::numeric_limits<UnixMs>::min();
  auto track = make_track(1, 1, 900, kT0);
  track.time_ms = kMax;
  auto far_past = make_read("u1", 1, "A1", kT0);
  far_past.time_ms = kMin;
  auto far_future = make_read("u2", 1, "A2", kT0);
  far_future.time_ms = kMax - 10;
  EXPECT_TRUE(c.on_event(track, kT0).empty());
  EXPECT_TRUE(c.on_event(far_past, kT0).empty());
  EXPECT_TRUE(c.on_event(far_future, kT0).empty());
  EXPECT_TRUE(c.tick(kT0 + 1999).empty());  // never settled (saturated), so they wait out max_wait_ms
  const auto facts = c.tick(kT0 + 2000);
  ASSERT_THAT(types_of(facts), ElementsAre("plate_read", "passage"));
  EXPECT_EQ(facts[1].fields["match"]["dt_ms"], -10);
  EXPECT_EQ(c.pending(), 0U);
}

TEST(CorrelatorTest, AFloodIsReleasedAtOnceInsteadOfPiling) {
  Correlator c(make_config());
  for (std::size_t i = 0; i <= Correlator::kMaxPending; ++i) {
    EXPECT_TRUE(c.on_event(make_read("u" + std::to_string(i), 1, "A1", kT0), kT0).empty());
  }
  EXPECT_EQ(c.pending(), Correlator::kMaxPending + 1);
  EXPECT_EQ(c.tick(kT0 + 100).size(), Correlator::kMaxPending + 1);
  EXPECT_EQ(c.pending(), 0U);
}

TEST(CorrelatorTest, AuditIsUnchanged) {
  Correlator c(make_config());
  const Fact f = c.audit("start", kT0, {{"pid", 42}});
  EXPECT_EQ(f.type, "audit");
  EXPECT_EQ(f.time_ms, kT0);
  EXPECT_EQ(f.fields["event"], "start");
  EXPECT_EQ(f.fields["pid"], 42);
  EXPECT_EQ(f.fields["site"]["road"], "G60");
}

// An alert dated year 9999 or 1970 (the camera clock itself is fine: its offset is small) is recorded, but
// a device time that far from the gateway's time of receipt is not evidence to enforce on.
TEST(CorrelatorTest, ADeviceTimeImplausiblyFarFromTheGatewayClockFailsTheDeviceTimeCheck) {
  constexpr UnixMs kYear9999 = 253'402'300'799'000;  // 9999-12-31T23:59:59Z
  for (const UnixMs t : {kYear9999, UnixMs{0}}) {
    // A track and a read of that date pair with each other: speeding, not enforceable.
    const auto facts = run(make_config(), {make_track(1, 1, 1500, t), make_read("u", 1, "A1", t + 10)},
                           kT0 + 700, kT0 + 5000);
    ASSERT_THAT(types_of(facts), ElementsAre("speeding"));
    EXPECT_EQ(facts[0].fields["enforceable"], false);
    EXPECT_THAT(facts[0].fields["reasons"], Contains("device_time_implausible"));
    if (t == 0) {
      // (In 9999 the calibration has expired too.)
      expect_only_reason(facts, "speeding", "device_time_implausible", "device_time");
    }
    const json& check = facts[0].fields["checks"]["device_time"];
    EXPECT_EQ(check["max_skew_ms"], 300'000);
    EXPECT_EQ(check["radar_skew_ms"], t - (kT0 + 700));
    EXPECT_EQ(check["camera_skew_ms"], t + 10 - (kT0 + 700));
    EXPECT_EQ(facts[0].time_ms, t) << "the time is recorded as the device gave it";

    // Alone: a plate_read and a speed_measurement, neither enforceable nor valid.
    const auto read = run(make_config(), {make_read("u", 1, "A1", t)}, kT0 + 700, kT0 + 5000);
    expect_only_reason(read, "plate_read", "device_time_implausible", "device_time");
    auto lone = make_track(1, 1, 1500, t, "radar-2");
    const auto measured = run(make_config(), {lone}, kT0 + 700, kT0 + 700);
    ASSERT_THAT(types_of(measured), ElementsAre("speed_measurement"));
    EXPECT_EQ(measured[0].fields["valid"], false);
    EXPECT_THAT(measured[0].fields["invalid_reasons"], Contains("device_time_implausible"));
    EXPECT_EQ(measured[0].fields["device_time"]["ok"], false);
  }
}

TEST(CorrelatorTest, TheDeviceTimeToleranceIsConfigured) {
  auto cfg = make_config();
  cfg.validity.max_device_time_skew_s = 10;
  // Received 10 s after its time: within; 10.001 s: beyond.
  const auto within = run(cfg, {make_read("u", 1, "A1", kT0)}, kT0 + 10'000, kT0 + 15'000);
  ASSERT_THAT(types_of(within), ElementsAre("plate_read"));
  EXPECT_EQ(within[0].fields["enforceable"], true);
  EXPECT_EQ(within[0].fields["checks"]["device_time"], json({{"ok", true}, {"max_skew_ms", 10'000}}));
  const auto beyond = run(cfg, {make_read("u", 1, "A1", kT0)}, kT0 + 10'001, kT0 + 15'000);
  expect_only_reason(beyond, "plate_read", "device_time_implausible", "device_time");
  EXPECT_EQ(beyond[0].fields["checks"]["device_time"],
            json({{"ok", false}, {"camera_skew_ms", -10'001}, {"max_skew_ms", 10'000}}));
}

// Defect: a plate in GBK made the paired speeding record unsealable (a bare fault: no speed, no plate, no
// pictures). Every camera string reaches the record escaped, with its exact bytes beside it.
TEST(CorrelatorTest, CameraTextThatIsNotUtf8IsEscapedWithItsExactBytesBeside) {
  const std::string gbk_plate =
      "\xd5\xe3"
      "A12345";  // 浙A12345 in GBK
  auto read = make_read("u\xff", 1, gbk_plate, kT0 + 10);
  read.plate_color = "\xc0\xb6";           // 蓝
  read.vehicle_type = "\xbd\xce\xb3\xb5";  // 轿车
  read.raw_xml = "<licensePlate>" + gbk_plate + "</licensePlate>";
  read.pictures[0].file_name = "\xd5\xe3.jpg";
  read.missing_pictures = {"ok.jpg", "\xb3\xb5.jpg"};
  const auto facts = run(make_config(), {make_track(1, 1, 1500, kT0), read});
  ASSERT_THAT(types_of(facts), ElementsAre("speeding"));
  const json& b = facts[0].fields;
  EXPECT_EQ(b["speed_dkmh"], 1500);
  EXPECT_EQ(b["plate"], "\\xd5\\xe3A12345");
  EXPECT_EQ(b["plate_raw_b64"], "1eNBMTIzNDU=");
  EXPECT_EQ(b["plate_color"], "\\xc0\\xb6");
  EXPECT_EQ(b["vehicle_type_raw_b64"], "vc6ztQ==");
  EXPECT_EQ(b["camera_event"]["uuid"], "u\\xff");
  EXPECT_EQ(b["camera_event"]["raw_xml"], "<licensePlate>\\xd5\\xe3A12345</licensePlate>");
  EXPECT_EQ(b["pictures"][0]["file_name"], "\\xd5\\xe3.jpg");
  EXPECT_EQ(b["pictures"].size(), 2u);
  EXPECT_EQ(b["missing_pictures"], json({"ok.jpg", "\\xb3\\xb5.jpg"}));
  EXPECT_EQ(b["text_not_utf8"], json({"camera_event.raw_xml", "camera_event.uuid", "missing_pictures[1]",
                                      "pictures[0].file_name", "plate", "plate_color", "vehicle_type"}));
  EXPECT_EQ(b["enforceable"], true) << "escaped text is not a validity failure";
  EXPECT_EQ(facts[0].media.size(), 2u);
  EXPECT_NO_THROW(canonical_json(b));
}

}  // namespace
}  // namespace cpd::pipeline
