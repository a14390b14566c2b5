// The radar adapter: TCP or serial link, polling, frame parsing, clock mapping and track building.
#pragma once

#include <memory>

#include "adapters/adapter.h"
#include "adapters/radar/radar_config.h"

namespace cpd::adapters {

std::unique_ptr<Adapter> make_radar_adapter(const RadarConfig& config, AdapterContext& ctx);

}  // namespace cpd::adapters
