// MqttForwarder: the outbox pump over MQTT v5 (see the header); plain TCP or TLS with verification.
#include "daemon/forwarder/mqtt_forwarder.h"

#include <mqtt/async_client.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cmath>
#include <memory>

#include "daemon/forwarder/broker_probe.h"
#include "daemon/log/log.h"

namespace cpd::forwarder {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// An MQTT v5 reason code in words, e.g. 135 -> "Not authorized".
std::string reason_name(int code) {
  const std::string name = mqtt::exception::reason_code_str(code);
  return name.empty() ? "unknown reason code" : name;
}

// Paho's connect failure in words, when the broker's answer is a well-formed CONNACK (see on_connect_failed):
// the MQTT v5 reason (e.g. "Bad user name or password") or Paho's error. Paho C passes a CONNACK's reason
// code as the failure's return code; its reason code field is then 0.
std::string connect_failure_text(int rc, int reason) {
  const int code = rc >= 0x80 ? rc : reason;
  if (code >= 0x80) {
    return "broker refused the connection: " + reason_name(code) + " (reason " + std::to_string(code) + ")";
  }
  const std::string paho = mqtt::exception::error_str(rc);
  return "connect failed: " + (paho.empty() ? std::string("error") : paho) + " (Paho rc " +
         std::to_string(rc) + ")";
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// What an asynchronous Paho operation was, so its completion can be routed on the strand.
struct MqttForwarder::Pending {
  enum class Op { kConnect, kPublish, kMedia, kStatus, kDisconnect } op;
  std::uint64_t generation = 0;
  std::uint64_t seq = 0;
};

// Paho calls this on its own threads: it only posts onto the forwarder's strand.
class MqttForwarder::Listener final : public mqtt::iaction_listener {
 public:
  explicit Listener(MqttForwarder& fwd) : fwd_(fwd) {}
  void on_success(const mqtt::token& tok) override { complete(tok, true); }
  void on_failure(const mqtt::token& tok) override { complete(tok, false); }

 private:
  void complete(const mqtt::token& tok, bool ok) {
    std::unique_ptr<Pending> p(static_cast<Pending*>(tok.get_user_context()));
    if (!p) {
      return;
    }
    const int rc = ok ? 0 : tok.get_return_code();
    const int reason = static_cast<int>(tok.get_reason_code());
    MqttForwarder& f = fwd_;
    asio::post(f.strand_, [&f, p = *p, ok, rc, reason] {
      switch (p.op) {
        case Pending::Op::kConnect:
          f.connecting_ = false;
          if (ok) {
            f.on_connected();
          } else {
            f.on_connect_failed(rc, reason);
          }
          break;
        case Pending::Op::kPublish:
          // A v5 PUBACK with a failure reason code (>= 0x80) is not an acceptance: Paho C reports it as a
          // failure whose return code is 0 and whose reason code is the broker's.
          f.on_publish_result(p.generation, p.seq, ok && reason < 0x80, rc, reason, false);
          break;
        case Pending::Op::kMedia:
          // Success needs nothing (the record's PUBACK follows); a failure resends the record and its media.
          if (!ok || reason >= 0x80) {
            f.on_publish_result(p.generation, p.seq, false, rc, reason, true);
          }
          break;
        case Pending::Op::kStatus:
          // The retained status is best effort (sent again every 10 s), but a broker refusing it (an ACL on
          // the status topic) must not go unnoticed: logged once per reason code.
          if (reason >= 0x80 && reason != f.last_logged_status_refusal_) {
            f.last_logged_status_refusal_ = reason;
            log::warn("mqtt", "",
                      "broker refused the status message on " + f.status_topic_ + ": " + reason_name(reason) +
                          " (reason " + std::to_string(reason) + ")");
          }
          break;
        case Pending::Op::kDisconnect:
          f.finish_stop();
          break;
      }
    });
  }
  MqttForwarder& fwd_;
};

MqttForwarder::MqttForwarder(asio::io_context& io, const config::MqttSection& mqtt,
                             const std::string& gateway_id, OutboxSource& outbox,
                             StatusProvider status_provider)
    : io_(io),
      strand_(asio::make_strand(io)),
      cfg_(mqtt),
      gateway_id_(gateway_id),
      evidence_topic_(mqtt.topic_prefix + "/" + gateway_id + "/evidence"),
      status_topic_(mqtt.topic_prefix + "/" + gateway_id + "/status"),
      media_topic_prefix_(mqtt.topic_prefix + "/" + gateway_id + "/media/"),
      outbox_(outbox),
      status_provider_(std::move(status_provider)),
      listener_(std::make_unique<Listener>(*this)),
      reconnect_timer_(strand_),
      status_timer_(strand_),
      ack_timer_(strand_),
      stop_timer_(strand_),
      refusal_timer_(strand_),
      fetch_retry_timer_(strand_),
      backoff_(cfg_.reconnect_min_ms) {
  // No Paho persistence: the outbox in SQLite is the only durable queue, and it is the one we trust.
  client_ =
      std::make_unique<mqtt::async_client>(cfg_.uri, cfg_.client_id, mqtt::create_options(MQTTVERSION_5),
                                           static_cast<mqtt::iclient_persistence*>(nullptr));
  client_->set_connection_lost_handler([this](const std::string& cause) {
    asio::post(strand_, [this, cause] { on_connection_lost(cause.empty() ? "connection lost" : cause); });
  });
  client_->set_disconnected_handler([this](const mqtt::properties&, mqtt::ReasonCode rc) {
    asio::post(strand_, [this, rc] {
      const int code = static_cast<int>(rc);
      on_connection_lost("broker sent DISCONNECT: " + reason_name(code) + " (reason " + std::to_string(code) +
                         ")");
    });
  });
}

MqttForwarder::~MqttForwarder() {
  // Destroying the Paho client first guarantees no callback runs against a dead forwarder; a running TLS
  // diagnosis ends within its timeout (its result is posted to the strand and never run).
  client_.reset();
  if (probe_thread_.joinable()) {
    probe_thread_.join();
  }
}

void MqttForwarder::start() {
  if (cfg_.tls.enabled && !cfg_.tls.verify_hostname) {
    log::warn("mqtt", "",
              "tls.verify_hostname is false: any certificate from the CA " + cfg_.tls.ca_file +
                  " is accepted for " + cfg_.uri + ", whatever host it names");
  } else if (!cfg_.tls.enabled) {
    log::info("mqtt", "",
              "broker " + cfg_.uri + " is plaintext (tcp://): evidence is signed but not encrypted");
  }
  asio::post(strand_, [this] {
    connect();
    publish_status(true);
  });
}

void MqttForwarder::notify_committed(std::uint64_t last_seq, std::vector<CommittedRecord> records) {
  asio::post(strand_, [this, last_seq, records = std::move(records)]() mutable {
    // Everything committed so far was handed to Paho or waits in ready_: no read-back is due.
    const bool caught_up =
        connected_ && !fetching_ && !stopped_ && !refusal_wait_ && read_to_ == committed_seq_;
    committed_seq_ = std::max(committed_seq_, last_seq);
    bool in_order = caught_up;
    for (auto& r : records) {
      if (r.ready_at.time_since_epoch().count() != 0) {
        ready_at_.emplace(r.seq, r.ready_at);
      }
      // Fast path: the next record in order goes to ready_, not through a read-back from the store.
      in_order = in_order && !r.has_media && r.seq == read_to_ + 1 && ready_.size() < kReadPage &&
                 ready_bytes_ + r.jws.size() <= kMaxReadyBytes;
      if (in_order) {
        ready_bytes_ += r.jws.size();
        read_to_ = r.seq;
        ready_.push_back(store::OutboxEntry{r.seq, std::move(r.jws), 0, {}, {}});
      }
    }
    // Bounded: during a long outage the oldest entries go (only the latency figure loses them).
    while (ready_at_.size() > 20000) {
      ready_at_.erase(ready_at_.begin());
    }
    pump();
  });
}

std::size_t MqttForwarder::window() const {
  // While the broker refuses publishes, one record at a time: each retry is one publish, not a window's
  // worth.
  return refusal_backoff_.count() > 0 ? 1 : static_cast<std::size_t>(std::max(cfg_.max_inflight, 1));
}

bool MqttForwarder::window_full() const {
  return inflight_.size() >= window() || inflight_bytes_ >= kMaxInflightBytes;
}

void MqttForwarder::forget_inflight(std::uint64_t seq) {
  if (auto it = inflight_.find(seq); it != inflight_.end()) {
    inflight_bytes_ -= it->second;
    inflight_.erase(it);
  }
}

bool MqttForwarder::publish_record(std::uint64_t seq, const std::string& jws,
                                   const std::vector<std::string>& media,
                                   const std::vector<std::string>& media_bytes) {
  std::size_t bytes = jws.size();
  try {
    // MQTT keeps one connection's QoS 1 messages in order, so a consumer has the pictures before the
    // record that names them. A media failure fails the record's attempt too (see on_publish_result).
    for (std::size_t i = 0; i < media.size() && i < media_bytes.size(); ++i) {
      if (media_bytes[i].empty()) {
        continue;  // missing or damaged in the media store: reported by the store worker
      }
      auto pending = std::make_unique<Pending>(Pending{Pending::Op::kMedia, generation_, seq});
      client_->publish(mqtt::make_message(media_topic_prefix_ + media[i], media_bytes[i], 1, false),
                       pending.get(), *listener_);
      pending.release();
      bytes += media_bytes[i].size();
    }
    auto pending = std::make_unique<Pending>(Pending{Pending::Op::kPublish, generation_, seq});
    client_->publish(mqtt::make_message(evidence_topic_, jws, 1, false), pending.get(), *listener_);
    pending.release();  // the listener owns it now
  } catch (const mqtt::exception& e) {
    // Not connected any more, or Paho's buffer is full: sent again from the outbox.
    last_error_ = std::string("publish: ") + e.what();
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.failed;
    return false;
  }
  inflight_[seq] = bytes;
  inflight_bytes_ += bytes;
  cursor_ = seq;
  return true;
}

void MqttForwarder::connect() {
  if (connecting_ || connected_ || stopped_) {
    return;
  }
  connecting_ = true;
  json offline = {{"state", "offline"},
                  {"gateway", gateway_id_},
                  {"version", CPD_VERSION},
                  {"reason", "connection lost"}};
  // Maximum Packet Size: a broker must not send us anything larger (it only sends acknowledgements). Paho
  // 1.3 buffers an incoming packet whole, so this is what keeps a broker from sizing our memory.
  mqtt::properties props{{mqtt::property::SESSION_EXPIRY_INTERVAL, cfg_.session_expiry_s},
                         {mqtt::property::MAXIMUM_PACKET_SIZE, static_cast<int>(kMaxIncomingPacketBytes)}};
  auto builder = mqtt::connect_options_builder();
  if (cfg_.tls.enabled) {
    // Server certificate checked against our CA only, host name too unless configured off; TLS 1.2 or
    // newer. An ssl:// uri makes Paho use TLS or fail: there is no plaintext fallback to guard against.
    auto ssl = mqtt::ssl_options_builder()
                   .trust_store(cfg_.tls.ca_file)
                   .enable_server_cert_auth(true)
                   .verify(cfg_.tls.verify_hostname)
                   .ssl_version(MQTT_SSL_VERSION_TLS_1_2)
                   .finalize();
    // No Paho ssl error handler: Paho C++ 1.2 keeps a pointer to the ssl_options it was set on, which the
    // copies into connect_options leave dangling (a crash on the first TLS error). diagnose_tls() says more.
    if (!cfg_.tls.cert_file.empty()) {
      ssl.set_key_store(cfg_.tls.cert_file);
      ssl.set_private_key(cfg_.tls.key_file);
    }
    builder.ssl(std::move(ssl));
  }
  if (!cfg_.username.empty()) {
    builder.user_name(cfg_.username);
    if (!cfg_.password.empty()) {
      builder.password(cfg_.password);
    }
  }
  auto opts = builder.mqtt_version(MQTTVERSION_5)
                  .clean_start(false)
                  .properties(props)
                  .keep_alive_interval(std::chrono::seconds(cfg_.keepalive_s))
                  .connect_timeout(std::chrono::seconds(cfg_.connect_timeout_s))
                  .max_inflight(std::max(cfg_.max_inflight, 1) + 8)
                  .will(mqtt::message(status_topic_, offline.dump(), 1, true))
                  .finalize();
  try {
    client_->connect(opts, new Pending{Pending::Op::kConnect, generation_, 0}, *listener_);
  } catch (const mqtt::exception& e) {
    connecting_ = false;
    last_error_ = std::string("connect: ") + e.what();
    log::warn("mqtt", "", last_error_);
    schedule_reconnect();
  }
}

void MqttForwarder::on_connect_failed(int rc, int reason) {
  const std::string what = connect_failure_text(rc, reason);
  if (stopping_ || stopped_) {
    report_connect_failure(what);
    if (stopping_) {
      finish_stop();
    }
    return;
  }
  // Paho's words do not say what the broker did ("TCP connect timeout" for a broker that never sends
  // CONNACK, "socket error" for garbage, a 2-byte garbage "CONNACK" read as a refusal; TLS failures as
  // "TCP/TLS connect failure"). A probe repeats the CONNECT off the strand and judges the broker's bytes;
  // the reconnect waits for it, so at most one probe runs and probes follow the reconnect backoff.
  if (probing_) {
    schedule_reconnect();
    return;
  }
  probing_ = true;
  if (probe_thread_.joinable()) {
    probe_thread_.join();  // the previous probe has finished: it cleared probing_ on the strand
  }
  const auto timeout = std::chrono::milliseconds(std::min(cfg_.connect_timeout_s, 10) * 1000);
  probe_thread_ = std::jthread([this, what, timeout, cfg = cfg_] {
    std::string seen = probe_broker(cfg, timeout);
    asio::post(strand_, [this, what, seen = std::move(seen)] {
      probing_ = false;
      report_connect_failure(seen.empty() ? what : seen);
      schedule_reconnect();
    });
  });
}

void MqttForwarder::report_connect_failure(const std::string& why) {
  last_error_ = why;
  {
    std::lock_guard lock(snapshot_mutex_);
    snapshot_last_error_ = why;
  }
  const std::string line = "cannot connect to broker " + cfg_.uri + ": " + why;
  if (why != last_logged_error_) {
    log::warn("mqtt", "", line + "; retrying with backoff, records stay in the outbox");
    last_logged_error_ = why;
  } else {
    log::debug("mqtt", "", line);
  }
}

void MqttForwarder::schedule_reconnect() {
  if (stopped_) {
    return;
  }
  // Exponential backoff with full jitter in [backoff/2, backoff], capped.
  std::uniform_int_distribution<long> dist(backoff_.count() / 2, backoff_.count());
  const auto delay = std::chrono::milliseconds(dist(rng_));
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(cfg_.reconnect_max_ms));
  reconnect_timer_.expires_after(delay);
  reconnect_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) {
      connect();
    }
  });
}

void MqttForwarder::on_connected() {
  connected_ = true;
  if (stopped_) {
    finish_stop();
    return;
  }
  // The reconnect backoff is not reset here but when a connection has lasted (on_connection_lost): a broker
  // that accepts and then drops every connection must not be reconnected to at the minimum delay forever.
  connected_at_ = std::chrono::steady_clock::now();
  last_logged_error_.clear();
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.connects;
    snapshot_connected_ = true;
  }
  log::notice("mqtt", "", "connected to " + cfg_.uri);
  publish_status(true);
  on_side_connected();  // custody topics subscribed again, side publishes resumed (mqtt_side_channel.cpp)
  status_timer_.expires_after(std::chrono::seconds(10));
  status_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && connected_) {
      on_status_tick();
    }
  });
  pump();
  check_stop_done();
}

void MqttForwarder::publish_status_now() {
  asio::post(strand_, [this] {
    if (connected_ && !stopped_) {
      publish_status(true);
    }
  });
}

void MqttForwarder::on_status_tick() {
  publish_status(true);
  status_timer_.expires_after(std::chrono::seconds(10));
  status_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && connected_) {
      on_status_tick();
    }
  });
}

namespace {

std::size_t entry_bytes(const store::OutboxEntry& e) {
  std::size_t bytes = e.jws.size();
  for (const auto& m : e.media_bytes) {
    bytes += m.size();
  }
  return bytes;
}

}  // namespace

bool MqttForwarder::publish_ready() {
  while (!ready_.empty() && !window_full()) {
    store::OutboxEntry& e = ready_.front();
    if (e.seq > cursor_ && !publish_record(e.seq, e.jws, e.media, e.media_bytes)) {
      clear_ready();  // read back from the outbox after cursor_
      return false;
    }
    ready_bytes_ -= entry_bytes(e);
    ready_.pop_front();
  }
  if (ready_.empty()) {
    cursor_ = std::max(cursor_, read_to_);  // what was read is handed to Paho, or was PUBACKed already
    ready_full_ = false;
  }
  return true;
}

void MqttForwarder::clear_ready() {
  ready_.clear();
  ready_bytes_ = 0;
  ready_full_ = false;
  read_to_ = cursor_;
}

void MqttForwarder::rewind_to_inflight() {
  if (!inflight_.empty()) {
    cursor_ = std::min(cursor_, inflight_.begin()->first - 1);
  }
  clear_ready();
  inflight_.clear();
  inflight_bytes_ = 0;
  ++generation_;
}

void MqttForwarder::on_connection_lost(const std::string& cause) {
  if (!connected_) {
    return;
  }
  connected_ = false;
  if (std::chrono::steady_clock::now() - connected_at_ >= kStableConnection) {
    backoff_ = std::chrono::milliseconds(cfg_.reconnect_min_ms);
  }
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.disconnects;
    snapshot_connected_ = false;
    snapshot_last_error_ = cause;
  }
  last_error_ = cause;
  log::warn("mqtt", "",
            "lost the broker: " + cause + "; " + std::to_string(inflight_.size()) +
                " records awaiting PUBACK will be sent again");
  status_timer_.cancel();
  rewind_to_inflight();
  flush_acks();
  if (stopping_) {
    finish_stop();
    return;
  }
  schedule_reconnect();
}

void MqttForwarder::pump() {
  if (!connected_ || stopped_ || refusal_wait_) {
    return;
  }
  // Also while a read-back is under way (it waits behind the store worker's commits): a failed publish
  // empties ready_, and then that read-back's page is dropped (on_fetched: base != read_to_).
  publish_ready();
  if (fetching_) {
    return;
  }
  if (read_to_ >= committed_seq_) {
    check_stop_done();
    return;
  }
  if (ready_.size() >= kRefillBelow || ready_bytes_ >= kMaxReadyBytes / 2 ||
      (ready_full_ && !ready_.empty())) {
    return;  // enough read ahead (or the next record did not fit beside it): a PUBACK pumps again
  }
  // While the broker refuses publishes, one record at a time (window() is 1): nothing read ahead of it.
  if (refusal_backoff_.count() > 0 && (!inflight_.empty() || !ready_.empty())) {
    return;
  }
  const std::size_t limit = refusal_backoff_.count() > 0 ? 1 : kReadPage - ready_.size();
  fetching_ = true;
  const std::uint64_t generation = generation_;
  const std::uint64_t base = read_to_;
  const std::uint64_t target = committed_seq_;
  outbox_.fetch_after(
      base, limit, [this, generation, base, target](std::optional<std::vector<store::OutboxEntry>> entries) {
        asio::post(strand_, [this, generation, base, target, e = std::move(entries)]() mutable {
          on_fetched(generation, base, target, std::move(e));
        });
      });
}

void MqttForwarder::on_fetched(std::uint64_t generation, std::uint64_t base, std::uint64_t target,
                               std::optional<std::vector<store::OutboxEntry>> entries) {
  fetching_ = false;
  if (generation != generation_ || !connected_ || base != read_to_) {
    pump();  // rewound (or a publish failed) meanwhile: read again from where the forwarder is now
    return;
  }
  if (!entries) {
    // The store could not be read (an I/O error): nothing is known of the records after read_to_, which stay
    // in the outbox. Read again in a second (no busy loop), logged at most once a minute.
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    const std::string what = "could not read the outbox after seq " + std::to_string(base) +
                             " (a store read error); trying again in 1 s";
    if (fetch_error_logged_ms_ < 0 || now - fetch_error_logged_ms_ >= 60000) {
      fetch_error_logged_ms_ = now;
      log::error("mqtt", "", what + " (logged at most once a minute)");
    }
    {
      std::lock_guard lock(snapshot_mutex_);
      snapshot_last_error_ = what;
    }
    fetching_ = true;  // no other read-back meanwhile
    fetch_retry_timer_.expires_after(std::chrono::seconds(1));
    fetch_retry_timer_.async_wait([this](boost::system::error_code ec) {
      fetching_ = false;
      if (!ec) {
        pump();
      }
    });
    return;
  }
  if (entries->empty()) {
    read_to_ = std::max(read_to_, target);  // everything up to target was already PUBACKed
  }
  for (auto& entry : *entries) {
    if (entry.seq <= read_to_) {
      continue;
    }
    const std::size_t bytes = entry_bytes(entry);
    if (!ready_.empty() && ready_bytes_ + bytes > kMaxReadyBytes) {
      // The rest of the page is read again once ready_ is empty (not before: it would not fit again).
      ready_full_ = true;
      break;
    }
    ready_bytes_ += bytes;
    read_to_ = entry.seq;
    ready_.push_back(std::move(entry));
  }
  pump();
}

void MqttForwarder::on_publish_result(std::uint64_t generation, std::uint64_t seq, bool ok, int rc,
                                      int reason, bool media) {
  if (ok && media_refused_.erase(seq) > 0) {
    ok = false;  // the record went through but one of its pictures did not: it is sent again, with them
    if (generation != generation_) {
      return;  // counted when its media was refused; the rewind already covers it
    }
  }
  if (ok) {
    acks_.push_back(seq);
    {
      std::lock_guard lock(snapshot_mutex_);
      ++counters_.published;
      acked_seq_ = std::max(acked_seq_, seq);
      if (auto it = ready_at_.find(seq); it != ready_at_.end()) {
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - it->second).count();
        latency_.add(ms);
        if (latency_observer_) {
          latency_observer_(ms / 1000.0);
        }
        ready_at_.erase(it);
      }
    }
    if (generation == generation_) {
      forget_inflight(seq);
      if (refusal_backoff_.count() > 0) {
        on_refusal_over();
      }
    }
    if (acks_.size() >= 256) {
      flush_acks();
    } else if (acks_.size() == 1) {
      ack_timer_.expires_after(std::chrono::milliseconds(20));
      ack_timer_.async_wait([this](boost::system::error_code ec) {
        if (!ec) {
          flush_acks();
        }
      });
    }
    pump();
    check_stop_done();
    return;
  }
  if (!media) {
    media_refused_.erase(seq);  // this attempt of the record is over either way
  }
  if (reason >= 0x80) {
    on_publish_refused(generation, seq, reason, media);
    return;
  }
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.failed;
  }
  if (generation != generation_) {
    return;  // already rewound past it
  }
  // -11 (MQTTASYNC_OPERATION_INCOMPLETE): the broker had no session for it. Send again from the outbox,
  // in order, with everything after it.
  const std::string paho = mqtt::exception::error_str(rc);
  log::info("mqtt", "",
            "publish of seq " + std::to_string(seq) + " failed: " + (paho.empty() ? "error" : paho) +
                " (Paho rc " + std::to_string(rc) + "); resending from the outbox");
  inflight_.emplace(seq, 0);
  rewind_to_inflight();
  flush_acks();  // PUBACKed records leave the outbox before it is read again: not sent a second time
  pump();
}

// The broker answered a publish with a failure reason code (PUBACK >= 0x80: an ACL's 135 Not authorized,
// 151 Quota exceeded, ...). Resending at once would be refused at once (22 000 retries in 12 s): the record
// stays in the outbox and is retried alone after a capped exponential backoff (reconnect_min_ms doubling up
// to reconnect_max_ms, with jitter); the window reopens with the first record the broker accepts.
void MqttForwarder::on_publish_refused(std::uint64_t generation, std::uint64_t seq, int reason, bool media) {
  const std::string name = reason_name(reason);
  const std::string why = "broker refused the publish of seq " + std::to_string(seq) +
                          (media ? " (its media)" : "") + ": " + name + " (reason " + std::to_string(reason) +
                          ")";
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.failed;
    ++counters_.refused;
    if (refusals_by_reason_.size() < 256 || refusals_by_reason_.count(reason) > 0) {
      ++refusals_by_reason_[reason];  // reason codes are one byte: at most 128 entries
    }
    snapshot_last_error_ = why;
  }
  last_error_ = why;
  if (media && generation == generation_) {
    // Its record may still be accepted: that acceptance must not drop it from the outbox (see above).
    media_refused_.insert(seq);
  }
  if (generation != generation_) {
    return;  // one of a window already rewound: counted, no second backoff
  }
  const bool first = refusal_backoff_.count() == 0;
  refusal_backoff_ = first ? std::chrono::milliseconds(cfg_.reconnect_min_ms)
                           : std::min(refusal_backoff_ * 2, std::chrono::milliseconds(cfg_.reconnect_max_ms));
  std::uniform_int_distribution<long> dist(refusal_backoff_.count() / 2, refusal_backoff_.count());
  const auto delay = std::chrono::milliseconds(dist(rng_));
  {
    std::lock_guard lock(snapshot_mutex_);
    if (first || !refusal_) {
      refusal_ = Refusal{};
      refusal_->since_ms = wall_ms();
    }
    refusal_->seq = seq;
    refusal_->reason = reason;
    ++refusal_->attempts;
    refusal_->retry_at_ms = wall_ms() + delay.count();
  }
  const std::string retry = "; the record stays in the outbox and is retried alone in " +
                            std::to_string(delay.count()) + " ms (backoff up to " +
                            std::to_string(cfg_.reconnect_max_ms) + " ms)";
  // Logged at warn level once per reason code while the broker keeps refusing (the status shows the count).
  if (reason != last_logged_refusal_) {
    log::warn("mqtt", "", why + retry);
    last_logged_refusal_ = reason;
  } else {
    log::debug("mqtt", "", why + retry);
  }
  inflight_.emplace(seq, 0);
  rewind_to_inflight();
  flush_acks();  // as after a failed publish: what was PUBACKed is not read again
  refusal_wait_ = true;
  refusal_timer_.expires_after(delay);
  refusal_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) {
      refusal_wait_ = false;
      pump();
    }
  });
}

void MqttForwarder::on_refusal_over() {
  std::uint64_t attempts = 0;
  std::int64_t since = 0;
  {
    std::lock_guard lock(snapshot_mutex_);
    if (refusal_) {
      attempts = refusal_->attempts;
      since = refusal_->since_ms;
    }
    refusal_.reset();
  }
  log::notice("mqtt", "",
              "the broker accepts publishes again after " + std::to_string(attempts) +
                  " refused attempts over " + std::to_string((wall_ms() - since) / 1000) + " s");
  refusal_backoff_ = std::chrono::milliseconds(0);
  last_logged_refusal_ = 0;
}

void MqttForwarder::flush_acks() {
  if (acks_.empty()) {
    return;
  }
  outbox_.forwarded(std::move(acks_));
  acks_.clear();
}

void MqttForwarder::publish_status(bool online) {
  if (!connected_) {
    return;
  }
  json status = status_provider_ ? status_provider_() : json::object();
  status["state"] = online ? "online" : "offline";
  status["gateway"] = gateway_id_;
  status["version"] = CPD_VERSION;
  if (!online) {
    status["reason"] = "clean shutdown";
    if (status.contains("broker") && status["broker"].is_object()) {
      status["broker"]["connected"] = false;  // disconnecting right after this message
    }
  }
  try {
    client_->publish(mqtt::make_message(status_topic_, status.dump(), 1, true),
                     new Pending{online ? Pending::Op::kStatus : Pending::Op::kDisconnect, generation_, 0},
                     *listener_);
  } catch (const mqtt::exception& e) {
    log::warn("mqtt", "", std::string("status publish failed: ") + e.what());
    if (!online) {
      finish_stop();
    }
  }
}

void MqttForwarder::stop(std::uint64_t until_seq, std::chrono::milliseconds timeout,
                         std::function<void()> done) {
  asio::post(strand_, [this, until_seq, timeout, done = std::move(done)]() mutable {
    stopping_ = true;
    log::debug("mqtt", "",
               std::string("stop requested: connected ") + (connected_ ? "yes" : "no") + ", connecting " +
                   (connecting_ ? "yes" : "no"));
    stop_done_ = std::move(done);
    stop_until_seq_ = until_seq;
    committed_seq_ = std::max(committed_seq_, until_seq);
    reconnect_timer_.cancel();
    stop_timer_.expires_after(timeout);
    stop_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec && !stopped_) {
        log::warn("mqtt", "",
                  "stopping with " + std::to_string(inflight_.size()) +
                      " records unacknowledged; they stay in the outbox for the next start");
        check_stop_done(true);
      }
    });
    if (!connected_ && connecting_) {
      // A connect is in flight (e.g. SIGTERM right after start): its outcome decides, within the timeout,
      // so what was committed is still forwarded when the broker is there.
      return;
    }
    if (!connected_) {
      finish_stop();
      return;
    }
    pump();
    check_stop_done();
  });
}

void MqttForwarder::check_stop_done(bool force) {
  if (!stopping_ || stopped_) {
    return;
  }
  if (!connected_) {
    finish_stop();
    return;
  }
  const bool drained = inflight_.empty() && cursor_ >= stop_until_seq_;
  if (!drained && !force) {
    return;
  }
  stopped_ = true;
  flush_acks();
  // The retained offline status goes first; the disconnect follows its completion (Op::kDisconnect).
  publish_status(false);
}

void MqttForwarder::finish_stop() {
  stopped_ = true;
  stop_timer_.cancel();
  refusal_timer_.cancel();
  status_timer_.cancel();
  ack_timer_.cancel();
  fetch_retry_timer_.cancel();
  flush_acks();
  if (connected_) {
    connected_ = false;
    try {
      client_->disconnect(1000, new Pending{Pending::Op::kStatus, generation_, 0}, *listener_);
    } catch (const mqtt::exception&) {
    }
  }
  {
    std::lock_guard lock(snapshot_mutex_);
    snapshot_connected_ = false;
  }
  if (stop_done_) {
    auto done = std::move(stop_done_);
    stop_done_ = nullptr;
    asio::post(io_, std::move(done));
  }
}

json MqttForwarder::status() const {
  std::lock_guard lock(snapshot_mutex_);
  json tls = cfg_.tls.enabled ? json{{"verify_hostname", cfg_.tls.verify_hostname},
                                     {"client_certificate", !cfg_.tls.cert_file.empty()}}
                              : json(nullptr);
  json refusals = json::array();
  for (const auto& [code, count] : refusals_by_reason_) {
    refusals.push_back({{"reason_code", code}, {"reason", reason_name(code)}, {"count", count}});
  }
  json refusing = nullptr;
  if (refusal_) {
    refusing = {{"seq", refusal_->seq},
                {"reason_code", refusal_->reason},
                {"reason", reason_name(refusal_->reason)},
                {"since_ms", refusal_->since_ms},
                {"attempts", refusal_->attempts},
                {"retry_at_ms", refusal_->retry_at_ms}};
  }
  return json{{"uri", cfg_.uri},
              {"connected", snapshot_connected_},
              {"tls", std::move(tls)},
              {"last_error", snapshot_last_error_.empty() ? json(nullptr) : json(snapshot_last_error_)},
              {"published", counters_.published},
              {"failed", counters_.failed},
              {"refused", counters_.refused},
              {"refusals", std::move(refusals)},
              {"refusing", std::move(refusing)},
              {"connects", counters_.connects},
              {"disconnects", counters_.disconnects},
              {"inbound_dropped", inbound_dropped_.load()},
              {"subscribe_refused", subscribe_refused_.load()},
              {"acked_seq", acked_seq_},
              {"latency",
               {{"count", latency_.count()},
                {"p50_ms", std::round(latency_.percentile(0.50) * 10) / 10},
                {"p99_ms", std::round(latency_.percentile(0.99) * 10) / 10},
                {"max_ms", std::round(latency_.percentile(1.0) * 10) / 10}}}};
}

}  // namespace cpd::forwarder
