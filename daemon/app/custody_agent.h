// CustodyAgent: the gateway's half of the custody protocol (docs/custody.md). It accepts custody receipts
// (signed by a configured central key, naming this gateway, whose head hash equals this store's record),
// seals a `custody` record for each newer one, prunes what is in custody and past retention, serves
// resend requests at a capped rate, and announces the chain head. Store work runs on the store worker's
// thread; MQTT goes through the forwarder's side channel; timers on the io_context.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/record.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/side_channel.h"
#include "daemon/store/evidence_store.h"

namespace cpd::app {

// What the agent needs from the store worker and the media store (wired by the daemon; tests fake it).
struct CustodyHost {
  // Runs the task on the store's thread.
  std::function<void(std::function<void(store::EvidenceStore&)>)> run_on_store;
  // Seals a fact; the handler runs on the store's thread once its record is committed.
  std::function<void(Fact, std::function<void(const SealedRecord&)>)> submit;
  // A media file's bytes (nullopt: not held, or larger than custody::kMaxPictureBytes), and deleting one
  // (retention). Called on the store's thread.
  std::function<std::optional<std::string>(const std::string& sha256)> read_media;
  // Whether no picture of that name is certainly here: no file (ENOENT), or one larger than
  // custody::kMaxPictureBytes. A file that cannot be read for another reason (EACCES, EIO, EMFILE) is not
  // "not held": it is never reported lost or accepted as lost on that word.
  // Unset: a file read_media cannot read counts as absent.
  std::function<bool(const std::string& sha256)> media_absent;
  std::function<void(const std::string& sha256)> remove_media;
  // The chain head as committed (store thread).
  std::function<ChainHead()> chain_head;
};

class CustodyAgent {
 public:
  CustodyAgent(boost::asio::io_context& io, const config::Config& cfg, const Ed25519PrivateKey& gateway_key,
               forwarder::SideChannel& channel, CustodyHost host, const WallClock& clock);
  ~CustodyAgent();
  CustodyAgent(const CustodyAgent&) = delete;
  CustodyAgent& operator=(const CustodyAgent&) = delete;

  // Further topics to subscribe to with the custody topics (the recording uploader's), and who takes their
  // messages (on the forwarder's strand). Call before start().
  void add_topics(std::vector<std::string> topics, forwarder::SideChannel::Handler handler);
  // Subscribes (through the side channel: call before the forwarder starts) and starts the timers.
  void start();

  // An empty store (docs/custody.md, "A replaced store"). Call before start(). The first receipt that
  // passes checks 1-3 (signature by a configured central key, body, this gateway) is handed to `decided`
  // instead of being matched against the store (which holds no record to match); a refused receipt, or
  // none within `wait`, gives nullopt and the reason. `decided` runs once, on the agent's strand. A
  // receipt handed over counts as being accepted (the same receipt again is ignored afterwards).
  using OriginDecided = std::function<void(std::optional<store::CustodyState>, std::string why)>;
  void await_origin(std::chrono::milliseconds wait, OriginDecided decided);
  // The store continued the chain after `receipt` (EvidenceStore::continue_chain): status shows it.
  void origin_committed(const store::CustodyState& receipt);
  // The chain did not continue after the receipt the wait decided on (a new chain instead): it was not taken.
  void origin_failed();
  void stop();

  // Thread-safe snapshot for status/metrics: through_seq, receipt time, central, oldest not in custody,
  // resends, refusals.
  nlohmann::json status() const;

 private:
  struct Resend {
    custody::ResendRequest request;
    std::string response_topic;
    std::optional<std::string> correlation;
  };

  void on_message(forwarder::InboundMessage message);
  // Strand: receipts that passed the checks but were not taken (a chain that did not continue after one, a
  // custody record that could not be sealed) are checked again when they come again.
  void forget_untaken_receipts();
  void drop_input(const std::string& topic);
  // `retained`: the broker's retained message (what decides an empty store's origin when refused).
  void on_receipt(const std::string& jws, bool retained);
  // Store thread: matches a receipt that passed checks 1-3 against this store, then notes or seals it.
  void match_receipt(store::EvidenceStore& store, const custody::Receipt& receipt, const std::string& jws,
                     const std::string& kid, const std::set<std::string>& known_lost);
  // Why this store refuses the receipt (a seq it does not hold, another head, a held record named lost);
  // "" when it matches.
  std::string refused_by_store(const store::EvidenceStore& store, const custody::Receipt& receipt,
                               const std::set<std::string>& known_lost) const;
  // Store thread: saves the custody state of a matched receipt, sealing a custody record first unless
  // that would be too soon or only about earlier custody records.
  void record_custody(store::EvidenceStore& store, const custody::Receipt& receipt, const std::string& jws,
                      const std::string& kid);
  // Store thread: the custody record `custody_seq` is committed; saves `state` and updates the snapshot.
  // Then notes a receipt that came meanwhile (after_record_).
  void save_custody(store::EvidenceStore& store, const store::CustodyState& state, std::uint64_t custody_seq);
  void save_committed_custody(store::EvidenceStore& store, const store::CustodyState& state,
                              std::uint64_t custody_seq);
  // Store thread: a receipt taken without a custody record of its own (the state and the snapshot only).
  void note_custody(store::EvidenceStore& store, const store::CustodyState& state);
  void refuse_receipt(const std::string& reason);
  void decide_origin(std::optional<store::CustodyState> receipt, std::string why);
  void on_resend_request(forwarder::InboundMessage message);
  // Why a receipt is refused for naming as lost a record or picture this store holds; "" when it does not.
  std::string held_but_named_lost(const store::EvidenceStore& store, const custody::Receipt& receipt,
                                  const std::set<std::string>& known_lost) const;
  void reply(const std::string& topic, const std::optional<std::string>& correlation,
             const custody::ResendReply& reply);
  void next_resend();
  void send_chunk(std::shared_ptr<Resend> job, std::uint64_t from,
                  std::shared_ptr<custody::ResendReply> reply);
  void send_media(std::shared_ptr<Resend> job, std::size_t index,
                  std::shared_ptr<custody::ResendReply> reply);
  void announce_head();
  void schedule_head();
  void schedule_retention();
  void prune();
  void paced(std::size_t messages, std::function<void()> then);
  struct ChunkWait {
    std::atomic<std::size_t> pending{0};
    std::atomic<bool> failed{false};
    std::function<void()> after;  // posted to our strand once every publish of the chunk has completed
  };
  // One step of a resend: publishes `messages`; once all have completed, paced, runs `next` on our strand, or
  // when one failed logs "<what> stopped" and ends the resend (central asks again).
  void publish_step(std::vector<forwarder::OutboundMessage> messages, const char* what,
                    std::function<void()> next);
  void publish_all(std::vector<forwarder::OutboundMessage> messages, std::shared_ptr<ChunkWait> wait);

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  config::CustodySection cfg_;
  int retention_days_;
  std::string gateway_;
  std::string prefix_;
  const Ed25519PrivateKey& gateway_key_;
  forwarder::SideChannel& channel_;
  CustodyHost host_;
  const WallClock& clock_;
  std::map<std::string, Ed25519PublicKey> central_keys_;  // kid -> key
  boost::asio::steady_timer head_timer_;
  boost::asio::steady_timer retention_timer_;
  boost::asio::steady_timer pace_timer_;
  boost::asio::steady_timer origin_timer_;
  OriginDecided origin_decided_;  // strand: set while an empty store waits for its receipt
  std::vector<std::string> extra_topics_;
  forwarder::SideChannel::Handler extra_handler_;
  bool stopped_ = false;

  // Messages handed to the strand and not yet taken (the forwarder's strand adds, ours takes).
  static constexpr std::size_t kMaxInputsWaiting = 64;
  static constexpr std::size_t kMaxInputBytesWaiting = 2u << 20;
  std::atomic<std::size_t> inputs_waiting_{0};
  std::atomic<std::size_t> inputs_waiting_bytes_{0};
  std::atomic<bool> head_inflight_{
      false};  // a head announcement awaits its PUBACK or refusal (announce_head)

  // Strand state.
  std::deque<Resend> resends_;
  bool resending_ = false;
  // The lost_pictures of the highest receipt accepted (checked once: a picture never comes back).
  std::set<std::string> known_lost_pictures_;
  std::uint64_t accepting_through_ = 0;  // highest through_seq being or already accepted (no double records)
  std::uint64_t accepted_through_ = 0;   // highest receipt that passed every check (or the store's)
  std::multiset<std::uint64_t> checking_;  // through_seq of receipts being checked against the store
  // The highest receipt that came while a higher one was still being checked (so it was not checked itself):
  // taken up again if that higher one is refused, else dropped. One only: a genuine receipt below an invalid
  // one in flight used to be ignored for good (until central's next refresh).
  struct Deferred {
    std::uint64_t through = 0;
    std::string jws;
  };
  std::optional<Deferred> deferred_;
  void take_up_deferred();
  UnixMs last_custody_record_ms_ = 0;  // store thread: when the last custody record was sealed
  bool record_in_flight_ = false;      // store thread: a custody record submitted, not yet committed
  std::optional<store::CustodyState> after_record_;  // store thread: the highest receipt meanwhile
  std::chrono::steady_clock::time_point pace_start_{};
  std::uint64_t paced_messages_ = 0;

  mutable std::mutex snapshot_mutex_;
  std::optional<store::CustodyState> custody_;
  std::optional<UnixMs> oldest_outside_ms_;  // created_ms of the first record not in custody
  std::uint64_t receipts_accepted_ = 0;
  std::uint64_t receipts_refused_ = 0;
  std::uint64_t inputs_dropped_ = 0;  // messages dropped at the bounded hand-off to the strand
  std::string last_refusal_;
  std::uint64_t resend_requests_ = 0;
  std::uint64_t resend_refused_ = 0;
  std::uint64_t resent_records_ = 0;
  std::uint64_t resent_media_ = 0;
  std::uint64_t pruned_records_ = 0;
  std::uint64_t pruned_media_ = 0;
};

}  // namespace cpd::app
