// Config warnings: cheap, certain checks on a loaded config for what a technician would want to hear
// about before a device goes quiet or evidence turns out invalid. Pure: the time comes in as `now`.
#include "daemon/config/config_warnings.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <variant>

namespace cpd::config {

namespace {

constexpr std::int64_t kMsPerDay = 24LL * 60 * 60 * 1000;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) {
    --q;
  }
  return q;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string host_port(const std::string& host, std::uint16_t port) {
  // IPv6 literals are bracketed so the port stays readable.
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return lower(h) + ":" + std::to_string(port);
}

// Where a device is reached, for telling two devices on one address apart; "" when it has none.
struct Address {
  std::string key;        // what must differ: "host:port" or the serial device path
  std::string text;       // for the message
  std::string base_path;  // docks behind one host:port may differ by path (a proxy): not a clash then
  bool dock = false;
};

Address address_of(const DeviceConfig& d) {
  Address a;
  if (const auto* radar = std::get_if<adapters::RadarConfig>(&d.settings)) {
    if (const auto* tcp = std::get_if<adapters::TcpLink>(&radar->link)) {
      a.key = "tcp " + host_port(tcp->host, tcp->port);
      a.text = host_port(tcp->host, tcp->port);
    } else {
      const auto& serial = std::get<adapters::SerialLink>(radar->link);
      a.key = "serial " + serial.device;
      a.text = "serial device " + serial.device;
    }
  } else if (const auto* camera = std::get_if<adapters::CameraConfig>(&d.settings)) {
    a.key = "tcp " + host_port(camera->host, camera->port);
    a.text = host_port(camera->host, camera->port);
  } else if (const auto* dock = std::get_if<adapters::RecorderDockConfig>(&d.settings)) {
    a.key = "tcp " + host_port(dock->host, dock->port);
    a.text = host_port(dock->host, dock->port);
    a.base_path = dock->base_path;
    a.dock = true;
  }
  return a;
}

std::string date_of_day(std::int64_t days) {
  // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
  days += 719468;
  const std::int64_t era = floor_div(days, 146097);
  const std::int64_t doe = days - era * 146097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  const std::int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d", static_cast<int>(y), static_cast<int>(m),
                static_cast<int>(d));
  return buf;
}

void check_calibration(const Config& cfg, const DeviceConfig& d, const adapters::RadarConfig& radar,
                       UnixMs now, std::vector<ConfigWarning>& out) {
  const auto& cal = radar.calibration;
  const std::int64_t offset_ms = std::int64_t{cfg.gateway.site.utc_offset_min} * 60 * 1000;
  // Whole local days: the calibration covers the named day to its end, so on that day 0 days are left.
  const std::int64_t today = floor_div(now + offset_ms, kMsPerDay);
  const std::int64_t last_day = floor_div(cal.valid_until_ms + offset_ms, kMsPerDay) - 1;
  const std::string what = "calibration certificate " + cal.certificate;
  const std::string zone = " (site time UTC" + cfg.gateway.site.utc_offset + ")";
  if (!cal.radar_serial.empty() && cal.radar_serial != radar.identity.serial) {
    const std::string serial =
        radar.identity.serial.empty() ? "not configured (serial_number)" : radar.identity.serial;
    out.push_back({d.place, d.id,
                   what + " names radar serial " + cal.radar_serial + " but this radar's serial is " +
                       serial +
                       "; its speeds are not valid evidence (calibration_serial_mismatch): check which radar "
                       "is installed and correct serial_number or calibration.radar_serial"});
  }
  if (now >= cal.valid_until_ms) {
    out.push_back({d.place, d.id,
                   what + " expired: it was valid until " + date_of_day(last_day) + zone +
                       "; speeds measured now are not valid evidence: have the radar recalibrated and update "
                       "calibration"});
    return;
  }
  const std::int64_t left = last_day - today;
  if (left <= kCalibrationWarningDays) {
    const std::string when = left == 0   ? "today is its last valid day"
                             : left == 1 ? "1 day left"
                                         : std::to_string(left) + " days left";
    out.push_back({d.place, d.id,
                   what + " expires soon: valid until " + date_of_day(last_day) + zone + ", " + when +
                       "; book the recalibration"});
  }
}

struct SeenAddress {
  const DeviceConfig* device;
  Address address;
};

// Two devices on one address: one of them is configured wrong, and both adapters fight over it
// (a radar even accepts only one client at a time).
void check_shared_address(const DeviceConfig& d, std::vector<SeenAddress>& seen,
                          std::vector<ConfigWarning>& out) {
  const Address a = address_of(d);
  if (a.key.empty()) {
    return;
  }
  for (const auto& s : seen) {
    if (s.address.key != a.key || (a.dock && s.address.dock && a.base_path != s.address.base_path)) {
      continue;
    }
    out.push_back({d.place, d.id,
                   "same address as device '" + s.device->id + "' (" + s.device->place + "): " + a.text +
                       "; two devices cannot share one address, one of them is configured wrong"});
    break;
  }
  seen.push_back({&d, a});
}

// A radar no camera watches records no plates; a watched radar's lanes without a limit never give speeding.
void check_radar_lanes(const DeviceConfig& d, const adapters::RadarConfig& radar,
                       const std::set<std::string>& watched_radars, const std::set<int>& limited_lanes,
                       std::vector<ConfigWarning>& out) {
  if (watched_radars.count(d.id) == 0) {
    out.push_back({d.place, d.id,
                   "no camera names this radar (camera 'radar:'): its speeds are recorded without plates, "
                   "as speed_measurement records"});
    return;
  }
  std::string missing;
  for (const auto& lane : radar.lanes) {
    if (limited_lanes.count(lane.lane) == 0) {
      missing += (missing.empty() ? "" : ", ") + std::to_string(lane.lane);
    }
  }
  if (!missing.empty()) {
    out.push_back({d.place, d.id,
                   std::string(missing.find(',') == std::string::npos ? "lane " : "lanes ") + missing +
                       " of this radar " + (missing.find(',') == std::string::npos ? "has" : "have") +
                       " no speed limit under correlation.lanes: vehicles there are recorded as "
                       "passages, never as speeding"});
  }
}

void check_limits_have_radars(const Config& cfg, const std::set<int>& radar_lanes,
                              std::vector<ConfigWarning>& out) {
  for (const auto& l : cfg.correlation.lanes) {
    if (radar_lanes.count(l.lane) == 0) {
      out.push_back({cfg.source, "",
                     "correlation.lanes: lane " + std::to_string(l.lane) +
                         " has a speed limit but no radar has that lane: the limit is never applied"});
    }
  }
}

// A site without the case-file elements: its speeding records cannot state where as a case file needs.
void check_site_elements(const Config& cfg, std::vector<ConfigWarning>& out) {
  std::string missing;
  const Site& site = cfg.gateway.site;
  for (const auto& [key, value] : {std::pair{"area_code", &site.area_code},
                                   {"road_code", &site.road_code},
                                   {"km_marker", &site.km_marker},
                                   {"carriageway", &site.carriageway}}) {
    if (value->empty()) {
      missing += (missing.empty() ? "" : ", ") + std::string(key);
    }
  }
  if (!missing.empty()) {
    out.push_back({cfg.source, "",
                   "gateway.site has no " + missing +
                       ": records will not state these case-file elements (docs/records.md, \"Case-file "
                       "elements\"); set them unless the site has none"});
  }
}

// Settings that weaken what records prove or who may reach the gateway: fine for demos, not at a checkpoint.
void check_weakening_settings(const Config& cfg, std::vector<ConfigWarning>& out) {
  if (cfg.validity.clock_sync == "assume") {
    out.push_back({cfg.source, "",
                   "validity.clock_sync is 'assume': the gateway clock is not checked and every record says "
                   "so; for demos and tests only, use 'kernel' at a checkpoint"});
  }
  if (cfg.mqtt.tls.enabled && !cfg.mqtt.tls.verify_hostname) {
    out.push_back({cfg.source, "",
                   "mqtt.tls.verify_hostname is false: any certificate from the CA is accepted for the "
                   "broker, whatever host it names"});
  }
  if (cfg.metrics.enabled && cfg.metrics.host.rfind("127.", 0) != 0 && cfg.metrics.host != "::1") {
    out.push_back({cfg.source, "",
                   "metrics.host " + cfg.metrics.host +
                       " is not a loopback address: /metrics is reachable from the network without "
                       "authentication"});
  }
}

}  // namespace

std::vector<ConfigWarning> config_warnings(const Config& cfg, UnixMs now) {
  std::vector<ConfigWarning> out;

  std::set<std::string> watched_radars;
  for (const auto& d : cfg.devices) {
    if (const auto* camera = std::get_if<adapters::CameraConfig>(&d.settings)) {
      watched_radars.insert(camera->radar);
    }
  }
  std::set<int> limited_lanes;
  for (const auto& l : cfg.correlation.lanes) {
    limited_lanes.insert(l.lane);
  }
  std::set<int> radar_lanes;
  std::vector<SeenAddress> seen;

  for (const auto& d : cfg.devices) {
    check_shared_address(d, seen, out);
    if (const auto* radar = std::get_if<adapters::RadarConfig>(&d.settings)) {
      check_calibration(cfg, d, *radar, now, out);
      for (const auto& lane : radar->lanes) {
        radar_lanes.insert(lane.lane);
      }
      check_radar_lanes(d, *radar, watched_radars, limited_lanes, out);
    } else if (const auto* camera = std::get_if<adapters::CameraConfig>(&d.settings)) {
      if (camera->auth == "basic") {
        out.push_back({d.place, d.id,
                       "auth: basic sends the camera password readable on the network with every request "
                       "(plain HTTP); use digest unless the camera cannot"});
      }
    }
  }

  // File-wide warnings: no device entry to point at, so the place is the file.
  check_limits_have_radars(cfg, radar_lanes, out);
  check_site_elements(cfg, out);
  check_weakening_settings(cfg, out);
  return out;
}

std::string format_warning(const ConfigWarning& warning) {
  std::string line = warning.place + ": warning: ";
  if (!warning.device.empty()) {
    line += "device " + warning.device + ": ";
  }
  return line + warning.message;
}

}  // namespace cpd::config
