// FileIntake (see the header). Order of durability for a segment: bytes pwrite'n and fdatasync'd into the
// partial file, then its row in file_segments; for a whole file: hashed, fsync'd, renamed into place (and the
// directory fsync'd), then `media` and `file_uploads` say held, then the receipt is published.
#include "central/file_intake.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "central/pg.h"
#include "central/record_columns.h"
#include "daemon/core/digest.h"
#include "daemon/core/durable_fs.h"
#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::central {

namespace {

namespace fs = std::filesystem;

constexpr long long kMaxRowsNotHeld =
    10000;  // transfer rows per gateway not held (open, not_held, requested)

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct Row {
  std::uint64_t size = 0;
  std::uint64_t segment_size = 0;
  std::string state;
  long long mismatches = 0;  // whole-file hash failures since last opened by a request
  std::uint64_t seq = 0;     // the `recording` record its init named
};

// `lock`: "" (none), " FOR NO KEY UPDATE" (a segment being written: the file is not assembled, reset or
// dropped meanwhile) or " FOR UPDATE" (assembling, resetting).
std::optional<Row> find_row(PgConnection& pg, const std::string& gateway, const std::string& sha,
                            const char* lock = "") {
  const PgResult r =
      pg.exec(std::string("SELECT size, segment_size, state, mismatches, coalesce(seq, 0) FROM file_uploads "
                          "WHERE gateway = $1 AND sha256 = $2") +
                  lock,
              {gateway, sha}, "reading a file transfer");
  if (r.rows() == 0) {
    return std::nullopt;
  }
  return Row{static_cast<std::uint64_t>(r.integer(0, 0)), static_cast<std::uint64_t>(r.integer(0, 1)),
             r.text(0, 2), r.integer(0, 3), static_cast<std::uint64_t>(r.integer(0, 4))};
}

// Why a gateway may not open one more transfer, if it may not: bounded per gateway are open transfers (each
// a partial file on disk) and, for a file without a row, rows not held (the ledger).
std::optional<std::string> no_room(PgConnection& pg, const std::string& gateway, long long max_open_files,
                                   bool has_row) {
  const PgResult counts = pg.exec(
      "SELECT count(*) FILTER (WHERE state = 'open'), count(*) FILTER (WHERE state <> 'held') FROM "
      "file_uploads WHERE gateway = $1",
      {gateway}, "counting open file transfers");
  const long long open = counts.integer(0, 0);
  const long long waiting = counts.integer(0, 1);
  if (open >= max_open_files) {
    return std::to_string(open) + " transfers already open (feed.max_open_files)";
  }
  if (!has_row && waiting >= kMaxRowsNotHeld) {
    return std::to_string(waiting) + " transfers not held";
  }
  return std::nullopt;
}

// Whether a stored record of `gateway` names the recording `sha256` (its `recording` record at `seq`).
bool recording_named(PgConnection& pg, const std::string& gateway, std::uint64_t seq,
                     const std::string& sha256) {
  return pg.exec(
               "SELECT 1 FROM records WHERE gateway = $1 AND type = 'recording' AND "
               "octet_length(body->>'sha256') = 64 AND body->>'sha256' = $3 AND "
               "($2::bigint = 0 OR seq = $2::bigint) LIMIT 1",
               {gateway, std::to_string(seq), sha256}, "looking for the record naming a file")
             .rows() > 0;
}

// The seq of the stored `recording` record of `gateway` naming `sha256`, for an init without `seq` (optional
// in the protocol: informative); 0 when none is stored yet (a transfer row at seq 0 is named by any such
// record of its gateway: kTransferNamedSql).
std::uint64_t recording_seq(PgConnection& pg, const std::string& gateway, const std::string& sha256) {
  const PgResult r = pg.exec(
      "SELECT seq FROM records WHERE gateway = $1 AND type = 'recording' AND "
      "octet_length(body->>'sha256') = 64 AND body->>'sha256' = $2 ORDER BY seq LIMIT 1",
      {gateway, sha256}, "looking for the record naming a file");
  return r.rows() > 0 ? static_cast<std::uint64_t>(r.integer(0, 0)) : 0;
}

// The transfer's row opened (again): a new size or segment size starts it over.
void open_row(PgConnection& pg, const std::string& gateway, const std::string& sha256,
              const filex::FileInit& init, const std::optional<Row>& row, std::int64_t now) {
  if (!row) {
    pg.exec(
        "INSERT INTO file_uploads (gateway, sha256, size, segment_size, name, seq, state, started_ms, "
        "last_ms) "
        "VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $7) ON CONFLICT (gateway, sha256) DO NOTHING",
        {gateway, sha256, std::to_string(init.size), std::to_string(init.segment_size), init.name,
         std::to_string(init.seq), std::to_string(now)},
        "opening a file transfer");
    return;
  }
  if (row->size != init.size || row->segment_size != init.segment_size) {
    // Another segment size (the gateway's config changed) or size: start the transfer again.
    pg.exec("DELETE FROM file_segments WHERE gateway = $1 AND sha256 = $2", {gateway, sha256},
            "resetting a file transfer");
    pg.exec("UPDATE file_uploads SET received_bytes = 0 WHERE gateway = $1 AND sha256 = $2",
            {gateway, sha256}, "resetting a file transfer");
  }
  pg.exec(
      "UPDATE file_uploads SET size = $3, segment_size = $4, name = $5, seq = $6, state = 'open', reason = "
      "NULL, last_ms = $7 WHERE gateway = $1 AND sha256 = $2",
      {gateway, sha256, std::to_string(init.size), std::to_string(init.segment_size), init.name,
       std::to_string(init.seq), std::to_string(now)},
      "opening a file transfer again");
}

std::vector<std::uint64_t> held_offsets(PgConnection& pg, const std::string& gateway,
                                        const std::string& sha) {
  const PgResult r = pg.exec("SELECT off FROM file_segments WHERE gateway = $1 AND sha256 = $2 ORDER BY off",
                             {gateway, sha}, "reading a file transfer's segments");
  std::vector<std::uint64_t> out;
  out.reserve(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) {
    out.push_back(static_cast<std::uint64_t>(r.integer(i, 0)));
  }
  return out;
}

std::uint64_t segments_held(PgConnection& pg, const std::string& gateway, const std::string& sha) {
  return static_cast<std::uint64_t>(
      pg.exec("SELECT count(*) FROM file_segments WHERE gateway = $1 AND sha256 = $2", {gateway, sha},
              "counting a file transfer's segments")
          .integer(0, 0));
}

}  // namespace

std::string unnamed_media_sql(const std::string& gateway_sql) {
  // `named` is set when a record naming the file, or the file, is stored (central_store.cpp); a file two
  // instances stored at once with its record may keep `named` false, so the rule is applied here again.
  return "(SELECT coalesce(sum(greatest(m.bytes, " + std::to_string(kUnnamedMinCharge) +
         ")), 0) FROM media m WHERE m.first_gateway = " + gateway_sql +
         " AND NOT m.named AND NOT EXISTS (SELECT 1 FROM record_media rm WHERE rm.sha256 = m.sha256) AND NOT "
         "EXISTS (SELECT 1 FROM file_uploads f WHERE f.gateway = m.first_gateway AND f.sha256 = m.sha256 "
         "AND " +
         kTransferNamedSql + "))";
}

namespace {

// The files the forks of `gateway` name (kept for forensics: their pictures with them), from their JWS
// bodies.
std::set<std::string> fork_files(PgConnection& pg, const std::string& gateway) {
  std::set<std::string> out;
  const PgResult forks =
      pg.exec("SELECT jws FROM forks WHERE gateway = $1", {gateway}, "reading forks' files");
  for (int i = 0; i < forks.rows(); ++i) {
    const std::string jws = forks.text(i, 0);
    const auto dot1 = jws.find('.');
    const auto dot2 = dot1 == std::string::npos ? dot1 : jws.find('.', dot1 + 1);
    const auto text =
        dot2 == std::string::npos ? std::nullopt : base64url_decode(jws.substr(dot1 + 1, dot2 - dot1 - 1));
    const nlohmann::json body = text ? nlohmann::json::parse(*text, nullptr, false)
                                     : nlohmann::json(nlohmann::json::value_t::discarded);
    if (!body.is_object()) {
      continue;  // a fork is a verified record: its body decodes
    }
    for (std::string& sha : record_columns(body).pictures) {
      out.insert(std::move(sha));
    }
    if (const auto file = body.find("sha256"); file != body.end() && file->is_string()) {
      out.insert(file->get<std::string>());  // a recording's file
    }
  }
  return out;
}

// Removes the file of `sha256` at `path` unless a `media` row holds it, under kMediaLockSql: a picture stored
// again meanwhile (its row inserted under the same lock) keeps its file. True when a file went.
bool remove_unless_held(PgConnection& pg, const std::string& sha256, const fs::path& path) {
  PgTransaction tx(pg);
  pg.exec(std::string("SELECT ") + kMediaLockSql, {sha256}, "locking a file to remove it");
  bool removed = false;
  if (pg.exec("SELECT 1 FROM media WHERE sha256 = $1", {sha256}, "looking for a file's row").rows() == 0) {
    std::error_code ec;
    removed = fs::remove(path, ec);
  }
  tx.commit();
  return removed;
}

}  // namespace

AgedOut age_out_unnamed(PgConnection& pg, std::int64_t before_ms, int limit) {
  AgedOut out;
  std::vector<std::pair<std::string, std::string>> deleted;  // sha256, path
  {
    PgTransaction tx(pg);
    const PgResult old = pg.exec(
        "SELECT m.sha256, m.path, m.first_gateway, m.bytes FROM media m WHERE NOT m.named AND m.received_ms "
        "< "
        "$1::bigint AND NOT EXISTS (SELECT 1 FROM record_media rm WHERE rm.sha256 = m.sha256) AND NOT EXISTS "
        "(SELECT 1 FROM file_uploads f WHERE f.sha256 = m.sha256) ORDER BY m.received_ms LIMIT $2::bigint "
        "FOR "
        "UPDATE OF m SKIP LOCKED",
        {std::to_string(before_ms), std::to_string(limit)}, "finding old files no record names");
    std::map<std::string, std::set<std::string>> forks;  // per gateway, read once
    std::string gone;
    std::string kept;  // named by a fork: marked named, so the next round does not find it again
    std::set<std::string> gateways;
    for (int i = 0; i < old.rows(); ++i) {
      const std::string sha = old.text(i, 0);
      const std::string gateway = old.text(i, 2);
      auto f = forks.find(gateway);
      if (f == forks.end()) {
        f = forks.emplace(gateway, fork_files(pg, gateway)).first;
      }
      if (f->second.count(sha) != 0) {
        kept += (kept.empty() ? "" : ",") + sha;
        continue;
      }
      deleted.emplace_back(sha, old.text(i, 1));
      gone += (gone.empty() ? "" : ",") + sha;
      gateways.insert(gateway);
      ++out.files;
      out.bytes += static_cast<std::uint64_t>(std::max<long long>(0, old.integer(i, 3)));
    }
    if (!gone.empty()) {
      pg.exec("DELETE FROM media WHERE sha256 = ANY($1::text[])", {"{" + gone + "}"}, "ageing out files");
    }
    if (!kept.empty()) {
      pg.exec("UPDATE media SET named = true WHERE sha256 = ANY($1::text[])", {"{" + kept + "}"},
              "keeping the files of forks");
    }
    tx.commit();
    out.gateways.assign(gateways.begin(), gateways.end());
  }
  // The rows are gone: now the files, each unless the picture was stored again meanwhile. The same advisory
  // lock is held by the transaction storing a picture from its row's insert to its commit (CentralStore::
  // store_batch, which counts it held only if its file is in place then), so a file goes either before that
  // insert looks for it or not at all. A crash here leaves a file without a row: bytes, never a loss.
  for (const auto& [sha, path] : deleted) {
    remove_unless_held(pg, sha, path);
  }
  return out;
}

OrphanSweep sweep_orphans(PgConnection& pg, const std::string& media_dir, std::int64_t min_age_s,
                          std::size_t limit, std::string& cursor) {
  OrphanSweep out;
  const auto too_new = fs::file_time_type::clock::now() - std::chrono::seconds(min_age_s);
  std::vector<std::string> names;  // "<xx>/<name>", in order, after the cursor
  std::vector<std::string> subdirs;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(media_dir, ec)) {
    const std::string n = d.path().filename().string();
    if (n.size() == 2 && is_sha256_hex(n + std::string(62, '0')) && d.is_directory(ec)) {
      subdirs.push_back(n);
    }
  }
  std::sort(subdirs.begin(), subdirs.end());
  for (const std::string& sub : subdirs) {
    if (names.size() >= limit || sub < cursor.substr(0, 2)) {
      continue;
    }
    std::vector<std::string> here;
    for (const auto& f : fs::directory_iterator(fs::path(media_dir) / sub, ec)) {
      here.push_back(sub + "/" + f.path().filename().string());
    }
    std::sort(here.begin(), here.end());
    for (std::string& n : here) {
      if (n > cursor && names.size() < limit) {
        names.push_back(std::move(n));
      }
    }
  }
  cursor = names.size() < limit ? std::string() : names.back();  // the end reached: from the start next round
  // Held names (64 hex, in their own subdirectory) first asked of PostgreSQL in one query, so only the few no
  // row holds are looked at on disk; a writer's temporary file always is.
  const auto old_file = [&](const fs::path& path) {
    const auto written = fs::last_write_time(path, ec);
    return !ec && written <= too_new && fs::is_regular_file(path, ec);
  };
  std::vector<std::string> held;
  std::string listed;
  for (const std::string& n : names) {
    const std::string file = n.substr(3);
    if (is_sha256_hex(file) && file.compare(0, 2, n, 0, 2) == 0) {
      held.push_back(file);
      listed += (listed.empty() ? "" : ",") + file;
    } else if (file.find(".tmp-") != std::string::npos && old_file(fs::path(media_dir) / n)) {
      out.removed += fs::remove(fs::path(media_dir) / n, ec) ? 1 : 0;
    }
  }
  if (held.empty()) {
    return out;
  }
  const PgResult rows = pg.exec(
      "SELECT sha256 FROM media WHERE sha256 = ANY($1::text[]) UNION ALL SELECT '' WHERE NOT EXISTS (SELECT "
      "1 "
      "FROM media)",
      {"{" + listed + "}"}, "looking for files no row holds");
  std::set<std::string> with_row;
  for (int i = 0; i < rows.rows(); ++i) {
    with_row.insert(rows.text(i, 0));
  }
  std::vector<std::string> orphans;
  for (const std::string& sha : held) {
    if (with_row.count(sha) == 0 && old_file(fs::path(media_dir) / sha.substr(0, 2) / sha)) {
      orphans.push_back(sha);
    }
  }
  // A database that does not go with this directory (another one, a new one, one restored to an earlier
  // time) would make every file an orphan, and some may be the only copy left: nothing is removed then.
  if (with_row.count("") != 0 || orphans.size() > kMaxOrphansPerRound) {
    out.refused = orphans.size();
    return out;
  }
  for (const std::string& sha : orphans) {
    out.removed += remove_unless_held(pg, sha, fs::path(media_dir) / sha.substr(0, 2) / sha) ? 1 : 0;
  }
  return out;
}

std::uint64_t unnamed_bytes(PgConnection& pg, const std::string& gateway) {
  // A read only: no write, no lock.
  const PgResult r =
      pg.exec("SELECT (" + unnamed_media_sql("$1") + " + (SELECT coalesce(sum(greatest(f.size, " +
                  std::to_string(kUnnamedMinCharge) +
                  ")), 0) FROM file_uploads f WHERE f.gateway = $1 AND f.state = 'open' AND NOT " +
                  kTransferNamedSql + "))::bigint",
              {gateway}, "summing the files no record names");
  return static_cast<std::uint64_t>(std::max<long long>(0, r.integer(0, 0)));
}

FileIntake::FileIntake(FileIntakeConfig config, const Ed25519PrivateKey& central_key, std::string prefix)
    : cfg_(std::move(config)), key_(central_key), prefix_(std::move(prefix)) {}

std::string FileIntake::receipt_topic(const std::string& gateway) const {
  return prefix_ + "/" + gateway + "/files/receipt";
}

std::string FileIntake::want_topic(const std::string& gateway) const {
  return prefix_ + "/" + gateway + "/files/want";
}

std::string FileIntake::partial_path(const std::string& gateway, const std::string& sha256) const {
  return (fs::path(cfg_.media_dir) / "partial" / gateway / (sha256 + ".part")).string();
}

std::string FileIntake::held_path(const std::string& sha256) const {
  return (fs::path(cfg_.media_dir) / sha256.substr(0, 2) / sha256).string();
}

void FileIntake::handle(PgConnection& pg, const std::string& gateway, const std::string& rest,
                        const std::string& payload, std::int64_t now, std::vector<FilePublish>& out) {
  const filex::FileTopicParse parsed = filex::parse_file_topic(rest);
  if (!parsed.topic) {
    ++counters_.refused;
    log::warn("central", gateway, "file message refused: " + parsed.reason);
    return;
  }
  const filex::FileTopic& t = *parsed.topic;
  switch (t.kind) {
    case filex::FileTopic::Kind::init:
      on_init(pg, gateway, t, payload, now, out);
      break;
    case filex::FileTopic::Kind::segment:
      on_segment(pg, gateway, t, payload, now, out);
      break;
    case filex::FileTopic::Kind::fin:
      on_fin(pg, gateway, t, now, out);
      break;
    case filex::FileTopic::Kind::abort:
      on_abort(pg, gateway, t, payload, now);
      break;
  }
}

void FileIntake::on_init(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
                         const std::string& payload, std::int64_t now, std::vector<FilePublish>& out) {
  const filex::InitParse p = filex::parse_init(payload, t.sha256);
  if (!p.init) {
    ++counters_.refused;
    log::warn("central", gateway, "file " + t.sha256 + ": init refused: " + p.reason);
    return;
  }
  filex::FileInit init = std::move(*p.init);
  // Whether a stored record names the file, when already looked up (an init without seq: one query).
  std::optional<bool> named;
  if (init.seq == 0) {
    init.seq = recording_seq(pg, gateway, t.sha256);
    named = init.seq != 0;
  }
  if (init.size > cfg_.max_file_bytes) {
    const std::string why =
        std::to_string(init.size) + " bytes is more than this central takes (feed.max_file_mb)";
    // A file an operator asked for (files --request): the request ends here, not_held with this reason;
    // its wants went on for ever, each answered by the same init. Asked for again once the bound is raised.
    pg.exec(
        "UPDATE file_uploads SET state = 'not_held', reason = $3, last_ms = $4 WHERE gateway = $1 AND "
        "sha256 = $2 AND state = 'requested'",
        {gateway, t.sha256, why, std::to_string(now)}, "ending a request for a file over the bound");
    refuse_init(gateway, t.sha256, why, false, out);
    return;
  }
  // Content-addressed: a file central already holds (from this gateway or another) is held for this one too.
  const PgResult media =
      pg.exec("SELECT bytes FROM media WHERE sha256 = $1", {t.sha256}, "looking up a file");
  // Taken as held in one transaction, under a share lock on the media row: the age-out of files no record
  // names (age_out_unnamed: FOR UPDATE SKIP LOCKED) cannot take it before this commit, after which this
  // transfer's row names it. Gone meanwhile (aged out since the look-up above): sent as any other file.
  const auto held_already = [&] {
    PgTransaction tx(pg);
    const std::optional<Row> prior = find_row(pg, gateway, t.sha256, " FOR UPDATE");
    const PgResult locked =
        pg.exec("SELECT bytes FROM media WHERE sha256 = $1 FOR SHARE", {t.sha256}, "locking a held file");
    if (locked.rows() == 0 || static_cast<std::uint64_t>(locked.integer(0, 0)) != init.size) {
      return false;
    }
    if (prior && prior->state == "open") {
      // This gateway's own transfer of it was under way: its segments and partial file go (nothing else
      // would ever remove them once the row says held).
      pg.exec("DELETE FROM file_segments WHERE gateway = $1 AND sha256 = $2", {gateway, t.sha256},
              "dropping a transfer of a file held already");
      std::error_code ec;
      fs::remove(partial_path(gateway, t.sha256), ec);
    }
    pg.exec(
        "INSERT INTO file_uploads (gateway, sha256, size, segment_size, name, seq, state, started_ms, "
        "last_ms, "
        "held_ms) VALUES ($1, $2, $3, $4, $5, $6, 'held', $7, $7, $7) ON CONFLICT (gateway, sha256) DO "
        "UPDATE "
        "SET state = 'held', held_ms = coalesce(file_uploads.held_ms, $7), last_ms = $7",
        {gateway, t.sha256, std::to_string(init.size), std::to_string(init.segment_size), init.name,
         std::to_string(init.seq), std::to_string(now)},
        "recording a held file");
    tx.commit();
    return true;
  };
  if (media.rows() > 0 && static_cast<std::uint64_t>(media.integer(0, 0)) == init.size && held_already()) {
    receipt(gateway, t.sha256, init.size, now, out);
    return;
  }
  const std::optional<Row> row = find_row(pg, gateway, t.sha256);
  if (row && row->state == "held") {
    receipt(gateway, t.sha256, row->size, now, out);  // a lost receipt: the gateway asks again
    return;
  }
  PgTransaction tx(pg);
  // One init per gateway at a time, across instances: the count of open transfers below is then not passed
  // by two instances opening one each at the same moment.
  pg.exec("SELECT pg_advisory_xact_lock(hashtext('file_uploads:' || $1))", {gateway},
          "serialising a gateway's file inits");
  const std::optional<Row> locked = find_row(pg, gateway, t.sha256, " FOR UPDATE");
  if (locked && locked->state == "held") {
    tx.commit();  // assembled by another instance since we looked
    receipt(gateway, t.sha256, locked->size, now, out);
    return;
  }
  if (locked && locked->state == "not_held" && locked->mismatches >= kMaxFileMismatches) {
    // Its bytes failed the whole-file hash kMaxFileMismatches times (checked under the row's lock: another
    // instance may have just given it up): sent again they would fail again. Only an operator's request
    // (`files --request`) opens it again.
    refuse_init(gateway, t.sha256,
                "the gateway's copy is damaged (its whole file failed its SHA-256 " +
                    std::to_string(locked->mismatches) + " times)",
                false, out);
    return;
  }
  const bool reopening = locked && locked->state == "open";
  if (!reopening) {
    if (const auto full = no_room(pg, gateway, cfg_.max_open_files, locked.has_value())) {
      refuse_init(gateway, t.sha256, *full, true, out);
      return;
    }
  }
  // A file no stored record names (its record not here yet, or none at all) takes room from the gateway's
  // bound on such files: beyond it, the gateway is told to come back later (by then its record is here). An
  // open transfer no record names is counted at its size already: the same size at the same seq takes no
  // more. A file central asked for (`requested`: a stored record's, or an operator's) is exempt.
  const bool asked = locked && locked->state == "requested";
  const bool same = reopening && init.size <= locked->size && init.seq == locked->seq;
  if (!asked && !same && !(named ? *named : recording_named(pg, gateway, init.seq, t.sha256))) {
    const std::uint64_t unnamed = unnamed_bytes(pg, gateway);
    const bool counted_already = reopening && !recording_named(pg, gateway, locked->seq, t.sha256);
    const std::uint64_t counted = counted_already ? std::min(unnamed, unnamed_charge(locked->size)) : 0;
    const std::uint64_t after = unnamed - counted + unnamed_charge(init.size);
    if (after > cfg_.unnamed_max_bytes) {
      ++counters_.unnamed_refused;
      // Logged at most once a minute: any publisher on the gateway's topics can send inits without end.
      const bool quiet = unnamed_logged_ms_ >= 0 && now - unnamed_logged_ms_ < 60000;
      unnamed_logged_ms_ = quiet ? unnamed_logged_ms_ : now;
      refuse_init(gateway, t.sha256,
                  "no stored record names it yet, and this gateway's files no record names would take " +
                      std::to_string(after) +
                      " bytes (feed.unnamed_max_mb; further refusals this minute are "
                      "counted only: central_file_unnamed_refused_total)",
                  true, out, quiet);
      return;
    }
  }
  open_row(pg, gateway, t.sha256, init, locked, now);
  const fs::path part = partial_path(gateway, t.sha256);
  fs::create_directories(part.parent_path());
  Fd fd(::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
  if (fd.get() < 0) {
    throw std::runtime_error("files: cannot create " + part.string() + ": " + std::strerror(errno));
  }
  // A transfer started again with another size keeps no byte of the old one beyond the new size (the
  // segments below it are all sent again: open_row dropped their rows), so the whole-file hash is over this
  // transfer's bytes only.
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) > init.size &&
      ::ftruncate(fd.get(), static_cast<off_t>(init.size)) != 0) {
    throw std::runtime_error("files: cannot truncate " + part.string() + ": " + std::strerror(errno));
  }
  tx.commit();
  ++counters_.inits;
}

void FileIntake::on_segment(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
                            const std::string& payload, std::int64_t now, std::vector<FilePublish>& out) {
  if (sha256_hex(payload) != t.checksum) {
    ++counters_.refused;
    log::warn("central", gateway,
              "file " + t.sha256 + ": segment at " + std::to_string(t.offset) +
                  " refused: its SHA-256 is not its checksum");
    return;
  }
  // One transaction per segment (one WAL flush), holding the transfer's row from the state check to the
  // commit: no instance assembles, resets or drops the file while its bytes are written, so a late copy can
  // neither write into a file already renamed into place nor re-create a partial file nobody will finish.
  // FOR NO KEY UPDATE, not FOR SHARE: the transaction updates the row after writing, and two instances each
  // holding it FOR SHARE would deadlock on that update. Segments of one file are written one at a time.
  PgTransaction tx(pg);
  const std::optional<Row> row = find_row(pg, gateway, t.sha256, " FOR NO KEY UPDATE");
  if (!row || row->state != "open") {
    ++counters_.unexpected;  // no init seen (lost in a broker restart), or already held: asked for if needed
    return;
  }
  if (std::string why = filex::segment_refusal(row->size, row->segment_size, t.offset, payload.size());
      !why.empty()) {
    ++counters_.refused;
    log::warn("central", gateway, "file " + t.sha256 + ": segment refused: " + why);
    return;
  }
  // The segment's row first: a copy of a segment already held writes nothing (the first copy's bytes, whose
  // checksum the transfer counted, are never overwritten by another payload with a checksum of its own). The
  // row commits only after the bytes are fdatasync'd; a failed write rolls it back.
  const PgResult ins = pg.exec(
      "INSERT INTO file_segments (gateway, sha256, off, len) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
      {gateway, t.sha256, std::to_string(t.offset),
       std::to_string(static_cast<std::uint64_t>(payload.size()))},
      "recording a file segment");
  if (ins.affected() == 0) {
    tx.commit();
    ++counters_.segments_duplicate;
    return;
  }
  const fs::path part = partial_path(gateway, t.sha256);
  fs::create_directories(part.parent_path());
  {
    Fd fd(::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
    if (fd.get() < 0) {
      throw std::runtime_error("files: cannot open " + part.string() + ": " + std::strerror(errno));
    }
    std::size_t done = 0;
    while (done < payload.size()) {
      const ssize_t n = ::pwrite(fd.get(), payload.data() + done, payload.size() - done,
                                 static_cast<off_t>(t.offset + done));
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        throw std::runtime_error("files: cannot write " + part.string() + ": " + std::strerror(errno));
      }
      done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(fd.get()) != 0) {
      throw std::runtime_error("files: fdatasync " + part.string() + ": " + std::strerror(errno));
    }
  }
  // Progress: the backoff starts again, and no want goes out while segments still arrive (the gateway may
  // not have come to the last want yet: it serves wants after the upload it is sending); the next want
  // goes out file_stall_ms after the last segment, by a fin or by the stall check.
  const PgResult progress = pg.exec(
      "UPDATE file_uploads SET last_ms = $3, received_bytes = received_bytes + $4, next_want_ms = "
      "greatest(next_want_ms, $3::bigint + $5::bigint), want_backoff_ms = 0 WHERE gateway = $1 AND sha256 = "
      "$2 RETURNING received_bytes",
      {gateway, t.sha256, std::to_string(now), std::to_string(static_cast<std::uint64_t>(payload.size())),
       std::to_string(cfg_.stall_ms)},
      "counting a file segment");
  tx.commit();
  ++counters_.segments;
  counters_.segment_bytes += payload.size();
  // received_bytes counts each segment once (duplicates stop above), so it reaches the size exactly when
  // every segment is there.
  if (progress.rows() > 0 && static_cast<std::uint64_t>(progress.integer(0, 0)) >= row->size) {
    assemble(pg, gateway, t.sha256, now, out);
  }
}

void FileIntake::on_fin(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
                        std::int64_t now, std::vector<FilePublish>& out) {
  const std::optional<Row> row = find_row(pg, gateway, t.sha256);
  if (!row) {
    ++counters_.unexpected;  // its init was lost or refused: the gateway sends init with every fin
    return;
  }
  if (row->size != t.size) {
    ++counters_.refused;
    log::warn("central", gateway,
              "file " + t.sha256 + ": fin says " + std::to_string(t.size) + " bytes, its init " +
                  std::to_string(row->size));
    return;
  }
  if (row->state == "held") {
    receipt(gateway, t.sha256, row->size, now, out);
    return;
  }
  if (row->state != "open") {
    // requested (no init since central asked) or not_held (the gateway said it cannot send it): a fin
    // without its init is not a transfer; the request's wants go on.
    ++counters_.unexpected;
    log::warn("central", gateway,
              "file " + t.sha256 + ": fin for a transfer in state " + row->state + " ignored");
    return;
  }
  pg.exec("UPDATE file_uploads SET fin_ms = $3 WHERE gateway = $1 AND sha256 = $2",
          {gateway, t.sha256, std::to_string(now)}, "recording a file's fin");
  std::vector<std::uint64_t> held = held_offsets(pg, gateway, t.sha256);
  if (held.size() == filex::segment_count(row->size, row->segment_size)) {
    assemble(pg, gateway, t.sha256, now, out);
    return;
  }
  want(pg, gateway, t.sha256, filex::missing_ranges(row->size, row->segment_size, std::move(held)), now, out);
}

void FileIntake::on_abort(PgConnection& pg, const std::string& gateway, const filex::FileTopic& t,
                          const std::string& payload, std::int64_t now) {
  // A malformed abort changes nothing: it must not end a transfer (and delete its segments) on the word of
  // a payload that is not one.
  const std::string reason = filex::parse_abort(payload);
  if (reason.empty()) {
    ++counters_.refused;
    log::warn("central", gateway,
              "file " + t.sha256 + ": abort refused: not {\"reason\": <text>, \"v\": 1} of at most 64 KiB");
    return;
  }
  // The state and the segment rows in one transaction (an init reopening the transfer, and its segments,
  // wait for the row's lock and do not lose theirs to this abort).
  {
    PgTransaction tx(pg);
    const PgResult r = pg.exec(
        "UPDATE file_uploads SET state = 'not_held', reason = $3, last_ms = $4, received_bytes = 0 WHERE "
        "gateway = $1 AND sha256 = $2 AND state IN ('open', 'requested')",
        {gateway, t.sha256, reason, std::to_string(now)}, "recording a file the gateway cannot send");
    if (r.affected() == 0) {
      return;
    }
    pg.exec("DELETE FROM file_segments WHERE gateway = $1 AND sha256 = $2", {gateway, t.sha256},
            "dropping an aborted transfer");
    tx.commit();
  }
  ++counters_.aborts;
  log::error("central", gateway, "file " + t.sha256 + ": the gateway cannot send it: " + reason);
  // Then the partial file, once that is committed (a failed commit leaves the segment rows and their bytes
  // together), under the row's lock, unless an init has opened the transfer again meanwhile.
  PgTransaction tx(pg);
  if (const std::optional<Row> row = find_row(pg, gateway, t.sha256, " FOR UPDATE");
      row && row->state == "not_held") {
    std::error_code ec;
    fs::remove(partial_path(gateway, t.sha256), ec);
  }
  tx.commit();
}

void FileIntake::assemble(PgConnection& pg, const std::string& gateway, const std::string& sha256,
                          std::int64_t now, std::vector<FilePublish>& out) {
  PgTransaction tx(pg);
  const std::optional<Row> row = find_row(pg, gateway, sha256, " FOR UPDATE");  // one instance assembles
  if (!row || row->state != "open" ||
      segments_held(pg, gateway, sha256) != filex::segment_count(row->size, row->segment_size)) {
    return;
  }
  // Against the age-out removing a picture of the same bytes from the same path (age_out_unnamed).
  pg.exec(std::string("SELECT ") + kMediaLockSql, {sha256}, "locking a media file");
  const fs::path part = partial_path(gateway, sha256);
  const fs::path held = held_path(sha256);
  std::error_code ec;
  // The file already in place with the right bytes is the file, whatever the partial file holds: after a
  // crash or a failed commit between the rename and the commit, a later init may have made an empty partial
  // file again (and the bytes in place were checked before their rename).
  std::string unreadable;
  auto hashed = fs::exists(held, ec) ? sha256_file(held.string(), unreadable) : std::nullopt;
  const bool in_place = hashed && hashed->sha256 == sha256 && hashed->bytes == row->size;
  const fs::path source = in_place || !fs::exists(part, ec) ? held : part;
  if (!in_place) {
    unreadable.clear();
    hashed = sha256_file(source.string(), unreadable);
  }
  if (hashed && hashed->sha256 == sha256 && hashed->bytes == row->size) {
    if (source == part) {
      if (const auto failed = fsync_file(part)) {
        throw std::runtime_error("files: " + describe(*failed, part));
      }
      fs::create_directories(held.parent_path());
      fs::rename(part, held);
      if (const auto failed = fsync_directory(held.parent_path())) {
        throw std::runtime_error("files: " + describe(*failed, held.parent_path()));
      }
      // A stalled transfer's partial file may be days old: fresh for the sweep of files no row holds, should
      // this instance stop before the commit (sweep_orphans).
      fs::last_write_time(held, fs::file_time_type::clock::now(), ec);
    } else {
      // In place already, renamed by a try whose commit failed (or by another writer): durable before the
      // commit that counts it, and the partial file made since is dropped.
      if (const auto failed = fsync_file_and_directory(held)) {
        throw std::runtime_error("files: " + describe(*failed, held));
      }
      fs::remove(part, ec);
    }
    pg.exec(std::string(
                "INSERT INTO media (sha256, bytes, path, first_gateway, received_ms, named) VALUES ($1, $2, "
                "$3, $4, $5, EXISTS (SELECT 1 FROM file_uploads f WHERE f.gateway = $4 AND f.sha256 = $1 "
                "AND ") +
                kTransferNamedSql + ")) ON CONFLICT (sha256) DO NOTHING",
            {sha256, std::to_string(row->size), held.string(), gateway, std::to_string(now)},
            "recording a held file");
    pg.exec(
        "UPDATE file_uploads SET state = 'held', held_ms = $3, last_ms = $3 WHERE gateway = $1 AND sha256 = "
        "$2",
        {gateway, sha256, std::to_string(now)}, "recording a held file");
    pg.exec("DELETE FROM file_segments WHERE gateway = $1 AND sha256 = $2", {gateway, sha256},
            "dropping a held file's segments");
    tx.commit();
    ++counters_.files_held;
    log::notice("central", gateway,
                "file " + sha256 + " held: " + std::to_string(row->size) + " bytes, SHA-256 checked");
    receipt(gateway, sha256, row->size, now, out);
    return;
  }
  // Every segment matched its checksum, yet the whole does not: start again from nothing, at most
  // kMaxFileMismatches times; then the gateway's copy is taken as damaged and the transfer ends not_held
  // (else a file whose bytes rotted on the gateway would be asked for and sent whole for ever).
  pg.exec("DELETE FROM file_segments WHERE gateway = $1 AND sha256 = $2", {gateway, sha256},
          "forgetting a file that does not match");
  const std::string found =
      hashed ? "hashes to " + hashed->sha256 + " (" + std::to_string(hashed->bytes) + " bytes)"
             : "cannot be read (" + unreadable + ")";
  const PgResult counted = pg.exec(
      "UPDATE file_uploads SET received_bytes = 0, fin_ms = NULL, next_want_ms = 0, mismatches = mismatches "
      "+ "
      "1, state = CASE WHEN mismatches + 1 >= $3::integer THEN 'not_held' ELSE state END, reason = CASE WHEN "
      "mismatches + 1 >= $3::integer THEN $4 ELSE reason END WHERE gateway = $1 AND sha256 = $2 RETURNING "
      "mismatches",
      {gateway, sha256, std::to_string(kMaxFileMismatches),
       "the whole file " + found + ", not its id, " + std::to_string(kMaxFileMismatches) +
           " times: the gateway's copy is damaged"},
      "forgetting a file that does not match");
  const bool given_up = counted.rows() > 0 && counted.integer(0, 0) >= kMaxFileMismatches;
  if (source == part) {
    if (given_up) {
      fs::remove(part, ec);
    } else {
      ::truncate(part.c_str(), 0);  // under the row's lock: no segment is being written
    }
  }
  tx.commit();
  ++counters_.mismatches;
  if (given_up) {
    ++counters_.damaged;
    log::error("central", gateway,
               "file " + sha256 + ": the whole file " + found + ", not its id (" +
                   std::to_string(kMaxFileMismatches) +
                   " times in all): the gateway's copy is damaged; not held, not asked for again (`files "
                   "--request` asks again)");
    return;
  }
  log::error("central", gateway,
             "file " + sha256 + ": the whole file " + found + ", not its id: asked for again");
  want(pg, gateway, sha256, {}, now, out);
}

void FileIntake::want(PgConnection& pg, const std::string& gateway, const std::string& sha256,
                      filex::Ranges ranges, std::int64_t now, std::vector<FilePublish>& out) {
  // Claimed in PostgreSQL (another instance may be looking at the same transfer), with backoff.
  const PgResult r = pg.exec(
      "UPDATE file_uploads SET wants = wants + 1, want_backoff_ms = least(greatest(want_backoff_ms * 2, "
      "$4::bigint), $5::bigint), next_want_ms = $3::bigint + least(greatest(want_backoff_ms * 2, "
      "$4::bigint), "
      "$5::bigint) WHERE gateway = $1 AND sha256 = $2 AND next_want_ms <= $3::bigint RETURNING wants",
      {gateway, sha256, std::to_string(now), std::to_string(cfg_.stall_ms),
       std::to_string(cfg_.retry_max_ms)},
      "asking for a file");
  if (r.rows() == 0) {
    return;
  }
  ++counters_.wants;
  log::info("central", gateway,
            "file " + sha256 + ": asking for " +
                (ranges.empty() ? std::string("the whole file")
                                : std::to_string(ranges.size()) + " byte ranges (" +
                                      std::to_string(filex::ranges_bytes(ranges)) + " bytes from byte " +
                                      std::to_string(ranges.front().first) + ")"));
  out.push_back(FilePublish{want_topic(gateway), filex::want_json(filex::Want{sha256, std::move(ranges)})});
}

void FileIntake::refuse_init(const std::string& gateway, const std::string& sha256, const std::string& why,
                             bool later, std::vector<FilePublish>& out, bool quiet) {
  ++counters_.refused;
  if (!quiet) {
    log::warn(
        "central", gateway,
        "file " + sha256 + ": init refused: " + why +
            (later ? "; the gateway is told to send it later" : "; the gateway is told not to send it"));
  }
  out.push_back(FilePublish{prefix_ + "/" + gateway + "/files/refused",
                            filex::refused_json(filex::Refusal{sha256, why, later})});
}

void FileIntake::receipt(const std::string& gateway, const std::string& sha256, std::uint64_t size,
                         std::int64_t now, std::vector<FilePublish>& out) {
  ++counters_.receipts;
  out.push_back(FilePublish{
      receipt_topic(gateway),
      filex::seal_file_receipt(key_, filex::FileReceipt{cfg_.central_id, gateway, sha256, size, now})});
}

void FileIntake::tick(PgConnection& pg, std::int64_t now, std::vector<FilePublish>& out) {
  const PgResult due = pg.exec(
      "SELECT gateway, sha256, size, segment_size, state FROM file_uploads WHERE ((state = 'open' AND "
      "last_ms < $1::bigint "
      "- $2::bigint) OR state = 'requested') AND next_want_ms <= $1::bigint ORDER BY next_want_ms LIMIT 50",
      {std::to_string(now), std::to_string(cfg_.stall_ms)}, "looking for stalled file transfers");
  for (int i = 0; i < due.rows(); ++i) {
    const std::string gateway = due.text(i, 0);
    const std::string sha = due.text(i, 1);
    if (due.text(i, 4) == "requested") {
      want(pg, gateway, sha, {}, now, out);
      continue;
    }
    const auto size = static_cast<std::uint64_t>(due.integer(i, 2));
    const auto segment = static_cast<std::uint64_t>(due.integer(i, 3));
    std::vector<std::uint64_t> held = held_offsets(pg, gateway, sha);
    if (held.size() == filex::segment_count(size, segment)) {
      assemble(pg, gateway, sha, now, out);
      continue;
    }
    want(pg, gateway, sha, filex::missing_ranges(size, segment, std::move(held)), now, out);
  }
}

void FileIntake::request(PgConnection& pg, const std::string& gateway, const std::string& sha256,
                         std::int64_t now) {
  pg.exec(
      "INSERT INTO file_uploads (gateway, sha256, size, segment_size, state, started_ms, last_ms) VALUES "
      "($1, $2, "
      "0, 0, 'requested', $3, $3) ON CONFLICT (gateway, sha256) DO UPDATE SET state = 'requested', "
      "next_want_ms = "
      "0, want_backoff_ms = 0, mismatches = 0 WHERE file_uploads.state NOT IN ('held', 'open')",
      {gateway, sha256, std::to_string(now)}, "requesting a file");
}

}  // namespace cpd::central
