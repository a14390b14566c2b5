// The evidence sheet's content from a verified record: labels in Chinese (with English), units a person
// reads, local time in the site's offset, national codes with their names, the validity checks and the
// openssl commands that verify the record. Nothing here trusts a member's type: a missing or odd member reads
// as "—".
#include "tools/checkpointctl/sheet_content.h"

#include <cstdio>
#include <map>
#include <utility>

#include "tools/checkpointctl/record_line.h"

namespace cpd::ctl {

namespace {

using nlohmann::json;

constexpr std::size_t kMaxValueChars = 300;
constexpr const char* kNone = "—";

// `text` cut to at most `limit` characters (UTF-8), with "…" when cut.
std::string bounded(const std::string& text, std::size_t limit = kMaxValueChars) {
  std::size_t chars = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80 && chars++ == limit) {
      return text.substr(0, i) + "…";
    }
  }
  return text;
}

// The member at `pointer` ("/site/name") as text: strings as they are, integers and booleans written out.
std::string text_at(const json& body, const char* pointer) {
  const json::json_pointer p(pointer);
  if (!body.contains(p)) {
    return "";
  }
  const json& v = body.at(p);
  if (v.is_string()) {
    return bounded(v.get<std::string>());
  }
  if (v.is_number_integer() || v.is_boolean()) {
    return v.dump();
  }
  return "";
}

std::string or_none(const std::string& text) {
  return text.empty() ? kNone : text;
}

bool int_at(const json& body, const char* pointer, std::int64_t& out) {
  const json::json_pointer p(pointer);
  if (!body.contains(p) || !body.at(p).is_number_integer()) {
    return false;
  }
  out = body.at(p).get<std::int64_t>();
  return true;
}

// Tenths as a decimal: 873 -> "87.3".
std::string tenths(std::int64_t v) {
  const char* sign = v < 0 ? "-" : "";
  const std::int64_t a = v < 0 ? -v : v;
  return sign + std::to_string(a / 10) + "." + std::to_string(a % 10);
}

std::string speed_text(const json& body, const char* pointer) {
  std::int64_t v = 0;
  return int_at(body, pointer, v) ? tenths(v) + " km/h" : kNone;
}

std::string time_text(const json& body, const char* pointer) {
  std::int64_t ms = 0;
  return int_at(body, pointer, ms) ? local_time_text(ms, text_at(body, "/site/utc_offset")) : kNone;
}

std::string translated(const std::map<std::string, std::string>& table, const std::string& value) {
  const auto it = table.find(value);
  return it == table.end() ? or_none(value) : it->second + " (" + value + ")";
}

const std::map<std::string, std::string> kTypes = {
    {"speeding", "超速"},          {"passage", "车辆通行"},         {"plate_read", "号牌识别"},
    {"speed_measurement", "测速"}, {"recording", "执法记录仪录像"}, {"link", "录像关联"},
    {"device_status", "设备状态"}, {"audit", "网关审计"},           {"custody", "保管回执"},
    {"key_rotation", "密钥轮换"}};
const std::map<std::string, std::string> kColours = {{"blue", "蓝"},  {"yellow", "黄"}, {"white", "白"},
                                                     {"black", "黑"}, {"green", "绿"},  {"unknown", "未知"}};
const std::map<std::string, std::string> kCarriageways = {{"up", "上行"}, {"down", "下行"}};
const std::map<std::string, std::string> kDirections = {{"N", "北"},    {"NE", "东北"}, {"E", "东"},
                                                        {"SE", "东南"}, {"S", "南"},    {"SW", "西南"},
                                                        {"W", "西"},    {"NW", "西北"}};
const std::map<std::string, std::string> kVehicleDirections = {{"approaching", "驶近"}, {"receding", "驶离"}};
const std::map<std::string, std::string> kReasons = {
    {"calibration_expired", "计量检定已过期"},
    {"calibration_serial_mismatch", "检定证书与测速设备编号不符"},
    {"radar_not_configured", "测速设备未配置"},
    {"radar_fault", "测速设备故障"},
    {"radar_status_unknown", "测速设备状态未知"},
    {"radar_clock_unstable", "测速设备时钟不稳"},
    {"camera_clock_offset_too_large", "摄像机时钟偏差过大"},
    {"camera_clock_offset_unknown", "摄像机时钟偏差未测得"},
    {"clock_unsynchronized", "网关时钟未同步"},
    {"too_few_pictures", "图片数量不足"},
    {"too_few_panoramas", "全景图片不足 (GA/T 832)"},
    {"device_time_implausible", "设备时间不可信"},
    {"outside_lanes", "不在车道内"}};
const std::map<std::string, std::string> kBands = {{"under_10", "超速 10% 以内"},
                                                   {"over_10", "超速 10% 以上未达 20%"},
                                                   {"over_20", "超速 20% 以上未达 50%"},
                                                   {"over_50", "超速 50% 以上"}};

std::string reason_text(const std::string& code) {
  const auto it = kReasons.find(code);
  return it == kReasons.end() ? code : it->second + " (" + code + ")";
}

// "GA 24.7 02 小型汽车号牌" or "未映射 unmapped", with the camera's own strings after it.
std::string code_text(const json& body, const char* which, const std::string& vendor) {
  const std::string base = std::string("/codes/") + which;
  const std::string camera = vendor.empty() ? "" : "；摄像机 camera: " + vendor;
  if (text_at(body, (base + "/mapped").c_str()) == "true") {
    return text_at(body, (base + "/code").c_str()) + " " + text_at(body, (base + "/name").c_str()) + " (" +
           text_at(body, (base + "/table").c_str()) + ")" + camera;
  }
  return "未映射 unmapped" + camera;
}

// "SR-200, 编号 serial SR-1, 固件 firmware 2.4.1"
std::string device_text(const json& body, const char* id_member, const char* device_member) {
  const std::string base = std::string("/") + device_member;
  std::string out = or_none(text_at(body, (std::string("/") + id_member).c_str()));
  for (const auto& [label, member] :
       {std::pair{"型号 model", "/model"}, {"编号 serial", "/serial"}, {"固件 firmware", "/firmware"}}) {
    const std::string v = text_at(body, (base + member).c_str());
    out += std::string("；") + label + " " + or_none(v);
  }
  return out;
}

SheetSection record_section(const json& body, std::string_view kid, std::string_view jws_sha256) {
  return {"记录 Record",
          {{"记录编号 Record id", or_none(text_at(body, "/id"))},
           {"记录类型 Type", translated(kTypes, text_at(body, "/type"))},
           {"网关 Gateway", or_none(text_at(body, "/gateway"))},
           {"序号 Sequence", or_none(text_at(body, "/seq"))},
           {"发生时间 Time of the event", time_text(body, "/time_ms")},
           {"封存时间 Sealed", time_text(body, "/created_ms")},
           {"签名密钥 Key id (kid)", std::string(kid)},
           {"记录 SHA-256", std::string(jws_sha256)}}};
}

SheetSection place_section(const json& body) {
  std::string position = kNone;
  std::int64_t lat = 0;
  std::int64_t lon = 0;
  if (int_at(body, "/site/lat_e7", lat) && int_at(body, "/site/lon_e7", lon)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.7f, %.7f (WGS84)", static_cast<double>(lat) / 1e7,
                  static_cast<double>(lon) / 1e7);
    position = buf;
  }
  std::string direction = translated(kCarriageways, text_at(body, "/site/carriageway"));
  direction += "；行驶方向 travel " + translated(kDirections, text_at(body, "/site/direction"));
  return {"地点 Place",
          {{"地点名称 Site", or_none(text_at(body, "/site/name"))},
           {"行政区划代码 Area code", or_none(text_at(body, "/site/area_code"))},
           {"道路 Road",
            or_none(text_at(body, "/site/road_code")) + " (" + or_none(text_at(body, "/site/road")) + ")"},
           {"里程桩号 Kilometre marker", or_none(text_at(body, "/site/km_marker"))},
           {"方向 Carriageway", direction},
           {"坐标 Position", position},
           {"时区 UTC offset", "UTC" + or_none(text_at(body, "/site/utc_offset"))}}};
}

SheetSection vehicle_section(const json& body) {
  return {"车辆 Vehicle",
          {{"号牌号码 Plate", or_none(text_at(body, "/plate"))},
           {"号牌种类 Plate type", code_text(body, "plate_type", text_at(body, "/plate_type"))},
           {"号牌颜色 Plate colour", translated(kColours, text_at(body, "/plate_color"))},
           {"车辆类型 Vehicle type", code_text(body, "vehicle_type", text_at(body, "/vehicle_type"))},
           {"车道 Lane", or_none(text_at(body, "/lane"))},
           {"行驶状态 Direction", translated(kVehicleDirections, text_at(body, "/direction"))}}};
}

SheetSection speed_section(const json& body) {
  std::string limit = kNone;
  std::int64_t v = 0;
  if (int_at(body, "/limit_kmh", v)) {
    limit = std::to_string(v) + " km/h";
    if (!text_at(body, "/limit_vehicle_type").empty()) {
      limit += " (" + text_at(body, "/limit_vehicle_type") + ")";
    }
  }
  std::string over = kNone;
  if (int_at(body, "/over_permille", v)) {
    over = tenths(v) + "%；" + speed_text(body, "/over_dkmh") + "；" +
           translated(kBands, text_at(body, "/band"));
  }
  return {"速度 Speed",
          {{"实测速度 Measured speed", speed_text(body, "/speed_dkmh")},
           {"限速 Speed limit", limit},
           {"超速 Over the limit", over}}};
}

SheetSection device_section(const json& body) {
  std::string certificate = or_none(text_at(body, "/calibration/certificate"));
  certificate += "；有效期至 valid until " + or_none(text_at(body, "/calibration/valid_until"));
  if (!text_at(body, "/calibration/radar_serial").empty()) {
    certificate += "；证书所载设备编号 names serial " + text_at(body, "/calibration/radar_serial");
  }
  return {"设备 Devices",
          {{"测速设备 Radar", device_text(body, "radar", "radar_device")},
           {"计量检定 Calibration", certificate},
           {"摄像机 Camera", device_text(body, "camera", "camera_device")},
           {"配置 SHA-256 Config", or_none(text_at(body, "/config_sha256"))}}};
}

std::vector<SheetCheck> checks_of(const json& body) {
  static const std::map<std::string, std::string> kLabels = {
      {"calibration", "计量检定有效 Calibration"}, {"radar_status", "测速设备状态 Radar status"},
      {"camera_clock", "摄像机时钟 Camera clock"}, {"clock_sync", "网关时钟同步 Gateway clock"},
      {"pictures", "图片数量 Pictures"},           {"panoramas", "全景图片 Panoramas (GA/T 832)"},
      {"device_time", "设备时间 Device time"}};
  std::vector<SheetCheck> out;
  if (!body.contains("checks") || !body["checks"].is_object()) {
    return out;
  }
  for (const auto& [name, check] : body["checks"].items()) {
    SheetCheck c;
    const auto it = kLabels.find(name);
    c.label = it == kLabels.end() ? name : it->second;
    c.ok = check.is_object() && check.contains("ok") && check["ok"] == true;
    if (check.is_object() && check.contains("count") && check.contains("min")) {
      c.detail = check["count"].dump() + " / " + check["min"].dump();
    } else if (check.is_object() && check.contains("offset_ms")) {
      c.detail = check["offset_ms"].dump() + " ms";
    }
    out.push_back(std::move(c));
  }
  return out;
}

// The recordings linked to the record, and for a speeding record whether one of them meets GA/T 832's "one
// panorama plus video" (the link's panoramas_with_video, docs/records.md "Links").
void add_links(SheetContent& s, const json& body, const std::vector<json>& links) {
  if (links.empty()) {
    return;
  }
  const auto yes = [](const json& v, const char* member) { return v.contains(member) && v[member] == true; };
  SheetSection section{"关联执法记录仪录像 Linked body-worn recordings", {}};
  std::string met_by;
  bool decided = false;
  for (const json& link : links) {
    std::string value = "录像 recording " + or_none(text_at(link, "/recording"));
    const json with = link.contains("panoramas_with_video") && link["panoramas_with_video"].is_object()
                          ? link["panoramas_with_video"]
                          : json();
    if (!with.is_object()) {
      value +=
          "；一张全景+视频 one panorama plus video: 未判定 undecided (the link was sealed before it was "
          "decided)";
    } else {
      decided = true;
      value += "；一张全景+视频 one panorama plus video: ";
      value += yes(with, "met") ? "符合 met" : "不符合 not met";
      value += " (全景 panoramas " + (with.contains("panoramas") ? with["panoramas"].dump() : "—") +
               "；视频 video " + (yes(with, "video") ? "是 yes" : "否 no") +
               "；覆盖违法时间 covers the time " + (yes(with, "covers_record_time") ? "是 yes" : "否 no") +
               "；录像时钟可靠 clock reliable " +
               (yes(with, "recording_time_reliable") ? "是 yes" : "否 no") +
               "；记录其他检查 record's other checks " +
               (yes(with, "record_checks_ok") ? "通过 passed" : "未通过 failed") + ")";
      if (yes(with, "met") && met_by.empty()) {
        met_by = text_at(link, "/id") + " → " + text_at(link, "/recording");
      }
    }
    section.rows.push_back({"关联记录 Link " + or_none(text_at(link, "/id")), bounded(value)});
  }
  s.sections.push_back(std::move(section));
  // The second form matters only to a speeding record whose own panorama check failed.
  const bool panoramas_failed = text_at(body, "/checks/panoramas/ok") == "false";
  if (text_at(body, "/type") == "speeding" && panoramas_failed && decided) {
    s.checks.push_back(SheetCheck{"一张全景+视频 One panorama plus video (GA/T 832)", !met_by.empty(),
                                  met_by.empty() ? "no linked video meets it" : "link " + met_by});
  }
}

std::vector<SheetPicture> pictures_of(const json& body) {
  static const std::map<std::string, std::string> kRoles = {
      {"panorama", "全景 panorama"}, {"plate_closeup", "号牌特写 plate close-up"}, {"other", "其他 other"}};
  std::vector<SheetPicture> out;
  if (!body.contains("pictures") || !body["pictures"].is_array()) {
    return out;
  }
  for (const auto& p : body["pictures"]) {
    if (!p.is_object() || !p.contains("sha256") || !p["sha256"].is_string()) {
      continue;
    }
    SheetPicture pic;
    pic.sha256 = p["sha256"].get<std::string>();
    const auto role = kRoles.find(text_at(p, "/role"));
    pic.caption = role == kRoles.end() ? "其他 other" : role->second;
    if (p.contains("width") && p.contains("height")) {
      pic.caption += "；" + p["width"].dump() + " × " + p["height"].dump() + " px";
    }
    if (const std::string bytes = text_at(p, "/bytes"); !bytes.empty()) {
      pic.caption += "；" + bytes + " bytes";
    }
    std::int64_t capture = 0;
    if (int_at(p, "/capture_ms", capture)) {
      pic.caption += "；" + local_time_text(capture, text_at(body, "/site/utc_offset"));
    }
    out.push_back(std::move(pic));
  }
  return out;
}

std::vector<std::string> verify_commands_of(const std::string& id) {
  return {
      "# 记录存为 record.jws (一行) / save the record as one line in record.jws (" + id + ")",
      "printf %s \"$(cat record.jws)\" | sha256sum    # = 记录 SHA-256 / the QR code's sha256",
      "printf %s \"$(cut -d. -f1,2 record.jws)\" > signing-input",
      "printf '%s==' \"$(cut -d. -f3 record.jws | tr '_-' '/+')\" | base64 -d > signature.bin",
      "openssl pkeyutl -verify -pubin -inkey gateway.pub.pem -rawin -in signing-input -sigfile signature.bin",
      "# 输出 Signature Verified Successfully 即签名有效 / the signature is valid when openssl says so",
  };
}

}  // namespace

std::string local_time_text(std::int64_t ms, std::string_view utc_offset) {
  int offset_min = 0;
  std::string shown = "+00:00";
  const auto digit = [&](std::size_t i) { return utc_offset[i] >= '0' && utc_offset[i] <= '9'; };
  if (utc_offset.size() == 6 && (utc_offset[0] == '+' || utc_offset[0] == '-') && utc_offset[3] == ':' &&
      digit(1) && digit(2) && digit(4) && digit(5)) {
    const int h = (utc_offset[1] - '0') * 10 + (utc_offset[2] - '0');
    const int m = (utc_offset[4] - '0') * 10 + (utc_offset[5] - '0');
    if (h >= 0 && h <= 14 && m >= 0 && m < 60) {
      offset_min = (h * 60 + m) * (utc_offset[0] == '-' ? -1 : 1);
      shown = std::string(utc_offset);
    }
  }
  return calendar_text(ms + std::int64_t{offset_min} * 60 * 1000, ' ', " (UTC" + shown + ")");
}

SheetContent sheet_content(const json& body, std::string_view kid, std::string_view jws_sha256,
                           const std::vector<json>& links) {
  SheetContent s;
  const std::string type = text_at(body, "/type");
  const bool vehicle =
      type == "speeding" || type == "passage" || type == "plate_read" || type == "speed_measurement";
  if (type == "speeding") {
    s.title = "道路交通安全违法行为图像取证记录";
    s.subtitle = "Evidence record of a traffic violation (speeding)";
  } else if (vehicle) {
    s.title = "道路交通监测记录";
    s.subtitle = "Traffic record (" + or_none(type) + "): not a violation";
  } else {
    s.title = "电子证据记录";
    s.subtitle = "Evidence record (" + or_none(type) + ")";
  }
  s.record_id = text_at(body, "/id");
  const char* valid_member = body.contains("enforceable") ? "/enforceable" : "/valid";
  const char* reasons_member = body.contains("enforceable") ? "reasons" : "invalid_reasons";
  s.not_enforceable = text_at(body, valid_member) == "false";
  if (body.contains(reasons_member) && body[reasons_member].is_array()) {
    for (const auto& r : body[reasons_member]) {
      if (r.is_string()) {
        s.reasons.push_back(reason_text(bounded(r.get<std::string>())));
      }
    }
  }
  s.sections.push_back(record_section(body, kid, jws_sha256));
  s.sections.push_back(place_section(body));
  if (vehicle) {
    s.sections.push_back(vehicle_section(body));
    s.sections.push_back(speed_section(body));
    s.sections.push_back(device_section(body));
  } else {
    s.sections.push_back({"内容 Content", {{"记录内容 Body (JSON)", bounded(body.dump(2), 3000)}}});
  }
  s.checks = checks_of(body);
  add_links(s, body, links);
  s.pictures = pictures_of(body);
  s.qr_text = "checkpointd-record v1 id=" + s.record_id + " kid=" + std::string(kid) +
              " sha256=" + std::string(jws_sha256);
  s.verify_commands = verify_commands_of(s.record_id);
  return s;
}

}  // namespace cpd::ctl
