// The camera's ISAPI XML documents (EventNotificationAlert, DeviceInfo, Time) and its time formats,
// read by element local name so either firmware namespace works. Pure: no I/O, no clock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/common/device_time.h"
#include "adapters/events.h"
#include "daemon/core/time.h"

namespace cpd::adapters {

struct IsapiPictureInfo {
  std::string file_name;
  std::string type;      // detectionPicture | licensePlatePicture | ...
  std::string abs_time;  // yyyyMMddHHmmssSSS, empty when absent
};

struct IsapiAlert {
  enum class Kind { kAnpr, kHeartbeat, kOther };
  Kind kind = Kind::kOther;
  std::string event_type;
  std::string event_state;
  std::string date_time;  // as sent
  IsoTime time;           // parsed date_time (ANPR alerts only are required to have one)
  std::string uuid;
  int active_post_count = 0;
  int lane = 0;
  std::string direction;
  std::string plate;
  std::string plate_color;
  std::string plate_type;
  std::string vehicle_type;
  std::string country;
  int confidence = 0;
  std::vector<IsapiPictureInfo> pictures;
  // The document holds bytes that are not UTF-8 (a camera sending GBK, say). The text members keep the
  // exact bytes; records escape them and carry the bytes in base64 (docs/records.md), the adapter counts it.
  bool text_not_utf8 = false;
};

// The longest plate, country, direction, plate type, plate colour or vehicle type an alert may carry. A plate
// is about ten characters; 8 kB of "plate" is a camera fault, not a read, and would travel into every record
// and index downstream (central's B-tree entries hold ~2.7 kB).
inline constexpr std::size_t kMaxAnprTextBytes = 64;

// Why an alert part was discarded; empty `error` means `alert` is set.
struct AlertParseResult {
  std::optional<IsapiAlert> alert;
  // "malformed_xml", "not_an_alert", "bad_date_time", "missing_uuid", "bad_field", "field_too_long"
  // (a text member over kMaxAnprTextBytes)
  std::string error;
};
AlertParseResult parse_alert(std::string_view xml);

struct IsapiDeviceInfo {
  std::string device_name;
  std::string device_id;
  std::string model;
  std::string serial_number;
  std::string firmware_version;
  // Shown in the status (JSON, UTF-8 only): text that is not UTF-8 is escaped (escape_invalid_utf8) and
  // this is set.
  bool text_not_utf8 = false;
};
std::optional<IsapiDeviceInfo> parse_device_info(std::string_view xml);
// The identity a record carries (model, serialNumber, firmwareVersion), each cut to
// DeviceIdentity::kMaxIdentityBytes at a character boundary.
DeviceIdentity identity_of(const IsapiDeviceInfo& info);

struct IsapiTime {
  std::string time_mode;   // NTP | manual; escaped if not UTF-8 (shown in the status)
  std::string local_time;  // as sent
  IsoTime time;
  bool text_not_utf8 = false;
};
std::optional<IsapiTime> parse_time(std::string_view xml);

}  // namespace cpd::adapters
