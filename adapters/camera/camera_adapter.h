// The ANPR camera adapter: ISAPI over HTTP (Digest/Basic), deviceInfo and time polling, the alert stream
// (multipart), pictures into the media store, PlateRead events out.
#pragma once

#include <memory>

#include "adapters/adapter.h"
#include "adapters/camera/camera_config.h"

namespace cpd::adapters {

std::unique_ptr<Adapter> make_camera_adapter(const CameraConfig& config, AdapterContext& ctx);

}  // namespace cpd::adapters
