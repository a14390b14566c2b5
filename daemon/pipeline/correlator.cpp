// Correlation of radar tracks with plate reads, and the validity checks written into each fact.
// Matching is decided per connected group of candidates, only once the group can no longer grow (or a
// member's wait is over), so the result does not depend on the order in which events arrived.
#include "daemon/pipeline/correlator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>
#include <utility>

#include "daemon/core/sealer.h"

namespace cpd::pipeline {

using nlohmann::json;

namespace {

constexpr int kDefaultTrackTimeoutMs = 400;

// Device times are untrusted: arithmetic on them saturates instead of overflowing.
std::int64_t abs_diff(UnixMs a, UnixMs b) {
  std::int64_t d = 0;
  if (__builtin_sub_overflow(a > b ? a : b, a > b ? b : a, &d)) {
    return std::numeric_limits<std::int64_t>::max();
  }
  return d;
}

std::int64_t minus(UnixMs a, UnixMs b) {
  std::int64_t d = 0;
  if (__builtin_sub_overflow(a, b, &d)) {
    return a > b ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
  }
  return d;
}

// Text a device sent that is not UTF-8 is escaped with its exact bytes beside it (docs/records.md), so
// every fact leaving the correlator can be sealed whatever the devices sent.
std::vector<Fact> sealable(std::vector<Fact> facts) {
  for (auto& f : facts) {
    escape_text_not_utf8(f.fields);
  }
  return facts;
}

UnixMs plus(UnixMs t, std::int64_t ms) {
  UnixMs out = 0;
  if (__builtin_add_overflow(t, ms, &out)) {
    return ms > 0 ? std::numeric_limits<UnixMs>::max() : std::numeric_limits<UnixMs>::min();
  }
  return out;
}

std::string track_tie(const adapters::RadarTrack& t) {
  return "t/" + t.device_id + "/" + std::to_string(t.target) + "/" + std::to_string(t.first_ms);
}

std::string read_tie(const adapters::PlateRead& r) {
  return "r/" + r.device_id + "/" + r.uuid;
}

// Total order of identical-|dt| candidates: earlier times first, then the radar's target number and the
// camera's UUID. Two events equal in all of this are the same event, so which one wins does not matter.
auto track_key(const adapters::RadarTrack& t) {
  return std::tie(t.time_ms, t.device_id, t.target, t.first_ms, t.last_ms);
}
auto read_key(const adapters::PlateRead& r) {
  return std::tie(r.time_ms, r.device_id, r.uuid, r.camera_time_ms);
}

}  // namespace

std::int64_t to_e7(double degrees) {
  return std::llround(degrees * 1e7);
}

bool plate_unreadable(const std::string& plate) {
  return plate.empty() || plate == "unknown";
}

Correlator::Correlator(const config::Config& config)
    : gateway_id_(config.gateway.id),
      site_(config.gateway.site),
      correlation_(config.correlation),
      validity_(config.validity) {
  link_rule_.margin_before_ms = std::int64_t{config.links.margin_before_s} * 1000;
  link_rule_.margin_after_ms = std::int64_t{config.links.margin_after_s} * 1000;
  reconfigure(config);
}

void Correlator::reconfigure(const config::Config& config) {
  correlation_ = config.correlation;
  validity_ = config.validity;
  config_sha256_ = config.sha256;
  codes_ = config.codes;
  radars_.clear();
  watched_radars_.clear();
  for (const auto& dev : config.devices) {
    if (const auto* radar = std::get_if<adapters::RadarConfig>(&dev.settings)) {
      radars_.emplace(dev.id, *radar);
    } else if (const auto* camera = std::get_if<adapters::CameraConfig>(&dev.settings)) {
      if (!camera->radar.empty()) {
        watched_radars_.insert(camera->radar);
      }
    }
  }
}

void Correlator::set_clock_sync(ClockSync state) {
  clock_sync_ = std::move(state);
}

std::size_t Correlator::pending() const {
  return tracks_.size() + reads_.size();
}

int Correlator::settle_ms(const std::string& radar_id) const {
  const auto it = radars_.find(radar_id);
  return (it == radars_.end() ? kDefaultTrackTimeoutMs : it->second.track_timeout_ms) + kSettleMarginMs;
}

std::vector<Fact> Correlator::on_event(const adapters::DeviceEvent& event, UnixMs now) {
  std::vector<Fact> facts;
  if (const auto* track = std::get_if<adapters::RadarTrack>(&event)) {
    // No camera watches this radar, or the vehicle was outside every lane: nothing can pair with it.
    if (watched_radars_.count(track->device_id) == 0 || track->lane < 1) {
      facts.push_back(speed_measurement(*track, now));
    } else {
      tracks_.push_back({*track, now, 0});
    }
  } else if (const auto* read = std::get_if<adapters::PlateRead>(&event)) {
    if (radars_.count(read->radar_id) == 0) {
      facts.push_back(plate_read(*read, now, 0, "no_radar"));
    } else if (read->lane < 1) {
      facts.push_back(plate_read(*read, now, 0, "outside_lanes"));
    } else {
      reads_.push_back({*read, now, 0});
    }
  } else if (const auto* status = std::get_if<adapters::DeviceStatusEvent>(&event)) {
    facts.push_back(device_status(*status));
  }
  return sealable(std::move(facts));
}

std::vector<Fact> Correlator::tick(UnixMs now) {
  // Pairing is quadratic in what is pending; a flood (a device gone mad) is recorded at once rather than
  // allowed to stall the pipeline. Normal traffic holds a few dozen items.
  return decide(now, pending() > kMaxPending);
}

std::vector<Fact> Correlator::flush() {
  return decide(0, true);
}

// One decide() pass: the pending items as nodes (tracks 0..n_tracks-1, then reads), their candidate pairs,
// the groups the pairs link, which nodes' groups are decided, and the facts released so far.
struct Correlator::Decision {
  // Union-find over the pending items, to find the groups of items linked by candidate pairs.
  class Groups {
   public:
    explicit Groups(std::size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), std::size_t{0}); }
    std::size_t find(std::size_t x) {
      while (parent_[x] != x) {
        parent_[x] = parent_[parent_[x]];
        x = parent_[x];
      }
      return x;
    }
    void join(std::size_t a, std::size_t b) { parent_[find(a)] = find(b); }

   private:
    std::vector<std::size_t> parent_;
  };
  struct Candidate {
    std::size_t track = 0;
    std::size_t read = 0;
    std::int64_t abs_dt_ms = 0;
  };
  // A fact with the key that orders facts released together: by time, then a stable identity, so the
  // sequence of records does not depend on the arrival order of events either.
  struct Released {
    UnixMs time_ms = 0;
    std::string tie;
    Fact fact;
  };

  Decision(std::size_t tracks, std::size_t reads)
      : n_tracks(tracks),
        n_reads(reads),
        track_degree(tracks, 0),
        read_degree(reads, 0),
        groups(tracks + reads),
        track_done(tracks, false),
        read_done(reads, false) {}

  std::size_t n_tracks;
  std::size_t n_reads;
  std::vector<Candidate> candidates;
  std::vector<int> track_degree;  // most candidates each item has had at once
  std::vector<int> read_degree;
  Groups groups;
  std::vector<bool> decided;  // per node: its group is decided
  std::vector<bool> track_done;
  std::vector<bool> read_done;
  std::vector<Released> out;
};

std::vector<Fact> Correlator::decide(UnixMs now, bool force) {
  if (tracks_.empty() && reads_.empty()) {
    return {};
  }
  Decision d(tracks_.size(), reads_.size());
  find_candidates(d);
  mark_decided(d, now, force);
  pair_decided(d);
  release_unpaired(d, now, force);

  std::sort(d.out.begin(), d.out.end(), [](const Decision::Released& a, const Decision::Released& b) {
    return std::tie(a.time_ms, a.tie) < std::tie(b.time_ms, b.tie);
  });
  std::vector<Fact> facts;
  facts.reserve(d.out.size());
  for (auto& r : d.out) {
    facts.push_back(std::move(r.fact));
  }
  return sealable(std::move(facts));
}

// Every candidate pair among the pending items (unreadable reads included: they claim their own vehicle's
// track, so it is not handed to a neighbour's read; such a pair still comes out unmatched), sorted greedy
// order: smallest |dt| first, ties broken by a total order (deterministic for a given set).
void Correlator::find_candidates(Decision& d) {
  for (std::size_t r = 0; r < d.n_reads; ++r) {
    const auto& read = reads_[r].read;
    for (std::size_t t = 0; t < d.n_tracks; ++t) {
      const auto& track = tracks_[t].track;
      const std::int64_t dt = abs_diff(read.time_ms, track.time_ms);
      if (read.radar_id == track.device_id && read.lane == track.lane && dt <= correlation_.window_ms) {
        d.candidates.push_back({t, r, dt});
        ++d.track_degree[t];
        ++d.read_degree[r];
        d.groups.join(t, d.n_tracks + r);
      }
    }
  }
  for (std::size_t t = 0; t < d.n_tracks; ++t) {
    tracks_[t].candidates = std::max(tracks_[t].candidates, d.track_degree[t]);
    d.track_degree[t] = tracks_[t].candidates;
  }
  for (std::size_t r = 0; r < d.n_reads; ++r) {
    reads_[r].candidates = std::max(reads_[r].candidates, d.read_degree[r]);
    d.read_degree[r] = reads_[r].candidates;
  }
  std::sort(d.candidates.begin(), d.candidates.end(),
            [&](const Decision::Candidate& a, const Decision::Candidate& b) {
              if (a.abs_dt_ms != b.abs_dt_ms) {
                return a.abs_dt_ms < b.abs_dt_ms;
              }
              const auto& ta = tracks_[a.track].track;
              const auto& tb = tracks_[b.track].track;
              const auto& ra = reads_[a.read].read;
              const auto& rb = reads_[b.read].read;
              const UnixMs first_a = std::min(ta.time_ms, ra.time_ms);
              const UnixMs first_b = std::min(tb.time_ms, rb.time_ms);
              if (first_a != first_b) {
                return first_a < first_b;
              }
              if (track_key(ta) != track_key(tb)) {
                return track_key(ta) < track_key(tb);
              }
              return read_key(ra) < read_key(rb);
            });
}

UnixMs Correlator::wait_over_ms(const Decision& d, std::size_t node) const {
  return plus(node < d.n_tracks ? tracks_[node].arrived_ms : reads_[node - d.n_tracks].arrived_ms,
              correlation_.max_wait_ms);
}

// A group is decided when none of its members can gain a better candidate any more (each is settled: a
// partner would have arrived by its time + window + settle delay), or when one member's wait is over.
void Correlator::mark_decided(Decision& d, UnixMs now, bool force) {
  const auto settled_at = [&](std::size_t node) {
    if (node < d.n_tracks) {
      const auto& t = tracks_[node].track;
      return plus(t.time_ms, std::int64_t{correlation_.window_ms} + settle_ms(t.device_id));
    }
    const auto& r = reads_[node - d.n_tracks].read;
    return plus(r.time_ms, std::int64_t{correlation_.window_ms} + settle_ms(r.radar_id));
  };
  const std::size_t nodes = d.n_tracks + d.n_reads;
  std::map<std::size_t, bool> group_settled;  // group root -> every member settled
  std::map<std::size_t, bool> group_expired;  // group root -> some member's wait is over
  for (std::size_t node = 0; node < nodes; ++node) {
    const std::size_t root = d.groups.find(node);
    auto settled = group_settled.try_emplace(root, true).first;
    settled->second = settled->second && now >= settled_at(node);
    auto& expired = group_expired[root];
    expired = expired || now >= wait_over_ms(d, node);
  }
  d.decided.assign(nodes, false);
  for (std::size_t node = 0; node < nodes; ++node) {
    const std::size_t root = d.groups.find(node);
    d.decided[node] = force || group_settled[root] || group_expired[root];
  }
}

// Pairs of decided groups, greedily in the candidates' order: a passage, or for an unreadable plate the
// track's measurement and the read apart.
void Correlator::pair_decided(Decision& d) const {
  for (const auto& c : d.candidates) {
    if (d.track_done[c.track] || d.read_done[c.read] || !d.decided[c.track]) {
      continue;
    }
    d.track_done[c.track] = true;
    d.read_done[c.read] = true;
    const auto& track = tracks_[c.track].track;
    const auto& read = reads_[c.read].read;
    const UnixMs track_arrived = tracks_[c.track].arrived_ms;
    const UnixMs read_arrived = reads_[c.read].arrived_ms;
    if (plate_unreadable(read.plate)) {
      d.out.push_back({track.time_ms, track_tie(track), speed_measurement(track, track_arrived)});
      d.out.push_back({read.time_ms, read_tie(read),
                       plate_read(read, read_arrived, d.read_degree[c.read], "plate_unreadable")});
    } else {
      d.out.push_back({track.time_ms, track_tie(track),
                       passage(track, track_arrived, read, read_arrived, d.track_degree[c.track],
                               d.read_degree[c.read])});
    }
  }
}

// Unpaired members of decided groups wait on, for a late partner, until their own wait is over; the rest
// stay pending.
void Correlator::release_unpaired(Decision& d, UnixMs now, bool force) {
  std::vector<PendingTrack> kept_tracks;
  for (std::size_t t = 0; t < d.n_tracks; ++t) {
    if (d.track_done[t]) {
      continue;
    }
    if (force || now >= wait_over_ms(d, t)) {
      d.out.push_back({tracks_[t].track.time_ms, track_tie(tracks_[t].track),
                       speed_measurement(tracks_[t].track, tracks_[t].arrived_ms)});
    } else {
      kept_tracks.push_back(std::move(tracks_[t]));
    }
  }
  std::vector<PendingRead> kept_reads;
  for (std::size_t r = 0; r < d.n_reads; ++r) {
    if (d.read_done[r]) {
      continue;
    }
    if (force || now >= wait_over_ms(d, d.n_tracks + r)) {
      const auto& read = reads_[r].read;
      const std::string why = plate_unreadable(read.plate) ? "plate_unreadable"
                              : d.read_degree[r] == 0      ? "no_candidate"
                                                           : "candidates_taken";
      d.out.push_back(
          {read.time_ms, read_tie(read), plate_read(read, reads_[r].arrived_ms, d.read_degree[r], why)});
    } else {
      kept_reads.push_back(std::move(reads_[r]));
    }
  }
  tracks_ = std::move(kept_tracks);
  reads_ = std::move(kept_reads);
}

json site_json(const std::string& gateway_id, const config::Site& site) {
  json out{{"gateway", gateway_id},        {"name", site.name},         {"road", site.road},
           {"direction", site.direction},  {"lat_e7", to_e7(site.lat)}, {"lon_e7", to_e7(site.lon)},
           {"utc_offset", site.utc_offset}};
  // The case-file elements, each only when configured (docs/records.md, "Site").
  for (const auto& [name, value] : {std::pair{"area_code", &site.area_code},
                                    {"road_code", &site.road_code},
                                    {"km_marker", &site.km_marker},
                                    {"carriageway", &site.carriageway}}) {
    if (!value->empty()) {
      out[name] = *value;
    }
  }
  if (site.km_m >= 0) {
    out["km_m"] = site.km_m;
  }
  return out;
}

json Correlator::site_json() const {
  return pipeline::site_json(gateway_id_, site_);
}

namespace {

// What a device is, as a record states it (docs/records.md, "Devices").
json identity_json(const adapters::DeviceIdentity& id) {
  json out = {{"model", id.model}, {"serial", id.serial}, {"firmware", id.firmware}};
  if (id.truncated) {
    out["truncated"] = true;
  }
  return out;
}

// The radar half of a record, shared by speed_measurement and passage/speeding (same members, same
// meaning), with the calibration and status checks it implies.
struct RadarPart {
  json fields;
  bool calibration_ok = false;
  bool status_ok = false;
  std::vector<std::string> reasons;
};

RadarPart radar_part(const adapters::RadarTrack& track,
                     const std::map<std::string, adapters::RadarConfig>& radars) {
  RadarPart part;
  json calibration = {{"certificate", ""}, {"valid_until", ""}, {"valid", false}};
  json identity = identity_json({});
  if (auto it = radars.find(track.device_id); it != radars.end()) {
    const auto& cal = it->second.calibration;
    const bool in_date = track.time_ms < cal.valid_until_ms;
    // A certificate that names a radar serial is valid only for that radar (docs/records.md).
    const bool serial_ok = cal.radar_serial.empty() || cal.radar_serial == it->second.identity.serial;
    part.calibration_ok = in_date && serial_ok;
    calibration = {
        {"certificate", cal.certificate}, {"valid_until", cal.valid_until}, {"valid", part.calibration_ok}};
    if (!cal.radar_serial.empty()) {
      calibration["radar_serial"] = cal.radar_serial;
    }
    identity = identity_json(it->second.identity);
    if (!in_date) {
      part.reasons.emplace_back("calibration_expired");
    }
    if (!serial_ok) {
      part.reasons.emplace_back("calibration_serial_mismatch");
    }
  } else {
    part.reasons.emplace_back("radar_not_configured");
  }
  if (track.status.code < 0) {
    part.reasons.emplace_back("radar_status_unknown");
  } else if (track.status.code >= 20) {
    part.reasons.emplace_back("radar_fault");
  } else {
    part.status_ok = true;
  }
  if (track.clock.unstable) {
    // Timed by the gateway's receive time while the radar's clock keeps stepping (a device fault).
    part.reasons.emplace_back("radar_clock_unstable");
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
  json bands = json::array();
  for (const auto& b : track.lane_bands) {
    bands.push_back({{"lane", b.lane}, {"x_min_mm", b.x_min_mm}, {"x_max_mm", b.x_max_mm}});
  }
  part.fields = {
      {"lane", track.lane},
      {"lane_rule", {{"median_lateral_mm", track.median_lateral_mm}, {"bands", bands}}},
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
        {"wraps", track.clock.wraps},
        {"unstable", track.clock.unstable}}},
      {"calibration", calibration},
      {"radar_device", identity},
      {"radar_status", {{"code", track.status.code}, {"text", track.status.text}}},
  };
  return part;
}

// A picture's role in a case file, from the camera's picture type: a panorama shows the scene, a plate
// close-up the plate (docs/records.md, "Picture checks").
std::string picture_role(const std::string& kind) {
  if (kind == "detectionPicture" || kind == "vehiclePicture") {
    return "panorama";
  }
  if (kind == "licensePlatePicture" || kind == "plateRecognitionPicture") {
    return "plate_closeup";
  }
  return "other";
}

json pictures_json(const std::vector<adapters::MediaRef>& pictures) {
  json out = json::array();
  for (const auto& p : pictures) {
    json picture = {{"sha256", p.sha256},
                    {"bytes", p.bytes},
                    {"type", p.kind},
                    {"role", picture_role(p.kind)},
                    {"content_type", p.content_type},
                    {"file_name", p.file_name},
                    {"capture_ms", p.capture_ms}};
    if (p.header) {
      picture["width"] = p.header->width;
      picture["height"] = p.header->height;
      picture["components"] = p.header->components;
      picture["bits_per_sample"] = p.header->bits_per_sample;
      picture["progressive"] = p.header->progressive;
    } else {
      picture["header_error"] = p.header_error;
    }
    out.push_back(std::move(picture));
  }
  return out;
}

// The camera's plate type/colour and vehicle type as national codes (GA 24.7, GA 24.4), or unmapped: the
// vendor's strings stay beside them as sent (docs/records.md, "National codes").
json national_codes_json(const config::CodesSection& codes, const adapters::PlateRead& read) {
  const auto code_json = [](const char* table, const auto* entry) {
    json out = {{"table", table}, {"mapped", entry != nullptr}};
    if (entry != nullptr) {
      out["code"] = entry->code;
      out["name"] = entry->name;
    }
    return out;
  };
  return {
      {"plate_type", code_json("GA 24.7", config::find_plate_type(codes, read.plate_type, read.plate_color))},
      {"vehicle_type", code_json("GA 24.4", config::find_vehicle_type(codes, read.vehicle_type))}};
}

// The plate half shared by plate_read and passage/speeding. The pictures also go into fact.media, so they
// are published before the record and kept while it is unacknowledged.
void put_plate(Fact& fact, const adapters::PlateRead& read, const config::CodesSection& codes) {
  for (const auto& p : read.pictures) {
    if (std::find(fact.media.begin(), fact.media.end(), p.sha256) == fact.media.end()) {
      fact.media.push_back(p.sha256);
    }
  }
  json& fields = fact.fields;
  fields["plate"] = read.plate;
  fields["plate_color"] = read.plate_color;
  fields["plate_type"] = read.plate_type;
  fields["vehicle_type"] = read.vehicle_type;
  fields["codes"] = national_codes_json(codes, read);
  fields["country"] = read.country;
  fields["confidence"] = read.confidence;
  fields["camera"] = read.device_id;
  fields["camera_device"] = identity_json(read.camera_device);
  fields["pictures"] = pictures_json(read.pictures);
  fields["missing_pictures"] = read.missing_pictures;
}

}  // namespace

json Correlator::camera_json(const adapters::PlateRead& read) const {
  json camera = {{"uuid", read.uuid},
                 {"camera_time", read.camera_time},
                 {"camera_time_ms", read.camera_time_ms},
                 {"time_ms", read.time_ms},
                 {"lane", read.lane},
                 {"direction", read.direction},
                 {"active_post_count", read.active_post_count},
                 {"raw_xml", read.raw_xml}};
  if (read.clock_offset_ms) {
    camera["clock_offset_ms"] = *read.clock_offset_ms;
    camera["clock_offset_measured_ms"] = read.clock_offset_measured_ms;
    if (read.clock_offset_uncertainty_ms) {
      camera["clock_offset_uncertainty_ms"] = *read.clock_offset_uncertainty_ms;
    }
  }
  return camera;
}

json Correlator::camera_clock_check(const adapters::PlateRead& read) const {
  json check = {{"max_offset_ms", validity_.max_camera_clock_offset_ms}};
  if (read.clock_offset_ms) {
    const std::int64_t offset = *read.clock_offset_ms;
    check["offset_ms"] = offset;
    check["measured_ms"] = read.clock_offset_measured_ms;
    if (read.clock_offset_uncertainty_ms) {
      check["uncertainty_ms"] = *read.clock_offset_uncertainty_ms;
    }
    check["ok"] =
        offset >= -validity_.max_camera_clock_offset_ms && offset <= validity_.max_camera_clock_offset_ms;
  } else {
    check["ok"] = false;
  }
  return check;
}

json Correlator::panoramas_check(const std::vector<adapters::MediaRef>& pictures, bool speeding) const {
  const int min = speeding ? validity_.min_panoramas_speeding : 0;
  json rejected = json::array();
  std::set<UnixMs> times;  // usable panoramas count once per capture time
  for (const auto& p : pictures) {
    if (picture_role(p.kind) != "panorama") {
      continue;
    }
    std::string why;
    if (!p.header) {
      why = "not_a_jpeg";
    } else if (p.header->width < validity_.min_picture_width ||
               p.header->height < validity_.min_picture_height) {
      why = "too_small";
    } else if (!adapters::is_24bit_colour(*p.header)) {
      why = "not_24bit_colour";
    }
    if (why.empty()) {
      times.insert(p.capture_ms);
    } else {
      rejected.push_back({{"sha256", p.sha256}, {"why", why}});
    }
  }
  const auto count = static_cast<std::int64_t>(times.size());
  json check = {{"ok", count >= min},
                {"count", count},
                {"min", min},
                {"min_width", validity_.min_picture_width},
                {"min_height", validity_.min_picture_height}};
  if (!rejected.empty()) {
    check["rejected"] = std::move(rejected);
  }
  return check;
}

json Correlator::gateway_clock_check() const {
  if (validity_.clock_sync == "assume") {
    // Not checked: the config says to assume it, and every record affected says so.
    return {{"ok", true}, {"source", "assume"}, {"synchronized", true}};
  }
  json check = {
      {"ok", clock_sync_.synchronized}, {"source", "kernel"}, {"synchronized", clock_sync_.synchronized}};
  if (clock_sync_.max_error_us >= 0) {
    check["max_error_us"] = clock_sync_.max_error_us;
  }
  if (clock_sync_.est_error_us >= 0) {
    check["est_error_us"] = clock_sync_.est_error_us;
  }
  return check;
}

json Correlator::device_time_check(const json& skews_ms) const {
  const std::int64_t max_skew_ms = std::int64_t{validity_.max_device_time_skew_s} * 1000;
  bool ok = true;
  for (const auto& [device, skew] : skews_ms.items()) {
    const auto v = skew.get<std::int64_t>();
    ok = ok && v >= -max_skew_ms && v <= max_skew_ms;
  }
  // The skews are written only when the check fails: a record must not depend on when, within the
  // tolerance, its events happened to reach the gateway (pairing is independent of arrival order).
  json check = ok ? json::object() : skews_ms;
  check["ok"] = ok;
  check["max_skew_ms"] = max_skew_ms;
  return check;
}

namespace {

void add_device_time_reason(const json& device_time, json& reasons) {
  if (!device_time["ok"].get<bool>()) {
    reasons.push_back("device_time_implausible");
  }
}

void add_clock_reasons(const json& camera_clock, const json& clock_sync, json& reasons) {
  if (!camera_clock["ok"].get<bool>()) {
    reasons.push_back(camera_clock.contains("offset_ms") ? "camera_clock_offset_too_large"
                                                         : "camera_clock_offset_unknown");
  }
  if (!clock_sync["ok"].get<bool>()) {
    reasons.push_back("clock_unsynchronized");
  }
}

}  // namespace

Fact Correlator::speed_measurement(const adapters::RadarTrack& track, UnixMs received_ms) const {
  Fact fact;
  fact.type = "speed_measurement";
  fact.time_ms = track.time_ms;
  RadarPart part = radar_part(track, radars_);
  json reasons = part.reasons;
  if (track.lane == 0) {
    reasons.push_back("outside_lanes");
  }
  json device_time = device_time_check({{"radar_skew_ms", minus(track.time_ms, received_ms)}});
  if (!device_time["ok"].get<bool>()) {
    reasons.push_back("device_time_implausible");
  }
  fact.fields = std::move(part.fields);
  fact.fields["device_time"] = std::move(device_time);
  fact.fields["site"] = site_json();
  fact.fields["device"] = track.device_id;
  fact.fields["config_sha256"] = config_sha256_;
  fact.fields["valid"] = reasons.empty();
  fact.fields["invalid_reasons"] = reasons;
  return fact;
}

Fact Correlator::plate_read(const adapters::PlateRead& read, UnixMs received_ms, int candidates,
                            const std::string& why) const {
  Fact fact;
  fact.type = "plate_read";
  fact.time_ms = read.time_ms;
  fact.fields["site"] = site_json();
  put_plate(fact, read, codes_);
  fact.fields["radar"] = read.radar_id;
  fact.fields["lane"] = read.lane;
  fact.fields["config_sha256"] = config_sha256_;
  fact.fields["camera_event"] = camera_json(read);
  fact.fields["match"] = {
      {"candidates", candidates}, {"unmatched", why}, {"window_ms", correlation_.window_ms}};
  const json camera_clock = camera_clock_check(read);
  const json clock_sync = gateway_clock_check();
  const json device_time = device_time_check({{"camera_skew_ms", minus(read.time_ms, received_ms)}});
  json reasons = json::array();
  add_clock_reasons(camera_clock, clock_sync, reasons);
  add_device_time_reason(device_time, reasons);
  fact.fields["checks"] = {
      {"camera_clock", camera_clock}, {"clock_sync", clock_sync}, {"device_time", device_time}};
  fact.fields["enforceable"] = reasons.empty();
  fact.fields["reasons"] = reasons;
  return fact;
}

// The limit: the lane's, or its vehicle-class override for the camera's vehicle type. Writes the limit and,
// over it, by how much (exact integer arithmetic); true: speeding.
bool Correlator::put_limit(json& fields, const adapters::RadarTrack& track,
                           const adapters::PlateRead& read) const {
  const config::LaneLimit* lane_limit = nullptr;
  for (const auto& l : correlation_.lanes) {
    if (l.lane == track.lane) {
      lane_limit = &l;
    }
  }
  if (lane_limit == nullptr || lane_limit->limit_kmh <= 0) {
    return false;
  }
  std::int64_t limit_kmh = lane_limit->limit_kmh;
  for (const auto& [type, kmh] : lane_limit->by_vehicle_type) {
    if (type == read.vehicle_type && kmh > 0) {
      limit_kmh = kmh;
      fields["limit_vehicle_type"] = type;
    }
  }
  fields["limit_kmh"] = limit_kmh;
  const std::int64_t limit_dkmh = limit_kmh * 10;
  const std::int64_t over = std::int64_t{track.peak_speed_dkmh} - limit_dkmh;
  if (over <= 0) {
    return false;
  }
  // Permille rounded half up; bands on the exact ratio over/limit.
  fields["over_dkmh"] = over;
  fields["over_permille"] = (2000 * over + limit_dkmh) / (2 * limit_dkmh);
  fields["band"] = over * 2 > limit_dkmh    ? "over_50"
                   : over * 5 > limit_dkmh  ? "over_20"
                   : over * 10 > limit_dkmh ? "over_10"
                                            : "under_10";
  return true;
}

Fact Correlator::passage(const adapters::RadarTrack& track, UnixMs track_received_ms,
                         const adapters::PlateRead& read, UnixMs read_received_ms, int track_candidates,
                         int read_candidates) const {
  Fact fact;
  fact.time_ms = track.time_ms;
  RadarPart part = radar_part(track, radars_);
  fact.fields = std::move(part.fields);
  fact.fields["site"] = site_json();
  put_plate(fact, read, codes_);
  fact.fields["radar"] = track.device_id;
  fact.fields["camera_event"] = camera_json(read);
  fact.fields["config_sha256"] = config_sha256_;
  fact.fields["match"] = {{"dt_ms", read.time_ms - track.time_ms},
                          {"window_ms", correlation_.window_ms},
                          {"track_candidates", read_candidates},
                          {"read_candidates", track_candidates}};
  json offsets = {{"radar_ms", track.clock.offset_ms}};
  if (read.clock_offset_ms) {
    offsets["camera_ms"] = *read.clock_offset_ms;
  }
  fact.fields["clock_offsets"] = offsets;

  const bool speeding = put_limit(fact.fields, track, read);
  fact.type = speeding ? "speeding" : "passage";

  json reasons = part.reasons;
  const json camera_clock = camera_clock_check(read);
  const json clock_sync = gateway_clock_check();
  add_clock_reasons(camera_clock, clock_sync, reasons);
  const json device_time = device_time_check({{"radar_skew_ms", minus(track.time_ms, track_received_ms)},
                                              {"camera_skew_ms", minus(read.time_ms, read_received_ms)}});
  add_device_time_reason(device_time, reasons);
  const int min_pictures = speeding ? validity_.min_pictures_speeding : 0;
  const auto picture_count = static_cast<std::int64_t>(read.pictures.size());
  const bool pictures_ok = picture_count >= min_pictures;
  if (!pictures_ok) {
    reasons.push_back("too_few_pictures");
  }
  json panoramas = panoramas_check(read.pictures, speeding);
  if (!panoramas["ok"].get<bool>()) {
    reasons.push_back("too_few_panoramas");
  }
  const auto& calibration = fact.fields["calibration"];
  json calibration_check = {{"ok", part.calibration_ok},
                            {"certificate", calibration["certificate"]},
                            {"valid_until", calibration["valid_until"]}};
  if (calibration.contains("radar_serial")) {
    calibration_check["radar_serial"] = calibration["radar_serial"];
    calibration_check["device_serial"] = fact.fields["radar_device"]["serial"];
  }
  fact.fields["checks"] = {
      {"calibration", calibration_check},
      {"radar_status", {{"ok", part.status_ok}, {"code", track.status.code}}},
      {"camera_clock", camera_clock},
      {"clock_sync", clock_sync},
      {"pictures", {{"ok", pictures_ok}, {"count", picture_count}, {"min", min_pictures}}},
      {"panoramas", std::move(panoramas)},
      {"device_time", device_time},
  };
  fact.fields["enforceable"] = reasons.empty();
  fact.fields["reasons"] = reasons;
  return fact;
}

Fact Correlator::device_status(const adapters::DeviceStatusEvent& status) const {
  Fact fact;
  fact.type = "device_status";
  fact.time_ms = status.time_ms;
  fact.fields = {{"site", site_json()},   {"device", status.device_id}, {"kind", status.kind},
                 {"state", status.state}, {"code", status.code},        {"text", status.text}};
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
  escape_text_not_utf8(fact.fields);
  return fact;
}

}  // namespace cpd::pipeline
