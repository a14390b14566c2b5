// CentralStore: schema steps, batched intake in one transaction, the per-gateway watermark walk under a row
// lock, receipts and resend planning. SQL takes text parameters only.
#include "central/central_store.h"

#include <algorithm>
#include <set>
#include <utility>

#include "daemon/core/encoding.h"

namespace cpd::central {

namespace {

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
};

std::string num(std::uint64_t v) {
  return std::to_string(v);
}
std::string num(std::int64_t v) {
  return std::to_string(v);
}
std::optional<std::string> opt_num(const std::optional<long long>& v) {
  return v ? std::optional<std::string>(std::to_string(*v)) : std::nullopt;
}

}  // namespace

CentralStore::CentralStore(const std::string& conninfo, std::int64_t quarantine_max_per_gateway)
    : conn_(std::make_unique<PgConnection>(conninfo)), quarantine_max_(quarantine_max_per_gateway) {
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
    if (version > kSchemaVersion) {
      throw PgError("postgres: the database schema is version " + std::to_string(version) +
                        ", newer than this checkpoint-central (" + std::to_string(kSchemaVersion) + ")",
                    "", false);
    }
    for (; version < kSchemaVersion; ++version) {
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

void CentralStore::enroll(const std::string& gateway, const Ed25519PublicKey& public_key,
                          const std::string& source, std::int64_t now_ms) {
  PgTransaction tx(*conn_);
  conn_->exec("INSERT INTO gateways (gateway) VALUES ($1) ON CONFLICT DO NOTHING", {gateway},
              "adding a gateway");
  conn_->exec(
      "INSERT INTO gateway_keys (gateway, kid, public_key_pem, source, enrolled_ms) VALUES ($1, $2, $3, $4, "
      "$5) "
      "ON CONFLICT (gateway, kid) DO NOTHING",
      {gateway, public_key.kid(), public_key.pem(), source, num(now_ms)}, "enrolling a key");
  tx.commit();
}

std::map<std::string, std::map<std::string, Ed25519PublicKey>> CentralStore::trusted_keys() {
  std::map<std::string, std::map<std::string, Ed25519PublicKey>> out;
  PgResult r = conn_->exec("SELECT gateway, kid, public_key_pem FROM gateway_keys", "reading trusted keys");
  for (int i = 0; i < r.rows(); ++i) {
    out[r.text(i, 0)].emplace(r.text(i, 1), Ed25519PublicKey::from_pem(r.text(i, 2)));
  }
  return out;
}

BatchOutcome CentralStore::store_batch(const Batch& batch, std::int64_t now_ms, const ReceiptPolicy& policy) {
  BatchOutcome out;
  std::set<std::string> touched;
  PgTransaction tx(*conn_);
  const std::string now = num(now_ms);

  for (const IncomingMedia& m : batch.media) {
    PgResult r = conn_->exec(
        "INSERT INTO media (sha256, bytes, path, first_gateway, received_ms) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (sha256) DO NOTHING",
        {m.sha256, num(m.bytes), m.path, m.gateway, now}, "storing a media file");
    out.media_stored += static_cast<std::uint64_t>(r.affected());
    touched.insert(m.gateway);
  }

  // Records go in multi-row INSERTs (one round trip per kRowsPerInsert records); those that came back are
  // new, the others were held already: the same bytes (a duplicate) or other bytes (a fork).
  constexpr std::size_t kRowsPerInsert = 200;
  std::map<std::string, std::uint64_t> highest;  // gateway -> highest new seq in this batch
  for (std::size_t from = 0; from < batch.records.size(); from += kRowsPerInsert) {
    const std::size_t to = std::min(batch.records.size(), from + kRowsPerInsert);
    std::string sql =
        "INSERT INTO records (gateway, seq, jws, jws_sha256, prev, kid, type, time_ms, created_ms, site, "
        "plate, "
        "plate_color, lane, speed_dkmh, limit_kmh, enforceable, reasons, body, received_ms) VALUES ";
    std::string media_sql = "INSERT INTO record_media (gateway, seq, sha256) VALUES ";
    PgParams params;
    PgParams media_params;
    for (std::size_t i = from; i < to; ++i) {
      const IncomingRecord& rec = batch.records[i];
      const RecordColumns c = record_columns(rec.body);
      const std::size_t p = params.size();
      const auto n = [&](std::size_t k) { return "$" + std::to_string(p + k); };
      sql += (i == from ? "(" : ", (") + n(1) + ", " + n(2) + "::bigint, " + n(3) + ", " + n(4) + ", " +
             n(5) + ", " + n(6) + ", " + n(7) + ", " + n(8) + "::bigint, " + n(9) + "::bigint, " + n(10) +
             "::json, " + n(11) + ", " + n(12) + ", " + n(13) + "::bigint, " + n(14) + "::bigint, " + n(15) +
             "::bigint, " + n(16) + "::boolean, " + n(17) + "::json, " + n(18) + "::json, " + n(19) +
             "::bigint)";
      params.insert(
          params.end(),
          {rec.gateway, num(rec.seq), rec.jws, rec.jws_sha256, rec.prev, rec.kid, c.type,
           std::to_string(c.time_ms), std::to_string(c.created_ms), c.site, c.plate, c.plate_color,
           opt_num(c.lane), opt_num(c.speed_dkmh), opt_num(c.limit_kmh),
           c.enforceable ? std::optional<std::string>(*c.enforceable ? "true" : "false") : std::nullopt,
           c.reasons, rec.body.dump(), now});
      for (const std::string& sha : c.pictures) {
        const std::size_t m = media_params.size();
        media_sql += (media_params.empty() ? "($" : ", ($") + std::to_string(m + 1) + ", $" +
                     std::to_string(m + 2) + "::bigint, $" + std::to_string(m + 3) + ")";
        media_params.insert(media_params.end(), {rec.gateway, num(rec.seq), sha});
      }
      touched.insert(rec.gateway);
    }
    sql += " ON CONFLICT (gateway, seq) DO NOTHING RETURNING gateway, seq";
    PgResult ins = conn_->exec(sql, params, "storing records");
    std::set<std::pair<std::string, std::uint64_t>> fresh;
    for (int r = 0; r < ins.rows(); ++r) {
      const auto seq = static_cast<std::uint64_t>(ins.integer(r, 1));
      fresh.emplace(ins.text(r, 0), seq);
      auto& h = highest[ins.text(r, 0)];
      h = std::max(h, seq);
    }
    out.stored += fresh.size();
    if (!media_params.empty()) {
      // Media rows of records that were held already are the same rows: DO NOTHING keeps them once.
      conn_->exec(media_sql + " ON CONFLICT DO NOTHING", media_params, "naming records' media");
    }
    for (std::size_t i = from; i < to; ++i) {
      const IncomingRecord& rec = batch.records[i];
      if (fresh.count({rec.gateway, rec.seq}) != 0) {
        continue;
      }
      PgResult held = conn_->exec("SELECT jws_sha256 FROM records WHERE gateway = $1 AND seq = $2",
                                  {rec.gateway, num(rec.seq)}, "comparing a second copy");
      if (held.rows() == 1 && held.text(0, 0) == rec.jws_sha256) {
        ++out.duplicates;  // a QoS 1 redelivery or a resend of what we hold: the same bytes
        continue;
      }
      // Same (gateway, seq), other bytes, both signed by a trusted key: a fork. Both are kept.
      PgResult f = conn_->exec(
          "INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms) VALUES ($1, $2, $3, $4, $5) "
          "ON CONFLICT DO NOTHING",
          {rec.gateway, num(rec.seq), rec.jws, rec.jws_sha256, now}, "keeping a fork");
      if (f.affected() == 1) {
        ++out.forks;
        out.fork_ids.push_back(rec.gateway + ":" + num(rec.seq));
        conn_->exec("UPDATE gateways SET forks = forks + 1 WHERE gateway = $1", {rec.gateway},
                    "counting a fork");
      }
    }
  }
  for (const auto& [gateway, seq] : highest) {
    conn_->exec(
        "UPDATE gateways SET max_seq = GREATEST(max_seq, $2::bigint), last_seen_ms = $3 WHERE gateway = $1",
        {gateway, num(seq), now}, "noting a gateway's highest seq");
  }

  for (const QuarantineEntry& q : batch.quarantine) {
    // Only enrolled gateways get a quarantine row (and a bound); anything else is counted by the caller.
    PgResult g = conn_->exec(
        "UPDATE gateways SET quarantined = quarantined + 1 WHERE gateway = $1 AND quarantined < $2 "
        "RETURNING quarantined",
        {q.gateway, num(quarantine_max_)}, "counting a quarantined record");
    if (g.rows() == 0) {
      conn_->exec("UPDATE gateways SET quarantine_dropped = quarantine_dropped + 1 WHERE gateway = $1",
                  {q.gateway}, "counting a dropped quarantine");
      ++out.quarantine_dropped;
      continue;
    }
    conn_->exec(
        "INSERT INTO quarantine (gateway, seq, kid, jws, reason, received_ms) VALUES ($1, $2, $3, $4, $5, "
        "$6)",
        {q.gateway, q.seq ? std::optional<std::string>(num(*q.seq)) : std::nullopt, q.kid, q.jws, q.reason,
         now},
        "quarantining a record");
    ++out.quarantined;
  }

  for (const custody::Head& h : batch.heads) {
    conn_->exec(
        "UPDATE gateways SET announced_seq = $2, announced_hash = $3, announced_ms = $4, last_seen_ms = $5 "
        "WHERE gateway = $1 AND announced_seq <= $2",
        {h.gateway, num(h.seq), h.head, num(h.time_ms), now}, "noting an announced head");
    touched.insert(h.gateway);
  }
  for (const NotHeld& n : batch.not_held) {
    conn_->exec(
        "INSERT INTO unrecoverable (gateway, from_seq, to_seq, noted_ms) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (gateway, from_seq) DO UPDATE SET to_seq = GREATEST(unrecoverable.to_seq, "
        "EXCLUDED.to_seq)",
        {n.gateway, num(n.from_seq), num(n.to_seq), now}, "noting records a gateway no longer holds");
  }

  // Row locks in a fixed order (sorted set): two instances never wait on each other in a cycle.
  for (const std::string& gateway : touched) {
    advance(gateway, now_ms, policy, out);
  }
  tx.commit();
  return out;
}

void CentralStore::advance(const std::string& gateway, std::int64_t now_ms, const ReceiptPolicy& policy,
                           BatchOutcome& out) {
  PgResult g = conn_->exec(
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
  std::optional<std::string> chain_break;

  for (;;) {
    PgResult next = conn_->exec(
        "SELECT r.seq, r.prev, r.jws_sha256, NOT EXISTS (SELECT 1 FROM record_media rm LEFT JOIN media m ON "
        "m.sha256 = rm.sha256 WHERE rm.gateway = r.gateway AND rm.seq = r.seq AND m.sha256 IS NULL) "
        "FROM records r WHERE r.gateway = $1 AND r.seq > $2 ORDER BY r.seq LIMIT 2000",
        {gateway, num(wm)}, "walking the chain");
    std::size_t i = 0;
    for (; i < static_cast<std::size_t>(next.rows()); ++i) {
      const int row = static_cast<int>(i);
      const auto seq = static_cast<std::uint64_t>(next.integer(row, 0));
      if (seq != wm + 1 || !next.boolean(row, 3)) {
        break;  // a hole, or its media have not all arrived
      }
      if (next.text(row, 1) != wm_hash) {
        chain_break = "prev of seq " + num(seq) + " does not match SHA-256 of seq " + num(wm);
        break;
      }
      wm = seq;
      wm_hash = next.text(row, 2);
    }
    if (i < 2000 || chain_break) {
      break;
    }
  }
  if (chain_break) {
    PgResult set = conn_->exec(
        "UPDATE gateways SET chain_break_seq = $2, chain_break_reason = $3 WHERE gateway = $1 AND "
        "chain_break_seq IS DISTINCT FROM $2",
        {gateway, num(wm + 1), *chain_break}, "noting a chain break");
    if (set.affected() == 1) {
      out.chain_breaks.push_back(gateway + ":" + num(wm + 1) + ": " + *chain_break);
    }
  }
  const bool gap_now = std::max(max_seq, announced) > wm;
  std::optional<std::string> gap_since;
  if (gap_now) {
    // The gap's age restarts whenever the watermark moves: ask only when nothing has arrived for a while.
    gap_since = (wm != start || !had_gap) ? num(now_ms) : g.text(0, 6);
  }
  if (wm != start || gap_now != had_gap) {
    conn_->exec(
        "UPDATE gateways SET watermark_seq = $2, watermark_hash = $3, gap_since_ms = $4, "
        "request_backoff_ms = CASE WHEN $5::boolean THEN 0 ELSE request_backoff_ms END, "
        "next_request_ms = CASE WHEN $5::boolean THEN 0 ELSE next_request_ms END WHERE gateway = $1",
        {gateway, num(wm), wm_hash, gap_since, wm != start ? "true" : "false"}, "advancing the watermark");
  }
  const bool due_by_count = wm >= receipt_seq + policy.every_records;
  const bool due_by_time = wm > receipt_seq && now_ms - receipt_ms >= policy.every_ms;
  if (wm > 0 && (due_by_count || due_by_time)) {
    conn_->exec("UPDATE gateways SET receipt_seq = $2, receipt_ms = $3 WHERE gateway = $1",
                {gateway, num(wm), num(now_ms)}, "noting a receipt");
    out.receipts.push_back(custody::Receipt{policy.central_id, gateway, wm, wm_hash, now_ms});
  }
}

std::vector<custody::Receipt> CentralStore::due_receipts(std::int64_t now_ms, const ReceiptPolicy& policy) {
  std::vector<custody::Receipt> out;
  PgTransaction tx(*conn_);
  PgResult r = conn_->exec(
      "SELECT gateway, watermark_seq, watermark_hash FROM gateways WHERE watermark_seq > 0 AND "
      "((watermark_seq > receipt_seq AND $1::bigint - COALESCE(receipt_ms, 0) >= $2) OR $1::bigint - "
      "COALESCE(receipt_ms, 0) >= $3::bigint) "
      "ORDER BY gateway FOR UPDATE SKIP LOCKED",
      {num(now_ms), num(policy.every_ms), num(policy.every_ms * 10)}, "finding receipts due");
  for (int i = 0; i < r.rows(); ++i) {
    const std::string gateway = r.text(i, 0);
    const auto wm = static_cast<std::uint64_t>(r.integer(i, 1));
    conn_->exec("UPDATE gateways SET receipt_seq = $2, receipt_ms = $3 WHERE gateway = $1",
                {gateway, num(wm), num(now_ms)}, "noting a receipt");
    out.push_back(custody::Receipt{policy.central_id, gateway, wm, r.text(i, 2), now_ms});
  }
  tx.commit();
  return out;
}

std::vector<ResendPlan> CentralStore::plan_resends(std::int64_t now_ms, const GapPolicy& policy) {
  std::vector<ResendPlan> out;
  PgTransaction tx(*conn_);
  PgResult r = conn_->exec(
      "SELECT gateway, watermark_seq, max_seq, announced_seq, request_backoff_ms FROM gateways "
      "WHERE gap_since_ms IS NOT NULL AND $1::bigint - gap_since_ms >= $2::bigint AND next_request_ms <= "
      "$1::bigint "
      "AND chain_break_seq IS NULL ORDER BY gateway FOR UPDATE SKIP LOCKED",
      {num(now_ms), num(policy.resend_after_ms)}, "finding gaps");
  for (int i = 0; i < r.rows(); ++i) {
    const std::string gateway = r.text(i, 0);
    const auto wm = static_cast<std::uint64_t>(r.integer(i, 1));
    const auto announced = static_cast<std::uint64_t>(r.integer(i, 3));
    ResendPlan plan;
    plan.gateway = gateway;
    const std::uint64_t from = wm + 1;
    PgResult unrec =
        conn_->exec("SELECT to_seq FROM unrecoverable WHERE gateway = $1 AND from_seq <= $2 AND to_seq >= $2",
                    {gateway, num(from)}, "checking unrecoverable ranges");
    if (unrec.rows() > 0) {
      continue;  // the gateway said it no longer holds these: reported, not asked for again
    }
    PgResult next = conn_->exec("SELECT min(seq) FROM records WHERE gateway = $1 AND seq > $2",
                                {gateway, num(wm)}, "finding the next stored seq");
    const auto next_seq = next.is_null(0, 0) ? 0 : static_cast<std::uint64_t>(next.integer(0, 0));
    if (next_seq == from) {
      // Record wm+1 is here: it waits for media (or the chain check). Ask for its missing media.
      PgResult missing = conn_->exec(
          "SELECT rm.sha256 FROM record_media rm LEFT JOIN media m ON m.sha256 = rm.sha256 "
          "WHERE rm.gateway = $1 AND rm.seq = $2 AND m.sha256 IS NULL",
          {gateway, num(from)}, "finding missing media");
      for (int j = 0; j < missing.rows() && plan.request.media.size() < custody::kMaxResendMedia; ++j) {
        plan.request.media.push_back(missing.text(j, 0));
      }
      if (plan.request.media.empty()) {
        continue;
      }
      plan.why = "media of seq " + num(from);
    } else {
      // One request covers every hole up to the last one (and the lost tail past the highest seq seen):
      // records central already holds come back as duplicates and are dropped, and K holes do not take K
      // rounds of resend_after_ms.
      const auto max_seq = static_cast<std::uint64_t>(r.integer(i, 2));
      const std::uint64_t cap = from + custody::kMaxResendRange - 1;
      std::uint64_t to = 0;
      if (announced > max_seq) {
        to = announced;
      } else {
        PgResult last = conn_->exec(
            "SELECT max(s) FROM generate_series($2::bigint, $3::bigint) s WHERE NOT EXISTS (SELECT 1 FROM "
            "records "
            "WHERE gateway = $1 AND seq = s)",
            {gateway, num(from), num(std::min(max_seq, cap))}, "finding the last hole");
        to = last.is_null(0, 0) ? 0 : static_cast<std::uint64_t>(last.integer(0, 0));
      }
      if (to < from) {
        continue;
      }
      plan.request.from_seq = from;
      plan.request.to_seq = std::min(to, cap);
      plan.why = "seq " + num(from) + ".." + num(plan.request.to_seq) + " (" +
                 (next_seq == 0 ? "lost tail, announced " + num(announced) : "holes below " + num(max_seq)) +
                 ")";
    }
    const std::int64_t backoff =
        std::clamp<std::int64_t>(r.integer(i, 4) == 0 ? policy.retry_min_ms : r.integer(i, 4) * 2,
                                 policy.retry_min_ms, policy.retry_max_ms);
    conn_->exec(
        "UPDATE gateways SET next_request_ms = $2, request_backoff_ms = $3, resend_requests = "
        "resend_requests + 1 "
        "WHERE gateway = $1",
        {gateway, num(now_ms + backoff), num(backoff)}, "scheduling the next request");
    out.push_back(std::move(plan));
  }
  tx.commit();
  return out;
}

nlohmann::json CentralStore::status() {
  nlohmann::json gateways = nlohmann::json::array();
  PgResult r = conn_->exec(
      "SELECT g.gateway, g.watermark_seq, g.max_seq, g.announced_seq, g.last_seen_ms, g.receipt_seq, "
      "g.receipt_ms, "
      "g.resend_requests, g.forks, g.quarantined, g.quarantine_dropped, g.chain_break_seq, "
      "g.chain_break_reason, "
      "g.gap_since_ms, (SELECT count(*) FROM records x WHERE x.gateway = g.gateway), "
      "(SELECT string_agg(kid, ',' ORDER BY enrolled_ms) FROM gateway_keys k WHERE k.gateway = g.gateway), "
      "(SELECT COALESCE(json_agg(json_build_array(u.from_seq, u.to_seq)), '[]') FROM unrecoverable u "
      "WHERE u.gateway = g.gateway) FROM gateways g ORDER BY g.gateway",
      "reading status");
  for (int i = 0; i < r.rows(); ++i) {
    nlohmann::json g = {
        {"gateway", r.text(i, 0)},
        {"watermark", r.integer(i, 1)},
        {"max_seq", r.integer(i, 2)},
        {"announced_seq", r.integer(i, 3)},
        {"last_seen_ms", r.is_null(i, 4) ? nlohmann::json(nullptr) : nlohmann::json(r.integer(i, 4))},
        {"receipt_seq", r.integer(i, 5)},
        {"receipt_ms", r.is_null(i, 6) ? nlohmann::json(nullptr) : nlohmann::json(r.integer(i, 6))},
        {"resend_requests", r.integer(i, 7)},
        {"forks", r.integer(i, 8)},
        {"quarantined", r.integer(i, 9)},
        {"quarantine_dropped", r.integer(i, 10)},
        {"chain_break", r.is_null(i, 11)
                            ? nlohmann::json(nullptr)
                            : nlohmann::json{{"seq", r.integer(i, 11)}, {"reason", r.text(i, 12)}}},
        {"gap_open_since_ms", r.is_null(i, 13) ? nlohmann::json(nullptr) : nlohmann::json(r.integer(i, 13))},
        {"records", r.integer(i, 14)},
        {"kids", r.is_null(i, 15) ? "" : r.text(i, 15)},
        {"unrecoverable", nlohmann::json::parse(r.text(i, 16))},
    };
    gateways.push_back(std::move(g));
  }
  return {{"gateways", gateways}};
}

void CentralStore::export_chain(const std::string& gateway, std::uint64_t from,
                                const std::function<void(const std::string&)>& line) {
  std::uint64_t after = from == 0 ? 0 : from - 1;
  for (;;) {
    PgResult r =
        conn_->exec("SELECT seq, jws FROM records WHERE gateway = $1 AND seq > $2 ORDER BY seq LIMIT 5000",
                    {gateway, num(after)}, "exporting records");
    for (int i = 0; i < r.rows(); ++i) {
      line(r.text(i, 1));
      after = static_cast<std::uint64_t>(r.integer(i, 0));
    }
    if (r.rows() < 5000) {
      return;
    }
  }
}

}  // namespace cpd::central
