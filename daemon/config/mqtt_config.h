// The `mqtt` config section (broker uri, TLS, credentials, client id, topic prefix, timing), shared by
// checkpointd and checkpoint-central so both read a broker the same way.
#pragma once

#include <string>

#include "daemon/config/schema.h"

namespace cpd::config {

// TLS to the broker: on exactly when the uri is ssl:// (mqtts://). Paths are resolved against the config
// file's directory and were readable at load.
struct MqttTls {
  bool enabled = false;
  std::string ca_file;    // trust store (PEM): the CA(s) the broker's certificate must chain to
  std::string cert_file;  // client certificate for mutual TLS; empty = none (then key_file is empty too)
  std::string key_file;   // its private key, mode 0600 or stricter
  bool verify_hostname = true;  // the certificate must name the uri's host (DNS or IP SAN)

  bool operator==(const MqttTls&) const = default;
};

struct MqttSection {
  std::string uri;  // tcp://host:port or ssl://host:port (mqtt:// and mqtts:// normalised)
  MqttTls tls;
  std::string username;       // empty = none
  std::string password_file;  // as resolved; empty = none
  std::string password;       // read from password_file at load: never log it
  std::string client_id;
  std::string topic_prefix = "checkpoint";
  int keepalive_s = 30;
  int session_expiry_s = 7 * 24 * 3600;
  int max_inflight = 64;  // publishes awaiting PUBACK at once
  int connect_timeout_s = 10;
  int reconnect_min_ms = 500;
  int reconnect_max_ms = 30000;

  bool operator==(const MqttSection&) const = default;
};

// Reads and checks an `mqtt` section; `default_client_id` is used when client_id is absent.
MqttSection parse_mqtt_section(Section mqtt, const std::string& default_client_id);

}  // namespace cpd::config
