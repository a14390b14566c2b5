// Unit tests of the radar device section: link, lanes, calibration date and timings, with error places.
#include "adapters/radar/radar_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/config/schema.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::adapters {
namespace {

using config::ConfigError;
using config::testing::error_of;
using config::testing::place_in;
using ::testing::HasSubstr;

constexpr const char* kRadarFile = "dev.yaml";

const std::string kDevice = R"(id: radar-1
kind: radar
tcp: {host: 192.0.2.10, port: 4001}
poll_interval_ms: 0
lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]
calibration: {certificate: JJG527-2026-0412, valid_until: 2027-06-30}
)";

// Parses a device mapping the way config.cpp does: id and kind read first, then the kind's parser.
RadarConfig parse(const std::string& text, int utc_offset_min = 480) {
  auto context = std::make_shared<config::LoadContext>();
  context->file = kRadarFile;
  context->utc_offset_min = utc_offset_min;
  config::Section device = config::Section::root(YAML::Load(text), context);
  device.required<std::string>("id");
  device.required<std::string>("kind");
  return parse_radar_config(device);
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "test bug: " << from;
  return text.replace(pos, from.size(), to);
}

TEST(RadarConfigTest, ReadsAValidSectionWithDefaults) {
  const RadarConfig c = parse(kDevice);
  EXPECT_EQ(c.id, "radar-1");
  const auto* tcp = std::get_if<TcpLink>(&c.link);
  ASSERT_NE(tcp, nullptr);
  EXPECT_EQ(tcp->host, "192.0.2.10");
  EXPECT_EQ(tcp->port, 4001);
  EXPECT_EQ(c.poll_interval_ms, 0);
  ASSERT_EQ(c.lanes.size(), 2U);
  EXPECT_EQ(c.lanes[1].lane, 2);
  EXPECT_DOUBLE_EQ(c.lanes[1].x_min, 3.75);
  EXPECT_DOUBLE_EQ(c.lanes[1].x_max, 7.5);
  EXPECT_EQ(c.calibration.certificate, "JJG527-2026-0412");
  EXPECT_EQ(c.calibration.valid_until, "2027-06-30");
  EXPECT_EQ(c.track_timeout_ms, 400);
  EXPECT_EQ(c.reconnect_initial_ms, 500);
  EXPECT_EQ(c.reconnect_max_ms, 30000);
  EXPECT_EQ(c.clock_window_s, 120);
}

TEST(RadarConfigTest, ValidUntilIsTheMidnightAfterTheDateInTheSiteOffset) {
  // 2027-07-01T00:00Z is 1814400000000; at +08:00 local midnight comes 8 h earlier, at -05:00 5 h later.
  EXPECT_EQ(parse(kDevice, 480).calibration.valid_until_ms, 1814400000000 - 8 * 3600 * 1000);
  EXPECT_EQ(parse(kDevice, 0).calibration.valid_until_ms, 1814400000000);
  EXPECT_EQ(parse(kDevice, -300).calibration.valid_until_ms, 1814400000000 + 5 * 3600 * 1000);
}

TEST(RadarConfigTest, SerialLink) {
  const std::string text = replaced(kDevice, "tcp: {host: 192.0.2.10, port: 4001}",
                                    "serial: {device: /dev/ttyUSB0, baud: 115200}");
  const RadarConfig c = parse(text);
  const auto* serial = std::get_if<SerialLink>(&c.link);
  ASSERT_NE(serial, nullptr);
  EXPECT_EQ(serial->device, "/dev/ttyUSB0");
  EXPECT_EQ(serial->baud, 115200U);
}

TEST(RadarConfigTest, BadBaudListsTheAllowedRates) {
  const std::string text =
      replaced(kDevice, "tcp: {host: 192.0.2.10, port: 4001}", "serial: {device: /dev/ttyUSB0, baud: 19200}");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kRadarFile, text, "19200") + ": serial.baud: must be one of 9600, 115200; got 19200");
}

TEST(RadarConfigTest, BothTcpAndSerialIsAnError) {
  const std::string text = kDevice + "serial: {device: /dev/ttyUSB0}\n";
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "serial");
  EXPECT_EQ(std::string(e.what()).rfind(place_in(kRadarFile, text, "{device"), 0), 0U) << e.what();
  EXPECT_THAT(e.detail(), HasSubstr("not both"));
}

TEST(RadarConfigTest, NoLinkIsAnError) {
  const std::string text = replaced(kDevice, "tcp: {host: 192.0.2.10, port: 4001}\n", "");
  EXPECT_THAT(error_of([&] { parse(text); }).detail(), HasSubstr("missing link"));
}

TEST(RadarConfigTest, PortOutOfRange) {
  const std::string text = replaced(kDevice, "port: 4001", "port: 0");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kRadarFile, text, "0}") + ": tcp.port: must be between 1 and 65535, got 0");
}

TEST(RadarConfigTest, XMaxNotAboveXMin) {
  const std::string text = replaced(kDevice, "x_max: 7.5", "x_max: 2.0");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(std::string(e.what()), place_in(kRadarFile, text, "2.0}") +
                                       ": lanes[1].x_max: must be greater than x_min (3.75), got 2.0");
}

TEST(RadarConfigTest, OverlappingLanes) {
  const std::string text = replaced(kDevice, "x_min: 3.75", "x_min: 3.0");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "lanes[1].x_min");
  EXPECT_EQ(std::string(e.what()), place_in(kRadarFile, text, "3.0") +
                                       ": lanes[1].x_min: lane 2 [3.0, 7.5) overlaps lane 1 [0.0, 3.75) at " +
                                       place_in(kRadarFile, text, "{lane: 1"));
}

TEST(RadarConfigTest, OverlapIsFoundWhateverTheOrderOfLanes) {
  const std::string text =
      replaced(kDevice, "[{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]",
               "[{lane: 2, x_min: 3.75, x_max: 7.5}, {lane: 1, x_min: 0.0, x_max: 4.0}]");
  EXPECT_EQ(error_of([&] { parse(text); }).key(), "lanes[1].x_min");
}

TEST(RadarConfigTest, AdjacentHalfOpenLanesDoNotOverlap) {
  EXPECT_NO_THROW(parse(kDevice));
}

TEST(RadarConfigTest, DuplicateLaneNumber) {
  const std::string text = replaced(kDevice, "lane: 2", "lane: 1");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "lanes[1].lane");
  EXPECT_THAT(e.detail(), HasSubstr("duplicate lane number 1 (first at " +
                                    place_in(kRadarFile, text, "1, x_min: 0.0") + ")"));
}

TEST(RadarConfigTest, LaneNumbersStartAtOne) {
  const std::string text = replaced(kDevice, "lane: 1", "lane: 0");
  EXPECT_EQ(error_of([&] { parse(text); }).detail(), "must be between 1 and 99, got 0");
}

TEST(RadarConfigTest, EmptyLanes) {
  const std::string text =
      replaced(kDevice, "[{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]", "[]");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "lanes");
  EXPECT_EQ(e.detail(), "must have at least 1 entry, got 0");
}

TEST(RadarConfigTest, ImpossibleDate) {
  const std::string text = replaced(kDevice, "2027-06-30", "2027-02-30");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kRadarFile, text, "2027-02-30") +
                ": calibration.valid_until: must be a calendar date YYYY-MM-DD (1970 or "
                "later), got '2027-02-30'");
}

TEST(RadarConfigTest, MissingCalibration) {
  const std::string text =
      replaced(kDevice, "calibration: {certificate: JJG527-2026-0412, valid_until: 2027-06-30}\n", "");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "calibration");
  EXPECT_EQ(e.line(), 1);
}

TEST(RadarConfigTest, PollIntervalTooShort) {
  const std::string text = replaced(kDevice, "poll_interval_ms: 0", "poll_interval_ms: 5");
  EXPECT_THAT(error_of([&] { parse(text); }).detail(),
              HasSubstr("must be 0 (the radar streams) or between 20"));
}

TEST(RadarConfigTest, ReconnectMaxBelowInitial) {
  const std::string text = kDevice + "reconnect_initial_ms: 1000\nreconnect_max_ms: 900\n";
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kRadarFile, text, "900") +
                ": reconnect_max_ms: must be at least reconnect_initial_ms (1000), got 900");
}

TEST(RadarConfigTest, UnknownKeySuggestsTheNearest) {
  const std::string text = replaced(kDevice, "poll_interval_ms: 0", "pol_interval_ms: 0");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "pol_interval_ms");
  EXPECT_EQ(e.line(), 4);
  EXPECT_EQ(e.column(), 1);
  EXPECT_THAT(e.detail(),
              HasSubstr("unknown key 'pol_interval_ms' (did you mean 'poll_interval_ms'?); allowed: id, "
                        "kind, tcp, serial, poll_interval_ms, lanes, calibration, track_timeout_ms"));
}

TEST(RadarConfigTest, UnknownKeyInsideALane) {
  const std::string text = replaced(kDevice, "{lane: 2,", "{lane: 2, width: 3,");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(std::string(e.what()), place_in(kRadarFile, text, "width") +
                                       ": lanes[1].width: unknown key 'width'; allowed: lane, x_min, x_max");
}

}  // namespace
}  // namespace cpd::adapters
