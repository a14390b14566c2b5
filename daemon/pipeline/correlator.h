// Correlator: device events in, facts out. Joins radar tracks and plate reads into passage/speeding facts
// and checks the conditions that make them valid evidence. Pure: no I/O, no clock of its own (the gateway
// time comes in with every call), so unit tests fix it. The matching rules are in docs/records.md.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "adapters/events.h"
#include "daemon/config/config.h"
#include "daemon/core/record.h"
#include "daemon/pipeline/clock_sync.h"
#include "daemon/pipeline/recording_fact.h"

namespace cpd::pipeline {

// The `site` member of every record (docs/records.md, "Common members"), from the gateway section.
nlohmann::json site_json(const std::string& gateway_id, const config::Site& site);

class Correlator {
 public:
  // Added to a radar's track_timeout_ms to make the settle delay: how long after a vehicle its track and
  // its plate read are assumed to have reached the gateway (frame transport, camera pictures).
  static constexpr int kSettleMarginMs = 500;
  // Above this many pending tracks and reads, tick() decides and releases everything at once.
  static constexpr std::size_t kMaxPending = 2000;

  explicit Correlator(const config::Config& config);

  // A reload: the devices, correlation and validity sections of `config` apply to every fact from now on.
  // Tracks and reads already waiting stay and are decided under the new rules (a removed radar's tracks
  // still go out, with the default settle delay). Gateway, site and links are fixed for the process.
  void reconfigure(const config::Config& config);

  // Facts that follow at once from one event: device status, tracks of a radar no camera watches, items
  // that can never match (lane 0). Tracks and reads that may pair wait for tick(). `now`: gateway clock.
  // Dock events are not correlated here: dock_file_fact (recording_fact.h) makes their facts.
  std::vector<Fact> on_event(const adapters::DeviceEvent& event, UnixMs now);

  // Called every ~100 ms: releases matches that are decided and items whose wait expired.
  std::vector<Fact> tick(UnixMs now);

  // At shutdown: every pending item goes out now; pairs the pending set already determines are matched
  // (the same greedy rule as tick), everything else as unmatched plate_read / speed_measurement.
  std::vector<Fact> flush();

  // The gateway clock's state for the next records (validity.clock_sync: kernel). Until the first call
  // the clock counts as unsynchronised.
  void set_clock_sync(ClockSync state);

  // The gateway's own audit facts (start, stop, config change).
  Fact audit(std::string event, UnixMs time_ms, nlohmann::json details) const;

  // The rule recordings are linked by (config `links`), for the store worker.
  const LinkRule& link_rule() const { return link_rule_; }

  // Tracks and reads waiting for a partner.
  std::size_t pending() const;

 private:
  struct PendingTrack {
    adapters::RadarTrack track;
    UnixMs arrived_ms = 0;
    int candidates = 0;  // most candidate reads seen at once (a matched partner leaves the pending set)
  };
  struct PendingRead {
    adapters::PlateRead read;
    UnixMs arrived_ms = 0;
    int candidates = 0;  // most candidate tracks seen at once
  };

  // force: decide every component now and release every item (flush).
  std::vector<Fact> decide(UnixMs now, bool force);
  struct Decision;  // one decide() pass's working state (correlator.cpp)
  void find_candidates(Decision& d);
  void mark_decided(Decision& d, UnixMs now, bool force);
  void pair_decided(Decision& d) const;
  void release_unpaired(Decision& d, UnixMs now, bool force);
  UnixMs wait_over_ms(const Decision& d, std::size_t node) const;  // when a pending item's wait is over

  // `received_ms`: when the event reached the correlator (gateway clock), for the device-time check.
  Fact speed_measurement(const adapters::RadarTrack& track, UnixMs received_ms) const;
  Fact plate_read(const adapters::PlateRead& read, UnixMs received_ms, int candidates,
                  const std::string& why) const;
  Fact passage(const adapters::RadarTrack& track, UnixMs track_received_ms, const adapters::PlateRead& read,
               UnixMs read_received_ms, int track_candidates, int read_candidates) const;
  Fact device_status(const adapters::DeviceStatusEvent& status) const;
  bool put_limit(nlohmann::json& fields, const adapters::RadarTrack& track,
                 const adapters::PlateRead& read) const;
  nlohmann::json site_json() const;
  nlohmann::json camera_json(const adapters::PlateRead& read) const;
  nlohmann::json camera_clock_check(const adapters::PlateRead& read) const;
  nlohmann::json gateway_clock_check() const;
  // GA/T 832: enough panoramas at different times, each large enough and in 24-bit colour by its own
  // JPEG header; min 0 for a passage.
  nlohmann::json panoramas_check(const std::vector<adapters::MediaRef>& pictures, bool speeding) const;
  // Each device's time minus when its event reached the gateway ({"camera_skew_ms": ...}), checked against
  // validity.max_device_time_skew_s: a device time far from the gateway clock (a year-9999 or 1970 alert)
  // is not evidence to enforce on. The skews are recorded when the check fails.
  nlohmann::json device_time_check(const nlohmann::json& skews_ms) const;
  int settle_ms(const std::string& radar_id) const;

  std::string gateway_id_;
  config::Site site_;
  config::CorrelationSection correlation_;
  config::ValiditySection validity_;
  std::string config_sha256_;  // of the config in force, in every vehicle record
  config::CodesSection codes_;
  LinkRule link_rule_;
  std::map<std::string, adapters::RadarConfig> radars_;
  std::set<std::string> watched_radars_;  // radars some camera's `radar` names: their tracks wait
  ClockSync clock_sync_;
  std::vector<PendingTrack> tracks_;
  std::vector<PendingRead> reads_;
};

// Degrees to the feed's integer 1e-7 degrees.
std::int64_t to_e7(double degrees);

// A plate the camera could not read ("unknown", or empty): such a read is never matched.
bool plate_unreadable(const std::string& plate);

}  // namespace cpd::pipeline
