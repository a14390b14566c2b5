// The recorder docking station adapter (specs/recorder-dock.md): polls /status and /files, persists the
// listing through the DockLedger, streams each new file to disk while hashing it (SHA-256 + MD5), resumes
// broken downloads with Range, emits RecordingCollected / DockFileFault, and acks a file only after its
// record is committed.
#pragma once

#include <memory>

#include "adapters/adapter.h"
#include "adapters/recorder/recorder_config.h"

namespace cpd::adapters {

// ctx.media and ctx.dock_ledger and ctx.blocking must be set.
std::unique_ptr<Adapter> make_recorder_adapter(const RecorderDockConfig& config, AdapterContext& ctx);

}  // namespace cpd::adapters
