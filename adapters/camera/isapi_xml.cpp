// ISAPI XML with pugixml: elements matched by local name (namespace prefixes and URIs ignored), unknown
// elements skipped; time text parsed by hand so malformed values are refused, not guessed.
#include "adapters/camera/isapi_xml.h"

#include <charconv>
#include <cstring>
#include <pugixml.hpp>

#include "daemon/core/encoding.h"

namespace cpd::adapters {
namespace {

std::string_view local_name(const pugi::xml_node& n) {
  std::string_view name = n.name();
  const std::size_t colon = name.rfind(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

pugi::xml_node child(const pugi::xml_node& parent, std::string_view name) {
  for (pugi::xml_node c = parent.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element && local_name(c) == name) {
      return c;
    }
  }
  return {};
}

std::string trimmed(std::string_view s) {
  while (!s.empty() && std::strchr(" \t\r\n", s.front()) != nullptr) {
    s.remove_prefix(1);
  }
  while (!s.empty() && std::strchr(" \t\r\n", s.back()) != nullptr) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

std::string text_of(const pugi::xml_node& parent, std::string_view name) {
  return trimmed(child(parent, name).child_value());
}

// nullopt when present but not an integer; fallback when absent.
std::optional<int> int_of(const pugi::xml_node& parent, std::string_view name, int fallback) {
  const std::string t = text_of(parent, name);
  if (t.empty()) {
    return fallback;
  }
  int v = 0;
  const auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || p != t.data() + t.size()) {
    return std::nullopt;
  }
  return v;
}

// Status text (JSON, UTF-8 only): bytes that are not UTF-8 escaped losslessly; true if any were.
bool escape_for_status(std::string& text) {
  if (is_valid_utf8(text)) {
    return false;
  }
  text = escape_invalid_utf8(text);
  return true;
}

bool load(pugi::xml_document& doc, std::string_view xml) {
  const auto r = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  return static_cast<bool>(r) && doc.document_element();
}

}  // namespace

AlertParseResult parse_alert(std::string_view xml) {
  AlertParseResult r;
  pugi::xml_document doc;
  if (!load(doc, xml)) {
    r.error = "malformed_xml";
    return r;
  }
  const pugi::xml_node root = doc.document_element();
  if (local_name(root) != "EventNotificationAlert") {
    r.error = "not_an_alert";
    return r;
  }
  IsapiAlert a;
  // Checked on the document, not element by element: the raw XML goes into the record too.
  a.text_not_utf8 = !is_valid_utf8(xml);
  a.event_type = text_of(root, "eventType");
  a.event_state = text_of(root, "eventState");
  a.date_time = text_of(root, "dateTime");
  a.uuid = text_of(root, "UUID");
  if (a.event_type == "videoloss" && a.event_state == "inactive") {
    a.kind = IsapiAlert::Kind::kHeartbeat;
  } else if (a.event_type == "ANPR") {
    a.kind = IsapiAlert::Kind::kAnpr;
  }
  if (auto t = parse_iso8601(a.date_time)) {
    a.time = *t;
  } else if (a.kind == IsapiAlert::Kind::kAnpr) {
    r.error = "bad_date_time";
    return r;
  }
  if (a.kind != IsapiAlert::Kind::kAnpr) {
    r.alert = std::move(a);
    return r;
  }
  if (a.uuid.empty()) {
    r.error = "missing_uuid";
    return r;
  }
  const auto post = int_of(root, "activePostCount", 0);
  const pugi::xml_node anpr = child(root, "ANPR");
  const auto lane = int_of(anpr, "line", 0);
  const auto confidence = int_of(anpr, "confidenceLevel", 0);
  if (!anpr || !post || !lane || !confidence || *confidence < 0 || *confidence > 100) {
    r.error = "bad_field";
    return r;
  }
  a.active_post_count = *post;
  a.lane = *lane;
  a.confidence = *confidence;
  a.country = text_of(anpr, "country");
  a.plate = text_of(anpr, "licensePlate");
  if (a.plate.empty()) {
    a.plate = "unknown";
  }
  a.direction = text_of(anpr, "direction");
  a.plate_type = text_of(anpr, "plateType");
  a.plate_color = text_of(anpr, "plateColor");
  a.vehicle_type = text_of(anpr, "vehicleType");
  for (const std::string* text :
       {&a.plate, &a.country, &a.direction, &a.plate_type, &a.plate_color, &a.vehicle_type}) {
    if (text->size() > kMaxAnprTextBytes) {
      r.error = "field_too_long";
      return r;
    }
  }
  const pugi::xml_node list = child(anpr, "pictureInfoList");
  for (pugi::xml_node p = list.first_child(); p; p = p.next_sibling()) {
    if (p.type() != pugi::node_element || local_name(p) != "pictureInfo") {
      continue;
    }
    IsapiPictureInfo info;
    info.file_name = text_of(p, "fileName");
    info.type = text_of(p, "type");
    info.abs_time = text_of(p, "absTime");
    if (!info.file_name.empty()) {
      a.pictures.push_back(std::move(info));
    }
  }
  r.alert = std::move(a);
  return r;
}

namespace {

// `text` cut to at most `limit` bytes without splitting a UTF-8 sequence; sets `cut` when it was longer.
std::string bounded_text(const std::string& text, std::size_t limit, bool& cut) {
  if (text.size() <= limit) {
    return text;
  }
  cut = true;
  std::size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
    --end;  // text[end] continues a sequence: cut before the sequence starts
  }
  return text.substr(0, end);
}

}  // namespace

DeviceIdentity identity_of(const IsapiDeviceInfo& info) {
  DeviceIdentity id;
  id.model = bounded_text(info.model, DeviceIdentity::kMaxIdentityBytes, id.truncated);
  id.serial = bounded_text(info.serial_number, DeviceIdentity::kMaxIdentityBytes, id.truncated);
  id.firmware = bounded_text(info.firmware_version, DeviceIdentity::kMaxIdentityBytes, id.truncated);
  return id;
}

std::optional<IsapiDeviceInfo> parse_device_info(std::string_view xml) {
  pugi::xml_document doc;
  if (!load(doc, xml) || local_name(doc.document_element()) != "DeviceInfo") {
    return std::nullopt;
  }
  const pugi::xml_node root = doc.document_element();
  IsapiDeviceInfo info;
  info.device_name = text_of(root, "deviceName");
  info.device_id = text_of(root, "deviceID");
  info.model = text_of(root, "model");
  info.serial_number = text_of(root, "serialNumber");
  info.firmware_version = text_of(root, "firmwareVersion");
  for (std::string* text :
       {&info.device_name, &info.device_id, &info.model, &info.serial_number, &info.firmware_version}) {
    info.text_not_utf8 = escape_for_status(*text) || info.text_not_utf8;
  }
  return info;
}

std::optional<IsapiTime> parse_time(std::string_view xml) {
  pugi::xml_document doc;
  if (!load(doc, xml) || local_name(doc.document_element()) != "Time") {
    return std::nullopt;
  }
  const pugi::xml_node root = doc.document_element();
  IsapiTime t;
  t.time_mode = text_of(root, "timeMode");
  t.local_time = text_of(root, "localTime");
  const auto parsed = parse_iso8601(t.local_time);
  if (!parsed) {
    return std::nullopt;
  }
  t.time = *parsed;
  t.text_not_utf8 = escape_for_status(t.time_mode);
  return t;
}

}  // namespace cpd::adapters
