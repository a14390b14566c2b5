// Unit tests of config_warnings(): each warning appears exactly when its condition holds, at the device
// entry's file:line:column, and a clean config has none.
#include "daemon/config/config_warnings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "daemon/config/config.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::config {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::place_in;

constexpr const char* kWarningsFile = "gw.yaml";
constexpr std::int64_t kDay = 24LL * 60 * 60 * 1000;

// 2027-06-30 is the radar's last valid day; its calibration ends at 2027-07-01T00:00+08:00.
const UnixMs kCalibrationEnd = 1814400000000LL - 8LL * 60 * 60 * 1000;

std::string base(const std::string& devices, const std::string& extra = "") {
  return R"(gateway:
  id: gw-1
  site: {name: "Test site", road: G60, direction: N, lat: 30.0, lon: 120.0, utc_offset: "+08:00",
         area_code: "330106", road_code: G60, km_marker: K1234+500, carriageway: up}
  key: /tmp/gw.key
store:
  path: /tmp/store.db
mqtt:
  uri: tcp://127.0.0.1:1883
metrics: {enabled: false}
correlation:
  lanes: [{lane: 1, limit_kmh: 100}, {lane: 2, limit_kmh: 100}]
)" + extra +
         "devices:\n" + devices;
}

const std::string kRadar1 = R"(  - id: radar-1
    kind: radar
    tcp: {host: 192.0.2.10, port: 4001}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]
    calibration: {certificate: C-1, valid_until: 2027-06-30}
)";

std::vector<ConfigWarning> warnings_of(const std::string& text, UnixMs now) {
  return config_warnings(parse_config(text, kWarningsFile), now);
}

TEST(ConfigWarningsTest, CalibrationFarAwayAndWatchedRadarGiveNoWarning) {
  // A radar without a camera is warned about; give it one via a second radar-only check below.
  const std::string text = base(kRadar1);
  const auto w = warnings_of(text, kCalibrationEnd - 60 * kDay);
  ASSERT_EQ(w.size(), 1U);  // only "no camera names this radar"
  EXPECT_THAT(w[0].message, HasSubstr("no camera"));
  EXPECT_EQ(w[0].device, "radar-1");
  EXPECT_EQ(w[0].place, place_in(kWarningsFile, text, "id: radar-1"));
}

TEST(ConfigWarningsTest, ACalibrationNamingAnotherRadarSerialIsWarned) {
  const std::string radar = R"(  - id: radar-1
    kind: radar
    tcp: {host: 192.0.2.10, port: 4001}
    serial_number: SR-0001
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]
    calibration: {certificate: C-1, valid_until: 2027-06-30, radar_serial: SR-0002}
)";
  const auto w = warnings_of(base(radar), kCalibrationEnd - 60 * kDay);
  ASSERT_EQ(w.size(), 2U);  // and "no camera names this radar"
  EXPECT_EQ(w[0].device, "radar-1");
  EXPECT_THAT(w[0].message, HasSubstr("names radar serial SR-0002 but this radar's serial is SR-0001"));
  EXPECT_THAT(w[0].message, HasSubstr("calibration_serial_mismatch"));

  std::string same = radar;
  same.replace(same.find("SR-0002"), 7, "SR-0001");
  EXPECT_EQ(warnings_of(base(same), kCalibrationEnd - 60 * kDay).size(), 1U);
}

TEST(ConfigWarningsTest, CalibrationWithin30DaysIsWarnedWithDaysLeft) {
  const std::string text = base(kRadar1);
  // 2027-06-10T12:00+08:00: 20 whole days left after today.
  const UnixMs now = kCalibrationEnd - 21 * kDay + kDay / 2;
  const auto w = warnings_of(text, now);
  ASSERT_EQ(w.size(), 2U);
  EXPECT_EQ(w[0].place, place_in(kWarningsFile, text, "id: radar-1"));
  EXPECT_EQ(w[0].device, "radar-1");
  EXPECT_THAT(w[0].message, HasSubstr("C-1 expires soon"));
  EXPECT_THAT(w[0].message, HasSubstr("2027-06-30"));
  EXPECT_THAT(w[0].message, HasSubstr("20 days left"));
}

TEST(ConfigWarningsTest, CalibrationBoundariesFollowTheSiteOffset) {
  const std::string text = base(kRadar1);
  // 31 days before the last day: not yet; 30: warned.
  EXPECT_EQ(warnings_of(text, kCalibrationEnd - 32 * kDay).size(), 1U);
  EXPECT_EQ(warnings_of(text, kCalibrationEnd - 31 * kDay).size(), 2U);
  // The last millisecond of 2027-06-30 in +08:00 is still valid; the next is expired.
  auto last = warnings_of(text, kCalibrationEnd - 1);
  ASSERT_EQ(last.size(), 2U);
  EXPECT_THAT(last[0].message, HasSubstr("today is its last valid day"));
  auto expired = warnings_of(text, kCalibrationEnd);
  ASSERT_EQ(expired.size(), 2U);
  EXPECT_THAT(expired[0].message, HasSubstr("expired"));
  EXPECT_THAT(expired[0].message, HasSubstr("not valid evidence"));
}

TEST(ConfigWarningsTest, TwoDevicesOnOneAddressAreWarnedAtTheLaterOne) {
  const std::string radar2 = R"(  - id: radar-2
    kind: radar
    tcp: {host: 192.0.2.10, port: 4001}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-2, valid_until: 2027-06-30}
)";
  const std::string text = base(kRadar1 + radar2);
  const auto w = warnings_of(text, kCalibrationEnd - 100 * kDay);
  std::vector<ConfigWarning> same;
  for (const auto& x : w) {
    if (x.message.find("same address") != std::string::npos) {
      same.push_back(x);
    }
  }
  ASSERT_EQ(same.size(), 1U);
  EXPECT_EQ(same[0].device, "radar-2");
  EXPECT_EQ(same[0].place, place_in(kWarningsFile, text, "id: radar-2"));
  EXPECT_THAT(same[0].message, HasSubstr("radar-1"));
  EXPECT_THAT(same[0].message, HasSubstr(place_in(kWarningsFile, text, "id: radar-1")));
  EXPECT_THAT(same[0].message, HasSubstr("192.0.2.10:4001"));
}

TEST(ConfigWarningsTest, DifferentPortsOrSerialDevicesDoNotClash) {
  const std::string radar2 = R"(  - id: radar-2
    kind: radar
    tcp: {host: 192.0.2.10, port: 4002}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-2, valid_until: 2027-06-30}
  - id: radar-3
    kind: radar
    serial: {device: /dev/ttyUSB0}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-3, valid_until: 2027-06-30}
  - id: radar-4
    kind: radar
    serial: {device: /dev/ttyUSB0, baud: 115200}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-4, valid_until: 2027-06-30}
)";
  const std::string text = base(kRadar1 + radar2);
  std::vector<std::string> clashing;
  for (const auto& x : warnings_of(text, kCalibrationEnd - 100 * kDay)) {
    if (x.message.find("same address") != std::string::npos) {
      clashing.push_back(x.device);
      EXPECT_THAT(x.message, HasSubstr("/dev/ttyUSB0"));
    }
  }
  EXPECT_EQ(clashing, std::vector<std::string>{"radar-4"});
}

TEST(ConfigWarningsTest, FileWideWarningsNameTheFile) {
  const std::string text = base(kRadar1, "validity: {clock_sync: assume}\n");
  const auto w = warnings_of(text, kCalibrationEnd - 100 * kDay);
  ASSERT_EQ(w.size(), 2U);
  EXPECT_EQ(w[1].place, kWarningsFile);
  EXPECT_EQ(w[1].device, "");
  EXPECT_THAT(w[1].message, HasSubstr("clock_sync"));
  EXPECT_EQ(format_warning(w[1]).rfind(std::string(kWarningsFile) + ": warning: validity.clock_sync", 0), 0U);
  EXPECT_EQ(format_warning(w[0]).rfind(
                place_in(kWarningsFile, text, "id: radar-1") + ": warning: device radar-1: ", 0),
            0U);
}

TEST(ConfigWarningsTest, ASiteWithoutTheCaseFileElementsIsWarnedAboutOnce) {
  std::string text = base(kRadar1);
  text.replace(text.find(", road_code: G60, km_marker: K1234+500"), 38, "");
  const auto w = warnings_of(text, kCalibrationEnd - 100 * kDay);
  ASSERT_EQ(w.size(), 2U);  // and "no camera names this radar"
  EXPECT_EQ(w[1].place, kWarningsFile);
  EXPECT_EQ(w[1].device, "");
  EXPECT_THAT(w[1].message, HasSubstr("gateway.site has no road_code, km_marker: records will not state"));
}

TEST(ConfigWarningsTest, SpeedLimitsMustMatchRadarLanes) {
  std::string text = base(kRadar1);
  const auto pos = text.find("{lane: 2, limit_kmh: 100}");
  text.replace(pos, 25, "{lane: 3, limit_kmh: 100}");
  const auto w = warnings_of(text, kCalibrationEnd - 100 * kDay);
  bool lane3 = false;
  for (const auto& x : w) {
    if (x.message.find("lane 3 has a speed limit but no radar") != std::string::npos) {
      lane3 = true;
      EXPECT_EQ(x.place, kWarningsFile);
    }
  }
  EXPECT_TRUE(lane3);
}

TEST(ConfigWarningsTest, WatchedRadarLaneWithoutLimitAndBasicAuthAreWarned) {
  const auto dir = std::filesystem::temp_directory_path() / ("cpd-warn-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto secret = dir / "cam.password";
  std::ofstream(secret) << "secret\n";
  ::chmod(secret.c_str(), 0600);
  std::string text = base(kRadar1 +
                          "  - id: cam-1\n    kind: camera\n    url: http://192.0.2.20\n"
                          "    username: admin\n    password_file: " +
                          secret.string() + "\n    auth: basic\n    radar: radar-1\n");
  text.replace(text.find(", {lane: 2, limit_kmh: 100}"), 27, "");
  const auto w = warnings_of(text, kCalibrationEnd - 100 * kDay);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(w.size(), 2U);
  EXPECT_EQ(w[0].device, "radar-1");
  EXPECT_THAT(w[0].message, HasSubstr("lane 2 of this radar has no speed limit"));
  EXPECT_EQ(w[1].device, "cam-1");
  EXPECT_EQ(w[1].place, place_in(kWarningsFile, text, "id: cam-1"));
  EXPECT_THAT(w[1].message, HasSubstr("auth: basic"));
  EXPECT_THAT(w[1].message, ::testing::Not(HasSubstr("secret")));
}

}  // namespace
}  // namespace cpd::config
