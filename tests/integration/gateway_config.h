// The gateway's config file (checkpointd.yaml) for an integration test, built as a YAML tree: the keys most
// tests share come preset; a test adds its devices and sets, overrides or removes the rest.
#pragma once

#include <yaml-cpp/yaml.h>

#include <concepts>
#include <filesystem>
#include <string>

namespace cpd::testing {

namespace fs = std::filesystem;

// One entry of `devices` in a CheckpointdConfig, to set more of its keys. A handle on the config's tree: a
// change shows in the config it came from.
class DeviceEntry {
 public:
  explicit DeviceEntry(YAML::Node node) : node_(node) {}

  DeviceEntry& set(const std::string& key, const std::string& value);
  template <std::integral T>
  requires(!std::same_as<T, bool>) DeviceEntry& set(const std::string& key, T value) {
    return set(key, std::to_string(value));
  }
  // `key` from YAML text, e.g. set_yaml("tcp", "{host: 192.0.2.10, port: 4001}").
  DeviceEntry& set_yaml(const std::string& key, const std::string& yaml);
  // reconnect_initial_ms and reconnect_max_ms.
  DeviceEntry& reconnect(int initial_ms, int max_ms);
  // A radar's lanes: `count` (1 to 3) lanes 3.75 m wide, lane 1 from x 0.
  DeviceEntry& lanes(int count);
  // A radar's calibration certificate.
  DeviceEntry& calibration(const std::string& certificate, const std::string& valid_until);

 private:
  YAML::Node node_;
};

// checkpointd's config (named so beside custody_fixture.h's GatewayConfig, the custody tests' options).
// Keys are addressed by dotted paths ("store.reserve_mb", "mqtt.tls.ca_file"); setting one makes the maps on
// its way. A value is set as the scalar text the daemon reads ("0.0" stays "0.0"), never parsed as YAML.
class CheckpointdConfig {
 public:
  // Gateway test-gw-1 at "Test site" (G60 northbound, UTC+08:00), its key dir/gateway.key, the store
  // dir/store.db; the broker at `mqtt_uri` as client test-gw-1 under the topic prefix checkpoint,
  // reconnecting after 200 ms to 1 s. No devices.
  CheckpointdConfig(const fs::path& dir, const std::string& mqtt_uri);
  // Only the keys the daemon requires: gateway `id` at site "t" (G60 northbound, 30.0 N 120.0 E, no
  // utc_offset), key and store in `dir`, and of the mqtt section the uri alone (the daemon's defaults for the
  // rest). No devices.
  static CheckpointdConfig minimal(const fs::path& dir, const std::string& mqtt_uri,
                                   const std::string& id = "gw");

  // Deep copies (a YAML::Node copy would share the tree).
  CheckpointdConfig(const CheckpointdConfig& other);
  CheckpointdConfig& operator=(const CheckpointdConfig& other);

  // gateway.id, and mqtt.client_id when that is set.
  CheckpointdConfig& gateway_id(const std::string& id);

  CheckpointdConfig& set(const std::string& path, const std::string& value);
  template <std::integral T>
  requires(!std::same_as<T, bool>) CheckpointdConfig& set(const std::string& path, T value) {
    return set(path, std::to_string(value));
  }
  // The node at `path` from YAML text: set_yaml("metrics", "{enabled: false}"), or a whole section.
  CheckpointdConfig& set_yaml(const std::string& path, const std::string& yaml);
  // YAML text of top-level sections merged in: maps key by key (a key given again is replaced), sequences
  // appended; e.g. merge_yaml("devices:\n  - id: dock-1\n    kind: recorder_dock\n ...").
  CheckpointdConfig& merge_yaml(const std::string& yaml);
  // Removes the key at `path` (the daemon's default then applies).
  CheckpointdConfig& erase(const std::string& path);

  // A radar at 127.0.0.1:`port`: two lanes (lanes()), calibration JJG527-2026-0412 valid until 2099-12-31.
  DeviceEntry add_radar(const std::string& id, const std::string& port);
  DeviceEntry add_radar(const std::string& id, int port) { return add_radar(id, std::to_string(port)); }
  // An ANPR camera at `url` (http://host:port) as user admin with the password in `password_file`, paired
  // with radar-1.
  DeviceEntry add_camera(const std::string& id, const std::string& url, const fs::path& password_file);
  // A body-worn recorder dock at `url` with its token in `token_file`.
  DeviceEntry add_dock(const std::string& id, const std::string& url, const fs::path& token_file);

  std::string text() const;
  // Writes text() to `file` (replacing it) and returns it.
  std::string write(const fs::path& file) const;

 private:
  CheckpointdConfig() = default;
  YAML::Node add_device(const std::string& id, const std::string& kind);

  YAML::Node root_;
};

}  // namespace cpd::testing
