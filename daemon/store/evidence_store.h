// EvidenceStore: the durable SQLite store of sealed records and the outbox of records not yet PUBACKed.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/core/record.h"
#include "daemon/core/status.h"
#include "daemon/store/record_effects.h"

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

// A sealed record a recording can link to.
struct LinkTarget {
  std::string id;
  std::string type;
  UnixMs time_ms = 0;
  // In a batch being sealed: a `speeding` record's JWS (its panoramas decide a link's panoramas_with_video).
  // Empty when read from the store: the link reads it then, one record at a time.
  std::string jws;
};

// A recording's stored link span.
struct StoredSpan {
  std::string recording_id;
  LinkSpan span;
  std::string recording_jws;  // in a batch being sealed; empty when read from the store (read when needed)
};

// One file in the dock ledger (see adapters/dock_ledger.h); state is pending | recorded | acked | faulted.
struct DockFileRow {
  std::string unique_id;
  std::string md5;
  std::string entry_json;
  std::string state = "pending";
  std::string sha256;
  std::string record_id;
};

struct OutboxStats {
  std::uint64_t count = 0;
  std::optional<UnixMs> oldest_created_ms;
};

// The last custody receipt the gateway accepted (docs/custody.md): central holds every record through
// `through_seq` (whose JWS hashes to `head`) and the pictures they name.
struct CustodyState {
  std::uint64_t through_seq = 0;
  std::string head;
  std::string central;
  std::string kid;
  std::string receipt;  // the receipt JWS as received
  UnixMs received_ms = 0;
};

// A recording on its way to central (docs/custody.md, "Recordings to central"): one row per kept file,
// made from its `recording` record; `sent_to` bytes were PUBACKed in order; `held_ms` once central's signed
// file receipt was accepted (kept in `receipt`).
struct UploadRow {
  std::string sha256;
  std::uint64_t seq = 0;
  std::uint64_t length = 0;
  bool important = false;
  bool requested = false;  // central asked for it (the on_request policy sends only these)
  std::string name;
  std::uint64_t sent_to = 0;
  std::optional<UnixMs> held_ms;
};

struct UploadStats {
  std::uint64_t pending = 0;  // rows not yet held
  std::uint64_t pending_bytes = 0;
  std::uint64_t held = 0;
};

struct StoreOptions {
  // How long a write waits for another connection's lock before giving Status::retry.
  std::chrono::milliseconds busy_timeout{5000};
  // The SQLite VFS to open the file with; empty: the default. Tests name one that fails on demand
  // (tests/support/faulty_vfs.h).
  std::string vfs;
};

// Not thread-safe: one owner (the store worker thread) calls it; other processes may read the file.
class EvidenceStore {
 public:
  static constexpr int kSchemaVersion = 8;

  // Opens or creates the store: WAL, synchronous=FULL, PRAGMA quick_check, migrations to kSchemaVersion.
  explicit EvidenceStore(const std::string& path);
  EvidenceStore(const std::string& path, const StoreOptions& options);
  ~EvidenceStore();
  EvidenceStore(const EvidenceStore&) = delete;
  EvidenceStore& operator=(const EvidenceStore&) = delete;

  // The last committed record's seq and the SHA-256 of its JWS (seq 0 and 64 zeros when empty; an empty
  // store that continued a chain: the origin's seq and head, see continue_chain).
  ChainHead chain_head() const;

  // Commits the batch in one transaction (one fsync): each record into `records` and the outbox, with what
  // is committed beside it (kept media, link span, dock ledger change). The batch must continue the chain
  // (first seq = head + 1, consecutive). All or nothing.
  Status append(const std::vector<StoredRecord>& batch);
  // The same for records with nothing committed beside them.
  Status append(const std::vector<SealedRecord>& batch);

  // Up to `limit` outbox entries with seq > after_seq, ascending. A read error gives what was read so far
  // (possibly nothing); the caller asks again on its next round.
  // nullopt on a read error (not the same as an empty outbox after after_seq).
  std::optional<std::vector<OutboxEntry>> outbox_after(std::uint64_t after_seq, std::size_t limit) const;
  // Removes PUBACKed records from the outbox (they stay in `records`). Unknown seqs are ignored.
  Status mark_forwarded(const std::vector<std::uint64_t>& seqs);
  // count of the outbox; oldest_created_ms is created_ms of its lowest seq (seq order is creation order).
  OutboxStats outbox_stats() const;
  // Whether a media file is named by a record still in the outbox (then it must not be deleted).
  bool media_pending(const std::string& sha256) const;
  // Whether a kept media file (recording) is held by its retention period at `now_ms`.
  bool media_held(const std::string& sha256, UnixMs now_ms) const;
  // Since when this store has named media files (its creation; an older store's oldest record). A file
  // older than that which no record names is not this store's to delete.
  UnixMs media_since_ms() const;
  // Raises media_since_ms to at least `ms` (never lowers it). For a store with no record yet. Throws
  // StoreError when it cannot be written: the media sweep would then take a previous store's files for this
  // store's.
  void raise_media_since(UnixMs ms);
  // Whether any record of this store names the media file; nullopt on a read error (unknown now).
  std::optional<bool> media_named(const std::string& sha256) const;
  // Whether a record of this store names the file as a kept file (a body-worn recording), not a picture;
  // nullopt on a read error (unknown now).
  std::optional<bool> recording_named(const std::string& sha256) const;

  // Links: committed records of `types` with time_ms in span, in seq order.
  std::vector<LinkTarget> records_in_span(const std::vector<std::string>& types, const LinkSpan& span) const;
  // Stored recording spans that contain t_ms.
  std::vector<StoredSpan> spans_containing(UnixMs t_ms) const;
  // The largest hi_ms of any stored span (nullopt: none), so most records need no span query.
  std::optional<UnixMs> max_span_end() const;

  // Dock ledger. The cursor ("" = never listed) and the files not yet acknowledged or faulted, in
  // listing order.
  Status dock_load(const std::string& device_id, std::string& cursor, std::vector<DockFileRow>& open) const;
  // One transaction, in order: known files keep their row; unknown files are inserted as pending while
  // at most max_new_files of them, with at most max_new_bytes of entry_json, are new; the first that
  // does not fit ends the pass, and only a complete pass sets the cursor. `states` gets the row of each
  // file passed, parallel to the first states.size() of `files`.
  Status dock_save_listing(const std::string& device_id, const std::vector<DockFileRow>& files,
                           const std::string& next_cursor, std::vector<DockFileRow>& states,
                           std::size_t max_new_files = SIZE_MAX, std::size_t max_new_bytes = SIZE_MAX);
  // The station acknowledged the file: its row is closed at now_ms.
  Status dock_mark_acked(const std::string& device_id, const std::string& unique_id, const std::string& md5,
                         UnixMs now_ms);
  // Ledger retention: deletes up to `limit` closed rows (acked, or faulted by a committed fault record) of
  // any device that were closed before before_ms; open rows (pending, recorded) are never touched. Within
  // the retention a closed row is what stops a file listed again (station restart, lost cursor, a faulted
  // file the station keeps) from being collected twice.
  Status dock_prune(UnixMs before_ms, std::size_t limit, std::uint64_t& pruned);

  // Custody: the last accepted receipt (nullopt: none yet), and recording a newer one.
  std::optional<CustodyState> custody() const;
  Status set_custody(const CustodyState& state);
  // Records with from <= seq <= to still held (retention may have pruned older ones), ascending, at most
  // `limit`, each with its published media (for a resend); nullopt when the store could not be read (which
  // tells nothing about what it holds).
  std::optional<std::vector<OutboxEntry>> records_range(std::uint64_t from, std::uint64_t to,
                                                        std::size_t limit) const;
  // The lowest seq from..to (inclusive) this store holds, if any, or that it could not be read (which tells
  // nothing: a caller deciding whether something may be deleted takes it as held).
  struct FirstHeld {
    std::optional<std::uint64_t> seq;
    bool unreadable = false;
  };
  FirstHeld first_held(std::uint64_t from, std::uint64_t to) const;
  // Whether a record with after < seq <= through has a type other than `type`.
  bool has_other_than(const std::string& type, std::uint64_t after, std::uint64_t through) const;
  // The lowest seq still held (0 when there is none).
  std::uint64_t first_seq() const;
  // Retention: deletes up to `limit` records with seq <= through_seq (in custody) and created_ms < before_ms,
  // never the chain head and never a record naming a kept file (a recording), with their media rows.
  // Returns how many went and the pictures no remaining record names (the caller deletes those files).
  struct Pruned {
    std::uint64_t records = 0;
    std::vector<std::string> media;
  };
  // A recording goes too once central's file receipt for it was accepted and its hold (important files)
  // ended before now_ms; then its file is listed with the pictures.
  Pruned prune_in_custody(std::uint64_t through_seq, UnixMs before_ms, std::size_t limit, UnixMs now_ms = 0);

  // Recordings to central. Kept files of `recording` records with no upload row get one (at most `limit`
  // per call, in seq order); returns how many.
  std::size_t uploads_discover(std::size_t limit, const std::string& only_sha256 = {});
  // Rows not yet held, requested first, then important, each in seq order: all of them (`all`), or the
  // important and requested ones (`important`), or only the requested ones; with `unsent_only`, only those
  // not yet sent whole; never those in `exclude` (files the uploader does not send now, which must not
  // fill the page).
  std::vector<UploadRow> uploads_pending(bool all, bool important, std::size_t limit,
                                         bool unsent_only = false,
                                         const std::set<std::string>& exclude = {}) const;
  // Rows not yet held and sent whole (each waiting for its file receipt), with seq above `after_seq`, in seq
  // order, under the same policy: a page of the files whose fin is sent again, walked through page by page.
  std::vector<UploadRow> uploads_sent_whole(bool all, bool important, std::int64_t after_seq,
                                            std::size_t limit) const;
  std::optional<UploadRow> upload(const std::string& sha256) const { return find_upload(sha256).row; }
  // The upload row of a file, or that there is none, or (`unreadable`) that the store could not be read,
  // which says nothing about whether the file is held.
  struct UploadLookup {
    std::optional<UploadRow> row;
    bool unreadable = false;
  };
  UploadLookup find_upload(const std::string& sha256) const;
  Status upload_progress(const std::string& sha256, std::uint64_t sent_to);
  // Central asked for the whole file: requested, sent again from byte 0.
  Status upload_request(const std::string& sha256);
  // A checked file receipt for `sha256` of `length` bytes: the row is held. false when no row of that
  // length is waiting (nothing changes).
  bool upload_held(const std::string& sha256, std::uint64_t length, const std::string& central,
                   const std::string& receipt, UnixMs now_ms);
  UploadStats upload_stats() const;

  // A replaced store (docs/custody.md): an EMPTY store (no record, no origin) continues the chain after an
  // accepted custody receipt: in one transaction the receipt becomes the chain's origin (chain_head() is
  // then {through_seq, head} with no record through_seq here, the next append starts at through_seq + 1)
  // and the custody state. Fails (nothing written) if the store holds a record or an origin already.
  Status continue_chain(const CustodyState& receipt);
  // The receipt this store's chain continued from (nullopt: the chain started here at seq 1).
  std::optional<CustodyState> chain_origin() const;

  std::optional<SealedRecord> record(std::uint64_t seq) const;
  std::uint64_t record_count() const;
  const std::string& path() const { return path_; }

 private:
  struct Statements;  // the prepared statements, made once after migration

  void open_checked(const StoreOptions& options);
  // The rows of an append, inside its write transaction: the chain continues the file's last seq.
  Status append_batch(const std::vector<StoredRecord>& batch, bool& head_moved);
  // One record's rows: the record, its outbox entry, media, link span and dock ledger update.
  Status append_record(const StoredRecord& stored);
  Status append_media(const StoredRecord& stored);  // published and kept media references
  Status append_dock_update(const SealedRecord& r, const DockFileUpdate& u);
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
