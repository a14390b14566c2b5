// CentralStore::choose_branch: an operator's way past a chain break or a fork (docs/custody.md, "Choosing a
// branch"). Two signed histories of one gateway share seqs; central holds one in `records` and the other's
// copies in `forks`. The operator names the tip of the branch to follow; central walks back from it along
// `prev` through records and forks to the chain it holds, re-checks every record of that branch against the
// gateway's enrolled keys, swaps the branch into the chain and sets the other branch aside (kept in forks,
// never deleted), all in one transaction, and keeps who, why and what in branch_choices.
#include <algorithm>
#include <map>
#include <set>

#include "central/central_store.h"
#include "central/key_rotation.h"
#include "daemon/core/record_check.h"

namespace cpd::central {

namespace {

std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) {
    out += (out.empty() ? "" : ",") + p;
  }
  return out;
}

// How far back a branch is followed: a branch is what a gateway sealed between two of central's views of
// it (a restored backup, a replaced store), never a whole history.
constexpr std::size_t kMaxBranchRecords = 100000;
// How far back the gap planner walks a branch (two queries a record, under the gateway's row lock) to find
// what it lacks; a longer branch is left to the operator (choose-branch refuses it, naming the record).
constexpr std::size_t kMaxPlannedBranchRecords = 10000;
// How many seqs one request for a branch's missing records asks for, ending at the one the walk lacks.
constexpr std::uint64_t kBranchRequestSeqs = 100;

}  // namespace

CentralStore::BranchWalk CentralStore::walk_branch(
    const std::string& gateway, std::uint64_t seq, std::string want, bool joining, std::size_t max_records,
    const std::function<std::optional<std::string>(std::uint64_t, const std::string&, const std::string&)>&
        prev_of) {
  // `seq` is the next record the branch needs and `want` its SHA-256: the chain central holds may have it
  // (`joining`: the branch joins the chain there), else the forks must. A tip among the forks is taken from
  // them (joining is false for it only).
  BranchWalk out;
  for (std::size_t taken = 0;; ++taken) {
    if (joining) {
      if (seq == 0) {
        if (want != std::string(64, '0')) {
          out.error = "the branch's record at seq 1 has a prev that is not 64 zeros";
        }
        return out;  // the branch goes back to the gateway's first record
      }
      const PgResult held =
          conn_->exec_prepared("SELECT jws_sha256 FROM records WHERE gateway = $1 AND seq = $2",
                               {gateway, std::to_string(seq)}, "walking a branch");
      if (held.rows() == 1 && held.text(0, 0) == want) {
        return out;  // joined the chain central holds
      }
    }
    if (taken == max_records) {
      out.error =
          "the branch is longer than " + std::to_string(static_cast<std::uint64_t>(max_records)) + " records";
      return out;
    }
    const PgResult f =
        conn_->exec_prepared("SELECT jws FROM forks WHERE gateway = $1 AND seq = $2 AND jws_sha256 = $3",
                             {gateway, std::to_string(seq), want}, "walking a branch");
    if (f.rows() == 0) {
      out.missing.emplace(seq, want);
      return out;
    }
    const std::optional<std::string> prev = prev_of(seq, want, f.text(0, 0));
    if (!prev) {
      return out;  // the caller said why
    }
    want = *prev;
    joining = true;
    --seq;
  }
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> CentralStore::branch_request(
    const std::string& gateway, std::uint64_t break_seq) {
  // The record at the chain break is the branch's tip; the forks' prev is read, not verified (this only
  // decides what to ask for: choose_branch verifies).
  const PgResult tip = conn_->exec_prepared("SELECT prev FROM records WHERE gateway = $1 AND seq = $2",
                                            {gateway, std::to_string(break_seq)}, "reading a chain break");
  if (tip.rows() != 1 || break_seq < 2) {
    return std::nullopt;
  }
  const BranchWalk walk = walk_branch(
      gateway, break_seq - 1, tip.text(0, 0), true, kMaxPlannedBranchRecords,
      [](std::uint64_t, const std::string&, const std::string& jws) -> std::optional<std::string> {
        const auto body = unverified_jws_part(jws, 1);
        if (!body || !body->contains("prev") || !(*body)["prev"].is_string()) {
          return std::nullopt;
        }
        return (*body)["prev"].get<std::string>();
      });
  if (!walk.missing || gateway_lacks(gateway, walk.missing->first).has_value()) {
    // Complete (or not walkable), or the gateway no longer holds what it lacks (choose-branch
    // --accept-break): nothing to ask for.
    return std::nullopt;
  }
  // The missing record and the 99 below it: a branch usually lacks a run of records, not one.
  const std::uint64_t to = walk.missing->first;
  return std::make_pair(to > kBranchRequestSeqs ? to - kBranchRequestSeqs + 1 : 1, to);
}

std::vector<IncomingRecord> CentralStore::verified_branch(const std::string& gateway, std::uint64_t tip_seq,
                                                          const std::string& tip_sha256, bool tip_in_records,
                                                          const std::string& tip_prev, std::string& refusal,
                                                          std::uint64_t& lacks) {
  TrustedKeys keys = trusted_keys();
  std::map<std::string, TrustedKey>& gateway_keys = keys[gateway];
  std::vector<IncomingRecord> incoming;  // the branch's fork records, checked again, tip first
  // Each fork of the branch is checked again as on arrival: a trusted key of this gateway, valid for its seq.
  const BranchWalk walk = walk_branch(
      gateway, tip_in_records ? tip_seq - 1 : tip_seq, tip_in_records ? tip_prev : tip_sha256, tip_in_records,
      kMaxBranchRecords, [&](std::uint64_t seq, const std::string& sha, const std::string& jws) {
        RecordCheck c = check_record(jws, [&](const std::string& kid) -> std::optional<Ed25519PublicKey> {
          const auto k = gateway_keys.find(kid);
          return k == gateway_keys.end() ? std::nullopt : std::optional<Ed25519PublicKey>(k->second.key);
        });
        if (!c.ok || c.seq != seq || c.gateway != gateway) {
          refusal = "the fork " + gateway + ":" + std::to_string(seq) +
                    " does not verify now: " + (c.ok ? "its body names another record" : c.reason);
          return std::optional<std::string>();
        }
        const TrustedKey& k = gateway_keys.at(c.kid);
        if (std::string why = key_range_refusal(c.kid, k.from_seq, k.to_seq, seq); !why.empty()) {
          refusal = "the fork " + gateway + ":" + std::to_string(seq) + ": " + why;
          return std::optional<std::string>();
        }
        incoming.push_back(IncomingRecord{gateway, seq, jws, sha, c.prev, c.kid, std::move(c.body),
                                          std::move(c.canonical_body)});
        return std::optional<std::string>(incoming.back().prev);
      });
  if (!refusal.empty()) {
    return incoming;  // a fork that does not verify now
  }
  if (!walk.error.empty()) {
    refusal = walk.error;
  } else if (walk.missing && !tip_in_records && incoming.empty()) {
    refusal = "central holds no record or fork " + gateway + ":" + std::to_string(tip_seq) +
              " with SHA-256 " + tip_sha256;
  } else if (walk.missing) {
    lacks = walk.missing->first;
    refusal = "the branch needs " + gateway + ":" + std::to_string(walk.missing->first) + " with SHA-256 " +
              walk.missing->second + ", which central holds neither in its chain nor among the forks";
    refusal += gateway_lacks(gateway, lacks).has_value()
                   ? " and the gateway reported it no longer holds (to follow the branch from the record "
                     "after it, accepting this one as lost: --accept-break)"
                   : " (while a chain break stands, central asks the gateway for the records the branch "
                     "lacks: what it still holds arrives as forks)";
  }
  return incoming;
}

std::pair<std::uint64_t, std::uint64_t> CentralStore::other_branch_above(const std::string& gateway,
                                                                         std::uint64_t to, std::string link) {
  std::uint64_t above_from = 0;  // 0: none
  std::uint64_t above_to = 0;
  const PgResult above = conn_->exec(
      "SELECT seq, prev, jws_sha256 FROM records WHERE gateway = $1 AND seq > $2::bigint ORDER BY seq LIMIT "
      "$3",
      {gateway, std::to_string(to), std::to_string(static_cast<std::uint64_t>(kMaxBranchRecords))},
      "reading records above a branch");
  std::uint64_t expect = to + 1;
  for (int i = 0; i < above.rows(); ++i, ++expect) {
    const auto seq = static_cast<std::uint64_t>(above.integer(i, 0));
    if (seq != expect) {
      break;  // a hole
    }
    if (above_from == 0 && above.text(i, 1) == link) {
      link = above.text(i, 2);  // still the chosen branch
      continue;
    }
    above_from = above_from == 0 ? seq : above_from;
    above_to = seq;
  }
  return {above_from, above_to};
}

std::vector<std::string> CentralStore::undo_rotations(const std::string& gateway, std::uint64_t a,
                                                      std::uint64_t b, std::uint64_t c, std::uint64_t d,
                                                      std::int64_t now_ms, std::vector<std::string>& said) {
  const char* what = "undoing the other branch's key rotations";
  const PgResult rotations = conn_->exec(
      "SELECT seq, kid FROM records WHERE gateway = $1 AND type = 'key_rotation' AND (seq BETWEEN $2::bigint "
      "AND $3::bigint OR seq BETWEEN $4::bigint AND $5::bigint) ORDER BY seq",
      {gateway, std::to_string(a), std::to_string(b), std::to_string(c), std::to_string(d)}, what);
  std::vector<std::string> undone;
  std::set<std::string> signers;
  for (int i = 0; i < rotations.rows(); ++i) {
    const std::string seq = rotations.text(i, 0);
    const PgResult gone = conn_->exec(
        "DELETE FROM gateway_keys WHERE gateway = $1 AND source = 'rotation:' || $2 RETURNING kid",
        {gateway, seq}, what);
    signers.insert(rotations.text(i, 1));
    for (int k = 0; k < gone.rows(); ++k) {
      undone.push_back(seq + ":" + gone.text(k, 0));
      said.push_back("key rotation at " + gateway + ":" + seq + " undone: kid " + gone.text(k, 0) +
                     " is no longer enrolled");
    }
  }
  // The signers' ranges, from what still cuts them once the other branch is out of `records`.
  for (const std::string& kid : signers) {
    const PgResult cut = conn_->exec(
        "SELECT k.valid_to_seq, LEAST(k.revoked_to_seq, (SELECT min(r.seq) FROM records r WHERE r.gateway = "
        "k.gateway AND r.kid = k.kid AND r.type = 'key_rotation' AND NOT (r.seq BETWEEN $3::bigint AND "
        "$4::bigint OR r.seq BETWEEN $5::bigint AND $6::bigint))) FROM gateway_keys k WHERE k.gateway = $1 "
        "AND "
        "k.kid = $2",
        {gateway, kid, std::to_string(a), std::to_string(b), std::to_string(c), std::to_string(d)}, what);
    // Only ever widened: not enrolled any more (rotated to within the other branch), still cut there, or
    // cut lower by what remains (the range is left as it is, never narrowed here).
    const bool widens =
        cut.rows() == 1 && !cut.is_null(0, 0) && (cut.is_null(0, 1) || cut.integer(0, 1) > cut.integer(0, 0));
    if (!widens) {
      continue;
    }
    conn_->exec(
        "UPDATE gateway_keys SET valid_to_seq = $3::bigint, widened_ms = $4::bigint WHERE gateway = $1 AND "
        "kid = "
        "$2",
        {gateway, kid, cut.is_null(0, 1) ? std::nullopt : std::optional<std::string>(cut.text(0, 1)),
         std::to_string(now_ms)},
        what);
    said.push_back("kid " + kid + " signs again " +
                   (cut.is_null(0, 1) ? std::string("with no end") : "through seq " + cut.text(0, 1)) +
                   " (was through seq " + cut.text(0, 0) +
                   "): records it signed after that are examined again");
  }
  return undone;
}

namespace {

// The branch's tip: the record central holds at `seq` (when `sha256` is empty or names it), else the fork of
// that seq with SHA-256 `sha256`. Empty when found (`out.tip_sha256` set, `prev` the held tip's prev), else
// the refusal.
std::string resolve_tip(PgConnection& conn, const std::string& gateway, std::uint64_t seq,
                        const std::string& sha256, bool& in_records, std::string& prev,
                        CentralStore::BranchChoice& out) {
  const PgResult row = conn.exec("SELECT jws_sha256, prev FROM records WHERE gateway = $1 AND seq = $2",
                                 {gateway, std::to_string(seq)}, "reading the branch's tip");
  in_records = row.rows() == 1 && (sha256.empty() || row.text(0, 0) == sha256);
  if (in_records) {
    out.tip_sha256 = row.text(0, 0);
    prev = row.text(0, 1);
    return {};
  }
  if (sha256.empty()) {
    return "central holds no record at seq " + std::to_string(seq) + " of \"" + gateway +
           "\" in its chain; name a fork with --tip SEQ:SHA-256";
  }
  out.tip_sha256 = sha256;
  return {};
}

// --accept-break past seq `lacks`, which the gateway said it no longer holds from `lost_from` on: refused
// (the reason) when the gateway still holds a record of its own right below what it lost (it came as a fork):
// then its branch goes on below, and central's records there are not the gateway's.
std::string accept_break_refusal(PgConnection& conn, const std::string& gateway, std::uint64_t lost_from,
                                 std::uint64_t lacks) {
  if (lost_from <= 1 ||
      conn.exec("SELECT 1 FROM forks WHERE gateway = $1 AND seq = $2",
                {gateway, std::to_string(lost_from - 1)}, "looking for the branch below what it lacks")
              .rows() == 0) {
    return {};
  }
  return "the gateway no longer holds seq " + std::to_string(lost_from) + ".." + std::to_string(lacks) +
         " of the branch, but holds another record than central's at seq " + std::to_string(lost_from - 1) +
         " (a fork): the branch goes on below what it lacks, and accepting seq " + std::to_string(lacks) +
         " as lost would keep central's other records there (nothing changed; choose-branch follows one "
         "branch without holes)";
}

// Custody walks again from before the branch at `from`; the next receipt names the chosen head.
void restart_custody_below(PgConnection& conn, const std::string& gateway, std::uint64_t from) {
  const PgResult base = conn.exec("SELECT jws_sha256 FROM records WHERE gateway = $1 AND seq = $2",
                                  {gateway, std::to_string(from - 1)}, "reading where the branch joins");
  const std::string base_hash = from == 1 || base.rows() == 0 ? std::string(64, '0') : base.text(0, 0);
  conn.exec(
      "UPDATE gateways SET watermark_hash = CASE WHEN watermark_seq >= $2::bigint THEN $3 ELSE "
      "watermark_hash "
      "END, watermark_seq = LEAST(watermark_seq, $2::bigint - 1), receipt_seq = LEAST(receipt_seq, "
      "$2::bigint - 1), chain_break_seq = NULL, chain_break_reason = NULL, gap_since_ms = NULL, "
      "request_backoff_ms = 0, next_request_ms = 0 WHERE gateway = $1",
      {gateway, std::to_string(from), base_hash}, "choosing a branch");
}

// The choice, kept in branch_choices: who, why, which seqs, what was set aside and undone.
void keep_choice(PgConnection& conn, const std::string& gateway, std::uint64_t tip_seq,
                 std::uint64_t taken_from, std::uint64_t to, std::uint64_t receipt_seq, bool past_receipt,
                 const std::string& reason, const std::string& by, std::int64_t now_ms,
                 const CentralStore::BranchChoice& out) {
  conn.exec(
      "INSERT INTO branch_choices (gateway, from_seq, to_seq, tip_seq, tip_sha256, set_aside, "
      "set_aside_from, set_aside_to, past_receipt, receipt_seq, reason, operator, chosen_ms, "
      "accepted_lost_seq, undone_rotations) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
      "$14, $15)",
      {gateway, std::to_string(taken_from), std::to_string(to), std::to_string(tip_seq), out.tip_sha256,
       std::to_string(out.set_aside), std::to_string(out.set_aside_from), std::to_string(out.set_aside_to),
       past_receipt ? "true" : "false", std::to_string(receipt_seq), reason, by, std::to_string(now_ms),
       out.accepted_lost != 0 ? std::optional<std::string>(std::to_string(out.accepted_lost)) : std::nullopt,
       out.undone_rotations.empty() ? std::nullopt
                                    : std::optional<std::string>(joined(out.undone_rotations))},
      "keeping an operator's choice of branch");
}

}  // namespace

void CentralStore::set_aside_other_branch(const std::string& gateway, std::uint64_t from, std::uint64_t to,
                                          std::pair<std::uint64_t, std::uint64_t> above,
                                          const std::string& reason, const std::string& by,
                                          std::int64_t now_ms, BranchChoice& out) {
  const auto [above_from, above_to] = above;
  out.undone_rotations = undo_rotations(gateway, from, to, above_from, above_to, now_ms, out.found);
  const char* what = "setting aside the other branch";
  const PgResult moved = conn_->exec(
      "WITH moved AS (DELETE FROM records WHERE gateway = $1 AND (seq BETWEEN $2::bigint AND $3::bigint OR "
      "seq BETWEEN $5::bigint AND $6::bigint) RETURNING gateway, seq, jws, jws_sha256), "
      "kept AS (INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms, set_aside) SELECT gateway, "
      "seq, "
      "jws, jws_sha256, $4::bigint, true FROM moved ON CONFLICT (gateway, seq, jws_sha256) DO UPDATE SET "
      "set_aside = true) "
      "SELECT count(*), COALESCE(min(seq), 0), COALESCE(max(seq), 0) FROM moved",
      {gateway, std::to_string(from), std::to_string(to), std::to_string(now_ms), std::to_string(above_from),
       std::to_string(above_to)},
      what);
  out.set_aside = static_cast<std::uint64_t>(moved.integer(0, 0));
  out.set_aside_from = static_cast<std::uint64_t>(moved.integer(0, 1));
  out.set_aside_to = static_cast<std::uint64_t>(moved.integer(0, 2));
  conn_->exec(
      "DELETE FROM record_media WHERE gateway = $1 AND (seq BETWEEN $2::bigint AND $3::bigint OR seq BETWEEN "
      "$4::bigint AND $5::bigint)",
      {gateway, std::to_string(from), std::to_string(to), std::to_string(above_from),
       std::to_string(above_to)},
      what);
  // What was reported or accepted as lost, and announced, from `from` on was about the other branch (as for a
  // followed replaced store): a receipt must not name as lost a record the chosen branch holds.
  forget_other_branch_after(gateway, from - 1, what);
  if (out.accepted_lost != 0) {
    conn_->exec(
        "INSERT INTO accepted_losses (gateway, from_seq, to_seq, reason, operator, accepted_ms) VALUES ($1, "
        "$2, $2, $3, $4, $5)",
        {gateway, std::to_string(out.accepted_lost), reason, by, std::to_string(now_ms)},
        "accepting the record a branch lacks");
  }
}

bool CentralStore::take_branch(const std::string& gateway, std::vector<IncomingRecord>& incoming,
                               std::int64_t now_ms) {
  // The branch into the chain, as if it had arrived now; its copies leave `forks`.
  std::reverse(incoming.begin(), incoming.end());
  BatchOutcome ignored;
  std::size_t inserted = 0;
  for (std::size_t i = 0; i < incoming.size(); i += 50) {
    inserted += insert_records(incoming, i, std::min(incoming.size(), i + 50), now_ms, ignored).size();
  }
  if (inserted != incoming.size()) {
    return false;  // a running instance stored a record at one of these seqs meanwhile
  }
  for (const IncomingRecord& r : incoming) {
    conn_->exec("DELETE FROM forks WHERE gateway = $1 AND seq = $2 AND jws_sha256 = $3",
                {gateway, std::to_string(r.seq), r.jws_sha256}, "moving a branch into the chain");
  }
  return true;
}

CentralStore::BranchChoice CentralStore::choose_branch(const std::string& gateway, std::uint64_t tip_seq,
                                                       const std::string& tip_sha256, BranchOptions options,
                                                       const std::string& reason, const std::string& by,
                                                       std::int64_t now_ms) {
  BranchChoice out;
  PgTransaction tx(*conn_);
  const PgResult g =
      conn_->exec("SELECT receipt_seq, chain_break_seq FROM gateways WHERE gateway = $1 FOR UPDATE",
                  {gateway}, "locking a gateway");
  if (g.rows() == 0) {
    out.refusal = "gateway \"" + gateway + "\" is not known to this central";
    return out;
  }
  const auto receipt_seq = static_cast<std::uint64_t>(g.integer(0, 0));
  if (tip_seq == 0 && g.is_null(0, 1)) {
    out.refusal = "gateway \"" + gateway + "\" has no chain break; name the branch's tip with --tip";
    return out;
  }
  tip_seq = tip_seq == 0 ? static_cast<std::uint64_t>(g.integer(0, 1)) : tip_seq;
  bool tip_in_records = false;
  std::string prev;  // of the tip when it is the record central holds
  if (out.refusal = resolve_tip(*conn_, gateway, tip_seq, tip_sha256, tip_in_records, prev, out);
      !out.refusal.empty()) {
    return out;
  }

  std::uint64_t lacks = 0;
  std::vector<IncomingRecord> incoming =
      verified_branch(gateway, tip_seq, out.tip_sha256, tip_in_records, prev, out.refusal, lacks);
  if (lacks != 0 && options.accept_break) {
    if (const auto lost_from = gateway_lacks(gateway, lacks)) {
      // Nobody holds the record the branch follows on from: the branch starts after it, and it is accepted
      // as lost (the walk passes it without a prev to check the next record against; receipts name it).
      out.refusal = accept_break_refusal(*conn_, gateway, *lost_from, lacks);
      out.accepted_lost = out.refusal.empty() ? lacks : 0;
    }
  }
  if (!out.refusal.empty()) {
    return out;
  }
  if (incoming.empty() && out.accepted_lost == 0) {
    out.refusal = "record " + gateway + ":" + std::to_string(tip_seq) +
                  " already follows on from the chain central holds (seq " + std::to_string(tip_seq - 1) +
                  "): there is no other branch to choose";
    return out;
  }
  // The first seq the branch replaces (with an accepted loss: that record's, held by central from the other
  // branch), and the branch's last record among the forks.
  const std::uint64_t from = out.accepted_lost != 0 ? out.accepted_lost : incoming.back().seq;
  const std::uint64_t to = incoming.empty() ? from : incoming.front().seq;
  const std::uint64_t taken_from = incoming.empty() ? to + 1 : incoming.back().seq;  // to + 1: none taken
  if (from <= receipt_seq && !options.past_receipt) {
    out.refusal = "central confirmed " + gateway + " through seq " + std::to_string(receipt_seq) +
                  " (custody receipt), and the branch replaces seq " + std::to_string(from) + ".." +
                  std::to_string(std::min(to, receipt_seq)) +
                  " of it; when the gateway no longer holds what central confirmed (a restored backup, a "
                  "replaced store), give --past-receipt";
    return out;
  }

  // The other branch: every record from `from` through the branch's last fork, and, when the tip was a
  // fork, the run of records right above it from the first that does not follow on from it up to the next
  // hole (they follow on from the other branch; those after a hole are left for the walk to check).
  set_aside_other_branch(gateway, from, to,
                         tip_in_records ? std::pair<std::uint64_t, std::uint64_t>{0, 0}
                                        : other_branch_above(gateway, to, incoming.front().jws_sha256),
                         reason, by, now_ms, out);
  if (!take_branch(gateway, incoming, now_ms)) {
    // A running instance stored a record at one of these seqs meanwhile (a hole the branch fills): nothing
    // is changed (the transaction rolls back), the operator runs the command again.
    out.refusal = "a running instance stored a record of " + gateway + " between seq " +
                  std::to_string(from) + " and " + std::to_string(to) + " meanwhile; run the command again";
    return out;
  }
  restart_custody_below(*conn_, gateway, from);
  keep_choice(*conn_, gateway, tip_seq, taken_from, to, receipt_seq, options.past_receipt, reason, by, now_ms,
              out);
  out.from_seq = taken_from;
  out.to_seq = to;
  out.watermark = walk_for_operator(gateway, now_ms, out.found);
  tx.commit();
  out.chosen = true;
  return out;
}

}  // namespace cpd::central
