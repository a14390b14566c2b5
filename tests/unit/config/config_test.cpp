// Unit tests of the whole config: the shipped example loads with the expected values, and each kind of
// mistake names the right file:line:column and key.
#include "daemon/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "daemon/config/schema.h"
#include "daemon/core/ed25519.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::config {
namespace {

using testing::error_of;
using ::testing::HasSubstr;
using testing::place_in;
using ::testing::StartsWith;

constexpr const char* kGatewayFile = "gw.yaml";

const std::string kBase = R"(gateway:
  id: gw-1
  site: {name: "Test site", road: G60, direction: N, lat: 30.0, lon: 120.0, utc_offset: "+08:00"}
  key: /tmp/gw.key
store:
  path: /tmp/store.db
mqtt:
  uri: tcp://127.0.0.1:1883
devices:
  - id: radar-1
    kind: radar
    tcp: {host: 192.0.2.10, port: 4001}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-1, valid_until: 2027-06-30}
)";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "test bug: " << from;
  return text.replace(pos, from.size(), to);
}

ConfigError error_in(const std::string& text) {
  return error_of([&] { parse_config(text, kGatewayFile); });
}

std::string example_path() {
  return std::string(CPD_TEST_SOURCE_DIR) + "/config/example.yaml";
}

TEST(ConfigTest, ExampleLoadsWithTheDocumentedValues) {
  const Config c = load_config(example_path());
  EXPECT_EQ(c.source, example_path());
  EXPECT_EQ(c.sha256.size(), 64U);
  EXPECT_EQ(c.gateway.id, "zj-hz-g60-k1234-n");
  EXPECT_EQ(c.gateway.site.name, "G60 K1234 northbound");
  EXPECT_EQ(c.gateway.site.road, "G60");
  EXPECT_EQ(c.gateway.site.direction, "N");
  EXPECT_DOUBLE_EQ(c.gateway.site.lat, 30.274085);
  EXPECT_DOUBLE_EQ(c.gateway.site.lon, 120.155070);
  EXPECT_EQ(c.gateway.site.utc_offset, "+08:00");
  EXPECT_EQ(c.gateway.site.utc_offset_min, 480);
  EXPECT_EQ(c.gateway.site.area_code, "330106");
  EXPECT_EQ(c.gateway.site.road_code, "G60");
  EXPECT_EQ(c.gateway.site.km_marker, "K1234+500");
  EXPECT_EQ(c.gateway.site.km_m, 1234500);
  EXPECT_EQ(c.gateway.site.carriageway, "up");
  EXPECT_EQ(c.gateway.key_path, "/var/lib/checkpointd/gateway.key");
  EXPECT_EQ(c.store.path, "/var/lib/checkpointd/store.db");
  EXPECT_EQ(c.store.commit_max_batch, 512);
  EXPECT_EQ(c.mqtt.uri, "tcp://127.0.0.1:1883");
  EXPECT_EQ(c.mqtt.client_id, "zj-hz-g60-k1234-n");
  EXPECT_EQ(c.mqtt.topic_prefix, "checkpoint");
  EXPECT_EQ(c.mqtt.keepalive_s, 30);
  EXPECT_EQ(c.mqtt.session_expiry_s, 604800);
  EXPECT_EQ(c.mqtt.max_inflight, 64);
  EXPECT_EQ(c.mqtt.connect_timeout_s, 10);
  EXPECT_EQ(c.mqtt.reconnect_min_ms, 500);
  EXPECT_EQ(c.mqtt.reconnect_max_ms, 30000);
  ASSERT_EQ(c.devices.size(), 1U);
  const DeviceConfig& d = c.devices[0];
  EXPECT_EQ(d.id, "radar-1");
  EXPECT_EQ(d.kind, "radar");
  EXPECT_THAT(d.place, StartsWith(example_path() + ":"));
  const auto& radar = std::get<adapters::RadarConfig>(d.settings);
  EXPECT_EQ(radar.id, "radar-1");
  const auto& tcp = std::get<adapters::TcpLink>(radar.link);
  EXPECT_EQ(tcp.host, "192.0.2.10");
  EXPECT_EQ(tcp.port, 4001);
  ASSERT_EQ(radar.lanes.size(), 2U);
  EXPECT_DOUBLE_EQ(radar.lanes[0].x_max, 3.75);
  EXPECT_EQ(radar.calibration.certificate, "JJG527-2026-0412");
  EXPECT_EQ(radar.calibration.valid_until, "2027-06-30");
  EXPECT_EQ(radar.calibration.valid_until_ms, 1814400000000 - 8 * 3600 * 1000);  // 2027-07-01T00:00+08:00
  EXPECT_EQ(radar.calibration.radar_serial, "SR200-2026-00417");
  EXPECT_EQ(radar.identity,
            (adapters::DeviceIdentity{
                .model = "SR-200", .serial = "SR200-2026-00417", .firmware = "2.4.1", .truncated = false}));
  EXPECT_EQ(radar.track_timeout_ms, 400);
  EXPECT_EQ(radar.clock_window_s, 120);
  EXPECT_EQ(c.store.media_dir, "/var/lib/checkpointd/media");
  EXPECT_EQ(c.store.media_retention_days, 30);
  EXPECT_EQ(c.correlation.window_ms, 500);
  EXPECT_EQ(c.correlation.max_wait_ms, 2000);
  ASSERT_EQ(c.correlation.lanes.size(), 2U);
  EXPECT_EQ(c.correlation.lanes[0].lane, 1);
  EXPECT_EQ(c.correlation.lanes[0].limit_kmh, 120);
  EXPECT_EQ(c.correlation.lanes[0].by_vehicle_type,
            (std::vector<std::pair<std::string, int>>{{"truck", 100}, {"bus", 100}}));
  EXPECT_EQ(c.correlation.lanes[1].lane, 2);
  EXPECT_EQ(c.correlation.lanes[1].limit_kmh, 120);
  EXPECT_TRUE(c.correlation.lanes[1].by_vehicle_type.empty());
  EXPECT_EQ(c.validity.max_camera_clock_offset_ms, 1000);
  EXPECT_EQ(c.validity.clock_sync, "kernel");
  EXPECT_EQ(c.validity.min_pictures_speeding, 2);
  EXPECT_EQ(c.codes, default_codes()) << "the example shows the shipped default";
}

TEST(ConfigTest, DefaultsApplyAndClientIdFollowsGatewayId) {
  const Config c = parse_config(kBase, kGatewayFile);
  EXPECT_EQ(c.source, kGatewayFile);
  EXPECT_EQ(c.mqtt.client_id, "gw-1");
  EXPECT_EQ(c.mqtt.topic_prefix, "checkpoint");
  EXPECT_EQ(c.mqtt.session_expiry_s, 7 * 24 * 3600);
  EXPECT_EQ(c.store.commit_max_batch, 512);
  EXPECT_EQ(c.store.commit_linger_ms, 0);
  const auto& radar = std::get<adapters::RadarConfig>(c.devices[0].settings);
  EXPECT_EQ(radar.poll_interval_ms, 0);
  EXPECT_EQ(radar.reconnect_max_ms, 30000);
  EXPECT_EQ(c.devices[0].place, place_in(kGatewayFile, kBase, "id: radar-1"));
  EXPECT_EQ(c.store.media_dir, "/tmp/media");  // beside the store
  EXPECT_EQ(c.store.media_retention_days, 30);
  EXPECT_EQ(c.correlation.window_ms, 500);
  EXPECT_EQ(c.correlation.max_wait_ms, 2000);
  EXPECT_TRUE(c.correlation.lanes.empty());
  EXPECT_EQ(c.validity.max_camera_clock_offset_ms, 1000);
  EXPECT_EQ(c.validity.clock_sync, "kernel");
  EXPECT_EQ(c.validity.min_pictures_speeding, 2);
  EXPECT_EQ(
      parse_config(replaced(kBase, "path: /tmp/store.db", "path: store.db"), kGatewayFile).store.media_dir,
      "media");
}

const std::string kCorrelation = R"(correlation:
  window_ms: 300
  max_wait_ms: 4000
  lanes:
    - {lane: 1, limit_kmh: 100, vehicle_types: {truck: 80, bus: 90}}
    - lane: 2
      limit_kmh: 120
validity:
  max_camera_clock_offset_ms: 500
  clock_sync: assume
  min_pictures_speeding: 3
)";

TEST(ConfigTest, CorrelationValidityAndMediaSections) {
  const std::string text =
      replaced(kBase, "  path: /tmp/store.db\n",
               "  path: /tmp/store.db\n  media_dir: /srv/media\n  media_retention_days: 90\n"
               "  commit_linger_ms: 100\n") +
      kCorrelation;
  const Config c = parse_config(text, kGatewayFile);
  EXPECT_EQ(c.store.commit_linger_ms, 100);
  EXPECT_EQ(c.store.media_dir, "/srv/media");
  EXPECT_EQ(c.store.media_retention_days, 90);
  EXPECT_EQ(c.correlation.window_ms, 300);
  EXPECT_EQ(c.correlation.max_wait_ms, 4000);
  ASSERT_EQ(c.correlation.lanes.size(), 2U);
  EXPECT_EQ(c.correlation.lanes[0].lane, 1);
  EXPECT_EQ(c.correlation.lanes[0].limit_kmh, 100);
  EXPECT_EQ(c.correlation.lanes[0].by_vehicle_type,
            (std::vector<std::pair<std::string, int>>{{"truck", 80}, {"bus", 90}}));
  EXPECT_EQ(c.correlation.lanes[1].lane, 2);
  EXPECT_EQ(c.correlation.lanes[1].limit_kmh, 120);
  EXPECT_TRUE(c.correlation.lanes[1].by_vehicle_type.empty());
  EXPECT_EQ(c.validity.max_camera_clock_offset_ms, 500);
  EXPECT_EQ(c.validity.clock_sync, "assume");
  EXPECT_EQ(c.validity.min_pictures_speeding, 3);
}

TEST(ConfigTest, CorrelationAndValidityMistakesArePlaced) {
  {
    const std::string text = kBase + replaced(kCorrelation, "window_ms: 300", "window_ms: 0");
    const ConfigError e = error_in(text);
    EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "0\n  max_wait") +
                                         ": correlation.window_ms: must be between 10 and 5000, got 0");
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "clock_sync: assume", "clock_sync: ntp");
    const ConfigError e = error_in(text);
    EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "ntp") +
                                         ": validity.clock_sync: must be one of kernel, assume; got 'ntp'");
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "truck: 80", "truck: fast");
    const ConfigError e = error_in(text);
    EXPECT_EQ(std::string(e.what()),
              place_in(kGatewayFile, text, "fast") +
                  ": correlation.lanes[0].vehicle_types.truck: expected an integer, got 'fast'");
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "bus: 90", "bus: 400");
    EXPECT_EQ(error_in(text).key(), "correlation.lanes[0].vehicle_types.bus");
    EXPECT_EQ(error_in(text).detail(), "must be between 5 and 300, got 400");
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "bus: 90", "\"big bus\": 90");
    const ConfigError e = error_in(text);
    EXPECT_EQ(e.key(), "correlation.lanes[0].vehicle_types.big bus");
    EXPECT_THAT(e.detail(), StartsWith("vehicle type 'big bus' must be 1 to 32 letters"));
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "    - lane: 2", "    - lane: 1");
    const ConfigError e = error_in(text);
    EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "1\n      limit_kmh") +
                                         ": correlation.lanes[1].lane: duplicate lane 1 (first at " +
                                         place_in(kGatewayFile, text, "1, limit_kmh: 100") + ")");
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "  max_wait_ms: 4000\n", "  maxwait_ms: 4000\n");
    const ConfigError e = error_in(text);
    EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "maxwait_ms:") +
                                         ": correlation.maxwait_ms: unknown key 'maxwait_ms' (did you mean "
                                         "'max_wait_ms'?); allowed: window_ms, max_wait_ms, lanes");
  }
  {
    const std::string text = kBase + replaced(kCorrelation, "      limit_kmh: 120\n", "");
    const ConfigError e = error_in(text);
    EXPECT_EQ(e.key(), "correlation.lanes[1].limit_kmh");
    EXPECT_THAT(e.detail(), StartsWith("missing required key 'limit_kmh'"));
  }
  {
    const std::string text =
        kBase + replaced(kCorrelation, "min_pictures_speeding: 3", "min_pictures_speeding: 11");
    EXPECT_EQ(error_in(text).key(), "validity.min_pictures_speeding");
  }
  {
    const std::string text =
        replaced(kBase, "  path: /tmp/store.db\n", "  path: /tmp/store.db\n  media_retention_days: 0\n");
    const ConfigError e = error_in(text);
    EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "0\nmqtt") +
                                         ": store.media_retention_days: must be between 1 and 3650, got 0");
  }
  {
    const std::string text =
        replaced(kBase, "  path: /tmp/store.db\n", "  path: /tmp/store.db\n  commit_linger_ms: 1001\n");
    EXPECT_EQ(error_in(text).key(), "store.commit_linger_ms");
  }
}

// A camera entry pairing with `radar`; its password file is created 0600 so the camera parser accepts it.
std::string camera_entry(const std::string& radar) {
  const std::string secret = ::testing::TempDir() + "/config_test_cam.secret";
  {
    std::ofstream out(secret, std::ios::binary);
    out << "s3cret\n";
  }
  std::filesystem::permissions(secret,
                               std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return "  - id: cam-1\n    kind: camera\n    url: http://192.0.2.20\n    username: admin\n"
         "    password_file: " +
         secret + "\n    radar: " + radar + "\n";
}

TEST(ConfigTest, CameraPairsWithAConfiguredRadar) {
  const Config c = parse_config(kBase + camera_entry("radar-1"), kGatewayFile);
  ASSERT_EQ(c.devices.size(), 2U);
  EXPECT_EQ(std::get<adapters::CameraConfig>(c.devices[1].settings).radar, "radar-1");
}

TEST(ConfigTest, CameraNamingAnUnknownRadar) {
  const std::string text = kBase + camera_entry("radar-9");
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()),
            place_in(kGatewayFile, text, "radar-9") +
                ": devices[1].radar: must name a radar device configured under devices "
                "(radars: radar-1), got 'radar-9'");
  // Another camera is not a radar.
  const std::string cams =
      kBase + camera_entry("radar-1") + replaced(camera_entry("cam-1"), "id: cam-1", "id: cam-2");
  EXPECT_EQ(error_in(cams).key(), "devices[2].radar");
}

TEST(ConfigTest, Sha256IsOfTheBytes) {
  const Config a = parse_config(kBase, kGatewayFile);
  const Config b = parse_config(kBase + "# a comment changes the bytes\n", kGatewayFile);
  EXPECT_EQ(a.sha256.size(), 64U);
  EXPECT_NE(a.sha256, b.sha256);
  EXPECT_EQ(a.sha256, parse_config(kBase, "other-name").sha256);
}

// mqtts:// (normalised to ssl://) needs a tls section: see mqtt_tls_config_test.
TEST(ConfigTest, MqttUriAliasesAreNormalised) {
  EXPECT_EQ(parse_config(replaced(kBase, "tcp://127.0.0.1:1883", "mqtt://[::1]:1883"), kGatewayFile).mqtt.uri,
            "tcp://[::1]:1883");
}

TEST(ConfigTest, BadMqttUri) {
  const std::string text = replaced(kBase, "tcp://127.0.0.1:1883", "http://127.0.0.1");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "mqtt.uri");
  EXPECT_THAT(std::string(e.what()),
              StartsWith(place_in(kGatewayFile, text, "http") + ": mqtt.uri: must be tcp://host:port"));
}

TEST(ConfigTest, UnknownKeyWithSuggestion) {
  const std::string text = replaced(kBase, "    lanes:", "    pol_interval_ms: 100\n    lanes:");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "devices[0].pol_interval_ms");
  EXPECT_THAT(std::string(e.what()),
              StartsWith(place_in(kGatewayFile, text, "pol_interval_ms") +
                         ": devices[0].pol_interval_ms: unknown key 'pol_interval_ms' (did you mean "
                         "'poll_interval_ms'?); allowed: id, kind, tcp, serial, poll_interval_ms, lanes"));
}

TEST(ConfigTest, UnknownTopLevelSection) {
  const std::string text = kBase + "mqt:\n  uri: x\n";
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()),
            place_in(kGatewayFile, text, "mqt:") +
                ": mqt: unknown key 'mqt' (did you mean 'mqtt'?); allowed: gateway, store, "
                "mqtt, devices, correlation, validity, codes, links, metrics, control, custody");
}

TEST(ConfigTest, WrongType) {
  const std::string text = replaced(kBase, "port: 4001", "port: abc");
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()),
            place_in(kGatewayFile, text, "abc") + ": devices[0].tcp.port: expected an integer, got 'abc'");
}

TEST(ConfigTest, OutOfRange) {
  const std::string text = replaced(kBase, "lat: 30.0", "lat: 95.0");
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "95.0") +
                                       ": gateway.site.lat: must be between -90 and 90, got 95.0");
}

TEST(ConfigTest, BadDirectionListsTheCompassPoints) {
  const std::string text = replaced(kBase, "direction: N", "direction: north");
  EXPECT_EQ(error_in(text).detail(), "must be one of N, NE, E, SE, S, SW, W, NW; got 'north'");
}

TEST(ConfigTest, BadUtcOffset) {
  const std::string text = replaced(kBase, "\"+08:00\"", "\"+8\"");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "gateway.site.utc_offset");
  EXPECT_EQ(e.line(), 3);
}

TEST(ConfigTest, CaseFileSiteElementsAreOptionalAndChecked) {
  const Config plain = parse_config(kBase, kGatewayFile);
  EXPECT_EQ(plain.gateway.site.area_code, "");
  EXPECT_EQ(plain.gateway.site.km_m, -1);
  const std::string full = replaced(kBase, "utc_offset: \"+08:00\"}",
                                    "utc_offset: \"+08:00\", area_code: \"330106\", road_code: S2, "
                                    "km_marker: K7+050, carriageway: down}");
  const Config c = parse_config(full, kGatewayFile);
  EXPECT_EQ(c.gateway.site.area_code, "330106");
  EXPECT_EQ(c.gateway.site.road_code, "S2");
  EXPECT_EQ(c.gateway.site.km_marker, "K7+050");
  EXPECT_EQ(c.gateway.site.km_m, 7050);
  EXPECT_EQ(c.gateway.site.carriageway, "down");

  EXPECT_EQ(error_in(replaced(full, "K7+050", "K7.050")).detail(),
            "must be a kilometre marker K<km>+<metres>, e.g. K1234+500, got 'K7.050'");
  EXPECT_EQ(error_in(replaced(full, "\"330106\"", "\"3301\"")).key(), "gateway.site.area_code");
  EXPECT_EQ(error_in(replaced(full, "road_code: S2", "road_code: s2")).key(), "gateway.site.road_code");
  EXPECT_EQ(error_in(replaced(full, "carriageway: down", "carriageway: north")).detail(),
            "must be one of up, down; got 'north'");
}

TEST(ConfigTest, NationalCodeTablesDefaultAndReplace) {
  EXPECT_EQ(parse_config(kBase, kGatewayFile).codes, default_codes());
  const std::string text = kBase + R"(codes:
  plate_types:
    - {plate_type: 92TypeCivil, plate_color: blue, code: "02", name: 小型汽车号牌}
    - {plate_type: newEnergy, code: "52", name: 小型新能源汽车号牌}
)";
  const Config c = parse_config(text, kGatewayFile);
  ASSERT_EQ(c.codes.plate_types.size(), 2U);
  EXPECT_EQ(c.codes.plate_types[1], (PlateTypeCode{"newEnergy", "", "52", "小型新能源汽车号牌"}));
  EXPECT_EQ(c.codes.vehicle_types, default_codes().vehicle_types) << "a list not given keeps its default";
  EXPECT_EQ(find_plate_type(c.codes, "newEnergy", "green")->code, "52");
  EXPECT_EQ(find_plate_type(c.codes, "92TypeCivil", "yellow"), nullptr);

  const ConfigError bad_code = error_in(replaced(text, "code: \"52\"", "code: \"5\""));
  EXPECT_EQ(bad_code.key(), "codes.plate_types[1].code");
  const ConfigError twice = error_in(replaced(text, "newEnergy", "92TypeCivil, plate_color: blue"));
  EXPECT_THAT(twice.detail(), HasSubstr("a second entry for plate_type 92TypeCivil and plate_color blue"));
  const ConfigError not_utf8 = error_in(replaced(text, "小型新能源汽车号牌", "\xff"));
  EXPECT_THAT(std::string(not_utf8.what()), HasSubstr("UTF-8")) << "the file itself is refused";
}

TEST(ConfigTest, MissingRequiredKey) {
  const std::string text = replaced(kBase, "  path: /tmp/store.db\n", "  commit_max_batch: 10\n");
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "commit_max_batch") +
                                       ": store.path: missing required key 'path' (a non-empty file path)");
}

TEST(ConfigTest, DuplicateKey) {
  const std::string text =
      replaced(kBase, "  key: /tmp/gw.key\n", "  key: /tmp/gw.key\n  key: /tmp/other.key\n");
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "key: /tmp/other") +
                                       ": gateway.key: duplicate key 'key' (first at " +
                                       place_in(kGatewayFile, text, "key: /tmp/gw.key") + ")");
}

TEST(ConfigTest, DuplicateDeviceIdNamesBothPlaces) {
  const std::string second = R"(  - id: radar-1
    kind: radar
    serial: {device: /dev/ttyUSB0}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-2, valid_until: 2027-06-30}
)";
  const std::string text = kBase + second;
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()), place_in(kGatewayFile, text, "radar-1", 1) +
                                       ": devices[1].id: duplicate device id 'radar-1' (first at " +
                                       place_in(kGatewayFile, text, "radar-1", 0) + ")");
}

TEST(ConfigTest, OverlappingLanes) {
  const std::string text =
      replaced(kBase, "[{lane: 1, x_min: 0.0, x_max: 3.75}]",
               "[{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.5, x_max: 7.0}]");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "devices[0].lanes[1].x_min");
  EXPECT_THAT(std::string(e.what()),
              StartsWith(place_in(kGatewayFile, text, "3.5") + ": devices[0].lanes[1].x_min: lane 2 "
                                                               "[3.5, 7.0) overlaps lane 1 [0.0, 3.75)"));
}

TEST(ConfigTest, BadDate) {
  const std::string text = replaced(kBase, "2027-06-30", "2027-06-31");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "devices[0].calibration.valid_until");
  EXPECT_THAT(std::string(e.what()), StartsWith(place_in(kGatewayFile, text, "2027-06-31") + ": "));
}

TEST(ConfigTest, BothTcpAndSerial) {
  const std::string text =
      replaced(kBase, "    lanes:", "    serial: {device: /dev/ttyUSB0, baud: 9600}\n    lanes:");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "devices[0].serial");
  EXPECT_THAT(std::string(e.what()),
              StartsWith(place_in(kGatewayFile, text, "{device") + ": devices[0].serial: "));
}

TEST(ConfigTest, UnknownDeviceKind) {
  const std::string text = replaced(kBase, "kind: radar", "kind: lidar");
  EXPECT_EQ(error_in(text).detail(), "must be one of radar, camera, recorder_dock; got 'lidar'");
}

TEST(ConfigTest, NoDevices) {
  const std::string text = kBase.substr(0, kBase.find("devices:")) + "devices: []\n";
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.key(), "devices");
  EXPECT_EQ(e.detail(), "must have at least 1 entry, got 0");
}

TEST(ConfigTest, BadGatewayAndClientIdsAndTopicPrefix) {
  EXPECT_EQ(error_in(replaced(kBase, "id: gw-1", "id: GW_1")).key(), "gateway.id");
  EXPECT_EQ(error_in(replaced(kBase, "  uri: tcp://127.0.0.1:1883\n",
                              "  uri: tcp://127.0.0.1:1883\n  client_id: a/b\n"))
                .key(),
            "mqtt.client_id");
  for (const std::string bad : {"a/+/b", "a/#", "/a", "a/", "a//b"}) {
    const std::string text = replaced(kBase, "  uri: tcp://127.0.0.1:1883\n",
                                      "  uri: tcp://127.0.0.1:1883\n  topic_prefix: \"" + bad + "\"\n");
    EXPECT_EQ(error_in(text).key(), "mqtt.topic_prefix") << bad;
  }
}

TEST(ConfigTest, ReconnectMinAboveMax) {
  const std::string text =
      replaced(kBase, "  uri: tcp://127.0.0.1:1883\n",
               "  uri: tcp://127.0.0.1:1883\n  reconnect_min_ms: 5000\n  reconnect_max_ms: 1000\n");
  const ConfigError e = error_in(text);
  EXPECT_EQ(std::string(e.what()),
            place_in(kGatewayFile, text, "1000\n") +
                ": mqtt.reconnect_max_ms: must be at least reconnect_min_ms (5000), got 1000");
}

TEST(ConfigTest, YamlSyntaxError) {
  const std::string text =
      replaced(kBase, "[{lane: 1, x_min: 0.0, x_max: 3.75}]", "[{lane: 1, x_min: 0.0, x_max: 3.75}");
  const ConfigError e = error_in(text);
  EXPECT_EQ(e.file(), kGatewayFile);
  EXPECT_GE(e.line(), 13);
  EXPECT_GT(e.column(), 0);
  EXPECT_THAT(std::string(e.what()), StartsWith("gw.yaml:" + std::to_string(e.line()) + ":"));
  EXPECT_THAT(e.detail(), StartsWith("invalid YAML: "));
}

TEST(ConfigTest, IndentationErrorIsASyntaxError) {
  const ConfigError e = error_in("gateway:\n  id: a\n   site: b\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_THAT(e.detail(), StartsWith("invalid YAML: "));
}

TEST(ConfigTest, TwoDocumentsAreAnError) {
  EXPECT_THAT(error_in(kBase + "---\na: 1\n").detail(), HasSubstr("expected one YAML document"));
}

TEST(ConfigTest, MissingFileNamesThePathAndTheReason) {
  const std::string path = ::testing::TempDir() + "/no-such-dir/checkpointd.yaml";
  const ConfigError e = error_of([&] { load_config(path); });
  EXPECT_EQ(std::string(e.what()), path + ": cannot open: No such file or directory");
  EXPECT_EQ(e.line(), 0);
}

TEST(ConfigTest, DirectoryIsUnreadable) {
  const std::string path = ::testing::TempDir();
  const ConfigError e = error_of([&] { load_config(path); });
  EXPECT_THAT(std::string(e.what()), StartsWith(path + ": cannot read: Is a directory"));
}

TEST(ConfigTest, LoadsAFileAndReportsItsPath) {
  const std::string path = ::testing::TempDir() + "/config_test_bad.yaml";
  {
    std::ofstream out(path, std::ios::binary);
    out << replaced(kBase, "port: 4001", "port: 99999");
  }
  const ConfigError e = error_of([&] { load_config(path); });
  std::filesystem::remove(path);
  EXPECT_EQ(e.file(), path);
  EXPECT_EQ(e.key(), "devices[0].tcp.port");
  EXPECT_EQ(e.line(), 12);
}

TEST(ConfigTest, MetricsAndControlDefaultsAndChecks) {
  const Config c = parse_config(kBase, kGatewayFile);
  EXPECT_TRUE(c.metrics.enabled);
  EXPECT_EQ(c.metrics.host, "127.0.0.1");
  EXPECT_EQ(c.metrics.port, 9464);
  EXPECT_EQ(c.control.socket, "/tmp/control.sock") << "beside the store by default";
  const Config d = parse_config(
      kBase + "metrics: {host: \"::1\", port: 0}\ncontrol: {socket: /run/cpd/ctl.sock}\n", kGatewayFile);
  EXPECT_EQ(d.metrics.host, "::1");
  EXPECT_EQ(d.metrics.port, 0);
  EXPECT_EQ(d.control.socket, "/run/cpd/ctl.sock");
  EXPECT_NE(std::string(error_in(kBase + "metrics: {host: localhost}\n").what()).find("numeric IPv4 or IPv6"),
            std::string::npos);
  EXPECT_NE(std::string(error_in(kBase + "metrics: {port: 70000}\n").what()).find("metrics.port"),
            std::string::npos);
  EXPECT_NE(std::string(error_in(kBase + "control: {socket: /" + std::string(120, 'x') + "}\n").what())
                .find("at most 107 characters"),
            std::string::npos);
}

// The recordings' token bucket holds one second's worth of rate_kib_s: a segment above it would make every
// burst a whole segment, longer than the documented second. Refused at the key, naming both numbers.
TEST(ConfigTest, ARecordingSegmentAboveASecondOfTheRateIsRefused) {
  const auto dir = std::filesystem::temp_directory_path() / ("cpd-config-seg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string pem = (dir / "central.pub.pem").string();
  std::ofstream(pem) << Ed25519PrivateKey::generate().public_key().pem();
  const auto custody = [&](const std::string& recordings) {
    return kBase + "custody:\n  central_keys:\n    - pem: " + pem + "\n  recordings: " + recordings + "\n";
  };
  EXPECT_NO_THROW(parse_config(custody("{rate_kib_s: 256, segment_kib: 256}"), kGatewayFile));
  // Only the rate lowered (a config from before the rule): the segment follows it down, the file loads.
  EXPECT_EQ(parse_config(custody("{rate_kib_s: 256}"), kGatewayFile).custody.recordings_segment_kib, 256);
  const ConfigError e = error_in(custody("{rate_kib_s: 256, segment_kib: 1024}"));
  EXPECT_EQ(e.key(), "custody.recordings.segment_kib");
  EXPECT_EQ(e.detail(), "a segment (1024 KiB) may not exceed a second's worth of rate_kib_s (256)");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cpd::config
