// MqttForwarder: the outbox pump over MQTT v5 (see the header); plain TCP or TLS with verification.
#include "daemon/forwarder/mqtt_forwarder.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>

#include <boost/asio/post.hpp>
#include <mqtt/async_client.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "daemon/log/log.h"

namespace cpd::forwarder {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

struct HostPort {
  std::string host;  // without IPv6 brackets
  std::string port;
};

// "ssl://host:port" as normalised by the config loader.
HostPort split_uri(const std::string& uri) {
  HostPort out;
  const auto scheme_end = uri.find("://");
  const std::string rest = scheme_end == std::string::npos ? uri : uri.substr(scheme_end + 3);
  const auto colon = rest.rfind(':');
  out.host = rest.substr(0, colon);
  out.port = colon == std::string::npos ? "" : rest.substr(colon + 1);
  if (out.host.size() >= 2 && out.host.front() == '[') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  return out;
}

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    if (reason != nullptr && out.find(reason) == std::string::npos) {
      out += (out.empty() ? "" : "; ") + std::string(reason);
    }
  }
  return out;
}

// Connects within `timeout`; -1 and `why` set on failure.
int connect_tcp(const HostPort& hp, std::chrono::milliseconds timeout, std::string& why) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
    why = "cannot resolve " + hp.host + ": " + ::gai_strerror(rc);
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, &::freeaddrinfo);
  why = "no address for " + hp.host;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      continue;
    }
    int err = 0;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        err = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 ? 0 : ETIMEDOUT;
        socklen_t len = sizeof err;
        if (err == 0) {
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
      }
    }
    if (err == 0) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      return fd;
    }
    why = std::string("TCP connect: ") + std::strerror(err);
    ::close(fd);
  }
  return -1;
}

// Why a TLS connection to the broker fails, as OpenSSL sees it with the same trust store, client
// certificate and host check Paho uses ("certificate has expired", "hostname mismatch", ...); empty when
// the handshake and verification succeed (then the failure is not TLS's). Paho itself only reports
// "TCP/TLS connect failure", which tells an operator nothing. Blocking: run it off the io threads.
std::string diagnose_tls(const config::MqttSection& cfg, std::chrono::milliseconds timeout) {
  const HostPort hp = split_uri(cfg.uri);
  std::string why;
  const int fd = connect_tcp(hp, timeout, why);
  if (fd < 0) {
    return why;
  }
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&::SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &::SSL_CTX_free);
  if (!ctx) {
    ::close(fd);
    return "cannot create a TLS context: " + openssl_errors();
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(ctx.get(), cfg.tls.ca_file.c_str(), nullptr) != 1) {
    ::close(fd);
    return "cannot load CA file " + cfg.tls.ca_file + ": " + openssl_errors();
  }
  if (!cfg.tls.cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx.get(), cfg.tls.cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx.get(), cfg.tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(ctx.get()) != 1)) {
    ::close(fd);
    return "cannot load client certificate " + cfg.tls.cert_file + " / key " + cfg.tls.key_file + ": " +
           openssl_errors();
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  std::unique_ptr<SSL, decltype(&::SSL_free)> ssl(SSL_new(ctx.get()), &::SSL_free);
  SSL_set_fd(ssl.get(), fd);
  const bool ip = is_ip_literal(hp.host);
  if (!ip) {
    // SSL_set_tlsext_host_name() without its C cast (SNI, so a broker with several names picks the right one).
    SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(hp.host.c_str()));
  }
  if (cfg.tls.verify_hostname) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, hp.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, hp.host.c_str(), 0);
    }
  }
  std::string result;
  if (SSL_connect(ssl.get()) != 1) {
    const long verify = SSL_get_verify_result(ssl.get());
    const std::string errors = openssl_errors();
    if (verify != X509_V_OK) {
      result = std::string("server certificate rejected: ") + X509_verify_cert_error_string(verify);
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        result += " (hostname mismatch: the certificate does not name " + hp.host + ")";
      }
    } else if (!errors.empty()) {
      result = "TLS handshake failed: " + errors;
    } else {
      result = "TLS handshake failed: the broker closed the connection (is it a TLS port?)";
    }
  } else {
    // TLS 1.3 reports a rejected client certificate only after the handshake: wait briefly for an alert.
    char byte = 0;
    timeval tv{0, 500 * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (SSL_peek(ssl.get(), &byte, 1) <= 0) {
      const std::string errors = openssl_errors();
      if (!errors.empty()) {
        result = "TLS handshake failed: " + errors;
      }
    }
    SSL_shutdown(ssl.get());
  }
  ::close(fd);
  return result;
}

// Paho's connect failure in words: the MQTT v5 reason (e.g. "Bad user name or password") or return code.
std::string connect_failure_text(int rc, int reason) {
  // Paho reports a v5 CONNACK refusal either as the token's reason code or as its return code.
  const int code = reason >= 0x80 ? reason : rc;
  if (code >= 0x80) {
    return "broker refused the connection: " + mqtt::exception::reason_code_str(code) + " (reason " +
           std::to_string(code) + ")";
  }
  switch (rc) {
    case 4:
      return "broker refused the connection: bad user name or password (not authorized)";
    case 5:
      return "broker refused the connection: not authorized";
    default:
      break;
  }
  return "connect failed (rc " + std::to_string(rc) + ", reason " + std::to_string(reason) + ")";
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
          // A v5 PUBACK with a failure reason code (>= 0x80) is not an acceptance.
          f.on_publish_result(p.generation, p.seq, ok && reason < 0x80, ok ? reason : rc);
          break;
        case Pending::Op::kMedia:
          // Success needs nothing (the record's PUBACK follows); a failure resends the record and its media.
          if (!ok) {
            f.on_publish_result(p.generation, p.seq, false, rc);
          }
          break;
        case Pending::Op::kStatus:
          break;
        case Pending::Op::kDisconnect:
          f.finish_stop();
          break;
      }
    });
  }
  MqttForwarder& fwd_;
};

MqttForwarder::MqttForwarder(asio::io_context& io, const config::MqttSection& mqtt, const std::string& gateway_id,
                             OutboxSource& outbox, StatusProvider status_provider)
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
      backoff_(cfg_.reconnect_min_ms) {
  // No Paho persistence: the outbox in SQLite is the only durable queue, and it is the one we trust.
  client_ = std::make_unique<mqtt::async_client>(cfg_.uri, cfg_.client_id, mqtt::create_options(MQTTVERSION_5),
                                                 static_cast<mqtt::iclient_persistence*>(nullptr));
  client_->set_connection_lost_handler([this](const std::string& cause) {
    asio::post(strand_, [this, cause] { on_connection_lost(cause.empty() ? "connection lost" : cause); });
  });
  client_->set_disconnected_handler([this](const mqtt::properties&, mqtt::ReasonCode rc) {
    asio::post(strand_, [this, rc] {
      on_connection_lost("broker sent DISCONNECT, reason " + std::to_string(static_cast<int>(rc)));
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
    log::warn("mqtt", "", "tls.verify_hostname is false: any certificate from the CA " + cfg_.tls.ca_file +
                              " is accepted for " + cfg_.uri + ", whatever host it names");
  } else if (!cfg_.tls.enabled) {
    log::info("mqtt", "", "broker " + cfg_.uri + " is plaintext (tcp://): evidence is signed but not encrypted");
  }
  asio::post(strand_, [this] {
    connect();
    publish_status(true);
  });
}

void MqttForwarder::notify_committed(std::uint64_t last_seq, std::vector<CommittedRecord> records) {
  asio::post(strand_, [this, last_seq, records = std::move(records)] {
    const bool caught_up = connected_ && !fetching_ && !stopped_ && cursor_ == committed_seq_;
    committed_seq_ = std::max(committed_seq_, last_seq);
    bool in_order = caught_up;
    for (const auto& r : records) {
      if (r.ready_at.time_since_epoch().count() != 0) {
        ready_at_.emplace(r.seq, r.ready_at);
      }
      // Fast path: the next record in order, room in the window: no read-back from the store.
      in_order = in_order && !r.has_media && r.seq == cursor_ + 1 && !window_full();
      if (in_order && !publish_record(r.seq, r.jws)) {
        in_order = false;
      }
    }
    // Bounded: during a long outage the oldest entries go (only the latency figure loses them).
    while (ready_at_.size() > 20000) {
      ready_at_.erase(ready_at_.begin());
    }
    pump();
  });
}

bool MqttForwarder::window_full() const {
  return inflight_.size() >= static_cast<std::size_t>(std::max(cfg_.max_inflight, 1)) ||
         inflight_bytes_ >= kMaxInflightBytes;
}

void MqttForwarder::forget_inflight(std::uint64_t seq) {
  if (auto it = inflight_.find(seq); it != inflight_.end()) {
    inflight_bytes_ -= it->second;
    inflight_.erase(it);
  }
}

bool MqttForwarder::publish_record(std::uint64_t seq, const std::string& jws, const std::vector<std::string>& media,
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
      client_->publish(mqtt::make_message(media_topic_prefix_ + media[i], media_bytes[i], 1, false), pending.get(),
                       *listener_);
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
  json offline = {{"state", "offline"}, {"gateway", gateway_id_}, {"version", CPD_VERSION},
                  {"reason", "connection lost"}};
  mqtt::properties props{{mqtt::property::SESSION_EXPIRY_INTERVAL, cfg_.session_expiry_s}};
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
  auto opts = builder
                  .mqtt_version(MQTTVERSION_5)
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
  if (stopping_) {
    report_connect_failure(what);
    finish_stop();
    return;
  }
  // An MQTT-level refusal needs no diagnosis; a transport failure over TLS gets one (off the strand), and
  // the reconnect waits for it so at most one probe runs.
  if (!cfg_.tls.enabled || reason >= 0x80 || rc >= 0x80 || rc == 4 || rc == 5 || stopped_) {
    report_connect_failure(what);
    schedule_reconnect();
    return;
  }
  if (probing_) {
    schedule_reconnect();
    return;
  }
  probing_ = true;
  if (probe_thread_.joinable()) {
    probe_thread_.join();  // the previous probe has finished: it cleared probing_ on the strand
  }
  const auto timeout = std::chrono::milliseconds(std::min(cfg_.connect_timeout_s, 5) * 1000);
  probe_thread_ = std::jthread([this, what, timeout, cfg = cfg_] {
    std::string tls_reason = diagnose_tls(cfg, timeout);
    asio::post(strand_, [this, what, tls_reason = std::move(tls_reason)] {
      probing_ = false;
      if (!tls_reason.empty()) {
        report_connect_failure("TLS: " + tls_reason);
      } else {
        report_connect_failure(what);
      }
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
  backoff_ = std::chrono::milliseconds(cfg_.reconnect_min_ms);
  last_logged_error_.clear();
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.connects;
    snapshot_connected_ = true;
  }
  log::notice("mqtt", "", "connected to " + cfg_.uri);
  publish_status(true);
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

void MqttForwarder::rewind_to_inflight() {
  if (!inflight_.empty()) {
    cursor_ = std::min(cursor_, inflight_.begin()->first - 1);
  }
  inflight_.clear();
  inflight_bytes_ = 0;
  ++generation_;
}

void MqttForwarder::on_connection_lost(const std::string& cause) {
  if (!connected_) {
    return;
  }
  connected_ = false;
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.disconnects;
    snapshot_connected_ = false;
    snapshot_last_error_ = cause;
  }
  last_error_ = cause;
  log::warn("mqtt", "", "lost the broker: " + cause + "; " + std::to_string(inflight_.size()) +
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
  if (!connected_ || fetching_ || stopped_) {
    return;
  }
  const auto window = static_cast<std::size_t>(std::max(cfg_.max_inflight, 1));
  if (window_full() || cursor_ >= committed_seq_) {
    check_stop_done();
    return;
  }
  fetching_ = true;
  const std::uint64_t generation = generation_;
  const std::uint64_t target = committed_seq_;
  outbox_.fetch_after(cursor_, window - inflight_.size(),
                      [this, generation, target](std::vector<store::OutboxEntry> entries) {
                        asio::post(strand_, [this, generation, target, e = std::move(entries)]() mutable {
                          if (e.empty() && generation == generation_) {
                            // Everything up to target was already PUBACKed.
                            cursor_ = std::max(cursor_, target);
                          }
                          on_fetched(generation, std::move(e));
                        });
                      });
}

void MqttForwarder::on_fetched(std::uint64_t generation, std::vector<store::OutboxEntry> entries) {
  fetching_ = false;
  if (generation != generation_ || !connected_) {
    pump();
    return;
  }
  for (auto& entry : entries) {
    if (entry.seq <= cursor_) {
      continue;
    }
    if (window_full() || !publish_record(entry.seq, entry.jws, entry.media, entry.media_bytes)) {
      break;
    }
  }
  pump();
}

void MqttForwarder::on_publish_result(std::uint64_t generation, std::uint64_t seq, bool ok, int rc) {
  if (ok) {
    acks_.push_back(seq);
    {
      std::lock_guard lock(snapshot_mutex_);
      ++counters_.published;
      acked_seq_ = std::max(acked_seq_, seq);
      if (auto it = ready_at_.find(seq); it != ready_at_.end()) {
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - it->second).count();
        latency_.add(ms);
        if (latency_observer_) {
          latency_observer_(ms / 1000.0);
        }
        ready_at_.erase(it);
      }
    }
    if (generation == generation_) {
      forget_inflight(seq);
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
  {
    std::lock_guard lock(snapshot_mutex_);
    ++counters_.failed;
  }
  if (generation != generation_) {
    return;  // already rewound past it
  }
  // -11 (MQTTASYNC_OPERATION_INCOMPLETE): the broker had no session for it. Send again from the outbox,
  // in order, with everything after it.
  log::info("mqtt", "", "publish of seq " + std::to_string(seq) + " failed (rc " + std::to_string(rc) +
                            "); resending from the outbox");
  inflight_.emplace(seq, 0);
  rewind_to_inflight();
  pump();
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

void MqttForwarder::stop(std::uint64_t until_seq, std::chrono::milliseconds timeout, std::function<void()> done) {
  asio::post(strand_, [this, until_seq, timeout, done = std::move(done)]() mutable {
    stopping_ = true;
    log::debug("mqtt", "", std::string("stop requested: connected ") + (connected_ ? "yes" : "no") + ", connecting " +
                               (connecting_ ? "yes" : "no"));
    stop_done_ = std::move(done);
    stop_until_seq_ = until_seq;
    committed_seq_ = std::max(committed_seq_, until_seq);
    reconnect_timer_.cancel();
    stop_timer_.expires_after(timeout);
    stop_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec && !stopped_) {
        log::warn("mqtt", "", "stopping with " + std::to_string(inflight_.size()) +
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
  status_timer_.cancel();
  ack_timer_.cancel();
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
  return json{{"uri", cfg_.uri},
              {"connected", snapshot_connected_},
              {"tls", std::move(tls)},
              {"last_error", snapshot_last_error_.empty() ? json(nullptr) : json(snapshot_last_error_)},
              {"published", counters_.published},
              {"failed", counters_.failed},
              {"connects", counters_.connects},
              {"disconnects", counters_.disconnects},
              {"acked_seq", acked_seq_},
              {"latency",
               {{"count", latency_.count()},
                {"p50_ms", std::round(latency_.percentile(0.50) * 10) / 10},
                {"p99_ms", std::round(latency_.percentile(0.99) * 10) / 10},
                {"max_ms", std::round(latency_.percentile(1.0) * 10) / 10}}}};
}

}  // namespace cpd::forwarder
