// EvidenceStore: sealed records and the outbox in one SQLite file (WAL, synchronous=FULL), so a record is
// accepted only once its transaction is durable, and the backlog survives restarts and crashes on disk.
#include "daemon/store/evidence_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>
#include <system_error>
#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/record_check.h"

namespace cpd::store {

namespace {

// Bounds the WAL file left after a checkpoint, so a burst does not keep a large file around for good.
constexpr std::int64_t kJournalSizeLimitBytes = 64LL * 1024 * 1024;

// Schema steps: each brings user_version from version-1 to version in one transaction. Append new steps
// (dock cursors, media references, links...) at the end; never edit a step that has shipped.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
      CREATE TABLE records (
        seq        INTEGER PRIMARY KEY,
        id         TEXT    NOT NULL UNIQUE,
        type       TEXT    NOT NULL,
        time_ms    INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        jws        TEXT    NOT NULL
      );
      CREATE INDEX records_type_time ON records(type, time_ms);
      CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY REFERENCES records(seq)
      );
    )sql"},
    {2, R"sql(
      CREATE TABLE record_media (
        seq    INTEGER NOT NULL REFERENCES records(seq),
        sha256 TEXT    NOT NULL,
        PRIMARY KEY (seq, sha256)
      ) WITHOUT ROWID;
      CREATE INDEX record_media_sha256 ON record_media(sha256);
    )sql"},
    {3, R"sql(
      ALTER TABLE record_media ADD COLUMN published INTEGER NOT NULL DEFAULT 1;
      ALTER TABLE record_media ADD COLUMN hold_until_ms INTEGER NOT NULL DEFAULT 0;
      CREATE TABLE recording_spans (
        seq   INTEGER PRIMARY KEY REFERENCES records(seq),
        lo_ms INTEGER NOT NULL,
        hi_ms INTEGER NOT NULL
      );
      CREATE INDEX recording_spans_hi ON recording_spans(hi_ms);
      CREATE TABLE dock_cursors (
        device_id TEXT PRIMARY KEY,
        cursor    TEXT NOT NULL
      );
      CREATE TABLE dock_files (
        device_id  TEXT NOT NULL,
        unique_id  TEXT NOT NULL,
        md5        TEXT NOT NULL,
        entry_json TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('pending', 'recorded', 'acked', 'faulted')),
        sha256     TEXT NOT NULL DEFAULT '',
        record_id  TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (device_id, unique_id, md5)
      );
      CREATE INDEX dock_files_open ON dock_files(device_id, state);
    )sql"},
    {4, R"sql(
      CREATE TABLE custody (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        through_seq INTEGER NOT NULL,
        head        TEXT    NOT NULL,
        central     TEXT    NOT NULL,
        kid         TEXT    NOT NULL,
        receipt     TEXT    NOT NULL,
        received_ms INTEGER NOT NULL
      );
    )sql"},
    // When a dock file's ledger row was closed (acked or faulted), so closed rows can be pruned after a
    // retention (dock_prune). Rows closed before this step count from the upgrade.
    {5, R"sql(
      ALTER TABLE dock_files ADD COLUMN done_ms INTEGER NOT NULL DEFAULT 0;
      UPDATE dock_files SET done_ms = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)
        WHERE state IN ('acked', 'faulted');
      CREATE INDEX dock_files_done ON dock_files(state, done_ms);
    )sql"},
    // A replaced store (docs/custody.md): the chain of an empty store continues after the custody receipt
    // it found, so its head is (seq, head) with no record seq held here. At most one row, written once,
    // before the first record.
    {6, R"sql(
      CREATE TABLE chain_origin (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        seq         INTEGER NOT NULL,
        head        TEXT    NOT NULL,
        central     TEXT    NOT NULL,
        kid         TEXT    NOT NULL,
        receipt     TEXT    NOT NULL,
        received_ms INTEGER NOT NULL
      );
    )sql"},
    // Recordings to central (docs/custody.md): one row per kept file, its progress and central's receipt.
    {7, R"sql(
      CREATE TABLE uploads (
        sha256    TEXT PRIMARY KEY,
        seq       INTEGER NOT NULL,
        length    INTEGER NOT NULL,
        important INTEGER NOT NULL,
        name      TEXT    NOT NULL,
        requested INTEGER NOT NULL DEFAULT 0,
        sent_to   INTEGER NOT NULL DEFAULT 0,
        held_ms   INTEGER,
        central   TEXT,
        receipt   TEXT
      );
      CREATE INDEX uploads_pending ON uploads(held_ms, seq);
    )sql"},
    // Step 8: since when this store has named media files. A file in the media directory older than that,
    // named by no record of this store (a previous store's, moved aside or lost), is not this store's to
    // delete: central may never have confirmed it. An existing store counts from its oldest record.
    {8, R"sql(
      CREATE TABLE store_info (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
      );
      INSERT INTO store_info (key, value) VALUES ('media_since_ms',
        coalesce((SELECT min(created_ms) FROM records), CAST(strftime('%s', 'now') AS INTEGER) * 1000));
    )sql"},
};

static_assert(std::size(kMigrations) == static_cast<std::size_t>(EvidenceStore::kSchemaVersion),
              "one migration step per schema version");

// Resets a prepared statement when a use of it ends, on every path, so its read transaction closes.
class StatementUse {
 public:
  explicit StatementUse(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StatementUse() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StatementUse(const StatementUse&) = delete;
  StatementUse& operator=(const StatementUse&) = delete;
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
};

std::string column_text(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  if (text == nullptr) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<std::size_t>(sqlite3_column_bytes(stmt, column)));
}

// SQLITE_STATIC: the text must outlive the statement's step. A temporary (a literal, a ternary of literals,
// a concatenation) would be gone by then, so binding one does not compile (found by ASan).
// Rows of (seq, jws, created_ms), as the outbox and a resend read them.
// false when the read ended in an error rather than after the last row.
bool read_entries(sqlite3_stmt* stmt, std::vector<OutboxEntry>& entries) {
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    OutboxEntry entry;
    entry.seq = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
    entry.jws = column_text(stmt, 1);
    entry.created_ms = sqlite3_column_int64(stmt, 2);
    entries.push_back(std::move(entry));
  }
  return rc == SQLITE_DONE;
}

int bind_text(sqlite3_stmt* stmt, int index, const std::string& text) {
  return sqlite3_bind_text64(stmt, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8);
}
int bind_text(sqlite3_stmt* stmt, int index, std::string&& text) = delete;

// seq is stored as SQLite's signed 64-bit integer; sealed seqs never come near the top bit.
sqlite3_int64 to_db_seq(std::uint64_t seq) {
  if (seq > static_cast<std::uint64_t>(std::numeric_limits<sqlite3_int64>::max())) {
    return std::numeric_limits<sqlite3_int64>::max();
  }
  return static_cast<sqlite3_int64>(seq);
}

// Each entry's published media (`record_media` statement: seq -> sha256), so the caller can load the bytes;
// false on a read error (an entry's list may then be short: not to be published as it is).
bool attach_media(sqlite3_stmt* record_media, std::vector<OutboxEntry>& entries) {
  for (auto& entry : entries) {
    StatementUse media(record_media);
    sqlite3_bind_int64(media.get(), 1, to_db_seq(entry.seq));
    int rc = SQLITE_ROW;
    while ((rc = sqlite3_step(media.get())) == SQLITE_ROW) {
      entry.media.push_back(column_text(media.get(), 0));
    }
    if (rc != SQLITE_DONE) {
      return false;
    }
  }
  return true;
}

std::string error_text(sqlite3* db, int rc) {
  std::string text = sqlite3_errmsg(db);
  std::string_view code = sqlite3_errstr(rc);
  if (text != code) {
    text += " (";
    text += code;
    text += ")";
  }
  return text;
}

// Busy peers, a full disk and I/O errors may pass; anything else (constraint, corruption, read-only) won't.
Status status_from(int rc, std::string what) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
      return Status::retry(std::move(what));
    default:
      return Status::fail(std::move(what));
  }
}

// quick_check reports as lines under a "*** in database main ***" banner; the first real line is the news.
std::string first_problem(const std::string& report) {
  std::size_t start = 0;
  while (start < report.size()) {
    std::size_t end = report.find('\n', start);
    if (end == std::string::npos) {
      end = report.size();
    }
    std::string line = report.substr(start, end - start);
    if (!line.empty() && line.rfind("***", 0) != 0) {
      return line;
    }
    start = end + 1;
  }
  return report.empty() ? std::string("no report") : report;
}

// The store's directory must exist (it is not created) and the path must not be a directory.
void check_store_path(const std::string& path) {
  const std::filesystem::path file(path);
  std::filesystem::path dir = file.parent_path();
  if (dir.empty()) {
    dir = ".";
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw StoreError("store " + path + ": directory " + dir.string() +
                     " does not exist (it is not created automatically)");
  }
  if (std::filesystem::is_directory(file, ec)) {
    throw StoreError("store " + path + " is a directory, not a database file");
  }
  // A write-ahead log without its database (the .db moved aside or deleted, or a backup copied over it): an
  // empty database opened beside it makes SQLite delete the log, and with it the newest committed records.
  const std::filesystem::path wal(path + "-wal");
  if (std::filesystem::exists(wal, ec) && std::filesystem::file_size(wal, ec) > 0 && !ec) {
    const bool no_db = !std::filesystem::exists(file, ec);
    const auto db_bytes = no_db ? 0 : std::filesystem::file_size(file, ec);
    if (no_db || (!ec && db_bytes == 0)) {
      throw StoreError("store " + path + (no_db ? " is missing" : " is empty") + " but its write-ahead log " +
                       wal.string() +
                       " holds committed records: not started, so the log is not lost. Put the database back "
                       "beside it, or move " +
                       path + ", " + wal.string() + " and " + path +
                       "-shm aside together to start a new store");
    }
  }
}

void exec_or_throw(sqlite3* db, const std::string& path, const std::string& sql, const char* step) {
  char* err = nullptr;
  int exec_rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  if (exec_rc != SQLITE_OK) {
    std::string why = err != nullptr ? err : sqlite3_errstr(exec_rc);
    sqlite3_free(err);
    throw StoreError("store " + path + ": " + step + " failed: " + why);
  }
}

// Steps `sql` once: SQLITE_OK with the first row's first column in `value`, else the error code, and its
// text in `why` (read before the statement is finalized).
int first_row_text(sqlite3* db, const char* sql, std::string& value, std::string& why) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      value = column_text(stmt, 0);
      rc = SQLITE_OK;
    }
  }
  why = rc == SQLITE_OK ? std::string() : error_text(db, rc);
  sqlite3_finalize(stmt);
  return rc;
}

// Runs a one-row pragma and returns its first column as text.
std::string query_text(sqlite3* db, const std::string& path, const char* sql, const char* step) {
  std::string value;
  std::string why;
  if (first_row_text(db, sql, value, why) != SQLITE_OK) {
    throw StoreError("store " + path + ": " + step + " failed: " + why);
  }
  return value;
}

// PRAGMA quick_check; a file that is not a database, or fails the check, is refused and kept as found.
void check_integrity(sqlite3* db, const std::string& path) {
  std::string first_line;
  std::string why;
  const int rc = first_row_text(db, "PRAGMA quick_check", first_line, why);
  const int primary = rc & 0xff;
  if (primary == SQLITE_NOTADB) {
    throw StoreError(
        "store " + path + " is not an SQLite database (" + why +
        "); the file is kept as it is for inspection — move it aside, with its -wal and -shm files, "
        "to start a new store");
  }
  if (primary == SQLITE_CORRUPT) {
    first_line = why;
  } else if (rc != SQLITE_OK) {
    throw StoreError("store " + path + ": cannot read: " + why);
  }
  if (first_line != "ok") {
    first_line = first_problem(first_line);
    throw StoreError(
        "store " + path + " failed its integrity check: " + first_line +
        "; the file is kept as it is for inspection — move it aside, with its -wal and -shm files, "
        "to start a new store");
  }
}

// Refuses a schema newer than this build's and another program's database, before anything is changed.
void check_schema_is_ours(sqlite3* db, const std::string& path) {
  // Refuse a newer schema before changing anything (journal mode included) in a file we do not understand.
  const int version = std::stoi(query_text(db, path, "PRAGMA user_version", "reading the schema version"));
  if (version > EvidenceStore::kSchemaVersion) {
    throw StoreError("store " + path + " has schema version " + std::to_string(version) +
                     ", newer than this build knows (" + std::to_string(EvidenceStore::kSchemaVersion) +
                     "); run a newer checkpointd, the file is left untouched");
  }

  // Version 0 with tables is some other program's database: adding ours to it would mix the two.
  if (version == 0 &&
      query_text(db, path, "SELECT count(*) FROM sqlite_schema", "reading the schema") != "0") {
    throw StoreError("store " + path +
                     " is an SQLite database with tables but no checkpointd schema version; it is not "
                     "an evidence store, and is left untouched");
  }
}

// WAL, synchronous=FULL (checked to have taken effect), foreign keys and a bounded WAL file.
void set_durability(sqlite3* db, const std::string& path) {
  const std::string mode = query_text(db, path, "PRAGMA journal_mode=WAL", "setting journal_mode=WAL");
  if (mode != "wal") {
    throw StoreError("store " + path + ": journal_mode is '" + mode +
                     "', not 'wal' (WAL needs a local file system with shared memory)");
  }
  exec_or_throw(db, path, "PRAGMA synchronous=FULL", "setting synchronous=FULL");
  if (query_text(db, path, "PRAGMA synchronous", "reading synchronous") != "2") {
    throw StoreError("store " + path + ": synchronous=FULL did not take effect");
  }
  exec_or_throw(db, path, "PRAGMA foreign_keys=ON", "enabling foreign keys");
  exec_or_throw(db, path, "PRAGMA journal_size_limit=" + std::to_string(kJournalSizeLimitBytes),
                "setting journal_size_limit");
}

}  // namespace

struct EvidenceStore::Statements {
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  sqlite3_stmt* rollback = nullptr;
  sqlite3_stmt* max_seq = nullptr;
  sqlite3_stmt* insert_record = nullptr;
  sqlite3_stmt* insert_outbox = nullptr;
  sqlite3_stmt* outbox_after = nullptr;
  sqlite3_stmt* insert_media = nullptr;
  sqlite3_stmt* record_media = nullptr;
  sqlite3_stmt* media_pending = nullptr;
  sqlite3_stmt* delete_outbox = nullptr;
  sqlite3_stmt* outbox_count = nullptr;
  sqlite3_stmt* outbox_oldest = nullptr;
  sqlite3_stmt* record = nullptr;
  sqlite3_stmt* record_count = nullptr;
  sqlite3_stmt* last_record = nullptr;
  sqlite3_stmt* insert_kept_media = nullptr;
  sqlite3_stmt* media_held = nullptr;
  sqlite3_stmt* insert_span = nullptr;
  sqlite3_stmt* records_in_span = nullptr;
  sqlite3_stmt* spans_containing = nullptr;
  sqlite3_stmt* max_span_end = nullptr;
  sqlite3_stmt* dock_record = nullptr;
  sqlite3_stmt* dock_cursor = nullptr;
  sqlite3_stmt* dock_open = nullptr;
  sqlite3_stmt* dock_insert = nullptr;
  sqlite3_stmt* dock_get = nullptr;
  sqlite3_stmt* dock_set_cursor = nullptr;
  sqlite3_stmt* dock_acked = nullptr;

  ~Statements() {
    for (sqlite3_stmt* stmt :
         {begin,         commit,          rollback,         max_seq,         insert_record,     insert_outbox,
          outbox_after,  insert_media,    record_media,     media_pending,   delete_outbox,     outbox_count,
          outbox_oldest, record,          record_count,     last_record,     insert_kept_media, media_held,
          insert_span,   records_in_span, spans_containing, max_span_end,    dock_record,       dock_cursor,
          dock_open,     dock_insert,     dock_get,         dock_set_cursor, dock_acked}) {
      sqlite3_finalize(stmt);  // a no-op on nullptr
    }
  }
};

namespace {

// Runs a write transaction: BEGIN IMMEDIATE, body, COMMIT; rolls back on any failure of body or COMMIT.
template <typename Body>
Status run_write_transaction(sqlite3* db, sqlite3_stmt* begin, sqlite3_stmt* commit, sqlite3_stmt* rollback,
                             std::string_view what, Body&& body) {
  {
    StatementUse use(begin);
    int rc = sqlite3_step(begin);
    if (rc != SQLITE_DONE) {
      return status_from(rc, std::string(what) + ": cannot begin a transaction: " + error_text(db, rc));
    }
  }
  Status status = body();
  if (status.is_ok()) {
    StatementUse use(commit);
    int rc = sqlite3_step(commit);
    if (rc != SQLITE_DONE) {
      status = status_from(rc, std::string(what) + ": commit failed: " + error_text(db, rc));
    }
  }
  // After some errors (I/O, full disk) SQLite has already rolled back; a second ROLLBACK would only err.
  if (!status.is_ok() && sqlite3_get_autocommit(db) == 0) {
    StatementUse use(rollback);
    sqlite3_step(rollback);
  }
  return status;
}

}  // namespace

EvidenceStore::EvidenceStore(const std::string& path) : EvidenceStore(path, StoreOptions{}) {}

EvidenceStore::EvidenceStore(const std::string& path, const StoreOptions& options) : path_(path) {
  try {
    open_checked(options);
    migrate();
    prepare_statements();
    head_ = load_head();
  } catch (...) {
    close();
    throw;
  }
}

EvidenceStore::~EvidenceStore() {
  close();
}

void EvidenceStore::close() noexcept {
  stmts_.reset();
  if (db_ != nullptr) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
}

void EvidenceStore::open_checked(const StoreOptions& options) {
  check_store_path(path_);

  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE;
  int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, options.vfs.empty() ? nullptr : options.vfs.c_str());
  if (rc != SQLITE_OK) {
    std::string why = db_ != nullptr ? error_text(db_, rc) : sqlite3_errstr(rc);
    throw StoreError("store " + path_ + ": cannot open: " + why);
  }
  // Until the file has passed its checks, closing must not checkpoint a WAL into it: a bad store is kept
  // exactly as found, for inspection.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_busy_timeout(db_, static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(
                                options.busy_timeout.count(), 0, std::numeric_limits<int>::max())));

  // The integrity check comes first, before anything may write to the file.
  check_integrity(db_, path_);
  check_schema_is_ours(db_, path_);

  // SQLite falls back to read-only on a file it may not write; the daemon would then fail every append.
  if (sqlite3_db_readonly(db_, "main") == 1) {
    throw StoreError("store " + path_ + " is read-only for this process (check the file's owner and mode)");
  }

  set_durability(db_, path_);
  sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, nullptr);
}

void EvidenceStore::migrate() {
  auto read_version = [this]() {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &stmt, nullptr);
    int version = -1;
    if (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
      version = sqlite3_column_int(stmt, 0);
    }
    sqlite3_finalize(stmt);
    if (version < 0) {
      throw StoreError("store " + path_ + ": cannot read the schema version: " + sqlite3_errmsg(db_));
    }
    return version;
  };
  auto exec = [this](const std::string& sql) -> std::string {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc == SQLITE_OK) {
      return {};
    }
    std::string why = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return why.empty() ? std::string("unknown error") : why;
  };

  for (const Migration& step : kMigrations) {
    if (read_version() >= step.version) {
      continue;
    }
    if (std::string why = exec("BEGIN IMMEDIATE"); !why.empty()) {
      throw StoreError("store " + path_ + ": cannot start migration to schema " +
                       std::to_string(step.version) + ": " + why);
    }
    // Another process may have migrated between the read and BEGIN IMMEDIATE; read again under the lock.
    if (read_version() >= step.version) {
      exec("ROLLBACK");
      continue;
    }
    std::string why = exec(step.sql);
    if (why.empty()) {
      why = exec("PRAGMA user_version=" + std::to_string(step.version));
    }
    if (why.empty()) {
      why = exec("COMMIT");
    }
    if (!why.empty()) {
      if (sqlite3_get_autocommit(db_) == 0) {
        exec("ROLLBACK");
      }
      throw StoreError("store " + path_ + ": migration to schema " + std::to_string(step.version) +
                       " failed: " + why);
    }
  }
}

void EvidenceStore::prepare_statements() {
  stmts_ = std::make_unique<Statements>();
  auto prepare = [this](sqlite3_stmt*& stmt, const char* sql) {
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      throw StoreError("store " + path_ + ": cannot prepare '" + sql + "': " + error_text(db_, rc));
    }
  };
  Statements& s = *stmts_;
  prepare(s.begin, "BEGIN IMMEDIATE");
  prepare(s.commit, "COMMIT");
  prepare(s.rollback, "ROLLBACK");
  // The last seq of the chain: the last record's, or the origin's of a store that continued a chain.
  prepare(s.max_seq,
          "SELECT coalesce((SELECT max(seq) FROM records), (SELECT seq FROM chain_origin WHERE id = 1), 0)");
  prepare(s.insert_record,
          "INSERT INTO records(seq, id, type, time_ms, created_ms, jws) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  prepare(s.insert_outbox, "INSERT INTO outbox(seq) VALUES (?1)");
  prepare(s.outbox_after,
          "SELECT o.seq, r.jws, r.created_ms FROM outbox o JOIN records r ON r.seq = o.seq "
          "WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2");
  prepare(s.insert_media, "INSERT OR IGNORE INTO record_media(seq, sha256) VALUES (?1, ?2)");
  prepare(s.record_media, "SELECT sha256 FROM record_media WHERE seq = ?1 AND published = 1 ORDER BY sha256");
  // Pending: named by a record still in the outbox, or not yet in central's custody, or kept (a recording,
  // deleted only with its record once central's file receipt and its hold allow: prune_in_custody).
  prepare(s.media_pending,
          "SELECT 1 FROM record_media m WHERE m.sha256 = ?1 AND (m.published = 0 OR m.seq > "
          "COALESCE((SELECT through_seq FROM custody WHERE id = 1), 0) OR m.seq IN (SELECT seq FROM outbox)) "
          "LIMIT 1");
  prepare(s.delete_outbox, "DELETE FROM outbox WHERE seq = ?1");
  prepare(s.outbox_count, "SELECT count(*) FROM outbox");
  prepare(s.outbox_oldest, "SELECT r.created_ms FROM records r WHERE r.seq = (SELECT min(seq) FROM outbox)");
  prepare(s.record, "SELECT seq, id, type, time_ms, created_ms, jws FROM records WHERE seq = ?1");
  prepare(s.record_count, "SELECT count(*) FROM records");
  prepare(s.last_record, "SELECT seq, jws FROM records ORDER BY seq DESC LIMIT 1");
  prepare(
      s.insert_kept_media,
      "INSERT INTO record_media(seq, sha256, published, hold_until_ms) VALUES (?1, ?2, 0, ?3) "
      "ON CONFLICT(seq, sha256) DO UPDATE SET hold_until_ms = max(hold_until_ms, excluded.hold_until_ms)");
  prepare(s.media_held, "SELECT 1 FROM record_media WHERE sha256 = ?1 AND hold_until_ms > ?2 LIMIT 1");
  prepare(s.insert_span, "INSERT INTO recording_spans(seq, lo_ms, hi_ms) VALUES (?1, ?2, ?3)");
  prepare(s.records_in_span,
          "SELECT id, type, time_ms FROM records WHERE type = ?1 AND time_ms BETWEEN ?2 AND ?3 ORDER BY seq");
  prepare(s.spans_containing,
          "SELECT r.id, s.lo_ms, s.hi_ms FROM recording_spans s JOIN records r ON r.seq = s.seq "
          "WHERE s.hi_ms >= ?1 AND s.lo_ms <= ?1 ORDER BY s.seq");
  prepare(s.max_span_end, "SELECT max(hi_ms) FROM recording_spans");
  prepare(s.dock_record,
          "INSERT INTO dock_files(device_id, unique_id, md5, entry_json, state, sha256, record_id, done_ms) "
          "VALUES (?1, ?2, ?3, '', ?4, ?5, ?6, ?7) ON CONFLICT(device_id, unique_id, md5) DO UPDATE SET "
          "state = excluded.state, sha256 = excluded.sha256, record_id = excluded.record_id, "
          "done_ms = excluded.done_ms");
  prepare(s.dock_cursor, "SELECT cursor FROM dock_cursors WHERE device_id = ?1");
  prepare(s.dock_open,
          "SELECT unique_id, md5, entry_json, state, sha256, record_id FROM dock_files "
          "WHERE device_id = ?1 AND state IN ('pending', 'recorded') ORDER BY rowid");
  prepare(s.dock_insert,
          "INSERT OR IGNORE INTO dock_files(device_id, unique_id, md5, entry_json, state) "
          "VALUES (?1, ?2, ?3, ?4, 'pending')");
  prepare(s.dock_get,
          "SELECT unique_id, md5, entry_json, state, sha256, record_id FROM dock_files "
          "WHERE device_id = ?1 AND unique_id = ?2 AND md5 = ?3");
  prepare(s.dock_set_cursor,
          "INSERT INTO dock_cursors(device_id, cursor) VALUES (?1, ?2) "
          "ON CONFLICT(device_id) DO UPDATE SET cursor = excluded.cursor");
  prepare(s.dock_acked,
          "UPDATE dock_files SET state = 'acked', done_ms = ?4 WHERE device_id = ?1 AND unique_id = ?2 AND "
          "md5 = ?3");
}

ChainHead EvidenceStore::load_head() const {
  StatementUse use(stmts_->last_record);
  int rc = sqlite3_step(use.get());
  if (rc == SQLITE_DONE) {
    if (const auto origin = chain_origin()) {
      return ChainHead{origin->through_seq, origin->head};
    }
    return ChainHead{};
  }
  if (rc != SQLITE_ROW) {
    throw StoreError("store " + path_ + ": cannot read the chain head: " + error_text(db_, rc));
  }
  ChainHead head;
  head.seq = static_cast<std::uint64_t>(sqlite3_column_int64(use.get(), 0));
  head.jws_sha256 = sha256_hex(column_text(use.get(), 1));
  return head;
}

ChainHead EvidenceStore::chain_head() const {
  return head_;
}

Status EvidenceStore::append(const std::vector<SealedRecord>& batch) {
  std::vector<StoredRecord> stored;
  stored.reserve(batch.size());
  for (const SealedRecord& r : batch) {
    stored.push_back({r, {}});
  }
  return append(stored);
}

Status EvidenceStore::append(const std::vector<StoredRecord>& batch) {
  if (batch.empty()) {
    return Status::ok();
  }
  for (std::size_t i = 1; i < batch.size(); ++i) {
    if (batch[i].record.seq != batch[i - 1].record.seq + 1) {
      return Status::fail("store " + path_ + ": batch is not consecutive: seq " +
                          std::to_string(batch[i].record.seq) + " follows seq " +
                          std::to_string(batch[i - 1].record.seq) + "; nothing written");
    }
  }
  Statements& s = *stmts_;
  bool head_moved = false;  // set if the file's last seq differs from our cache (another writer)
  Status status = run_write_transaction(db_, s.begin, s.commit, s.rollback, "store " + path_ + ": append",
                                        [&] { return append_batch(batch, head_moved); });
  if (status.is_ok()) {
    head_ = ChainHead{batch.back().record.seq, sha256_hex(batch.back().record.jws)};
  } else if (head_moved) {
    // Someone else extended the file: our cache is stale. Refresh it so the caller sees the real head.
    try {
      head_ = load_head();
    } catch (const StoreError&) {
      // Keep the old cache; the status already says the append failed.
    }
  }
  return status;
}

Status EvidenceStore::append_batch(const std::vector<StoredRecord>& batch, bool& head_moved) {
  // The chain is checked against the file under the write lock, not only against the cache.
  std::uint64_t last = 0;
  {
    StatementUse use(stmts_->max_seq);
    int rc = sqlite3_step(use.get());
    if (rc != SQLITE_ROW) {
      return status_from(rc, "store " + path_ + ": append: cannot read the last seq: " + error_text(db_, rc));
    }
    last = static_cast<std::uint64_t>(sqlite3_column_int64(use.get(), 0));  // NULL (empty) reads as 0
  }
  head_moved = last != head_.seq;
  if (batch.front().record.seq != last + 1) {
    return Status::fail("store " + path_ + ": batch starting at seq " +
                        std::to_string(batch.front().record.seq) + " does not continue the chain at seq " +
                        std::to_string(last) + "; nothing written");
  }
  for (const StoredRecord& stored : batch) {
    if (Status st = append_record(stored); !st.is_ok()) {
      return st;
    }
  }
  return Status::ok();
}

Status EvidenceStore::append_record(const StoredRecord& stored) {
  const SealedRecord& r = stored.record;
  const RecordEffects& effects = stored.effects;
  Statements& s = *stmts_;
  {
    StatementUse use(s.insert_record);
    sqlite3_bind_int64(use.get(), 1, to_db_seq(r.seq));
    bind_text(use.get(), 2, r.id);
    bind_text(use.get(), 3, r.type);
    sqlite3_bind_int64(use.get(), 4, r.time_ms);
    sqlite3_bind_int64(use.get(), 5, r.created_ms);
    bind_text(use.get(), 6, r.jws);
    int rc = sqlite3_step(use.get());
    if (rc != SQLITE_DONE) {
      return status_from(rc, "store " + path_ + ": append: record seq " + std::to_string(r.seq) + ": " +
                                 error_text(db_, rc));
    }
  }
  {
    StatementUse use(s.insert_outbox);
    sqlite3_bind_int64(use.get(), 1, to_db_seq(r.seq));
    int rc = sqlite3_step(use.get());
    if (rc != SQLITE_DONE) {
      return status_from(rc, "store " + path_ + ": append: outbox seq " + std::to_string(r.seq) + ": " +
                                 error_text(db_, rc));
    }
  }
  if (Status st = append_media(stored); !st.is_ok()) {
    return st;
  }
  if (effects.link_span) {
    StatementUse use(s.insert_span);
    sqlite3_bind_int64(use.get(), 1, to_db_seq(r.seq));
    sqlite3_bind_int64(use.get(), 2, effects.link_span->lo_ms);
    sqlite3_bind_int64(use.get(), 3, effects.link_span->hi_ms);
    int rc = sqlite3_step(use.get());
    if (rc != SQLITE_DONE) {
      return status_from(rc, "store " + path_ + ": append: link span of seq " + std::to_string(r.seq) + ": " +
                                 error_text(db_, rc));
    }
  }
  if (effects.dock_update) {
    return append_dock_update(r, *effects.dock_update);
  }
  return Status::ok();
}

Status EvidenceStore::append_media(const StoredRecord& stored) {
  const SealedRecord& r = stored.record;
  for (const std::string& sha : r.media) {
    StatementUse use(stmts_->insert_media);
    sqlite3_bind_int64(use.get(), 1, to_db_seq(r.seq));
    bind_text(use.get(), 2, sha);
    int rc = sqlite3_step(use.get());
    if (rc != SQLITE_DONE) {
      return status_from(rc, "store " + path_ + ": append: media of seq " + std::to_string(r.seq) + ": " +
                                 error_text(db_, rc));
    }
  }
  for (const KeptMedia& kept : stored.effects.kept_media) {
    StatementUse use(stmts_->insert_kept_media);
    sqlite3_bind_int64(use.get(), 1, to_db_seq(r.seq));
    bind_text(use.get(), 2, kept.sha256);
    sqlite3_bind_int64(use.get(), 3, kept.hold_until_ms);
    int rc = sqlite3_step(use.get());
    if (rc != SQLITE_DONE) {
      return status_from(rc, "store " + path_ + ": append: kept media of seq " + std::to_string(r.seq) +
                                 ": " + error_text(db_, rc));
    }
  }
  return Status::ok();
}

Status EvidenceStore::append_dock_update(const SealedRecord& r, const DockFileUpdate& u) {
  // The file's ledger row moves with the record that covers it: a crash leaves both or neither.
  StatementUse use(stmts_->dock_record);
  bind_text(use.get(), 1, u.device_id);
  bind_text(use.get(), 2, u.unique_id);
  bind_text(use.get(), 3, u.md5);
  static const std::string kFaulted = "faulted";
  static const std::string kRecorded = "recorded";
  bind_text(use.get(), 4, u.sha256.empty() ? kFaulted : kRecorded);
  bind_text(use.get(), 5, u.sha256);
  bind_text(use.get(), 6, r.id);
  // A fault closes the row now; a recorded file stays open until the station acknowledges it.
  sqlite3_bind_int64(use.get(), 7, u.sha256.empty() ? r.created_ms : 0);
  int rc = sqlite3_step(use.get());
  if (rc != SQLITE_DONE) {
    return status_from(rc, "store " + path_ + ": append: dock file " + u.unique_id + " of seq " +
                               std::to_string(r.seq) + ": " + error_text(db_, rc));
  }
  return Status::ok();
}

std::optional<std::vector<OutboxEntry>> EvidenceStore::outbox_after(std::uint64_t after_seq,
                                                                    std::size_t limit) const {
  std::vector<OutboxEntry> entries;
  if (limit == 0) {
    return entries;
  }
  entries.reserve(std::min<std::size_t>(limit, 1024));
  StatementUse use(stmts_->outbox_after);
  sqlite3_bind_int64(use.get(), 1, to_db_seq(after_seq));
  sqlite3_bind_int64(use.get(), 2,
                     static_cast<sqlite3_int64>(std::min<std::size_t>(
                         limit, static_cast<std::size_t>(std::numeric_limits<sqlite3_int64>::max()))));
  if (!read_entries(use.get(), entries) || !attach_media(stmts_->record_media, entries)) {
    return std::nullopt;
  }
  return entries;
}

bool EvidenceStore::media_pending(const std::string& sha256) const {
  StatementUse use(stmts_->media_pending);
  bind_text(use.get(), 1, sha256);
  // On a read error, answer "pending": keeping a file is always the safe side.
  const int rc = sqlite3_step(use.get());
  return rc != SQLITE_DONE;
}

bool EvidenceStore::media_held(const std::string& sha256, UnixMs now_ms) const {
  StatementUse use(stmts_->media_held);
  bind_text(use.get(), 1, sha256);
  sqlite3_bind_int64(use.get(), 2, now_ms);
  return sqlite3_step(use.get()) != SQLITE_DONE;  // a read error keeps the file
}

std::vector<LinkTarget> EvidenceStore::records_in_span(const std::vector<std::string>& types,
                                                       const LinkSpan& span) const {
  std::vector<std::pair<std::uint64_t, LinkTarget>> found;
  for (const auto& type : types) {
    StatementUse use(stmts_->records_in_span);
    bind_text(use.get(), 1, type);
    sqlite3_bind_int64(use.get(), 2, span.lo_ms);
    sqlite3_bind_int64(use.get(), 3, span.hi_ms);
    while (sqlite3_step(use.get()) == SQLITE_ROW) {
      LinkTarget t{
          column_text(use.get(), 0), column_text(use.get(), 1), sqlite3_column_int64(use.get(), 2), {}};
      const auto colon = t.id.rfind(':');
      const std::uint64_t seq = colon == std::string::npos ? 0 : std::stoull(t.id.substr(colon + 1));
      found.emplace_back(seq, std::move(t));
    }
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<LinkTarget> out;
  out.reserve(found.size());
  for (auto& f : found) {
    out.push_back(std::move(f.second));
  }
  return out;
}

std::vector<StoredSpan> EvidenceStore::spans_containing(UnixMs t_ms) const {
  std::vector<StoredSpan> out;
  StatementUse use(stmts_->spans_containing);
  sqlite3_bind_int64(use.get(), 1, t_ms);
  while (sqlite3_step(use.get()) == SQLITE_ROW) {
    out.push_back({column_text(use.get(), 0),
                   LinkSpan{sqlite3_column_int64(use.get(), 1), sqlite3_column_int64(use.get(), 2)},
                   {}});
  }
  return out;
}

std::optional<UnixMs> EvidenceStore::max_span_end() const {
  StatementUse use(stmts_->max_span_end);
  if (sqlite3_step(use.get()) != SQLITE_ROW || sqlite3_column_type(use.get(), 0) == SQLITE_NULL) {
    return std::nullopt;
  }
  return sqlite3_column_int64(use.get(), 0);
}

namespace {

DockFileRow read_dock_row(sqlite3_stmt* stmt) {
  DockFileRow row;
  row.unique_id = column_text(stmt, 0);
  row.md5 = column_text(stmt, 1);
  row.entry_json = column_text(stmt, 2);
  row.state = column_text(stmt, 3);
  row.sha256 = column_text(stmt, 4);
  row.record_id = column_text(stmt, 5);
  return row;
}

}  // namespace

Status EvidenceStore::dock_load(const std::string& device_id, std::string& cursor,
                                std::vector<DockFileRow>& open) const {
  cursor.clear();
  open.clear();
  {
    StatementUse use(stmts_->dock_cursor);
    bind_text(use.get(), 1, device_id);
    const int rc = sqlite3_step(use.get());
    if (rc == SQLITE_ROW) {
      cursor = column_text(use.get(), 0);
    } else if (rc != SQLITE_DONE) {
      return status_from(
          rc, "store " + path_ + ": dock " + device_id + ": cannot read the cursor: " + error_text(db_, rc));
    }
  }
  StatementUse use(stmts_->dock_open);
  bind_text(use.get(), 1, device_id);
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(use.get())) == SQLITE_ROW) {
    open.push_back(read_dock_row(use.get()));
  }
  if (rc != SQLITE_DONE) {
    return status_from(rc, "store " + path_ + ": dock " + device_id +
                               ": cannot read the open files: " + error_text(db_, rc));
  }
  return Status::ok();
}

Status EvidenceStore::dock_save_listing(const std::string& device_id, const std::vector<DockFileRow>& files,
                                        const std::string& next_cursor, std::vector<DockFileRow>& states,
                                        std::size_t max_new_files, std::size_t max_new_bytes) {
  Statements& s = *stmts_;
  std::vector<DockFileRow> result;
  Status st = run_write_transaction(
      db_, s.begin, s.commit, s.rollback, "store " + path_ + ": dock " + device_id + ": save listing", [&] {
        result.clear();
        std::size_t new_files = 0;
        std::size_t new_bytes = 0;
        for (const auto& f : files) {
          {
            StatementUse use(s.dock_get);
            bind_text(use.get(), 1, device_id);
            bind_text(use.get(), 2, f.unique_id);
            bind_text(use.get(), 3, f.md5);
            const int rc = sqlite3_step(use.get());
            if (rc == SQLITE_ROW) {
              DockFileRow row = read_dock_row(use.get());
              if (row.entry_json.empty()) {
                row.entry_json = f.entry_json;
              }
              result.push_back(std::move(row));
              continue;
            }
            if (rc != SQLITE_DONE) {
              return status_from(rc, "store " + path_ + ": dock " + device_id + ": file " + f.unique_id +
                                         ": cannot read: " + error_text(db_, rc));
            }
          }
          // Unknown: taken only within the bound; the rest stays on the station, behind the cursor.
          if (new_files >= max_new_files || f.entry_json.size() > max_new_bytes - new_bytes) {
            return Status::ok();
          }
          ++new_files;
          new_bytes += f.entry_json.size();
          StatementUse use(s.dock_insert);
          bind_text(use.get(), 1, device_id);
          bind_text(use.get(), 2, f.unique_id);
          bind_text(use.get(), 3, f.md5);
          bind_text(use.get(), 4, f.entry_json);
          const int rc = sqlite3_step(use.get());
          if (rc != SQLITE_DONE) {
            return status_from(rc, "store " + path_ + ": dock " + device_id + ": file " + f.unique_id + ": " +
                                       error_text(db_, rc));
          }
          DockFileRow row;
          row.unique_id = f.unique_id;
          row.md5 = f.md5;
          row.entry_json = f.entry_json;
          row.state = "pending";
          result.push_back(std::move(row));
        }
        StatementUse use(s.dock_set_cursor);
        bind_text(use.get(), 1, device_id);
        bind_text(use.get(), 2, next_cursor);
        const int rc = sqlite3_step(use.get());
        if (rc != SQLITE_DONE) {
          return status_from(rc, "store " + path_ + ": dock " + device_id +
                                     ": cannot save the cursor: " + error_text(db_, rc));
        }
        return Status::ok();
      });
  if (st.is_ok()) {
    states = std::move(result);
  }
  return st;
}

Status EvidenceStore::dock_mark_acked(const std::string& device_id, const std::string& unique_id,
                                      const std::string& md5, UnixMs now_ms) {
  Statements& s = *stmts_;
  return run_write_transaction(db_, s.begin, s.commit, s.rollback,
                               "store " + path_ + ": dock " + device_id + ": ack " + unique_id, [&] {
                                 StatementUse use(s.dock_acked);
                                 bind_text(use.get(), 1, device_id);
                                 bind_text(use.get(), 2, unique_id);
                                 bind_text(use.get(), 3, md5);
                                 sqlite3_bind_int64(use.get(), 4, now_ms);
                                 const int rc = sqlite3_step(use.get());
                                 if (rc != SQLITE_DONE) {
                                   return status_from(rc, "store " + path_ + ": dock " + device_id +
                                                              ": ack " + unique_id + ": " +
                                                              error_text(db_, rc));
                                 }
                                 return Status::ok();
                               });
}

Status EvidenceStore::mark_forwarded(const std::vector<std::uint64_t>& seqs) {
  if (seqs.empty()) {
    return Status::ok();
  }
  Statements& s = *stmts_;
  // Forgetting a PUBACK in a crash only causes a redelivery of identical bytes (consumers drop copies),
  // so this transaction does not pay for its own fsync: the next record commit (FULL) makes it durable.
  sqlite3_exec(db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
  struct RestoreFull {
    sqlite3* db;
    ~RestoreFull() { sqlite3_exec(db, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr); }
  } restore{db_};
  return run_write_transaction(
      db_, s.begin, s.commit, s.rollback, "store " + path_ + ": mark_forwarded", [&] {
        for (std::uint64_t seq : seqs) {
          StatementUse use(s.delete_outbox);
          sqlite3_bind_int64(use.get(), 1, to_db_seq(seq));
          int rc = sqlite3_step(use.get());
          if (rc != SQLITE_DONE) {
            return status_from(rc, "store " + path_ + ": mark_forwarded: seq " + std::to_string(seq) + ": " +
                                       error_text(db_, rc));
          }
        }
        return Status::ok();
      });
}

OutboxStats EvidenceStore::outbox_stats() const {
  OutboxStats stats;
  {
    StatementUse use(stmts_->outbox_count);
    if (sqlite3_step(use.get()) == SQLITE_ROW) {
      stats.count = static_cast<std::uint64_t>(sqlite3_column_int64(use.get(), 0));
    }
  }
  if (stats.count > 0) {
    StatementUse use(stmts_->outbox_oldest);
    if (sqlite3_step(use.get()) == SQLITE_ROW && sqlite3_column_type(use.get(), 0) != SQLITE_NULL) {
      stats.oldest_created_ms = sqlite3_column_int64(use.get(), 0);
    }
  }
  return stats;
}

std::optional<SealedRecord> EvidenceStore::record(std::uint64_t seq) const {
  StatementUse use(stmts_->record);
  sqlite3_bind_int64(use.get(), 1, to_db_seq(seq));
  if (sqlite3_step(use.get()) != SQLITE_ROW) {
    return std::nullopt;
  }
  SealedRecord r;
  r.seq = static_cast<std::uint64_t>(sqlite3_column_int64(use.get(), 0));
  r.id = column_text(use.get(), 1);
  r.type = column_text(use.get(), 2);
  r.time_ms = sqlite3_column_int64(use.get(), 3);
  r.created_ms = sqlite3_column_int64(use.get(), 4);
  r.jws = column_text(use.get(), 5);
  return r;
}

std::uint64_t EvidenceStore::record_count() const {
  StatementUse use(stmts_->record_count);
  if (sqlite3_step(use.get()) != SQLITE_ROW) {
    return 0;
  }
  return static_cast<std::uint64_t>(sqlite3_column_int64(use.get(), 0));
}

namespace {

// A statement used rarely (custody, retention, resends): prepared per call, finalized by scope.
class AdHoc {
 public:
  AdHoc(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~AdHoc() { sqlite3_finalize(stmt_); }
  AdHoc(const AdHoc&) = delete;
  AdHoc& operator=(const AdHoc&) = delete;
  sqlite3_stmt* get() const { return stmt_; }
  bool ok() const { return stmt_ != nullptr; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace

Status EvidenceStore::dock_prune(UnixMs before_ms, std::size_t limit, std::uint64_t& pruned) {
  pruned = 0;
  Statements& s = *stmts_;
  std::uint64_t n = 0;
  const Status st = run_write_transaction(
      db_, s.begin, s.commit, s.rollback, "store " + path_ + ": dock ledger retention", [&] {
        n = 0;
        AdHoc del(db_,
                  "DELETE FROM dock_files WHERE rowid IN (SELECT rowid FROM dock_files "
                  "WHERE state IN ('acked', 'faulted') AND done_ms < ?1 LIMIT ?2)");
        if (!del.ok()) {
          return Status::retry("store " + path_ + ": dock ledger retention: " + sqlite3_errmsg(db_));
        }
        sqlite3_bind_int64(del.get(), 1, before_ms);
        sqlite3_bind_int64(del.get(), 2, static_cast<sqlite3_int64>(std::min<std::size_t>(limit, INT64_MAX)));
        const int rc = sqlite3_step(del.get());
        if (rc != SQLITE_DONE) {
          return status_from(rc, "store " + path_ + ": dock ledger retention: " + error_text(db_, rc));
        }
        n = static_cast<std::uint64_t>(sqlite3_changes(db_));
        return Status::ok();
      });
  if (st.is_ok()) {
    pruned = n;
  }
  return st;
}

std::optional<CustodyState> EvidenceStore::custody() const {
  AdHoc q(db_, "SELECT through_seq, head, central, kid, receipt, received_ms FROM custody WHERE id = 1");
  if (!q.ok() || sqlite3_step(q.get()) != SQLITE_ROW) {
    return std::nullopt;
  }
  CustodyState c;
  c.through_seq = static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 0));
  c.head = column_text(q.get(), 1);
  c.central = column_text(q.get(), 2);
  c.kid = column_text(q.get(), 3);
  c.receipt = column_text(q.get(), 4);
  c.received_ms = sqlite3_column_int64(q.get(), 5);
  return c;
}

std::optional<bool> EvidenceStore::media_named(const std::string& sha256) const {
  AdHoc q(db_, "SELECT 1 FROM record_media WHERE sha256 = ?1 LIMIT 1");
  if (!q.ok()) {
    return std::nullopt;
  }
  bind_text(q.get(), 1, sha256);
  const int rc = sqlite3_step(q.get());
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return std::nullopt;
  }
  return rc == SQLITE_ROW;
}

std::optional<bool> EvidenceStore::recording_named(const std::string& sha256) const {
  AdHoc q(db_, "SELECT 1 FROM record_media WHERE sha256 = ?1 AND published = 0 LIMIT 1");
  if (!q.ok()) {
    return std::nullopt;
  }
  bind_text(q.get(), 1, sha256);
  const int rc = sqlite3_step(q.get());
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return std::nullopt;
  }
  return rc == SQLITE_ROW;
}

UnixMs EvidenceStore::media_since_ms() const {
  AdHoc q(db_, "SELECT value FROM store_info WHERE key = 'media_since_ms'");
  if (!q.ok() || sqlite3_step(q.get()) != SQLITE_ROW) {
    return std::numeric_limits<UnixMs>::max();  // unknown: no unnamed file is this store's to delete
  }
  return sqlite3_column_int64(q.get(), 0);
}

void EvidenceStore::raise_media_since(UnixMs ms) {
  AdHoc q(db_, "UPDATE store_info SET value = max(value, ?1) WHERE key = 'media_since_ms'");
  if (!q.ok()) {
    throw StoreError("store " + path_ + ": cannot raise media_since_ms: " + sqlite3_errmsg(db_));
  }
  sqlite3_bind_int64(q.get(), 1, ms);
  if (const int rc = sqlite3_step(q.get()); rc != SQLITE_DONE) {
    throw StoreError("store " + path_ + ": cannot raise media_since_ms: " + error_text(db_, rc));
  }
}

Status EvidenceStore::set_custody(const CustodyState& state) {
  AdHoc q(
      db_,
      "INSERT INTO custody (id, through_seq, head, central, kid, receipt, received_ms) VALUES (1, ?1, ?2, "
      "?3, ?4, "
      "?5, ?6) ON CONFLICT (id) DO UPDATE SET through_seq = excluded.through_seq, head = excluded.head, "
      "central = "
      "excluded.central, kid = excluded.kid, receipt = excluded.receipt, received_ms = excluded.received_ms "
      "WHERE excluded.through_seq >= custody.through_seq");  // the custody state never goes back
  if (!q.ok()) {
    return Status::retry("store " + path_ + ": set_custody: " + sqlite3_errmsg(db_));
  }
  sqlite3_bind_int64(q.get(), 1, to_db_seq(state.through_seq));
  bind_text(q.get(), 2, state.head);
  bind_text(q.get(), 3, state.central);
  bind_text(q.get(), 4, state.kid);
  bind_text(q.get(), 5, state.receipt);
  sqlite3_bind_int64(q.get(), 6, state.received_ms);
  const int rc = sqlite3_step(q.get());
  if (rc != SQLITE_DONE) {
    return status_from(rc, "store " + path_ + ": set_custody: " + error_text(db_, rc));
  }
  return Status::ok();
}

std::optional<CustodyState> EvidenceStore::chain_origin() const {
  AdHoc q(db_, "SELECT seq, head, central, kid, receipt, received_ms FROM chain_origin WHERE id = 1");
  if (!q.ok() || sqlite3_step(q.get()) != SQLITE_ROW) {
    return std::nullopt;
  }
  CustodyState c;
  c.through_seq = static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 0));
  c.head = column_text(q.get(), 1);
  c.central = column_text(q.get(), 2);
  c.kid = column_text(q.get(), 3);
  c.receipt = column_text(q.get(), 4);
  c.received_ms = sqlite3_column_int64(q.get(), 5);
  return c;
}

Status EvidenceStore::continue_chain(const CustodyState& receipt) {
  if (receipt.through_seq == 0 || receipt.through_seq > static_cast<std::uint64_t>(INT64_MAX) ||
      receipt.head.size() != 64) {
    return Status::fail("store " + path_ + ": continue_chain: not a receipt head (seq " +
                        std::to_string(receipt.through_seq) + ")");
  }
  Statements& s = *stmts_;
  Status status =
      run_write_transaction(db_, s.begin, s.commit, s.rollback, "store " + path_ + ": continue_chain", [&] {
        AdHoc count(db_, "SELECT (SELECT count(*) FROM records) + (SELECT count(*) FROM chain_origin)");
        if (!count.ok() || sqlite3_step(count.get()) != SQLITE_ROW) {
          return Status::retry("store " + path_ + ": continue_chain: cannot count records");
        }
        if (sqlite3_column_int64(count.get(), 0) != 0) {
          return Status::fail("store " + path_ +
                              ": continue_chain: the store is not empty (it holds records or an origin)");
        }
        for (const char* sql :
             {"INSERT INTO chain_origin (id, seq, head, central, kid, receipt, received_ms) "
              "VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
              "INSERT INTO custody (id, through_seq, head, central, kid, receipt, received_ms) "
              "VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET through_seq = "
              "excluded.through_seq, head = excluded.head, central = excluded.central, kid = excluded.kid, "
              "receipt = excluded.receipt, received_ms = excluded.received_ms"}) {
          AdHoc q(db_, sql);
          if (!q.ok()) {
            return Status::retry("store " + path_ + ": continue_chain: " + sqlite3_errmsg(db_));
          }
          sqlite3_bind_int64(q.get(), 1, to_db_seq(receipt.through_seq));
          bind_text(q.get(), 2, receipt.head);
          bind_text(q.get(), 3, receipt.central);
          bind_text(q.get(), 4, receipt.kid);
          bind_text(q.get(), 5, receipt.receipt);
          sqlite3_bind_int64(q.get(), 6, receipt.received_ms);
          const int rc = sqlite3_step(q.get());
          if (rc != SQLITE_DONE) {
            return status_from(rc, "store " + path_ + ": continue_chain: " + error_text(db_, rc));
          }
        }
        return Status::ok();
      });
  if (status.is_ok()) {
    head_ = ChainHead{receipt.through_seq, receipt.head};
  }
  return status;
}

std::optional<std::vector<OutboxEntry>> EvidenceStore::records_range(std::uint64_t from, std::uint64_t to,
                                                                     std::size_t limit) const {
  std::vector<OutboxEntry> entries;
  {
    AdHoc q(db_,
            "SELECT seq, jws, created_ms FROM records WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3");
    if (!q.ok()) {
      return std::nullopt;
    }
    sqlite3_bind_int64(q.get(), 1, to_db_seq(from));
    sqlite3_bind_int64(q.get(), 2, to_db_seq(to));
    sqlite3_bind_int64(q.get(), 3, static_cast<sqlite3_int64>(limit));
    if (!read_entries(q.get(), entries)) {
      return std::nullopt;  // a read error is not a record this store lacks
    }
  }
  if (!attach_media(stmts_->record_media, entries)) {
    return std::nullopt;  // a record's picture list cut short is not what it names
  }
  return entries;
}

EvidenceStore::FirstHeld EvidenceStore::first_held(std::uint64_t from, std::uint64_t to) const {
  AdHoc q(db_, "SELECT min(seq) FROM records WHERE seq >= ?1 AND seq <= ?2");
  if (!q.ok()) {
    return FirstHeld{std::nullopt, true};
  }
  sqlite3_bind_int64(q.get(), 1, to_db_seq(from));
  sqlite3_bind_int64(q.get(), 2, to_db_seq(to));
  if (sqlite3_step(q.get()) != SQLITE_ROW) {
    return FirstHeld{std::nullopt, true};  // a read error
  }
  if (sqlite3_column_type(q.get(), 0) == SQLITE_NULL) {
    return FirstHeld{};
  }
  return FirstHeld{static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 0)), false};
}

bool EvidenceStore::has_other_than(const std::string& type, std::uint64_t after,
                                   std::uint64_t through) const {
  AdHoc q(db_, "SELECT 1 FROM records WHERE seq > ?1 AND seq <= ?2 AND type != ?3 LIMIT 1");
  if (!q.ok()) {
    return true;  // unknown: the safe answer seals a record
  }
  sqlite3_bind_int64(q.get(), 1, to_db_seq(after));
  sqlite3_bind_int64(q.get(), 2, to_db_seq(through));
  bind_text(q.get(), 3, type);
  return sqlite3_step(q.get()) != SQLITE_DONE;
}

std::uint64_t EvidenceStore::first_seq() const {
  AdHoc q(db_, "SELECT min(seq) FROM records");
  if (!q.ok() || sqlite3_step(q.get()) != SQLITE_ROW) {
    return 0;
  }
  return static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 0));
}

EvidenceStore::Pruned EvidenceStore::prune_in_custody(std::uint64_t through_seq, UnixMs before_ms,
                                                      std::size_t limit, UnixMs now_ms) {
  if (now_ms == 0) {
    now_ms = before_ms;
  }
  Pruned out;
  if (head_.seq == 0) {
    return out;
  }
  const std::uint64_t last_prunable =
      std::min(through_seq, head_.seq - 1);  // the head stays: it is the chain
  Statements& s = *stmts_;
  std::vector<std::string> media;
  const Status st =
      run_write_transaction(db_, s.begin, s.commit, s.rollback, "store " + path_ + ": retention", [&] {
        AdHoc pick(
            db_,
            "SELECT r.seq FROM records r WHERE r.seq <= ?1 AND r.created_ms < ?2 AND NOT EXISTS (SELECT 1 "
            "FROM record_media k WHERE k.seq = r.seq AND k.published = 0 AND NOT (k.hold_until_ms <= ?4 AND "
            "EXISTS (SELECT 1 FROM uploads u WHERE u.sha256 = k.sha256 AND u.held_ms IS NOT NULL))) AND NOT "
            "EXISTS (SELECT 1 FROM outbox o WHERE o.seq = r.seq) ORDER BY r.seq LIMIT ?3");
        AdHoc seq_media(db_, "SELECT sha256 FROM record_media WHERE seq = ?1");
        AdHoc del_media(db_, "DELETE FROM record_media WHERE seq = ?1");
        AdHoc del_span(db_, "DELETE FROM recording_spans WHERE seq = ?1");
        AdHoc del_record(db_, "DELETE FROM records WHERE seq = ?1");
        if (!pick.ok() || !seq_media.ok() || !del_media.ok() || !del_span.ok() || !del_record.ok()) {
          return Status::retry(std::string("retention: ") + sqlite3_errmsg(db_));
        }
        sqlite3_bind_int64(pick.get(), 1, to_db_seq(last_prunable));
        sqlite3_bind_int64(pick.get(), 2, before_ms);
        sqlite3_bind_int64(pick.get(), 3, static_cast<sqlite3_int64>(limit));
        sqlite3_bind_int64(pick.get(), 4, now_ms);
        std::vector<sqlite3_int64> seqs;
        while (sqlite3_step(pick.get()) == SQLITE_ROW) {
          seqs.push_back(sqlite3_column_int64(pick.get(), 0));
        }
        media.clear();
        for (const sqlite3_int64 seq : seqs) {
          sqlite3_reset(seq_media.get());
          sqlite3_bind_int64(seq_media.get(), 1, seq);
          while (sqlite3_step(seq_media.get()) == SQLITE_ROW) {
            media.push_back(column_text(seq_media.get(), 0));
          }
          for (sqlite3_stmt* stmt : {del_media.get(), del_span.get(), del_record.get()}) {
            sqlite3_reset(stmt);
            sqlite3_bind_int64(stmt, 1, seq);
            const int rc = sqlite3_step(stmt);
            if (rc != SQLITE_DONE) {
              return status_from(rc, "store " + path_ + ": retention: seq " + std::to_string(seq) + ": " +
                                         error_text(db_, rc));
            }
          }
        }
        // A recording's upload row (its file receipt) goes with the last record naming it.
        AdHoc del_upload(db_,
                         "DELETE FROM uploads WHERE sha256 = ?1 AND NOT EXISTS (SELECT 1 FROM record_media "
                         "WHERE sha256 = ?1)");
        if (!del_upload.ok()) {
          return Status::retry(std::string("retention: ") + sqlite3_errmsg(db_));
        }
        for (const std::string& sha : media) {
          sqlite3_reset(del_upload.get());
          bind_text(del_upload.get(), 1, sha);
          if (const int rc = sqlite3_step(del_upload.get()); rc != SQLITE_DONE) {
            return status_from(rc,
                               "store " + path_ + ": retention: upload " + sha + ": " + error_text(db_, rc));
          }
        }
        out.records = seqs.size();
        return Status::ok();
      });
  if (!st.is_ok()) {
    return Pruned{};
  }
  // Pictures another record still names stay.
  std::sort(media.begin(), media.end());
  media.erase(std::unique(media.begin(), media.end()), media.end());
  for (const std::string& sha : media) {
    AdHoc named(db_, "SELECT 1 FROM record_media WHERE sha256 = ?1 LIMIT 1");
    bind_text(named.get(), 1, sha);
    if (named.ok() && sqlite3_step(named.get()) == SQLITE_DONE) {
      out.media.push_back(sha);
    }
  }
  return out;
}

// --- recordings to central ---

namespace {

UploadRow upload_row(sqlite3_stmt* q) {
  UploadRow u;
  u.sha256 = column_text(q, 0);
  u.seq = static_cast<std::uint64_t>(sqlite3_column_int64(q, 1));
  u.length = static_cast<std::uint64_t>(sqlite3_column_int64(q, 2));
  u.important = sqlite3_column_int64(q, 3) != 0;
  u.requested = sqlite3_column_int64(q, 4) != 0;
  u.name = column_text(q, 5);
  u.sent_to = static_cast<std::uint64_t>(sqlite3_column_int64(q, 6));
  if (sqlite3_column_type(q, 7) != SQLITE_NULL) {
    u.held_ms = sqlite3_column_int64(q, 7);
  }
  return u;
}

constexpr const char* kUploadColumns =
    "SELECT sha256, seq, length, important, requested, name, sent_to, held_ms FROM uploads ";

}  // namespace

std::size_t EvidenceStore::uploads_discover(std::size_t limit, const std::string& only_sha256) {
  AdHoc pick(
      db_,
      "SELECT m.seq, m.sha256, r.jws FROM record_media m JOIN records r ON r.seq = m.seq WHERE m.published "
      "= 0 AND r.type = 'recording' AND (?2 = '' OR m.sha256 = ?2) AND NOT EXISTS (SELECT 1 FROM uploads u "
      "WHERE u.sha256 = m.sha256) ORDER BY m.seq LIMIT ?1");
  if (!pick.ok()) {
    return 0;
  }
  sqlite3_bind_int64(pick.get(), 1, static_cast<sqlite3_int64>(limit));
  bind_text(pick.get(), 2, only_sha256);
  struct Found {
    sqlite3_int64 seq;
    std::string sha256;
    std::int64_t length;
    bool important;
    std::string name;
  };
  std::vector<Found> found;
  while (sqlite3_step(pick.get()) == SQLITE_ROW) {
    Found f{sqlite3_column_int64(pick.get(), 0), column_text(pick.get(), 1), -1, false, ""};
    // The record's own words (its body is the JWS's middle part), so the row says what was sealed.
    if (const auto j = unverified_jws_part(column_text(pick.get(), 2), 1)) {
      f.length = j->value("length", std::int64_t{-1});
      f.important = j->value("important", false);
      f.name = j->value("file_name", std::string());
    }
    found.push_back(std::move(f));
  }
  sqlite3_reset(pick.get());
  std::size_t n = 0;
  for (const Found& f : found) {
    if (f.length < 0) {
      continue;  // not a recording record this version can read: never sent, never deleted
    }
    AdHoc ins(
        db_,
        "INSERT OR IGNORE INTO uploads (sha256, seq, length, important, name) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!ins.ok()) {
      break;
    }
    bind_text(ins.get(), 1, f.sha256);
    sqlite3_bind_int64(ins.get(), 2, f.seq);
    sqlite3_bind_int64(ins.get(), 3, f.length);
    sqlite3_bind_int(ins.get(), 4, f.important ? 1 : 0);
    bind_text(ins.get(), 5, f.name);
    if (sqlite3_step(ins.get()) == SQLITE_DONE) {
      ++n;
    }
  }
  return n;
}

namespace {

// Rows not held within the policy (?1 all, ?2 important; requested ones always), but those in `exclude`,
// then `where` and `order` with ?3 and ?4 bound to a and b.
std::vector<UploadRow> uploads_where(sqlite3* db, bool all, bool important, const char* where_order,
                                     std::int64_t a, std::int64_t b, const std::set<std::string>& exclude) {
  std::string not_in;
  for (const std::string& sha : exclude) {
    if (is_sha256_hex(sha)) {  // hex only: safe between quotes
      not_in += (not_in.empty() ? "'" : ",'") + sha + "'";
    }
  }
  const std::string sql = std::string(kUploadColumns) +
                          "WHERE held_ms IS NULL AND (?1 OR requested = 1 OR (?2 AND important = 1)) " +
                          (not_in.empty() ? std::string() : "AND sha256 NOT IN (" + not_in + ") ") +
                          where_order;
  AdHoc q(db, sql.c_str());
  std::vector<UploadRow> out;
  if (!q.ok()) {
    return out;
  }
  sqlite3_bind_int(q.get(), 1, all ? 1 : 0);
  sqlite3_bind_int(q.get(), 2, important ? 1 : 0);
  sqlite3_bind_int64(q.get(), 3, static_cast<sqlite3_int64>(a));
  sqlite3_bind_int64(q.get(), 4, static_cast<sqlite3_int64>(b));
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    out.push_back(upload_row(q.get()));
  }
  return out;
}

}  // namespace

std::vector<UploadRow> EvidenceStore::uploads_pending(bool all, bool important, std::size_t limit,
                                                      bool unsent_only,
                                                      const std::set<std::string>& exclude) const {
  return uploads_where(
      db_, all, important,
      "AND (?4 = 0 OR sent_to < length) ORDER BY requested DESC, important DESC, seq LIMIT ?3",
      static_cast<std::int64_t>(limit), unsent_only ? 1 : 0, exclude);
}

std::vector<UploadRow> EvidenceStore::uploads_sent_whole(bool all, bool important, std::int64_t after_seq,
                                                         std::size_t limit) const {
  return uploads_where(db_, all, important, "AND sent_to >= length AND seq > ?3 ORDER BY seq LIMIT ?4",
                       after_seq, static_cast<std::int64_t>(limit), {});
}

EvidenceStore::UploadLookup EvidenceStore::find_upload(const std::string& sha256) const {
  const std::string sql = std::string(kUploadColumns) + "WHERE sha256 = ?1";
  AdHoc q(db_, sql.c_str());
  if (!q.ok()) {
    return UploadLookup{std::nullopt, true};
  }
  bind_text(q.get(), 1, sha256);
  const int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) {
    return UploadLookup{};
  }
  if (rc != SQLITE_ROW) {
    return UploadLookup{std::nullopt, true};
  }
  return UploadLookup{upload_row(q.get()), false};
}

Status EvidenceStore::upload_progress(const std::string& sha256, std::uint64_t sent_to) {
  AdHoc q(db_, "UPDATE uploads SET sent_to = ?2 WHERE sha256 = ?1 AND held_ms IS NULL");
  if (!q.ok()) {
    return Status::retry("store " + path_ + ": upload progress: " + sqlite3_errmsg(db_));
  }
  bind_text(q.get(), 1, sha256);
  sqlite3_bind_int64(q.get(), 2, static_cast<sqlite3_int64>(sent_to));
  const int rc = sqlite3_step(q.get());
  return rc == SQLITE_DONE ? Status::ok()
                           : status_from(rc, "store " + path_ + ": upload progress: " + error_text(db_, rc));
}

Status EvidenceStore::upload_request(const std::string& sha256) {
  AdHoc q(db_, "UPDATE uploads SET requested = 1, sent_to = 0 WHERE sha256 = ?1 AND held_ms IS NULL");
  if (!q.ok()) {
    return Status::retry("store " + path_ + ": upload request: " + sqlite3_errmsg(db_));
  }
  bind_text(q.get(), 1, sha256);
  const int rc = sqlite3_step(q.get());
  return rc == SQLITE_DONE ? Status::ok()
                           : status_from(rc, "store " + path_ + ": upload request: " + error_text(db_, rc));
}

bool EvidenceStore::upload_held(const std::string& sha256, std::uint64_t length, const std::string& central,
                                const std::string& receipt, UnixMs now_ms) {
  AdHoc q(
      db_,
      "UPDATE uploads SET held_ms = ?3, central = ?4, receipt = ?5, sent_to = length WHERE sha256 = ?1 AND "
      "length = ?2 AND held_ms IS NULL");
  if (!q.ok()) {
    return false;
  }
  bind_text(q.get(), 1, sha256);
  sqlite3_bind_int64(q.get(), 2, static_cast<sqlite3_int64>(length));
  sqlite3_bind_int64(q.get(), 3, now_ms);
  bind_text(q.get(), 4, central);
  bind_text(q.get(), 5, receipt);
  return sqlite3_step(q.get()) == SQLITE_DONE && sqlite3_changes(db_) > 0;
}

UploadStats EvidenceStore::upload_stats() const {
  AdHoc q(db_,
          "SELECT count(*) FILTER (WHERE held_ms IS NULL), coalesce(sum(length) FILTER (WHERE held_ms IS "
          "NULL), 0), "
          "count(*) FILTER (WHERE held_ms IS NOT NULL) FROM uploads");
  UploadStats out;
  if (q.ok() && sqlite3_step(q.get()) == SQLITE_ROW) {
    out.pending = static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 0));
    out.pending_bytes = static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 1));
    out.held = static_cast<std::uint64_t>(sqlite3_column_int64(q.get(), 2));
  }
  return out;
}

}  // namespace cpd::store
