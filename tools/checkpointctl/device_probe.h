// `checkpointctl devices test`: probes one configured device once, synchronously, and says in plain words
// what it answered or why it did not (DNS, refused, timeout, TLS, credentials, lock-out, odd replies).
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/config/config.h"

namespace cpd::ctl {

// Why a probe did not end well; the names (probe_problem_name) appear in --json output.
enum class ProbeProblem {
  kNone,
  kDns,               // the host name does not resolve
  kRefused,           // nothing listens on the port
  kTimeout,           // no answer in time: host down, or a firewall drops the packets
  kUnreachable,       // no route to the host or network
  kTls,               // the device speaks TLS (https) where plain HTTP is configured
  kWrongCredentials,  // 401: user/password or token refused
  kLocked,            // 403: the camera has locked the user after failed logins
  kUnexpectedReply,   // it answered, but not as its spec says (what arrived is quoted)
  kNoData,            // connected, but the device said nothing
  kDeviceFault,       // it answered and reports a fault (radar status 2x, camera clock far off)
  kLocalError,        // this host could not even try (serial device missing, no permission, ...)
};

std::string_view probe_problem_name(ProbeProblem problem);

struct ProbeOptions {
  std::chrono::milliseconds listen{3000};          // radar: how long to read frames
  std::chrono::milliseconds timeout{5000};         // each network step (resolve, connect, one HTTP exchange)
  std::int64_t max_camera_clock_offset_ms = 1000;  // validity.max_camera_clock_offset_ms
};

struct ProbeReport {
  std::string device;
  std::string kind;
  std::string address;  // "host:port", "serial /dev/ttyUSB0 at 9600 baud"
  bool ok = false;      // the device answered well
  ProbeProblem problem = ProbeProblem::kNone;
  std::string explanation;         // when !ok: what went wrong and what to check, in plain words
  std::vector<std::string> lines;  // what the device said, one fact a line, for people
  nlohmann::json data = nlohmann::json::object();  // the same facts for --json
};

// Probes `device` (radar, camera or recorder_dock). Never throws for anything the device or the network
// does: every outcome is a report.
ProbeReport probe_device(const config::DeviceConfig& device, const ProbeOptions& options);

}  // namespace cpd::ctl
