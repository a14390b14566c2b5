#include "adapters/registry.h"

#include <array>

#include "adapters/camera/camera_adapter.h"
#include "adapters/radar/radar_adapter.h"
#include "adapters/recorder/recorder_adapter.h"

namespace cpd::adapters {
namespace {

const std::array<AdapterKind, 3> kKinds{{
    {"radar", [](config::Section& s) -> DeviceSettings { return parse_radar_config(s); },
     [](const DeviceSettings& d, AdapterContext& ctx) {
       return make_radar_adapter(std::get<RadarConfig>(d), ctx);
     }},
    {"camera", [](config::Section& s) -> DeviceSettings { return parse_camera_config(s); },
     [](const DeviceSettings& d, AdapterContext& ctx) {
       return make_camera_adapter(std::get<CameraConfig>(d), ctx);
     }},
    {"recorder_dock", [](config::Section& s) -> DeviceSettings { return parse_recorder_dock_config(s); },
     [](const DeviceSettings& d, AdapterContext& ctx) {
       return make_recorder_adapter(std::get<RecorderDockConfig>(d), ctx);
     }},
}};

}  // namespace

std::span<const AdapterKind> adapter_kinds() {
  return kKinds;
}

const AdapterKind* find_adapter_kind(std::string_view kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) {
      return &k;
    }
  }
  return nullptr;
}

}  // namespace cpd::adapters
