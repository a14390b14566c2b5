// A scenario run over loopback: the radar frames and camera alerts that arrive match the YAML (plates,
// lanes, peak speeds, lateral bands, clock offset), an officer stop's recording reaches the dock on time,
// and the config checker names the place of a mistake.
#include "tools/sim/scenario.h"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/camera_messages.h"
#include "tests/support/radar_frames.h"
#include "tests/unit/sim/sim_test_client.h"

namespace cpd::sim {
namespace {

using testing::AlertStreamClient;
using testing::http_get;
using testing::xml_text;

constexpr const char* kScenario = R"(
radar: {port: 0}
camera: {port: 0, username: admin, password: secret, clock_offset_ms: 1500, picture_kb: 50}
start_delay_ms: 0
vehicles:
  - {at_ms: 0,    plate: 浙A12345, lane: 1, speed_kmh: 87.3, color: blue}
  - {at_ms: 100,  plate: 浙B77777, lane: 2, speed_kmh: 131.0}
  - {at_ms: 250,  plate: unknown,  lane: 1, speed_kmh: 64.0}
  - {at_ms: 400,  plate: 沪C00001, lane: 2, speed_kmh: 99.0, camera: false}
  - {at_ms: 500,  lane: 1, speed_kmh: 70.0, radar: false, plate: 苏E55555}
)";

struct RadarDetect {
  int target = 0;
  int speed_tenths = 0;
  double x = 0.0;
  std::string time;
};

// Splits STX..ETX frames and checks each checksum; keeps the detect (02) frames.
std::vector<RadarDetect> parse_radar(const std::string& bytes, int& statuses, int& bad) {
  std::vector<RadarDetect> out;
  std::size_t at = 0;
  while ((at = bytes.find('\x02', at)) != std::string::npos) {
    const auto end = bytes.find('\x03', at);
    if (end == std::string::npos) {
      break;
    }
    const std::string frame = bytes.substr(at + 1, end - at - 1);
    at = end + 1;
    const auto star = frame.rfind('*');
    const std::string body = frame.substr(0, star);
    char cs[3];
    std::snprintf(cs, sizeof cs, "%02X", test::radar_body_checksum(body));
    if (frame.substr(star + 1) != cs) {
      ++bad;
      continue;
    }
    std::vector<std::string> f;
    std::size_t p = 0;
    for (std::size_t c; (c = body.find(',', p)) != std::string::npos; p = c + 1) {
      f.push_back(body.substr(p, c - p));
    }
    f.push_back(body.substr(p));
    if (f[0] == "09") {
      ++statuses;
    } else if (f[0] == "02" && f.size() == 11) {
      out.push_back(
          {std::stoi(f[2]), static_cast<int>(std::lround(std::stod(f[5]) * 10)), std::stod(f[8]), f[1]});
    }
  }
  return out;
}

TEST(ScenarioTest, RadarFramesAndCameraEventsMatchTheYaml) {
  boost::asio::io_context io;
  ScenarioRunOptions run;
  run.linger_s = 0.0;
  run.ground_truth = ::testing::TempDir() + "scenario_truth.jsonl";
  ScenarioRunner runner(io, parse_scenario(kScenario), run);
  ASSERT_TRUE(runner.start());
  std::thread sim([&] { io.run(); });
  const std::uint16_t radar_port = runner.radar_port();
  const std::uint16_t camera_port = runner.camera_port();

  // Both feeds are read to EOF concurrently: the run ends by itself after the last vehicle.
  auto radar = std::async(std::launch::async, [radar_port] {
    boost::asio::io_context cio;
    boost::asio::ip::tcp::socket s(cio);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), radar_port});
    std::string all;
    std::array<char, 4096> buf{};
    boost::system::error_code ec;
    for (;;) {
      const std::size_t n = s.read_some(boost::asio::buffer(buf), ec);
      if (ec) {
        break;
      }
      all.append(buf.data(), n);
    }
    return all;
  });
  const std::string target = "/ISAPI/Event/notification/alertStream";
  const auto challenge =
      std::string(http_get(camera_port, target)[boost::beast::http::field::www_authenticate]);
  const auto auth = test::digest_authorization(challenge, "GET", target, "admin", "secret");
  ASSERT_TRUE(auth);
  AlertStreamClient stream(camera_port, *auth);
  std::vector<testing::Part> parts;
  while (auto p = stream.next("boundary")) {
    parts.push_back(std::move(*p));
  }
  EXPECT_TRUE(stream.error().empty()) << stream.error();
  const std::string radar_bytes = radar.get();
  sim.join();

  // Ground truth: every vehicle, in YAML order after sorting by index.
  auto truth = runner.truth();
  ASSERT_EQ(truth.size(), 5U);
  std::sort(truth.begin(), truth.end(), [](const auto& a, const auto& b) { return a.vehicle < b.vehicle; });

  // Radar: one track per radar vehicle, peak = YAML speed, x inside the lane's band.
  int statuses = 0;
  int bad = 0;
  const auto detects = parse_radar(radar_bytes, statuses, bad);
  EXPECT_EQ(bad, 0);
  EXPECT_GE(statuses, 1);
  std::map<int, std::vector<RadarDetect>> by_target;
  for (const auto& d : detects) {
    by_target[d.target].push_back(d);
  }
  EXPECT_EQ(by_target.size(), 4U);
  for (const auto& t : truth) {
    EXPECT_EQ(t.dkmh, static_cast<std::int32_t>(std::lround(t.spec.speed_kmh * 10)));
    if (!t.spec.radar) {
      EXPECT_EQ(t.target, 0);
      EXPECT_FALSE(t.radar_sent);
      continue;
    }
    EXPECT_TRUE(t.radar_sent) << t.vehicle;
    ASSERT_TRUE(by_target.contains(t.target)) << t.vehicle;
    const auto& track = by_target[t.target];
    EXPECT_EQ(track.size(), 8U);
    int peak = 0;
    std::string peak_time;
    for (const auto& d : track) {
      if (d.speed_tenths > peak) {
        peak = d.speed_tenths;
        peak_time = d.time;
      }
      const double lo = t.spec.lane == 1 ? 0.0 : 3.75;
      EXPECT_GE(d.x, lo);
      EXPECT_LE(d.x, lo + 3.75);
    }
    EXPECT_EQ(peak, t.dkmh) << t.vehicle;
    EXPECT_EQ(peak_time, t.peak_radar_time) << t.vehicle;
  }

  // Camera: one alert per camera vehicle, plate and lane as in the YAML, dateTime = peak + offset.
  std::vector<std::string> plates;
  std::size_t pictures = 0;
  for (const auto& p : parts) {
    if (p.headers.at("content-type") == "image/jpeg") {
      ++pictures;
      continue;
    }
    if (xml_text(p.body, "eventType") != "ANPR") {
      continue;
    }
    const std::string uuid = xml_text(p.body, "UUID");
    const auto it = std::find_if(truth.begin(), truth.end(), [&](const auto& t) { return t.uuid == uuid; });
    ASSERT_NE(it, truth.end()) << uuid;
    EXPECT_TRUE(it->spec.camera);
    EXPECT_TRUE(it->camera_sent);
    EXPECT_EQ(xml_text(p.body, "licensePlate"), it->spec.plate);
    EXPECT_EQ(xml_text(p.body, "line"), std::to_string(it->spec.lane));
    EXPECT_EQ(xml_text(p.body, "dateTime"), test::camera_time(it->time_ms + 1500, 480));
    EXPECT_EQ(xml_text(p.body, "picNum"), "2");
    plates.push_back(it->spec.plate);
  }
  EXPECT_EQ(plates, (std::vector<std::string>{"浙A12345", "浙B77777", "unknown", "苏E55555"}));
  EXPECT_EQ(pictures, 8U);
  // The trigger instants are the radar peaks: 200 ms (4 frames of 50 ms) after each track starts.
  EXPECT_EQ(truth[1].time_ms - truth[0].time_ms, 100);
  EXPECT_EQ(truth[4].time_ms - truth[0].time_ms, 500);
}

TEST(ScenarioTest, CheckerNamesTheKeyAndPlace) {
  try {
    parse_scenario("radar: {port: 0}\nvehicles:\n  - {at_ms: 0, lane: 3, speed_kmh: 50}\n", "s.yaml");
    FAIL() << "lane 3 is not declared";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("s.yaml:3:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vehicles[].lane"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_scenario("radar: {prot: 1}\n"), std::runtime_error);
  EXPECT_THROW(parse_scenario("camera: {utc_offset: '8'}\n"), std::runtime_error);
  const Scenario s = parse_scenario(
      "lanes: [{lane: 1, x_min: 0, x_max: 3.5}, {lane: 2, x_min: 3.5, x_max: 7}, {lane: 3, x_min: 7, x_max: "
      "10.5}]\n"
      "vehicles:\n  - {at_ms: 10, lane: 3, speed_kmh: 50}\n");
  ASSERT_EQ(s.vehicles.size(), 1U);
  EXPECT_EQ(s.vehicles[0].plate, "unknown");
  EXPECT_EQ(s.vehicles[0].color, "unknown");
  EXPECT_EQ(s.lanes.size(), 3U);
}

TEST(ScenarioTest, ParsesDockAndStops) {
  const Scenario none = parse_scenario("vehicles:\n  - {at_ms: 0, lane: 1, speed_kmh: 50}\n");
  EXPECT_FALSE(none.dock);
  EXPECT_TRUE(none.stops.empty());
  const Scenario s = parse_scenario(R"(
dock: {port: 0, token: tk, station_id: DS-9, recorder_clock_offset_ms: -2000,
       recorder_clock_offsets: {BWC-00921: 7000}}
stops:
  - {at_ms: 12000, duration_ms: 30000, officer_id: "330102199003150024", officer_name: 李娜,
     recorder: BWC-00921, important: false, dock_after_ms: 2500, bytes: 1234, file_type: audio}
  - {at_ms: 1, duration_ms: 2}
)");
  ASSERT_TRUE(s.dock);
  EXPECT_EQ(s.dock->token, "tk");
  EXPECT_EQ(s.dock->station_id, "DS-9");
  EXPECT_EQ(s.dock->recorder_clock_offset_ms, -2000);
  EXPECT_EQ(s.dock->recorder_clock_offsets.at("BWC-00921"), 7000);
  ASSERT_EQ(s.stops.size(), 2U);
  EXPECT_EQ(s.stops[0].at_ms, 12000);
  EXPECT_EQ(s.stops[0].duration_ms, 30000);
  EXPECT_EQ(s.stops[0].officer_name, "李娜");
  EXPECT_EQ(s.stops[0].recorder, "BWC-00921");
  EXPECT_FALSE(s.stops[0].important);
  EXPECT_EQ(s.stops[0].dock_after_ms, 2500);
  EXPECT_EQ(s.stops[0].bytes, 1234);
  EXPECT_EQ(s.stops[0].file_type, "audio");
  EXPECT_TRUE(s.stops[1].important);  // defaults
  EXPECT_EQ(s.stops[1].dock_after_ms, 2000);
  // Stops without a dock section get a default dock.
  EXPECT_TRUE(parse_scenario("stops: [{at_ms: 0, duration_ms: 10}]\n").dock);
  for (const char* bad :
       {"stops: [{at_ms: 0}]\n", "stops: [{at_ms: 0, duration_ms: 1, recorder: 'a/b'}]\n",
        "stops: [{at_ms: 0, duration_ms: 1, file_type: movie}]\n",
        "stops: [{at_ms: 0, duration_ms: 1, bogus: 1}]\n", "dock: {token: ''}\n", "dock: {prot: 1}\n"}) {
    EXPECT_THROW(parse_scenario(bad), std::runtime_error) << bad;
  }
  try {
    parse_scenario("dock: {port: 0}\nstops:\n  - {at_ms: 0, duration_ms: 5, file_type: movie}\n", "d.yaml");
    FAIL() << "movie is not a file type";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("d.yaml:3:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stops[].file_type"), std::string::npos) << e.what();
  }
}

// An officer stop overlapping a vehicle: the recording appears on the dock dock_after_ms after it ends, with
// its true span on the vehicles' clock, listed by the recorder's clock, and its content matching the truth.
TEST(ScenarioTest, StopRecordingReachesTheDockAfterItEnds) {
  boost::asio::io_context io;
  ScenarioRunOptions run;  // serves until stop()
  run.ground_truth = ::testing::TempDir() + "scenario_stop_truth.jsonl";
  ScenarioRunner runner(io, parse_scenario(R"(
radar: {port: 0}
camera: {port: 0, username: admin, password: secret, picture_kb: 20}
dock: {port: 0, token: dock-tk, station_id: DS-T, recorder_clock_offset_ms: 4000}
start_delay_ms: 0
vehicles:
  - {at_ms: 300, plate: 浙A12345, lane: 1, speed_kmh: 131.0}
stops:
  - {at_ms: 100, duration_ms: 1500, officer_id: "330102198801010011", officer_name: 王伟, recorder: BWC-00917,
     important: true, dock_after_ms: 700, bytes: 150000}
)"),
                        run);
  ASSERT_TRUE(runner.start());
  ASSERT_NE(runner.dock_port(), 0);
  ASSERT_NE(runner.dock(), nullptr);
  // Told (on the io thread) the moment the file is on the dock: it cannot be listed earlier.
  std::promise<std::int64_t> docked;
  runner.dock()->on_file_added([&docked](const DockFileTruth&) {
    docked.set_value(std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count());
  });
  std::thread sim([&] { io.run(); });
  const std::uint16_t dock_port = runner.dock_port();
  const std::string bearer = "Bearer dock-tk";
  EXPECT_TRUE(nlohmann::json::parse(http_get(dock_port, "/api/v1/files", bearer).body())["files"].empty());

  // The timeline starts once a radar client and an alert stream are there; both are read to EOF.
  auto radar = std::async(std::launch::async, [port = runner.radar_port()] {
    boost::asio::io_context cio;
    boost::asio::ip::tcp::socket s(cio);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    std::array<char, 4096> buf{};
    boost::system::error_code ec;
    while (!ec) {
      s.read_some(boost::asio::buffer(buf), ec);
    }
  });
  const std::string target = "/ISAPI/Event/notification/alertStream";
  const auto challenge =
      std::string(http_get(runner.camera_port(), target)[boost::beast::http::field::www_authenticate]);
  const auto auth = test::digest_authorization(challenge, "GET", target, "admin", "secret");
  ASSERT_TRUE(auth);
  auto camera = std::async(std::launch::async, [port = runner.camera_port(), a = *auth] {
    AlertStreamClient stream(port, a);
    while (stream.next("boundary")) {
    }
  });

  auto docked_at = docked.get_future();
  ASSERT_EQ(docked_at.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  const std::int64_t seen_ms = docked_at.get();
  const auto res = http_get(dock_port, "/api/v1/files", bearer);
  ASSERT_EQ(res.result_int(), 200U);
  const nlohmann::json listing = nlohmann::json::parse(res.body());
  ASSERT_EQ(listing["files"].size(), 1U);
  const nlohmann::json f = listing["files"][0];
  const auto content =
      http_get(dock_port, "/api/v1/files/" + f["uniqueId"].get<std::string>() + "/content", bearer);
  EXPECT_EQ(content.result_int(), 200U);
  EXPECT_EQ(http_get(dock_port, "/api/v1/status", {}).result_int(), 401U);

  boost::asio::post(io, [&] { runner.stop(); });
  sim.join();
  radar.get();
  camera.get();

  ASSERT_EQ(runner.stop_truth().size(), 1U);
  const ScenarioStopTruth& t = runner.stop_truth()[0];
  ASSERT_TRUE(t.docked);
  EXPECT_EQ(t.stop, 1U);
  EXPECT_EQ(t.end_ms - t.start_ms, 1500);
  EXPECT_EQ(t.file.unique_id, f["uniqueId"]);
  EXPECT_EQ(t.file.start_ms, t.start_ms);
  EXPECT_EQ(t.file.end_ms, t.end_ms);
  // Docked dock_after_ms after the end (timer latency aside), and not listed before that.
  EXPECT_GE(t.file.collect_ms - t.end_ms, 700);
  EXPECT_LT(t.file.collect_ms - t.end_ms, 700 + 1000);
  EXPECT_GE(seen_ms, t.end_ms + 700 - 5);
  // The vehicle passed during the stop: both on the same clock.
  ASSERT_EQ(runner.truth().size(), 1U);
  EXPECT_GE(runner.truth()[0].time_ms, t.start_ms);
  EXPECT_LE(runner.truth()[0].time_ms, t.end_ms);
  // Listed by the recorder's clock (4 s ahead), whole seconds.
  EXPECT_EQ(f["startTime"], test::camera_time(t.start_ms + 4000, 480, false));
  EXPECT_EQ(f["endTime"], test::camera_time(t.end_ms + 4000, 480, false));
  EXPECT_EQ(f["deviceId"], "BWC-00917");
  EXPECT_EQ(f["officerName"], "王伟");
  EXPECT_EQ(f["important"], true);
  EXPECT_EQ(f["length"], 150000);
  EXPECT_EQ(f["md5"], t.file.md5);
  EXPECT_EQ(content.body().size(), 150000U);
  EXPECT_EQ(content.body(), DockContent(t.file.unique_id).bytes(0, 150000));
  EXPECT_EQ(test::md5_hex(content.body()), t.file.md5);

  // Ground truth: the vehicle line and one stop line with the span and the hash.
  std::ifstream in(run.ground_truth);
  int stops = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("stop")) {
      ++stops;
      EXPECT_EQ(j["uniqueId"], t.file.unique_id);
      EXPECT_EQ(j["start_ms"], t.start_ms);
      EXPECT_EQ(j["end_ms"], t.end_ms);
      EXPECT_EQ(j["sha256"], t.file.sha256);
      EXPECT_EQ(j["docked"], true);
    }
  }
  EXPECT_EQ(stops, 1);
}

TEST(ScenarioTest, NoDockWithoutDockOrStops) {
  boost::asio::io_context io;
  ScenarioRunner runner(io, parse_scenario("radar: {port: 0}\n"), {});
  ASSERT_TRUE(runner.start());
  EXPECT_EQ(runner.dock_port(), 0);
  EXPECT_EQ(runner.dock(), nullptr);
  runner.stop();
}

}  // namespace
}  // namespace cpd::sim
