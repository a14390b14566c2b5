// Reads a `kind: radar` device section: one link (tcp or serial), polling, lanes, calibration and timings.
// Lane geometry and the calibration date are checked here, where their meaning is known.
#include "adapters/radar/radar_config.h"

#include <algorithm>
#include <map>
#include <string>

#include "daemon/config/schema.h"

namespace cpd::adapters {

namespace {

using config::Rule;
using config::Section;

constexpr int kMsPerDay = 24 * 60 * 60 * 1000;
constexpr int kMinPollIntervalMs = 20;  // the radar needs time to answer one poll before the next

TcpLink parse_tcp(Section tcp) {
  TcpLink link;
  link.host = tcp.required<std::string>(
      "host", {.pattern = "[A-Za-z0-9][A-Za-z0-9.:-]{0,252}", .allowed = "a host name or IP address"});
  link.port = static_cast<std::uint16_t>(tcp.optional<int>("port", link.port, {.min = 1, .max = 65535}));
  tcp.finish();
  return link;
}

SerialLink parse_serial(Section serial) {
  SerialLink link;
  link.device = serial.required<std::string>(
      "device", {.pattern = "/[^\\s]{1,4095}", .allowed = "an absolute device path such as /dev/ttyUSB0"});
  link.baud = serial.optional<unsigned>("baud", link.baud, {.one_of = {9600U, 115200U}});
  serial.finish();
  return link;
}

std::variant<TcpLink, SerialLink> parse_link(Section& device) {
  const bool tcp = device.has("tcp");
  const bool serial = device.has("serial");
  if (tcp && serial) {
    device.fail("serial", "a radar has exactly one link: give 'tcp' or 'serial', not both");
  }
  if (tcp) {
    return parse_tcp(device.section("tcp"));
  }
  if (serial) {
    return parse_serial(device.section("serial"));
  }
  device.fail_here("missing link: give 'tcp: {host, port}' or 'serial: {device, baud}'");
}

std::string band_text(const RadarLane& lane, Section& section) {
  return "lane " + std::to_string(lane.lane) + " [" + section.raw("x_min") + ", " + section.raw("x_max") +
         ")";
}

std::vector<RadarLane> parse_lanes(Section& device) {
  auto sections = device.sections("lanes", 1);
  std::vector<RadarLane> lanes;
  std::map<int, std::string> lane_places;
  for (auto& s : sections) {
    RadarLane lane;
    lane.lane = s.required<int>("lane", {.min = 1, .max = 99});
    const auto [it, inserted] = lane_places.emplace(lane.lane, s.place("lane"));
    if (!inserted) {
      s.fail("lane", "duplicate lane number " + std::to_string(lane.lane) + " (first at " + it->second + ")");
    }
    const Rule<double> metres{.min = -100.0, .max = 100.0, .allowed = "metres from boresight, -100 to 100"};
    lane.x_min = s.required<double>("x_min", metres);
    lane.x_max = s.required<double>("x_max", metres);
    if (!(lane.x_min < lane.x_max)) {
      s.fail("x_max", "must be greater than x_min (" + s.raw("x_min") + "), got " + s.raw("x_max"));
    }
    s.finish();
    lanes.push_back(lane);
  }
  // Lanes are half-open bands [x_min, x_max): a target's x must fall in at most one of them.
  std::vector<std::size_t> order(lanes.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return lanes[a].x_min < lanes[b].x_min || (lanes[a].x_min == lanes[b].x_min && a < b);
  });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const std::size_t prev = order[k - 1];
    const std::size_t cur = order[k];
    if (lanes[cur].x_min < lanes[prev].x_max) {
      // Report on whichever entry comes later in the file, naming the other one's place.
      const std::size_t later = std::max(prev, cur);
      const std::size_t earlier = std::min(prev, cur);
      sections[later].fail("x_min", band_text(lanes[later], sections[later]) + " overlaps " +
                                        band_text(lanes[earlier], sections[earlier]) + " at " +
                                        sections[earlier].place());
    }
  }
  return lanes;
}

constexpr std::string_view kIdentityPattern = "[!-~]([ -~]{0,126}[!-~])?";
constexpr std::string_view kIdentityAllowed =
    "1 to 128 printable ASCII characters, no leading/trailing space";

// model, serial_number, firmware: what the radar is (its protocol does not say), written into every record.
DeviceIdentity parse_identity(Section& device) {
  DeviceIdentity id;
  id.model =
      device.optional<std::string>("model", "", {.pattern = kIdentityPattern, .allowed = kIdentityAllowed});
  id.serial = device.optional<std::string>("serial_number", "",
                                           {.pattern = kIdentityPattern, .allowed = kIdentityAllowed});
  id.firmware = device.optional<std::string>("firmware", "",
                                             {.pattern = kIdentityPattern, .allowed = kIdentityAllowed});
  return id;
}

RadarCalibration parse_calibration(Section calibration) {
  RadarCalibration out;
  out.certificate = calibration.required<std::string>(
      "certificate", {.pattern = "[!-~]([ -~]{0,62}[!-~])?",
                      .allowed = "the verification certificate number, 1 to 64 printable ASCII characters"});
  out.valid_until = calibration.required<std::string>(
      "valid_until", {.allowed = "the last day the calibration is valid, YYYY-MM-DD"});
  out.radar_serial = calibration.optional<std::string>(
      "radar_serial", "", {.pattern = kIdentityPattern, .allowed = kIdentityAllowed});
  const auto days = config::parse_calendar_date(out.valid_until);
  if (!days) {
    calibration.fail("valid_until",
                     "must be a calendar date YYYY-MM-DD (1970 or later), got '" + out.valid_until + "'");
  }
  // Valid through the whole named day, local to the site: the end is the next local midnight.
  const std::int64_t offset_ms = static_cast<std::int64_t>(calibration.context().utc_offset_min) * 60 * 1000;
  out.valid_until_ms = (*days + 1) * kMsPerDay - offset_ms;
  calibration.finish();
  return out;
}

}  // namespace

RadarConfig parse_radar_config(config::Section& device) {
  RadarConfig out;
  // The caller has checked the id; reading it again is harmless and keeps this parser self-contained.
  out.id = device.required<std::string>("id");
  out.link = parse_link(device);
  out.poll_interval_ms =
      device.optional<int>("poll_interval_ms", out.poll_interval_ms, {.min = 0, .max = 60000});
  if (out.poll_interval_ms > 0 && out.poll_interval_ms < kMinPollIntervalMs) {
    device.fail("poll_interval_ms", "must be 0 (the radar streams) or between " +
                                        std::to_string(kMinPollIntervalMs) + " and 60000, got " +
                                        std::to_string(out.poll_interval_ms));
  }
  out.lanes = parse_lanes(device);
  out.calibration = parse_calibration(device.section("calibration"));
  out.track_timeout_ms =
      device.optional<int>("track_timeout_ms", out.track_timeout_ms, {.min = 50, .max = 10000});
  out.reconnect_initial_ms =
      device.optional<int>("reconnect_initial_ms", out.reconnect_initial_ms, {.min = 10, .max = 600000});
  out.reconnect_max_ms =
      device.optional<int>("reconnect_max_ms", out.reconnect_max_ms, {.min = 10, .max = 3600000});
  if (out.reconnect_max_ms < out.reconnect_initial_ms) {
    device.fail("reconnect_max_ms", "must be at least reconnect_initial_ms (" +
                                        std::to_string(out.reconnect_initial_ms) + "), got " +
                                        std::to_string(out.reconnect_max_ms));
  }
  out.clock_window_s = device.optional<int>("clock_window_s", out.clock_window_s, {.min = 10, .max = 3600});
  out.max_records_per_s =
      device.optional<int>("max_records_per_s", out.max_records_per_s, {.min = 1, .max = 100000});
  out.identity = parse_identity(device);
  device.finish();
  return out;
}

}  // namespace cpd::adapters
