// Loads the daemon's YAML config through the schema toolkit: every key typed, ranged and placed, unknown
// keys rejected, cross-key rules checked in the same pass. Device sections are read by their kind's parser.
#include "daemon/config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <tuple>

#include "adapters/registry.h"
#include "daemon/config/mqtt_config.h"
#include "daemon/config/schema.h"
#include "daemon/config/yaml_guard.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"

namespace cpd::config {

namespace {

constexpr std::string_view kGatewayIdPattern = "[a-z0-9][a-z0-9-]{0,62}";
constexpr std::string_view kGatewayIdAllowed =
    "1 to 63 lower-case letters, digits or '-', starting with a letter or digit (it appears in MQTT topics "
    "and record ids)";
constexpr std::string_view kDeviceIdPattern = "[a-z0-9][a-z0-9_-]{0,62}";
constexpr std::string_view kDeviceIdAllowed =
    "1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit";
constexpr std::string_view kPrintablePattern = "[!-~]([ -~]{0,126}[!-~])?";
constexpr std::string_view kPrintableAllowed =
    "1 to 128 printable ASCII characters, no leading/trailing space";

int parse_utc_offset(Section& site, const std::string& text) {
  // "+HH:MM" east of UTC; real offsets run from -12:00 to +14:00.
  static const std::regex kOffset("([+-])([0-9]{2}):([0-9]{2})");
  std::smatch m;
  if (std::regex_match(text, m, kOffset)) {
    const int hours = std::stoi(m[2].str());
    const int minutes = std::stoi(m[3].str());
    const int total = (hours * 60 + minutes) * (m[1].str() == "-" ? -1 : 1);
    if (minutes < 60 && total >= -12 * 60 && total <= 14 * 60) {
      return total;
    }
  }
  site.fail("utc_offset", "must be \"+HH:MM\" or \"-HH:MM\" between -12:00 and +14:00, got '" + text + "'");
}

Site parse_site(Section site) {
  Site out;
  out.name = site.required<std::string>("name", {.pattern = kPrintablePattern, .allowed = kPrintableAllowed});
  out.road = site.required<std::string>("road", {.pattern = kPrintablePattern, .allowed = kPrintableAllowed});
  out.direction =
      site.required<std::string>("direction", {.one_of = {"N", "NE", "E", "SE", "S", "SW", "W", "NW"}});
  out.lat = site.required<double>("lat", {.min = -90.0, .max = 90.0, .allowed = "degrees WGS84, -90 to 90"});
  out.lon =
      site.required<double>("lon", {.min = -180.0, .max = 180.0, .allowed = "degrees WGS84, -180 to 180"});
  out.utc_offset = site.optional<std::string>("utc_offset", "+00:00");
  out.utc_offset_min = parse_utc_offset(site, out.utc_offset);
  out.area_code = site.optional<std::string>(
      "area_code", "",
      {.pattern = "[1-9][0-9]{5}", .allowed = "a 6-digit administrative division code (GB/T 2260)"});
  out.road_code = site.optional<std::string>(
      "road_code", "",
      {.pattern = "[A-Z][A-Z0-9]{0,15}", .allowed = "a road number such as G60 or S2 (A-Z, 0-9)"});
  out.km_marker = site.optional<std::string>(
      "km_marker", "",
      {.pattern = "K[0-9]{1,4}\\+[0-9]{3}", .allowed = "a kilometre marker K<km>+<metres>, e.g. K1234+500"});
  if (!out.km_marker.empty()) {
    const auto plus = out.km_marker.find('+');
    out.km_m =
        std::stoll(out.km_marker.substr(1, plus - 1)) * 1000 + std::stoll(out.km_marker.substr(plus + 1));
  }
  out.carriageway = site.optional<std::string>("carriageway", "", {.one_of = {"up", "down"}});
  site.finish();
  return out;
}

GatewaySection parse_gateway(Section gateway, Config& config) {
  GatewaySection out;
  out.id = gateway.required<std::string>("id", {.pattern = kGatewayIdPattern, .allowed = kGatewayIdAllowed});
  out.site = parse_site(gateway.section("site"));
  out.key_path = gateway.required<std::string>("key", {.pattern = kPathPattern, .allowed = kPathAllowed});
  std::tie(config.key_line, config.key_column) = gateway.position("key");
  gateway.finish();
  return out;
}

StoreSection parse_store(Section store) {
  StoreSection out;
  out.path = store.required<std::string>("path", {.pattern = kPathPattern, .allowed = kPathAllowed});
  out.commit_max_batch =
      store.optional<int>("commit_max_batch", out.commit_max_batch, {.min = 1, .max = 100000});
  out.commit_linger_ms =
      store.optional<int>("commit_linger_ms", out.commit_linger_ms, {.min = 0, .max = 1000});
  // Pictures live beside the store by default, so one directory (one disk) holds all the evidence.
  const std::string beside = (std::filesystem::path(out.path).parent_path() / "media").string();
  out.media_dir =
      store.optional<std::string>("media_dir", beside, {.pattern = kPathPattern, .allowed = kPathAllowed});
  out.media_retention_days =
      store.optional<int>("media_retention_days", out.media_retention_days, {.min = 1, .max = 3650});
  // Evidence an officer flagged is kept for months whatever the general period (at least 6 months).
  out.important_retention_days = store.optional<int>("important_retention_days", out.important_retention_days,
                                                     {.min = 180, .max = 3650});
  out.reserve_mb = store.optional<int>("reserve_mb", out.reserve_mb, {.min = 1, .max = 1024 * 1024});
  out.retention_days = store.optional<int>("retention_days", out.retention_days, {.min = 0, .max = 36500});
  store.finish();
  return out;
}

// A camera watches the lanes of one radar: its `radar` must name a radar device of this file.
void check_camera_radars(std::vector<Section>& sections, const std::vector<DeviceConfig>& devices) {
  std::vector<std::string> radar_ids;
  for (const auto& d : devices) {
    if (std::holds_alternative<adapters::RadarConfig>(d.settings)) {
      radar_ids.push_back(d.id);
    }
  }
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const auto* camera = std::get_if<adapters::CameraConfig>(&devices[i].settings);
    if (camera == nullptr ||
        std::find(radar_ids.begin(), radar_ids.end(), camera->radar) != radar_ids.end()) {
      continue;
    }
    std::string known;
    for (const auto& id : radar_ids) {
      known += (known.empty() ? "" : ", ") + id;
    }
    sections[i].fail("radar", "must name a radar device configured under devices (" +
                                  (known.empty() ? std::string("there is none") : "radars: " + known) +
                                  "), got '" + camera->radar + "'");
  }
}

std::vector<DeviceConfig> parse_devices(Section& root) {
  std::vector<std::string> kinds;
  for (const auto& k : adapters::adapter_kinds()) {
    kinds.emplace_back(k.kind);
  }
  std::vector<DeviceConfig> out;
  std::map<std::string, std::string> id_places;
  std::vector<Section> sections = root.sections("devices", 1);
  for (auto& device : sections) {
    DeviceConfig d;
    d.id = device.required<std::string>("id", {.pattern = kDeviceIdPattern, .allowed = kDeviceIdAllowed});
    const auto [it, inserted] = id_places.emplace(d.id, device.place("id"));
    if (!inserted) {
      device.fail("id", "duplicate device id '" + d.id + "' (first at " + it->second + ")");
    }
    d.kind = device.required<std::string>("kind", {.one_of = kinds});
    d.place = device.place();
    d.settings = adapters::find_adapter_kind(d.kind)->parse(device);
    device.finish();
    out.push_back(std::move(d));
  }
  check_camera_radars(sections, out);
  return out;
}

constexpr std::string_view kVehicleTypePattern = "[A-Za-z0-9_-]{1,32}";

// correlation.lanes[i].vehicle_types is a mapping whose keys are the camera's vehicle classes, so its
// keys come from the document (`node`) and each is then read through the schema for type, range, place.
std::vector<std::pair<std::string, int>> parse_vehicle_types(Section& types, const YAML::Node& node) {
  std::vector<std::pair<std::string, int>> out;
  for (const auto& entry : node) {
    const std::string type = entry.first.Scalar();
    if (!std::regex_match(type, std::regex(std::string(kVehicleTypePattern)))) {
      types.fail(type,
                 "vehicle type '" + type +
                     "' must be 1 to 32 letters, digits, '_' or '-' (the camera's vehicleType, e.g. truck)");
    }
    out.emplace_back(type,
                     types.required<int>(type, {.min = 5, .max = 300, .allowed = "a speed limit in km/h"}));
  }
  return out;
}

CorrelationSection parse_correlation(Section& root, const YAML::Node& document) {
  CorrelationSection out;
  auto section = root.optional_section("correlation");
  if (!section) {
    return out;
  }
  Section& c = *section;
  out.window_ms = c.optional<int>("window_ms", out.window_ms, {.min = 10, .max = 5000});
  out.max_wait_ms = c.optional<int>("max_wait_ms", out.max_wait_ms, {.min = 100, .max = 60000});
  if (c.has("lanes")) {
    const YAML::Node lanes_node = document["correlation"]["lanes"];
    std::vector<Section> lanes = c.sections("lanes");
    std::map<int, std::string> lane_places;
    for (std::size_t i = 0; i < lanes.size(); ++i) {
      Section& lane = lanes[i];
      LaneLimit limit;
      limit.lane = lane.required<int>("lane", {.min = 1, .max = 99, .allowed = "the lane number, 1 to 99"});
      const auto [it, inserted] = lane_places.emplace(limit.lane, lane.place("lane"));
      if (!inserted) {
        lane.fail("lane", "duplicate lane " + std::to_string(limit.lane) + " (first at " + it->second + ")");
      }
      limit.limit_kmh = lane.required<int>(
          "limit_kmh", {.min = 5, .max = 300, .allowed = "the lane's speed limit in km/h"});
      if (auto types = lane.optional_section("vehicle_types")) {
        limit.by_vehicle_type = parse_vehicle_types(*types, lanes_node[i]["vehicle_types"]);
      }
      out.lanes.push_back(std::move(limit));
    }
  }
  return out;
}

constexpr std::string_view kVendorPattern = "[A-Za-z0-9_-]{1,32}";
constexpr std::string_view kVendorAllowed = "1 to 32 letters, digits, '_' or '-' (the camera's own string)";
constexpr std::string_view kNamePattern = "[^\\x00-\\x1f\\x7f]{1,64}";
constexpr std::string_view kNameAllowed = "the code's name in the table, 1 to 64 bytes of UTF-8 text";

// The name as UTF-8 text (the schema's pattern sees bytes).
std::string read_name(Section& entry) {
  std::string name = entry.required<std::string>("name", {.pattern = kNamePattern, .allowed = kNameAllowed});
  if (!is_valid_utf8(name)) {
    entry.fail("name", "must be UTF-8 text");
  }
  return name;
}

std::vector<PlateTypeCode> parse_plate_types(Section& codes) {
  std::vector<PlateTypeCode> out;
  std::map<std::pair<std::string, std::string>, std::string> seen;
  for (Section& entry : codes.sections("plate_types")) {
    PlateTypeCode c;
    c.plate_type =
        entry.required<std::string>("plate_type", {.pattern = kVendorPattern, .allowed = kVendorAllowed});
    c.plate_color = entry.optional<std::string>("plate_color", "",
                                                {.pattern = kVendorPattern, .allowed = kVendorAllowed});
    c.code =
        entry.required<std::string>("code", {.pattern = "[0-9]{2}", .allowed = "a GA 24.7 code, two digits"});
    c.name = read_name(entry);
    const auto [it, inserted] = seen.emplace(std::pair{c.plate_type, c.plate_color}, entry.place());
    if (!inserted) {
      entry.fail_here("a second entry for plate_type " + c.plate_type +
                      (c.plate_color.empty() ? "" : " and plate_color " + c.plate_color) + " (first at " +
                      it->second + ")");
    }
    entry.finish();
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<VehicleTypeCode> parse_vehicle_types(Section& codes) {
  std::vector<VehicleTypeCode> out;
  std::map<std::string, std::string> seen;
  for (Section& entry : codes.sections("vehicle_types")) {
    VehicleTypeCode c;
    c.vehicle_type =
        entry.required<std::string>("vehicle_type", {.pattern = kVendorPattern, .allowed = kVendorAllowed});
    c.code = entry.required<std::string>(
        "code", {.pattern = "[A-Z][0-9]{2}", .allowed = "a GA 24.4 code, a capital letter and two digits"});
    c.name = read_name(entry);
    const auto [it, inserted] = seen.emplace(c.vehicle_type, entry.place());
    if (!inserted) {
      entry.fail_here("a second entry for vehicle_type " + c.vehicle_type + " (first at " + it->second + ")");
    }
    entry.finish();
    out.push_back(std::move(c));
  }
  return out;
}

CodesSection parse_codes(Section& root) {
  CodesSection out = default_codes();
  auto section = root.optional_section("codes");
  if (!section) {
    return out;
  }
  if (section->has("plate_types")) {
    out.plate_types = parse_plate_types(*section);
  }
  if (section->has("vehicle_types")) {
    out.vehicle_types = parse_vehicle_types(*section);
  }
  return out;
}

ValiditySection parse_validity(Section& root) {
  ValiditySection out;
  auto section = root.optional_section("validity");
  if (!section) {
    return out;
  }
  Section& v = *section;
  out.max_camera_clock_offset_ms =
      v.optional<int>("max_camera_clock_offset_ms", out.max_camera_clock_offset_ms, {.min = 0, .max = 60000});
  out.clock_sync = v.optional<std::string>("clock_sync", out.clock_sync, {.one_of = {"kernel", "assume"}});
  out.min_pictures_speeding =
      v.optional<int>("min_pictures_speeding", out.min_pictures_speeding, {.min = 0, .max = 10});
  out.max_device_time_skew_s =
      v.optional<int>("max_device_time_skew_s", out.max_device_time_skew_s, {.min = 1, .max = 86400});
  out.min_panoramas_speeding =
      v.optional<int>("min_panoramas_speeding", out.min_panoramas_speeding, {.min = 0, .max = 10});
  out.min_picture_width =
      v.optional<int>("min_picture_width", out.min_picture_width, {.min = 1, .max = 65500});
  out.min_picture_height =
      v.optional<int>("min_picture_height", out.min_picture_height, {.min = 1, .max = 65500});
  return out;
}

LinksSection parse_links(Section& root) {
  LinksSection out;
  auto section = root.optional_section("links");
  if (!section) {
    return out;
  }
  Section& l = *section;
  out.margin_before_s = l.optional<int>("margin_before_s", out.margin_before_s, {.min = 0, .max = 3600});
  out.margin_after_s = l.optional<int>("margin_after_s", out.margin_after_s, {.min = 0, .max = 3600});
  return out;
}

MetricsSection parse_metrics(Section& root) {
  MetricsSection out;
  auto section = root.optional_section("metrics");
  if (!section) {
    return out;
  }
  Section& m = *section;
  out.enabled = m.optional<bool>("enabled", out.enabled);
  out.host = m.optional<std::string>("host", out.host,
                                     {.pattern = "[0-9.]{7,15}|[0-9A-Fa-f:]{2,39}",
                                      .allowed = "a numeric IPv4 or IPv6 address, e.g. 127.0.0.1"});
  out.port = m.optional<int>("port", out.port, {.min = 0, .max = 65535});
  return out;
}

ControlSection parse_control(Section& root, const StoreSection& store) {
  ControlSection out;
  out.socket = (std::filesystem::path(store.path).parent_path() / "control.sock").string();
  auto section = root.optional_section("control");
  if (!section) {
    return out;
  }
  Section& c = *section;
  // sun_path holds 107 characters and a NUL.
  out.socket = c.optional<std::string>(
      "socket", out.socket,
      {.pattern = "[^\\s].{0,106}", .allowed = "a unix socket path of at most 107 characters"});
  return out;
}

CustodySection parse_custody(Section& root) {
  CustodySection out;
  auto section = root.optional_section("custody");
  if (!section) {
    return out;
  }
  Section& c = *section;
  for (Section key : c.sections("central_keys", 1)) {
    const std::string path = resolve_path(
        key, key.required<std::string>("pem", {.pattern = kPathPattern, .allowed = kPathAllowed}));
    std::string pem = read_named_file(key, "pem", path, "central public key", false);
    if (pem.find("-----BEGIN PUBLIC KEY-----") == std::string::npos) {
      key.fail("pem", "central public key '" + path + "' holds no PEM 'PUBLIC KEY' block");
    }
    try {
      (void)Ed25519PublicKey::from_pem(pem);
    } catch (const KeyError& e) {
      key.fail("pem", "central public key '" + path + "' is not an Ed25519 public key: " + e.what());
    }
    key.finish();
    out.central_key_paths.push_back(path);
    out.central_keys_pem.push_back(std::move(pem));
  }
  out.enabled = true;
  out.head_interval_ms =
      c.optional<int>("head_interval_ms", out.head_interval_ms, {.min = 100, .max = 3600000});
  out.resend_records_per_s =
      c.optional<int>("resend_records_per_s", out.resend_records_per_s, {.min = 1, .max = 1000000});
  out.resend_max_queued =
      c.optional<int>("resend_max_queued", out.resend_max_queued, {.min = 1, .max = 1000});
  out.retention_check_ms =
      c.optional<int>("retention_check_ms", out.retention_check_ms, {.min = 100, .max = 86400000});
  out.record_min_interval_s =
      c.optional<int>("record_min_interval_s", out.record_min_interval_s, {.min = 0, .max = 86400});
  out.empty_store_wait_ms =
      c.optional<int>("empty_store_wait_ms", out.empty_store_wait_ms, {.min = 0, .max = 600000});
  if (auto rec = c.optional_section("recordings")) {
    Section& r = *rec;
    out.recordings_policy = r.optional<std::string>("policy", out.recordings_policy,
                                                    {.one_of = {"all", "important", "on_request"}});
    out.recordings_rate_kib_s =
        r.optional<int>("rate_kib_s", out.recordings_rate_kib_s, {.min = 1, .max = 10 * 1024 * 1024});
    // Unset, a segment is at most a second's worth of the rate (the token bucket holds one second): a config
    // that lowers only rate_kib_s keeps loading. Set, a larger one is refused.
    const bool segment_set = r.has("segment_kib");
    out.recordings_segment_kib =
        r.optional<int>("segment_kib", std::min(out.recordings_segment_kib, out.recordings_rate_kib_s),
                        {.min = 4, .max = 16384});
    if (!segment_set) {
      out.recordings_segment_kib = std::max(4, out.recordings_segment_kib);
    } else if (out.recordings_segment_kib > out.recordings_rate_kib_s) {
      r.fail("segment_kib", "a segment (" + std::to_string(out.recordings_segment_kib) +
                                " KiB) may not exceed a second's worth of rate_kib_s (" +
                                std::to_string(out.recordings_rate_kib_s) + ")");
    }
    out.recordings_receipt_wait_ms =
        r.optional<int>("receipt_wait_ms", out.recordings_receipt_wait_ms, {.min = 100, .max = 3600000});
    r.finish();
  }
  return out;
}

Config parse_document(const YAML::Node& document, const std::string& name) {
  auto context = std::make_shared<LoadContext>();
  context->file = name;
  Section root = Section::root(document, context);
  Config config;
  config.source = name;
  // The gateway comes first whatever the file's order: device sections need the site's UTC offset.
  config.gateway = parse_gateway(root.section("gateway"), config);
  context->utc_offset_min = config.gateway.site.utc_offset_min;
  config.store = parse_store(root.section("store"));
  config.mqtt = parse_mqtt_section(root.section("mqtt"), config.gateway.id);
  config.devices = parse_devices(root);
  config.correlation = parse_correlation(root, document);
  config.validity = parse_validity(root);
  config.codes = parse_codes(root);
  config.links = parse_links(root);
  config.metrics = parse_metrics(root);
  config.control = parse_control(root, config.store);
  config.custody = parse_custody(root);
  root.finish();
  return config;
}

}  // namespace

Config parse_config(std::string_view yaml_text, const std::string& name) {
  Config config = parse_document(load_yaml_document(yaml_text, name), name);
  config.sha256 = sha256_hex(yaml_text);
  return config;
}

Ed25519PrivateKey load_signing_key(const Config& config) {
  try {
    return Ed25519PrivateKey::load_pem_file(config.gateway.key_path);
  } catch (const KeyError& e) {
    throw ConfigError(config.source, config.key_line, config.key_column, "gateway.key",
                      std::string(e.what()) + " (checkpointd refuses to start without its signing key)");
  }
}

Config load_config(const std::string& path) {
  return parse_config(read_config_file(path), path);
}

}  // namespace cpd::config
