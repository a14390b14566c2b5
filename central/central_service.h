// CentralService: one checkpoint-central instance. Paho (MQTT v5) takes the gateways' feed through shared
// subscriptions into a bounded queue; one worker verifies each message, stores batches in PostgreSQL
// (CentralStore), publishes custody receipts once a gateway's watermark advances, and asks gateways to
// resend what is missing. Nothing is acknowledged to a gateway until it is in PostgreSQL and verified:
// a message lost inside an instance (crash, kill) is found as a gap and asked for again.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "central/central_config.h"
#include "central/central_store.h"
#include "central/file_intake.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/record_check.h"

namespace mqtt {
class async_client;
class message;
}  // namespace mqtt

namespace cpd::metrics {
class Exposition;
}  // namespace cpd::metrics

namespace cpd::central {

struct CentralCounters {
  std::atomic<std::uint64_t> messages{0};
  std::atomic<std::uint64_t> records_stored{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> forks{0};
  std::atomic<std::uint64_t> forks_dropped{0};  // beyond kMaxForksPerGateway
  std::atomic<std::uint64_t> quarantined{0};
  std::atomic<std::uint64_t> quarantine_dropped{0};
  std::atomic<std::uint64_t> quarantine_expired{0};  // rows discarded by feed.quarantine_max_age_days
  std::atomic<std::uint64_t> media_stored{0};
  std::atomic<std::uint64_t> media_refused{0};          // hash mismatch, too large, bad name
  std::atomic<std::uint64_t> media_unnamed_refused{0};  // pictures no record names, beyond unnamed_max_mb
  std::atomic<std::uint64_t> media_aged_out{0};         // pictures no record names, deleted when old
  std::atomic<std::uint64_t> media_aged_out_bytes{0};
  std::atomic<std::uint64_t> media_orphans_removed{0};  // files no media row holds (sweep_orphans)
  std::atomic<std::uint64_t> media_orphans_refused{0};  // left: the directory and the database disagree
  std::atomic<std::uint64_t> unknown_gateway{0};        // messages on a gateway's topics that is not enrolled
  std::atomic<std::uint64_t> refused{0};                // messages refused: a topic that is not the feed's, a
                                          // malformed head or reply, a message central cannot store
  std::atomic<std::uint64_t> heads_refused{0};      // head announcements failing a check
  std::atomic<std::uint64_t> subscribe_refused{0};  // subscribe attempts refused (a topic) or unanswered
  std::atomic<std::uint64_t> replies_refused{0};  // resend replies that are not a JSON object (or too large)
  std::atomic<std::uint64_t> unsolicited_replies{0};  // replies to no open request (quarantined)
  std::atomic<std::uint64_t> head_forks{0};
  std::atomic<std::uint64_t> unrecoverable{0};  // ranges and pictures a gateway said it no longer holds
  std::atomic<std::uint64_t> receipts{0};
  std::atomic<std::uint64_t> resend_requests{0};
  std::atomic<std::uint64_t> publish_refused{0};  // central's publishes the broker refused (PUBACK >= 0x80)
  std::atomic<std::uint64_t> pg_errors{0};
  std::atomic<std::uint64_t> pg_transient{
      0};  // batches aborted by a deadlock or serialization failure, retried
  std::atomic<std::uint64_t> retired_key{0};          // records signed by a key outside its seq range
  std::atomic<std::uint64_t> quarantine_resolved{0};  // quarantine rows re-examined and taken in
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> dropped_busy{0};  // messages not queued within a third of the keepalive (a gap)
  std::atomic<std::uint64_t> dropped_stopping{0};   // arrived or in hand while the instance stops (a gap)
  std::atomic<std::uint64_t> reconnects{0};         // reconnects central made itself (Paho's had not)
  std::atomic<std::uint64_t> link_jobs_dropped{0};  // receipts/requests beyond kMaxLinkJobs (issued again)
};

class CentralService {
 public:
  explicit CentralService(CentralConfig config);
  ~CentralService();
  CentralService(const CentralService&) = delete;
  CentralService& operator=(const CentralService&) = delete;

  // Connects to PostgreSQL (migrating), enrolls trust.keys_dir, connects to the broker and subscribes.
  // Throws on a start-up failure (bad key, PostgreSQL unreachable) with a message naming it.
  void start();
  // Leaves the shared subscription (so the broker sends this instance's share to the group's other members
  // instead of parking it in this instance's session), stores everything taken until then, disconnects.
  void stop();
  bool subscribed() const { return subscribed_.load(); }
  // From another thread (a signal): makes a start() still connecting return; stop() then finishes.
  void request_stop();

  const CentralCounters& counters() const { return counters_; }
  const FileCounters& file_counters() const { return files_->counters(); }
  std::size_t queue_depth() const;
  std::size_t queue_bytes() const;
  // Prometheus text (counters, queue depth, per-gateway watermark/lag from PostgreSQL).
  std::string metrics_text();

 private:
  // An evidence record already checked on Paho's thread (precheck()): the worker takes the result only
  // if the key it was verified with is still the one trusted for its kid.
  struct Prechecked {
    RecordCheck check;       // ok
    std::string key_raw;     // the public key that verified it
    std::string jws_sha256;  // of the payload
  };
  // An evidence record is checked by whichever thread gets to it first (on_message, take_batch): kPending
  // until then, kClaimed while a thread checks it outside the lock, kDone after (its result in `pre`).
  enum class CheckState { kNone, kPending, kClaimed, kDone };
  struct Message {
    std::string topic;
    std::string payload;
    std::string correlation;        // MQTT v5 Correlation Data (resend replies)
    std::optional<Prechecked> pre;  // evidence only
    std::size_t charge = 0;         // what it counts against feed.queue_mb (payload, and a decoded body)
    CheckState state = CheckState::kNone;
  };

  void connect_broker();
  // Worker thread, at each gap check: Paho's automatic reconnect is the first answer to a lost broker link;
  // if the link is still down after it had its chance, this reconnects itself, and it subscribes again when
  // connected without a subscription (a reconnect whose connected handler did not run).
  void check_broker_link(std::int64_t now);
  // Every call into Paho the worker needs (publishing receipts and resend requests, the link check) runs
  // on the link thread: Paho C holds its lock while its thread waits in on_message for queue room, so a
  // worker calling Paho then would wait for itself. Bounded (kMaxLinkJobs); beyond it a job is dropped and
  // counted: receipts are issued again at the next refresh and resend requests at the next plan.
  void post_link_job(std::function<void()> job);
  void run_link();
  void on_message(std::string topic, std::string payload, std::string correlation);
  std::optional<Prechecked> precheck(const std::string& topic, const std::string& payload) const;
  void quarantine(Batch& batch, const std::string& gateway, const std::string& kind,
                  const std::string& payload, std::optional<std::uint64_t> seq, std::string kid,
                  std::string reason, bool enrolled);
  void run_worker();
  // Waits for messages (at most a gap-check interval), lingers up to feed.batch_linger_ms for a full batch
  // and takes up to feed.batch_max; false when stopping
  // with nothing queued.
  bool take_batch(std::vector<Message>& batch);
  // Claims the oldest kPending message, checks it (precheck) with the lock released, and stores the result;
  // false when none is pending.
  bool check_oldest_pending(std::unique_lock<std::mutex>& lock);
  // The queue depth at which a lingering batch is taken at once: feed.batch_max, or the queue's whole bound.
  std::size_t batch_fill() const;
  // Every gaps.check_interval_ms on the worker: the broker link, keys, quarantine, receipts, resends, file
  // transfers. A lost PostgreSQL connection is thrown to the worker's loop.
  void periodic_checks(std::int64_t now);
  void process(std::vector<Message>& messages);
  void commit(Batch& batch);
  void refuse_retired(Batch& batch);
  // A record signed by a retired key: counted and alarmed once (the quarantine's re-examination after an
  // enrolment finds it again, and says so quietly).
  void alarm_retired(const std::string& gateway, std::uint64_t seq, const std::string& why);
  void reexamine_quarantine();
  // Discards quarantine rows older than feed.quarantine_max_age_days (at most once a minute; 0: never).
  void expire_quarantine(std::int64_t now);
  // metrics_text()'s parts.
  void add_counter_metrics(metrics::Exposition& e);
  void add_state_metrics(metrics::Exposition& e);
  void classify(Message& m, Batch& batch);
  // classify()'s parts: whether `gateway` is enrolled (else its message is quarantined or refused), and each
  // kind of message into the batch (or the quarantine, or refused with a count and a log line).
  bool enrolled(const Message& m, const std::string& gateway, const std::string& kind, Batch& batch);
  void classify_record(Message& m, const std::string& gateway, Batch& batch);
  void classify_head(const Message& m, const std::string& gateway, Batch& batch);
  void classify_reply(const Message& m, const std::string& gateway, Batch& batch);
  // Stores each message alone: one PostgreSQL refuses for its content, or that central cannot handle, is
  // set aside. Returns false when PostgreSQL fails for another reason (link, deadlock, disk, read-only):
  // `messages` then holds that message and the rest, to be stored again later; else it is emptied.
  bool process_singly(std::vector<Message>& messages);
  // A message stored alone that failed: counted, logged and quarantined (kept, never trusted).
  void set_aside_alone(const Message& m, const std::string& why);
  class PublishOutcome;
  // Hands one message to Paho with a listener for the broker's answer; throws what Paho throws.
  void publish(const std::shared_ptr<mqtt::message>& msg);
  void publish_receipts(const std::vector<custody::Receipt>& receipts);
  void publish_files(std::vector<FilePublish> messages);
  void request_resends();
  std::optional<Ed25519PublicKey> key_for(const std::string& gateway, const std::string& kid);
  void reload_keys(bool force);
  std::string write_media(const std::string& sha256, const std::string& bytes);
  // Whether a picture of `gateway` fits its bound on files no record names (feed.unnamed_max_mb), with the
  // batch's pictures; a picture a stored record names, or one held already, always does.
  bool room_for_unnamed(const std::string& gateway, const std::string& sha256, std::uint64_t bytes,
                        const Batch& batch);
  void refuse_unnamed(const std::string& gateway, const std::string& sha256);  // counted, logged (1/min)
  void settle_over_bound(Batch& batch);
  void ensure_store();

  CentralConfig cfg_;
  Ed25519PrivateKey key_;
  std::string prefix_;
  std::unique_ptr<CentralStore> store_;  // worker thread only (after start)
  std::unique_ptr<FileIntake> files_;    // recordings (worker thread)
  std::unique_ptr<mqtt::async_client> client_;

  mutable std::mutex queue_mutex_;
  std::condition_variable queue_cv_;  // worker waits for messages
  std::condition_variable space_cv_;  // Paho's thread waits for room
  std::deque<Message> queue_;  // references stay valid until pop_front: a kClaimed message is never popped
  std::size_t pending_checks_ = 0;  // messages in queue_ in CheckState::kPending
  std::size_t checked_prefix_ = 0;  // queue_'s first this many are not kPending (where the next check looks)
  int space_waiters_ = 0;           // the MQTT thread waits for room (a lingering batch is full)
  bool worker_lingering_ = false;   // take_batch waits for a batch to fill, with nothing to check
  std::condition_variable checked_cv_;  // a claimed message checked
  // Paho's thread checks a queued record itself only beyond this many waiting unchecked: below it, the worker
  // keeps up while it lingers, and Paho's thread is free to read the socket.
  static constexpr std::size_t kPahoChecksBeyond = 16;
  std::size_t queue_bytes_ = 0;  // what queue_ counts against feed.queue_mb (Message::charge)
  bool stopping_ = false;        // the worker drains the queue and ends; messages are no longer queued
  bool stop_requested_ = false;  // a signal: start() stops connecting; stop() follows
  bool stopped_ = false;
  std::atomic<bool> leaving_{false};  // unsubscribed (or unsubscribing) at a stop: never subscribe again
  std::thread worker_;
  std::atomic<bool> subscribed_{false};
  std::atomic<std::int64_t> publish_refused_logged_ms_{-1};  // PublishOutcome's last error line
  static constexpr std::size_t kMaxLinkJobs = 4096;
  std::mutex link_mutex_;
  std::condition_variable link_cv_;
  std::deque<std::function<void()>> link_jobs_;
  bool link_stopping_ = false;
  std::chrono::steady_clock::time_point link_drain_until_{};  // at a stop: queued jobs still run until then
  std::thread link_thread_;
  std::atomic<bool> subscribing_{false};
  std::chrono::steady_clock::time_point subscribe_refusal_logged_{};  // the subscribing thread only
  std::function<void()> subscribe_;               // set once in connect_broker, before the first connect
  std::vector<std::string> feed_filters() const;  // $share/<group>/<prefix>/+/{evidence,media/+,...}
  void leave_share_group();
  std::int64_t link_down_since_ms_ = 0;  // worker thread only

  TrustedKeys keys_;  // worker thread only
  // A copy of keys_ for precheck() on Paho's thread, replaced at each reload (never changed in place).
  mutable std::mutex key_snapshot_mutex_;
  std::shared_ptr<const TrustedKeys> key_snapshot_;
  std::int64_t keys_loaded_ms_ = 0;
  std::int64_t last_gap_check_ms_ = 0;
  std::int64_t last_expiry_ms_ = 0;
  bool reexamining_ = false;  // classify() re-examining quarantined messages: not counted again
  std::int64_t reexamine_enrolment_ms_ = -1;  // the latest enrolment the quarantine was scanned for
  bool reexamine_more_ = false;               // the last scan filled its page: look again

  // Per enrolled gateway: its unnamed bytes as last read, whether the last picture found it over the bound,
  // and when a refusal was last logged. Worker thread only.
  struct Unnamed {
    std::uint64_t bytes = 0;
    std::int64_t read_ms = -1;
    std::int64_t logged_ms = -1;
    bool over = false;
  };
  static constexpr std::int64_t kUnnamedRefreshMs = 1000;
  static constexpr std::int64_t kUnnamedRefreshOverMs = 30000;
  std::unordered_map<std::string, Unnamed> unnamed_;
  // The age-out of pictures no record names (feed.unnamed_max_age_days): at the first gap check, then every
  // kAgeOutEveryChecks, up to kAgeOutLimit files a time (more wait for the next).
  static constexpr int kAgeOutEveryChecks = 60;
  static constexpr int kAgeOutLimit = 1000;
  int checks_since_age_out_ = kAgeOutEveryChecks;
  // And, in the same rounds, files no media row holds (sweep_orphans): a day after they were written, up to
  // this many directory entries a round.
  static constexpr std::int64_t kOrphanMinAgeS = 86400;
  static constexpr std::size_t kOrphanEntriesPerRound = 20000;
  std::string orphan_cursor_;
  void age_out(std::int64_t now);
  // Pictures over their gateway's bound in the batch being read (their payload stays in the batch's
  // messages): settle_over_bound() takes those a record of the batch names. Beyond kMaxOverBound: refused.
  struct OverBound {
    std::string gateway;
    std::string sha256;
    const std::string* payload;
  };
  static constexpr std::size_t kMaxOverBound = 1000;
  std::vector<OverBound> over_bound_;

  CentralCounters counters_;
  std::mutex metrics_mutex_;  // the metrics text reads PostgreSQL on its own connection
  std::unique_ptr<CentralStore> metrics_store_;
};

// Topic parts of a gateway's feed under `prefix`: gateway and what follows ("evidence", "media/<sha>",
// "head", "resend/response"). nullopt for a topic outside the prefix.
struct FeedTopic {
  std::string gateway;
  std::string rest;
};
std::optional<FeedTopic> parse_feed_topic(const std::string& prefix, const std::string& topic);

QuarantineBounds quarantine_bounds(const FeedSection& feed);

}  // namespace cpd::central
