// StorageGuard: watches the free space of the evidence store's and media store's file systems and the store
// worker's commit failures, and says when the gateway's storage state changes (ok -> warning -> fault and
// back), as a device_status event for the pseudo-device "storage". Pure: readings come in, so tests fix them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "adapters/events.h"
#include "daemon/core/time.h"

namespace cpd::app {

struct StorageReadings {
  std::uint64_t store_free_bytes = 0;
  std::uint64_t media_free_bytes = 0;
  std::uint64_t commit_failures = 0;  // the store worker's failed commits since start
  bool commit_pending_retry = false;  // a batch failed and waits to be committed again
  std::uint64_t refused_writes = 0;   // media writes refused for lack of space since start
  std::uint64_t queued_facts = 0;     // facts waiting to be committed
  std::uint64_t salvaged_facts = 0;   // facts the sealer refused, sealed salvaged since start (a gateway bug)
};

class StorageGuard {
 public:
  // Space is "low" below `reserve_bytes`, and counts as back once it is above reserve + reserve/8 (so a
  // disk hovering at the line does not flap).
  explicit StorageGuard(std::uint64_t reserve_bytes) : reserve_(reserve_bytes) {}

  // The state after these readings: an event when it changed (the first call reports only a problem).
  std::optional<adapters::DeviceStatusEvent> update(const StorageReadings& r, UnixMs now_ms);
  const std::string& state() const { return state_; }
  nlohmann::json status() const;

 private:
  std::uint64_t reserve_;
  std::string state_ =
      "ok";  // ok | warning (media refused, records still committed) | fault (commits failing)
  std::string text_;
  StorageReadings last_;
  bool first_ = true;
};

}  // namespace cpd::app
