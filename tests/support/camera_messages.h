// Builders for the ANPR camera's ISAPI documents (alert, heartbeat, DeviceInfo, Time), multipart parts and
// HTTP auth headers. Shared by unit tests, fuzz seeds and the camera simulator; independent of the adapter.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cpd::test {

inline constexpr std::string_view kIsapiNamespace = "http://www.isapi.org/ver20/XMLSchema";
inline constexpr std::string_view kHikvisionNamespace = "http://www.hikvision.com/ver20/XMLSchema";

// ---- time ----

// "+08:00" / "-05:30" / "Z" -> minutes east of UTC; nullopt when malformed.
std::optional<int> parse_utc_offset(std::string_view text);
// ISO 8601 local time with offset for a UTC instant: "2026-11-27T11:38:54.123+08:00" (with_ms) or
// "2026-11-27T11:38:54+08:00".
std::string camera_time(std::int64_t unix_ms, int utc_offset_min, bool with_ms = true);
// The compact picture timestamp: "20261127113854123" (local time, milliseconds).
std::string camera_abs_time(std::int64_t unix_ms, int utc_offset_min);

// ---- XML documents ----

struct PictureInfo {
  std::string file_name;  // e.g. detectionPicture.jpg
  std::string type;       // detectionPicture | licensePlatePicture
  std::string abs_time;   // camera_abs_time(...)
};

struct AnprAlert {
  std::string xml_namespace = std::string(kIsapiNamespace);
  std::string ip_address = "192.0.2.64";
  int port_no = 80;
  std::string mac_address = "44:19:b6:00:00:01";
  int channel_id = 1;
  std::string date_time;  // camera_time(...)
  std::uint64_t active_post_count = 1;
  std::string license_plate = "unknown";
  int line = 1;
  std::string direction = "forward";
  int confidence_level = 97;
  std::string plate_type = "92TypeCivil";
  std::string plate_color = "blue";
  std::string vehicle_type = "vehicle";
  std::vector<PictureInfo> pictures;
  std::string uuid;
  // The XML declaration's encoding. The text members are written as given (bytes): a camera set to GBK
  // sends its plates in GBK, whatever the spec says.
  std::string xml_encoding = "UTF-8";
};

struct Heartbeat {
  std::string xml_namespace = std::string(kIsapiNamespace);
  std::string ip_address = "192.0.2.64";
  int port_no = 80;
  std::string mac_address = "44:19:b6:00:00:01";
  int channel_id = 1;
  std::string date_time;
  std::uint64_t active_post_count = 0;
};

struct DeviceInfo {
  std::string xml_namespace = std::string(kIsapiNamespace);
  std::string device_name = "checkpoint ANPR camera";
  std::string device_id = "c0ffee00-0000-4000-8000-000000000001";
  std::string model = "iDS-TCM403-SIM";
  std::string serial_number = "SIM0000000001";
  std::string mac_address = "44:19:b6:00:00:01";
  std::string firmware_version = "V5.5.0";
  std::string firmware_released_date = "build 260101";
  std::string xml_encoding = "UTF-8";
};

struct TimeStatus {
  std::string xml_namespace = std::string(kIsapiNamespace);
  std::string time_mode = "NTP";  // NTP | manual
  std::string local_time;         // camera_time(..., with_ms = false)
  std::string time_zone = "CST-8:00:00";
};

std::string xml_escape(std::string_view text);
std::string anpr_alert_xml(const AnprAlert& a);
std::string heartbeat_xml(const Heartbeat& h);
std::string device_info_xml(const DeviceInfo& d);
std::string time_xml(const TimeStatus& t);

// ---- multipart/mixed parts ----

// "--<b>\r\nContent-Type: ...\r\nContent-Length: n\r\n[Content-Disposition: ...\r\n]\r\n<body>\r\n"
std::string multipart_part(std::string_view boundary, std::string_view content_type, std::string_view body,
                           std::string_view file_name = {});
std::string xml_part(std::string_view boundary, std::string_view xml);
std::string jpeg_part(std::string_view boundary, std::string_view file_name, std::string_view jpeg);
// One HTTP/1.1 chunk: "<hex>\r\n<data>\r\n".
std::string http_chunk(std::string_view data);

// ---- HTTP authentication ----

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);
std::string md5_hex(std::string_view bytes);

// A parsed `Digest` challenge or Authorization header: lower-case parameter names, unquoted values.
// nullopt when the header is not of that scheme or its parameter list is malformed.
std::optional<std::map<std::string, std::string>> parse_auth_params(std::string_view header,
                                                                    std::string_view scheme);

// RFC 7616 response for qop=auth, algorithm MD5:
// MD5(MD5(user:realm:pass):nonce:nc:cnonce:auth:MD5(method:uri)).
std::string digest_response(std::string_view username, std::string_view realm, std::string_view password,
                            std::string_view method, std::string_view uri, std::string_view nonce,
                            std::string_view nc, std::string_view cnonce, std::string_view qop = "auth");
// A complete `Authorization: Digest ...` value answering `challenge` (the WWW-Authenticate value).
std::optional<std::string> digest_authorization(std::string_view challenge, std::string_view method,
                                                std::string_view uri, std::string_view username,
                                                std::string_view password, std::uint32_t nc = 1,
                                                std::string_view cnonce = "0a4f113b");
std::string basic_authorization(std::string_view username, std::string_view password);

}  // namespace cpd::test
