// CentralService: Paho callback -> bounded queue -> worker (verify, batch into PostgreSQL, receipts, resend
// requests). The worker owns the PostgreSQL connection; a lost connection is retried with backoff while the
// batch in hand is kept (the queue fills, then Paho stops reading and the broker holds the rest).
#include "central/central_service.h"

#include <fcntl.h>
#include <mqtt/async_client.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "daemon/core/custody.h"
#include "daemon/core/encoding.h"
#include "daemon/core/record_check.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/mqtt_options.h"
#include "daemon/log/log.h"
#include "daemon/metrics/exposition.h"

namespace cpd::central {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxMediaBytes = 64u << 20;  // a picture is well under this; larger is refused
constexpr std::size_t kMaxRecordBytes = 4u << 20;  // a record JWS (raw frames included) is well under this
constexpr std::int64_t kKeyReloadMs = 5000;  // an unknown kid re-reads the trusted keys at most this often

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void write_all(int fd, const std::string& bytes, const std::string& path) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      throw std::runtime_error("media: cannot write " + path + ": " + std::strerror(errno));
    }
    off += static_cast<std::size_t>(n);
  }
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

std::optional<FeedTopic> parse_feed_topic(const std::string& prefix, const std::string& topic) {
  if (topic.size() <= prefix.size() + 1 || topic.compare(0, prefix.size(), prefix) != 0 ||
      topic[prefix.size()] != '/') {
    return std::nullopt;
  }
  const std::string tail = topic.substr(prefix.size() + 1);
  const auto slash = tail.find('/');
  if (slash == std::string::npos || slash == 0) {
    return std::nullopt;
  }
  return FeedTopic{tail.substr(0, slash), tail.substr(slash + 1)};
}

CentralService::CentralService(CentralConfig config)
    : cfg_(std::move(config)),
      key_(Ed25519PrivateKey::load_pem_file(cfg_.central.key_path)),
      prefix_(cfg_.mqtt.topic_prefix) {}

CentralService::~CentralService() {
  stop();
}

void CentralService::ensure_store() {
  if (!store_) {
    store_ = std::make_unique<CentralStore>(cfg_.postgres.conninfo, cfg_.feed.quarantine_max_per_gateway);
  }
}

void CentralService::start() {
  ensure_store();
  if (!cfg_.trust.keys_dir.empty()) {
    // <gateway>.pem (or <gateway>.<anything>.pem): enrolled as `checkpoint-central enroll` would.
    for (const auto& entry : fs::directory_iterator(cfg_.trust.keys_dir)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || entry.path().extension() != ".pem") {
        continue;
      }
      const std::string gateway = name.substr(0, name.find('.'));
      std::ifstream in(entry.path());
      std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      try {
        store_->enroll(gateway, Ed25519PublicKey::from_pem(pem), "keys_dir:" + name, now_ms());
      } catch (const KeyError& e) {
        log::warn("central", gateway,
                  "trust.keys_dir: " + name + " is not an Ed25519 public key: " + e.what());
      }
    }
  }
  reload_keys(true);
  fs::create_directories(cfg_.feed.media_dir);
  worker_ = std::thread([this] { run_worker(); });
  connect_broker();
}

void CentralService::connect_broker() {
  client_ = std::make_unique<mqtt::async_client>(cfg_.mqtt.uri, cfg_.mqtt.client_id,
                                                 mqtt::create_options(MQTTVERSION_5));
  client_->set_message_callback(
      [this](mqtt::const_message_ptr msg) { on_message(msg->get_topic(), msg->get_payload_str()); });
  const std::string group = "$share/" + cfg_.feed.share_group + "/" + prefix_ + "/+/";
  const auto subscribe = [this, group] {
    try {
      auto topics = mqtt::string_collection::create(
          {group + "evidence", group + "media/+", group + "head", group + "resend/response"});
      client_->subscribe(topics, std::vector<int>{1, 1, 1, 1})->wait_for(std::chrono::seconds(10));
      if (!subscribed_.exchange(true)) {
        log::notice("central", "", "subscribed to " + group + "{evidence,media/+,head,resend/response}");
      }
    } catch (const mqtt::exception& e) {
      log::warn("central", "", std::string("mqtt: subscribe failed: ") + e.what());
    }
  };
  client_->set_connected_handler([this, subscribe](const std::string&) {
    log::notice("central", "", "mqtt: connected to " + cfg_.mqtt.uri);
    // Off Paho's callback thread: a subscribe token cannot complete while its own thread waits on it.
    std::thread(subscribe).detach();
  });
  client_->set_connection_lost_handler([this](const std::string& cause) {
    subscribed_ = false;
    log::warn("central", "", "mqtt: connection lost: " + cause + " (reconnecting)");
  });
  mqtt::properties props{{mqtt::property::SESSION_EXPIRY_INTERVAL, cfg_.mqtt.session_expiry_s}};
  auto opts = forwarder::base_connect_options(cfg_.mqtt)
                  .clean_start(false)
                  .properties(props)
                  .automatic_reconnect(std::chrono::milliseconds(cfg_.mqtt.reconnect_min_ms),
                                       std::chrono::milliseconds(cfg_.mqtt.reconnect_max_ms))
                  .finalize();
  // The first connect is retried here until it works (or stop); then Paho reconnects by itself.
  auto delay = std::chrono::milliseconds(cfg_.mqtt.reconnect_min_ms);
  for (;;) {
    try {
      client_->connect(opts)->wait();
      return;
    } catch (const mqtt::exception& e) {
      log::warn("central", "",
                std::string("mqtt: cannot connect to ") + cfg_.mqtt.uri + ": " + e.what() + " (retrying in " +
                    std::to_string(delay.count()) + " ms)");
    }
    {
      std::unique_lock lock(queue_mutex_);
      if (queue_cv_.wait_for(lock, delay, [this] { return stopping_; })) {
        return;
      }
    }
    delay = std::min(delay * 2, std::chrono::milliseconds(cfg_.mqtt.reconnect_max_ms));
  }
}

void CentralService::on_message(std::string topic, std::string payload) {
  std::unique_lock lock(queue_mutex_);
  // Bounded: Paho's thread waits here, so the broker (not this process) holds what we cannot take yet.
  space_cv_.wait(lock, [this] {
    return stopping_ || queue_.size() < static_cast<std::size_t>(cfg_.feed.queue_messages);
  });
  if (stopping_) {
    return;  // not stored: found later as a gap and asked for again
  }
  queue_.push_back(Message{std::move(topic), std::move(payload)});
  queue_cv_.notify_one();
}

std::size_t CentralService::queue_depth() const {
  std::lock_guard lock(queue_mutex_);
  return queue_.size();
}

void CentralService::run_worker() {
  std::vector<Message> batch;
  auto pg_backoff = std::chrono::milliseconds(200);
  for (;;) {
    if (batch.empty()) {
      std::unique_lock lock(queue_mutex_);
      queue_cv_.wait_for(lock, std::chrono::milliseconds(cfg_.gaps.check_interval_ms),
                         [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) {
        return;
      }
      while (!queue_.empty() && batch.size() < static_cast<std::size_t>(cfg_.feed.batch_max)) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      space_cv_.notify_all();
    }
    try {
      ensure_store();
      if (!batch.empty()) {
        process(batch);
        batch.clear();
      }
      const std::int64_t now = now_ms();
      if (now - last_gap_check_ms_ >= cfg_.gaps.check_interval_ms) {
        last_gap_check_ms_ = now;
        publish_receipts(store_->due_receipts(
            now, ReceiptPolicy{cfg_.central.id, static_cast<std::uint64_t>(cfg_.receipts.every_records),
                               cfg_.receipts.every_ms}));
        request_resends();
      }
      pg_backoff = std::chrono::milliseconds(200);
    } catch (const PgError& e) {
      ++counters_.pg_errors;
      if (!e.connection_lost() && !batch.empty()) {
        // PostgreSQL refused the data itself (not the link): retrying the same batch would stall this
        // instance for ever. Each message goes alone; one refused alone is quarantined (records) or
        // dropped and counted (media), and found again as a gap if it matters.
        log::error("central", "",
                   std::string(e.what()) + " (storing the batch of " + std::to_string(batch.size()) +
                       " one message at a time)");
        process_singly(batch);
        batch.clear();
        continue;
      }
      log::error("central", "",
                 std::string(e.what()) + " (batch of " + std::to_string(batch.size()) +
                     " kept; retrying in " + std::to_string(pg_backoff.count()) + " ms)");
      if (e.connection_lost()) {
        store_.reset();
      }
      std::unique_lock lock(queue_mutex_);
      if (queue_cv_.wait_for(lock, pg_backoff, [this] { return stopping_; }) && batch.empty()) {
        return;
      }
      pg_backoff = std::min(pg_backoff * 2, std::chrono::milliseconds(10000));
      if (stopping_) {
        return;  // what is in hand is not acknowledged to anyone: the gateways still hold it
      }
    }
  }
}

std::optional<Ed25519PublicKey> CentralService::key_for(const std::string& gateway, const std::string& kid) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (const auto g = keys_.find(gateway); g != keys_.end()) {
      if (const auto k = g->second.find(kid); k != g->second.end()) {
        return k->second;
      }
    }
    if (attempt == 0) {
      reload_keys(false);  // enrolled since we last looked (checkpoint-central enroll on another host)?
    }
  }
  return std::nullopt;
}

void CentralService::reload_keys(bool force) {
  const std::int64_t now = now_ms();
  if (!force && now - keys_loaded_ms_ < kKeyReloadMs) {
    return;
  }
  keys_loaded_ms_ = now;
  keys_ = store_->trusted_keys();
}

std::string CentralService::write_media(const std::string& sha256, const std::string& bytes) {
  const fs::path dir = fs::path(cfg_.feed.media_dir) / sha256.substr(0, 2);
  const fs::path path = dir / sha256;
  std::error_code ec;
  if (fs::file_size(path, ec) == bytes.size() && !ec) {
    return path.string();  // content-addressed: the same name is the same bytes
  }
  fs::create_directories(dir);
  const fs::path tmp = dir / (sha256 + ".tmp" + std::to_string(::getpid()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    throw std::runtime_error("media: cannot create " + tmp.string() + ": " + std::strerror(errno));
  }
  try {
    write_all(fd, bytes, tmp.string());
    if (::fsync(fd) != 0) {
      throw std::runtime_error("media: fsync " + tmp.string() + ": " + std::strerror(errno));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  fs::rename(tmp, path);
  fsync_dir(dir);
  return path.string();
}

void CentralService::classify(const Message& m, Batch& batch) {
  const auto topic = parse_feed_topic(prefix_, m.topic);
  if (!topic) {
    ++counters_.refused;
    return;
  }
  const std::string& gateway = topic->gateway;
  if (keys_.find(gateway) == keys_.end()) {
    reload_keys(false);
    if (keys_.find(gateway) == keys_.end()) {
      ++counters_.unknown_gateway;
      log::warn("central", gateway,
                "message on " + m.topic +
                    " from a gateway that is not enrolled: dropped "
                    "(enroll it: checkpoint-central enroll)");
      return;
    }
  }
  const KeyForKid lookup = [this, &gateway](const std::string& kid) { return key_for(gateway, kid); };
  if (topic->rest == "evidence") {
    if (m.payload.size() > kMaxRecordBytes) {
      batch.quarantine.push_back(
          {gateway, std::nullopt, "", m.payload.substr(0, 1024),
           "record of " + std::to_string(m.payload.size()) + " bytes (first 1024 kept)"});
      return;
    }
    RecordCheck c = check_record(m.payload, lookup);
    std::string reason = c.reason;
    if (c.ok && c.gateway != gateway) {
      c.ok = false;
      reason = "record names gateway \"" + c.gateway + "\" on the topic of \"" + gateway + "\"";
    }
    if (!c.ok) {
      std::optional<std::uint64_t> seq;
      if (c.seq != 0) {
        seq = c.seq;
      }
      log::warn(
          "central", gateway,
          std::string(c.unknown_key ? "record under an unknown key quarantined: " : "record quarantined: ") +
              reason);
      batch.quarantine.push_back({gateway, seq, c.kid, m.payload, reason});
      return;
    }
    batch.records.push_back(
        IncomingRecord{gateway, c.seq, m.payload, sha256_hex(m.payload), c.prev, c.kid, std::move(c.body)});
  } else if (topic->rest.rfind("media/", 0) == 0) {
    const std::string sha = topic->rest.substr(6);
    if (!is_sha256_hex(sha) || m.payload.size() > kMaxMediaBytes || sha256_hex(m.payload) != sha) {
      ++counters_.media_refused;
      log::warn(
          "central", gateway,
          "media on " + m.topic + " refused: " +
              (m.payload.size() > kMaxMediaBytes ? "larger than 64 MiB" : "its SHA-256 is not its name"));
      return;
    }
    batch.media.push_back(IncomingMedia{gateway, sha, m.payload.size(), write_media(sha, m.payload)});
  } else if (topic->rest == "head") {
    const custody::HeadCheck h = custody::check_head(m.payload, lookup, gateway);
    if (!h.ok) {
      ++counters_.refused;
      log::warn("central", gateway, "head announcement refused: " + h.reason);
      return;
    }
    batch.heads.push_back(h.head);
  } else if (topic->rest == "resend/response") {
    const auto reply = custody::parse_resend_reply(m.payload);
    if (!reply) {
      ++counters_.refused;
      return;
    }
    if (!reply->error.empty()) {
      log::warn("central", gateway, "the gateway refused a resend request: " + reply->error);
    }
    for (const auto& [lo, hi] : reply->not_held) {
      log::error("central", gateway,
                 "the gateway no longer holds seq " + std::to_string(lo) + ".." + std::to_string(hi) +
                     ": an unrecoverable gap");
      batch.not_held.push_back(NotHeld{gateway, lo, hi});
    }
  } else {
    ++counters_.refused;
  }
}

void CentralService::process(std::vector<Message>& messages) {
  Batch batch;
  for (const Message& m : messages) {
    ++counters_.messages;
    try {
      classify(m, batch);
    } catch (const std::runtime_error& e) {
      // A media file we could not write: not stored, so not counted as held; the gap check asks again.
      log::error("central", "", std::string(e.what()));
    }
  }
  if (batch.empty()) {
    return;
  }
  const BatchOutcome out = store_->store_batch(
      batch, now_ms(),
      ReceiptPolicy{cfg_.central.id, static_cast<std::uint64_t>(cfg_.receipts.every_records),
                    cfg_.receipts.every_ms});
  ++counters_.batches;
  counters_.records_stored += out.stored;
  counters_.duplicates += out.duplicates;
  counters_.forks += out.forks;
  counters_.quarantined += out.quarantined;
  counters_.quarantine_dropped += out.quarantine_dropped;
  counters_.media_stored += out.media_stored;
  for (const std::string& id : out.fork_ids) {
    log::error("central", id.substr(0, id.find(':')),
               "FORK: " + id + " arrived again with other bytes, both signed by a trusted key; both kept");
  }
  for (const std::string& b : out.chain_breaks) {
    log::error("central", b.substr(0, b.find(':')), "CHAIN BREAK at " + b);
  }
  publish_receipts(out.receipts);
}

void CentralService::process_singly(std::vector<Message>& messages) {
  for (Message& m : messages) {
    std::vector<Message> one;
    one.push_back(m);
    try {
      process(one);
    } catch (const PgError& e) {
      if (e.connection_lost()) {
        throw;
      }
      const auto topic = parse_feed_topic(prefix_, m.topic);
      if (topic && topic->rest == "evidence") {
        Batch q;
        q.quarantine.push_back({topic->gateway, std::nullopt, "", m.payload.substr(0, kMaxRecordBytes),
                                std::string("refused by PostgreSQL: ") + e.what()});
        try {
          store_->store_batch(q, now_ms(), ReceiptPolicy{cfg_.central.id, 1, cfg_.receipts.every_ms});
          ++counters_.quarantined;
        } catch (const PgError&) {
          ++counters_.refused;
        }
      } else {
        ++counters_.refused;
      }
      log::error("central", topic ? topic->gateway : "",
                 "message on " + m.topic + " not stored: " + e.what());
    }
  }
}

void CentralService::publish_receipts(const std::vector<custody::Receipt>& receipts) {
  for (const custody::Receipt& r : receipts) {
    const std::string topic = prefix_ + "/" + r.gateway + "/custody";
    try {
      client_->publish(mqtt::make_message(topic, custody::seal_receipt(key_, r), 1, true));
      ++counters_.receipts;
      log::info("central", r.gateway, "custody receipt through seq " + std::to_string(r.through_seq));
    } catch (const mqtt::exception& e) {
      // Published again at the next refresh (10 x receipts.every_ms) or advance.
      log::warn("central", r.gateway, std::string("mqtt: receipt not published: ") + e.what());
    }
  }
}

void CentralService::request_resends() {
  const auto plans = store_->plan_resends(
      now_ms(), GapPolicy{cfg_.gaps.resend_after_ms, cfg_.gaps.retry_min_ms, cfg_.gaps.retry_max_ms});
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  for (const ResendPlan& plan : plans) {
    const std::string topic = prefix_ + "/" + plan.gateway + "/resend";
    mqtt::properties props{
        {mqtt::property::RESPONSE_TOPIC, prefix_ + "/" + plan.gateway + "/resend/response"},
        {mqtt::property::CORRELATION_DATA, std::to_string(rng())}};
    auto msg = mqtt::make_message(topic, custody::resend_request_json(plan.request), 1, false);
    msg->set_properties(props);
    try {
      client_->publish(msg);
      ++counters_.resend_requests;
      log::notice("central", plan.gateway, "asked for a resend: " + plan.why);
    } catch (const mqtt::exception& e) {
      log::warn("central", plan.gateway, std::string("mqtt: resend request not published: ") + e.what());
    }
  }
}

void CentralService::request_stop() {
  {
    std::lock_guard lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  space_cv_.notify_all();
}

void CentralService::stop() {
  {
    std::lock_guard lock(queue_mutex_);
    if (stopped_) {
      return;
    }
    stopped_ = true;
    stopping_ = true;
  }
  queue_cv_.notify_all();
  space_cv_.notify_all();
  if (worker_.joinable()) {
    worker_.join();
  }
  if (client_) {
    try {
      if (client_->is_connected()) {
        client_->disconnect()->wait_for(std::chrono::seconds(5));
      }
    } catch (const mqtt::exception&) {
      // Going away anyway.
    }
  }
}

std::string CentralService::metrics_text() {
  metrics::Exposition e;
  const auto c = [&](const char* name, const char* help, const std::atomic<std::uint64_t>& v) {
    e.add_counter(name, help, {}, static_cast<double>(v.load()));
  };
  c("central_messages_total", "Messages taken from the broker.", counters_.messages);
  c("central_records_stored_total", "Records verified and stored (first copy).", counters_.records_stored);
  c("central_duplicates_total", "Second copies with the same bytes (dropped).", counters_.duplicates);
  c("central_forks_total", "Second copies with other bytes (kept aside, alarmed).", counters_.forks);
  c("central_quarantined_total", "Records under an unknown key or failing verification (kept).",
    counters_.quarantined);
  c("central_quarantine_dropped_total", "Quarantine beyond its bound (counted only).",
    counters_.quarantine_dropped);
  c("central_media_stored_total", "Media files stored.", counters_.media_stored);
  c("central_media_refused_total", "Media refused (hash mismatch, too large).", counters_.media_refused);
  c("central_unknown_gateway_total", "Messages from gateways that are not enrolled.",
    counters_.unknown_gateway);
  c("central_receipts_total", "Custody receipts published.", counters_.receipts);
  c("central_resend_requests_total", "Resend requests published.", counters_.resend_requests);
  c("central_postgres_errors_total", "PostgreSQL errors (batch retried).", counters_.pg_errors);
  e.add_gauge("central_queue_messages", "Messages taken and not yet stored.", {},
              static_cast<double>(queue_depth()));
  std::lock_guard lock(metrics_mutex_);
  try {
    if (!metrics_store_) {
      metrics_store_ = std::make_unique<CentralStore>(cfg_.postgres.conninfo);
    }
    const nlohmann::json status = metrics_store_->status();
    const std::int64_t now = now_ms();
    for (const auto& g : status["gateways"]) {
      const metrics::Labels labels{{"gateway", g["gateway"].get<std::string>()}};
      e.add_gauge("central_watermark_seq", "Contiguous verified seq held (custody through).", labels,
                  g["watermark"].get<double>());
      e.add_gauge("central_custody_lag_records", "Highest seq seen or announced minus the watermark.", labels,
                  std::max(g["max_seq"].get<double>(), g["announced_seq"].get<double>()) -
                      g["watermark"].get<double>());
      e.add_gauge("central_gap_open_seconds", "How long a gap has been open (0: none).", labels,
                  g["gap_open_since_ms"].is_null()
                      ? 0.0
                      : static_cast<double>(now - g["gap_open_since_ms"].get<std::int64_t>()) / 1000.0);
      e.add_gauge("central_gateway_forks", "Forks seen for the gateway.", labels, g["forks"].get<double>());
      e.add_gauge("central_gateway_quarantined", "Records quarantined for the gateway.", labels,
                  g["quarantined"].get<double>());
    }
  } catch (const PgError& err) {
    metrics_store_.reset();
    log::warn("central", "", std::string("metrics: ") + err.what());
  }
  return e.text();
}

}  // namespace cpd::central
