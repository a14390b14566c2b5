// CentralStore: every gateway's chain in PostgreSQL. All chain state lives here (not in an instance's
// memory), so any number of checkpoint-central instances can take any record in any order: a record is
// stored as soon as its signature verifies, and a gateway's watermark (the contiguous, chain-linked,
// media-complete prefix) advances under a row lock on that gateway.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "central/pg.h"
#include "central/record_columns.h"
#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"

namespace cpd::central {

struct IncomingRecord {
  std::string gateway;
  std::uint64_t seq = 0;
  std::string jws;
  std::string jws_sha256;
  std::string prev;
  std::string kid;
  nlohmann::json body;
};

struct IncomingMedia {
  std::string gateway;  // the topic's gateway
  std::string sha256;
  std::uint64_t bytes = 0;
  std::string path;  // where the file now is (written and fsync'd before the batch commits)
};

struct QuarantineEntry {
  std::string gateway;
  std::optional<std::uint64_t> seq;
  std::string kid;
  std::string jws;
  std::string reason;
};

struct NotHeld {  // a gateway answered that it no longer holds these records
  std::string gateway;
  std::uint64_t from_seq = 0;
  std::uint64_t to_seq = 0;
};

struct Batch {
  std::vector<IncomingRecord> records;
  std::vector<IncomingMedia> media;
  std::vector<QuarantineEntry> quarantine;
  std::vector<custody::Head> heads;
  std::vector<NotHeld> not_held;
  bool empty() const {
    return records.empty() && media.empty() && quarantine.empty() && heads.empty() && not_held.empty();
  }
};

struct BatchOutcome {
  std::uint64_t stored = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t forks = 0;
  std::uint64_t quarantined = 0;
  std::uint64_t quarantine_dropped = 0;  // beyond feed.quarantine_max_per_gateway: counted only
  std::uint64_t media_stored = 0;
  std::vector<std::string> fork_ids;       // gateway:seq of each fork, for the alarm line
  std::vector<std::string> chain_breaks;   // "gateway:seq: reason"
  std::vector<custody::Receipt> receipts;  // to publish (retained) once committed
};

struct ReceiptPolicy {
  std::string central_id;
  std::uint64_t every_records = 1000;
  std::int64_t every_ms = 5000;
};

// What to ask one gateway for.
struct ResendPlan {
  std::string gateway;
  custody::ResendRequest request;
  std::string why;  // "hole 41..57", "tail 101..130 (announced 130)", "media of seq 12"
};

struct GapPolicy {
  std::int64_t resend_after_ms = 10000;
  std::int64_t retry_min_ms = 5000;
  std::int64_t retry_max_ms = 300000;
};

class CentralStore {
 public:
  static constexpr int kSchemaVersion = 1;

  // Connects and brings the schema to kSchemaVersion (under an advisory lock: instances may start together).
  explicit CentralStore(const std::string& conninfo, std::int64_t quarantine_max_per_gateway = 100000);

  // Trusts `public_key` for `gateway` (idempotent). `source` says how: "enroll", "keys_dir:<file>".
  void enroll(const std::string& gateway, const Ed25519PublicKey& public_key, const std::string& source,
              std::int64_t now_ms);
  // gateway -> kid -> key, for every enrolled gateway.
  std::map<std::string, std::map<std::string, Ed25519PublicKey>> trusted_keys();

  // One transaction: records (duplicates dropped, forks kept aside), media, quarantine, announced heads,
  // not-held ranges; then each touched gateway's watermark advanced under its row lock, and a receipt
  // decided when the policy says so.
  BatchOutcome store_batch(const Batch& batch, std::int64_t now_ms, const ReceiptPolicy& policy);

  // Receipts due by time (watermark moved and every_ms passed, or the last one older than 10 x every_ms).
  std::vector<custody::Receipt> due_receipts(std::int64_t now_ms, const ReceiptPolicy& policy);

  // Gaps old enough to ask for again (rows locked with SKIP LOCKED: instances share the work); the next
  // request time is pushed back with doubling backoff.
  std::vector<ResendPlan> plan_resends(std::int64_t now_ms, const GapPolicy& policy);

  // Per gateway: watermark, gaps, receipts, keys, forks, quarantine (the `status` command and metrics).
  nlohmann::json status();
  // The stored JWS of `gateway` from seq `from` on, in seq order, as lines (`export`).
  void export_chain(const std::string& gateway, std::uint64_t from,
                    const std::function<void(const std::string&)>& line);

  PgConnection& connection() { return *conn_; }

 private:
  void migrate();
  void advance(const std::string& gateway, std::int64_t now_ms, const ReceiptPolicy& policy,
               BatchOutcome& out);

  std::unique_ptr<PgConnection> conn_;
  std::int64_t quarantine_max_;
};

}  // namespace cpd::central
