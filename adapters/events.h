// Typed device events: what an adapter emits into the core. Adapters never touch the store or forwarder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "adapters/common/jpeg_header.h"
#include "daemon/core/time.h"

namespace cpd::adapters {

// One radar detect frame of a track, normalised. Units: speed 0.1 km/h, distances in centimetres,
// amplitude 0.1 dB, radar clock in centiseconds since power-up (unwrapped), times UTC ms.
struct RadarSample {
  UnixMs time_ms = 0;              // radar time mapped to UTC with the current clock-offset estimate
  std::int64_t radar_time_cs = 0;  // radar clock as unwrapped by the clock mapper
  std::int32_t speed_dkmh = 0;
  std::int32_t range_cm = 0;
  std::int32_t lateral_cm = 0;  // lateral offset from boresight (polar frames converted)
  std::int32_t amplitude_ddb = 0;
};

// The radar clock-offset estimate used for a track (UTC = radar clock + offset).
struct RadarClockEstimate {
  std::int64_t offset_ms = 0;  // UTC ms at radar time 0 of the current epoch
  std::int32_t samples = 0;    // samples in the sliding window
  std::int32_t window_ms = 0;
  std::int32_t epoch = 0;  // increments on each detected radar reboot (clock restart)
  std::int32_t wraps = 0;  // 100000 s wraps seen in this epoch
  // The radar clock keeps stepping (a device fault): radar time cannot be mapped, so sample times are the
  // gateway's receive times and offset_ms/samples say nothing about them.
  bool unstable = false;
};

struct RadarStatusSnapshot {
  int code = -1;  // last status code the radar sent; -1 = none yet
  std::string text;
  UnixMs since_ms = 0;  // when this code was first seen (UTC)
};

// A configured lane as the track's lane was decided with it: the half-open band [x_min_mm, x_max_mm) of
// lateral offset (the config's metres, rounded to the millimetre).
struct LaneBand {
  int lane = 0;
  std::int64_t x_min_mm = 0;
  std::int64_t x_max_mm = 0;
};

// A closed radar track: one vehicle.
struct RadarTrack {
  std::string device_id;
  int target = 0;                      // the radar's track number (01-99)
  int lane = 0;                        // from lateral offset and lane boundaries; 0 = outside every lane
  std::int64_t median_lateral_mm = 0;  // median of the samples' lateral_cm, in mm: decides lane
  std::vector<LaneBand> lane_bands;    // the bands lane was decided with (the record keeps them)
  bool approaching = true;             // dir A (true) or R (false)
  std::int32_t peak_speed_dkmh = 0;
  UnixMs time_ms = 0;  // UTC time of the peak-speed frame
  UnixMs first_ms = 0;
  UnixMs last_ms = 0;
  char units = 'K';  // units the radar reported in (K or M) for the peak frame
  std::vector<RadarSample> samples;
  std::vector<std::string> raw_frames;  // each frame as received, STX..ETX inclusive
  RadarClockEstimate clock;
  RadarStatusSnapshot status;  // radar status in force at the peak frame
};

// A change of device state: link up/down, status code change, parser alarms.
struct DeviceStatusEvent {
  std::string device_id;
  std::string kind;   // "radar", "camera", ...
  std::string state;  // "connected", "disconnected", "ok", "warning", "fault"
  int code = -1;      // device status code where the device has one
  std::string text;   // device's own text or the gateway's explanation
  UnixMs time_ms = 0;
  std::optional<std::string> raw_frame;  // the status frame as received, if any
};

// A picture (or later a recording) stored durably in the content-addressed media store.
// What a device says it is (or what its config says, for a radar): model, serial number, firmware. Each value
// is at most kMaxIdentityBytes; a longer one is cut there and `truncated` set (a device's word, bounded).
struct DeviceIdentity {
  static constexpr std::size_t kMaxIdentityBytes = 128;
  std::string model;
  std::string serial;
  std::string firmware;
  bool truncated = false;

  bool known() const { return !model.empty() || !serial.empty() || !firmware.empty(); }
  bool operator==(const DeviceIdentity&) const = default;
};

struct MediaRef {
  std::string sha256;  // lower-case hex of the bytes; also the file name in the media store
  std::int64_t bytes = 0;
  std::string content_type;  // e.g. image/jpeg
  std::string kind;          // camera picture type: detectionPicture, licensePlatePicture, ...
  std::string file_name;     // as announced by the device
  UnixMs capture_ms = 0;     // capture time, gateway clock (device time corrected by its offset)
  // What the picture's own bytes say: its JPEG header as the gateway read it (never the camera's word);
  // nullopt when it could not be read as a JPEG, and header_error says why.
  std::optional<JpegHeader> header;
  std::string header_error;
};

// One ANPR alert from a camera, with its pictures already durable in the media store. Its text is the
// camera's bytes exactly as sent: the spec says UTF-8, but a camera may send GBK. Such text is counted by
// the adapter and escaped, with its exact bytes in base64 beside it, when it becomes a record member
// (escape_text_not_utf8, docs/records.md): never refused, never altered here.
struct PlateRead {
  std::string device_id;      // the camera
  std::string radar_id;       // the radar whose lanes this camera watches (config `radar`)
  std::string uuid;           // the camera's event UUID
  std::string camera_time;    // <dateTime> exactly as sent
  UnixMs camera_time_ms = 0;  // <dateTime> as an instant, by the camera's clock
  UnixMs time_ms = 0;         // corrected to the gateway clock: camera_time_ms - clock_offset_ms
  std::optional<std::int64_t> clock_offset_ms;  // camera clock minus gateway clock; nullopt: never measured
  UnixMs clock_offset_measured_ms = 0;          // when that offset was measured (gateway clock)
  std::optional<std::int64_t> clock_offset_uncertainty_ms;  // true offset within clock_offset_ms ± this
  int lane = 0;                                             // <line>
  std::string direction;                                    // forward | reverse
  std::string plate;                                        // "unknown" when the camera could not read it
  std::string plate_color;
  std::string plate_type;
  std::string vehicle_type;
  std::string country;
  int confidence = 0;  // 0-100
  int active_post_count = 0;
  std::vector<MediaRef> pictures;             // pictures that arrived and are stored, in stream order
  std::vector<std::string> missing_pictures;  // announced file names that never arrived
  std::string raw_xml;                        // the alert part as received (traceability)
  DeviceIdentity camera_device;               // from ISAPI deviceInfo at the time of the read; empty: unknown
};

// One GPS point of a recording, as the station listed it (recorder clock).
struct GpsPoint {
  std::string t;            // as sent
  UnixMs t_ms = 0;          // by the recorder's clock
  std::int64_t lat_e7 = 0;  // degrees x 1e7 (records carry integers only)
  std::int64_t lon_e7 = 0;
};

// One file a recorder docking station lists (specs/recorder-dock.md, GET /api/v1/files), validated.
struct DockFile {
  std::string unique_id;    // safe as a path component: [A-Za-z0-9._-], 1-128 chars
  std::string recorder_id;  // deviceId: the body-worn recorder
  std::string officer_id;
  std::string officer_name;  // UTF-8
  std::string case_code;     // may be empty
  std::string file_name;
  std::string file_type;    // video | audio | photo
  std::string format;       // mp4 | wav | jpg
  std::int64_t length = 0;  // bytes
  std::string md5;          // lower-case hex, the station's checksum
  std::string start_time;   // as sent (recorder clock)
  std::string end_time;
  std::string collect_time;
  UnixMs start_ms = 0;  // the instants as sent, by the recorder's clock
  UnixMs end_ms = 0;
  UnixMs collect_ms = 0;
  bool important = false;
  std::vector<GpsPoint> gps;
  std::string raw_json;  // this entry of the listing, compact JSON (traceability)
};

// The station's clock offset (station clock minus gateway clock) measured from /status polls.
struct StationClock {
  std::int64_t offset_ms = 0;
  std::int64_t uncertainty_ms = 0;
  UnixMs measured_ms = 0;  // gateway time of the newest sample
};

// A file collected from a dock: downloaded, hashed, durable in the media store. It becomes a `recording`
// record; `on_committed` (run on the store worker thread, must not block) then lets the adapter ack it.
struct RecordingCollected {
  std::string device_id;   // the dock's config id
  std::string station_id;  // stationId from /status ("" until the first status)
  std::string firmware;
  DockFile file;
  std::string sha256;      // of the bytes stored (lower-case hex); also the media store name
  std::string media_path;  // where the file is kept on the gateway
  std::optional<StationClock> station_clock;  // nullopt: never measured
  // What the recorder-clock rule (daemon/pipeline/recorder_clock.h) needs beside the file's listed times:
  // the gateway time of the listing that first showed the file (or of the ledger load), and the dock's
  // configured tolerance. The pipeline decides whether the recorder's clock was off and corrects the span.
  UnixMs listed_ms = 0;
  int recorder_clock_tolerance_s = 0;
  UnixMs collected_ms = 0;    // gateway time the download completed
  int download_attempts = 1;  // whole-file attempts (MD5 mismatches start again)
  int resumes = 0;            // broken transfers resumed with Range
  std::function<void(const std::string& record_id)> on_committed;
};

// A dock file that cannot be collected as evidence, or an acknowledgement the station refused. Becomes a
// `recording_fault` record naming the file; never a silent skip.
struct DockFileFault {
  std::string device_id;
  std::string station_id;
  DockFile file;
  std::string reason;  // md5_mismatch | ack_conflict | ack_unknown | bad_entry
  std::string detail;  // the gateway's explanation (expected/got hashes, HTTP status, ...)
  int attempts = 0;
  std::string sha256;  // of the last download, when there was one
  UnixMs time_ms = 0;  // gateway time of the decision
  std::function<void(const std::string& record_id)> on_committed;
};

using DeviceEvent = std::variant<RadarTrack, DeviceStatusEvent, PlateRead, RecordingCollected, DockFileFault>;

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void emit(DeviceEvent event) = 0;
  // True while the core is behind (facts waiting to be sealed and committed above a bound): an adapter
  // then stops reading from its device for a moment, so a flood is pushed back, not buffered in memory.
  virtual bool congested() const { return false; }
};

}  // namespace cpd::adapters
