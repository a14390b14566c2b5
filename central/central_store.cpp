// CentralStore: schema steps, batched intake in one transaction, the per-gateway watermark walk under a row
// lock, receipts and resend planning. SQL takes text parameters only.
#include "central/central_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <random>
#include <set>
#include <stdexcept>
#include <utility>

#include "central/central_config.h"
#include "central/file_intake.h"
#include "central/key_rotation.h"
#include "daemon/core/encoding.h"

namespace cpd::central {

namespace {

// Whether `path` is there with `bytes` bytes: opened, not only looked up (on a shared network directory an
// open revalidates what another host removed).
bool file_in_place(const std::string& path, std::uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  struct stat st {};
  const bool ok = ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) == bytes;
  ::close(fd);
  return ok;
}

// Schema steps: step i brings the version from i to i + 1, in one transaction.
const std::vector<std::string> kSteps = {
    R"sql(
CREATE TABLE gateways (
  gateway text PRIMARY KEY,
  watermark_seq bigint NOT NULL DEFAULT 0,
  watermark_hash text NOT NULL DEFAULT repeat('0', 64),
  max_seq bigint NOT NULL DEFAULT 0,
  announced_seq bigint NOT NULL DEFAULT 0,
  announced_hash text,
  announced_ms bigint,
  last_seen_ms bigint,
  gap_since_ms bigint,
  next_request_ms bigint NOT NULL DEFAULT 0,
  request_backoff_ms bigint NOT NULL DEFAULT 0,
  resend_requests bigint NOT NULL DEFAULT 0,
  receipt_seq bigint NOT NULL DEFAULT 0,
  receipt_ms bigint,
  chain_break_seq bigint,
  chain_break_reason text,
  forks bigint NOT NULL DEFAULT 0,
  quarantined bigint NOT NULL DEFAULT 0,
  quarantine_dropped bigint NOT NULL DEFAULT 0
);
CREATE TABLE gateway_keys (
  gateway text NOT NULL REFERENCES gateways(gateway),
  kid text NOT NULL,
  public_key_pem text NOT NULL,
  source text NOT NULL,
  enrolled_ms bigint NOT NULL,
  PRIMARY KEY (gateway, kid)
);
CREATE TABLE records (
  gateway text NOT NULL,
  seq bigint NOT NULL,
  jws text NOT NULL,
  jws_sha256 text NOT NULL,
  prev text NOT NULL,
  kid text NOT NULL,
  type text NOT NULL,
  time_ms bigint NOT NULL,
  created_ms bigint NOT NULL,
  site json,
  plate text,
  plate_color text,
  lane bigint,
  speed_dkmh bigint,
  limit_kmh bigint,
  enforceable boolean,
  reasons json,
  body json NOT NULL,
  received_ms bigint NOT NULL,
  PRIMARY KEY (gateway, seq)
);
CREATE INDEX records_type_time ON records (type, time_ms);
CREATE INDEX records_plate ON records (plate) WHERE plate IS NOT NULL;
CREATE TABLE record_media (
  gateway text NOT NULL,
  seq bigint NOT NULL,
  sha256 text NOT NULL,
  PRIMARY KEY (gateway, seq, sha256)
);
CREATE INDEX record_media_sha256 ON record_media (sha256);
CREATE TABLE media (
  sha256 text PRIMARY KEY,
  bytes bigint NOT NULL,
  path text NOT NULL,
  first_gateway text NOT NULL,
  received_ms bigint NOT NULL
);
CREATE TABLE forks (
  id bigserial PRIMARY KEY,
  gateway text NOT NULL,
  seq bigint NOT NULL,
  jws text NOT NULL,
  jws_sha256 text NOT NULL,
  received_ms bigint NOT NULL,
  UNIQUE (gateway, seq, jws_sha256)
);
CREATE TABLE quarantine (
  id bigserial PRIMARY KEY,
  gateway text NOT NULL,
  seq bigint,
  kid text NOT NULL,
  jws text NOT NULL,
  reason text NOT NULL,
  received_ms bigint NOT NULL
);
CREATE INDEX quarantine_gateway ON quarantine (gateway);
CREATE TABLE unrecoverable (
  gateway text NOT NULL,
  from_seq bigint NOT NULL,
  to_seq bigint NOT NULL,
  noted_ms bigint NOT NULL,
  PRIMARY KEY (gateway, from_seq)
);
CREATE VIEW speeding_cases AS
  SELECT r.gateway, r.seq, r.gateway || ':' || r.seq AS id, r.time_ms, r.site ->> 'name' AS site_name,
         r.site ->> 'road' AS road, r.plate, r.plate_color, r.lane, r.speed_dkmh, r.limit_kmh,
         r.enforceable, r.reasons, r.seq <= g.watermark_seq AS in_custody, r.jws
  FROM records r JOIN gateways g USING (gateway)
  WHERE r.type = 'speeding';
)sql",
    // Quarantine deduplicated (one row per gateway, topic and payload SHA-256, with a count) and bounded by
    // quarantine_usage (rows and bytes per gateway; gateway '' holds the totals); the bytes as bytea (a
    // hostile payload need not be UTF-8); pictures a gateway no longer holds; head announcements that
    // contradict the stored chain; open resend requests (a reply is believed only for one of these).
    R"sql(
ALTER TABLE quarantine ALTER COLUMN jws DROP NOT NULL;
ALTER TABLE quarantine ADD COLUMN topic text NOT NULL DEFAULT 'evidence', ADD COLUMN payload bytea,
  ADD COLUMN payload_sha256 text, ADD COLUMN bytes bigint NOT NULL DEFAULT 0, ADD COLUMN count bigint NOT NULL
  DEFAULT 1, ADD COLUMN last_seen_ms bigint;
UPDATE quarantine SET payload = convert_to(jws, 'UTF8'), payload_sha256 = encode(sha256(convert_to(jws, 'UTF8')),
  'hex'), bytes = octet_length(convert_to(jws, 'UTF8')), last_seen_ms = received_ms;
UPDATE quarantine q SET count = d.n FROM (SELECT min(id) AS id, count(*) AS n FROM quarantine
  GROUP BY gateway, topic, payload_sha256) d WHERE q.id = d.id;
DELETE FROM quarantine q USING quarantine o WHERE o.gateway = q.gateway AND o.topic = q.topic
  AND o.payload_sha256 = q.payload_sha256 AND o.id < q.id;
ALTER TABLE quarantine ALTER COLUMN payload SET NOT NULL, ALTER COLUMN payload_sha256 SET NOT NULL,
  ALTER COLUMN last_seen_ms SET NOT NULL;
CREATE UNIQUE INDEX quarantine_payload ON quarantine (gateway, topic, payload_sha256);
CREATE TABLE quarantine_usage (
  gateway text PRIMARY KEY,
  rows bigint NOT NULL DEFAULT 0,
  bytes bigint NOT NULL DEFAULT 0,
  messages bigint NOT NULL DEFAULT 0,
  dropped bigint NOT NULL DEFAULT 0,
  last_ms bigint
);
INSERT INTO quarantine_usage (gateway) VALUES ('');
CREATE TABLE unrecoverable_media (
  gateway text NOT NULL,
  sha256 text NOT NULL,
  seq bigint NOT NULL,
  noted_ms bigint NOT NULL,
  PRIMARY KEY (gateway, sha256, seq)
);
CREATE TABLE head_forks (
  id bigserial PRIMARY KEY,
  gateway text NOT NULL,
  seq bigint NOT NULL,
  announced_hash text NOT NULL,
  stored_hash text NOT NULL,
  jws text NOT NULL,
  first_ms bigint NOT NULL,
  last_ms bigint NOT NULL,
  count bigint NOT NULL DEFAULT 1,
  UNIQUE (gateway, seq, announced_hash)
);
ALTER TABLE gateways ADD COLUMN head_forks bigint NOT NULL DEFAULT 0;
CREATE TABLE resend_open (
  gateway text NOT NULL,
  correlation text NOT NULL,
  from_seq bigint,
  to_seq bigint,
  media_seq bigint,
  media json,
  sent_ms bigint NOT NULL,
  PRIMARY KEY (gateway, correlation)
);
)sql",
    // Key validity in seqs (a key rotated away from signs nothing after its key_rotation record; the key it
    // names nothing up to it), and when a quarantine row was last re-examined against the enrolled keys.
    R"sql(
ALTER TABLE gateway_keys ADD COLUMN valid_from_seq bigint NOT NULL DEFAULT 1, ADD COLUMN valid_to_seq bigint;
UPDATE gateway_keys SET valid_from_seq = substr(source, 10)::bigint + 1 WHERE source ~ '^rotation:[0-9]+$';
UPDATE gateway_keys k SET valid_to_seq = r.seq FROM (SELECT gateway, substr(source, 10)::bigint AS seq FROM
  gateway_keys WHERE source ~ '^rotation:[0-9]+$' OFFSET 0) r JOIN records x ON x.gateway = r.gateway AND
  x.seq = r.seq WHERE r.gateway = k.gateway AND k.kid = x.kid;
ALTER TABLE quarantine ADD COLUMN reexamined_ms bigint;
)sql",
    // Recordings to central (file_intake.cpp): one row per (gateway, file) transfer, and the segments of an
    // open transfer whose bytes are fsync'd in its partial file. A held file is also a `media` row.
    R"sql(
CREATE TABLE file_uploads (
  gateway text NOT NULL,
  sha256 text NOT NULL,
  size bigint NOT NULL,
  segment_size bigint NOT NULL,
  name text NOT NULL DEFAULT '',
  seq bigint,
  state text NOT NULL,
  reason text,
  started_ms bigint NOT NULL,
  last_ms bigint NOT NULL,
  fin_ms bigint,
  held_ms bigint,
  received_bytes bigint NOT NULL DEFAULT 0,
  next_want_ms bigint NOT NULL DEFAULT 0,
  want_backoff_ms bigint NOT NULL DEFAULT 0,
  wants bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (gateway, sha256)
);
CREATE INDEX file_uploads_state ON file_uploads (state, next_want_ms);
CREATE TABLE chain_restarts (
  gateway text NOT NULL,
  seq bigint NOT NULL,
  kind text NOT NULL,
  reason text NOT NULL,
  jws_sha256 text NOT NULL,
  as_fork boolean NOT NULL,
  received_ms bigint NOT NULL,
  PRIMARY KEY (gateway, seq, jws_sha256)
);
CREATE TABLE file_segments (
  gateway text NOT NULL,
  sha256 text NOT NULL,
  off bigint NOT NULL,
  len bigint NOT NULL,
  PRIMARY KEY (gateway, sha256, off)
);
)sql",
    // Step 5: losses an operator accepted (checkpoint-central accept-loss): seq ranges and pictures the
    // gateway reported it no longer holds; the watermark passes them and receipts name them.
    R"sql(
CREATE TABLE accepted_losses (
  gateway text NOT NULL REFERENCES gateways(gateway),
  from_seq bigint NOT NULL,
  to_seq bigint NOT NULL,
  reason text NOT NULL,
  operator text NOT NULL,
  accepted_ms bigint NOT NULL,
  PRIMARY KEY (gateway, from_seq)
);
CREATE TABLE accepted_media_losses (
  gateway text NOT NULL REFERENCES gateways(gateway),
  sha256 text NOT NULL,
  reason text NOT NULL,
  operator text NOT NULL,
  accepted_ms bigint NOT NULL,
  PRIMARY KEY (gateway, sha256)
);
)sql",
    // Step 6: the last head announcement's JWS, so a record that arrives after an announcement naming
    // another hash for its seq is kept as a head fork with the signed announcement.
    R"sql(
ALTER TABLE gateways ADD COLUMN announced_jws text;
)sql",
    // Step 7: quarantine rows an operator discarded (checkpoint-central discard-quarantine): who, why, when,
    // how many; the rows themselves are gone.
    R"sql(
CREATE TABLE quarantine_discards (
  id bigserial PRIMARY KEY,
  gateway text NOT NULL,
  rows bigint NOT NULL,
  bytes bigint NOT NULL,
  ids text NOT NULL,
  seen_before_ms bigint,
  reason text NOT NULL,
  operator text NOT NULL,
  discarded_ms bigint NOT NULL
);
)sql",
    // Step 8: a record's JWS and body (2-4 kB together) are compressed with lz4 rather than pglz, which was
    // a fifth of PostgreSQL's time storing records (cpd-central-bench under perf). Only new values; on a
    // server built without lz4 (or older than PostgreSQL 14) the columns keep pglz.
    R"sql(
DO $$
BEGIN
  EXECUTE 'ALTER TABLE records ALTER COLUMN jws SET COMPRESSION lz4, ALTER COLUMN body SET COMPRESSION lz4';
  EXECUTE 'ALTER TABLE forks ALTER COLUMN jws SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
  RAISE NOTICE 'lz4 compression not available: records keep pglz';
END
$$;
)sql",
    // Step 9: the case-file elements a back office files a speeding case with (docs/records.md, "Case-file
    // elements"), as columns of speeding_cases: the site's codes and kilometre marker, the national codes,
    // the devices' serial numbers and calibration, the config in force. NULL for records sealed before them.
    R"sql(
CREATE OR REPLACE VIEW speeding_cases AS
  SELECT r.gateway, r.seq, r.gateway || ':' || r.seq AS id, r.time_ms, r.site ->> 'name' AS site_name,
         r.site ->> 'road' AS road, r.plate, r.plate_color, r.lane, r.speed_dkmh, r.limit_kmh,
         r.enforceable, r.reasons, r.seq <= g.watermark_seq AS in_custody, r.jws,
         r.site ->> 'utc_offset' AS utc_offset, r.site ->> 'area_code' AS area_code,
         r.site ->> 'road_code' AS road_code, r.site ->> 'km_marker' AS km_marker,
         r.site ->> 'carriageway' AS carriageway, r.site ->> 'direction' AS direction,
         r.body #>> '{codes,plate_type,code}' AS plate_type_code,
         r.body #>> '{codes,vehicle_type,code}' AS vehicle_type_code,
         r.body #>> '{radar_device,serial}' AS radar_serial,
         r.body #>> '{calibration,certificate}' AS calibration_certificate,
         r.body #>> '{camera_device,serial}' AS camera_serial, r.body ->> 'config_sha256' AS config_sha256
  FROM records r JOIN gateways g USING (gateway)
  WHERE r.type = 'speeding';
)sql",
    // Step 10: every head announcement central could not compare yet (its record not stored), not only the
    // last: a record is compared with each announcement naming its seq when it arrives, so an announcement a
    // later one replaced is still evidence. At most 64 rows per gateway (the highest seqs).
    R"sql(
CREATE TABLE head_announcements (
  gateway text NOT NULL,
  seq bigint NOT NULL,
  hash text NOT NULL,
  jws text NOT NULL,
  time_ms bigint NOT NULL,
  received_ms bigint NOT NULL,
  PRIMARY KEY (gateway, seq, hash)
);
INSERT INTO head_announcements (gateway, seq, hash, jws, time_ms, received_ms)
  SELECT g.gateway, g.announced_seq, g.announced_hash, g.announced_jws, COALESCE(g.announced_ms, 0), 0
  FROM gateways g WHERE g.announced_jws IS NOT NULL AND g.announced_hash IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM records r WHERE r.gateway = g.gateway AND r.seq = g.announced_seq);
)sql",
    // Step 11: an operator's choice of branch at a chain break or fork (checkpoint-central choose-branch,
    // branch_choice.cpp): which seqs the chosen branch took, what was set aside, who, why, when, and whether
    // it replaced records a receipt had confirmed.
    R"sql(
CREATE TABLE branch_choices (
  id bigserial PRIMARY KEY,
  gateway text NOT NULL REFERENCES gateways(gateway),
  from_seq bigint NOT NULL,
  to_seq bigint NOT NULL,
  tip_seq bigint NOT NULL,
  tip_sha256 text NOT NULL,
  set_aside bigint NOT NULL,
  set_aside_from bigint NOT NULL,
  set_aside_to bigint NOT NULL,
  past_receipt boolean NOT NULL,
  receipt_seq bigint NOT NULL,
  reason text NOT NULL,
  operator text NOT NULL,
  chosen_ms bigint NOT NULL
);
)sql",
    // Step 12: a chain break whose branch nobody holds (choose-branch --accept-break): the seqs at or below
    // the watermark a gateway said in a resend reply it no longer holds (asked for while a chain break stood;
    // central holds other records there), and the record a choice accepted as lost.
    R"sql(
CREATE TABLE branch_not_held (
  gateway text NOT NULL REFERENCES gateways(gateway),
  from_seq bigint NOT NULL,
  to_seq bigint NOT NULL,
  noted_ms bigint NOT NULL,
  PRIMARY KEY (gateway, from_seq)
);
ALTER TABLE branch_choices ADD COLUMN accepted_lost_seq bigint;
)sql",
    // Step 13: a choice of branch undoes the key rotations of the branch it sets aside. A key's range is
    // recomputed from what cut it: the operator's revoke-key bound (`revoked_to_seq`) and the key_rotation
    // records it signed still in the chain. At the upgrade every end already set is kept as such a bound: an
    // end set before schema 13 may hold an operator's revocation, which nothing recorded apart.
    // `widened_ms`: when a range last grew, which brings the quarantine's rows of that gateway to be examined
    // again, as an enrolment does.
    R"sql(
ALTER TABLE gateway_keys ADD COLUMN revoked_to_seq bigint, ADD COLUMN widened_ms bigint;
UPDATE gateway_keys SET revoked_to_seq = valid_to_seq WHERE valid_to_seq IS NOT NULL;
ALTER TABLE branch_choices ADD COLUMN undone_rotations text;
)sql",
    // Step 14: how many times a recording's whole file failed its SHA-256 since it was last opened or
    // requested: at kMaxFileMismatches (file_intake.h) the transfer ends `not_held` instead of being asked
    // for again for ever (the gateway's copy is damaged). And which rows of `forks` central set aside from
    // the chain (a followed replaced store's old branch, the branch an operator did not choose, a record in a
    // hole accepted as lost, a record under a retired key): their bytes arriving again stay set aside.
    R"sql(
ALTER TABLE file_uploads ADD COLUMN mismatches integer NOT NULL DEFAULT 0;
ALTER TABLE forks ADD COLUMN set_aside boolean NOT NULL DEFAULT false;
)sql",
    // Step 15: files no record names, bounded per gateway (feed.unnamed_max_mb; file_intake.h,
    // unnamed_bytes). `named`: a stored record (a picture: of any gateway; a recording: its `recording`
    // record) named the file when either was stored; it never goes back. Files held before this step count as
    // named; the partial index keeps the sum over a gateway's unnamed files as short as they are few.
    R"sql(
ALTER TABLE media ADD COLUMN named boolean NOT NULL DEFAULT true;
ALTER TABLE media ALTER COLUMN named SET DEFAULT false;
CREATE INDEX media_unnamed ON media (first_gateway) WHERE NOT named;
)sql",
    // Step 16: a gateway's `recording` record by the file it names. An init's `seq` is optional (informative,
    // docs/custody.md): without it, the transfer takes the seq of the stored record naming its file, or stays
    // at 0, named by any `recording` record of its gateway naming the file (file_intake.h,
    // kTransferNamedSql).
    R"sql(
CREATE INDEX records_recording_file ON records (gateway, (body->>'sha256')) WHERE type = 'recording';
)sql",
    // Step 17: the same index, of a 64-byte `sha256` only. A signed `recording` record naming a longer one
    // (an independent gateway's, 8 kB) could not go into a B-tree entry: PostgreSQL refused the record on
    // every resend, and custody stopped there. No transfer names such a file (an init's sha256 is 64 hex
    // digits).
    R"sql(
DROP INDEX records_recording_file;
CREATE INDEX records_recording_file ON records (gateway, (body->>'sha256'))
  WHERE type = 'recording' AND octet_length(body->>'sha256') = 64;
)sql",
};

// "1,2,3": ids for a PostgreSQL array literal ("{" + … + "}") or a column.
std::string joined_ids(const std::vector<std::int64_t>& ids) {
  std::string out;
  for (const std::int64_t id : ids) {
    out += (out.empty() ? "" : ",") + std::to_string(id);
  }
  return out;
}

std::mt19937_64& correlation_rng() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}
// How far seqs 1..`through` extend with ranges (from_seq and to_seq in columns 0 and 1, ordered by from_seq)
// that follow on without a gap: `through` itself when the first range starts beyond through + 1.
std::uint64_t contiguous_through(const PgResult& ranges, std::uint64_t through) {
  for (int row = 0; row < ranges.rows(); ++row) {
    if (static_cast<std::uint64_t>(ranges.integer(row, 0)) > through + 1) {
      break;
    }
    through = std::max(through, static_cast<std::uint64_t>(ranges.integer(row, 1)));
  }
  return through;
}
std::optional<std::string> opt_num(const std::optional<long long>& v) {
  return v ? std::optional<std::string>(std::to_string(*v)) : std::nullopt;
}

// A gateway's own word that its chain did not go on as before (docs/custody.md, "A replaced store"): the
// `audit` record `store_replaced` (the chain continues after a receipt on a replaced store), or `start` with
// `new_chain` (an empty store began again at seq 1). Empty kind: an ordinary record.
std::pair<std::string, std::string> chain_restart(const nlohmann::json& body) {
  // A member of another type than expected reads as absent (json::value would throw, and a signed record
  // would be dropped by the exception).
  const auto text = [&body](const char* name) {
    const auto it = body.find(name);
    return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (!body.is_object() || text("type") != "audit") {
    return {};
  }
  const std::string event = text("event");
  if (event == "store_replaced") {
    const auto lost = body.find("lost_after_seq");
    return {"store_replaced", text("reason") + (lost != body.end() && lost->is_number_unsigned()
                                                    ? " (records after seq " + lost->dump() + " lost)"
                                                    : std::string())};
  }
  if (event == "start" && body.contains("new_chain")) {
    const auto& why = body["new_chain"];
    return {"new_chain", why.is_string() ? why.get<std::string>() : why.dump()};
  }
  return {};
}

// A gateway's keys and their seq ranges (kid -> from, to; no end when unset).
std::map<std::string, std::pair<std::uint64_t, std::optional<std::uint64_t>>> gateway_key_ranges(
    PgConnection& conn, const std::string& gateway) {
  std::map<std::string, std::pair<std::uint64_t, std::optional<std::uint64_t>>> key_ranges;
  const PgResult k =
      conn.exec_prepared("SELECT kid, valid_from_seq, valid_to_seq FROM gateway_keys WHERE gateway = $1",
                         {gateway}, "reading a gateway's key ranges");
  for (int i = 0; i < k.rows(); ++i) {
    key_ranges[k.text(i, 0)] = {
        static_cast<std::uint64_t>(k.integer(i, 1)),
        k.is_null(i, 2) ? std::nullopt : std::optional<std::uint64_t>(k.integer(i, 2))};
  }
  return key_ranges;
}

}  // namespace

int CentralStore::schema_version() {
  return static_cast<int>(kSteps.size());
}

CentralStore::CentralStore(const std::string& conninfo, QuarantineBounds quarantine)
    : conn_(std::make_unique<PgConnection>(conninfo)), bounds_(quarantine) {
  migrate();
}

void CentralStore::migrate() {
  // Instances starting together: one migrates, the others wait and then find the schema current.
  conn_->exec("SELECT pg_advisory_lock(7262011)", "taking the migration lock");
  try {
    conn_->exec("CREATE TABLE IF NOT EXISTS central_schema (version integer NOT NULL)",
                "creating central_schema");
    PgResult v = conn_->exec("SELECT version FROM central_schema", "reading the schema version");
    int version = v.rows() == 0 ? 0 : static_cast<int>(v.integer(0, 0));
    if (v.rows() == 0) {
      conn_->exec("INSERT INTO central_schema VALUES (0)", "initialising the schema version");
    }
    const int latest = schema_version();
    if (version > latest) {
      throw PgError("postgres: the database schema is version " + std::to_string(version) +
                        ", newer than this checkpoint-central (" + std::to_string(latest) + ")",
                    "", false);
    }
    for (; version < latest; ++version) {
      PgTransaction tx(*conn_);
      conn_->exec(kSteps[static_cast<std::size_t>(version)], "migrating the schema");
      conn_->exec("UPDATE central_schema SET version = $1", {std::to_string(version + 1)},
                  "setting the version");
      tx.commit();
    }
  } catch (...) {
    conn_->exec("SELECT pg_advisory_unlock(7262011)", "releasing the migration lock");
    throw;
  }
  conn_->exec("SELECT pg_advisory_unlock(7262011)", "releasing the migration lock");
}

bool CentralStore::enroll(const std::string& gateway, const Ed25519PublicKey& public_key,
                          const std::string& source, std::int64_t now_ms, std::uint64_t from_seq) {
  if (!is_gateway_id(gateway)) {
    throw std::invalid_argument("\"" + printable(gateway) +
                                "\" is not a gateway id (1-63 of [a-z0-9-], first a letter or digit, as "
                                "checkpointd's gateway.id): no topic of the feed can name it");
  }
  PgTransaction tx(*conn_);
  conn_->exec("INSERT INTO gateways (gateway) VALUES ($1) ON CONFLICT DO NOTHING", {gateway},
              "adding a gateway");
  PgResult r = conn_->exec(
      "INSERT INTO gateway_keys (gateway, kid, public_key_pem, source, enrolled_ms, valid_from_seq) VALUES "
      "($1, "
      "$2, $3, $4, $5, $6) ON CONFLICT (gateway, kid) DO NOTHING",
      {gateway, public_key.kid(), public_key.pem(), source, std::to_string(now_ms),
       std::to_string(std::max<std::uint64_t>(from_seq, 1))},
      "enrolling a key");
  tx.commit();
  return r.affected() == 1;
}

std::optional<CentralStore::Revocation> CentralStore::revoke_key(const std::string& gateway,
                                                                 const std::string& kid,
                                                                 std::uint64_t after_seq) {
  PgTransaction tx(*conn_);
  const PgResult r = conn_->exec(
      "UPDATE gateway_keys SET valid_to_seq = least(coalesce(valid_to_seq, $3::bigint), $3::bigint), "
      "revoked_to_seq = least(coalesce(revoked_to_seq, $3::bigint), $3::bigint) WHERE gateway = $1 AND kid = "
      "$2 RETURNING valid_from_seq, valid_to_seq",
      {gateway, kid, std::to_string(after_seq)}, "revoking a key");
  if (r.rows() == 0) {
    return std::nullopt;
  }
  Revocation out;
  out.valid_from_seq = static_cast<std::uint64_t>(r.integer(0, 0));
  out.valid_to_seq = static_cast<std::uint64_t>(r.integer(0, 1));
  out.stored_after =
      conn_
          ->exec("SELECT count(*) FROM records WHERE gateway = $1 AND kid = $2 AND seq > $3::bigint",
                 {gateway, kid, std::to_string(out.valid_to_seq)}, "counting records under a revoked key")
          .integer(0, 0);
  tx.commit();
  return out;
}

void CentralStore::note_chain_restart(const IncomingRecord& rec, bool as_fork, const std::string& now,
                                      BatchOutcome& out, const std::string& followed) {
  auto [kind, reason] = chain_restart(rec.body);
  // Every gateway's first start says new_chain (no receipt to continue after): news only as a fork, when
  // central holds another chain's seq 1.
  if (kind.empty() || (kind == "new_chain" && !as_fork)) {
    return;
  }
  if (reason.size() > 500 || !is_valid_utf8(reason) || reason.find('\0') != std::string::npos) {
    reason = printable(reason, 500);
  }
  const PgResult r = conn_->exec(
      "INSERT INTO chain_restarts (gateway, seq, kind, reason, jws_sha256, as_fork, received_ms) VALUES ($1, "
      "$2, "
      "$3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
      {rec.gateway, std::to_string(rec.seq), kind, reason + followed, rec.jws_sha256,
       as_fork ? "true" : "false", now},
      "noting a chain restart");
  if (!followed.empty()) {
    if (r.affected() == 0) {  // noted already when it was stored: the reason gains what was followed
      conn_->exec("UPDATE chain_restarts SET reason = $4 WHERE gateway = $1 AND seq = $2 AND jws_sha256 = $3",
                  {rec.gateway, std::to_string(rec.seq), rec.jws_sha256, reason + followed},
                  "noting a chain restart");
    }
    out.chain_restarts.push_back(rec.gateway + ":" + std::to_string(rec.seq) + " " + kind + ": " + reason +
                                 followed);
  } else if (r.affected() == 1) {
    out.chain_restarts.push_back(
        rec.gateway + ":" + std::to_string(rec.seq) + " " + kind + ": " + reason +
        (as_fork ? " (arrived as a FORK of a seq central holds from the old chain)" : ""));
  }
}

TrustedKeys CentralStore::trusted_keys() {
  TrustedKeys out;
  PgResult r =
      conn_->exec("SELECT gateway, kid, public_key_pem, valid_from_seq, valid_to_seq FROM gateway_keys",
                  "reading trusted keys");
  for (int i = 0; i < r.rows(); ++i) {
    out[r.text(i, 0)].emplace(
        r.text(i, 1),
        TrustedKey{Ed25519PublicKey::from_pem(r.text(i, 2)), static_cast<std::uint64_t>(r.integer(i, 3)),
                   r.is_null(i, 4)
                       ? std::nullopt
                       : std::optional<std::uint64_t>(static_cast<std::uint64_t>(r.integer(i, 4)))});
  }
  return out;
}

std::map<std::pair<std::string, std::string>, std::pair<std::uint64_t, std::optional<std::uint64_t>>>
CentralStore::key_ranges(const std::set<std::pair<std::string, std::string>>& gateway_kids) {
  std::map<std::pair<std::string, std::string>, std::pair<std::uint64_t, std::optional<std::uint64_t>>> out;
  if (gateway_kids.empty()) {
    return out;
  }
  std::string sql =
      "SELECT gateway, kid, valid_from_seq, valid_to_seq FROM gateway_keys WHERE (gateway, kid) IN (";
  PgParams params;
  for (const auto& [gateway, kid] : gateway_kids) {
    sql += (params.empty() ? "($" : ", ($") + std::to_string(params.size() + 1) + ", $" +
           std::to_string(params.size() + 2) + ")";
    params.insert(params.end(), {gateway, kid});
  }
  PgResult r = conn_->exec(sql + ")", params, "reading key ranges");
  for (int i = 0; i < r.rows(); ++i) {
    out[{r.text(i, 0), r.text(i, 1)}] = {
        static_cast<std::uint64_t>(r.integer(i, 2)),
        r.is_null(i, 3) ? std::nullopt
                        : std::optional<std::uint64_t>(static_cast<std::uint64_t>(r.integer(i, 3)))};
  }
  return out;
}

std::vector<QuarantinedMessage> CentralStore::quarantine_to_reexamine(std::size_t limit) {
  // A row is looked at again only when a key of its gateway was enrolled after it was last examined (the
  // quarantining instance's key cache may have been up to 5 s old: hence the 10 s margin); whole payloads
  // only.
  PgResult r = conn_->exec(
      "SELECT q.id, q.gateway, q.topic, encode(q.payload, 'hex'), q.payload_sha256 FROM quarantine q JOIN "
      "(SELECT gateway, max(GREATEST(enrolled_ms, widened_ms)) AS enrolled_ms FROM gateway_keys GROUP BY "
      "gateway) k ON k.gateway = "
      "q.gateway WHERE q.topic IN ('evidence', 'media', 'head') AND octet_length(q.payload) = q.bytes AND "
      "COALESCE(q.reexamined_ms, q.last_seen_ms - 10000) < k.enrolled_ms ORDER BY q.id LIMIT $1",
      {std::to_string(static_cast<std::uint64_t>(limit))}, "finding quarantine rows to re-examine");
  std::vector<QuarantinedMessage> out;
  for (int i = 0; i < r.rows(); ++i) {
    const std::string hex = r.text(i, 3);
    std::string bytes;
    bytes.reserve(hex.size() / 2);
    const auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (std::size_t k = 0; k + 1 < hex.size(); k += 2) {
      bytes += static_cast<char>((nibble(hex[k]) << 4) | nibble(hex[k + 1]));
    }
    out.push_back(
        QuarantinedMessage{r.integer(i, 0), r.text(i, 1), r.text(i, 2), std::move(bytes), r.text(i, 4)});
  }
  return out;
}

std::int64_t CentralStore::latest_enrolment_ms() {
  PgResult r = conn_->exec("SELECT COALESCE(max(GREATEST(enrolled_ms, widened_ms)), 0) FROM gateway_keys",
                           "reading the latest enrolment");
  return r.integer(0, 0);
}

void CentralStore::mark_reexamined(const std::vector<std::int64_t>& ids, std::int64_t examined_ms) {
  if (ids.empty()) {
    return;
  }
  const std::string list = "{" + joined_ids(ids) + "}";
  conn_->exec("UPDATE quarantine SET reexamined_ms = $2 WHERE id = ANY($1::bigint[])",
              {list, std::to_string(examined_ms)}, "marking quarantine rows re-examined");
}

void CentralStore::resolve_quarantine(const std::vector<std::int64_t>& ids, const std::string& now,
                                      BatchOutcome& out) {
  if (ids.empty()) {
    return;
  }
  // The totals row first, as every transaction touching the quarantine takes it (no cycle between instances).
  conn_->exec("SELECT 1 FROM quarantine_usage WHERE gateway = '' FOR UPDATE",
              "locking the quarantine totals");
  const std::string list = "{" + joined_ids(ids) + "}";
  // Another instance may have taken the same rows: only what this transaction deletes is uncounted.
  PgResult d = conn_->exec(
      "WITH gone AS (DELETE FROM quarantine WHERE id = ANY($1::bigint[]) RETURNING gateway, "
      "octet_length(payload) AS bytes) SELECT gateway, count(*), COALESCE(sum(bytes), 0) FROM gone GROUP BY "
      "gateway ORDER BY gateway",
      {list}, "resolving quarantine rows");
  std::int64_t rows = 0;
  std::int64_t bytes = 0;
  for (int i = 0; i < d.rows(); ++i) {
    rows += d.integer(i, 1);
    bytes += d.integer(i, 2);
    conn_->exec(
        "UPDATE quarantine_usage SET rows = GREATEST(rows - $2, 0), bytes = GREATEST(bytes - $3, 0), "
        "last_ms = $4 WHERE gateway = $1",
        {d.text(i, 0), std::to_string(static_cast<std::int64_t>(d.integer(i, 1))),
         std::to_string(static_cast<std::int64_t>(d.integer(i, 2))), now},
        "uncounting resolved quarantine rows");
  }
  conn_->exec(
      "UPDATE quarantine_usage SET rows = GREATEST(rows - $1, 0), bytes = GREATEST(bytes - $2, 0) WHERE "
      "gateway = ''",
      {std::to_string(rows), std::to_string(bytes)}, "uncounting resolved quarantine rows");
  out.quarantine_resolved += static_cast<std::uint64_t>(rows);
}

CentralStore::QuarantineDiscard CentralStore::discard_quarantine(const std::string& gateway,
                                                                 const std::vector<std::int64_t>& ids,
                                                                 std::optional<std::int64_t> seen_before_ms,
                                                                 const std::string& reason,
                                                                 const std::string& by, std::int64_t now_ms) {
  PgTransaction tx(*conn_);
  const std::string now = std::to_string(now_ms);
  conn_->exec("SELECT 1 FROM quarantine_usage WHERE gateway = '' FOR UPDATE",
              "locking the quarantine totals");
  const std::optional<std::string> before =
      seen_before_ms ? std::optional<std::string>(std::to_string(*seen_before_ms)) : std::nullopt;
  PgResult sel = conn_->exec(
      "SELECT id, octet_length(payload) FROM quarantine WHERE gateway = $1 AND (NOT $2::boolean OR id = "
      "ANY($3::bigint[])) AND ($4::bigint IS NULL OR last_seen_ms < $4::bigint) ORDER BY id FOR UPDATE",
      {gateway, ids.empty() ? "false" : "true", "{" + joined_ids(ids) + "}", before},
      "choosing quarantine rows to discard");
  QuarantineDiscard d;
  std::vector<std::int64_t> chosen;
  for (int i = 0; i < sel.rows(); ++i) {
    chosen.push_back(sel.integer(i, 0));
    d.bytes += sel.integer(i, 1);
  }
  d.rows = static_cast<std::int64_t>(chosen.size());
  if (chosen.empty()) {
    return d;  // nothing matched: nothing changes, nothing is kept
  }
  BatchOutcome out;
  resolve_quarantine(chosen, now, out);  // deletes and uncounts them (per gateway and in total)
  conn_->exec(
      "INSERT INTO quarantine_discards (gateway, rows, bytes, ids, seen_before_ms, reason, operator, "
      "discarded_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
      {gateway, std::to_string(d.rows), std::to_string(d.bytes), joined_ids(chosen), before, reason, by, now},
      "keeping a quarantine discard");
  tx.commit();
  return d;
}

std::vector<std::pair<std::string, CentralStore::QuarantineDiscard>> CentralStore::expire_quarantine(
    std::int64_t now_ms, std::int64_t max_age_ms, const std::string& reason) {
  const std::int64_t cutoff = now_ms - max_age_ms;
  const PgResult gateways = conn_->exec(
      "SELECT DISTINCT gateway FROM quarantine WHERE last_seen_ms < $1::bigint ORDER BY gateway LIMIT 1000",
      {std::to_string(cutoff)}, "finding quarantine rows past their age");
  std::vector<std::pair<std::string, QuarantineDiscard>> out;
  for (int i = 0; i < gateways.rows(); ++i) {
    const std::string gateway = gateways.text(i, 0);
    QuarantineDiscard d = discard_quarantine(gateway, {}, cutoff, reason, "checkpoint-central", now_ms);
    if (d.rows > 0) {
      out.emplace_back(gateway, d);
    }
  }
  return out;
}

nlohmann::json CentralStore::quarantine_rows(const std::string& gateway, std::int64_t limit) {
  PgResult r = conn_->exec(
      "SELECT id, gateway, topic, seq, kid, reason, count, bytes, received_ms, last_seen_ms, reexamined_ms "
      "FROM "
      "quarantine WHERE ($1 = '' OR gateway = $1) ORDER BY last_seen_ms DESC, id DESC LIMIT $2",
      {gateway, std::to_string(limit)}, "listing the quarantine");
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < r.rows(); ++i) {
    rows.push_back(
        {{"id", r.integer(i, 0)},
         {"gateway", r.text(i, 1)},
         {"topic", r.text(i, 2)},
         {"seq", r.is_null(i, 3) ? nlohmann::json() : nlohmann::json(r.integer(i, 3))},
         {"kid", r.text(i, 4)},
         {"reason", r.text(i, 5)},
         {"count", r.integer(i, 6)},
         {"bytes", r.integer(i, 7)},
         {"first_seen_ms", r.integer(i, 8)},
         {"last_seen_ms", r.integer(i, 9)},
         {"reexamined_ms", r.is_null(i, 10) ? nlohmann::json() : nlohmann::json(r.integer(i, 10))}});
  }
  PgResult n = conn_->exec("SELECT count(*) FROM quarantine WHERE ($1 = '' OR gateway = $1)", {gateway},
                           "counting the quarantine");
  return {{"rows", rows}, {"total", n.integer(0, 0)}};
}

BatchOutcome CentralStore::store_batch(const Batch& batch, std::int64_t now_ms, const ReceiptPolicy& policy) {
  BatchOutcome out;
  std::set<std::string> touched;
  PgTransaction tx(*conn_);
  const std::string now = std::to_string(now_ms);

  // Replies first (a reply nobody asked for joins the quarantine), then the quarantine: its totals row is
  // the first lock this transaction takes, before any gateway row, so instances never wait in a cycle.
  std::vector<QuarantineEntry> quarantine = batch.quarantine;
  store_replies(batch.replies, now_ms, quarantine, out);
  store_quarantine(quarantine, now, out);
  resolve_quarantine(batch.resolved_quarantine, now, out);  // re-examined rows taken in (deleted)

  // In hash order: two instances storing the same pictures take their locks in one order.
  std::vector<const IncomingMedia*> media;
  for (const IncomingMedia& m : batch.media) {
    media.push_back(&m);
  }
  std::sort(media.begin(), media.end(),
            [](const IncomingMedia* a, const IncomingMedia* b) { return a->sha256 < b->sha256; });
  for (const IncomingMedia* pm : media) {
    const IncomingMedia& m = *pm;
    // Against the age-out removing this file (age_out_unnamed): held to the commit.
    conn_->exec_prepared(std::string("SELECT ") + kMediaLockSql, {m.sha256}, "locking a media file");
    PgResult r = conn_->exec_prepared(
        "INSERT INTO media (sha256, bytes, path, first_gateway, received_ms, named) VALUES ($1, $2, $3, $4, "
        "$5, EXISTS (SELECT 1 FROM record_media WHERE sha256 = $1)) ON CONFLICT (sha256) DO NOTHING",
        {m.sha256, std::to_string(m.bytes), m.path, m.gateway, now}, "storing a media file");
    if (r.affected() == 1 && !file_in_place(m.path, m.bytes)) {
      // Aged out (age_out_unnamed: a copy held before, its row gone before this insert) between writing or
      // finding it and this insert: not held. A record naming it waits for it and asks for it again.
      conn_->exec("DELETE FROM media WHERE sha256 = $1", {m.sha256}, "forgetting a picture that went");
      continue;
    }
    out.media_stored += static_cast<std::uint64_t>(r.affected());
    touched.insert(m.gateway);
  }

  // Records go in multi-row INSERTs (one round trip per kRowsPerInsert records); those that came back are
  // new, the others were held already: the same bytes (a duplicate) or other bytes (a fork). 50 rows (about
  // 250 kB of parameters) measured faster than 200 or 1000 in cpd-central-bench: PostgreSQL's parse and
  // memory for one huge statement cost more than the extra round trips.
  constexpr std::size_t kRowsPerInsert = 50;
  std::map<std::string, std::vector<std::uint64_t>> stored;  // gateway -> the seqs this batch stored
  const auto note_fresh = [&](const std::set<std::pair<std::string, std::uint64_t>>& fresh) {
    for (const auto& [gateway, seq] : fresh) {
      stored[gateway].push_back(seq);
    }
  };
  // Two copies of one (gateway, seq) in one INSERT: PostgreSQL stores the first and skips the other without a
  // word (ON CONFLICT DO NOTHING), so both would come back as stored, and a fork (a cloned gateway) would be
  // dropped unseen, its media rows and key enrolment taken as the record's. A batch's later copies of a seq
  // are therefore kept out of the INSERTs and compared with what is held afterwards (store_second_copy).
  std::vector<std::size_t> repeats;
  std::vector<IncomingRecord> firsts;
  bool filtered = false;  // firsts holds the records to insert (else all of batch.records)
  {
    // A copy central set aside (into forks: the old branch of a followed replaced store or of an operator's
    // choice, a record in a hole accepted as lost), arriving again (a QoS 1 redelivery, a late resend, a
    // replay): it stays set aside, a duplicate of that copy. Taken as new at its now free seq, it would push
    // the chosen branch's record there into forks and stop custody at a chain break again.
    const std::set<std::size_t> set_aside = copies_set_aside(batch.records);
    out.duplicates += set_aside.size();
    std::set<std::pair<std::string, std::uint64_t>> seen;
    for (std::size_t i = 0; i < batch.records.size(); ++i) {
      if (set_aside.count(i) == 0 && !seen.emplace(batch.records[i].gateway, batch.records[i].seq).second) {
        repeats.push_back(i);
      }
    }
    filtered = !repeats.empty() || !set_aside.empty();
    if (filtered) {
      std::size_t r = 0;
      for (std::size_t i = 0; i < batch.records.size(); ++i) {
        if (r < repeats.size() && repeats[r] == i) {
          ++r;
        } else if (set_aside.count(i) == 0) {
          firsts.push_back(batch.records[i]);
        }
      }
    }
  }
  const std::vector<IncomingRecord>& records = filtered ? firsts : batch.records;
  for (std::size_t from = 0; from < records.size(); from += kRowsPerInsert) {
    const std::size_t to = std::min(records.size(), from + kRowsPerInsert);
    const auto fresh = insert_records(records, from, to, now_ms, out);
    note_fresh(fresh);
    for (std::size_t i = from; i < to; ++i) {
      const IncomingRecord& rec = records[i];
      touched.insert(rec.gateway);
      if (fresh.count({rec.gateway, rec.seq}) != 0) {
        follow_replaced_store(rec, now_ms, out);
        continue;
      }
      note_fresh(store_second_copy(records, i, now_ms, out));
    }
  }
  for (const std::size_t i : repeats) {
    touched.insert(batch.records[i].gateway);
    note_fresh(store_second_copy(batch.records, i, now_ms, out));
  }
  for (const auto& [gateway, seqs] : stored) {
    const PgResult g = conn_->exec_prepared(
        "UPDATE gateways SET max_seq = GREATEST(max_seq, $2::bigint), last_seen_ms = $3 WHERE gateway = $1 "
        "RETURNING watermark_seq",
        {gateway, std::to_string(*std::max_element(seqs.begin(), seqs.end())), now},
        "noting a gateway's highest seq");
    if (g.rows() == 1) {
      set_aside_below_watermark(gateway, seqs, static_cast<std::uint64_t>(g.integer(0, 0)), now, out);
    }
    compare_with_announced(gateway, now, out);
  }

  store_heads(batch.heads, now, out);
  for (const AnnouncedHead& a : batch.heads) {
    touched.insert(a.head.gateway);
  }

  // Row locks in a fixed order (sorted set): two instances never wait on each other in a cycle.
  for (const std::string& gateway : touched) {
    advance(gateway, now_ms, policy, out);
  }
  tx.commit();
  return out;
}

std::set<std::size_t> CentralStore::copies_set_aside(const std::vector<IncomingRecord>& records) {
  std::set<std::size_t> out;
  if (records.empty()) {
    return out;
  }
  std::string gateways;
  std::string seqs;
  std::string hashes;
  for (const IncomingRecord& r : records) {
    // Gateway ids and hashes are checked names ([a-z0-9-], hex): safe inside an array literal.
    gateways += (gateways.empty() ? "\"" : ",\"") + r.gateway + "\"";  // quoted: an id "null" is no NULL
    seqs += (seqs.empty() ? "" : ",") + std::to_string(r.seq);
    hashes += (hashes.empty() ? "" : ",") + r.jws_sha256;
  }
  const PgResult found = conn_->exec_prepared(
      "SELECT r.i FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY AS r(gateway, seq, sha, "
      "i) "
      "WHERE EXISTS (SELECT 1 FROM forks f WHERE f.gateway = r.gateway AND f.seq = r.seq AND f.jws_sha256 = "
      "r.sha AND f.set_aside)",
      {"{" + gateways + "}", "{" + seqs + "}", "{" + hashes + "}"}, "looking for copies set aside");
  for (int row = 0; row < found.rows(); ++row) {
    out.insert(static_cast<std::size_t>(found.integer(row, 0) - 1));
  }
  return out;
}

std::set<std::pair<std::string, std::uint64_t>> CentralStore::store_second_copy(
    const std::vector<IncomingRecord>& records, std::size_t i, std::int64_t now_ms, BatchOutcome& out) {
  const IncomingRecord& rec = records[i];
  const std::string now = std::to_string(now_ms);
  PgResult held = conn_->exec_prepared("SELECT jws_sha256 FROM records WHERE gateway = $1 AND seq = $2",
                                       {rec.gateway, std::to_string(rec.seq)}, "comparing a second copy");
  if (held.rows() == 1 && held.text(0, 0) == rec.jws_sha256) {
    ++out.duplicates;  // a QoS 1 redelivery or a resend of what we hold: the same bytes
    return {};
  }
  if (held.rows() == 0 || follow_replaced_store(rec, now_ms, out)) {
    // Its seq is free now: the old chain's records after the receipt were set aside, by this record
    // (the gateway's store_replaced) or by one before it in this batch.
    const auto taken = insert_records(records, i, i + 1, now_ms, out);
    if (!taken.empty()) {
      return taken;
    }
    // Still taken: by a copy of the old chain this same batch stored (never set aside). A fork, below.
  }
  // Same (gateway, seq), other bytes, both signed by a trusted key: a fork. Both are kept, up to the bound.
  if (conn_->exec("SELECT count(*) FROM forks WHERE gateway = $1", {rec.gateway}, "counting forks")
          .integer(0, 0) >= kMaxForksPerGateway) {
    ++out.forks_dropped;
    out.forks_not_kept.push_back(rec.gateway + ":" + std::to_string(rec.seq));
    return {};
  }
  PgResult f = conn_->exec(
      "INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms) VALUES ($1, $2, $3, $4, $5) "
      "ON CONFLICT DO NOTHING",
      {rec.gateway, std::to_string(rec.seq), rec.jws, rec.jws_sha256, now}, "keeping a fork");
  if (f.affected() == 1) {
    ++out.forks;
    note_chain_restart(rec, true, now, out);
    out.fork_ids.push_back(rec.gateway + ":" + std::to_string(rec.seq));
    conn_->exec("UPDATE gateways SET forks = forks + 1 WHERE gateway = $1", {rec.gateway}, "counting a fork");
  }
  return {};
}

std::set<std::pair<std::string, std::uint64_t>> CentralStore::insert_records(
    const std::vector<IncomingRecord>& records, std::size_t from, std::size_t to, std::int64_t now_ms,
    BatchOutcome& out) {
  const std::string now = std::to_string(now_ms);
  std::string sql =
      "INSERT INTO records (gateway, seq, jws, jws_sha256, prev, kid, type, time_ms, created_ms, site, "
      "plate, "
      "plate_color, lane, speed_dkmh, limit_kmh, enforceable, reasons, body, received_ms) VALUES ";
  constexpr const char* kMediaInsert = "INSERT INTO record_media (gateway, seq, sha256) VALUES ";
  std::string media_sql = kMediaInsert;
  PgParams params;
  PgParams media_params;
  // A record may name any number of pictures: the rows go in statements of at most kMaxMediaParams
  // parameters (the wire protocol's bound is 65 535 a statement; libpq refuses more without asking the
  // server).
  constexpr std::size_t kMaxMediaParams = 30000;
  const auto flush_media = [&] {
    if (!media_params.empty()) {
      conn_->exec(media_sql + " ON CONFLICT DO NOTHING", media_params, "naming records' media");
    }
    media_sql = kMediaInsert;
    media_params.clear();
  };
  std::vector<std::vector<std::string>> pictures;  // of records[from + k]
  pictures.reserve(to - from);
  for (std::size_t i = from; i < to; ++i) {
    const IncomingRecord& rec = records[i];
    RecordColumns c = record_columns(rec.body);
    const std::size_t p = params.size();
    const auto n = [&](std::size_t k) { return "$" + std::to_string(p + k); };
    sql += (i == from ? "(" : ", (") + n(1) + ", " + n(2) + "::bigint, " + n(3) + ", " + n(4) + ", " + n(5) +
           ", " + n(6) + ", " + n(7) + ", " + n(8) + "::bigint, " + n(9) + "::bigint, " + n(10) + "::json, " +
           n(11) + ", " + n(12) + ", " + n(13) + "::bigint, " + n(14) + "::bigint, " + n(15) + "::bigint, " +
           n(16) + "::boolean, " + n(17) + "::json, " + n(18) + "::json, " + n(19) + "::bigint)";
    params.insert(
        params.end(),
        {rec.gateway, std::to_string(rec.seq), rec.jws, rec.jws_sha256, rec.prev, rec.kid, c.type,
         std::to_string(c.time_ms), std::to_string(c.created_ms), c.site, c.plate, c.plate_color,
         opt_num(c.lane), opt_num(c.speed_dkmh), opt_num(c.limit_kmh),
         c.enforceable ? std::optional<std::string>(*c.enforceable ? "true" : "false") : std::nullopt,
         c.reasons, rec.body_text.empty() ? rec.body.dump() : rec.body_text, now});
    pictures.push_back(std::move(c.pictures));
  }
  sql += " ON CONFLICT (gateway, seq) DO NOTHING RETURNING gateway, seq";
  // One text per row count (1..kRowsPerInsert): prepared once per connection.
  PgResult ins = conn_->exec_prepared(sql, params, "storing records");
  std::set<std::pair<std::string, std::uint64_t>> fresh;
  for (int r = 0; r < ins.rows(); ++r) {
    fresh.emplace(ins.text(r, 0), static_cast<std::uint64_t>(ins.integer(r, 1)));
  }
  out.stored += fresh.size();
  enrol_rotated_keys(*conn_, records, from, to, fresh, now_ms);  // key_rotation.h
  // The pictures a record names are those of the copy stored: a second copy (a duplicate names the same; a
  // fork, e.g. a cloned gateway's, may name others) adds none, or the held record would wait for pictures it
  // never named.
  // The files these records name are named now (media.named, schema 15): pictures, and the file of a
  // `recording` record. In this transaction: no write of its own (file_intake.h, unnamed_bytes).
  std::string named;
  for (std::size_t i = from; i < to; ++i) {
    const IncomingRecord& rec = records[i];
    if (fresh.count({rec.gateway, rec.seq}) == 0) {
      continue;
    }
    note_chain_restart(rec, false, now, out);
    for (const std::string& sha : pictures[i - from]) {
      if (media_params.size() + 3 > kMaxMediaParams) {
        flush_media();
      }
      const std::size_t m = media_params.size();
      media_sql += (media_params.empty() ? "($" : ", ($") + std::to_string(m + 1) + ", $" +
                   std::to_string(m + 2) + "::bigint, $" + std::to_string(m + 3) + ")";
      media_params.insert(media_params.end(), {rec.gateway, std::to_string(rec.seq), sha});
      named += (named.empty() ? "" : ",") + sha;
    }
    const auto file = rec.body.is_object() ? rec.body.find("sha256") : rec.body.end();
    if (file != rec.body.end() && file->is_string() && is_sha256_hex(file->get_ref<const std::string&>()) &&
        rec.body.value("type", nlohmann::json()) == "recording") {
      named += (named.empty() ? "" : ",") + file->get<std::string>();
    }
  }
  flush_media();
  if (!named.empty()) {
    conn_->exec_prepared("UPDATE media SET named = true WHERE sha256 = ANY($1::text[]) AND NOT named",
                         {"{" + named + "}"}, "marking named files");
  }
  return fresh;
}

void CentralStore::set_aside_below_watermark(const std::string& gateway,
                                             const std::vector<std::uint64_t>& seqs, std::uint64_t watermark,
                                             const std::string& now, BatchOutcome& out) {
  // Custody passed every seq up to the watermark: a seq free there is one an operator accepted as lost
  // (accept-loss, choose-branch --accept-break), and receipts name it so. A record arriving there later (a
  // redelivery of a record set aside, the lost record after all) must not fill it silently: it is kept in
  // forks, alarmed like a fork, and the operator decides (choose-branch).
  std::string below;
  for (const std::uint64_t seq : seqs) {
    if (seq <= watermark) {
      below += (below.empty() ? "" : ",") + std::to_string(seq);
    }
  }
  if (below.empty()) {
    return;
  }
  const char* what = "setting aside a record in a hole accepted as lost";
  const PgResult moved = conn_->exec(
      "WITH moved AS (DELETE FROM records WHERE gateway = $1 AND seq = ANY($2::bigint[]) RETURNING gateway, "
      "seq, jws, jws_sha256), kept AS (INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms, "
      "set_aside) "
      "SELECT gateway, seq, jws, jws_sha256, $3::bigint, true FROM moved ON CONFLICT (gateway, seq, "
      "jws_sha256) "
      "DO UPDATE SET set_aside = true) SELECT seq FROM moved",
      {gateway, "{" + below + "}", now}, what);
  conn_->exec("DELETE FROM record_media WHERE gateway = $1 AND seq = ANY($2::bigint[])",
              {gateway, "{" + below + "}"}, what);
  for (int i = 0; i < moved.rows(); ++i) {
    ++out.forks;
    out.stored -= out.stored > 0 ? 1 : 0;
    out.late_in_lost_holes.push_back(gateway + ":" + moved.text(i, 0));
    conn_->exec("UPDATE gateways SET forks = forks + 1 WHERE gateway = $1", {gateway}, "counting a fork");
  }
}

void CentralStore::forget_other_branch_after(const std::string& gateway, std::uint64_t n, const char* what) {
  const PgParams gn{gateway, std::to_string(n)};
  // Announcements after N were about the other branch: no evidence about the one followed now.
  conn_->exec("DELETE FROM head_announcements WHERE gateway = $1 AND seq > $2::bigint", gn, what);
  // What was reported lost, or an operator accepted as lost, after N was about the other branch too.
  for (const char* table : {"unrecoverable", "accepted_losses", "branch_not_held"}) {
    conn_->exec(std::string("DELETE FROM ") + table + " WHERE gateway = $1 AND from_seq > $2::bigint", gn,
                what);
    conn_->exec(
        std::string("UPDATE ") + table + " SET to_seq = $2 WHERE gateway = $1 AND to_seq > $2::bigint", gn,
        what);
  }
  // And a resend request open for seqs after N, or for pictures (a media request spans the records after its
  // media_seq): its reply, arriving late, would speak of the other branch (its not_held becoming losses of
  // this one). Without its request the reply is not believed (quarantined as unsolicited); the gaps are
  // asked for again.
  conn_->exec("DELETE FROM resend_open WHERE gateway = $1 AND (to_seq > $2::bigint OR media_seq IS NOT NULL)",
              gn, what);
}

bool CentralStore::follow_replaced_store(const IncomingRecord& rec, std::int64_t now_ms, BatchOutcome& out) {
  // The gateway's store_replaced record at N+1 continues its chain after central's receipt through N. Records
  // of the old store after N that central held (received, never confirmed) are another branch of the same
  // seqs: they are set aside (kept in forks), so the continued chain takes those seqs. Only when central
  // never confirmed anything after N (receipt_seq <= N) and record N is the one the new chain links to.
  // Records this batch stored (received_ms = now) stay: they came after the replacement, from the new store.
  if (chain_restart(rec.body).first != "store_replaced" || rec.seq < 2) {
    return false;
  }
  const std::uint64_t n = rec.seq - 1;
  const auto from = rec.body.find("continued_from_seq");
  const auto head = rec.body.find("continued_from_head");
  if (from == rec.body.end() || !from->is_number_unsigned() || from->get<std::uint64_t>() != n ||
      head == rec.body.end() || !head->is_string() || head->get_ref<const std::string&>() != rec.prev) {
    return false;
  }
  const PgResult g = conn_->exec("SELECT receipt_seq FROM gateways WHERE gateway = $1 FOR UPDATE",
                                 {rec.gateway}, "locking a gateway");
  if (g.rows() == 0 || static_cast<std::uint64_t>(g.integer(0, 0)) > n) {
    return false;  // central confirmed records of the old chain after N: an operator's matter (a fork)
  }
  const PgResult base =
      conn_->exec("SELECT jws_sha256 FROM records WHERE gateway = $1 AND seq = $2",
                  {rec.gateway, std::to_string(n)}, "reading the record a replaced store continues");
  if (base.rows() != 1 || base.text(0, 0) != rec.prev) {
    return false;
  }
  // The old chain's records: stored before this batch, and sealed before the store_replaced record (the old
  // store was lost before the new one started). The second test keeps the continued chain's records that
  // another instance stored a moment earlier (another batch) from being taken for the old chain's.
  const auto created = rec.body.find("created_ms");
  const std::int64_t replaced_created =
      created != rec.body.end() && created->is_number_integer() ? created->get<std::int64_t>() : INT64_MAX;
  const PgResult moved = conn_->exec(
      "WITH moved AS (DELETE FROM records WHERE gateway = $1 AND seq > $2::bigint AND jws_sha256 <> $3 AND "
      "received_ms <> $4::bigint AND created_ms < $5::bigint RETURNING gateway, seq, jws, jws_sha256), "
      "kept AS (INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms, set_aside) "
      "SELECT gateway, seq, jws, jws_sha256, $4::bigint, true FROM moved ON CONFLICT (gateway, seq, "
      "jws_sha256) "
      "DO UPDATE SET set_aside = true), "
      // Only the set-aside records' pictures: the continued chain's records this batch stored keep theirs.
      "unnamed AS (DELETE FROM record_media rm USING moved WHERE rm.gateway = moved.gateway AND rm.seq = "
      "moved.seq) "
      "SELECT count(*), min(seq), max(seq) FROM moved",
      {rec.gateway, std::to_string(n), rec.jws_sha256, std::to_string(now_ms),
       std::to_string(replaced_created)},
      "setting aside the old chain after a receipt");
  if (moved.integer(0, 0) == 0) {
    return false;  // central held nothing of the old store after N: the ordinary case
  }
  const char* what = "following a replaced store";
  forget_other_branch_after(rec.gateway, n, what);
  // A head announcement of the continued chain handled before this record was compared with the old chain's
  // record at its seq, now set aside: no fork of the chain followed. It goes back among the announcements
  // (and is compared with the continued chain's record when that is stored), and leaves the gateway's fork
  // count.
  const PgResult unforked = conn_->exec(
      "WITH f AS (DELETE FROM head_forks f WHERE f.gateway = $1 AND f.seq > $2::bigint AND NOT EXISTS "
      "(SELECT 1 "
      "FROM records r WHERE r.gateway = f.gateway AND r.seq = f.seq AND r.jws_sha256 = f.stored_hash) "
      "RETURNING f.seq, f.announced_hash, f.jws, f.first_ms), "
      "back AS (INSERT INTO head_announcements (gateway, seq, hash, jws, time_ms, received_ms) SELECT $1, "
      "seq, "
      "announced_hash, jws, first_ms, first_ms FROM f ON CONFLICT (gateway, seq, hash) DO NOTHING) "
      "SELECT count(*) FROM f",
      {rec.gateway, std::to_string(n)}, what);
  std::string withdrawn;
  if (const long long back = unforked.integer(0, 0); back > 0) {
    conn_->exec("UPDATE gateways SET head_forks = GREATEST(head_forks - $2::bigint, 0) WHERE gateway = $1",
                {rec.gateway, std::to_string(back)}, what);
    withdrawn = "; " + std::to_string(back) +
                " head fork(s) noted against those records withdrawn (the announcements are compared again)";
  }
  // Custody, the highest seq, the announced head and a chain break fall back to N (the walk goes on from
  // there); the old chain's announcement is no evidence about the new one.
  conn_->exec(
      "UPDATE gateways SET watermark_hash = CASE WHEN watermark_seq > $2::bigint THEN $3 ELSE watermark_hash "
      "END, watermark_seq = LEAST(watermark_seq, $2::bigint), max_seq = LEAST(max_seq, $2::bigint), "
      "announced_hash = CASE WHEN announced_seq > $2::bigint THEN $3 ELSE announced_hash END, "
      "announced_seq = LEAST(announced_seq, $2::bigint), announced_jws = NULL, "
      "chain_break_seq = NULL, chain_break_reason = NULL, "
      "gap_since_ms = NULL, request_backoff_ms = 0, next_request_ms = 0 WHERE gateway = $1",
      {rec.gateway, std::to_string(n), rec.prev}, what);
  note_chain_restart(rec, true, std::to_string(now_ms), out,
                     " -- followed: the old chain's " + moved.text(0, 0) +
                         " record(s) central held after seq " + std::to_string(n) + " (seq " +
                         moved.text(0, 1) + ".." + moved.text(0, 2) +
                         ", never confirmed) set aside into forks" + withdrawn);
  return true;
}

void CentralStore::note_branch_not_held(const std::string& gateway,
                                        std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges,
                                        const std::string& now) {
  // Kept apart from `unrecoverable` (central holds records at these seqs: nothing is missing from its chain);
  // what the branch a chain break follows on from lacks there, nobody holds (choose-branch --accept-break).
  // At most 1000 ranges a reply, as for unrecoverable.
  std::sort(ranges.begin(), ranges.end());
  if (ranges.size() > 1000) {
    ranges.resize(1000);
  }
  for (const auto& [lo, hi] : ranges) {
    conn_->exec(
        "INSERT INTO branch_not_held (gateway, from_seq, to_seq, noted_ms) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (gateway, from_seq) DO UPDATE SET to_seq = GREATEST(branch_not_held.to_seq, "
        "EXCLUDED.to_seq), noted_ms = EXCLUDED.noted_ms",
        {gateway, std::to_string(lo), std::to_string(hi), now},
        "noting branch records a gateway no longer holds");
  }
}

std::optional<std::uint64_t> CentralStore::gateway_lacks(const std::string& gateway, std::uint64_t seq) {
  // The ranges the gateway said it no longer holds, at or below `seq`, highest first: the run that covers
  // `seq` and goes down without a gap starts at the returned seq.
  const PgResult r = conn_->exec(
      "SELECT from_seq, to_seq FROM (SELECT from_seq, to_seq FROM branch_not_held WHERE gateway = $1 UNION "
      "ALL "
      "SELECT from_seq, to_seq FROM unrecoverable WHERE gateway = $1) x WHERE from_seq <= $2::bigint ORDER "
      "BY "
      "to_seq DESC LIMIT 1000",
      {gateway, std::to_string(seq)}, "reading what a gateway no longer holds");
  std::optional<std::uint64_t> from;  // the lowest seq of the run so far
  for (int i = 0; i < r.rows(); ++i) {
    const auto lo = static_cast<std::uint64_t>(r.integer(i, 0));
    const auto hi = static_cast<std::uint64_t>(r.integer(i, 1));
    if (!from && hi < seq) {
      return std::nullopt;  // the range reaching highest ends below `seq`: none covers it
    }
    if (from && hi + 1 < *from) {
      break;  // a gap: the run ends
    }
    from = from ? std::min(*from, lo) : lo;
  }
  return from;
}

void CentralStore::store_replies(const std::vector<IncomingReply>& replies, std::int64_t now_ms,
                                 std::vector<QuarantineEntry>& unsolicited, BatchOutcome& out) {
  const std::string now = std::to_string(now_ms);
  for (const IncomingReply& r : replies) {
    std::optional<PgResult> open;
    if (!r.correlation.empty()) {
      open = conn_->exec(
          "SELECT from_seq, to_seq, media_seq, media FROM resend_open WHERE gateway = $1 AND correlation = "
          "$2",
          {r.gateway, r.correlation}, "matching a resend reply");
    }
    if (!open || open->rows() == 0) {
      // Unsigned, and no request of ours: believing it could mark any range as lost. Kept aside, counted.
      ++out.unsolicited_replies;
      unsolicited.push_back(QuarantineEntry{
          r.gateway, "resend/response", std::nullopt, "", r.payload, sha256_hex(r.payload), r.payload.size(),
          "resend reply matching no open request of this central", true, 1});
      continue;
    }
    if (!r.reply.error.empty()) {
      out.reply_errors.push_back(r.gateway + ": " + r.reply.error.substr(0, 200));
      continue;
    }
    if (!open->is_null(0, 0)) {
      note_seqs_not_held(r, *open, now, out);
    }
    if (!open->is_null(0, 3) && !r.reply.media_not_held.empty()) {
      note_media_not_held(r, *open, now, out);
    }
  }
}

void CentralStore::note_seqs_not_held(const IncomingReply& r, const PgResult& open, const std::string& now,
                                      BatchOutcome& out) {
  // Only what was asked and is not in custody: each range is clipped to the request's range and above the
  // watermark (a request below a chain break asks for records central holds), then merged.
  const PgResult wm = conn_->exec("SELECT watermark_seq FROM gateways WHERE gateway = $1", {r.gateway},
                                  "reading the watermark");
  const auto from_req = static_cast<std::uint64_t>(open.integer(0, 0));
  const auto lo_req =
      std::max(from_req, wm.rows() == 1 ? static_cast<std::uint64_t>(wm.integer(0, 0)) + 1 : 0);
  const auto hi_req = static_cast<std::uint64_t>(open.integer(0, 1));
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> below;  // at or below the watermark
  for (auto [lo, hi] : r.reply.not_held) {
    if (std::max(lo, from_req) < lo_req && std::max(lo, from_req) <= std::min(hi, hi_req)) {
      below.emplace_back(std::max(lo, from_req), std::min({hi, hi_req, lo_req - 1}));
    }
    lo = std::max(lo, lo_req);
    hi = std::min(hi, hi_req);
    if (lo <= hi) {
      ranges.emplace_back(lo, hi);
    }
  }
  note_branch_not_held(r.gateway, std::move(below), now);
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<std::uint64_t, std::uint64_t>> merged;
  for (const auto& range : ranges) {
    if (!merged.empty() && range.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, range.second);
    } else {
      merged.push_back(range);
    }
  }
  // A gateway's store has few holes; a reply naming more ranges is cut (the rest is asked for again).
  constexpr std::size_t kMaxRangesPerReply = 1000;
  if (merged.size() > kMaxRangesPerReply) {
    merged.resize(kMaxRangesPerReply);
  }
  for (const auto& [lo, hi] : merged) {
    // Reported (logged, counted) only when it is news: a new range, or one that grew. The same reply to each
    // repeated request changes nothing.
    const PgResult noted = conn_->exec(
        "INSERT INTO unrecoverable (gateway, from_seq, to_seq, noted_ms) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (gateway, from_seq) DO UPDATE SET to_seq = EXCLUDED.to_seq WHERE unrecoverable.to_seq < "
        "EXCLUDED.to_seq",
        {r.gateway, std::to_string(lo), std::to_string(hi), now}, "noting records a gateway no longer holds");
    if (noted.affected() == 0) {
      continue;
    }
    out.unrecoverable.push_back(r.gateway + ": seq " + std::to_string(lo) + ".." + std::to_string(hi));
  }
}

void CentralStore::note_media_not_held(const IncomingReply& r, const PgResult& open, const std::string& now,
                                       BatchOutcome& out) {
  std::set<std::string> asked;
  const nlohmann::json media = nlohmann::json::parse(open.text(0, 3), nullptr, false);
  if (media.is_array()) {
    for (const auto& m : media) {
      if (m.is_string()) {
        asked.insert(m.get<std::string>());
      }
    }
  }
  // The request asked for the pictures of the records from media_seq on: each is noted with the first of
  // them naming it.
  const std::string first = std::to_string(static_cast<std::uint64_t>(open.integer(0, 2)));
  for (const std::string& sha : r.reply.media_not_held) {
    if (asked.count(sha) == 0) {
      continue;
    }
    const PgResult named = conn_->exec(
        "SELECT coalesce(min(seq), $3::bigint) FROM record_media WHERE gateway = $1 AND sha256 = $2 AND seq "
        ">= "
        "$3::bigint",
        {r.gateway, sha, first}, "finding the record naming a picture");
    const std::string seq = named.text(0, 0);
    PgResult ins = conn_->exec(
        "INSERT INTO unrecoverable_media (gateway, sha256, seq, noted_ms) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING",
        {r.gateway, sha, seq, now}, "noting a picture a gateway no longer holds");
    if (ins.affected() == 1) {
      ++out.unrecoverable_media;
      out.unrecoverable.push_back(r.gateway + ": picture " + sha + " of seq " + seq);
    }
  }
}

namespace {

// A gateway's quarantine usage as store_quarantine sees it: read once per batch, then what the batch adds.
struct Usage {
  std::int64_t rows = 0;
  std::int64_t bytes = 0;
  bool exists = false;
  bool enrolled = false;
  std::int64_t added_rows = 0;
  std::int64_t added_bytes = 0;
  std::int64_t messages = 0;
  std::int64_t dropped = 0;
};

// Keeps `q` in the quarantine, or counts a copy on its row; true when a new row was kept.
bool insert_quarantined(PgConnection& conn, const QuarantineEntry& q, const std::string& now) {
  // The text column only for a whole payload that PostgreSQL text can hold (UTF-8, no NUL).
  const bool text =
      q.payload.size() == q.bytes && is_valid_utf8(q.payload) && q.payload.find('\0') == std::string::npos;
  PgResult ins = conn.exec(
      "INSERT INTO quarantine (gateway, topic, seq, kid, jws, payload, payload_sha256, bytes, reason, "
      "received_ms, last_seen_ms, count) VALUES ($1, $2, $3, $4, $5, $6::bytea, $7, $8, $9, $10, $10, "
      "$11) "
      "ON CONFLICT (gateway, topic, payload_sha256) DO UPDATE SET count = quarantine.count + "
      "EXCLUDED.count, last_seen_ms = EXCLUDED.last_seen_ms, reason = EXCLUDED.reason "
      "RETURNING (xmax = 0)",
      {q.gateway, q.topic, q.seq ? std::optional<std::string>(std::to_string(*q.seq)) : std::nullopt, q.kid,
       text ? std::optional<std::string>(q.payload) : std::nullopt, "\\x" + hex_lower(q.payload),
       q.payload_sha256, std::to_string(q.bytes), q.reason, now, std::to_string(q.count)},
      "quarantining a message");
  return ins.rows() == 1 && ins.boolean(0, 0);
}

// What a batch added to the quarantine, into quarantine_usage: the totals row and each gateway's.
void count_quarantine_usage(PgConnection& conn, const std::map<std::string, Usage>& usage, const Usage& all,
                            const std::string& now) {
  conn.exec(
      "UPDATE quarantine_usage SET rows = rows + $1, bytes = bytes + $2, messages = messages + $3, dropped = "
      "dropped + $4, last_ms = $5 WHERE gateway = ''",
      {std::to_string(all.added_rows), std::to_string(all.added_bytes), std::to_string(all.messages),
       std::to_string(all.dropped), now},
      "counting the quarantine");
  for (const auto& [gateway, u] : usage) {
    if (!u.exists && !u.enrolled && u.added_rows == 0) {
      continue;  // a name nobody enrolled that got no row: counted in the totals only (names are unbounded)
    }
    conn.exec(
        "INSERT INTO quarantine_usage (gateway, rows, bytes, messages, dropped, last_ms) VALUES ($1, $2, $3, "
        "$4, $5, $6) ON CONFLICT (gateway) DO UPDATE SET rows = quarantine_usage.rows + EXCLUDED.rows, bytes "
        "= "
        "quarantine_usage.bytes + EXCLUDED.bytes, messages = quarantine_usage.messages + EXCLUDED.messages, "
        "dropped = quarantine_usage.dropped + EXCLUDED.dropped, last_ms = EXCLUDED.last_ms",
        {gateway, std::to_string(u.added_rows), std::to_string(u.added_bytes), std::to_string(u.messages),
         std::to_string(u.dropped), now},
        "counting a gateway's quarantine");
  }
}

}  // namespace

void CentralStore::store_quarantine(const std::vector<QuarantineEntry>& entries, const std::string& now,
                                    BatchOutcome& out) {
  if (entries.empty()) {
    return;
  }
  PgResult t = conn_->exec("SELECT rows, bytes FROM quarantine_usage WHERE gateway = '' FOR UPDATE",
                           "locking the quarantine totals");
  std::int64_t total_rows = t.rows() == 1 ? t.integer(0, 0) : 0;
  std::int64_t total_bytes = t.rows() == 1 ? t.integer(0, 1) : 0;
  std::map<std::string, Usage> usage;
  Usage all;
  for (const QuarantineEntry& q : entries) {
    auto [it, first] = usage.try_emplace(q.gateway);
    Usage& u = it->second;
    if (first) {
      PgResult r = conn_->exec("SELECT rows, bytes FROM quarantine_usage WHERE gateway = $1", {q.gateway},
                               "reading a gateway's quarantine usage");
      if (r.rows() == 1) {
        u.rows = r.integer(0, 0);
        u.bytes = r.integer(0, 1);
        u.exists = true;
      }
    }
    u.enrolled = u.enrolled || q.enrolled;
    const auto copies = static_cast<std::int64_t>(q.count);
    const auto kept = static_cast<std::int64_t>(q.payload.size());
    u.messages += copies;
    all.messages += copies;
    const bool room = u.rows + 1 <= bounds_.rows_per_gateway && u.bytes + kept <= bounds_.bytes_per_gateway &&
                      total_rows + 1 <= bounds_.rows && total_bytes + kept <= bounds_.bytes;
    if (room) {
      if (insert_quarantined(*conn_, q, now)) {
        ++u.rows;
        u.bytes += kept;
        ++u.added_rows;
        u.added_bytes += kept;
        ++total_rows;
        total_bytes += kept;
        ++all.added_rows;
        all.added_bytes += kept;
        ++out.quarantined;
        out.quarantine_duplicates += q.count - 1;
      } else {
        out.quarantine_duplicates += q.count;
      }
      continue;
    }
    // Full: a copy of what is kept still counts on its row; anything new is only counted.
    PgResult upd = conn_->exec(
        "UPDATE quarantine SET count = count + $4, last_seen_ms = $5 WHERE gateway = $1 AND topic = $2 AND "
        "payload_sha256 = $3",
        {q.gateway, q.topic, q.payload_sha256, std::to_string(q.count), now}, "counting a quarantined copy");
    if (upd.affected() == 1) {
      out.quarantine_duplicates += q.count;
    } else {
      out.quarantine_dropped += q.count;
      u.dropped += copies;
      all.dropped += copies;
    }
  }
  count_quarantine_usage(*conn_, usage, all, now);
}

void CentralStore::recount_quarantine() {
  PgTransaction tx(*conn_);
  conn_->exec("SELECT 1 FROM quarantine_usage WHERE gateway = '' FOR UPDATE",
              "locking the quarantine totals");
  conn_->exec(
      "UPDATE quarantine_usage u SET rows = COALESCE(q.rows, 0), bytes = COALESCE(q.bytes, 0) FROM "
      "(SELECT g.gateway, x.rows, x.bytes FROM quarantine_usage g LEFT JOIN (SELECT gateway, count(*) AS "
      "rows, "
      "sum(octet_length(payload)) AS bytes FROM quarantine GROUP BY gateway) x ON x.gateway = g.gateway) q "
      "WHERE q.gateway = u.gateway AND u.gateway <> ''",
      "recounting the quarantine");
  conn_->exec(
      "UPDATE quarantine_usage SET rows = (SELECT count(*) FROM quarantine), bytes = (SELECT "
      "COALESCE(sum(octet_length(payload)), 0) FROM quarantine) WHERE gateway = ''",
      "recounting the quarantine totals");
  tx.commit();
}

void CentralStore::store_heads(const std::vector<AnnouncedHead>& heads, const std::string& now,
                               BatchOutcome& out) {
  for (const AnnouncedHead& a : heads) {
    const custody::Head& h = a.head;
    if (h.seq > 0) {
      // A signed head naming another hash for a seq we hold (at or below the watermark too): two chains
      // under one gateway key. Kept and alarmed; the announced head does not move to it.
      PgResult held = conn_->exec_prepared("SELECT jws_sha256 FROM records WHERE gateway = $1 AND seq = $2",
                                           {h.gateway, std::to_string(h.seq)}, "comparing an announced head");
      if (held.rows() == 1 && held.text(0, 0) != h.head) {
        note_head_fork(h.gateway, h.seq, h.head, held.text(0, 0), a.jws, now, out);
        continue;
      }
      if (held.rows() == 0) {
        keep_announcement(a, now);
      }
    }
    conn_->exec_prepared(
        "UPDATE gateways SET announced_seq = $2, announced_hash = $3, announced_ms = $4, last_seen_ms = $5, "
        "announced_jws = $6 WHERE gateway = $1 AND announced_seq <= $2",
        {h.gateway, std::to_string(h.seq), h.head, std::to_string(h.time_ms), now, a.jws},
        "noting an announced head");
  }
}

void CentralStore::keep_announcement(const AnnouncedHead& a, const std::string& now) {
  const custody::Head& h = a.head;
  conn_->exec_prepared(
      "INSERT INTO head_announcements (gateway, seq, hash, jws, time_ms, received_ms) VALUES ($1, $2, $3, "
      "$4, "
      "$5, $6) ON CONFLICT (gateway, seq, hash) DO UPDATE SET received_ms = EXCLUDED.received_ms",
      {h.gateway, std::to_string(h.seq), h.head, a.jws, std::to_string(h.time_ms), now},
      "keeping a head announcement");
  // Bounded: the 64 highest seqs (latest first among equal seqs) per gateway.
  conn_->exec_prepared(
      "DELETE FROM head_announcements WHERE ctid IN (SELECT ctid FROM head_announcements WHERE gateway = $1 "
      "ORDER BY seq DESC, received_ms DESC OFFSET $2)",
      {h.gateway, std::to_string(std::uint64_t{kMaxKeptAnnouncements})}, "bounding the head announcements");
}

void CentralStore::compare_with_announced(const std::string& gateway, const std::string& now,
                                          BatchOutcome& out) {
  // The announcements came first (store_heads compares those that come after the record): each one naming a
  // seq now stored is compared with the record and then dropped, whatever the outcome.
  // Driven from the announcements (at most 64): each looks up its record by primary key. Joined the other way
  // round, the planner scanned all the gateway's records, once per batch (77 us of PostgreSQL's time per
  // record in cpd-central-bench at 20 000 records, growing with the chain).
  PgResult r = conn_->exec_prepared(
      "WITH held AS MATERIALIZED (SELECT r.seq, r.jws_sha256 FROM (SELECT DISTINCT seq FROM "
      "head_announcements "
      "WHERE gateway = $1) s CROSS JOIN LATERAL (SELECT seq, jws_sha256 FROM records WHERE gateway = $1 AND "
      "seq = s.seq) r) "
      "DELETE FROM head_announcements a USING held h WHERE a.gateway = $1 AND a.seq = h.seq "
      "RETURNING a.seq, a.hash, h.jws_sha256, a.jws",
      {gateway}, "comparing new records with the announced heads");
  for (int i = 0; i < r.rows(); ++i) {
    if (r.text(i, 1) != r.text(i, 2)) {
      note_head_fork(gateway, static_cast<std::uint64_t>(r.integer(i, 0)), r.text(i, 1), r.text(i, 2),
                     r.text(i, 3), now, out);
    }
  }
}

void CentralStore::note_head_fork(const std::string& gateway, std::uint64_t seq,
                                  const std::string& announced_hash, const std::string& stored_hash,
                                  const std::string& announcement_jws, const std::string& now,
                                  BatchOutcome& out) {
  PgResult f = conn_->exec(
      "INSERT INTO head_forks (gateway, seq, announced_hash, stored_hash, jws, first_ms, last_ms) "
      "SELECT $1, $2, $3, $4, $5, $6, $6 WHERE (SELECT count(*) FROM head_forks WHERE gateway = $1) < "
      "1000 ON CONFLICT (gateway, seq, announced_hash) DO UPDATE SET count = head_forks.count + 1, "
      "last_ms = EXCLUDED.last_ms RETURNING (xmax = 0)",
      {gateway, std::to_string(seq), announced_hash, stored_hash, announcement_jws, now},
      "keeping a head fork");
  if (f.rows() == 1 && f.boolean(0, 0)) {
    ++out.head_forks;
    out.head_fork_lines.push_back(gateway + ":" + std::to_string(seq) + " announced with head " +
                                  announced_hash + ", the stored record's SHA-256 is " + stored_hash);
    conn_->exec("UPDATE gateways SET head_forks = head_forks + 1 WHERE gateway = $1", {gateway},
                "counting a head fork");
  }
}

void CentralStore::advance(const std::string& gateway, std::int64_t now_ms, const ReceiptPolicy& policy,
                           BatchOutcome& out) {
  PgResult g = conn_->exec_prepared(
      "SELECT watermark_seq, watermark_hash, receipt_seq, receipt_ms, max_seq, announced_seq, gap_since_ms "
      "FROM gateways WHERE gateway = $1 FOR UPDATE",
      {gateway}, "locking a gateway");
  if (g.rows() == 0) {
    return;
  }
  auto wm = static_cast<std::uint64_t>(g.integer(0, 0));
  std::string wm_hash = g.text(0, 1);
  const auto receipt_seq = static_cast<std::uint64_t>(g.integer(0, 2));
  const std::int64_t receipt_ms = g.integer(0, 3);
  const auto max_seq = static_cast<std::uint64_t>(g.integer(0, 4));
  const auto announced = static_cast<std::uint64_t>(g.integer(0, 5));
  const bool had_gap = !g.is_null(0, 6);
  const std::uint64_t start = wm;
  const std::optional<std::string> chain_break = walk_watermark(gateway, wm, wm_hash, now_ms, out);
  if (chain_break) {
    PgResult set = conn_->exec(
        "UPDATE gateways SET chain_break_seq = $2, chain_break_reason = $3 WHERE gateway = $1 AND "
        "chain_break_seq IS DISTINCT FROM $2",
        {gateway, std::to_string(wm + 1), *chain_break}, "noting a chain break");
    if (set.affected() == 1) {
      out.chain_breaks.push_back(gateway + ":" + std::to_string(wm + 1) + ": " + *chain_break);
    }
  }
  const bool gap_now = std::max(max_seq, announced) > wm;
  std::optional<std::string> gap_since;
  if (gap_now) {
    // The gap's age restarts whenever the watermark moves: ask only when nothing has arrived for a while.
    gap_since = (wm != start || !had_gap) ? std::to_string(now_ms) : g.text(0, 6);
  }
  if (wm != start || gap_now != had_gap) {
    conn_->exec_prepared(
        "UPDATE gateways SET watermark_seq = $2, watermark_hash = $3, gap_since_ms = $4, "
        "request_backoff_ms = CASE WHEN $5::boolean THEN 0 ELSE request_backoff_ms END, "
        "next_request_ms = CASE WHEN $5::boolean THEN 0 ELSE next_request_ms END WHERE gateway = $1",
        {gateway, std::to_string(wm), wm_hash, gap_since, wm != start ? "true" : "false"},
        "advancing the watermark");
  }
  const bool due_by_count = wm >= receipt_seq + policy.every_records;
  const bool due_by_time = wm > receipt_seq && now_ms - receipt_ms >= policy.every_ms;
  if (wm > 0 && (due_by_count || due_by_time)) {
    conn_->exec_prepared("UPDATE gateways SET receipt_seq = $2, receipt_ms = $3 WHERE gateway = $1",
                         {gateway, std::to_string(wm), std::to_string(now_ms)}, "noting a receipt");
    out.receipts.push_back(receipt(policy.central_id, gateway, wm, wm_hash, now_ms));
  }
}

std::optional<std::string> CentralStore::walk_watermark(const std::string& gateway, std::uint64_t& wm,
                                                        std::string& wm_hash, std::int64_t now_ms,
                                                        BatchOutcome& out) {
  std::optional<std::string> chain_break;

  // Seq ranges an operator accepted as lost (accept-loss) above the watermark, read at the first hole only
  // (most walks meet none): a hole they cover is passed; the record after it has no predecessor here to
  // check its `prev` against.
  std::optional<PgResult> accepted;
  const auto across_accepted_loss = [&](std::uint64_t seq) {
    if (!accepted) {
      accepted = conn_->exec(
          "SELECT from_seq, to_seq FROM accepted_losses WHERE gateway = $1 AND to_seq > $2 ORDER BY from_seq",
          {gateway, std::to_string(wm)}, "reading accepted losses");
    }
    return contiguous_through(*accepted, wm) >= seq - 1;
  };

  // The gateway's keys and their seq ranges, read under its lock: a record stored under a key while another
  // instance's transaction storing that key's rotation was still open passed refuse_retired() with the old
  // ranges; it is found here before the watermark passes it (the rotation record precedes it in the chain).
  const auto key_ranges = gateway_key_ranges(*conn_, gateway);
  for (;;) {
    PgResult next = conn_->exec_prepared(
        "SELECT r.seq, r.prev, r.jws_sha256, r.kid, NOT EXISTS (SELECT 1 FROM record_media rm LEFT JOIN "
        "media m ON "
        "m.sha256 = rm.sha256 WHERE rm.gateway = r.gateway AND rm.seq = r.seq AND m.sha256 IS NULL AND NOT "
        "EXISTS (SELECT 1 FROM accepted_media_losses a WHERE a.gateway = rm.gateway AND a.sha256 = "
        "rm.sha256)) "
        "FROM records r WHERE r.gateway = $1 AND r.seq > $2 ORDER BY r.seq LIMIT 2000",
        {gateway, std::to_string(wm)}, "walking the chain");
    std::size_t i = 0;
    for (; i < static_cast<std::size_t>(next.rows()); ++i) {
      const int row = static_cast<int>(i);
      const auto seq = static_cast<std::uint64_t>(next.integer(row, 0));
      const bool across_loss = seq > wm + 1 && across_accepted_loss(seq);
      if ((seq != wm + 1 && !across_loss) || !next.boolean(row, 4)) {
        break;  // a hole, or its media have not all arrived
      }
      const auto k = key_ranges.find(next.text(row, 3));
      // A kid no longer enrolled: the key_rotation record that enrolled it was set aside with its branch
      // (choose-branch), and this record, stored by an instance whose cache still had it, follows that
      // branch.
      if (std::string why = k == key_ranges.end()
                                ? "seq " + std::to_string(seq) + " is signed by kid " + next.text(row, 3) +
                                      ", no longer enrolled for the gateway (its key_rotation record was set "
                                      "aside with its branch)"
                                : key_range_refusal(k->first, k->second.first, k->second.second, seq);
          !why.empty()) {
        set_aside_retired(gateway, seq, why, now_ms, out);
        break;  // a hole now: asked for again, and the gateway's own record takes the seq
      }
      if (!across_loss && next.text(row, 1) != wm_hash) {
        chain_break =
            "prev of seq " + std::to_string(seq) + " does not match SHA-256 of seq " + std::to_string(wm);
        break;
      }
      wm = seq;
      wm_hash = next.text(row, 2);
    }
    if (i < 2000 || chain_break) {
      break;
    }
  }
  return chain_break;
}

void CentralStore::set_aside_retired(const std::string& gateway, std::uint64_t seq, const std::string& why,
                                     std::int64_t now_ms, BatchOutcome& out) {
  // A key_rotation record set aside takes back the key it enrolled (as a choice of branch does).
  std::vector<std::string> undone;
  undo_rotations(gateway, seq, seq, 0, 0, now_ms, undone);
  for (const std::string& line : undone) {
    out.retired_set_aside.push_back(gateway + ":" + std::to_string(seq) + ": " + line);
  }
  // Out of the chain, kept for forensics beside the forks (its bytes as received), its media links gone.
  conn_->exec(
      "WITH moved AS (DELETE FROM records WHERE gateway = $1 AND seq = $2 RETURNING gateway, seq, jws, "
      "jws_sha256) INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms, set_aside) SELECT gateway, "
      "seq, "
      "jws, jws_sha256, $3::bigint, true FROM moved ON CONFLICT (gateway, seq, jws_sha256) DO UPDATE SET "
      "set_aside = true",
      {gateway, std::to_string(seq), std::to_string(now_ms)}, "setting aside a record under a retired key");
  conn_->exec("DELETE FROM record_media WHERE gateway = $1 AND seq = $2", {gateway, std::to_string(seq)},
              "setting aside a record under a retired key");
  out.retired_set_aside.push_back(gateway + ":" + std::to_string(seq) + ": " + why);
}

custody::Receipt CentralStore::receipt(const std::string& central_id, const std::string& gateway,
                                       std::uint64_t through_seq, const std::string& head,
                                       std::int64_t now_ms) {
  custody::Receipt r{central_id, gateway, through_seq, head, now_ms, {}, {}};
  // What the receipt does not cover, said in it: every accepted loss below through_seq (an operator's
  // decisions; accept_loss keeps them within kMaxLosses of each kind, so the LIMIT never cuts one off).
  const PgResult seqs = conn_->exec(
      "SELECT from_seq, to_seq FROM (SELECT from_seq, to_seq FROM accepted_losses WHERE gateway = $1 AND "
      "from_seq < $2::bigint ORDER BY from_seq DESC LIMIT $3) x ORDER BY from_seq",
      {gateway, std::to_string(through_seq), std::to_string(static_cast<std::uint64_t>(custody::kMaxLosses))},
      "reading accepted losses");
  for (int i = 0; i < seqs.rows(); ++i) {
    r.lost_seqs.emplace_back(static_cast<std::uint64_t>(seqs.integer(i, 0)),
                             std::min(static_cast<std::uint64_t>(seqs.integer(i, 1)), through_seq - 1));
  }
  const PgResult pictures = conn_->exec(
      "SELECT sha256 FROM (SELECT DISTINCT a.sha256, a.accepted_ms FROM accepted_media_losses a JOIN "
      "record_media rm ON rm.gateway = a.gateway AND rm.sha256 = a.sha256 WHERE a.gateway = $1 AND rm.seq <= "
      "$2::bigint AND NOT EXISTS (SELECT 1 FROM media m WHERE m.sha256 = a.sha256) ORDER BY a.accepted_ms "
      "DESC, a.sha256 LIMIT $3) x ORDER BY sha256",
      {gateway, std::to_string(through_seq), std::to_string(static_cast<std::uint64_t>(custody::kMaxLosses))},
      "reading accepted losses");
  for (int i = 0; i < pictures.rows(); ++i) {
    r.lost_pictures.push_back(pictures.text(i, 0));
  }
  return r;
}

// Every receipt names all of a gateway's accepted losses below its through_seq, and a receipt names at most
// kMaxLosses of each kind (the gateway refuses more): a loss beyond that could not be named, and a receipt
// leaving it out would claim a record or picture central does not hold. So at most kMaxLosses are accepted
// per gateway and kind; the next is refused (custody stays before it). `same` (SQL on $2 = `key`) matches
// the row the new loss would update rather than add. Empty: room left.
std::string CentralStore::losses_full(const std::string& gateway, const char* table, const char* same,
                                      const std::string& key, const char* what) {
  const PgResult n = conn_->exec(std::string("SELECT count(*), count(*) FILTER (WHERE ") + same + ") FROM " +
                                     table + " WHERE gateway = $1",
                                 {gateway, key}, "counting accepted losses");
  const auto rows = static_cast<std::uint64_t>(n.integer(0, 0));
  if (rows < custody::kMaxLosses || n.integer(0, 1) > 0) {
    return {};
  }
  return "gateway \"" + gateway + "\" already has " + std::to_string(rows) + " accepted " + what +
         ", the most one custody receipt can name (" + std::to_string(custody::kMaxLosses) +
         "): a receipt past another could not say what it does not cover, so custody stays before it "
         "(docs/custody.md, Accepting a loss)";
}

CentralStore::LossAcceptance CentralStore::accept_loss(
    const std::string& gateway, std::optional<std::pair<std::uint64_t, std::uint64_t>> seqs,
    const std::string& picture, const std::string& reason, const std::string& by, std::int64_t now_ms) {
  LossAcceptance out;
  PgTransaction tx(*conn_);
  // The gateway's row first (the lock advance() takes): a running instance's batch waits, never crosses.
  if (conn_->exec("SELECT 1 FROM gateways WHERE gateway = $1 FOR UPDATE", {gateway}, "locking a gateway")
          .rows() == 0) {
    out.refusal = "gateway \"" + gateway + "\" is not known to this central";
    return out;
  }
  if (seqs) {
    const auto [from, to] = *seqs;
    const PgResult held = conn_->exec(
        "SELECT min(seq) FROM records WHERE gateway = $1 AND seq BETWEEN $2::bigint AND $3::bigint",
        {gateway, std::to_string(from), std::to_string(to)}, "looking for held records");
    if (!held.is_null(0, 0)) {
      out.refusal =
          "seq " + held.text(0, 0) + " is held: only what central does not hold can be accepted as lost";
      return out;
    }
    // Every seq of the range must be in what the gateway itself reported it no longer holds.
    const PgResult ranges = conn_->exec(
        "SELECT from_seq, to_seq FROM unrecoverable WHERE gateway = $1 AND to_seq >= $2::bigint AND from_seq "
        "<= "
        "$3::bigint ORDER BY from_seq",
        {gateway, std::to_string(from), std::to_string(to)}, "reading unrecoverable ranges");
    const std::uint64_t covered = contiguous_through(ranges, from - 1);
    if (covered < to) {
      out.refusal =
          "seq " + std::to_string(covered + 1) +
          " was not reported lost by the gateway (no resend reply named it not_held): central still "
          "asks for it";
      return out;
    }
    if (const std::string full = losses_full(gateway, "accepted_losses", "from_seq = $2::bigint",
                                             std::to_string(from), "record losses");
        !full.empty()) {
      out.refusal = full;
      return out;
    }
    conn_->exec(
        "INSERT INTO accepted_losses (gateway, from_seq, to_seq, reason, operator, accepted_ms) VALUES ($1, "
        "$2, "
        "$3, $4, $5, $6) ON CONFLICT (gateway, from_seq) DO UPDATE SET to_seq = "
        "GREATEST(accepted_losses.to_seq, "
        "EXCLUDED.to_seq), reason = EXCLUDED.reason, operator = EXCLUDED.operator, accepted_ms = "
        "EXCLUDED.accepted_ms",
        {gateway, std::to_string(from), std::to_string(to), reason, by, std::to_string(now_ms)},
        "accepting a loss");
  } else {
    if (conn_
            ->exec("SELECT 1 FROM unrecoverable_media WHERE gateway = $1 AND sha256 = $2", {gateway, picture},
                   "reading unrecoverable pictures")
            .rows() == 0) {
      out.refusal = "picture " + picture +
                    " was not reported lost by the gateway (no resend reply named it in media_not_held)";
      return out;
    }
    if (conn_->exec("SELECT 1 FROM media WHERE sha256 = $1", {picture}, "looking for a held picture").rows() >
        0) {
      out.refusal =
          "picture " + picture + " is held: only what central does not hold can be accepted as lost";
      return out;
    }
    if (const std::string full =
            losses_full(gateway, "accepted_media_losses", "sha256 = $2", picture, "picture losses");
        !full.empty()) {
      out.refusal = full;
      return out;
    }
    conn_->exec(
        "INSERT INTO accepted_media_losses (gateway, sha256, reason, operator, accepted_ms) VALUES ($1, $2, "
        "$3, "
        "$4, $5) ON CONFLICT (gateway, sha256) DO UPDATE SET reason = EXCLUDED.reason, operator = "
        "EXCLUDED.operator, accepted_ms = EXCLUDED.accepted_ms",
        {gateway, picture, reason, by, std::to_string(now_ms)}, "accepting a loss");
  }
  out.watermark = walk_for_operator(gateway, now_ms, out.found);
  tx.commit();
  out.accepted = true;
  return out;
}

std::uint64_t CentralStore::walk_for_operator(const std::string& gateway, std::int64_t now_ms,
                                              std::vector<std::string>& found) {
  // The watermark moves now; the receipt is left to the running instances (they publish it when due).
  BatchOutcome moved;
  advance(gateway, now_ms, ReceiptPolicy{"", UINT64_MAX / 2, INT64_MAX / 2}, moved);
  for (const std::string& b : moved.chain_breaks) {
    found.push_back("CHAIN BREAK at " + b);
  }
  for (const std::string& r : moved.retired_set_aside) {
    found.push_back("RETIRED KEY: " + r + "; set aside (kept in forks) and asked for again");
  }
  return static_cast<std::uint64_t>(
      conn_->exec("SELECT watermark_seq FROM gateways WHERE gateway = $1", {gateway}, "reading the watermark")
          .integer(0, 0));
}

std::vector<custody::Receipt> CentralStore::due_receipts(std::int64_t now_ms, const ReceiptPolicy& policy) {
  std::vector<custody::Receipt> out;
  PgTransaction tx(*conn_);
  PgResult r = conn_->exec(
      "SELECT gateway, watermark_seq, watermark_hash FROM gateways WHERE watermark_seq > 0 AND "
      "((watermark_seq > receipt_seq AND $1::bigint - COALESCE(receipt_ms, 0) >= $2) OR $1::bigint - "
      "COALESCE(receipt_ms, 0) >= $3::bigint) "
      "ORDER BY gateway FOR UPDATE SKIP LOCKED",
      {std::to_string(now_ms), std::to_string(policy.every_ms), std::to_string(policy.every_ms * 10)},
      "finding receipts due");
  for (int i = 0; i < r.rows(); ++i) {
    const std::string gateway = r.text(i, 0);
    const auto wm = static_cast<std::uint64_t>(r.integer(i, 1));
    conn_->exec("UPDATE gateways SET receipt_seq = $2, receipt_ms = $3 WHERE gateway = $1",
                {gateway, std::to_string(wm), std::to_string(now_ms)}, "noting a receipt");
    out.push_back(receipt(policy.central_id, gateway, wm, r.text(i, 2), now_ms));
  }
  tx.commit();
  return out;
}

std::uint64_t CentralStore::past_known_losses(const std::string& gateway, std::uint64_t wm) {
  // What the gateway said it no longer holds (unrecoverable) and what an operator accepted as lost is not
  // asked for again; the holes, the lost tail and the missing pictures after it are. The ranges that run on
  // from wm + 1 without a seq between them are skipped (a bounded walk: a range per step).
  std::uint64_t at = wm;
  for (int step = 0; step < 1000; ++step) {
    const PgResult r = conn_->exec(
        "SELECT max(to_seq) FROM (SELECT to_seq FROM unrecoverable WHERE gateway = $1 AND from_seq <= $2 AND "
        "to_seq >= $2 UNION ALL SELECT to_seq FROM accepted_losses WHERE gateway = $1 AND from_seq <= $2 AND "
        "to_seq >= $2) k",
        {gateway, std::to_string(at + 1)}, "skipping known losses");
    if (r.is_null(0, 0)) {
      break;
    }
    at = static_cast<std::uint64_t>(r.integer(0, 0));
  }
  return at;
}

bool CentralStore::plan_holes(const std::string& gateway, std::uint64_t wm, std::uint64_t max_seq,
                              std::uint64_t announced, ResendPlan& plan) {
  const std::uint64_t from = wm + 1;
  PgResult next = conn_->exec("SELECT min(seq) FROM records WHERE gateway = $1 AND seq > $2",
                              {gateway, std::to_string(wm)}, "finding the next stored seq");
  const auto next_seq = next.is_null(0, 0) ? 0 : static_cast<std::uint64_t>(next.integer(0, 0));
  if (next_seq == from) {
    // Record wm+1 is here: it waits for media (or the chain check). Ask for its missing media, and those of
    // the stored records after it (up to kMaxResendMedia pictures, the next kMaxResendMedia seqs): the walk
    // needs them next, and a burst of lost pictures takes one round, not one round per record.
    PgResult missing = conn_->exec(
        "SELECT DISTINCT ON (rm.sha256) rm.sha256, rm.seq FROM record_media rm LEFT JOIN media m ON m.sha256 "
        "= "
        "rm.sha256 WHERE rm.gateway = $1 AND rm.seq BETWEEN $2::bigint AND $3::bigint AND m.sha256 IS NULL "
        "AND "
        "NOT EXISTS (SELECT 1 FROM unrecoverable_media u WHERE u.gateway = rm.gateway AND u.sha256 = "
        "rm.sha256) ORDER BY rm.sha256, rm.seq",
        {gateway, std::to_string(from), std::to_string(from + custody::kMaxResendMedia - 1)},
        "finding missing media");
    std::vector<std::pair<std::uint64_t, std::string>> by_seq;
    for (int j = 0; j < missing.rows(); ++j) {
      by_seq.emplace_back(static_cast<std::uint64_t>(missing.integer(j, 1)), missing.text(j, 0));
    }
    std::sort(by_seq.begin(), by_seq.end());
    for (const auto& [seq, sha] : by_seq) {
      if (plan.request.media.size() >= custody::kMaxResendMedia) {
        break;
      }
      plan.request.media.push_back(sha);
    }
    if (plan.request.media.empty()) {
      return false;  // nothing missing, or only pictures the gateway said it no longer holds: not asked again
    }
    plan.why =
        "media of seq " + std::to_string(by_seq.front().first) +
        (by_seq.back().first != by_seq.front().first ? ".." + std::to_string(by_seq.back().first) : "");
  } else {
    // One request covers every hole up to the last one (and the lost tail past the highest seq seen):
    // records central already holds come back as duplicates and are dropped, and K holes do not take K
    // rounds of resend_after_ms.
    const std::uint64_t cap = from + custody::kMaxResendRange - 1;
    std::uint64_t to = 0;
    if (announced > max_seq) {
      to = announced;
    } else {
      PgResult last = conn_->exec(
          "SELECT max(s) FROM generate_series($2::bigint, $3::bigint) s WHERE NOT EXISTS (SELECT 1 FROM "
          "records "
          "WHERE gateway = $1 AND seq = s)",
          {gateway, std::to_string(from), std::to_string(std::min(max_seq, cap))}, "finding the last hole");
      to = last.is_null(0, 0) ? 0 : static_cast<std::uint64_t>(last.integer(0, 0));
    }
    if (to < from) {
      return false;
    }
    plan.request.from_seq = from;
    plan.request.to_seq = std::min(to, cap);
    plan.why = "seq " + std::to_string(from) + ".." + std::to_string(plan.request.to_seq) + " (" +
               (announced <= max_seq ? "holes below " + std::to_string(max_seq)
                : next_seq == 0      ? "lost tail, announced " + std::to_string(announced)
                                     : "holes below " + std::to_string(max_seq) +
                                      " and the lost tail, announced " + std::to_string(announced)) +
               ")";
  }
  return true;
}

// The request is remembered (the last 16 per gateway): only a reply carrying its Correlation Data is
// believed, and only for what it asked.
void CentralStore::remember_request(const ResendPlan& plan, std::uint64_t media_seq, std::int64_t now_ms) {
  const nlohmann::json media = plan.request.media;
  conn_->exec(
      "INSERT INTO resend_open (gateway, correlation, from_seq, to_seq, media_seq, media, sent_ms) VALUES "
      "($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
      {plan.gateway, plan.correlation,
       plan.request.from_seq != 0 ? std::optional<std::string>(std::to_string(plan.request.from_seq))
                                  : std::nullopt,
       plan.request.from_seq != 0 ? std::optional<std::string>(std::to_string(plan.request.to_seq))
                                  : std::nullopt,
       plan.request.media.empty() ? std::nullopt : std::optional<std::string>(std::to_string(media_seq)),
       plan.request.media.empty() ? std::nullopt : std::optional<std::string>(media.dump()),
       std::to_string(now_ms)},
      "remembering a resend request");
  conn_->exec(
      "DELETE FROM resend_open WHERE gateway = $1 AND correlation NOT IN (SELECT correlation FROM "
      "resend_open WHERE gateway = $1 ORDER BY sent_ms DESC, correlation LIMIT 16)",
      {plan.gateway}, "forgetting old resend requests");
}

std::vector<ResendPlan> CentralStore::plan_resends(std::int64_t now_ms, const GapPolicy& policy) {
  std::vector<ResendPlan> out;
  PgTransaction tx(*conn_);
  PgResult r = conn_->exec(
      "SELECT gateway, watermark_seq, max_seq, announced_seq, request_backoff_ms, chain_break_seq FROM "
      "gateways WHERE gap_since_ms IS NOT NULL AND $1::bigint - gap_since_ms >= $2::bigint AND "
      "next_request_ms <= $1::bigint ORDER BY gateway FOR UPDATE SKIP LOCKED",
      {std::to_string(now_ms), std::to_string(policy.resend_after_ms)}, "finding gaps");
  for (int i = 0; i < r.rows(); ++i) {
    const std::string gateway = r.text(i, 0);
    const auto wm = static_cast<std::uint64_t>(r.integer(i, 1));
    const auto announced = static_cast<std::uint64_t>(r.integer(i, 3));
    ResendPlan plan;
    plan.gateway = gateway;
    std::uint64_t media_seq = wm + 1;  // the record whose pictures a media request asks for
    std::int64_t backoff_ms = r.integer(i, 4);
    if (!r.is_null(i, 5)) {
      // A chain break at S: the records the branch S follows on from lacks are asked for (the walk back from
      // S through the forks finds the first; it and the 99 below it), so they arrive as forks for an operator
      // to choose (choose-branch). Nothing when the branch is complete. The holes above the break wait until
      // it is cleared.
      const auto brk = static_cast<std::uint64_t>(r.integer(i, 5));
      const auto range = branch_request(gateway, brk);
      if (!range) {
        // Complete (or not walkable): walked again only after the longest backoff, not at every check.
        conn_->exec("UPDATE gateways SET next_request_ms = $2 WHERE gateway = $1",
                    {gateway, std::to_string(now_ms + policy.retry_max_ms)},
                    "scheduling the next branch walk");
        continue;
      }
      plan.request.from_seq = range->first;
      plan.request.to_seq = range->second;
      plan.why = "seq " + std::to_string(plan.request.from_seq) + ".." + std::to_string(plan.request.to_seq) +
                 " (the branch the chain break at " + std::to_string(brk) + " follows on from)";
      // The branch grows by up to 100 records a request: while each request asks for another range, the next
      // one follows after the shortest backoff; the same range again doubles it.
      const PgResult last = conn_->exec(
          "SELECT from_seq, to_seq FROM resend_open WHERE gateway = $1 ORDER BY sent_ms DESC LIMIT 1",
          {gateway}, "reading the last request");
      if (last.rows() == 0 || last.is_null(0, 0) ||
          static_cast<std::uint64_t>(last.integer(0, 1)) != plan.request.to_seq) {
        backoff_ms = 0;
      }
    } else {
      const std::uint64_t past = past_known_losses(gateway, wm);
      if (!plan_holes(gateway, past, static_cast<std::uint64_t>(r.integer(i, 2)), announced, plan)) {
        continue;
      }
      media_seq = past + 1;
    }
    const std::int64_t backoff = std::clamp<std::int64_t>(
        backoff_ms == 0 ? policy.retry_min_ms : backoff_ms * 2, policy.retry_min_ms, policy.retry_max_ms);
    conn_->exec(
        "UPDATE gateways SET next_request_ms = $2, request_backoff_ms = $3, resend_requests = "
        "resend_requests + 1 "
        "WHERE gateway = $1",
        {gateway, std::to_string(now_ms + backoff), std::to_string(backoff)}, "scheduling the next request");
    plan.correlation = std::to_string(correlation_rng()());
    remember_request(plan, media_seq, now_ms);
    out.push_back(std::move(plan));
  }
  tx.commit();
  return out;
}

namespace {

// A nullable integer column as JSON (null when NULL).
nlohmann::json optional_integer(const PgResult& r, int i, int c) {
  return r.is_null(i, c) ? nlohmann::json(nullptr) : nlohmann::json(r.integer(i, c));
}

}  // namespace

nlohmann::json CentralStore::status() {
  // The three reads in this order (a braced list is evaluated left to right).
  return {{"gateways", status_gateways()},
          {"quarantine", status_quarantine()},
          {"unknown_gateways", status_unknown_gateways()}};
}

// One object per enrolled gateway.
nlohmann::json CentralStore::status_gateways() {
  nlohmann::json gateways = nlohmann::json::array();
  PgResult r = conn_->exec(
      "SELECT g.gateway, g.watermark_seq, g.max_seq, g.announced_seq, g.last_seen_ms, g.receipt_seq, "
      "g.receipt_ms, g.resend_requests, g.forks, COALESCE(q.messages, 0), COALESCE(q.dropped, 0), "
      "g.chain_break_seq, g.chain_break_reason, g.gap_since_ms, "
      "(SELECT count(*) FROM records x WHERE x.gateway = g.gateway), "
      "(SELECT string_agg(kid, ',' ORDER BY enrolled_ms) FROM gateway_keys k WHERE k.gateway = g.gateway), "
      "(SELECT COALESCE(json_agg(json_build_array(u.from_seq, u.to_seq) ORDER BY u.from_seq), '[]') FROM "
      "unrecoverable u WHERE u.gateway = g.gateway), "
      "g.head_forks, COALESCE(q.rows, 0), COALESCE(q.bytes, 0), "
      "(SELECT count(*) FROM unrecoverable_media um WHERE um.gateway = g.gateway), "
      "(SELECT COALESCE(json_agg(json_build_object('seq', x.seq, 'sha256', x.sha256, 'noted_ms', x.noted_ms) "
      "ORDER BY x.seq), '[]') FROM (SELECT * FROM unrecoverable_media um WHERE um.gateway = g.gateway ORDER "
      "BY "
      "um.seq LIMIT 100) x), "
      "(SELECT COALESCE(json_agg(json_build_object('seq', c.seq, 'kind', c.kind, 'reason', c.reason, "
      "'as_fork', "
      "c.as_fork, 'received_ms', c.received_ms) ORDER BY c.received_ms), '[]') FROM chain_restarts c WHERE "
      "c.gateway = g.gateway), "
      "(SELECT COALESCE(json_agg(x.loss ORDER BY x.accepted_ms), '[]') FROM (SELECT "
      "json_build_object('seqs', "
      "json_build_array(a.from_seq, a.to_seq), 'reason', a.reason, 'operator', a.operator, 'accepted_ms', "
      "a.accepted_ms) AS loss, a.accepted_ms FROM accepted_losses a WHERE a.gateway = g.gateway UNION ALL "
      "SELECT json_build_object('picture', m.sha256, 'reason', m.reason, 'operator', m.operator, "
      "'accepted_ms', m.accepted_ms), m.accepted_ms FROM accepted_media_losses m WHERE m.gateway = g.gateway "
      "ORDER BY 2 DESC LIMIT 100) x), "
      "(SELECT COALESCE(json_agg(json_build_object('seqs', json_build_array(b.from_seq, b.to_seq), "
      "'tip_seq', "
      "b.tip_seq, 'tip_sha256', b.tip_sha256, 'set_aside', b.set_aside, 'set_aside_seqs', "
      "json_build_array(b.set_aside_from, b.set_aside_to), 'past_receipt', b.past_receipt, 'receipt_seq', "
      "b.receipt_seq, 'accepted_lost_seq', b.accepted_lost_seq, 'undone_rotations', b.undone_rotations, "
      "'reason', b.reason, 'operator', b.operator, 'chosen_ms', b.chosen_ms) ORDER BY b.id), '[]') FROM "
      "(SELECT * FROM branch_choices b WHERE b.gateway = g.gateway ORDER BY b.id DESC LIMIT 100) b), "
      "(SELECT COALESCE(json_agg(json_build_object('seq', f.seq, 'sha256', f.jws_sha256, 'received_ms', "
      "f.received_ms) ORDER BY f.seq, f.id), '[]') FROM (SELECT * FROM forks f WHERE f.gateway = g.gateway "
      "ORDER BY f.id DESC LIMIT 100) f), "
      "(SELECT count(*) FROM accepted_losses a WHERE a.gateway = g.gateway) + (SELECT count(*) FROM "
      "accepted_media_losses m WHERE m.gateway = g.gateway), "
      "(SELECT count(*) FROM branch_choices b WHERE b.gateway = g.gateway), "
          // Files no stored record names now (file_intake.h); open transfers apart.
          + unnamed_media_sql("g.gateway") +
          " FROM gateways g LEFT JOIN quarantine_usage q ON q.gateway = g.gateway ORDER BY g.gateway",
      "reading status");
  for (int i = 0; i < r.rows(); ++i) {
    nlohmann::json g = {
        {"gateway", r.text(i, 0)},
        {"watermark", r.integer(i, 1)},
        {"max_seq", r.integer(i, 2)},
        {"announced_seq", r.integer(i, 3)},
        {"last_seen_ms", optional_integer(r, i, 4)},
        {"receipt_seq", r.integer(i, 5)},
        {"receipt_ms", optional_integer(r, i, 6)},
        {"resend_requests", r.integer(i, 7)},
        {"forks", r.integer(i, 8)},
        {"quarantined", r.integer(i, 9)},
        {"quarantine_dropped", r.integer(i, 10)},
        {"chain_break", r.is_null(i, 11)
                            ? nlohmann::json(nullptr)
                            : nlohmann::json{{"seq", r.integer(i, 11)}, {"reason", r.text(i, 12)}}},
        {"gap_open_since_ms", optional_integer(r, i, 13)},
        {"records", r.integer(i, 14)},
        {"kids", r.is_null(i, 15) ? "" : r.text(i, 15)},
        {"unrecoverable", nlohmann::json::parse(r.text(i, 16))},
        {"head_forks", r.integer(i, 17)},
        {"quarantine_rows", r.integer(i, 18)},
        {"quarantine_bytes", r.integer(i, 19)},
        {"unrecoverable_media_count", r.integer(i, 20)},
        {"unrecoverable_media", nlohmann::json::parse(r.text(i, 21))},
        {"chain_restarts", nlohmann::json::parse(r.text(i, 22))},
        {"accepted_losses", nlohmann::json::parse(r.text(i, 23))},  // the newest 100
        {"branch_choices", nlohmann::json::parse(r.text(i, 24))},   // the newest 100
        {"fork_records", nlohmann::json::parse(r.text(i, 25))},     // the newest 100, in seq order
        {"accepted_losses_count", r.integer(i, 26)},                // all of them
        {"branch_choices_count", r.integer(i, 27)},
        {"unnamed_bytes", r.integer(i, 28)},
    };
    gateways.push_back(std::move(g));
  }
  return gateways;
}

// The quarantine's totals and bounds.
nlohmann::json CentralStore::status_quarantine() {
  PgResult t = conn_->exec("SELECT rows, bytes, messages, dropped FROM quarantine_usage WHERE gateway = ''",
                           "reading the quarantine totals");
  return {
      {"rows", t.rows() == 1 ? t.integer(0, 0) : 0},
      {"bytes", t.rows() == 1 ? t.integer(0, 1) : 0},
      {"messages", t.rows() == 1 ? t.integer(0, 2) : 0},
      {"dropped", t.rows() == 1 ? t.integer(0, 3) : 0},
      {"max_rows", bounds_.rows},
      {"max_bytes", bounds_.bytes},
      {"max_rows_per_gateway", bounds_.rows_per_gateway},
      {"max_bytes_per_gateway", bounds_.bytes_per_gateway},
  };
}

// Names on the feed that are not enrolled and have quarantine rows: how many, and the 20 seen last.
nlohmann::json CentralStore::status_unknown_gateways() {
  PgResult u = conn_->exec(
      "SELECT u.gateway, u.messages, u.rows, u.bytes, u.dropped, u.last_ms, count(*) OVER () FROM "
      "quarantine_usage u WHERE u.gateway <> '' AND NOT EXISTS (SELECT 1 FROM gateways g WHERE g.gateway = "
      "u.gateway) ORDER BY u.last_ms DESC NULLS LAST, u.gateway LIMIT 20",
      "reading gateways that are not enrolled");
  nlohmann::json unknown = nlohmann::json::array();
  for (int i = 0; i < u.rows(); ++i) {
    unknown.push_back({{"gateway", u.text(i, 0)},
                       {"messages", u.integer(i, 1)},
                       {"quarantine_rows", u.integer(i, 2)},
                       {"quarantine_bytes", u.integer(i, 3)},
                       {"quarantine_dropped", u.integer(i, 4)},
                       {"last_ms", optional_integer(u, i, 5)}});
  }
  return {{"count", u.rows() > 0 ? u.integer(0, 6) : 0}, {"latest", unknown}};
}

void CentralStore::export_chain(const std::string& gateway, std::uint64_t from,
                                const std::function<void(const std::string&)>& line) {
  std::uint64_t after = from == 0 ? 0 : from - 1;
  // One snapshot for every page: a choice of branch or a followed replaced store committing meanwhile cannot
  // make the export show the old branch up to one page and the new one after it.
  conn_->exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "starting the export's snapshot");
  try {
    for (;;) {
      PgResult r =
          conn_->exec("SELECT seq, jws FROM records WHERE gateway = $1 AND seq > $2 ORDER BY seq LIMIT 5000",
                      {gateway, std::to_string(after)}, "exporting records");
      for (int i = 0; i < r.rows(); ++i) {
        line(r.text(i, 1));
        after = static_cast<std::uint64_t>(r.integer(i, 0));
      }
      if (r.rows() < 5000) {
        break;
      }
    }
  } catch (...) {
    try {
      conn_->exec("ROLLBACK", "ending the export's snapshot");
    } catch (const PgError&) {
      // The connection is gone: so is the transaction.
    }
    throw;
  }
  conn_->exec("COMMIT", "ending the export's snapshot");
}

}  // namespace cpd::central
