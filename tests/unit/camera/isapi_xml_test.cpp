// Unit tests of the ISAPI XML readers and time formats: both namespaces, prefixes, unknown elements,
// heartbeats, malformed and truncated documents.
#include "adapters/camera/isapi_xml.h"

#include <gtest/gtest.h>

#include <string>

namespace cpd::adapters {
namespace {

// 2026-11-27T03:38:54.123Z
constexpr UnixMs kCaptureMs = 1795750734123;

std::string anpr_alert(const std::string& ns) {
  return R"(<?xml version="1.0" encoding="UTF-8"?>
<EventNotificationAlert version="2.0" xmlns=")" +
         ns + R"(">
  <ipAddress>192.0.2.64</ipAddress>
  <portNo>80</portNo>
  <protocol>HTTP</protocol>
  <macAddress>44:19:b6:00:00:01</macAddress>
  <channelID>1</channelID>
  <dateTime>2026-11-27T11:38:54.123+08:00</dateTime>
  <activePostCount>1</activePostCount>
  <eventType>ANPR</eventType>
  <eventState>active</eventState>
  <eventDescription>ANPR</eventDescription>
  <ANPR>
    <country>CHN</country>
    <licensePlate>浙A12345</licensePlate>
    <line>2</line>
    <direction>forward</direction>
    <confidenceLevel>97</confidenceLevel>
    <plateType>92TypeCivil</plateType>
    <plateColor>blue</plateColor>
    <vehicleType>vehicle</vehicleType>
    <futureElement><nested>1</nested></futureElement>
    <pictureInfoList>
      <pictureInfo>
        <fileName>detectionPicture.jpg</fileName>
        <type>detectionPicture</type>
        <absTime>20261127113854123</absTime>
      </pictureInfo>
      <pictureInfo>
        <fileName>licensePlatePicture.jpg</fileName>
        <type>licensePlatePicture</type>
        <absTime>20261127113854123</absTime>
      </pictureInfo>
    </pictureInfoList>
  </ANPR>
  <UUID>1f0c7a52-8f7e-4c1e-9d3a-0b6c2f9e4a11</UUID>
  <picNum>2</picNum>
</EventNotificationAlert>
)";
}

void expect_spec_example(const AlertParseResult& r) {
  ASSERT_TRUE(r.alert) << r.error;
  const IsapiAlert& a = *r.alert;
  EXPECT_EQ(a.kind, IsapiAlert::Kind::kAnpr);
  EXPECT_EQ(a.date_time, "2026-11-27T11:38:54.123+08:00");
  EXPECT_EQ(a.time.unix_ms, kCaptureMs);
  EXPECT_EQ(a.time.utc_offset_min, 480);
  EXPECT_EQ(a.uuid, "1f0c7a52-8f7e-4c1e-9d3a-0b6c2f9e4a11");
  EXPECT_EQ(a.active_post_count, 1);
  EXPECT_EQ(a.lane, 2);
  EXPECT_EQ(a.direction, "forward");
  EXPECT_EQ(a.plate, "浙A12345");
  EXPECT_EQ(a.plate_color, "blue");
  EXPECT_EQ(a.plate_type, "92TypeCivil");
  EXPECT_EQ(a.vehicle_type, "vehicle");
  EXPECT_EQ(a.country, "CHN");
  EXPECT_EQ(a.confidence, 97);
  ASSERT_EQ(a.pictures.size(), 2U);
  EXPECT_EQ(a.pictures[0].file_name, "detectionPicture.jpg");
  EXPECT_EQ(a.pictures[0].type, "detectionPicture");
  EXPECT_EQ(a.pictures[1].file_name, "licensePlatePicture.jpg");
  EXPECT_EQ(a.pictures[1].abs_time, "20261127113854123");
}

TEST(IsapiAlertTest, IsapiNamespace) {
  expect_spec_example(parse_alert(anpr_alert("http://www.isapi.org/ver20/XMLSchema")));
}

TEST(IsapiAlertTest, HikvisionNamespace) {
  expect_spec_example(parse_alert(anpr_alert("http://www.hikvision.com/ver20/XMLSchema")));
}

TEST(IsapiAlertTest, PrefixedElementsAreReadByLocalName) {
  std::string xml = anpr_alert("urn:x");
  // Turn every element into hik:element with the namespace bound to the prefix.
  std::string out;
  for (std::size_t i = 0; i < xml.size(); ++i) {
    out += xml[i];
    if (xml[i] == '<' && i + 1 < xml.size() && xml[i + 1] != '?') {
      if (xml[i + 1] == '/') {
        out += '/';
        ++i;
      }
      out += "hik:";
    }
  }
  const auto pos = out.find("xmlns=");
  out.replace(pos, 6, "xmlns:hik=");
  expect_spec_example(parse_alert(out));
}

TEST(IsapiAlertTest, Heartbeat) {
  const auto r = parse_alert(
      R"(<EventNotificationAlert version="2.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">)"
      "<ipAddress>192.0.2.64</ipAddress><dateTime>2026-11-27T11:38:54+08:00</dateTime>"
      "<activePostCount>0</activePostCount><eventType>videoloss</eventType><eventState>inactive</eventState>"
      "<eventDescription>videoloss alarm</eventDescription></EventNotificationAlert>");
  ASSERT_TRUE(r.alert) << r.error;
  EXPECT_EQ(r.alert->kind, IsapiAlert::Kind::kHeartbeat);
}

TEST(IsapiAlertTest, OtherEventsAreNeitherAnprNorHeartbeat) {
  const auto r = parse_alert(
      "<EventNotificationAlert><eventType>videoloss</eventType><eventState>active</eventState>"
      "</EventNotificationAlert>");
  ASSERT_TRUE(r.alert);
  EXPECT_EQ(r.alert->kind, IsapiAlert::Kind::kOther);
}

TEST(IsapiAlertTest, MalformedAndTruncatedXmlAreErrors) {
  const std::string full = anpr_alert("http://www.isapi.org/ver20/XMLSchema");
  EXPECT_EQ(parse_alert(full.substr(0, full.size() / 2)).error, "malformed_xml");
  EXPECT_EQ(parse_alert("").error, "malformed_xml");
  EXPECT_EQ(parse_alert("<a><b></a>").error, "malformed_xml");
  EXPECT_EQ(parse_alert("\xff\xd8\xff\xe0 jpeg").error, "malformed_xml");
  EXPECT_EQ(parse_alert("<DeviceInfo/>").error, "not_an_alert");
}

TEST(IsapiAlertTest, AnprNeedsATimeAndAUuid) {
  std::string xml = anpr_alert("http://www.isapi.org/ver20/XMLSchema");
  std::string no_offset = xml;
  no_offset.replace(no_offset.find(".123+08:00"), 10, ".123");
  EXPECT_EQ(parse_alert(no_offset).error, "bad_date_time");
  std::string no_uuid = xml;
  no_uuid.replace(no_uuid.find("<UUID>"), 6, "<uuidX>");
  no_uuid.replace(no_uuid.find("</UUID>"), 7, "</uuidX>");
  EXPECT_EQ(parse_alert(no_uuid).error, "missing_uuid");
  std::string bad_conf = xml;
  bad_conf.replace(bad_conf.find(">97<"), 4, ">high<");
  EXPECT_EQ(parse_alert(bad_conf).error, "bad_field");
}

// 8 kB of "plate" is a camera fault: refused and counted, never carried into a record.
TEST(IsapiAlertTest, AnOverlongPlateOrOtherTextIsRefused) {
  const std::string xml = anpr_alert("http://www.isapi.org/ver20/XMLSchema");
  const std::size_t at = xml.find("<licensePlate>") + 14;
  const std::size_t len = xml.find("</licensePlate>") - at;
  std::string longest = xml;
  longest.replace(at, len, std::string(kMaxAnprTextBytes, 'A'));
  ASSERT_TRUE(parse_alert(longest).alert) << parse_alert(longest).error;
  std::string longer = xml;
  longer.replace(at, len, std::string(8000, 'A'));
  EXPECT_EQ(parse_alert(longer).error, "field_too_long");
  std::string colour = xml;
  const std::size_t c = colour.find("<plateColor>") + 12;
  colour.replace(c, colour.find("</plateColor>") - c, std::string(kMaxAnprTextBytes + 1, 'b'));
  EXPECT_EQ(parse_alert(colour).error, "field_too_long");
}

TEST(IsoTimeTest, Forms) {
  EXPECT_EQ(parse_iso8601("2026-11-27T11:38:54+08:00")->unix_ms, kCaptureMs - 123);
  EXPECT_FALSE(parse_iso8601("2026-11-27T11:38:54+08:00")->has_fraction);
  EXPECT_EQ(parse_iso8601("2026-11-27T03:38:54.123Z")->unix_ms, kCaptureMs);
  EXPECT_EQ(parse_iso8601("2026-11-26T22:38:54.1-05:00")->unix_ms, kCaptureMs - 23);
  EXPECT_EQ(parse_iso8601("2026-11-27T03:38:54.123456789Z")->unix_ms, kCaptureMs);
  EXPECT_EQ(parse_iso8601("2026-11-27T11:38:54.123+05:30")->utc_offset_min, 330);
  EXPECT_EQ(parse_iso8601("1970-01-01T00:00:00Z")->unix_ms, 0);
  EXPECT_EQ(parse_iso8601("2028-02-29T00:00:00Z")->unix_ms, 1835395200000);
}

TEST(IsoTimeTest, Rejects) {
  for (const char* t :
       {"", "2026-11-27", "2026-11-27T11:38:54", "2026-11-27 11:38:54+08:00", "2026-13-27T11:38:54+08:00",
        "2026-02-29T11:38:54Z", "2026-11-27T24:00:00Z", "2026-11-27T11:38:54.+08:00",
        "2026-11-27T11:38:54+0800", "2026-11-27T11:38:54+08:00x", "20x6-11-27T11:38:54Z"}) {
    EXPECT_EQ(parse_iso8601(t), std::nullopt) << t;
  }
}

TEST(AbsTimeTest, LocalTimeInTheAlertOffset) {
  EXPECT_EQ(parse_abs_time("20261127113854123", 480), kCaptureMs);
  EXPECT_EQ(parse_abs_time("20261127033854123", 0), kCaptureMs);
  EXPECT_EQ(parse_abs_time("2026112711385412", 480), std::nullopt);
  EXPECT_EQ(parse_abs_time("2026112711385412x", 480), std::nullopt);
  EXPECT_EQ(parse_abs_time("20261327113854123", 480), std::nullopt);
}

TEST(DeviceInfoTest, ReadsTheFields) {
  const auto info = parse_device_info(
      R"(<?xml version="1.0" encoding="UTF-8"?><DeviceInfo version="2.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">)"
      "<deviceName>gate 1</deviceName><deviceID>c0ffee</deviceID><model>iDS-TCM403</model>"
      "<serialNumber>SN1</serialNumber><macAddress>x</macAddress><firmwareVersion>V5.5.0</firmwareVersion>"
      "</DeviceInfo>");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->device_name, "gate 1");
  EXPECT_EQ(info->device_id, "c0ffee");
  EXPECT_EQ(info->model, "iDS-TCM403");
  EXPECT_EQ(info->serial_number, "SN1");
  EXPECT_EQ(info->firmware_version, "V5.5.0");
  EXPECT_EQ(parse_device_info("<DeviceInfo><deviceName>x</deviceName>"), std::nullopt);
  EXPECT_EQ(parse_device_info("<Time/>"), std::nullopt);
}

// What a record says the camera is: the three fields, each bounded, never split inside a character.
TEST(DeviceInfoTest, TheRecordsIdentityIsBounded) {
  IsapiDeviceInfo info;
  info.model = "iDS-TCM403";
  info.serial_number = "SN1";
  info.firmware_version = "V5.5.0";
  info.device_name = std::string(1000, 'n');  // not part of the identity
  EXPECT_EQ(
      identity_of(info),
      (DeviceIdentity{.model = "iDS-TCM403", .serial = "SN1", .firmware = "V5.5.0", .truncated = false}));

  info.serial_number = std::string(127, 'x') + "浙" + std::string(100000, 'y');  // 浙 spans bytes 128-130
  const DeviceIdentity cut = identity_of(info);
  EXPECT_TRUE(cut.truncated);
  EXPECT_EQ(cut.serial, std::string(127, 'x'));
  EXPECT_EQ(cut.model, "iDS-TCM403");
  info.serial_number = std::string(128, 'x');
  EXPECT_FALSE(identity_of(info).truncated);
  EXPECT_EQ(identity_of(info).serial.size(), 128U);
}

TEST(TimeDocumentTest, ReadsLocalTime) {
  const auto t = parse_time(
      R"(<Time version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><timeMode>NTP</timeMode>)"
      "<localTime>2026-11-27T11:38:54+08:00</localTime><timeZone>CST-8:00:00</timeZone></Time>");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->time_mode, "NTP");
  EXPECT_EQ(t->local_time, "2026-11-27T11:38:54+08:00");
  EXPECT_EQ(t->time.unix_ms, kCaptureMs - 123);
  EXPECT_EQ(parse_time("<Time><localTime>yesterday</localTime></Time>"), std::nullopt);
}

// A camera set to GBK: the alert is read as usual, its text keeps the exact bytes (the record escapes them
// and carries them in base64) and the alert says so, for the adapter's count.
TEST(IsapiAlertTest, TextThatIsNotUtf8IsKeptExactAndFlagged) {
  std::string xml = anpr_alert("http://www.isapi.org/ver20/XMLSchema");
  xml.replace(xml.find("浙A12345"), std::string("浙A12345").size(),
              "\xd5\xe3"
              "A12345");
  xml.replace(xml.find("encoding=\"UTF-8\""), 16, "encoding=\"GBK\"");
  const auto r = parse_alert(xml);
  ASSERT_TRUE(r.alert) << r.error;
  EXPECT_EQ(r.alert->plate,
            "\xd5\xe3"
            "A12345");
  EXPECT_TRUE(r.alert->text_not_utf8);
  EXPECT_EQ(r.alert->lane, 2);
  EXPECT_EQ(r.alert->pictures.size(), 2U);
  EXPECT_FALSE(parse_alert(anpr_alert("http://www.isapi.org/ver20/XMLSchema")).alert->text_not_utf8);
}

// The device name and time mode go into the status (JSON): escaped there, never refused.
TEST(DeviceInfoTest, TextThatIsNotUtf8IsEscapedForTheStatus) {
  const auto info = parse_device_info(
      "<?xml version=\"1.0\" encoding=\"GBK\"?><DeviceInfo><deviceName>\xbf\xa8\xbf\xda</deviceName>"
      "<deviceID>c0ffee</deviceID><model>a\\b</model></DeviceInfo>");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->device_name, "\\xbf\\xa8\\xbf\\xda");
  EXPECT_EQ(info->device_id, "c0ffee");
  EXPECT_EQ(info->model, "a\\b") << "UTF-8 text is unchanged";
  EXPECT_TRUE(info->text_not_utf8);
  const auto t = parse_time(
      "<Time><timeMode>\xca\xd6</timeMode><localTime>2026-11-27T11:38:54+08:00</localTime></Time>");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->time_mode, "\\xca\\xd6");
  EXPECT_TRUE(t->text_not_utf8);
}

}  // namespace
}  // namespace cpd::adapters
