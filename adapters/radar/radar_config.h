// The radar device's config section: link, polling, lanes and calibration.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "adapters/events.h"
#include "daemon/core/time.h"

namespace cpd::config {
class Section;
}

namespace cpd::adapters {

struct TcpLink {
  std::string host;
  std::uint16_t port = 4001;

  bool operator==(const TcpLink&) const = default;
};

struct SerialLink {
  std::string device;
  unsigned baud = 9600;  // 9600 or 115200 (8N1, no flow control)

  bool operator==(const SerialLink&) const = default;
};

// A lane is the half-open lateral band [x_min, x_max) in metres, boresight-relative.
struct RadarLane {
  int lane = 0;
  double x_min = 0.0;
  double x_max = 0.0;

  bool operator==(const RadarLane&) const = default;
};

struct RadarCalibration {
  std::string certificate;
  std::string valid_until;    // as configured, YYYY-MM-DD (inclusive, in the site's UTC offset)
  UnixMs valid_until_ms = 0;  // exclusive end: midnight after valid_until in the site's UTC offset
  std::string radar_serial;   // the serial number the certificate names; empty: not configured

  bool operator==(const RadarCalibration&) const = default;
};

struct RadarConfig {
  std::string id;
  std::variant<TcpLink, SerialLink> link;
  int poll_interval_ms = 0;  // 0: the radar streams; >0: send "*P\r" every interval
  std::vector<RadarLane> lanes;
  RadarCalibration calibration;
  DeviceIdentity
      identity;  // model, serial_number, firmware (config: the radar protocol does not report them)
  int track_timeout_ms = 400;  // a target not seen for this long is gone: its track closes
  int reconnect_initial_ms = 500;
  int reconnect_max_ms = 30000;
  int clock_window_s = 120;  // sliding window for the radar clock-offset estimate
  // Records (tracks, status and link changes) one radar may cause per second, bursts of
  // max(2 x this, 128); beyond it they are counted and reported, not recorded.
  int max_records_per_s = 50;

  bool operator==(const RadarConfig&) const = default;
};

// Reads a `kind: radar` device entry (id and kind already read by the caller); throws config::ConfigError.
RadarConfig parse_radar_config(config::Section& device);

}  // namespace cpd::adapters
