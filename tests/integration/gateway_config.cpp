#include "tests/integration/gateway_config.h"

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace cpd::testing {

namespace {

std::vector<std::string> config_path_parts(const std::string& path) {
  std::vector<std::string> parts;
  std::istringstream in(path);
  for (std::string part; std::getline(in, part, '.');) {
    parts.push_back(part);
  }
  if (parts.empty()) {
    throw std::invalid_argument("empty config path");
  }
  return parts;
}

// The node at `parts` below `root`. A missing one is created only once something is assigned to it.
YAML::Node config_node_at(const YAML::Node& root, const std::vector<std::string>& parts) {
  YAML::Node node = root;
  for (const auto& part : parts) {
    // reset(), not operator=: assigning a Node writes into the tree instead of moving down it.
    YAML::Node child = node[part];
    node.reset(child);
  }
  return node;
}

YAML::Node flow(YAML::Node node) {
  node.SetStyle(YAML::EmitterStyle::Flow);
  return node;
}

void merge_config_node(YAML::Node target, const YAML::Node& source) {
  for (const auto& entry : source) {
    YAML::Node into = target[entry.first.Scalar()];
    if (entry.second.IsMap() && into.IsMap()) {
      merge_config_node(into, entry.second);
    } else if (entry.second.IsSequence() && into.IsSequence()) {
      for (const auto& item : entry.second) {
        into.push_back(item);
      }
    } else {
      into = entry.second;
    }
  }
}

}  // namespace

DeviceEntry& DeviceEntry::set(const std::string& key, const std::string& value) {
  node_[key] = value;
  return *this;
}

DeviceEntry& DeviceEntry::set_yaml(const std::string& key, const std::string& yaml) {
  node_[key] = YAML::Load(yaml);
  return *this;
}

DeviceEntry& DeviceEntry::reconnect(int initial_ms, int max_ms) {
  return set("reconnect_initial_ms", initial_ms).set("reconnect_max_ms", max_ms);
}

DeviceEntry& DeviceEntry::lanes(int count) {
  static const char* const kEdges[] = {"0.0", "3.75", "7.5", "11.25"};
  if (count < 1 || count > 3) {
    throw std::invalid_argument("lanes: 1 to 3");
  }
  YAML::Node lanes(YAML::NodeType::Sequence);
  for (int i = 0; i < count; ++i) {
    YAML::Node lane(YAML::NodeType::Map);
    lane["lane"] = std::to_string(i + 1);
    lane["x_min"] = kEdges[i];
    lane["x_max"] = kEdges[i + 1];
    lanes.push_back(flow(lane));
  }
  node_["lanes"] = flow(lanes);
  return *this;
}

DeviceEntry& DeviceEntry::calibration(const std::string& certificate, const std::string& valid_until) {
  YAML::Node calibration(YAML::NodeType::Map);
  calibration["certificate"] = certificate;
  calibration["valid_until"] = valid_until;
  node_["calibration"] = flow(calibration);
  return *this;
}

CheckpointdConfig::CheckpointdConfig(const fs::path& dir, const std::string& mqtt_uri) {
  root_["gateway"]["id"] = "test-gw-1";
  root_["gateway"]["site"] = YAML::Load(
      "{name: \"Test site\", road: G60, direction: N, lat: 30.274085, lon: 120.15507, utc_offset: "
      "\"+08:00\"}");
  root_["gateway"]["key"] = (dir / "gateway.key").string();
  root_["store"]["path"] = (dir / "store.db").string();
  root_["mqtt"]["uri"] = mqtt_uri;
  root_["mqtt"]["client_id"] = "test-gw-1";
  root_["mqtt"]["topic_prefix"] = "checkpoint";
  root_["mqtt"]["reconnect_min_ms"] = "200";
  root_["mqtt"]["reconnect_max_ms"] = "1000";
}

CheckpointdConfig CheckpointdConfig::minimal(const fs::path& dir, const std::string& mqtt_uri,
                                             const std::string& id) {
  CheckpointdConfig config;
  config.root_["gateway"]["id"] = id;
  config.root_["gateway"]["site"] = YAML::Load("{name: t, road: G60, direction: N, lat: 30.0, lon: 120.0}");
  config.root_["gateway"]["key"] = (dir / "gateway.key").string();
  config.root_["store"]["path"] = (dir / "store.db").string();
  config.root_["mqtt"]["uri"] = mqtt_uri;
  return config;
}

CheckpointdConfig::CheckpointdConfig(const CheckpointdConfig& other) : root_(YAML::Clone(other.root_)) {}

CheckpointdConfig& CheckpointdConfig::operator=(const CheckpointdConfig& other) {
  if (this != &other) {
    root_.reset(YAML::Clone(other.root_));
  }
  return *this;
}

CheckpointdConfig& CheckpointdConfig::gateway_id(const std::string& id) {
  root_["gateway"]["id"] = id;
  if (root_["mqtt"]["client_id"]) {
    root_["mqtt"]["client_id"] = id;
  }
  return *this;
}

CheckpointdConfig& CheckpointdConfig::set(const std::string& path, const std::string& value) {
  config_node_at(root_, config_path_parts(path)) = value;
  return *this;
}

CheckpointdConfig& CheckpointdConfig::set_yaml(const std::string& path, const std::string& yaml) {
  config_node_at(root_, config_path_parts(path)) = YAML::Load(yaml);
  return *this;
}

CheckpointdConfig& CheckpointdConfig::merge_yaml(const std::string& yaml) {
  merge_config_node(root_, YAML::Load(yaml));
  return *this;
}

CheckpointdConfig& CheckpointdConfig::erase(const std::string& path) {
  auto parts = config_path_parts(path);
  const std::string key = parts.back();
  parts.pop_back();
  YAML::Node parent = config_node_at(root_, parts);
  if (parent.IsMap()) {
    parent.remove(key);
  }
  return *this;
}

YAML::Node CheckpointdConfig::add_device(const std::string& id, const std::string& kind) {
  YAML::Node device(YAML::NodeType::Map);
  device["id"] = id;
  device["kind"] = kind;
  root_["devices"].push_back(device);  // the same node: what is set on it later shows in the tree
  return device;
}

DeviceEntry CheckpointdConfig::add_radar(const std::string& id, const std::string& port) {
  YAML::Node radar = add_device(id, "radar");
  YAML::Node tcp(YAML::NodeType::Map);
  tcp["host"] = "127.0.0.1";
  tcp["port"] = port;
  radar["tcp"] = flow(tcp);
  return DeviceEntry(radar).lanes(2).calibration("JJG527-2026-0412", "2099-12-31");
}

DeviceEntry CheckpointdConfig::add_camera(const std::string& id, const std::string& url,
                                          const fs::path& password_file) {
  return DeviceEntry(add_device(id, "camera"))
      .set("url", url)
      .set("username", "admin")
      .set("password_file", password_file.string())
      .set("radar", "radar-1");
}

DeviceEntry CheckpointdConfig::add_dock(const std::string& id, const std::string& url,
                                        const fs::path& token_file) {
  return DeviceEntry(add_device(id, "recorder_dock")).set("url", url).set("token_file", token_file.string());
}

std::string CheckpointdConfig::text() const {
  YAML::Emitter out;
  out << root_;
  if (!out.good()) {
    throw std::runtime_error("cannot emit the config: " + out.GetLastError());
  }
  return std::string(out.c_str()) + "\n";
}

std::string CheckpointdConfig::write(const fs::path& file) const {
  const std::string yaml = text();
  std::ofstream out(file, std::ios::trunc);
  out << yaml;
  if (!out.flush()) {
    throw std::runtime_error("cannot write " + file.string());
  }
  return yaml;
}

}  // namespace cpd::testing
