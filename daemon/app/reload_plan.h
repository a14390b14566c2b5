// What a reload (SIGHUP) changes between the running config and the file as it is now, and whether it can
// be applied while running. Pure: the daemon applies the plan and writes it into an audit record.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/config/config.h"

namespace cpd::app {

struct ReloadPlan {
  std::vector<std::string> added;  // device ids in the new file only: adapters started
  std::vector<std::string>
      removed;  // in the running config only: adapters stopped (open tracks still sealed)
  std::vector<std::string> changed;    // same id, other kind or settings: adapter stopped, then started anew
  std::vector<std::string> unchanged;  // left running, untouched
  // Sections applied live (correlation, validity: the correlator's rules for facts from now on).
  std::vector<std::string> live_sections;
  // Sections that only take effect at start (gateway, store, mqtt, links, metrics, control): a file that
  // changes one of them is refused as a whole, so the running config always equals one file's content.
  std::vector<std::string> restart_sections;

  bool applicable() const { return restart_sections.empty(); }
  bool changes_anything() const {
    return !added.empty() || !removed.empty() || !changed.empty() || !live_sections.empty();
  }
  // The plan as written into the audit record (ids sorted; restart_sections only when refused).
  nlohmann::json to_json() const;
  // One line for the log, e.g. "devices +radar-2 -camera-1 ~dock-1; sections correlation".
  std::string summary() const;
};

ReloadPlan plan_reload(const config::Config& running, const config::Config& next);

}  // namespace cpd::app
