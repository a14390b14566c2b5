// CustodyAgent (see the header): receipts checked against this store before anything changes, resends
// paced so live records keep flowing, retention only inside custody.
#include "daemon/app/custody_agent.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::app {

namespace {

constexpr std::size_t kResendChunk = 100;  // records read from the store per step of a resend
// Pictures read per step: a step ends after the record whose pictures reach it (100 speeding records of four
// 0.5 MB pictures would otherwise hold 200 MB at once).
constexpr std::size_t kResendChunkMediaBytes = 16u << 20;
constexpr int kPruneRoundsPerTick = 25;  // x 2000 records: a long backlog is pruned over several ticks
constexpr std::size_t kPruneBatch = 2000;
constexpr UnixMs kDayMs = 24LL * 3600 * 1000;

void add_not_held(std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, std::uint64_t lo,
                  std::uint64_t hi) {
  if (!ranges.empty() && ranges.back().second + 1 == lo) {
    ranges.back().second = hi;
  } else {
    ranges.emplace_back(lo, hi);
  }
}

// created_ms of the first record still held after `through` (nothing in custody: through 0, the first held).
std::optional<UnixMs> oldest_outside_custody(const store::EvidenceStore& store, std::uint64_t through) {
  const auto next = store.record(through == 0 ? store.first_seq() : through + 1);
  return next ? std::optional<UnixMs>(next->created_ms) : std::nullopt;
}

// The `custody` fact sealed for an accepted receipt.
Fact custody_fact(const custody::Receipt& receipt, const std::string& kid, const std::string& jws,
                  UnixMs time_ms) {
  Fact fact;
  fact.type = "custody";
  fact.time_ms = time_ms;
  fact.fields = {{"central", receipt.central},
                 {"central_kid", kid},
                 {"through_seq", receipt.through_seq},
                 {"head", receipt.head},
                 {"issued_ms", receipt.issued_ms},
                 {"receipt_sha256", sha256_hex(jws)},
                 {"receipt", jws}};
  // What central says it does not hold (losses an operator accepted there), in the chain as it came.
  if (!receipt.lost_seqs.empty()) {
    fact.fields["lost_seqs"] = nlohmann::json::array();
    for (const auto& [from, to] : receipt.lost_seqs) {
      fact.fields["lost_seqs"].push_back({from, to});
    }
  }
  if (!receipt.lost_pictures.empty()) {
    fact.fields["lost_pictures"] = receipt.lost_pictures;
  }
  return fact;
}

}  // namespace

CustodyAgent::CustodyAgent(boost::asio::io_context& io, const config::Config& cfg,
                           const Ed25519PrivateKey& gateway_key, forwarder::SideChannel& channel,
                           CustodyHost host, const WallClock& clock)
    : io_(io),
      strand_(boost::asio::make_strand(io)),
      cfg_(cfg.custody),
      retention_days_(cfg.store.retention_days),
      gateway_(cfg.gateway.id),
      prefix_(cfg.mqtt.topic_prefix),
      gateway_key_(gateway_key),
      channel_(channel),
      host_(std::move(host)),
      clock_(clock),
      head_timer_(strand_),
      retention_timer_(strand_),
      pace_timer_(strand_),
      origin_timer_(strand_) {
  for (const std::string& pem : cfg_.central_keys_pem) {
    const auto key = Ed25519PublicKey::from_pem(pem);
    central_keys_.emplace(key.kid(), key);
  }
}

CustodyAgent::~CustodyAgent() = default;

void CustodyAgent::add_topics(std::vector<std::string> topics, forwarder::SideChannel::Handler handler) {
  extra_topics_ = std::move(topics);
  extra_handler_ = std::move(handler);
}

void CustodyAgent::start() {
  const std::string base = prefix_ + "/" + gateway_ + "/";
  std::vector<std::string> topics = {base + "custody", base + "resend"};
  topics.insert(topics.end(), extra_topics_.begin(), extra_topics_.end());
  channel_.set_subscriptions(std::move(topics), [this](forwarder::InboundMessage m) {
    if (extra_handler_ &&
        std::find(extra_topics_.begin(), extra_topics_.end(), m.topic) != extra_topics_.end()) {
      extra_handler_(std::move(m));
      return;
    }
    // Already on the forwarder's strand; hop to ours so all agent state has one owner. The hop is bounded: a
    // peer flooding these topics holds at most kMaxInputsWaiting messages (kMaxInputBytesWaiting) in memory
    // and ahead of live work on the io thread; beyond, a message is dropped and counted (central sends its
    // receipt again and asks again for what a dropped request wanted).
    const std::size_t bytes =
        m.topic.size() + m.payload.size() + m.response_topic.size() + m.correlation_data.value_or("").size();
    if (inputs_waiting_ >= kMaxInputsWaiting || inputs_waiting_bytes_ + bytes > kMaxInputBytesWaiting) {
      drop_input(m.topic);
      return;
    }
    ++inputs_waiting_;
    inputs_waiting_bytes_ += bytes;
    boost::asio::post(strand_, [this, bytes, m = std::move(m)]() mutable {
      --inputs_waiting_;
      inputs_waiting_bytes_ -= bytes;
      on_message(std::move(m));
    });
  });
  host_.run_on_store([this](store::EvidenceStore& store) {
    auto state = store.custody();
    const std::optional<UnixMs> oldest = oldest_outside_custody(store, state ? state->through_seq : 0);
    {
      std::lock_guard lock(snapshot_mutex_);
      custody_ = state;
      oldest_outside_ms_ = oldest;
    }
    boost::asio::post(strand_, [this, through = state ? state->through_seq : 0] {
      accepted_through_ = std::max(accepted_through_, through);
      accepting_through_ = std::max(accepting_through_, through);
    });
  });
  boost::asio::post(strand_, [this] {
    schedule_head();
    schedule_retention();
  });
}

void CustodyAgent::await_origin(std::chrono::milliseconds wait, OriginDecided decided) {
  boost::asio::post(strand_, [this, wait, decided = std::move(decided)]() mutable {
    origin_decided_ = std::move(decided);
    origin_timer_.expires_after(wait);
    origin_timer_.async_wait([this, wait](boost::system::error_code ec) {
      if (!ec) {
        decide_origin(std::nullopt, "no custody receipt within " + std::to_string(wait.count()) +
                                        " ms (custody.empty_store_wait_ms)");
      }
    });
  });
}

void CustodyAgent::decide_origin(std::optional<store::CustodyState> receipt, std::string why) {
  if (!origin_decided_) {
    return;
  }
  origin_timer_.cancel();
  OriginDecided decided = std::move(origin_decided_);
  origin_decided_ = nullptr;
  if (receipt) {
    accepted_through_ = std::max(accepted_through_, receipt->through_seq);
    accepting_through_ = std::max(accepting_through_, receipt->through_seq);
  }
  decided(std::move(receipt), std::move(why));
}

void CustodyAgent::origin_failed() {
  // The chain did not continue after the receipt (a new chain starts at seq 1): the receipt was not taken, so
  // later receipts are checked as if it had never come (a refused or unused receipt leaves no trace).
  boost::asio::post(strand_, [this] { forget_untaken_receipts(); });
}

void CustodyAgent::forget_untaken_receipts() {
  std::uint64_t stored = 0;
  {
    std::lock_guard lock(snapshot_mutex_);
    stored = custody_ ? custody_->through_seq : 0;
  }
  accepted_through_ = stored;
  accepting_through_ = std::max(stored, checking_.empty() ? 0 : *checking_.rbegin());
  take_up_deferred();
}

void CustodyAgent::origin_committed(const store::CustodyState& receipt) {
  std::lock_guard lock(snapshot_mutex_);
  custody_ = receipt;
  oldest_outside_ms_.reset();
  ++receipts_accepted_;
}

void CustodyAgent::stop() {
  boost::asio::post(strand_, [this] {
    stopped_ = true;
    origin_timer_.cancel();
    head_timer_.cancel();
    retention_timer_.cancel();
    pace_timer_.cancel();
  });
}

void CustodyAgent::on_message(forwarder::InboundMessage message) {
  if (stopped_) {
    return;
  }
  const std::string base = prefix_ + "/" + gateway_ + "/";
  if (message.topic == base + "custody") {
    on_receipt(message.payload, message.retained);
  } else if (message.topic == base + "resend") {
    on_resend_request(std::move(message));
  }
}

void CustodyAgent::drop_input(const std::string& topic) {
  std::uint64_t dropped = 0;
  {
    std::lock_guard lock(snapshot_mutex_);
    dropped = ++inputs_dropped_;
  }
  log::warn("custody", "",
            "message on " + topic + " dropped: " + std::to_string(kMaxInputsWaiting) + " messages or " +
                std::to_string(kMaxInputBytesWaiting >> 20) +
                " MiB already wait for the custody agent (a flood?); " + std::to_string(dropped) +
                " dropped so far");
}

// --- receipts ---

void CustodyAgent::refuse_receipt(const std::string& reason) {
  {
    std::lock_guard lock(snapshot_mutex_);
    ++receipts_refused_;
    last_refusal_ = reason;
  }
  log::warn("custody", "", "custody receipt refused: " + reason + " (nothing changed)");
}

void CustodyAgent::on_receipt(const std::string& jws, bool retained) {
  if (central_keys_.empty()) {
    return;
  }
  const custody::ReceiptCheck check = custody::check_receipt(
      jws,
      [this](const std::string& kid) -> std::optional<Ed25519PublicKey> {
        const auto it = central_keys_.find(kid);
        return it == central_keys_.end() ? std::nullopt : std::optional<Ed25519PublicKey>(it->second);
      },
      gateway_);
  if (!check.ok) {
    refuse_receipt(check.reason);
    if (retained) {
      // The broker's retained message is the receipt there is: refused, the empty store starts a new chain.
      // A live message refused (anyone may publish junk on the topic) says nothing of the retained one,
      // which the wait goes on for.
      decide_origin(std::nullopt, "the retained custody receipt was refused: " + check.reason);
    }
    return;
  }
  const custody::Receipt receipt = check.receipt;
  if (origin_decided_) {
    if (receipt.through_seq >= custody::kMaxOriginSeq) {
      const std::string why = "through_seq " + std::to_string(receipt.through_seq) +
                              " leaves no room for this empty store's chain after it (at most 2^52 - 1)";
      refuse_receipt(why);
      if (retained) {
        decide_origin(std::nullopt, "the retained custody receipt was refused: " + why);
      }
      return;
    }
    // An empty store: nothing here to compare the head with; the daemon continues the chain after it.
    decide_origin(store::CustodyState{receipt.through_seq, receipt.head, receipt.central, check.kid, jws,
                                      clock_.now_ms()},
                  "custody receipt of central " + printable(receipt.central, 64) + " through seq " +
                      std::to_string(receipt.through_seq));
    return;
  }
  if (receipt.through_seq <= accepting_through_) {
    // The same receipt again (retained, redelivered) or an older one: nothing new. Unless the higher one is
    // only being checked: if it is refused, this one must not have been ignored (take_up_deferred).
    if (receipt.through_seq > accepted_through_ && checking_.count(receipt.through_seq) == 0 &&
        (!deferred_ || deferred_->through < receipt.through_seq)) {
      deferred_ = Deferred{receipt.through_seq, jws};
    }
    return;
  }
  accepting_through_ = receipt.through_seq;  // one custody record per receipt, even if it arrives twice now
  checking_.insert(receipt.through_seq);
  host_.run_on_store(
      [this, receipt, jws, kid = check.kid, known_lost = known_lost_pictures_](store::EvidenceStore& store) {
        match_receipt(store, receipt, jws, kid, known_lost);
      });
}

// After a checked receipt's outcome: the receipt held back behind it is checked now if nothing accepted or
// still being checked covers it any more, dropped if an accepted one does, kept while a higher one is
// checked.
void CustodyAgent::take_up_deferred() {
  if (!deferred_) {
    return;
  }
  if (deferred_->through <= accepted_through_) {
    deferred_.reset();
  } else if (deferred_->through > accepting_through_) {
    const std::string jws = std::move(deferred_->jws);
    deferred_.reset();
    on_receipt(jws, /*retained=*/false);
  }
}

void CustodyAgent::match_receipt(store::EvidenceStore& store, const custody::Receipt& receipt,
                                 const std::string& jws, const std::string& kid,
                                 const std::set<std::string>& known_lost) {
  const std::string reason = refused_by_store(store, receipt, known_lost);
  if (!reason.empty()) {
    boost::asio::post(strand_, [this, reason, through = receipt.through_seq] {
      // Back to the highest receipt accepted or still being checked: several receipts may be checked at
      // once, and a refused one must leave no trace (the next genuine receipt below it is not ignored).
      checking_.erase(checking_.find(through));
      accepting_through_ = std::max(accepted_through_, checking_.empty() ? 0 : *checking_.rbegin());
      refuse_receipt(reason);
      take_up_deferred();
    });
    return;
  }
  boost::asio::post(strand_, [this, through = receipt.through_seq, lost = receipt.lost_pictures] {
    checking_.erase(checking_.find(through));
    if (through > accepted_through_) {
      accepted_through_ = through;
      known_lost_pictures_ = std::set<std::string>(lost.begin(), lost.end());
    }
    take_up_deferred();
  });
  record_custody(store, receipt, jws, kid);
}

std::string CustodyAgent::refused_by_store(const store::EvidenceStore& store, const custody::Receipt& receipt,
                                           const std::set<std::string>& known_lost) const {
  const auto record = store.record(receipt.through_seq);
  if (!record) {
    const ChainHead head = store.chain_head();
    return receipt.through_seq > head.seq
               ? "names seq " + std::to_string(receipt.through_seq) + ", beyond this gateway's head seq " +
                     std::to_string(head.seq)
               : "names seq " + std::to_string(receipt.through_seq) + ", which this store does not hold";
  }
  if (sha256_hex(record->jws) != receipt.head) {
    return "head " + receipt.head + " is not the SHA-256 of this gateway's record seq " +
           std::to_string(receipt.through_seq);
  }
  return held_but_named_lost(store, receipt, known_lost);
}

void CustodyAgent::record_custody(store::EvidenceStore& store, const custody::Receipt& receipt,
                                  const std::string& jws, const std::string& kid) {
  store::CustodyState state{receipt.through_seq, receipt.head, receipt.central, kid, jws, clock_.now_ms()};
  const auto current = store.custody();
  if (current && receipt.through_seq <= current->through_seq) {
    // Checked before the stored state reached the strand (at start): an older or equal receipt is ignored
    // here too (not counted, nothing changes): the custody state never goes back.
    return;
  }
  if (record_in_flight_) {
    // A custody record is being committed: the state moves only once it is in the chain (else a power cut
    // could leave a custody state no custody record shows). The highest receipt meanwhile is noted then.
    if (!after_record_ || after_record_->through_seq < state.through_seq) {
      after_record_ = state;
    }
    return;
  }
  const UnixMs now = clock_.now_ms();
  const bool only_custody =
      current && !store.has_other_than("custody", current->through_seq, receipt.through_seq);
  // A wall clock stepped back since the last custody record does not make every receipt "too soon".
  const bool too_soon =
      current && now >= last_custody_record_ms_ &&
      now - last_custody_record_ms_ < static_cast<UnixMs>(cfg_.record_min_interval_s) * 1000;
  if (only_custody || too_soon) {
    // Noted, not sealed: a receipt that only adds our own custody records would otherwise bring the next
    // receipt for ever, and one custody record per record_min_interval_s is enough to show in the chain
    // when custody passed (the state, and so retention, advances with every receipt).
    note_custody(store, state);
    return;
  }
  Fact fact = custody_fact(receipt, kid, jws, clock_.now_ms());
  const UnixMs previous_record_ms = last_custody_record_ms_;
  last_custody_record_ms_ = now;
  record_in_flight_ = true;
  host_.submit(std::move(fact), [this, state, previous_record_ms](const SealedRecord& sealed) {
    // Committed: the custody record (salvaged or not: a custody record is in the chain), or (signing failed)
    // a fault record in its place, which shows nothing of the receipt: then the receipt is not taken.
    const bool sealed_custody = sealed.type == "custody";
    host_.run_on_store([this, state, previous_record_ms, sealed_custody, custody_seq = sealed.seq,
                        sealed_type = sealed.type](store::EvidenceStore& s) {
      if (!sealed_custody) {
        record_in_flight_ = false;
        after_record_.reset();
        last_custody_record_ms_ = previous_record_ms;
        boost::asio::post(strand_, [this] { forget_untaken_receipts(); });  // the same receipt is taken again
        log::error("custody", "",
                   "receipt through seq " + std::to_string(state.through_seq) +
                       " not taken: its custody record could not be sealed (seq " +
                       std::to_string(custody_seq) + " is a " + sealed_type +
                       " record); the custody state stays, and the receipt is taken when it comes again");
        return;
      }
      // The custody record is committed: now the store may count these records as held by central.
      save_custody(s, state, custody_seq);
    });
  });
}

void CustodyAgent::note_custody(store::EvidenceStore& store, const store::CustodyState& state) {
  if (const Status st = store.set_custody(state); st.is_ok()) {
    const std::optional<UnixMs> oldest = oldest_outside_custody(store, state.through_seq);
    std::lock_guard lock(snapshot_mutex_);
    custody_ = state;
    oldest_outside_ms_ = oldest;
    ++receipts_accepted_;
  }
}

void CustodyAgent::save_custody(store::EvidenceStore& store, const store::CustodyState& state,
                                std::uint64_t custody_seq) {
  record_in_flight_ = false;
  save_committed_custody(store, state, custody_seq);
  // A receipt that came while the record was being committed: noted now, after it (no record of its own:
  // one just went into the chain).
  if (std::optional<store::CustodyState> later = std::exchange(after_record_, std::nullopt);
      later && (!store.custody() || store.custody()->through_seq < later->through_seq)) {
    note_custody(store, *later);
  }
}

void CustodyAgent::save_committed_custody(store::EvidenceStore& store, const store::CustodyState& state,
                                          std::uint64_t custody_seq) {
  // A later receipt may have been noted while this one's custody record was being committed (too soon for a
  // record of its own): the state never goes back to an older receipt.
  if (const auto current = store.custody(); current && current->through_seq > state.through_seq) {
    std::lock_guard lock(snapshot_mutex_);
    ++receipts_accepted_;
    log::info("custody", "",
              "custody record seq " + std::to_string(custody_seq) +
                  " committed; the custody state stays at " + std::to_string(current->through_seq) +
                  " (a later receipt)");
    return;
  }
  if (const Status st = store.set_custody(state); !st.is_ok()) {
    log::error("custody", "",
               "custody state not saved (the retained receipt is applied again at the "
               "next start): " +
                   st.message());
    return;
  }
  const std::optional<UnixMs> oldest = oldest_outside_custody(store, state.through_seq);
  std::lock_guard lock(snapshot_mutex_);
  custody_ = state;
  oldest_outside_ms_ = oldest;
  ++receipts_accepted_;
  log::info("custody", "",
            "central " + printable(state.central, 64) + " holds seq 1.." + std::to_string(state.through_seq) +
                " (custody record seq " + std::to_string(custody_seq) + ")");
}

// --- resends ---

void CustodyAgent::on_resend_request(forwarder::InboundMessage message) {
  const std::string base = prefix_ + "/" + gateway_ + "/";
  // Replies go only to this gateway's own reply topic: the one its broker ACL lets it write replies to.
  const bool can_reply = message.response_topic == base + "resend/response";
  const auto refuse = [&](const std::string& why) {
    {
      std::lock_guard lock(snapshot_mutex_);
      ++resend_refused_;
    }
    log::warn("custody", "", "resend request refused: " + why);
    if (can_reply) {
      custody::ResendReply r;
      r.error = why;
      reply(message.response_topic, message.correlation_data, r);
    }
  };
  if (!message.response_topic.empty() && !can_reply) {
    refuse("response topic '" + printable(message.response_topic, 200) + "' is not under " + base +
           "resend/response");
    return;
  }
  const custody::ResendParse parsed = custody::parse_resend_request(message.payload);
  if (!parsed.request) {
    refuse(parsed.reason);
    return;
  }
  if (resends_.size() >= static_cast<std::size_t>(cfg_.resend_max_queued)) {
    refuse("busy: " + std::to_string(resends_.size()) +
           " requests already queued (custody.resend_max_queued)");
    return;
  }
  {
    std::lock_guard lock(snapshot_mutex_);
    ++resend_requests_;
  }
  resends_.push_back(
      Resend{*parsed.request, can_reply ? message.response_topic : "", message.correlation_data});
  next_resend();
}

std::string CustodyAgent::held_but_named_lost(const store::EvidenceStore& store,
                                              const custody::Receipt& receipt,
                                              const std::set<std::string>& known_lost) const {
  // Central may name as lost only what this gateway said it no longer holds: a receipt that names a record
  // or picture still here is wrong (central would never ask for it again, and retention would delete it).
  for (const auto& [from, to] : receipt.lost_seqs) {
    const auto held = store.first_held(from, to);
    if (held.unreadable) {
      // Whether they are held cannot be told now: the receipt is not taken (the next one is checked again).
      return "names seqs " + std::to_string(from) + ".." + std::to_string(to) +
             " as lost, and this gateway cannot read its store to tell";
    }
    if (held.seq) {
      return "names seq " + std::to_string(*held.seq) + " as lost, but this gateway holds it";
    }
  }
  for (const std::string& sha : receipt.lost_pictures) {
    if (known_lost.count(sha) > 0 && host_.media_absent && host_.media_absent(sha)) {
      // Checked with an earlier receipt and still absent: not read again. (Its bytes can come back: a camera
      // sending the same picture again is stored under the same name, and then it is checked again below.)
      continue;
    }
    if (store.recording_named(sha).value_or(false)) {
      // A kept recording, which no custody receipt covers: it goes by its own file receipt, and is not read
      // here.
      continue;
    }
    const auto bytes = host_.read_media(sha);
    if (bytes && sha256_hex(*bytes) == sha) {
      return "names picture " + sha + " as lost, but this gateway holds it";
    }
    if (!bytes && host_.media_absent && !host_.media_absent(sha)) {
      // The file is there but cannot be read now: whether it is held cannot be told, so the receipt is not
      // taken (central's next one is checked again).
      return "names picture " + sha + " as lost, and this gateway cannot read its copy to tell";
    }
  }
  return "";
}

void CustodyAgent::reply(const std::string& topic, const std::optional<std::string>& correlation,
                         const custody::ResendReply& r) {
  if (topic.empty()) {
    return;
  }
  channel_.publish_side(forwarder::OutboundMessage{topic, custody::resend_reply_json(r), false, correlation},
                        [](bool ok) {
                          if (!ok) {
                            // What was asked is sent or not held all the same; central asks again for what
                            // it still lacks.
                            log::warn("custody", "", "resend reply not PUBACKed (the broker link failed)");
                          }
                        });
}

void CustodyAgent::next_resend() {
  if (resending_ || resends_.empty() || stopped_) {
    return;
  }
  resending_ = true;
  auto job = std::make_shared<Resend>(std::move(resends_.front()));
  resends_.pop_front();
  auto r = std::make_shared<custody::ResendReply>();
  r->from_seq = job->request.from_seq;
  r->to_seq = job->request.to_seq;
  log::info("custody", "",
            "resending seq " + std::to_string(r->from_seq) + ".." + std::to_string(r->to_seq) + " and " +
                std::to_string(job->request.media.size()) + " media files");
  if (job->request.from_seq != 0) {
    send_chunk(job, job->request.from_seq, r);
  } else {
    send_media(job, 0, r);
  }
}

void CustodyAgent::paced(std::size_t messages, std::function<void()> then) {
  // Token-bucket pacing over the whole resend: never more than resend_records_per_s on average, so live
  // records (the outbox pump) keep their share of the link and of Paho's in-flight window.
  const auto now = std::chrono::steady_clock::now();
  if (paced_messages_ == 0 || now - pace_start_ > std::chrono::seconds(10)) {
    pace_start_ = now;
    paced_messages_ = 0;
  }
  paced_messages_ += messages;
  const auto due =
      pace_start_ + std::chrono::microseconds(paced_messages_ * 1000000 /
                                              static_cast<std::uint64_t>(cfg_.resend_records_per_s));
  pace_timer_.expires_at(due);
  pace_timer_.async_wait([this, then = std::move(then)](const boost::system::error_code& ec) {
    if (!ec && !stopped_) {
      then();
    }
  });
}

void CustodyAgent::send_chunk(std::shared_ptr<Resend> job, std::uint64_t from,
                              std::shared_ptr<custody::ResendReply> r) {
  if (from > job->request.to_seq) {
    send_media(job, 0, r);
    return;
  }
  // from <= to_seq here: the chunk's end never passes to_seq, whatever the values (no overflow).
  std::uint64_t to = from + std::min<std::uint64_t>(job->request.to_seq - from, kResendChunk - 1);
  host_.run_on_store([this, job, from, to, r](store::EvidenceStore& store) mutable {
    auto range = store.records_range(from, to, kResendChunk);
    // A store read error tells nothing about what is held: the chunk is neither sent nor reported not held
    // (central asks again).
    const bool unreadable = !range;
    if (unreadable) {
      log::warn("custody", "",
                "resend: seqs " + std::to_string(from) + ".." + std::to_string(to) +
                    " could not be read from the store: neither sent nor reported not held");
    }
    auto entries = range ? std::move(*range) : std::vector<store::OutboxEntry>{};
    // At most kResendChunkMediaBytes of pictures read at once (a record's pictures whole): the chunk ends
    // after the record that reaches it, and the next chunk starts after that record.
    std::size_t media_bytes = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      auto& e = entries[i];
      for (const std::string& sha : e.media) {
        auto bytes = host_.read_media(sha);
        e.media_bytes.push_back(bytes && sha256_hex(*bytes) == sha ? std::move(*bytes) : std::string());
        media_bytes += e.media_bytes.back().size();
      }
      if (media_bytes >= kResendChunkMediaBytes && i + 1 < entries.size()) {
        to = e.seq;
        entries.resize(i + 1);
        break;
      }
    }
    boost::asio::post(strand_, [this, job, from, to, r, unreadable, entries = std::move(entries)]() mutable {
      std::uint64_t expect = from;
      const std::string base = prefix_ + "/" + gateway_ + "/";
      std::vector<forwarder::OutboundMessage> out;
      for (auto& e : entries) {
        if (e.seq > expect) {
          add_not_held(r->not_held, expect, e.seq - 1);
        }
        expect = e.seq + 1;
        for (std::size_t i = 0; i < e.media.size(); ++i) {
          if (!e.media_bytes[i].empty()) {
            out.push_back({base + "media/" + e.media[i], std::move(e.media_bytes[i]), false, std::nullopt});
          }
        }
        out.push_back({base + "evidence", std::move(e.jws), false, std::nullopt});
        ++r->sent;
      }
      if (expect <= to && !unreadable) {
        add_not_held(r->not_held, expect, to);
      }
      {
        std::lock_guard lock(snapshot_mutex_);
        resent_records_ += entries.size();
      }
      publish_step(std::move(out), "resend", [this, job, to, r] {
        if (to >= job->request.to_seq) {
          send_media(job, 0, r);
        } else {
          send_chunk(job, to + 1, r);
        }
      });
    });
  });
}

void CustodyAgent::publish_step(std::vector<forwarder::OutboundMessage> messages, const char* what,
                                std::function<void()> next) {
  auto wait = std::make_shared<ChunkWait>();
  const std::size_t count = messages.size();
  wait->after = [this, wait, count, what, next = std::move(next)]() mutable {
    if (wait->failed) {
      log::warn("custody", "", std::string(what) + " stopped: the broker link failed (central asks again)");
      resending_ = false;
      next_resend();
      return;
    }
    paced(count, std::move(next));
  };
  publish_all(std::move(messages), wait);
}

void CustodyAgent::publish_all(std::vector<forwarder::OutboundMessage> messages,
                               std::shared_ptr<ChunkWait> wait) {
  // One extra count held while publishing, so `after` runs once, after the last PUBACK (on our strand).
  wait->pending = messages.size() + 1;
  const auto done = [this, wait](bool ok) {
    if (!ok) {
      wait->failed = true;
    }
    if (--wait->pending == 0) {
      // Moved out: `after` holds `wait`, and the cycle ends here.
      boost::asio::post(strand_, std::move(wait->after));
    }
  };
  for (auto& m : messages) {
    channel_.publish_side(std::move(m), done);
  }
  done(true);
}

void CustodyAgent::send_media(std::shared_ptr<Resend> job, std::size_t index,
                              std::shared_ptr<custody::ResendReply> r) {
  if (index >= job->request.media.size()) {
    reply(job->response_topic, job->correlation, *r);
    resending_ = false;
    next_resend();
    return;
  }
  const std::size_t end = std::min(job->request.media.size(), index + 10);
  std::vector<std::string> wanted(job->request.media.begin() + static_cast<std::ptrdiff_t>(index),
                                  job->request.media.begin() + static_cast<std::ptrdiff_t>(end));
  host_.run_on_store([this, job, index, r, wanted = std::move(wanted)](store::EvidenceStore& store) {
    std::vector<std::pair<std::string, std::string>> found;
    std::vector<std::string> missing;
    // At most 10 files and about kResendChunkMediaBytes read per step (each file at most kMaxPictureBytes):
    // the step ends after the file that reaches it, and the next starts after that file.
    std::size_t next = index;
    std::size_t bytes_read = 0;
    for (const std::string& sha : wanted) {
      if (bytes_read >= kResendChunkMediaBytes) {
        break;
      }
      ++next;
      const std::optional<bool> recording = store.recording_named(sha);
      if (!recording) {
        continue;  // the store cannot tell now: neither sent nor reported lost; asked again
      }
      if (*recording) {
        // Only pictures go out on the media topic: a body-worn recording (a kept file, maybe gigabytes, sent
        // under its own policy by file transfer) is no picture this gateway holds.
        missing.push_back(sha);
        continue;
      }
      auto bytes = host_.read_media(sha);
      if (bytes && sha256_hex(*bytes) == sha) {
        bytes_read += bytes->size();
        found.emplace_back(sha, std::move(*bytes));
      } else if (bytes || !host_.media_absent || host_.media_absent(sha)) {
        missing.push_back(sha);  // gone, or its bytes are not its name: not held
      }
      // else: there but unreadable now (EACCES, EIO, EMFILE): neither sent nor reported lost; asked again.
    }
    boost::asio::post(strand_, [this, job, end = next, r, found = std::move(found),
                                missing = std::move(missing)]() mutable {
      const std::string base = prefix_ + "/" + gateway_ + "/media/";
      std::vector<forwarder::OutboundMessage> out;
      for (auto& [sha, bytes] : found) {
        r->media_sent.push_back(sha);
        out.push_back({base + sha, std::move(bytes), false, std::nullopt});
      }
      r->media_not_held.insert(r->media_not_held.end(), missing.begin(), missing.end());
      {
        std::lock_guard lock(snapshot_mutex_);
        resent_media_ += out.size();
      }
      publish_step(std::move(out), "resend of media", [this, job, end, r] { send_media(job, end, r); });
    });
  });
}

// --- head announcements ---

void CustodyAgent::schedule_head() {
  if (stopped_) {
    return;
  }
  announce_head();
  head_timer_.expires_after(std::chrono::milliseconds(cfg_.head_interval_ms));
  head_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      schedule_head();
    }
  });
}

void CustodyAgent::announce_head() {
  // One announcement at a time: while the broker is away the one waiting goes out on reconnect and the next
  // tick brings it up to date, instead of one queued every head_interval_ms for as long as the link is down
  // (they would fill the side queue that resends and recording transfers share).
  if (head_inflight_.exchange(true)) {
    return;
  }
  host_.run_on_store([this](store::EvidenceStore&) {
    const ChainHead head = host_.chain_head();
    const std::string jws =
        custody::seal_head(gateway_key_, custody::Head{gateway_, head.seq, head.jws_sha256, clock_.now_ms()});
    // Retained: central (or a person with mosquitto_sub) sees the head at any time; a lost tail shows.
    channel_.publish_side({prefix_ + "/" + gateway_ + "/head", jws, true, std::nullopt},
                          [this](bool) { head_inflight_ = false; });
  });
}

// --- retention ---

void CustodyAgent::schedule_retention() {
  if (stopped_) {
    return;
  }
  retention_timer_.expires_after(std::chrono::milliseconds(cfg_.retention_check_ms));
  retention_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      prune();
      schedule_retention();
    }
  });
}

void CustodyAgent::prune() {
  host_.run_on_store([this](store::EvidenceStore& store) {
    const auto state = store.custody();
    if (!state) {
      // Nothing is in custody: nothing is deleted, whatever its age. The oldest record outside custody is the
      // first one sealed (a new gateway, a new chain, a central that refuses or never answers).
      const std::optional<UnixMs> oldest = oldest_outside_custody(store, 0);
      std::lock_guard lock(snapshot_mutex_);
      oldest_outside_ms_ = oldest;
      return;
    }
    const UnixMs before = clock_.now_ms() - static_cast<UnixMs>(retention_days_) * kDayMs;
    std::uint64_t records = 0;
    std::uint64_t media = 0;
    for (int round = 0; round < kPruneRoundsPerTick; ++round) {
      const auto pruned = store.prune_in_custody(state->through_seq, before, kPruneBatch, clock_.now_ms());
      records += pruned.records;
      for (const std::string& sha : pruned.media) {
        host_.remove_media(sha);
        ++media;
      }
      if (pruned.records < kPruneBatch) {
        break;
      }
    }
    if (records > 0) {
      log::info("custody", "",
                "retention: deleted " + std::to_string(records) + " records and " + std::to_string(media) +
                    " pictures in custody and older than " + std::to_string(retention_days_) + " days");
    }
    // The oldest record outside custody moves as records are sealed and receipts come: refreshed here too.
    const std::optional<UnixMs> oldest = oldest_outside_custody(store, state->through_seq);
    std::lock_guard lock(snapshot_mutex_);
    pruned_records_ += records;
    pruned_media_ += media;
    oldest_outside_ms_ = oldest;
  });
}

nlohmann::json CustodyAgent::status() const {
  std::lock_guard lock(snapshot_mutex_);
  nlohmann::json s = {
      {"enabled", true},
      {"through_seq", custody_ ? custody_->through_seq : 0},
      {"central", custody_ ? nlohmann::json(custody_->central) : nlohmann::json(nullptr)},
      {"receipt_ms", custody_ ? nlohmann::json(custody_->received_ms) : nlohmann::json(nullptr)},
      {"oldest_not_in_custody_ms",
       oldest_outside_ms_ ? nlohmann::json(*oldest_outside_ms_) : nlohmann::json(nullptr)},
      {"receipts_accepted", receipts_accepted_},
      {"receipts_refused", receipts_refused_},
      {"last_refusal", last_refusal_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_refusal_)},
      {"inputs_dropped", inputs_dropped_},
      {"resend_requests", resend_requests_},
      {"resend_refused", resend_refused_},
      {"resent_records", resent_records_},
      {"resent_media", resent_media_},
      {"pruned_records", pruned_records_},
      {"pruned_media", pruned_media_}};
  return s;
}

}  // namespace cpd::app
