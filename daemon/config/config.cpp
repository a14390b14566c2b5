// Loads the daemon's YAML config through the schema toolkit: every key typed, ranged and placed, unknown
// keys rejected, cross-key rules checked in the same pass. Device sections are read by their kind's parser.
#include "daemon/config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>

#include "daemon/config/schema.h"
#include "daemon/config/yaml_guard.h"
#include "daemon/core/encoding.h"

namespace cpd::config {

namespace {

constexpr std::size_t kMaxFileBytes = 1024 * 1024;  // a config is a few KiB; anything larger is a mistake

constexpr std::string_view kGatewayIdPattern = "[a-z0-9][a-z0-9-]{0,62}";
constexpr std::string_view kGatewayIdAllowed =
    "1 to 63 lower-case letters, digits or '-', starting with a letter or digit (it appears in MQTT topics "
    "and record ids)";
constexpr std::string_view kDeviceIdPattern = "[a-z0-9][a-z0-9_-]{0,62}";
constexpr std::string_view kDeviceIdAllowed =
    "1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit";
constexpr std::string_view kClientIdPattern = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}";
constexpr std::string_view kClientIdAllowed =
    "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit";
constexpr std::string_view kTopicPrefixPattern = "[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*";
constexpr std::string_view kTopicPrefixAllowed =
    "topic levels of letters, digits, '_', '.' or '-' separated by single '/' (no '+', '#', no leading or "
    "trailing '/')";
constexpr std::string_view kPrintablePattern = "[!-~]([ -~]{0,126}[!-~])?";
constexpr std::string_view kPrintableAllowed =
    "1 to 128 printable ASCII characters, no leading/trailing space";
constexpr std::string_view kPathPattern = "[^\\s].{0,4095}";
constexpr std::string_view kPathAllowed = "a non-empty file path";

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
  site.finish();
  return out;
}

GatewaySection parse_gateway(Section gateway) {
  GatewaySection out;
  out.id = gateway.required<std::string>("id", {.pattern = kGatewayIdPattern, .allowed = kGatewayIdAllowed});
  out.site = parse_site(gateway.section("site"));
  out.key_path = gateway.required<std::string>("key", {.pattern = kPathPattern, .allowed = kPathAllowed});
  gateway.finish();
  return out;
}

StoreSection parse_store(Section store) {
  StoreSection out;
  out.path = store.required<std::string>("path", {.pattern = kPathPattern, .allowed = kPathAllowed});
  out.commit_max_batch =
      store.optional<int>("commit_max_batch", out.commit_max_batch, {.min = 1, .max = 100000});
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
  store.finish();
  return out;
}

// Paho takes tcp:// and ssl://; mqtt:// and mqtts:// are accepted as the names people also use.
std::string parse_broker_uri(Section& mqtt) {
  const std::string uri =
      mqtt.required<std::string>("uri", {.allowed = "the broker as tcp://host:port or ssl://host:port"});
  static const std::regex kUri(
      "(tcp|ssl|mqtt|mqtts)://(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252})):([0-9]{1,5})");
  std::smatch m;
  if (std::regex_match(uri, m, kUri)) {
    const int port = std::stoi(m[4].str());
    if (port >= 1 && port <= 65535) {
      const std::string scheme = m[1].str();
      const bool tls = scheme == "ssl" || scheme == "mqtts";
      return (tls ? "ssl://" : "tcp://") + m[2].str() + ":" + std::to_string(port);
    }
  }
  mqtt.fail("uri",
            "must be tcp://host:port or ssl://host:port (mqtt:// and mqtts:// are aliases; port 1 to 65535), "
            "got '" +
                uri + "'");
}

// PEM files are checked for what they should hold, so a swapped cert/key pair fails at load.
std::string read_pem_file(Section& section, std::string_view key, const char* what, std::string_view marker,
                          bool private_file) {
  const std::string path =
      resolve_path(section, section.required<std::string>(key, {.pattern = kPathPattern, .allowed = kPathAllowed}));
  const std::string pem = read_named_file(section, key, path, what, private_file);
  if (pem.find(marker) == std::string::npos) {
    section.fail(key, std::string(what) + " '" + path + "' holds no PEM '" + std::string(marker) + "' block");
  }
  return path;
}

MqttTls parse_mqtt_tls(Section& mqtt, bool enabled) {
  MqttTls out;
  out.enabled = enabled;
  auto section = mqtt.optional_section("tls");
  if (!enabled) {
    if (section) {
      // A tls section with a plaintext uri would look secure and not be: refuse rather than ignore it.
      mqtt.fail("tls", "is only allowed with an ssl:// (or mqtts://) uri; uri is '" + mqtt.raw("uri") +
                           "' (plaintext): use ssl://host:port or remove the tls section");
    }
    return out;
  }
  if (!section) {
    mqtt.fail("tls", "is required with an ssl:// uri: give at least tls.ca_file (the CA that signed the "
                     "broker's certificate)");
  }
  Section& tls = *section;
  out.ca_file = read_pem_file(tls, "ca_file", "CA file", "-----BEGIN CERTIFICATE-----", false);
  const bool has_cert = tls.has("cert_file");
  const bool has_key = tls.has("key_file");
  if (has_cert != has_key) {
    tls.fail(has_cert ? "cert_file" : "key_file",
             "cert_file and key_file go together (mutual TLS): give both or neither");
  }
  if (has_cert) {
    out.cert_file = read_pem_file(tls, "cert_file", "client certificate file", "-----BEGIN CERTIFICATE-----", false);
    out.key_file = read_pem_file(tls, "key_file", "client key file", "PRIVATE KEY-----", true);
  }
  out.verify_hostname = tls.optional<bool>("verify_hostname", out.verify_hostname);
  tls.finish();
  return out;
}

void parse_mqtt_credentials(Section& mqtt, MqttSection& out) {
  out.username = mqtt.optional<std::string>(
      "username", "", {.pattern = "[^\\s\\x00-\\x1f]{1,128}", .allowed = "1 to 128 characters without spaces"});
  if (!mqtt.has("password_file")) {
    return;
  }
  const std::string written = mqtt.required<std::string>(
      "password_file", {.pattern = kPathPattern, .allowed = "the path of a file (mode 0600 or stricter)"});
  if (out.username.empty()) {
    mqtt.fail("password_file", "needs mqtt.username (MQTT sends a password only with a user name)");
  }
  out.password_file = resolve_path(mqtt, written);
  std::string password = read_named_file(mqtt, "password_file", out.password_file, "password file", true);
  // One trailing line end is how editors and `echo` leave the file; it is not part of the secret.
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (password.empty()) {
    mqtt.fail("password_file", "password file '" + out.password_file + "' is empty");
  }
  if (password.find_first_of("\r\n") != std::string::npos) {
    mqtt.fail("password_file", "password file '" + out.password_file + "' must hold the password on one line");
  }
  out.password = std::move(password);
}

MqttSection parse_mqtt(Section mqtt, const std::string& gateway_id) {
  MqttSection out;
  out.uri = parse_broker_uri(mqtt);
  out.tls = parse_mqtt_tls(mqtt, out.uri.rfind("ssl://", 0) == 0);
  parse_mqtt_credentials(mqtt, out);
  out.client_id = mqtt.optional<std::string>("client_id", gateway_id,
                                             {.pattern = kClientIdPattern, .allowed = kClientIdAllowed});
  out.topic_prefix = mqtt.optional<std::string>(
      "topic_prefix", out.topic_prefix, {.pattern = kTopicPrefixPattern, .allowed = kTopicPrefixAllowed});
  if (out.topic_prefix.size() > 128) {
    mqtt.fail("topic_prefix",
              "must be at most 128 characters, got " + std::to_string(out.topic_prefix.size()));
  }
  out.keepalive_s = mqtt.optional<int>("keepalive_s", out.keepalive_s, {.min = 5, .max = 65535});
  out.session_expiry_s = mqtt.optional<int>("session_expiry_s", out.session_expiry_s, {.min = 0});
  out.max_inflight = mqtt.optional<int>("max_inflight", out.max_inflight, {.min = 1, .max = 65535});
  out.connect_timeout_s =
      mqtt.optional<int>("connect_timeout_s", out.connect_timeout_s, {.min = 1, .max = 300});
  out.reconnect_min_ms =
      mqtt.optional<int>("reconnect_min_ms", out.reconnect_min_ms, {.min = 10, .max = 3600000});
  out.reconnect_max_ms =
      mqtt.optional<int>("reconnect_max_ms", out.reconnect_max_ms, {.min = 10, .max = 3600000});
  if (out.reconnect_max_ms < out.reconnect_min_ms) {
    mqtt.fail("reconnect_max_ms", "must be at least reconnect_min_ms (" +
                                      std::to_string(out.reconnect_min_ms) + "), got " +
                                      std::to_string(out.reconnect_max_ms));
  }
  mqtt.finish();
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
  out.host = m.optional<std::string>(
      "host", out.host,
      {.pattern = "[0-9.]{7,15}|[0-9A-Fa-f:]{2,39}", .allowed = "a numeric IPv4 or IPv6 address, e.g. 127.0.0.1"});
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
      "socket", out.socket, {.pattern = "[^\\s].{0,106}", .allowed = "a unix socket path of at most 107 characters"});
  return out;
}

Config parse_document(const YAML::Node& document, const std::string& name) {
  auto context = std::make_shared<LoadContext>();
  context->file = name;
  Section root = Section::root(document, context);
  Config config;
  config.source = name;
  // The gateway comes first whatever the file's order: device sections need the site's UTC offset.
  config.gateway = parse_gateway(root.section("gateway"));
  context->utc_offset_min = config.gateway.site.utc_offset_min;
  config.store = parse_store(root.section("store"));
  config.mqtt = parse_mqtt(root.section("mqtt"), config.gateway.id);
  config.devices = parse_devices(root);
  config.correlation = parse_correlation(root, document);
  config.validity = parse_validity(root);
  config.links = parse_links(root);
  config.metrics = parse_metrics(root);
  config.control = parse_control(root, config.store);
  root.finish();
  return config;
}

}  // namespace

Config parse_config(std::string_view yaml_text, const std::string& name) {
  check_yaml(yaml_text, name);  // malformed or oversized text never reaches yaml-cpp (see yaml_guard.h)
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) {
      throw ConfigError(name, 0, 0, "", "invalid YAML: " + e.msg);
    }
    throw ConfigError(name, e.mark.line + 1, e.mark.column + 1, "", "invalid YAML: " + e.msg);
  }
  if (documents.size() > 1) {
    const YAML::Mark mark = documents[1].Mark();
    throw ConfigError(name, mark.line < 0 ? 0 : mark.line + 1, mark.column < 0 ? 0 : mark.column + 1, "",
                      "expected one YAML document, found " + std::to_string(documents.size()));
  }
  Config config = parse_document(documents.empty() ? YAML::Node() : documents.front(), name);
  config.sha256 = sha256_hex(yaml_text);
  return config;
}

Config load_config(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw ConfigError(path, 0, 0, "", std::string("cannot open: ") + std::strerror(errno));
  }
  std::string bytes;
  std::array<char, 8192> buffer{};
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      throw ConfigError(path, 0, 0, "", std::string("cannot read: ") + std::strerror(error));
    }
    if (n == 0) {
      break;
    }
    bytes.append(buffer.data(), static_cast<std::size_t>(n));
    if (bytes.size() > kMaxFileBytes) {
      ::close(fd);
      throw ConfigError(path, 0, 0, "", "file is larger than " + std::to_string(kMaxFileBytes) + " bytes");
    }
  }
  ::close(fd);
  return parse_config(bytes, path);
}

}  // namespace cpd::config
