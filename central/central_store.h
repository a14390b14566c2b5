// CentralStore: every gateway's chain in PostgreSQL. All chain state lives here (not in an instance's
// memory), so any number of checkpoint-central instances can take any record in any order: a record is
// stored as soon as its signature verifies, and a gateway's watermark (the contiguous, chain-linked,
// media-complete prefix) advances under a row lock on that gateway.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
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
  std::string
      body_text;  // the body's signed bytes (canonical JSON) for the `body` column; empty: body.dump()
};

struct IncomingMedia {
  std::string gateway;  // the topic's gateway
  std::string sha256;
  std::uint64_t bytes = 0;
  std::string path;  // where the file now is (written and fsync'd before the batch commits)
};

// A message kept aside, never trusted: a record that failed a check, anything from a gateway that is not
// enrolled, a resend reply nobody asked for. The same bytes on the same gateway and topic are one row with a
// count; rows are bounded (QuarantineBounds), beyond which messages are only counted.
struct QuarantineEntry {
  std::string gateway;
  std::string
      topic;  // what follows <prefix>/<gateway>/: "evidence", "media/<sha>", "head", "resend/response"
  std::optional<std::uint64_t> seq;
  std::string kid;
  std::string payload;         // the bytes kept (the whole payload, or its first 1024 bytes when larger)
  std::string payload_sha256;  // SHA-256 of the whole payload (the deduplication key)
  std::uint64_t bytes = 0;     // size of the whole payload
  std::string reason;
  bool enrolled = true;     // the gateway is enrolled (its usage row exists beyond the bounds)
  std::uint64_t count = 1;  // copies of these bytes in this batch
};

struct QuarantineBounds {
  std::int64_t rows_per_gateway = 100000;
  std::int64_t bytes_per_gateway = 64LL << 20;
  std::int64_t rows = 1000000;
  std::int64_t bytes = 1024LL << 20;
};

// A head announcement that verified, with its JWS (kept when it contradicts the stored chain).
struct AnnouncedHead {
  custody::Head head;
  std::string jws;
};

// A resend reply, with the Correlation Data it came with: only a reply to an open request is believed.
struct IncomingReply {
  std::string gateway;
  std::string correlation;
  custody::ResendReply reply;
  std::string payload;  // quarantined when no open request has this correlation
};

// A key trusted for one gateway over a range of its seqs (gateway_keys.valid_from_seq..valid_to_seq): an
// enrolled key from 1 (or `enroll --from-seq`), open-ended; a key rotated away from through its key_rotation
// record's seq; the key it names from the next seq on (docs/custody.md, "Key trust").
struct TrustedKey {
  Ed25519PublicKey key;
  std::uint64_t from_seq = 1;
  std::optional<std::uint64_t> to_seq;  // nullopt: no end
};
using TrustedKeys = std::map<std::string, std::map<std::string, TrustedKey>>;

// A quarantined message taken out again to be re-examined once a key of its gateway has been enrolled.
struct QuarantinedMessage {
  std::int64_t id = 0;
  std::string gateway;
  std::string topic;  // "evidence", "media", "head"
  std::string payload;
  std::string payload_sha256;
};

struct Batch {
  std::vector<IncomingRecord> records;
  std::vector<IncomingMedia> media;
  std::vector<QuarantineEntry> quarantine;
  std::vector<AnnouncedHead> heads;
  std::vector<IncomingReply> replies;
  std::vector<std::int64_t> resolved_quarantine;  // quarantine ids taken into this batch (deleted with it)
  bool empty() const {
    return records.empty() && media.empty() && quarantine.empty() && heads.empty() && replies.empty() &&
           resolved_quarantine.empty();
  }
};

// Forks kept per gateway (rows of `forks`, set-aside records included): a cloned gateway sealing as fast as
// the real one adds one per record, so beyond this a fork is alarmed and counted but not kept.
inline constexpr long long kMaxForksPerGateway = 10000;

struct BatchOutcome {
  std::uint64_t stored = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t forks = 0;
  std::uint64_t quarantined = 0;
  std::uint64_t quarantine_duplicates = 0;  // copies of a quarantined payload (its row's count grew)
  std::uint64_t quarantine_dropped = 0;     // beyond the quarantine bounds: counted only
  std::uint64_t media_stored = 0;
  std::uint64_t head_forks = 0;
  std::uint64_t unsolicited_replies = 0;    // resend replies to no open request (quarantined)
  std::uint64_t unrecoverable_media = 0;    // pictures newly noted as no longer held
  std::uint64_t quarantine_resolved = 0;    // quarantine rows taken into the intake (deleted)
  std::uint64_t forks_dropped = 0;          // forks beyond kMaxForksPerGateway: counted, alarmed, not kept
  std::vector<std::string> fork_ids;        // gateway:seq of each fork, for the alarm line
  std::vector<std::string> forks_not_kept;  // gateway:seq of each fork dropped at the bound
  std::vector<std::string> late_in_lost_holes;  // gw:seq stored where custody passed an accepted loss
  std::vector<std::string> head_fork_lines;     // "gateway:seq announced H, stored S"
  std::vector<std::string> chain_breaks;        // "gateway:seq: reason"
  std::vector<std::string>
      retired_set_aside;                    // "gateway:seq: reason" (found under a retired key when walked)
  std::vector<std::string> unrecoverable;   // "gateway: seq a..b" / "gateway: picture <sha> of seq N"
  std::vector<std::string> reply_errors;    // "gateway: error" (a refused request)
  std::vector<std::string> chain_restarts;  // "gateway:seq kind: reason" (store_replaced, new_chain)
  std::vector<custody::Receipt> receipts;   // to publish (retained) once committed
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
  std::string why;          // "hole 41..57", "tail 101..130 (announced 130)", "media of seq 12"
  std::string correlation;  // the request's Correlation Data (decimal text), kept in resend_open
};

struct GapPolicy {
  std::int64_t resend_after_ms = 10000;
  std::int64_t retry_min_ms = 5000;
  std::int64_t retry_max_ms = 300000;
};

class CentralStore {
 public:
  // The schema version is the number of schema steps (central_store.cpp, kSteps).
  static int schema_version();

  // Connects and brings the schema to schema_version() (under an advisory lock: instances may start
  // together).
  explicit CentralStore(const std::string& conninfo, QuarantineBounds quarantine = {});

  // Recomputes the quarantine usage rows from the table (at an instance's start: an operator may have
  // deleted quarantine rows).
  void recount_quarantine();

  // Trusts `public_key` for `gateway` from seq `from_seq` on (idempotent: a kid already enrolled keeps its
  // row). `source` says how: "enroll", "keys_dir:<file>". Returns false when the kid was enrolled already.
  bool enroll(const std::string& gateway, const Ed25519PublicKey& public_key, const std::string& source,
              std::int64_t now_ms, std::uint64_t from_seq = 1);
  // Revokes a leaked key: it signs nothing valid after `after_seq` (its valid_to_seq becomes the smaller of
  // the two). Records it signed after that and were stored before stay stored (counted in `stored_after`, for
  // an operator to review); later ones are quarantined and alarmed as a retired key's. nullopt: no such key.
  struct Revocation {
    std::uint64_t valid_from_seq = 0;
    std::uint64_t valid_to_seq = 0;
    long long stored_after = 0;
  };
  std::optional<Revocation> revoke_key(const std::string& gateway, const std::string& kid,
                                       std::uint64_t after_seq);
  // An operator accepts a loss (docs/custody.md, "Accepting a loss"): a seq range (`seqs`) or a picture
  // (`picture`) the gateway reported it no longer holds (`unrecoverable`, `unrecoverable_media`) and central
  // does not hold. The watermark passes it at once; later receipts name it (lost_seqs, lost_pictures).
  // Refused (nothing changes) for anything else, with the reason.
  struct LossAcceptance {
    bool accepted = false;
    std::string refusal;
    std::uint64_t watermark = 0;     // after the acceptance
    std::vector<std::string> found;  // what the walk found on its way: "CHAIN BREAK at …", "RETIRED KEY: …"
  };
  LossAcceptance accept_loss(const std::string& gateway,
                             std::optional<std::pair<std::uint64_t, std::uint64_t>> seqs,
                             const std::string& picture, const std::string& reason, const std::string& by,
                             std::int64_t now_ms);
  // An operator chooses which of two branches of a gateway's chain central follows (docs/custody.md,
  // "Choosing a branch"): the branch ending at record `tip_seq` (in the chain, or the fork whose SHA-256 is
  // `tip_sha256`; tip_seq 0: the record at the standing chain break) is walked back along `prev` through the
  // forks to the chain central holds, each of its records checked again under the gateway's keys; the other
  // branch is set aside into forks (kept) and the chosen one takes its seqs, in one transaction kept in
  // branch_choices. Refused (nothing changes) when the branch is incomplete, or replaces what a receipt
  // confirmed without `past_receipt`. With `accept_break`, a branch that lacks a record the gateway reported
  // it no longer holds starts after it: that record is accepted as lost (receipts name it) and central's
  // record at its seq, of the other branch, is set aside with the rest.
  struct BranchChoice {
    bool chosen = false;
    std::string refusal;
    std::uint64_t from_seq = 0;  // the seqs the branch's records from the forks took
    std::uint64_t to_seq = 0;
    std::string tip_sha256;
    std::uint64_t set_aside = 0;  // records of the other branch moved into forks, seqs a..b
    std::uint64_t set_aside_from = 0;
    std::uint64_t set_aside_to = 0;
    std::uint64_t watermark = 0;      // after the choice
    std::uint64_t accepted_lost = 0;  // accept_break: the record the branch follows on from (0: none)
    std::vector<std::string> undone_rotations;  // "seq:new_kid" of each key rotation set aside and undone
    std::vector<std::string> found;             // what the walk found on its way, as for accept_loss
  };
  struct BranchOptions {
    bool past_receipt = false;
    bool accept_break = false;
  };
  BranchChoice choose_branch(const std::string& gateway, std::uint64_t tip_seq, const std::string& tip_sha256,
                             BranchOptions options, const std::string& reason, const std::string& by,
                             std::int64_t now_ms);
  // An operator discards quarantine rows of `gateway` (checkpoint-central discard-quarantine): those with an
  // id in `ids` (all when empty) last seen before `seen_before_ms` (any time when unset). They are deleted
  // and uncounted in one transaction, which also keeps who, why, when and how many in quarantine_discards.
  struct QuarantineDiscard {
    std::int64_t rows = 0;
    std::int64_t bytes = 0;
  };
  // Discards every quarantine row last seen before now_ms - max_age_ms (feed.quarantine_max_age_days), one
  // discard per gateway as an operator's would be (kept in quarantine_discards, operator
  // "checkpoint-central", reason naming the setting). Returns (gateway, discard) for each gateway that had
  // such rows.
  std::vector<std::pair<std::string, QuarantineDiscard>> expire_quarantine(std::int64_t now_ms,
                                                                           std::int64_t max_age_ms,
                                                                           const std::string& reason);
  QuarantineDiscard discard_quarantine(const std::string& gateway, const std::vector<std::int64_t>& ids,
                                       std::optional<std::int64_t> seen_before_ms, const std::string& reason,
                                       const std::string& by, std::int64_t now_ms);
  // gateway -> kid -> key and its seq range, for every enrolled gateway.
  TrustedKeys trusted_keys();
  // The committed seq ranges of these (gateway, kid) pairs (rows that exist): the authority an instance's
  // cache (up to 5 s old) is checked against before a batch is stored.
  std::map<std::pair<std::string, std::string>, std::pair<std::uint64_t, std::optional<std::uint64_t>>>
  key_ranges(const std::set<std::pair<std::string, std::string>>& gateway_kids);

  // Quarantined messages (evidence, media, head; kept whole) of enrolled gateways that were last examined
  // (quarantined or re-examined) before the gateway's latest key enrolment, oldest first, at most `limit`.
  std::vector<QuarantinedMessage> quarantine_to_reexamine(std::size_t limit);
  // The latest enrolled_ms in gateway_keys (0: none): whether a re-examination can find anything new.
  std::int64_t latest_enrolment_ms();
  // Re-examined and still not trusted: not taken out again until the gateway's next enrolment.
  void mark_reexamined(const std::vector<std::int64_t>& ids, std::int64_t examined_ms);
  // Quarantine rows (newest last seen first, at most `limit`), of one gateway or all (`quarantine` command).
  nlohmann::json quarantine_rows(const std::string& gateway, std::int64_t limit);

  // One transaction: records (duplicates dropped, forks kept aside), media, quarantine, announced heads,
  // not-held ranges; then each touched gateway's watermark advanced under its row lock, and a receipt
  // decided when the policy says so.
  BatchOutcome store_batch(const Batch& batch, std::int64_t now_ms, const ReceiptPolicy& policy);

  // Receipts due by time (watermark moved and every_ms passed, or the last one older than 10 x every_ms).
  std::vector<custody::Receipt> due_receipts(std::int64_t now_ms, const ReceiptPolicy& policy);

  // Gaps old enough to ask for again (rows locked with SKIP LOCKED: instances share the work); the next
  // request time is pushed back with doubling backoff.
  std::vector<ResendPlan> plan_resends(std::int64_t now_ms, const GapPolicy& policy);

  // Per gateway: watermark, gaps, receipts, keys, forks, quarantine, unrecoverable ranges and pictures; the
  // quarantine's totals and the gateways that are not enrolled (the `status` command and metrics).
  nlohmann::json status();
  // The stored JWS of `gateway` from seq `from` on, in seq order, as lines (`export`).
  void export_chain(const std::string& gateway, std::uint64_t from,
                    const std::function<void(const std::string&)>& line);

  PgConnection& connection() { return *conn_; }

 private:
  nlohmann::json status_gateways();
  nlohmann::json status_quarantine();
  nlohmann::json status_unknown_gateways();
  // Head announcements kept per gateway until their records arrive (docs/custody.md).
  static constexpr int kMaxKeptAnnouncements = 64;

  void migrate();
  custody::Receipt receipt(const std::string& central_id, const std::string& gateway,
                           std::uint64_t through_seq, const std::string& head, std::int64_t now_ms);
  // Moves record gateway:seq out of `records` into `forks` (a record under a key outside its seq range).
  void set_aside_retired(const std::string& gateway, std::uint64_t seq, const std::string& why,
                         std::int64_t now_ms, BatchOutcome& out);
  void advance(const std::string& gateway, std::int64_t now_ms, const ReceiptPolicy& policy,
               BatchOutcome& out);
  // store_replies' parts for a reply to an open request (`open`: its resend_open row): the seqs and the
  // pictures the gateway said it no longer holds, noted within what was asked and is not in custody.
  void note_seqs_not_held(const IncomingReply& r, const PgResult& open, const std::string& now,
                          BatchOutcome& out);
  void note_media_not_held(const IncomingReply& r, const PgResult& open, const std::string& now,
                           BatchOutcome& out);
  // store_batch's record whose seq was held already: a duplicate (the same bytes), taken after all (its seq
  // freed by a followed replaced store), or a fork (other bytes: both kept). Returns the seqs it took.
  std::set<std::pair<std::string, std::uint64_t>> store_second_copy(
      const std::vector<IncomingRecord>& records, std::size_t i, std::int64_t now_ms, BatchOutcome& out);
  // advance()'s walk: from the watermark (wm, wm_hash) along the records that follow on, past accepted
  // losses, setting aside a record under a key outside its range; returns a chain break when one is met.
  std::optional<std::string> walk_watermark(const std::string& gateway, std::uint64_t& wm,
                                            std::string& wm_hash, std::int64_t now_ms, BatchOutcome& out);
  // A branch of a gateway's chain walked back along `prev` from a tip (branch_choice.cpp): the first record
  // it lacks (seq, SHA-256) when central holds it nowhere, or why the walk stopped.
  struct BranchWalk {
    std::optional<std::pair<std::uint64_t, std::string>> missing;
    std::string error;
  };
  // `prev_of(seq, sha256, jws)` of each fork taken gives its prev (nullopt: stop, the caller knows why).
  BranchWalk walk_branch(const std::string& gateway, std::uint64_t seq, std::string want, bool joining,
                         std::size_t max_records,
                         const std::function<std::optional<std::string>(std::uint64_t, const std::string&,
                                                                        const std::string&)>& prev_of);
  // The branch ending at the tip (the record central holds at `tip_seq`, whose prev is `tip_prev`, or the
  // fork with `tip_sha256`), walked back to the chain: its records taken from the forks, tip first, each
  // verified again under the gateway's keys and their ranges. `refusal` says why it cannot be chosen.
  // `lacks` is set to the seq of a record the branch needs that central holds nowhere (with that refusal).
  std::vector<IncomingRecord> verified_branch(const std::string& gateway, std::uint64_t tip_seq,
                                              const std::string& tip_sha256, bool tip_in_records,
                                              const std::string& tip_prev, std::string& refusal,
                                              std::uint64_t& lacks);
  // Resend replies' not_held at or below the watermark (branch_not_held); whether the gateway said it no
  // longer holds `seq` (there or in unrecoverable), and if so from which seq on it lacks every one up to it.
  void note_branch_not_held(const std::string& gateway,
                            std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges,
                            const std::string& now);
  std::optional<std::uint64_t> gateway_lacks(const std::string& gateway, std::uint64_t seq);
  // Records this batch stored at seqs at or below the gateway's watermark (holes accepted as lost) go to
  // forks instead.
  void set_aside_below_watermark(const std::string& gateway, const std::vector<std::uint64_t>& seqs,
                                 std::uint64_t watermark, const std::string& now, BatchOutcome& out);
  // Above a branch whose last record is `to` with SHA-256 `link`: the run of held records (seqs a..b; 0 0 for
  // none) from the first that does not follow on from it up to the next hole (they follow on from the other
  // branch).
  std::pair<std::uint64_t, std::uint64_t> other_branch_above(const std::string& gateway, std::uint64_t to,
                                                             std::string link);
  // Inside choose_branch, before the other branch (seqs a..b and c..d) leaves `records`: undoes the key
  // rotations its key_rotation records made. The key each enrolled (source rotation:<seq>) is enrolled no
  // more; the key that signed it gets its range back, recomputed from what still cuts it (the operator's
  // revoke-key bound, its key_rotation records outside the set-aside seqs). Returns one line per rotation
  // undone ("seq:new_kid").
  // Inside choose_branch: the other branch (seqs from..to and `above`) out of `records` into forks, with its
  // key rotations undone, its media links, losses and announcements forgotten, and the loss it accepts.
  void set_aside_other_branch(const std::string& gateway, std::uint64_t from, std::uint64_t to,
                              std::pair<std::uint64_t, std::uint64_t> above, const std::string& reason,
                              const std::string& by, std::int64_t now_ms, BranchChoice& out);
  // Inside choose_branch: the branch's records (tip first) into `records`, out of `forks`; false when a
  // running instance stored a record at one of their seqs meanwhile.
  bool take_branch(const std::string& gateway, std::vector<IncomingRecord>& incoming, std::int64_t now_ms);
  std::vector<std::string> undo_rotations(const std::string& gateway, std::uint64_t a, std::uint64_t b,
                                          std::uint64_t c, std::uint64_t d, std::int64_t now_ms,
                                          std::vector<std::string>& said);
  // While a chain break at `break_seq` stands: the seqs to ask the gateway for so that the branch the break's
  // record follows on from is complete among the forks (nullopt: it is, or cannot be walked).
  std::optional<std::pair<std::uint64_t, std::uint64_t>> branch_request(const std::string& gateway,
                                                                        std::uint64_t break_seq);
  // After an operator's decision (accept_loss, choose_branch): the walk at once, without a receipt; what it
  // found on its way goes into `found` ("CHAIN BREAK at …", "RETIRED KEY: …"). Returns the watermark.
  std::uint64_t walk_for_operator(const std::string& gateway, std::int64_t now_ms,
                                  std::vector<std::string>& found);
  // Why one more loss of this kind cannot be accepted for `gateway` (a receipt names at most kMaxLosses);
  // empty when it can.
  std::string losses_full(const std::string& gateway, const char* table, const char* same,
                          const std::string& key, const char* what);
  void store_quarantine(const std::vector<QuarantineEntry>& entries, const std::string& now,
                        BatchOutcome& out);
  void store_replies(const std::vector<IncomingReply>& replies, std::int64_t now_ms,
                     std::vector<QuarantineEntry>& unsolicited, BatchOutcome& out);
  // `followed`: what follow_replaced_store did, appended to the reason (the row is updated if it exists).
  void note_chain_restart(const IncomingRecord& rec, bool as_fork, const std::string& now, BatchOutcome& out,
                          const std::string& followed = "");
  // Inserts records[from, to) in one multi-row INSERT, names their pictures (record_media), enrols the keys
  // their rotations name and notes chain restarts; returns those that were new (the others' seqs were held).
  // The indexes of `records` whose very bytes central set aside from the chain before (forks.set_aside).
  std::set<std::size_t> copies_set_aside(const std::vector<IncomingRecord>& records);
  std::set<std::pair<std::string, std::uint64_t>> insert_records(const std::vector<IncomingRecord>& records,
                                                                 std::size_t from, std::size_t to,
                                                                 std::int64_t now_ms, BatchOutcome& out);
  // A store_replaced record (stored, or in hand as a fork) whose gateway central never confirmed beyond the
  // receipt it continues after: the old chain's records after that receipt are set aside into forks, and
  // custody follows the continued chain. False (nothing changed) in every other case.
  bool follow_replaced_store(const IncomingRecord& rec, std::int64_t now_ms, BatchOutcome& out);
  // Kept head announcements, unrecoverable ranges and accepted losses after seq `n` were about a branch set
  // aside (a followed replaced store, an operator's choice of branch): dropped, or cut at n.
  void forget_other_branch_after(const std::string& gateway, std::uint64_t n, const char* what);
  // The last seq of the known losses (unrecoverable, accepted) that run on from wm + 1; wm when none.
  std::uint64_t past_known_losses(const std::string& gateway, std::uint64_t wm);
  // What to ask for when record watermark+1 is missing or waits for its pictures (plan_resends): the
  // pictures, or every hole up to the last one and the lost tail. False: nothing to ask.
  bool plan_holes(const std::string& gateway, std::uint64_t wm, std::uint64_t max_seq,
                  std::uint64_t announced, ResendPlan& plan);
  // Keeps a request sent (its Correlation Data and what it asked; `media_seq`: the record its pictures are
  // for), forgetting all but the last 16 of the gateway's.
  void remember_request(const ResendPlan& plan, std::uint64_t media_seq, std::int64_t now_ms);
  void store_heads(const std::vector<AnnouncedHead>& heads, const std::string& now, BatchOutcome& out);
  // Keeps an announcement whose record is not stored yet, for compare_with_announced (at most
  // kMaxKeptAnnouncements per gateway).
  void keep_announcement(const AnnouncedHead& a, const std::string& now);
  // Records of `gateway` now stored at a seq a kept announcement named, with another hash: head forks found
  // when the record arrives after the announcement (compared announcements are dropped).
  void compare_with_announced(const std::string& gateway, const std::string& now, BatchOutcome& out);
  // Keeps (deduplicated, at most 1000 per gateway), counts and reports a head fork.
  void note_head_fork(const std::string& gateway, std::uint64_t seq, const std::string& announced_hash,
                      const std::string& stored_hash, const std::string& announcement_jws,
                      const std::string& now, BatchOutcome& out);
  void resolve_quarantine(const std::vector<std::int64_t>& ids, const std::string& now, BatchOutcome& out);

  std::unique_ptr<PgConnection> conn_;
  QuarantineBounds bounds_;
};

}  // namespace cpd::central
