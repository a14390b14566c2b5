// Track building: one open track per radar target number, closed on timeout, reboot or disconnect;
// lane from the median lateral offset, speeds normalised to 0.1 km/h, peak with its time and status.
#include "adapters/radar/radar_tracks.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace cpd::adapters {

std::int32_t radar_speed_dkmh(std::int32_t speed_tenths, char units) {
  if (units == 'M') {
    return static_cast<std::int32_t>(std::lround(speed_tenths * 1.609344));
  }
  return speed_tenths;
}

std::int32_t radar_lateral_cm(const RadarDetect& d) {
  if (d.coord == 'P') {
    const double azimuth_rad = d.x_tenths / 10.0 * std::numbers::pi / 180.0;
    return static_cast<std::int32_t>(std::lround(d.range_dm * 10.0 * std::sin(azimuth_rad)));
  }
  return d.x_tenths * 10;
}

int radar_lane_for(const std::vector<RadarLane>& lanes, double lateral_m) {
  for (const auto& l : lanes) {
    if (lateral_m >= l.x_min && lateral_m < l.x_max) {
      return l.lane;
    }
  }
  return 0;
}

std::vector<LaneBand> radar_lane_bands(const std::vector<RadarLane>& lanes) {
  std::vector<LaneBand> bands;
  bands.reserve(lanes.size());
  for (const auto& l : lanes) {
    bands.push_back({l.lane, std::llround(l.x_min * 1000.0), std::llround(l.x_max * 1000.0)});
  }
  return bands;
}

int radar_lane_for_mm(const std::vector<LaneBand>& bands, std::int64_t lateral_mm) {
  for (const auto& b : bands) {
    if (lateral_mm >= b.x_min_mm && lateral_mm < b.x_max_mm) {
      return b.lane;
    }
  }
  return 0;
}

RadarTrackBuilder::RadarTrackBuilder(const RadarConfig& config, std::size_t max_frames_per_track)
    : device_id_(config.id),
      lanes_(radar_lane_bands(config.lanes)),
      timeout_ms_(config.track_timeout_ms),
      max_frames_(std::max<std::size_t>(max_frames_per_track, 1)),
      clock_(config.clock_window_s) {}

RadarTrackBuilder::Outcome RadarTrackBuilder::on_frame(const RadarFrame& frame, UnixMs received_ms) {
  Outcome out;
  const std::int64_t raw_cs = std::visit([](const auto& m) { return m.time_cs; }, frame.message);
  const auto mapping = clock_.observe(raw_cs, received_ms);
  counters_.clock_steps += mapping.step ? 1 : 0;
  out.clock_change = mapping.change;
  if (mapping.new_epoch) {
    // The radar restarted (or its clock holds again after a fault): its track numbers and clock start
    // over, so every open track is finished. Steps of a clock already unstable start no epoch: tracks go on.
    ++counters_.epochs;
    out.new_epoch = true;
    out.closed = close_all();
  }
  if (const auto* d = std::get_if<RadarDetect>(&frame.message)) {
    ++counters_.detect_frames;
    add_detect(*d, frame.raw, mapping, received_ms, out.closed);
  } else {
    const auto& s = std::get<RadarStatus>(frame.message);
    ++counters_.status_frames;
    if (s.code != status_.code) {
      status_ = RadarStatusSnapshot{s.code, s.text, mapping.utc_ms};
      out.status_change = status_;
    } else {
      status_.text = s.text;
    }
  }
  return out;
}

void RadarTrackBuilder::add_detect(const RadarDetect& d, const std::string& raw,
                                   const RadarClockMapper::Mapping& mapping, UnixMs received_ms,
                                   std::vector<RadarTrack>& closed) {
  const std::int64_t radar_cs = mapping.radar_time_cs;
  if (d.dir == 'X' || d.dir == 'Y') {
    ++counters_.test_targets;  // self-test targets are not vehicles
    return;
  }
  auto it = open_.find(d.target);
  // A reused track number after a gap in the radar's own time is a new vehicle, even when frames
  // arrive faster than real time (a backlog being drained). An unstable radar clock says nothing about
  // gaps: then the receive time does.
  const auto gap = [&](const OpenTrack& t) {
    return mapping.unstable ? received_ms - t.last_received_ms > timeout_ms_
                            : radar_cs - t.last_radar_cs > timeout_ms_ / 10;
  };
  if (it != open_.end() && gap(it->second)) {
    closed.push_back(close(it->second));
    open_.erase(it);
    it = open_.end();
  }
  if (it == open_.end()) {
    it = open_.emplace(d.target, OpenTrack{}).first;
    it->second.target = d.target;
  }
  OpenTrack& t = it->second;
  RadarSample s;
  s.radar_time_cs = radar_cs;
  s.time_ms = mapping.utc_ms;  // final while unstable; otherwise mapped again with the freshest estimate
  s.speed_dkmh = radar_speed_dkmh(d.speed_tenths, d.units);
  s.range_cm = d.range_dm * 10;
  s.lateral_cm = radar_lateral_cm(d);
  s.amplitude_ddb = d.amplitude_ddb;

  const bool new_peak = t.samples.empty() || s.speed_dkmh > t.samples[t.peak].speed_dkmh;
  if (t.samples.size() < max_frames_) {
    t.samples.push_back(s);
    t.raw_frames.push_back(raw);
    if (new_peak) {
      t.peak = t.samples.size() - 1;
    }
  } else if (new_peak) {
    // Full: keep the peak frame as evidence by letting it take the last slot.
    ++counters_.dropped_frames;
    t.samples.back() = s;
    t.raw_frames.back() = raw;
    t.peak = t.samples.size() - 1;
  } else {
    ++counters_.dropped_frames;
  }
  if (new_peak) {
    t.peak_approaching = d.dir == 'A';
    t.peak_units = d.units;
    t.peak_status = status_;
  }
  t.last_received_ms = received_ms;
  t.last_radar_cs = radar_cs;
  t.clock = clock_.estimate();
  t.clock_unstable = t.clock_unstable || mapping.unstable;
}

RadarTrack RadarTrackBuilder::close(OpenTrack& t) {
  // Use the freshest estimate of the track's epoch: more samples than when its last frame came.
  const RadarClockEstimate now = clock_.estimate();
  RadarClockEstimate clock = now.epoch == t.clock.epoch && now.unstable == t.clock_unstable ? now : t.clock;
  clock.unstable = t.clock_unstable;
  RadarTrack r;
  r.device_id = device_id_;
  r.target = t.target;
  r.approaching = t.peak_approaching;
  r.units = t.peak_units;
  r.status = t.peak_status;
  r.clock = clock;
  if (!t.clock_unstable) {
    for (auto& s : t.samples) {
      s.time_ms = s.radar_time_cs * 10 + clock.offset_ms;
    }
  }
  std::vector<std::int32_t> lateral;
  lateral.reserve(t.samples.size());
  for (const auto& s : t.samples) {
    lateral.push_back(s.lateral_cm);
  }
  std::sort(lateral.begin(), lateral.end());
  const std::size_t n = lateral.size();
  // In whole millimetres, so the record's reader decides the lane with the same integers.
  r.median_lateral_mm = n % 2 == 1 ? std::int64_t{lateral[n / 2]} * 10
                                   : (std::int64_t{lateral[n / 2 - 1]} + lateral[n / 2]) * 5;
  r.lane = radar_lane_for_mm(lanes_, r.median_lateral_mm);
  r.lane_bands = lanes_;
  r.peak_speed_dkmh = t.samples[t.peak].speed_dkmh;
  r.time_ms = t.samples[t.peak].time_ms;
  r.first_ms = t.samples.front().time_ms;
  r.last_ms = t.samples.back().time_ms;
  r.samples = std::move(t.samples);
  r.raw_frames = std::move(t.raw_frames);
  ++counters_.tracks;
  return r;
}

std::vector<RadarTrack> RadarTrackBuilder::close_all() {
  std::vector<RadarTrack> closed;
  for (auto& [target, t] : open_) {
    closed.push_back(close(t));
  }
  open_.clear();
  std::sort(closed.begin(), closed.end(),
            [](const RadarTrack& a, const RadarTrack& b) { return a.first_ms < b.first_ms; });
  return closed;
}

std::vector<RadarTrack> RadarTrackBuilder::expire(UnixMs now_ms) {
  std::vector<RadarTrack> closed;
  for (auto it = open_.begin(); it != open_.end();) {
    if (now_ms - it->second.last_received_ms >= timeout_ms_) {
      closed.push_back(close(it->second));
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  std::sort(closed.begin(), closed.end(),
            [](const RadarTrack& a, const RadarTrack& b) { return a.first_ms < b.first_ms; });
  return closed;
}

std::vector<RadarTrack> RadarTrackBuilder::on_disconnect() {
  clock_.on_disconnect();
  return close_all();
}

}  // namespace cpd::adapters
