// Correlator: device events in, facts out. Pure (no I/O, no clock of its own): every time comes in with
// the event, so unit tests fix it. Validity conditions are checked here and written into each fact.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "adapters/events.h"
#include "daemon/config/config.h"
#include "daemon/core/record.h"

namespace cpd::pipeline {

class Correlator {
 public:
  explicit Correlator(const config::Config& config);

  // Facts that follow from one event (possibly none, e.g. a repeated status).
  std::vector<Fact> on_event(const adapters::DeviceEvent& event);

  // The gateway's own audit facts (start, stop, config change).
  Fact audit(std::string event, UnixMs time_ms, nlohmann::json details) const;

 private:
  Fact speed_measurement(const adapters::RadarTrack& track) const;
  Fact device_status(const adapters::DeviceStatusEvent& status) const;
  nlohmann::json site_json() const;

  std::string gateway_id_;
  config::Site site_;
  std::map<std::string, adapters::RadarConfig> radars_;
};

// Degrees to the feed's integer 1e-7 degrees.
std::int64_t to_e7(double degrees);

}  // namespace cpd::pipeline
