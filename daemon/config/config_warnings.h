// Warnings about a config that loads but probably is not what the technician meant (an expiring radar
// calibration, two devices on one address, ...): pure, so check-config, the daemon and tests share it.
#pragma once

#include <string>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/core/time.h"

namespace cpd::config {

struct ConfigWarning {
  std::string place;    // "file:line:column" of the device entry (DeviceConfig::place); the file alone
                        // for warnings about the file as a whole
  std::string device;   // the device id; empty for warnings not about one device
  std::string message;  // plain words, never a secret
};

// How close to its end a radar calibration is worth a warning.
inline constexpr int kCalibrationWarningDays = 30;

// Every warning for `cfg` at wall-clock time `now`, in the order of the devices in the file (then the
// file-wide ones). Calendar dates are read in the site's UTC offset.
std::vector<ConfigWarning> config_warnings(const Config& cfg, UnixMs now);

// "file:line:column: warning: [device id: ]message", the form check-config and the daemon's log use.
std::string format_warning(const ConfigWarning& warning);

}  // namespace cpd::config
