// The outbox as the forwarder sees it: read records after a seq, report PUBACKed ones. Implemented by
// the store worker, so the forwarder never blocks on SQLite.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "daemon/store/evidence_store.h"

namespace cpd::forwarder {

// A record just committed, handed to the forwarder so that, when it is caught up, it can publish without
// reading the record back from the store. `ready_at` is when its fact was ready to seal (latency figures).
struct CommittedRecord {
  std::uint64_t seq = 0;
  std::chrono::steady_clock::time_point ready_at{};
  std::string jws;
  bool has_media = false;  // such records go through the outbox read, which loads their media
  std::string type;        // the record's type (passage, audit, ...): for the control socket and metrics
};

class OutboxSource {
 public:
  virtual ~OutboxSource() = default;
  // Asynchronously reads up to `limit` outbox entries with seq > after_seq, ascending, and calls `done`
  // (on another thread: the callee posts it to its own executor) with them, or with nullopt when the store
  // could not be read (an I/O error: not the same as "no entry after after_seq").
  virtual void fetch_after(std::uint64_t after_seq, std::size_t limit,
                           std::function<void(std::optional<std::vector<store::OutboxEntry>>)> done) = 0;
  // These records were PUBACKed: remove them from the outbox (batched; losing this only causes a resend).
  virtual void forwarded(std::vector<std::uint64_t> seqs) = 0;
};

}  // namespace cpd::forwarder
