// The camera adapter against a misbehaving camera (the camera simulator's fault switches), with the real
// daemon and broker: dropped pictures, malformed XML, repeated events and reboots mid-stream behave as the
// spec says, and nothing is invented or recorded twice.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "daemon/core/encoding.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class CameraFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    collector_ = std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/gw/#"});
    // A radar with no traffic: the camera's reads all come out as plate_read records.
    std::ofstream(dir_ / "radar.yaml") << "radar: {port: 0}\ncamera: {port: 0}\nvehicles: []\n";
    radar_ = std::make_unique<Process>(std::vector<std::string>{binary("tools/sim/checkpoint-sim"),
                                                                "scenario", (dir_ / "radar.yaml").string()},
                                       dir_ / "radar");
    auto line = radar_->wait_for_stdout_line("radar ", 10s);
    ASSERT_TRUE(line) << radar_->stderr_text();
    radar_port_ = std::stoi(line->substr(6));
  }

  void start(std::vector<std::string> camera_args) {
    std::vector<std::string> argv{binary("tools/sim/checkpoint-sim"),
                                  "camera",
                                  "--port",
                                  "0",
                                  "--password",
                                  "secret",
                                  "--ground-truth",
                                  (dir_ / "camera.jsonl").string(),
                                  "--picture-kb",
                                  "60"};
    argv.insert(argv.end(), camera_args.begin(), camera_args.end());
    camera_ = std::make_unique<Process>(argv, dir_ / "camera");
    auto line = camera_->wait_for_stdout_line("listening ", 10s);
    ASSERT_TRUE(line) << camera_->stderr_text();
    std::ofstream(dir_ / "cam.secret") << "secret";
    ::chmod((dir_ / "cam.secret").c_str(), 0600);
    auto config = CheckpointdConfig::minimal(dir_.path(), broker_->uri());
    config.set("correlation.max_wait_ms", 200).set("validity.clock_sync", "assume");
    config.add_radar("radar-1", radar_port_).calibration("C", "2099-01-01");
    config.add_camera("cam-1", "http://127.0.0.1:" + line->substr(10), dir_ / "cam.secret")
        .reconnect(200, 1000);
    config.write(dir_ / "c.yaml");
    daemon_ = std::make_unique<Process>(
        std::vector<std::string>{binary("daemon/app/checkpointd"), "--config", (dir_ / "c.yaml").string()},
        dir_ / "checkpointd");
  }

  std::vector<json> records(const std::string& type) const {
    return records_of(*collector_, "checkpoint/gw/evidence", {type});
  }

  std::vector<json> truth() const {
    std::vector<json> out;
    std::ifstream in(dir_ / "camera.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (in.eof()) {
        break;  // a last line without its newline: the simulator is still writing it
      }
      out.push_back(json::parse(line));
    }
    return out;
  }

  void stop() {
    daemon_->signal(SIGTERM);
    ASSERT_EQ(daemon_->wait(20s), 0) << daemon_->stderr_text();
  }

  TempDir dir_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<MqttCollector> collector_;
  std::unique_ptr<Process> radar_;
  std::unique_ptr<Process> camera_;
  std::unique_ptr<Process> daemon_;
  int radar_port_ = 0;
};

TEST_F(CameraFaults, DroppedPicturesMalformedXmlAndRepeatsAreHandledExactly) {
  start({"--events", "40", "--rate", "8", "--seed", "9", "--drop-picture-rate", "0.15",
         "--malformed-xml-rate", "0.1", "--repeat-rate", "0.2", "--split-writes"});
  // Expected from the camera's ground truth: one record per distinct (UUID, dateTime) that was sent with
  // well-formed XML; its pictures are the ones actually sent, the rest are named missing.
  std::map<std::string, json> expected;
  std::size_t repeats = 0;
  std::size_t malformed = 0;
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        const auto t = truth();
        return t.size() >= 40 && camera_->stdout_text().size() > 0;
      },
      30s));
  pause(3s);
  for (const auto& e : truth()) {
    if (e.value("malformed", false)) {
      ++malformed;
      continue;
    }
    if (!e.value("sent", false)) {
      continue;
    }
    const std::string key = e["uuid"].get<std::string>() + "|" + e["dateTime"].get<std::string>();
    repeats += e.value("repeated", false) ? 1 : 0;  // sent twice by the camera, to be recorded once
    ASSERT_EQ(expected.count(key), 0u) << "the camera's ground truth has one line per event";
    expected[key] = e;
  }
  ASSERT_TRUE(collector_->wait_until([&] { return records("plate_read").size() >= expected.size(); }, 30s))
      << records("plate_read").size() << " of " << expected.size() << "\n"
      << daemon_->stderr_text();
  pause(1s);
  stop();
  EXPECT_GT(repeats, 0u) << "the seed should produce repeated events";
  EXPECT_GT(malformed, 0u) << "the seed should produce malformed XML";

  const auto got = records("plate_read");
  EXPECT_EQ(got.size(), expected.size()) << "no event lost, none recorded twice";
  std::size_t with_missing = 0;
  for (const auto& r : got) {
    const std::string key = r["camera_event"]["uuid"].get<std::string>() + "|" +
                            r["camera_event"]["camera_time"].get<std::string>();
    ASSERT_EQ(expected.count(key), 1u) << "a record for an event the camera never sent: " << key;
    const auto& e = expected[key];
    std::set<std::string> sent_sha;
    std::set<std::string> dropped_names;
    for (const auto& p : e["pictures"]) {
      if (p["sent"].get<bool>()) {
        sent_sha.insert(p["sha256"].get<std::string>());
      } else {
        dropped_names.insert(p["file_name"].get<std::string>());
      }
    }
    std::set<std::string> got_sha;
    for (const auto& p : r["pictures"]) {
      got_sha.insert(p["sha256"].get<std::string>());
    }
    EXPECT_EQ(got_sha, sent_sha) << key;
    EXPECT_EQ(r["missing_pictures"].get<std::set<std::string>>(), dropped_names) << key;
    with_missing += dropped_names.empty() ? 0 : 1;
    EXPECT_EQ(r["plate"], e["plate"]);
  }
  EXPECT_GT(with_missing, 0u) << "the seed should drop some pictures";
}

TEST_F(CameraFaults, CameraRebootMidStreamIsRecoveredAndReported) {
  start({"--events", "0", "--rate", "4", "--seed", "3", "--reboot-every", "4", "--reboot-outage-s", "2"});
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        bool down = false;
        for (const auto& r : records("device_status")) {
          if (r["device"] == "cam-1" && r["state"] == "disconnected") {
            down = true;
          }
          if (down && r["device"] == "cam-1" && r["state"] == "connected") {
            return true;
          }
        }
        return false;
      },
      30s))
      << daemon_->stderr_text();
  const auto before = records("plate_read").size();
  ASSERT_TRUE(collector_->wait_until([&] { return records("plate_read").size() >= before + 3; }, 20s))
      << "events flow again after the reboot";
  stop();
  // Whatever the reboot cut, no record is invented: each names an event the camera really sent.
  std::set<std::string> sent;
  for (const auto& e : truth()) {
    sent.insert(e["uuid"].get<std::string>());
  }
  std::set<std::string> seen;
  for (const auto& r : records("plate_read")) {
    const auto uuid = r["camera_event"]["uuid"].get<std::string>();
    EXPECT_EQ(sent.count(uuid), 1u) << uuid;
    EXPECT_TRUE(seen.insert(uuid + r["camera_event"]["camera_time"].get<std::string>()).second)
        << "recorded twice: " << uuid;
  }
}

// Defect (issue 12): a camera set to GBK sent its plate in GBK, and the radar's 150 km/h track paired with
// it became a bare `fault` record: no speed, no plate, no pictures. The speeding record must be sealed with
// everything: the speed, the plate escaped (\xNN) with its exact bytes in base64, the pictures, and the
// gateway must say the camera's text was not UTF-8 (in the record and in the camera's error count).
TEST(CameraText, AGbkPlatePairedWithASpeedingTrackIsSealedWithSpeedPlateAndPictures) {
  TempDir dir;
  const fs::path pub = make_gateway_key(dir.path());
  Mosquitto broker(dir / "broker");
  broker.start();
  MqttCollector collector(broker.uri(), {"checkpoint/gw/#"});
  std::ofstream(dir / "scenario.yaml")
      << "radar: {port: 0}\n"
      << "camera: {port: 0, username: admin, password: secret, text_encoding: GBK}\n"
      << "start_delay_ms: 4000\n"
      << "vehicles:\n"
      << "  - {at_ms: 0, plate: 浙A12345, lane: 1, speed_kmh: 150.0}\n"
      << "  - {at_ms: 1500, plate: 沪C00001, lane: 1, speed_kmh: 80.0}\n";
  Process sim({binary("tools/sim/checkpoint-sim"), "scenario", (dir / "scenario.yaml").string()},
              dir / "scenario");
  const auto radar = sim.wait_for_stdout_line("radar ", 10s);
  const auto camera = sim.wait_for_stdout_line("camera ", 10s);
  ASSERT_TRUE(radar && camera) << sim.stderr_text();
  std::ofstream(dir / "cam.secret") << "secret";
  ::chmod((dir / "cam.secret").c_str(), 0600);
  auto config = CheckpointdConfig::minimal(dir.path(), broker.uri());
  config.set_yaml("correlation.lanes", "[{lane: 1, limit_kmh: 100}]").set("validity.clock_sync", "assume");
  config.add_radar("radar-1", radar->substr(6)).calibration("C", "2099-01-01");
  config.add_camera("cam-1", "http://127.0.0.1:" + camera->substr(7), dir / "cam.secret");
  config.write(dir / "c.yaml");
  Process verify({binary("tools/checkpointctl/checkpointctl"), "verify", "--pubkey", pub.string(), "--mqtt",
                  broker.uri(), "--topic", "checkpoint/gw/evidence", "--from-start", "--seconds", "60"},
                 dir / "verify");
  ASSERT_TRUE(verify.wait_for_stderr_line("checkpointctl: subscribed to ", 20s)) << verify.stderr_text();
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir / "c.yaml").string()},
                 dir / "checkpointd");
  const std::vector<std::string> vehicle_types{"speeding", "passage", "plate_read", "speed_measurement",
                                               "fault"};
  ASSERT_TRUE(collector.wait_until(
      [&] { return records_of(collector, "checkpoint/gw/evidence", vehicle_types).size() >= 2; }, 40s))
      << daemon.stderr_text();
  daemon.signal(SIGTERM);
  ASSERT_EQ(daemon.wait(20s), 0) << daemon.stderr_text();
  verify.signal(SIGTERM);
  ASSERT_EQ(verify.wait(10s), 0) << verify.stdout_text() << verify.stderr_text();
  EXPECT_NE(verify.stdout_text().find("chain intact"), std::string::npos) << verify.stdout_text();

  const auto all = records_of(collector, "checkpoint/gw/evidence", vehicle_types);
  ASSERT_EQ(all.size(), 2u);
  const json& r = all[0];
  EXPECT_EQ(r["type"], "speeding") << r.dump();
  EXPECT_EQ(r["speed_dkmh"], 1500);
  EXPECT_EQ(r["band"], "over_20");            // 50 % over: "more than 20 %, at most 50 %"
  EXPECT_EQ(r["plate"], "\\xd5\\xe3A12345");  // 浙A12345 in GBK, escaped
  EXPECT_EQ(r["plate_raw_b64"], base64_encode(std::string("\xd5\xe3") + "A12345"));  // the exact bytes
  EXPECT_EQ(r["text_not_utf8"], json({"camera_event.raw_xml", "plate"}));
  EXPECT_NE(r["camera_event"]["raw_xml"].get<std::string>().find("\\xd5\\xe3A12345"), std::string::npos);
  EXPECT_EQ(r["enforceable"], true) << r["reasons"].dump();
  ASSERT_EQ(r["pictures"].size(), 2u);
  EXPECT_EQ(all[1]["type"], "passage");
  EXPECT_EQ(all[1]["plate"], "\\xbb\\xa6C00001");  // 沪 in GBK
  // Every picture named was published and hashes to its name.
  std::set<std::string> media;
  for (const auto& m : collector.messages()) {
    if (m.topic.rfind("checkpoint/gw/media/", 0) == 0) {
      EXPECT_EQ(sha256_hex(m.payload), m.topic.substr(20));
      media.insert(m.topic.substr(20));
    }
  }
  for (const auto& p : r["pictures"]) {
    EXPECT_EQ(media.count(p["sha256"].get<std::string>()), 1u);
  }
  // The last status (published at the clean stop) counts the camera's text that was not UTF-8 (both alerts
  // and the device name), and shows that name escaped: the status stays JSON.
  json status;
  ASSERT_TRUE(collector.wait_until(
      [&] {
        const auto all_status = collector.payloads("checkpoint/gw/status");
        status = all_status.empty() ? json() : json::parse(all_status.back());
        return status.is_object() && status.value("state", "") == "offline";
      },
      10s));
  const json& cam = status["devices"]["cam-1"];
  EXPECT_GE(cam["errors"].value("text_not_utf8", 0), 3) << cam.dump();
  EXPECT_NE(cam["device"]["deviceName"].get<std::string>().find("\\x"), std::string::npos) << cam.dump();
}

}  // namespace
}  // namespace cpd::testing
