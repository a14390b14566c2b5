// StorageGuard: storage state from free space and commit failures; the rules are in storage_guard.h.
#include "daemon/app/storage_guard.h"

#include <algorithm>
#include <cstdio>

namespace cpd::app {
namespace {

std::string mib(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

}  // namespace

std::optional<adapters::DeviceStatusEvent> StorageGuard::update(const StorageReadings& r, UnixMs now_ms) {
  const std::uint64_t free = std::min(r.store_free_bytes, r.media_free_bytes);
  std::string next = state_;
  if (r.commit_pending_retry) {
    next = "fault";
  } else if (state_ == "fault") {
    // Out of fault once the failed batch has been committed.
    next = free < reserve_ ? "warning" : "ok";
  } else if (free < reserve_ || r.refused_writes > last_.refused_writes) {
    next = "warning";
  } else if (state_ == "warning" && free >= reserve_ + reserve_ / 8) {
    next = "ok";
  }
  const bool changed = next != state_ || (first_ && next != "ok");
  first_ = false;
  last_ = r;
  state_ = next;
  if (state_ == "fault") {
    text_ = "evidence records cannot be committed (" + std::to_string(r.commit_failures) +
            " failed commits, " + std::to_string(r.queued_facts) + " facts waiting in memory); " + mib(free) +
            " free";
  } else if (state_ == "warning") {
    text_ = mib(free) + " free, below the " + mib(reserve_) +
            " kept for evidence records: new pictures and recordings are not stored (" +
            std::to_string(r.refused_writes) + " writes refused so far); records are still committed";
  } else {
    text_ =
        mib(free) + " free; " + std::to_string(r.refused_writes) + " media writes were refused since start";
  }
  if (!changed) {
    return std::nullopt;
  }
  adapters::DeviceStatusEvent ev;
  ev.device_id = "storage";
  ev.kind = "gateway";
  ev.state = state_;
  ev.text = text_;
  ev.time_ms = now_ms;
  return ev;
}

nlohmann::json StorageGuard::status() const {
  return {{"state", state_},
          {"text", text_},
          {"store_free_bytes", last_.store_free_bytes},
          {"media_free_bytes", last_.media_free_bytes},
          {"reserve_bytes", reserve_},
          {"refused_media_writes", last_.refused_writes},
          {"commit_failures", last_.commit_failures},
          {"salvaged_facts", last_.salvaged_facts}};
}

}  // namespace cpd::app
