// A device entry's settings, one alternative per device kind: plain data, no I/O (the config, the
// correlator and the registry share it; the registry, which builds adapters from it, is adapters/registry.h).
#pragma once

#include <variant>

#include "adapters/camera/camera_config.h"
#include "adapters/radar/radar_config.h"
#include "adapters/recorder/recorder_config.h"

namespace cpd::adapters {

using DeviceSettings = std::variant<RadarConfig, CameraConfig, RecorderDockConfig>;

}  // namespace cpd::adapters
