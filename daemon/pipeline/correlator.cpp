#include "daemon/pipeline/correlator.h"

#include <cmath>

namespace cpd::pipeline {

using nlohmann::json;

std::int64_t to_e7(double degrees) { return std::llround(degrees * 1e7); }

Correlator::Correlator(const config::Config& config)
    : gateway_id_(config.gateway.id), site_(config.gateway.site) {
  for (const auto& dev : config.devices) {
    if (const auto* radar = std::get_if<adapters::RadarConfig>(&dev.settings)) {
      radars_.emplace(dev.id, *radar);
    }
  }
}

std::vector<Fact> Correlator::on_event(const adapters::DeviceEvent& event) {
  std::vector<Fact> facts;
  if (const auto* track = std::get_if<adapters::RadarTrack>(&event)) {
    facts.push_back(speed_measurement(*track));
  } else if (const auto* status = std::get_if<adapters::DeviceStatusEvent>(&event)) {
    facts.push_back(device_status(*status));
  }
  return facts;
}

json Correlator::site_json() const {
  return json{{"gateway", gateway_id_},   {"name", site_.name},         {"road", site_.road},
              {"direction", site_.direction}, {"lat_e7", to_e7(site_.lat)}, {"lon_e7", to_e7(site_.lon)}};
}

Fact Correlator::speed_measurement(const adapters::RadarTrack& track) const {
  Fact fact;
  fact.type = "speed_measurement";
  fact.time_ms = track.time_ms;

  json calibration = {{"certificate", ""}, {"valid_until", ""}, {"valid", false}};
  json reasons = json::array();
  if (auto it = radars_.find(track.device_id); it != radars_.end()) {
    const auto& cal = it->second.calibration;
    const bool valid = track.time_ms < cal.valid_until_ms;
    calibration = {{"certificate", cal.certificate}, {"valid_until", cal.valid_until}, {"valid", valid}};
    if (!valid) {
      reasons.push_back("calibration_expired");
    }
  } else {
    reasons.push_back("radar_not_configured");
  }
  if (track.status.code < 0) {
    reasons.push_back("radar_status_unknown");
  } else if (track.status.code >= 20) {
    reasons.push_back("radar_fault");
  }
  if (track.lane == 0) {
    reasons.push_back("outside_lanes");
  }

  json speeds = json::array();
  json samples = json::array();
  for (const auto& s : track.samples) {
    speeds.push_back(s.speed_dkmh);
    samples.push_back({{"time_ms", s.time_ms},
                       {"radar_time_cs", s.radar_time_cs},
                       {"speed_dkmh", s.speed_dkmh},
                       {"range_cm", s.range_cm},
                       {"lateral_cm", s.lateral_cm},
                       {"amplitude_ddb", s.amplitude_ddb}});
  }
  fact.fields = {
      {"site", site_json()},
      {"device", track.device_id},
      {"lane", track.lane},
      {"direction", track.approaching ? "approaching" : "receding"},
      {"speed_dkmh", track.peak_speed_dkmh},
      {"speeds_dkmh", speeds},
      {"units_reported", std::string(1, track.units)},
      {"track",
       {{"target", track.target},
        {"first_ms", track.first_ms},
        {"last_ms", track.last_ms},
        {"frames", static_cast<std::int64_t>(track.raw_frames.size())},
        {"samples", samples}}},
      {"raw_frames", track.raw_frames},
      {"radar_clock",
       {{"offset_ms", track.clock.offset_ms},
        {"samples", track.clock.samples},
        {"window_ms", track.clock.window_ms},
        {"epoch", track.clock.epoch},
        {"wraps", track.clock.wraps}}},
      {"calibration", calibration},
      {"radar_status", {{"code", track.status.code}, {"text", track.status.text}}},
      {"valid", reasons.empty()},
      {"invalid_reasons", reasons},
  };
  return fact;
}

Fact Correlator::device_status(const adapters::DeviceStatusEvent& status) const {
  Fact fact;
  fact.type = "device_status";
  fact.time_ms = status.time_ms;
  fact.fields = {{"site", site_json()},
                 {"device", status.device_id},
                 {"kind", status.kind},
                 {"state", status.state},
                 {"code", status.code},
                 {"text", status.text}};
  if (status.raw_frame) {
    fact.fields["raw_frame"] = *status.raw_frame;
  }
  return fact;
}

Fact Correlator::audit(std::string event, UnixMs time_ms, json details) const {
  Fact fact;
  fact.type = "audit";
  fact.time_ms = time_ms;
  fact.fields = std::move(details);
  fact.fields["event"] = std::move(event);
  fact.fields["site"] = site_json();
  return fact;
}

}  // namespace cpd::pipeline
