// EvidenceStore: the durable SQLite store of sealed records and the outbox of records not yet PUBACKed.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/core/record.h"
#include "daemon/core/status.h"

struct sqlite3;

namespace cpd::store {

// Start-up failures (cannot open, quick_check failed, schema too new): the message names file and reason.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OutboxEntry {
  std::uint64_t seq = 0;
  std::string jws;
  UnixMs created_ms = 0;
  std::vector<std::string> media;  // SHA-256 of the media the record names (published before it)
  // Filled by the store worker for the forwarder: the bytes of each media file, parallel to `media`
  // (empty string: missing or damaged in the media store, already reported).
  std::vector<std::string> media_bytes;
};

struct OutboxStats {
  std::uint64_t count = 0;
  std::optional<UnixMs> oldest_created_ms;
};

struct StoreOptions {
  // How long a write waits for another connection's lock before giving Status::retry.
  std::chrono::milliseconds busy_timeout{5000};
};

// Not thread-safe: one owner (the store worker thread) calls it; other processes may read the file.
class EvidenceStore {
 public:
  static constexpr int kSchemaVersion = 2;

  // Opens or creates the store: WAL, synchronous=FULL, PRAGMA quick_check, migrations to kSchemaVersion.
  explicit EvidenceStore(const std::string& path);
  EvidenceStore(const std::string& path, const StoreOptions& options);
  ~EvidenceStore();
  EvidenceStore(const EvidenceStore&) = delete;
  EvidenceStore& operator=(const EvidenceStore&) = delete;

  // The last committed record's seq and the SHA-256 of its JWS (seq 0 and 64 zeros when empty).
  ChainHead chain_head() const;

  // Commits the batch in one transaction (one fsync): each record into `records` and the outbox.
  // The batch must continue the chain (first seq = head + 1, consecutive). All or nothing.
  Status append(const std::vector<SealedRecord>& batch);

  // Up to `limit` outbox entries with seq > after_seq, ascending. A read error gives what was read so far
  // (possibly nothing); the caller asks again on its next round.
  std::vector<OutboxEntry> outbox_after(std::uint64_t after_seq, std::size_t limit) const;
  // Removes PUBACKed records from the outbox (they stay in `records`). Unknown seqs are ignored.
  Status mark_forwarded(const std::vector<std::uint64_t>& seqs);
  // count of the outbox; oldest_created_ms is created_ms of its lowest seq (seq order is creation order).
  OutboxStats outbox_stats() const;
  // Whether a media file is named by a record still in the outbox (then it must not be deleted).
  bool media_pending(const std::string& sha256) const;

  std::optional<SealedRecord> record(std::uint64_t seq) const;
  std::uint64_t record_count() const;
  const std::string& path() const { return path_; }

 private:
  struct Statements;  // the prepared statements, made once after migration

  void open_checked(const StoreOptions& options);
  void migrate();
  void prepare_statements();
  ChainHead load_head() const;
  void close() noexcept;

  std::string path_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<Statements> stmts_;
  ChainHead head_;  // cached: read at open, advanced by each committed append
};

}  // namespace cpd::store
