// FileIntake: central's half of "Recordings to central" (docs/custody.md). Takes a gateway's init, segment,
// fin and abort messages (daemon/core/file_transfer.h), writes each checked segment at its offset into the
// transfer's partial file (fsync'd before PostgreSQL counts it), and once every segment is there hashes the
// whole file: equal to its id, it is renamed into the content-addressed media directory, recorded held, and
// a signed file receipt is published to the gateway; otherwise the segments are forgotten and the whole file
// is asked for again. A transfer that stalls, or ends (fin) with pieces missing, gets a `want` listing the
// missing byte ranges, repeated with backoff. All state lives in PostgreSQL (file_uploads, file_segments) and
// the shared media directory, so any instance of a shared subscription can take any segment.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "daemon/core/ed25519.h"
#include "daemon/core/file_transfer.h"

namespace cpd::central {

class PgConnection;

// A transfer whose whole file fails its SHA-256 this many times ends not_held (the gateway's copy is taken
// as damaged); an operator's request opens it again.
inline constexpr int kMaxFileMismatches = 3;

struct FileIntakeConfig {
  std::string central_id;
  std::string media_dir;  // held files: <sha256[0:2]>/<sha256>; partial ones: partial/<gw>/<sha>.part
  std::uint64_t max_file_bytes = 0;  // a larger file is refused at its init
  int max_open_files = 4;            // open transfers per gateway
  std::int64_t stall_ms = 30000;     // no segment this long: ask for what is missing
  std::int64_t retry_max_ms = 300000;
  // Files no record names yet, per gateway (unnamed_bytes): an init beyond this is refused `later`.
  std::uint64_t unnamed_max_bytes = std::uint64_t{1024} << 20;
};

// Bytes central holds or is receiving from `gateway` that no record of it names yet (docs/custody.md, "Files
// no record names"): pictures and whole recordings it was the first to send (`media` rows) and its open
// transfers' declared sizes. A picture is named by a stored record's `pictures[]` (of any gateway: files are
// content-addressed), a recording by the stored `recording` record its transfer's init names. A read.
// Each file counts at least this much (its disk block and its row): a flood of tiny files is bounded too.
inline constexpr std::uint64_t kUnnamedMinCharge = 4096;
inline std::uint64_t unnamed_charge(std::uint64_t bytes) {
  return bytes < kUnnamedMinCharge ? kUnnamedMinCharge : bytes;
}
std::uint64_t unnamed_bytes(PgConnection& pg, const std::string& gateway);
// SQL: whether a stored `recording` record of transfer row `f`'s gateway names the file: the one at the
// init's seq, or any when the init named none (seq 0: optional in the protocol). Served by the partial index
// records_recording_file (schema 17), whose predicate every such query repeats: only a 64-byte `sha256` is in
// it (a signed record naming a longer one would not fit a B-tree entry; no transfer names such a file).
inline constexpr const char* kTransferNamedSql =
    "EXISTS (SELECT 1 FROM records r WHERE r.gateway = f.gateway AND r.type = 'recording' AND "
    "octet_length(r.body->>'sha256') = 64 AND r.body->>'sha256' = f.sha256 AND (f.seq = 0 OR r.seq = f.seq))";
// SQL: the bytes (each file at least kUnnamedMinCharge) of the held files `gateway_sql` (an expression: a
// parameter, a column) first sent that no stored record names: the media part of unnamed_bytes, which the
// status query shows too.
std::string unnamed_media_sql(const std::string& gateway_sql);

// The age-out of files no record names (docs/custody.md, "Files no record names"): up to `limit` pictures
// (`media` rows of no file transfer: a recording's transfer may be completing the same file) received before
// `before_ms` that no stored record names and no fork kept for forensics names either are deleted, row and
// file. Locking: a record stored while this runs sets `named` on the files it names (central_store.cpp,
// insert_records), so a row locked here was named by nobody; a row a record is naming is locked there and
// skipped here. The rows go first (committed), then each file under kMediaLockSql, unless its row is back.
// SQL: the transaction-scoped advisory lock on one file ($1: its SHA-256), held by the transaction that
// stores a picture's row (to its commit) and by the age-out while it removes the file.
inline constexpr const char* kMediaLockSql = "pg_advisory_xact_lock(hashtextextended($1, 7))";
struct AgedOut {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::vector<std::string> gateways;  // whose files went (their bound's sum is read again)
};
AgedOut age_out_unnamed(PgConnection& pg, std::int64_t before_ms, int limit);

// Files in the media directory that no `media` row holds and that no writer is using: a picture written for a
// batch that then failed, a file whose age-out row went before a crash, a writer's temporary file. Those last
// written over `min_age_s` ago are removed (a held name under kMediaLockSql, unless its row is back). Up to
// `limit` directory entries are looked at a round, from `cursor` ("<xx>/<name>" of the last one looked at;
// empty: from the start; updated). When the `media` table is empty, or more than kMaxOrphansPerRound held
// names in one round have no row, the directory and the database do not go together (feed.media_dir or
// postgres.conninfo wrong, a database restored to an earlier time): nothing is removed, they are `refused`.
inline constexpr std::size_t kMaxOrphansPerRound = 100;
struct OrphanSweep {
  std::uint64_t removed = 0;
  std::uint64_t refused = 0;
};
OrphanSweep sweep_orphans(PgConnection& pg, const std::string& media_dir, std::int64_t min_age_s,
                          std::size_t limit, std::string& cursor);

struct FileCounters {
  std::atomic<std::uint64_t> inits{0};
  std::atomic<std::uint64_t> segments{0};  // segments written and counted
  std::atomic<std::uint64_t> segment_bytes{0};
  std::atomic<std::uint64_t> segments_duplicate{0};
  std::atomic<std::uint64_t> refused{0};     // malformed or out-of-bounds file messages
  std::atomic<std::uint64_t> unexpected{0};  // segments of no open transfer (dropped; asked for later)
  std::atomic<std::uint64_t> files_held{0};
  std::atomic<std::uint64_t> mismatches{0};  // whole files whose SHA-256 was not their id
  std::atomic<std::uint64_t> damaged{0};     // transfers ended not_held at kMaxFileMismatches
  std::atomic<std::uint64_t> wants{0};
  std::atomic<std::uint64_t> aborts{0};  // files a gateway said it cannot send
  std::atomic<std::uint64_t> receipts{0};
  std::atomic<std::uint64_t> unnamed_refused{0};  // inits refused `later` by feed.unnamed_max_mb
};

struct FilePublish {
  std::string topic;
  std::string payload;
};

class FileIntake {
 public:
  FileIntake(FileIntakeConfig config, const Ed25519PrivateKey& central_key, std::string prefix);

  // One message on <prefix>/<gateway>/file/...; `rest` is the topic after "<prefix>/<gateway>/". What to
  // publish in answer (receipts, wants) is appended to `out`. Throws PgError (PostgreSQL) or
  // std::runtime_error (the media directory) when it cannot take the message; nothing is counted then.
  void handle(PgConnection& pg, const std::string& gateway, const std::string& rest,
              const std::string& payload, std::int64_t now_ms, std::vector<FilePublish>& out);
  // Periodic: wants for stalled transfers and for files an operator requested (`request-file`).
  void tick(PgConnection& pg, std::int64_t now_ms, std::vector<FilePublish>& out);

  // Operator: ask `gateway` for a file by its SHA-256 (the "on request" policy, or a file given up on).
  static void request(PgConnection& pg, const std::string& gateway, const std::string& sha256,
                      std::int64_t now_ms);

  const FileCounters& counters() const { return counters_; }
  std::string receipt_topic(const std::string& gateway) const;
  std::string want_topic(const std::string& gateway) const;

 private:
  void on_init(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
               const std::string& payload, std::int64_t now, std::vector<FilePublish>& out);
  void on_segment(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
                  const std::string& payload, std::int64_t now, std::vector<FilePublish>& out);
  void on_fin(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t, std::int64_t now,
              std::vector<FilePublish>& out);
  void on_abort(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
                const std::string& payload, std::int64_t now);
  // Every segment is there: hash, move into place, record held, receipt. Under the row's lock.
  void assemble(PgConnection& pg, const std::string& gateway, const std::string& sha256, std::int64_t now,
                std::vector<FilePublish>& out);
  void want(PgConnection& pg, const std::string& gateway, const std::string& sha256, filex::Ranges ranges,
            std::int64_t now, std::vector<FilePublish>& out);
  // An init not taken: counted, logged, and the gateway told (files/refused), `later` or for good.
  void refuse_init(const std::string& gateway, const std::string& sha256, const std::string& why, bool later,
                   std::vector<FilePublish>& out, bool quiet = false);
  void receipt(const std::string& gateway, const std::string& sha256, std::uint64_t size, std::int64_t now,
               std::vector<FilePublish>& out);
  std::string partial_path(const std::string& gateway, const std::string& sha256) const;
  std::string held_path(const std::string& sha256) const;

  FileIntakeConfig cfg_;
  const Ed25519PrivateKey& key_;
  std::string prefix_;
  FileCounters counters_;
  std::int64_t unnamed_logged_ms_ = -1;  // the last refusal by feed.unnamed_max_mb logged
};

}  // namespace cpd::central
