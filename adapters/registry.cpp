#include "adapters/registry.h"

#include <array>

#include "adapters/radar/radar_adapter.h"

namespace cpd::adapters {
namespace {

const std::array<AdapterKind, 1> kKinds{{
    {"radar",
     [](config::Section& s) -> DeviceSettings { return parse_radar_config(s); },
     [](const DeviceSettings& d, AdapterContext& ctx) {
       return make_radar_adapter(std::get<RadarConfig>(d), ctx);
     }},
}};

}  // namespace

std::span<const AdapterKind> adapter_kinds() { return kKinds; }

const AdapterKind* find_adapter_kind(std::string_view kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) {
      return &k;
    }
  }
  return nullptr;
}

}  // namespace cpd::adapters
