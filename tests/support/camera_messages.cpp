// Builders for the ANPR camera's ISAPI documents, multipart parts and HTTP auth headers (see
// specs/anpr-camera.md). Plain string building: no XML library, so the bytes are exactly what we write.
#include "tests/support/camera_messages.h"

#include <openssl/evp.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace cpd::test {
namespace {

struct LocalTime {
  std::tm tm{};
  int ms = 0;
};

LocalTime to_local(std::int64_t unix_ms, int utc_offset_min) {
  const std::int64_t local_ms = unix_ms + static_cast<std::int64_t>(utc_offset_min) * 60'000;
  std::int64_t secs = local_ms / 1000;
  std::int64_t ms = local_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  LocalTime out;
  const auto t = static_cast<std::time_t>(secs);
  gmtime_r(&t, &out.tm);
  out.ms = static_cast<int>(ms);
  return out;
}

std::string offset_text(int utc_offset_min) {
  const char sign = utc_offset_min < 0 ? '-' : '+';
  const int a = utc_offset_min < 0 ? -utc_offset_min : utc_offset_min;
  std::array<char, 16> buf{};
  std::snprintf(buf.data(), buf.size(), "%c%02d:%02d", sign, a / 60, a % 60);
  return buf.data();
}

std::string element(std::string_view name, std::string_view value) {
  std::string out = "<";
  out += name;
  out += ">";
  out += xml_escape(value);
  out += "</";
  out += name;
  out += ">";
  return out;
}

std::string element(std::string_view name, std::uint64_t value) {
  return element(name, std::to_string(value));
}

std::string header_element(std::string_view name, std::string_view ns, std::string_view encoding = "UTF-8") {
  std::string out = "<?xml version=\"1.0\" encoding=\"";
  out += encoding;
  out += "\"?>\n<";
  out += name;
  out += " version=\"2.0\" xmlns=\"";
  out += xml_escape(ns);
  out += "\">\n";
  return out;
}

std::string common_alert_head(std::string_view ns, std::string_view ip, int port, std::string_view mac,
                              int channel, std::string_view date_time, std::uint64_t apc,
                              std::string_view encoding = "UTF-8") {
  std::string x = header_element("EventNotificationAlert", ns, encoding);
  x += element("ipAddress", ip) + "\n";
  x += element("portNo", static_cast<std::uint64_t>(port)) + "\n";
  x += element("protocol", "HTTP") + "\n";
  x += element("macAddress", mac) + "\n";
  x += element("channelID", static_cast<std::uint64_t>(channel)) + "\n";
  x += element("dateTime", date_time) + "\n";
  x += element("activePostCount", apc) + "\n";
  return x;
}

}  // namespace

std::optional<int> parse_utc_offset(std::string_view text) {
  if (text == "Z") {
    return 0;
  }
  if (text.size() != 6 || (text[0] != '+' && text[0] != '-') || text[3] != ':') {
    return std::nullopt;
  }
  for (const std::size_t i : {1U, 2U, 4U, 5U}) {
    if (std::isdigit(static_cast<unsigned char>(text[i])) == 0) {
      return std::nullopt;
    }
  }
  const int h = (text[1] - '0') * 10 + (text[2] - '0');
  const int m = (text[4] - '0') * 10 + (text[5] - '0');
  if (h > 14 || m > 59) {
    return std::nullopt;
  }
  const int total = h * 60 + m;
  return text[0] == '-' ? -total : total;
}

std::string camera_time(std::int64_t unix_ms, int utc_offset_min, bool with_ms) {
  const LocalTime t = to_local(unix_ms, utc_offset_min);
  std::array<char, 64> buf{};
  if (with_ms) {
    std::snprintf(buf.data(), buf.size(), "%04d-%02d-%02dT%02d:%02d:%02d.%03d", t.tm.tm_year + 1900,
                  t.tm.tm_mon + 1, t.tm.tm_mday, t.tm.tm_hour, t.tm.tm_min, t.tm.tm_sec, t.ms);
  } else {
    std::snprintf(buf.data(), buf.size(), "%04d-%02d-%02dT%02d:%02d:%02d", t.tm.tm_year + 1900,
                  t.tm.tm_mon + 1, t.tm.tm_mday, t.tm.tm_hour, t.tm.tm_min, t.tm.tm_sec);
  }
  return std::string(buf.data()) + offset_text(utc_offset_min);
}

std::string camera_abs_time(std::int64_t unix_ms, int utc_offset_min) {
  const LocalTime t = to_local(unix_ms, utc_offset_min);
  std::array<char, 48> buf{};
  std::snprintf(buf.data(), buf.size(), "%04d%02d%02d%02d%02d%02d%03d", t.tm.tm_year + 1900, t.tm.tm_mon + 1,
                t.tm.tm_mday, t.tm.tm_hour, t.tm.tm_min, t.tm.tm_sec, t.ms);
  return buf.data();
}

std::string xml_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string anpr_alert_xml(const AnprAlert& a) {
  std::string x = common_alert_head(a.xml_namespace, a.ip_address, a.port_no, a.mac_address, a.channel_id,
                                    a.date_time, a.active_post_count, a.xml_encoding);
  x += element("eventType", "ANPR") + "\n";
  x += element("eventState", "active") + "\n";
  x += element("eventDescription", "ANPR") + "\n";
  x += "<ANPR>\n";
  x += element("country", "CHN") + "\n";
  x += element("licensePlate", a.license_plate) + "\n";
  x += element("line", static_cast<std::uint64_t>(a.line)) + "\n";
  x += element("direction", a.direction) + "\n";
  x += element("confidenceLevel", static_cast<std::uint64_t>(a.confidence_level)) + "\n";
  x += element("plateType", a.plate_type) + "\n";
  x += element("plateColor", a.plate_color) + "\n";
  x += element("vehicleType", a.vehicle_type) + "\n";
  x += "<pictureInfoList>\n";
  for (const auto& p : a.pictures) {
    x += "<pictureInfo>\n";
    x += element("fileName", p.file_name) + "\n";
    x += element("type", p.type) + "\n";
    x += element("absTime", p.abs_time) + "\n";
    x += "</pictureInfo>\n";
  }
  x += "</pictureInfoList>\n";
  x += "</ANPR>\n";
  x += element("UUID", a.uuid) + "\n";
  x += element("picNum", static_cast<std::uint64_t>(a.pictures.size())) + "\n";
  x += "</EventNotificationAlert>\n";
  return x;
}

std::string heartbeat_xml(const Heartbeat& h) {
  std::string x = common_alert_head(h.xml_namespace, h.ip_address, h.port_no, h.mac_address, h.channel_id,
                                    h.date_time, h.active_post_count);
  x += element("eventType", "videoloss") + "\n";
  x += element("eventState", "inactive") + "\n";
  x += element("eventDescription", "videoloss alarm") + "\n";
  x += "</EventNotificationAlert>\n";
  return x;
}

std::string device_info_xml(const DeviceInfo& d) {
  std::string x = header_element("DeviceInfo", d.xml_namespace, d.xml_encoding);
  x += element("deviceName", d.device_name) + "\n";
  x += element("deviceID", d.device_id) + "\n";
  x += element("model", d.model) + "\n";
  x += element("serialNumber", d.serial_number) + "\n";
  x += element("macAddress", d.mac_address) + "\n";
  x += element("firmwareVersion", d.firmware_version) + "\n";
  x += element("firmwareReleasedDate", d.firmware_released_date) + "\n";
  x += element("deviceType", "IPCamera") + "\n";
  x += "</DeviceInfo>\n";
  return x;
}

std::string time_xml(const TimeStatus& t) {
  std::string x = header_element("Time", t.xml_namespace);
  x += element("timeMode", t.time_mode) + "\n";
  x += element("localTime", t.local_time) + "\n";
  x += element("timeZone", t.time_zone) + "\n";
  x += "</Time>\n";
  return x;
}

std::string multipart_part(std::string_view boundary, std::string_view content_type, std::string_view body,
                           std::string_view file_name) {
  std::string out;
  out.reserve(body.size() + 160);
  out += "--";
  out += boundary;
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\n";
  if (!file_name.empty()) {
    out += "Content-Disposition: attachment; filename=\"";
    out += file_name;
    out += "\"\r\n";
  }
  out += "\r\n";
  out += body;
  out += "\r\n";
  return out;
}

std::string xml_part(std::string_view boundary, std::string_view xml) {
  return multipart_part(boundary, "application/xml; charset=\"UTF-8\"", xml);
}

std::string jpeg_part(std::string_view boundary, std::string_view file_name, std::string_view jpeg) {
  return multipart_part(boundary, "image/jpeg", jpeg, file_name);
}

std::string http_chunk(std::string_view data) {
  std::array<char, 20> hex{};
  std::snprintf(hex.data(), hex.size(), "%zx\r\n", data.size());
  std::string out = hex.data();
  out += data;
  out += "\r\n";
  return out;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  while (i + 2 < bytes.size()) {
    const auto n = (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
    i += 3;
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) {
      n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    }
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') {
      return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
      return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
      return c - '0' + 52;
    }
    if (c == '+') {
      return 62;
    }
    if (c == '/') {
      return 63;
    }
    return -1;
  };
  if (text.size() % 4 != 0) {
    return std::nullopt;
  }
  std::string out;
  for (std::size_t i = 0; i < text.size(); i += 4) {
    std::uint32_t n = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
        n <<= 6;
        continue;
      }
      const int v = value(c);
      if (v < 0 || pad > 0) {
        return std::nullopt;
      }
      n = (n << 6) | static_cast<std::uint32_t>(v);
    }
    out += static_cast<char>((n >> 16) & 0xFF);
    if (pad < 2) {
      out += static_cast<char>((n >> 8) & 0xFF);
    }
    if (pad < 1) {
      out += static_cast<char>(n & 0xFF);
    }
  }
  return out;
}

std::string md5_hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md.data(), &len, EVP_md5(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::optional<std::map<std::string, std::string>> parse_auth_params(std::string_view header,
                                                                    std::string_view scheme) {
  std::size_t i = 0;
  while (i < header.size() && header[i] == ' ') {
    ++i;
  }
  if (header.size() - i < scheme.size() + 1) {
    return std::nullopt;
  }
  for (std::size_t k = 0; k < scheme.size(); ++k) {
    if (std::tolower(static_cast<unsigned char>(header[i + k])) !=
        std::tolower(static_cast<unsigned char>(scheme[k]))) {
      return std::nullopt;
    }
  }
  i += scheme.size();
  if (header[i] != ' ') {
    return std::nullopt;
  }
  std::map<std::string, std::string> out;
  while (i < header.size()) {
    while (i < header.size() && (header[i] == ' ' || header[i] == ',' || header[i] == '\t')) {
      ++i;
    }
    if (i >= header.size()) {
      break;
    }
    std::string name;
    while (i < header.size() && header[i] != '=' && header[i] != ' ' && header[i] != ',') {
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(header[i])));
      ++i;
    }
    while (i < header.size() && header[i] == ' ') {
      ++i;
    }
    if (name.empty() || i >= header.size() || header[i] != '=') {
      return std::nullopt;
    }
    ++i;
    while (i < header.size() && header[i] == ' ') {
      ++i;
    }
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      bool closed = false;
      while (i < header.size()) {
        const char c = header[i++];
        if (c == '\\' && i < header.size()) {
          value += header[i++];
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          value += c;
        }
      }
      if (!closed) {
        return std::nullopt;
      }
    } else {
      while (i < header.size() && header[i] != ',' && header[i] != ' ') {
        value += header[i++];
      }
    }
    if (out.contains(name)) {
      return std::nullopt;  // a repeated parameter is ambiguous
    }
    out.emplace(std::move(name), std::move(value));
  }
  return out;
}

std::string digest_response(std::string_view username, std::string_view realm, std::string_view password,
                            std::string_view method, std::string_view uri, std::string_view nonce,
                            std::string_view nc, std::string_view cnonce, std::string_view qop) {
  const std::string ha1 =
      md5_hex(std::string(username) + ":" + std::string(realm) + ":" + std::string(password));
  const std::string ha2 = md5_hex(std::string(method) + ":" + std::string(uri));
  return md5_hex(ha1 + ":" + std::string(nonce) + ":" + std::string(nc) + ":" + std::string(cnonce) + ":" +
                 std::string(qop) + ":" + ha2);
}

std::optional<std::string> digest_authorization(std::string_view challenge, std::string_view method,
                                                std::string_view uri, std::string_view username,
                                                std::string_view password, std::uint32_t nc,
                                                std::string_view cnonce) {
  const auto params = parse_auth_params(challenge, "Digest");
  if (!params || !params->contains("realm") || !params->contains("nonce")) {
    return std::nullopt;
  }
  std::array<char, 12> nc_text{};
  std::snprintf(nc_text.data(), nc_text.size(), "%08x", nc);
  const std::string& realm = params->at("realm");
  const std::string& nonce = params->at("nonce");
  std::string out =
      "Digest username=\"" + std::string(username) + "\", realm=\"" + realm + "\", nonce=\"" + nonce +
      "\", uri=\"" + std::string(uri) + "\", algorithm=MD5, qop=auth, nc=" + nc_text.data() + ", cnonce=\"" +
      std::string(cnonce) + "\", response=\"" +
      digest_response(username, realm, password, method, uri, nonce, nc_text.data(), cnonce) + "\"";
  if (params->contains("opaque")) {
    out += ", opaque=\"" + params->at("opaque") + "\"";
  }
  return out;
}

std::string basic_authorization(std::string_view username, std::string_view password) {
  return "Basic " + base64_encode(std::string(username) + ":" + std::string(password));
}

}  // namespace cpd::test
