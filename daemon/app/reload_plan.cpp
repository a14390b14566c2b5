// Compares two loaded configs section by section and device by device (by id), using the config
// structs' equality, so a changed secret file (camera password, dock token) counts as a changed device.
#include "daemon/app/reload_plan.h"

#include <algorithm>
#include <map>

namespace cpd::app {

namespace {

const config::DeviceConfig* find_device(const config::Config& cfg, const std::string& id) {
  for (const auto& dev : cfg.devices) {
    if (dev.id == id) {
      return &dev;
    }
  }
  return nullptr;
}

std::string joined(const std::vector<std::string>& items, const char* mark) {
  std::string out;
  for (const auto& item : items) {
    out += ' ';
    out += mark;
    out += item;
  }
  return out;
}

}  // namespace

ReloadPlan plan_reload(const config::Config& running, const config::Config& next) {
  ReloadPlan plan;
  for (const auto& dev : next.devices) {
    const auto* old = find_device(running, dev.id);
    if (old == nullptr) {
      plan.added.push_back(dev.id);
    } else if (old->kind != dev.kind || !(old->settings == dev.settings)) {
      plan.changed.push_back(dev.id);
    } else {
      plan.unchanged.push_back(dev.id);
    }
  }
  for (const auto& dev : running.devices) {
    if (find_device(next, dev.id) == nullptr) {
      plan.removed.push_back(dev.id);
    }
  }
  for (auto* list : {&plan.added, &plan.removed, &plan.changed, &plan.unchanged}) {
    std::sort(list->begin(), list->end());
  }
  if (!(running.correlation == next.correlation)) {
    plan.live_sections.push_back("correlation");
  }
  if (!(running.validity == next.validity)) {
    plan.live_sections.push_back("validity");
  }
  if (!(running.codes == next.codes)) {
    plan.live_sections.push_back("codes");  // applied live (the correlator's code tables)
  }
  const std::pair<const char*, bool> fixed[] = {
      {"gateway", running.gateway == next.gateway}, {"store", running.store == next.store},
      {"mqtt", running.mqtt == next.mqtt},          {"links", running.links == next.links},
      {"metrics", running.metrics == next.metrics}, {"control", running.control == next.control},
      {"custody", running.custody == next.custody},
  };
  for (const auto& [name, same] : fixed) {
    if (!same) {
      plan.restart_sections.push_back(name);
    }
  }
  return plan;
}

nlohmann::json ReloadPlan::to_json() const {
  nlohmann::json out = {{"devices_added", added},
                        {"devices_removed", removed},
                        {"devices_changed", changed},
                        {"sections_changed", live_sections}};
  if (!restart_sections.empty()) {
    out["sections_needing_restart"] = restart_sections;
  }
  return out;
}

std::string ReloadPlan::summary() const {
  if (!changes_anything() && restart_sections.empty()) {
    return "no change";
  }
  std::string out = "devices";
  out += added.empty() && removed.empty() && changed.empty() ? " unchanged" : "";
  out += joined(added, "+") + joined(removed, "-") + joined(changed, "~");
  if (!live_sections.empty()) {
    out += "; sections" + joined(live_sections, "");
  }
  if (!restart_sections.empty()) {
    out += "; needing a restart" + joined(restart_sections, "");
  }
  return out;
}

}  // namespace cpd::app
