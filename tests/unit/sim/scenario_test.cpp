// A scenario run over loopback: the radar frames and camera alerts that arrive match the YAML (plates,
// lanes, peak speeds, lateral bands, clock offset), and the config checker names the place of a mistake.
#include "tools/sim/scenario.h"

#include <gtest/gtest.h>

#include <future>
#include <map>
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

}  // namespace
}  // namespace cpd::sim
