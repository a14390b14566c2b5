// checkpointctl check-config and devices test against the real simulators (radar, camera, dock): each
// probe's exit code and facts, each failure's plain explanation (wrong credentials, lock-out, refused,
// DNS), and check-config's warnings and errors at file:line:column.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

struct CtlRun {
  int code = -1;
  std::string out;
  std::string err;
};

// "file:line:column" (1-based) of the first occurrence of `needle` in `text`.
std::string place_in(const std::string& file, const std::string& text, const std::string& needle) {
  const auto pos = text.find(needle);
  EXPECT_NE(pos, std::string::npos) << "test bug: " << needle;
  int line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return file + ":" + std::to_string(line) + ":" + std::to_string(pos - line_start + 1);
}

// The calendar date `days` from now in UTC+08:00, YYYY-MM-DD.
std::string date_in_days(int days) {
  const auto t = static_cast<std::time_t>(std::time(nullptr) + 8 * 3600 + std::int64_t{days} * 86400);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

class DevicesCli : public ::testing::Test {
 protected:
  void SetUp() override {
    write_secret("cam.password", "12345\n");
    write_secret("wrong.password", "not-the-password\n");
    write_secret("dock.token", "s3cret-token\n");
    write_secret("wrong.token", "other-token\n");
    radar_ = start({"radar", "--port", "0", "--rate", "20", "--seed", "7"}, "radar", &radar_port_);
    camera_ = start({"camera", "--port", "0", "--lock-s", "120"}, "camera", &camera_port_);
    dock_ = start({"dock", "--port", "0", "--token", "s3cret-token", "--files", "2"}, "dock", &dock_port_);
    refused_port_ = free_port();
    write_config();
  }

  void write_secret(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    ::chmod((dir_ / name).c_str(), 0600);
  }

  std::unique_ptr<Process> start(std::vector<std::string> args, const std::string& name,
                                 std::uint16_t* port) {
    args.insert(args.begin(), binary("tools/sim/checkpoint-sim"));
    auto p = std::make_unique<Process>(args, dir_ / name);
    auto line = p->wait_for_stdout_line("listening ", 20s);
    EXPECT_TRUE(line) << p->stderr_text();
    *port = line ? static_cast<std::uint16_t>(std::stoi(line->substr(10))) : 0;
    return p;
  }

  void write_config() {
    auto config = CheckpointdConfig::minimal(dir_.path(), "tcp://127.0.0.1:1883");
    config.set("gateway.site.utc_offset", "+08:00").set("metrics.enabled", "false");
    config.add_radar("radar-1", radar_port_).calibration("C-1", "2099-12-31");
    config.add_radar("radar-off", refused_port_).lanes(1).calibration("C-2", "2099-12-31");
    const std::string camera = "http://127.0.0.1:" + std::to_string(camera_port_);
    config.add_camera("cam-1", camera, dir_ / "cam.password");
    config.add_camera("cam-wrong", camera, dir_ / "wrong.password").set("username", "operator");
    config.add_camera("cam-dns", "http://nonexistent.invalid:8080", dir_ / "cam.password");
    const std::string dock = "http://127.0.0.1:" + std::to_string(dock_port_);
    config.add_dock("dock-1", dock, dir_ / "dock.token");
    config.add_dock("dock-wrong", dock + "/", dir_ / "wrong.token");
    config.write(dir_ / "c.yaml");
  }

  CtlRun ctl(std::vector<std::string> args) {
    args.insert(args.begin(), binary("tools/checkpointctl/checkpointctl"));
    Process p(args, dir_ / ("ctl-" + std::to_string(++runs_)));
    CtlRun r;
    const auto code = p.wait(60s);
    EXPECT_TRUE(code) << "checkpointctl did not finish";
    r.code = code.value_or(-1);
    r.out = p.stdout_text();
    r.err = p.stderr_text();
    return r;
  }

  CtlRun test_device(const std::string& id, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"devices", "test", id, "--config", (dir_ / "c.yaml").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return ctl(args);
  }

  TempDir dir_;
  std::unique_ptr<Process> radar_;
  std::unique_ptr<Process> camera_;
  std::unique_ptr<Process> dock_;
  std::uint16_t radar_port_ = 0;
  std::uint16_t camera_port_ = 0;
  std::uint16_t dock_port_ = 0;
  std::uint16_t refused_port_ = 0;
  int runs_ = 0;
};

TEST_F(DevicesCli, RadarShowsFramesStatusAndASampleTarget) {
  const CtlRun r = test_device("radar-1", {"--seconds", "2"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("radar radar-1 at 127.0.0.1:" + std::to_string(radar_port_)));
  EXPECT_THAT(r.out, HasSubstr("status 00 OK (OK)"));
  EXPECT_THAT(r.out, HasSubstr("parse errors: none"));
  EXPECT_THAT(r.out, HasSubstr("sample target: #"));
  EXPECT_THAT(r.out, HasSubstr("km/h"));
  EXPECT_THAT(r.out, HasSubstr("OK: radar-1 answered well"));

  const CtlRun j = test_device("radar-1", {"--seconds", "1", "--json"});
  EXPECT_EQ(j.code, 0) << j.out << j.err;
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_TRUE(doc["ok"].get<bool>());
  EXPECT_GT(doc["facts"]["frames_by_type"]["status"].get<int>(), 0);
  EXPECT_GT(doc["facts"]["frames_by_type"]["detect"].get<int>(), 0);
  EXPECT_EQ(doc["facts"]["statuses"][0]["code"], 0);
}

TEST_F(DevicesCli, RadarOnAPortWithNothingListeningIsRefused) {
  const CtlRun r = test_device("radar-off");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("FAILED (refused)"));
  EXPECT_THAT(r.out, HasSubstr("connection refused"));
  EXPECT_THAT(r.out, HasSubstr("nothing is listening"));
}

TEST_F(DevicesCli, CameraShowsDeviceInfoAndClockOffset) {
  const CtlRun r = test_device("cam-1");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("model: iDS-TCM403-SIM"));
  EXPECT_THAT(r.out, HasSubstr("serial number: SIM0000000001"));
  EXPECT_THAT(r.out, HasSubstr("firmware: V5.5.0"));
  EXPECT_THAT(r.out, HasSubstr("clock offset (camera minus this host): "));
  EXPECT_THAT(r.out, Not(HasSubstr("12345")));  // the password is never shown

  const CtlRun j = test_device("cam-1", {"--json"});
  EXPECT_EQ(j.code, 0) << j.out << j.err;
  const auto doc = nlohmann::json::parse(j.out);
  // The simulator's clock is this host's: the estimate must contain 0.
  const auto offset = doc["facts"]["clock"]["offset_ms"].get<std::int64_t>();
  const auto uncertainty = doc["facts"]["clock"]["uncertainty_ms"].get<std::int64_t>();
  EXPECT_LE(std::abs(offset), uncertainty + 50) << j.out;
  EXPECT_EQ(doc["facts"]["device_info"]["serial_number"], "SIM0000000001");
}

TEST_F(DevicesCli, WrongCameraPasswordIsExplainedAndRepeatingItLocksTheUser) {
  const CtlRun first = test_device("cam-wrong");
  EXPECT_EQ(first.code, 1) << first.out << first.err;
  EXPECT_THAT(first.out, HasSubstr("FAILED (wrong_credentials): wrong credentials"));
  EXPECT_THAT(first.out, Not(HasSubstr("not-the-password")));
  // Each run makes exactly one login attempt; the camera locks the user at the 5th failure in a row.
  int runs = 1;
  CtlRun r = first;
  while (r.out.find("locked") == std::string::npos && runs < 8) {
    r = test_device("cam-wrong");
    ++runs;
    EXPECT_EQ(r.code, 1) << r.out << r.err;
  }
  EXPECT_EQ(runs, 5) << r.out;
  EXPECT_THAT(r.out, HasSubstr("FAILED (locked): user locked"));
  // The lock is per user: the right one still gets in.
  EXPECT_EQ(test_device("cam-1").code, 0);
}

TEST_F(DevicesCli, UnresolvableHostIsADnsFailure) {
  const CtlRun r = test_device("cam-dns");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("FAILED (dns): DNS"));
  EXPECT_THAT(r.out, HasSubstr("nonexistent.invalid"));
}

TEST_F(DevicesCli, DockShowsStationStatus) {
  const CtlRun r = test_device("dock-1");
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("station id: DS-2011-0042"));
  EXPECT_THAT(r.out, HasSubstr("recorders docked: "));
  EXPECT_THAT(r.out, HasSubstr("clock offset (station minus this host): "));
  EXPECT_THAT(r.out, Not(HasSubstr("s3cret-token")));

  const CtlRun wrong = test_device("dock-wrong");
  EXPECT_EQ(wrong.code, 1) << wrong.out << wrong.err;
  EXPECT_THAT(wrong.out, HasSubstr("FAILED (wrong_credentials): wrong credentials"));
  EXPECT_THAT(wrong.out, Not(HasSubstr("other-token")));
}

TEST_F(DevicesCli, UsageErrorsExitWith2) {
  EXPECT_EQ(test_device("no-such-device").code, 2);
  EXPECT_EQ(ctl({"devices", "test", "radar-1"}).code, 2);  // --config missing
  EXPECT_EQ(ctl({"check-config"}).code, 2);
  const CtlRun help = ctl({"devices", "test", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Exit codes: 0"));
}

TEST_F(DevicesCli, CheckConfigWarnsAtTheDeviceEntries) {
  make_gateway_key(dir_.path());
  auto config = CheckpointdConfig::minimal(dir_.path(), "tcp://127.0.0.1:1883");
  config.set("gateway.site.utc_offset", "+08:00")
      .set("store.path", "/tmp/store.db")
      .set("metrics.enabled", "false");
  config.add_radar("radar-a", 4001)
      .set_yaml("tcp", "{host: 192.0.2.10, port: 4001}")
      .lanes(1)
      .calibration("C-A", date_in_days(10));
  config.add_radar("radar-b", 4001)
      .set_yaml("tcp", "{host: 192.0.2.10, port: 4001}")
      .lanes(1)
      .calibration("C-B", "2099-12-31");
  const std::string file = (dir_ / "warn.yaml").string();
  const std::string text = config.write(file);  // the places expected below are found in this text
  const CtlRun r = ctl({"check-config", file});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr(place_in(file, text, "id: radar-a") +
                               ": warning: device radar-a: calibration certificate C-A expires soon"));
  EXPECT_THAT(r.out, HasSubstr("10 days left"));
  EXPECT_THAT(r.out, HasSubstr(place_in(file, text, "id: radar-b") +
                               ": warning: device radar-b: same address as device 'radar-a'"));
  EXPECT_THAT(r.out, HasSubstr(file + ": valid (gateway gw, 2 devices"));

  const CtlRun j = ctl({"check-config", file, "--json"});
  EXPECT_EQ(j.code, 0) << j.out;
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_TRUE(doc["valid"].get<bool>());
  EXPECT_EQ(doc["devices"], 2);
  EXPECT_EQ(doc["sha256"].get<std::string>().size(), 64U);
  EXPECT_TRUE(doc["errors"].empty());
  EXPECT_GE(doc["warnings"].size(), 2U);
}

TEST_F(DevicesCli, CheckConfigOnABrokenFileNamesThePlace) {
  // Written by hand, not with CheckpointdConfig: a file that is wrong on purpose (a misspelt key).
  const std::string text =
      "gateway:\n  id: gw\n  site: {name: t, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
      "  key: /tmp/gw.key\nstore:\n  path: /tmp/store.db\nmqtt:\n  uri: tcp://127.0.0.1:1883\n"
      "devices:\n  - id: radar-a\n    kind: radar\n    tcp: {host: 192.0.2.10, prot: 4001}\n"
      "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]\n"
      "    calibration: {certificate: C-A, valid_until: 2099-12-31}\n";
  const std::string file = (dir_ / "broken.yaml").string();
  std::ofstream(file) << text;
  const CtlRun r = ctl({"check-config", file});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr(place_in(file, text, "prot: 4001")));
  EXPECT_THAT(r.out, HasSubstr("prot"));
  EXPECT_THAT(r.out, HasSubstr(file + ": invalid"));

  const CtlRun j = ctl({"check-config", file, "--json"});
  EXPECT_EQ(j.code, 1);
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_FALSE(doc["valid"].get<bool>());
  ASSERT_EQ(doc["errors"].size(), 1U);
  const auto prot = text.find("prot: 4001");
  EXPECT_EQ(doc["errors"][0]["line"].get<int>(),
            1 + std::count(text.begin(), text.begin() + static_cast<long>(prot), '\n'));
  EXPECT_THAT(doc["errors"][0]["key"].get<std::string>(), HasSubstr("prot"));
  EXPECT_EQ(doc["sha256"].get<std::string>().size(), 64U);
}

}  // namespace
}  // namespace cpd::testing
