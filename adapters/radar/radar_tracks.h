// Groups radar detect frames into per-vehicle tracks and closes them into RadarTrack events.
// Pure: receive times are passed in; the radar clock mapping happens here so reboots close tracks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "adapters/events.h"
#include "adapters/radar/radar_clock.h"
#include "adapters/radar/radar_config.h"
#include "adapters/radar/radar_frame_parser.h"

namespace cpd::adapters {

// Speed in 0.1 km/h from the radar's tenths in `units` (mph: round(tenths_mph * 1.609344)).
std::int32_t radar_speed_dkmh(std::int32_t speed_tenths, char units);
// Lateral offset in cm: coord C gives it directly; coord P gives range * sin(azimuth).
std::int32_t radar_lateral_cm(const RadarDetect& d);
// The configured lane whose [x_min, x_max) holds `lateral_m`; 0 when none does.
int radar_lane_for(const std::vector<RadarLane>& lanes, double lateral_m);
// The configured lanes as integer bands (metres rounded to the millimetre), and the lane whose band holds
// `lateral_mm` (0 when none does): what a track's lane is decided with, so a record's reader can redo it.
std::vector<LaneBand> radar_lane_bands(const std::vector<RadarLane>& lanes);
int radar_lane_for_mm(const std::vector<LaneBand>& bands, std::int64_t lateral_mm);

class RadarTrackBuilder {
 public:
  static constexpr std::size_t kDefaultMaxFramesPerTrack = 400;

  struct Counters {
    std::uint64_t detect_frames = 0;
    std::uint64_t status_frames = 0;
    std::uint64_t tracks = 0;          // tracks closed and emitted
    std::uint64_t test_targets = 0;    // X/Y frames ignored
    std::uint64_t dropped_frames = 0;  // frames not kept because a track hit the frame bound
    std::uint64_t epochs = 0;          // radar clock epochs started (reboots, and the end of a clock fault)
    std::uint64_t clock_steps = 0;     // radar clock steps seen (reboots and faults)
  };

  struct Outcome {
    std::vector<RadarTrack> closed;                    // tracks this frame closed (reboot, reused number)
    std::optional<RadarStatusSnapshot> status_change;  // the radar's status code changed
    bool new_epoch = false;                            // the radar clock restarted
    RadarClockMapper::Change clock_change = RadarClockMapper::Change::kNone;  // clock became (un)stable
  };

  explicit RadarTrackBuilder(const RadarConfig& config,
                             std::size_t max_frames_per_track = kDefaultMaxFramesPerTrack);

  Outcome on_frame(const RadarFrame& frame, UnixMs received_ms);
  // Closes tracks whose target has not been seen for track_timeout_ms (receive time).
  std::vector<RadarTrack> expire(UnixMs now_ms);
  // The link went down: every open track closes, and the clock may have restarted by the next frame.
  std::vector<RadarTrack> on_disconnect();

  const RadarStatusSnapshot& status() const { return status_; }
  RadarClockEstimate clock_estimate() const { return clock_.estimate(); }
  const RadarClockMapper& clock() const { return clock_; }
  const Counters& counters() const { return counters_; }
  std::size_t open_tracks() const { return open_.size(); }

 private:
  struct OpenTrack {
    int target = 0;
    std::vector<RadarSample> samples;
    std::vector<std::string> raw_frames;
    std::size_t peak = 0;
    bool peak_approaching = true;
    char peak_units = 'K';
    RadarStatusSnapshot peak_status;
    UnixMs last_received_ms = 0;
    std::int64_t last_radar_cs = 0;
    RadarClockEstimate clock;     // the estimate when the last frame came, in this track's epoch
    bool clock_unstable = false;  // built while the radar clock was unstable: timed by receive time
  };

  void add_detect(const RadarDetect& d, const std::string& raw, const RadarClockMapper::Mapping& mapping,
                  UnixMs received_ms, std::vector<RadarTrack>& closed);
  RadarTrack close(OpenTrack& t);
  std::vector<RadarTrack> close_all();

  std::string device_id_;
  std::vector<LaneBand> lanes_;
  std::int64_t timeout_ms_;
  std::size_t max_frames_;
  RadarClockMapper clock_;
  std::map<int, OpenTrack> open_;
  RadarStatusSnapshot status_;
  Counters counters_;
};

}  // namespace cpd::adapters
