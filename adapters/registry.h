// The one table of adapter kinds: how each kind's config section is read and its adapter created.
#pragma once

#include <memory>
#include <span>
#include <string_view>
#include <variant>

#include "adapters/adapter.h"
#include "adapters/device_settings.h"

namespace cpd::config {
class Section;
}

namespace cpd::adapters {

struct AdapterKind {
  std::string_view kind;
  DeviceSettings (*parse)(config::Section& device);
  std::unique_ptr<Adapter> (*create)(const DeviceSettings& settings, AdapterContext& ctx);
};

std::span<const AdapterKind> adapter_kinds();
const AdapterKind* find_adapter_kind(std::string_view kind);

}  // namespace cpd::adapters
