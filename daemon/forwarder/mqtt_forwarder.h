// MqttForwarder (the outbox pump): publishes outbox records in seq order over MQTT v5 with QoS 1, at most
// `max_inflight` awaiting PUBACK, and removes a record from the outbox only when its PUBACK arrives with a
// success reason code. A PUBACK that refuses (reason >= 0x80, e.g. 135 Not authorized from an ACL) leaves
// the record in the outbox; it is retried alone after a capped exponential backoff (docs/service.md).
// Everything runs on one strand; Paho's callbacks are posted onto it, so nothing blocks on a token.
// TLS (ssl:// uri) verifies the broker's certificate and host name and never falls back to plaintext; a
// failed connect is diagnosed by a separate CONNECT (broker_probe.h) so the log and status say why.
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
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config/mqtt_config.h"
#include "daemon/forwarder/latency.h"
#include "daemon/forwarder/outbox_source.h"
#include "daemon/forwarder/side_channel.h"

namespace mqtt {
class async_client;
class token;
}  // namespace mqtt

namespace cpd::forwarder {

struct ForwarderCounters {
  std::uint64_t published = 0;  // PUBACKed
  std::uint64_t failed = 0;     // publish attempts that failed and will be retried (refused ones included)
  std::uint64_t refused = 0;    // publish attempts the broker refused with a PUBACK reason code >= 0x80
  std::uint64_t connects = 0;
  std::uint64_t disconnects = 0;
};

class MqttForwarder final : public SideChannel {
 public:
  using StatusProvider = std::function<nlohmann::json()>;

  MqttForwarder(boost::asio::io_context& io, const config::MqttSection& mqtt, const std::string& gateway_id,
                OutboxSource& outbox, StatusProvider status_provider);
  ~MqttForwarder();
  MqttForwarder(const MqttForwarder&) = delete;
  MqttForwarder& operator=(const MqttForwarder&) = delete;

  void start();
  // New records up to last_seq are committed: thread-safe.
  // `records` (optional) are the newly committed records: published straight away when the forwarder is
  // caught up, else read back from the outbox in turn.
  void notify_committed(std::uint64_t last_seq, std::vector<CommittedRecord> records = {});
  // Publishes the retained status now (when connected) rather than at the next 10 s tick: an alarm
  // (storage full, ...) should not wait. Thread-safe.
  void publish_status_now();
  // Publishes what is committed up to `until_seq` (bounded by `timeout`), then the retained `offline`
  // status, then disconnects cleanly; `done` runs on the io_context. Call once.
  void stop(std::uint64_t until_seq, std::chrono::milliseconds timeout, std::function<void()> done);

  // SideChannel (custody receipts and resend requests in; head announcements, replies, resends out).
  // Side publishes go out at most kMaxSideInflight at a time beside the outbox window, so they never take
  // the live records' share of Paho's in-flight limit; at most kMaxSideQueued wait (more fail at once).
  void set_subscriptions(std::vector<std::string> topics, Handler handler) override;
  void publish_side(OutboundMessage message, std::function<void(bool ok)> done) override;
  static constexpr std::size_t kMaxSideInflight = 4;
  static constexpr std::size_t kMaxSideQueued = 2048;

  nlohmann::json status() const;  // thread-safe snapshot
  // Called on the forwarder's strand with each record's ready-to-PUBACK latency in seconds (metrics).
  // Set before start().
  void set_latency_observer(std::function<void(double seconds)> observer) {
    latency_observer_ = std::move(observer);
  }
  std::string evidence_topic() const { return evidence_topic_; }
  std::string status_topic() const { return status_topic_; }

 private:
  struct Pending;
  class Listener;

  void connect();
  void on_connect_failed(int rc, int reason);
  void report_connect_failure(const std::string& why);
  void schedule_reconnect();
  void on_connected();
  void on_connection_lost(const std::string& cause);
  void pump();
  void on_fetched(std::uint64_t generation, std::uint64_t base, std::uint64_t target,
                  std::optional<std::vector<store::OutboxEntry>> entries);
  // Hands one record to Paho; false if Paho refused it (then the outbox path retries it).
  // Media first (each on <prefix>/<gateway>/media/<sha256>), then the record.
  bool publish_record(std::uint64_t seq, const std::string& jws, const std::vector<std::string>& media = {},
                      const std::vector<std::string>& media_bytes = {});
  std::size_t window() const;
  bool window_full() const;
  void forget_inflight(std::uint64_t seq);
  // rc: Paho's return code; reason: the broker's MQTT v5 reason code; media: the result of a media publish.
  void on_publish_result(std::uint64_t generation, std::uint64_t seq, bool ok, int rc, int reason,
                         bool media);
  void on_publish_refused(std::uint64_t generation, std::uint64_t seq, int reason, bool media);
  void on_refusal_over();
  void publish_status(bool online);
  void flush_acks();
  void check_stop_done(bool force = false);
  void on_status_tick();
  void finish_stop();
  void rewind_to_inflight();
  // Publishes from ready_ while the window has room; false when a publish failed (ready_ is then emptied,
  // and what it held is read back from the outbox).
  bool publish_ready();
  void clear_ready();
  class SideListener;
  class SubscribeListener;
  void install_side_callbacks();
  void on_side_connected();
  void subscribe_side();
  void pump_side();

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  config::MqttSection cfg_;
  std::string gateway_id_;
  std::string evidence_topic_;
  std::string status_topic_;
  std::string media_topic_prefix_;
  OutboxSource& outbox_;
  StatusProvider status_provider_;
  std::unique_ptr<mqtt::async_client> client_;
  std::unique_ptr<Listener> listener_;
  boost::asio::steady_timer reconnect_timer_;
  boost::asio::steady_timer status_timer_;
  boost::asio::steady_timer ack_timer_;
  boost::asio::steady_timer stop_timer_;
  boost::asio::steady_timer refusal_timer_;      // the wait before a refused record is offered again
  boost::asio::steady_timer fetch_retry_timer_;  // the wait before an outbox read that failed is tried again
  std::int64_t fetch_error_logged_ms_ = -1;      // steady ms of the last outbox read error logged
  std::mt19937 rng_{std::random_device{}()};

  // Strand state.
  bool connected_ = false;
  bool connecting_ = false;
  bool fetching_ = false;
  bool stopping_ = false;
  bool stopped_ = false;
  std::uint64_t generation_ = 0;     // bumped on each connection loss: stale results are recognised
  std::uint64_t cursor_ = 0;         // highest seq handed to Paho in this generation
  std::uint64_t committed_seq_ = 0;  // highest seq known committed
  std::uint64_t stop_until_seq_ = 0;
  std::map<std::uint64_t, std::size_t> inflight_;  // seq -> bytes handed to Paho for it (record + media)
  std::size_t inflight_bytes_ = 0;
  static constexpr std::size_t kMaxInflightBytes = 8u << 20;  // Paho holds payloads until PUBACK
  // Records read ahead of the window, in seq order after cursor_: committed records without media as they
  // are committed, and pages read back from the outbox. Published from here as PUBACKs free the window, and
  // refilled before they run out, so a read-back (which waits behind the store worker's commits) does not
  // starve delivery while sealing goes on (issue 16: 0.2 delivered per sealed record before). Bounded in
  // records and bytes; emptied on any rewind (the outbox still has them).
  std::deque<store::OutboxEntry> ready_;
  std::size_t ready_bytes_ = 0;
  bool ready_full_ = false;  // a read-back's next record did not fit: no refill until ready_ is empty
  // The highest seq handed to Paho, in ready_, or found already PUBACKed (>= cursor_): the next read-back
  // starts after it.
  std::uint64_t read_to_ = 0;
  static constexpr std::size_t kReadPage = 2048;           // records per read-back at most
  static constexpr std::size_t kRefillBelow = 128;         // a read-back starts when fewer wait
  static constexpr std::size_t kMaxReadyBytes = 8u << 20;  // beyond it a page stops (read again later)
  std::vector<std::uint64_t> acks_;
  std::chrono::milliseconds backoff_;
  // A connection that lasted this long resets the reconnect backoff when it ends; a shorter one doubles it.
  static constexpr std::chrono::seconds kStableConnection{10};
  std::chrono::steady_clock::time_point connected_at_{};
  std::function<void()> stop_done_;
  std::vector<std::string> side_topics_;
  Handler side_handler_;
  std::deque<std::pair<OutboundMessage, std::function<void(bool)>>> side_queue_;
  std::size_t side_inflight_ = 0;
  std::uint64_t side_generation_ = 0;  // bumped at each connect: older completions no longer count
  std::string last_error_;
  std::string last_logged_error_;  // a failure repeated on every retry is logged once at warn level
  bool probing_ = false;           // a connect diagnosis (broker_probe.h) is running on probe_thread_
  std::jthread probe_thread_;      // blocking probe off the io threads; joined before destruction
  // While the broker refuses publishes: the current backoff (0: it is not refusing), whether the pump waits
  // for refusal_timer_, and the last reason code logged at warn level.
  std::chrono::milliseconds refusal_backoff_{0};
  bool refusal_wait_ = false;
  int last_logged_refusal_ = 0;
  int last_logged_status_refusal_ = 0;     // the status topic's, logged once per reason code
  std::set<std::uint64_t> media_refused_;  // records whose media the broker refused (within the window)

  // Messages from the broker (custody topics) handed to the strand and not yet taken; beyond, dropped.
  static constexpr std::size_t kMaxInboundWaiting = 256;
  static constexpr std::size_t kMaxInboundBytesWaiting = 16u << 20;
  std::atomic<std::size_t> inbound_waiting_{0};
  std::atomic<std::size_t> inbound_waiting_bytes_{0};
  std::atomic<std::uint64_t> inbound_dropped_{0};
  std::atomic<std::uint64_t> subscribe_refused_{0};  // topics the broker refused to subscribe us to

  mutable std::mutex snapshot_mutex_;
  ForwarderCounters counters_;
  std::uint64_t acked_seq_ = 0;  // highest PUBACKed seq (for status)
  bool snapshot_connected_ = false;
  std::string
      snapshot_last_error_;  // why the last connect failed, the connection was lost or a publish was refused
  struct Refusal {           // the broker is refusing publishes right now
    std::uint64_t seq = 0;   // the record being retried
    int reason = 0;          // its last PUBACK reason code
    std::int64_t since_ms = 0;     // first refusal (UTC ms)
    std::uint64_t attempts = 0;    // refused attempts since then (the window's first burst counts once)
    std::int64_t retry_at_ms = 0;  // next attempt (UTC ms)
  };
  std::optional<Refusal> refusal_;
  std::map<int, std::uint64_t> refusals_by_reason_;  // reason code -> refused publishes
  LatencyRecorder latency_;
  std::function<void(double)> latency_observer_;
  std::map<std::uint64_t, std::chrono::steady_clock::time_point> ready_at_;  // strand only, bounded
};

}  // namespace cpd::forwarder
