// Typed device events: what an adapter emits into the core. Adapters never touch the store or forwarder.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "daemon/core/time.h"

namespace cpd::adapters {

// One radar detect frame of a track, normalised. Units: speed 0.1 km/h, distances in centimetres,
// amplitude 0.1 dB, radar clock in centiseconds since power-up (unwrapped), times UTC ms.
struct RadarSample {
  UnixMs time_ms = 0;             // radar time mapped to UTC with the current clock-offset estimate
  std::int64_t radar_time_cs = 0; // radar clock as unwrapped by the clock mapper
  std::int32_t speed_dkmh = 0;
  std::int32_t range_cm = 0;
  std::int32_t lateral_cm = 0;    // lateral offset from boresight (polar frames converted)
  std::int32_t amplitude_ddb = 0;
};

// The radar clock-offset estimate used for a track (UTC = radar clock + offset).
struct RadarClockEstimate {
  std::int64_t offset_ms = 0;     // UTC ms at radar time 0 of the current epoch
  std::int32_t samples = 0;       // samples in the sliding window
  std::int32_t window_ms = 0;
  std::int32_t epoch = 0;         // increments on each detected radar reboot (clock restart)
  std::int32_t wraps = 0;         // 100000 s wraps seen in this epoch
};

struct RadarStatusSnapshot {
  int code = -1;                  // last status code the radar sent; -1 = none yet
  std::string text;
  UnixMs since_ms = 0;            // when this code was first seen (UTC)
};

// A closed radar track: one vehicle.
struct RadarTrack {
  std::string device_id;
  int target = 0;                 // the radar's track number (01-99)
  int lane = 0;                   // from lateral offset and lane boundaries; 0 = outside every lane
  bool approaching = true;        // dir A (true) or R (false)
  std::int32_t peak_speed_dkmh = 0;
  UnixMs time_ms = 0;             // UTC time of the peak-speed frame
  UnixMs first_ms = 0;
  UnixMs last_ms = 0;
  char units = 'K';               // units the radar reported in (K or M) for the peak frame
  std::vector<RadarSample> samples;
  std::vector<std::string> raw_frames;  // each frame as received, STX..ETX inclusive
  RadarClockEstimate clock;
  RadarStatusSnapshot status;     // radar status in force at the peak frame
};

// A change of device state: link up/down, status code change, parser alarms.
struct DeviceStatusEvent {
  std::string device_id;
  std::string kind;               // "radar", "camera", ...
  std::string state;              // "connected", "disconnected", "ok", "warning", "fault"
  int code = -1;                  // device status code where the device has one
  std::string text;               // device's own text or the gateway's explanation
  UnixMs time_ms = 0;
  std::optional<std::string> raw_frame;  // the status frame as received, if any
};

using DeviceEvent = std::variant<RadarTrack, DeviceStatusEvent>;

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void emit(DeviceEvent event) = 0;
  // True while the core is behind (facts waiting to be sealed and committed above a bound): an adapter
  // then stops reading from its device for a moment, so a flood is pushed back, not buffered in memory.
  virtual bool congested() const { return false; }
};

}  // namespace cpd::adapters
