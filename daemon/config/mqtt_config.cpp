// The `mqtt` section: broker uri (tcp/ssl), TLS files checked for what they hold, credentials from a
// private file, client id and topic prefix patterns, reconnect timing.
#include "daemon/config/mqtt_config.h"

#include <regex>
#include <string_view>

namespace cpd::config {

namespace {

constexpr std::string_view kClientIdPattern = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}";
constexpr std::string_view kClientIdAllowed =
    "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit";
constexpr std::string_view kTopicPrefixPattern = "[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*";
constexpr std::string_view kTopicPrefixAllowed =
    "topic levels of letters, digits, '_', '.' or '-' separated by single '/' (no '+', '#', no leading or "
    "trailing '/')";

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
  const std::string path = resolve_path(
      section, section.required<std::string>(key, {.pattern = kPathPattern, .allowed = kPathAllowed}));
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
    mqtt.fail("tls",
              "is required with an ssl:// uri: give at least tls.ca_file (the CA that signed the "
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
    out.cert_file =
        read_pem_file(tls, "cert_file", "client certificate file", "-----BEGIN CERTIFICATE-----", false);
    out.key_file = read_pem_file(tls, "key_file", "client key file", "PRIVATE KEY-----", true);
  }
  out.verify_hostname = tls.optional<bool>("verify_hostname", out.verify_hostname);
  tls.finish();
  return out;
}

void parse_mqtt_credentials(Section& mqtt, MqttSection& out) {
  out.username = mqtt.optional<std::string>(
      "username", "",
      {.pattern = "[^\\s\\x00-\\x1f]{1,128}", .allowed = "1 to 128 characters without spaces"});
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
    mqtt.fail("password_file",
              "password file '" + out.password_file + "' must hold the password on one line");
  }
  out.password = std::move(password);
}

}  // namespace

MqttSection parse_mqtt_section(Section mqtt, const std::string& default_client_id) {
  MqttSection out;
  out.uri = parse_broker_uri(mqtt);
  out.tls = parse_mqtt_tls(mqtt, out.uri.rfind("ssl://", 0) == 0);
  parse_mqtt_credentials(mqtt, out);
  out.client_id = mqtt.optional<std::string>("client_id", default_client_id,
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

}  // namespace cpd::config
