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
#include <set>
#include <stdexcept>

#include "central/key_rotation.h"
#include "central/record_columns.h"
#include "daemon/core/custody.h"
#include "daemon/core/digest.h"
#include "daemon/core/durable_fs.h"
#include "daemon/core/encoding.h"
#include "daemon/core/key_rotation.h"
#include "daemon/core/record_check.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/mqtt_options.h"
#include "daemon/log/log.h"
#include "daemon/metrics/exposition.h"

namespace cpd::central {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxMediaBytes = custody::kMaxPictureBytes;  // a picture is well under this
constexpr std::size_t kMaxRecordBytes = 4u << 20;  // a record JWS (raw frames included) is well under this
constexpr std::int64_t kKeyReloadMs = 5000;  // an unknown kid re-reads the trusted keys at most this often
constexpr std::size_t kQuarantineWhole = 4u << 20;  // payloads up to this are quarantined whole
constexpr std::size_t kQuarantineHead = 1024;       // of larger ones, the first bytes
constexpr std::size_t kMaxCorrelation = 32;         // central's Correlation Data is a decimal 64-bit number

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

}  // namespace

QuarantineBounds quarantine_bounds(const FeedSection& feed) {
  return QuarantineBounds{feed.quarantine_max_per_gateway,
                          static_cast<std::int64_t>(feed.quarantine_max_mb_per_gateway) << 20,
                          feed.quarantine_max_rows, static_cast<std::int64_t>(feed.quarantine_max_mb) << 20};
}

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
      prefix_(cfg_.mqtt.topic_prefix),
      files_(std::make_unique<FileIntake>(
          FileIntakeConfig{cfg_.central.id, cfg_.feed.media_dir,
                           static_cast<std::uint64_t>(cfg_.feed.max_file_mb) << 20, cfg_.feed.max_open_files,
                           cfg_.gaps.file_stall_ms, cfg_.gaps.retry_max_ms,
                           static_cast<std::uint64_t>(cfg_.feed.unnamed_max_mb) << 20},
          key_, prefix_)) {}

CentralService::~CentralService() {
  stop();
  // Paho answers the publishes still pending (PublishOutcome) when the client goes: before the counters
  // they count in (declared after client_, so destroyed before it).
  client_.reset();
}

void CentralService::ensure_store() {
  if (!store_) {
    store_ = std::make_unique<CentralStore>(cfg_.postgres.conninfo, quarantine_bounds(cfg_.feed));
  }
}

void CentralService::start() {
  ensure_store();
  store_->recount_quarantine();
  if (!cfg_.trust.keys_dir.empty()) {
    // <gateway>.pem (or <gateway>.<anything>.pem): enrolled as `checkpoint-central enroll` would.
    for (const auto& entry : fs::directory_iterator(cfg_.trust.keys_dir)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || entry.path().extension() != ".pem") {
        continue;
      }
      const std::string gateway = name.substr(0, name.find('.'));
      if (!is_gateway_id(gateway)) {
        log::warn(
            "central", "keys",
            "trust.keys_dir: " + printable(name) +
                " skipped: the name before its first '.' is not a gateway id (1-63 of [a-z0-9-], first a "
                "letter or digit)");
        continue;
      }
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
  link_thread_ = std::thread([this] { run_link(); });
  connect_broker();
}

void CentralService::connect_broker() {
  client_ = std::make_unique<mqtt::async_client>(cfg_.mqtt.uri, cfg_.mqtt.client_id,
                                                 mqtt::create_options(MQTTVERSION_5));
  client_->set_message_callback([this](mqtt::const_message_ptr msg) {
    std::string correlation;
    if (msg->get_properties().contains(mqtt::property::CORRELATION_DATA)) {
      correlation = mqtt::get<mqtt::binary>(msg->get_properties(), mqtt::property::CORRELATION_DATA);
    }
    on_message(msg->get_topic(), msg->get_payload_str(), std::move(correlation));
  });
  const std::string group = "$share/" + cfg_.feed.share_group + "/" + prefix_ + "/+/";
  subscribe_ = [this, group] {
    if (leaving_) {
      subscribing_ = false;  // stopping: the broker must not send this instance anything more
      return;
    }
    try {
      const std::vector<std::string> names = feed_filters();
      auto topics = mqtt::string_collection::create(names);
      auto token = client_->subscribe(topics, std::vector<int>{1, 1, 1, 1, 1});
      // Subscribed only when the broker granted every topic: otherwise the periodic check subscribes again
      // (a broker without shared subscriptions, an ACL), and the refusal is logged (at most once a minute)
      // and counted, never taken for a subscription.
      std::string refused;
      if (!token->wait_for(std::chrono::seconds(10))) {
        refused = "no SUBACK within 10 s";
      } else {
        std::vector<mqtt::ReasonCode> codes;
        try {
          codes = token->get_subscribe_response().get_reason_codes();
        } catch (const std::exception&) {
          codes.push_back(token->get_reason_code());
        }
        for (std::size_t i = 0; i < names.size() && i < codes.size(); ++i) {
          if (static_cast<int>(codes[i]) >= 0x80) {
            refused += (refused.empty() ? "" : ", ") + names[i] + " refused with reason code " +
                       std::to_string(static_cast<int>(codes[i]));
          }
        }
      }
      if (!refused.empty()) {
        ++counters_.subscribe_refused;
        const auto now = std::chrono::steady_clock::now();
        if (now - subscribe_refusal_logged_ >= std::chrono::minutes(1)) {
          subscribe_refusal_logged_ = now;
          log::error("central", "",
                     "mqtt: subscribing failed (" + refused + "): nothing is received; trying again");
        }
      } else if (!subscribed_.exchange(true)) {
        log::notice("central", "",
                    "subscribed to " + group + "{evidence,media/+,head,resend/response,file/#}");
      }
    } catch (const mqtt::exception& e) {
      log::warn("central", "", std::string("mqtt: subscribe failed: ") + e.what());
    }
    subscribing_ = false;
  };
  client_->set_connected_handler([this](const std::string&) {
    log::notice("central", "", "mqtt: connected to " + cfg_.mqtt.uri);
    // Off Paho's callback thread: a subscribe token cannot complete while its own thread waits on it.
    if (!subscribing_.exchange(true)) {
      std::thread(subscribe_).detach();
    }
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
      if (queue_cv_.wait_for(lock, delay, [this] { return stopping_ || stop_requested_; })) {
        return;
      }
    }
    delay = std::min(delay * 2, std::chrono::milliseconds(cfg_.mqtt.reconnect_max_ms));
  }
}

std::vector<std::string> CentralService::feed_filters() const {
  const std::string group = "$share/" + cfg_.feed.share_group + "/" + prefix_ + "/+/";
  return {group + "evidence", group + "media/+", group + "head", group + "resend/response", group + "file/#"};
}

void CentralService::leave_share_group() {
  // Before the worker drains: what arrives until the broker confirms is still queued and stored. With a
  // persistent session (clean_start false) a subscription left standing would keep this instance's share of
  // the feed parked in its session while it is away, to be found later only as gaps.
  leaving_ = true;
  if (!client_ || !client_->is_connected()) {
    return;
  }
  try {
    auto token = client_->unsubscribe(mqtt::string_collection::create(feed_filters()));
    if (token->wait_for(std::chrono::seconds(5))) {
      log::notice("central", "",
                  "left the shared subscription: the broker sends the feed to the group's other instances");
    } else {
      log::warn("central", "", "mqtt: no UNSUBACK within 5 s; stopping anyway");
    }
  } catch (const mqtt::exception& e) {
    log::warn("central", "", std::string("mqtt: unsubscribe failed: ") + e.what() + "; stopping anyway");
  }
}

void CentralService::check_broker_link(std::int64_t now) {
  if (!client_ || !subscribe_) {
    return;
  }
  if (client_->is_connected()) {
    link_down_since_ms_ = 0;
    if (!subscribed_ && !subscribing_.exchange(true)) {
      std::thread(subscribe_).detach();
    }
    return;
  }
  if (link_down_since_ms_ == 0) {
    link_down_since_ms_ = now;
    return;
  }
  // Paho's automatic reconnect tries every reconnect_min_ms..reconnect_max_ms; give it a few tries first.
  if (now - link_down_since_ms_ < 3LL * cfg_.mqtt.reconnect_max_ms + 5000) {
    return;
  }
  link_down_since_ms_ = now;
  try {
    client_->reconnect();
    ++counters_.reconnects;
    log::warn("central", "", "mqtt: still not connected to " + cfg_.mqtt.uri + ": reconnecting");
  } catch (const mqtt::exception& e) {
    log::warn("central", "", std::string("mqtt: reconnect failed: ") + e.what());
  }
}

std::optional<CentralService::Prechecked> CentralService::precheck(const std::string& topic,
                                                                   const std::string& payload) const {
  const auto feed = parse_feed_topic(prefix_, topic);
  if (!feed || feed->rest != "evidence" || payload.size() > kMaxRecordBytes) {
    return std::nullopt;
  }
  std::shared_ptr<const TrustedKeys> keys;
  {
    std::lock_guard lock(key_snapshot_mutex_);
    keys = key_snapshot_;
  }
  const auto gateway_keys = keys ? keys->find(feed->gateway) : TrustedKeys::const_iterator{};
  if (!keys || gateway_keys == keys->end()) {
    return std::nullopt;
  }
  std::string key_raw;
  RecordCheck c = check_record(payload, [&](const std::string& kid) -> std::optional<Ed25519PublicKey> {
    const auto k = gateway_keys->second.find(kid);
    if (k == gateway_keys->second.end()) {
      return std::nullopt;
    }
    key_raw = k->second.key.raw();
    return k->second.key;
  });
  if (!c.ok) {
    return std::nullopt;  // the worker checks it again with its own keys and reports why
  }
  return Prechecked{std::move(c), std::move(key_raw), sha256_hex(payload)};
}

void CentralService::on_message(std::string topic, std::string payload, std::string correlation) {
  // An evidence record's signature and canonical form are checked before it is stored, by whichever thread
  // is free: the worker while it lingers for a batch to fill (take_batch), Paho's thread here when more than
  // kPahoChecksBeyond records wait unchecked (the worker is busy storing), and the worker in process() for
  // any left. On two cores the checks overlap each other and the worker's PostgreSQL writes instead of adding
  // up (docs/custody.md, "Central's verify-and-store rate").
  const auto feed = parse_feed_topic(prefix_, topic);
  const bool evidence = feed && feed->rest == "evidence" && payload.size() <= kMaxRecordBytes;
  // A decoded body takes a few times its text in memory: a record counts against feed.queue_mb as its
  // payload and four times its body (at most 3/4 of the payload: base64url).
  const std::size_t charge = evidence ? 4 * payload.size() : payload.size();
  std::unique_lock lock(queue_mutex_);
  // Bounded in messages and bytes (one message is always taken, whatever its size): Paho's thread waits
  // here, so the broker (not this process) holds what we cannot take yet.
  // It never waits longer than a third of the keepalive: Paho reads nothing (not even the broker's
  // PINGRESP) while it waits, and a stalled worker must not cost the broker link. A message that found no
  // room by then is dropped and counted; a record or picture among them is a gap, asked for again.
  const std::size_t max_bytes = static_cast<std::size_t>(cfg_.feed.queue_mb) << 20;
  const auto has_room = [&] {
    return stopping_ || queue_.empty() ||
           (queue_.size() < static_cast<std::size_t>(cfg_.feed.queue_messages) &&
            queue_bytes_ + charge <= max_bytes);
  };
  bool room = has_room();
  if (!room) {
    ++space_waiters_;
    queue_cv_.notify_one();  // a worker lingering for a fuller batch takes this one now
    room = space_cv_.wait_for(lock, std::chrono::seconds(std::max(1, cfg_.mqtt.keepalive_s / 3)), has_room);
    --space_waiters_;
  }
  if (stopping_) {
    ++counters_.dropped_stopping;  // not stored: found later as a gap and asked for again (logged at stop)
    return;
  }
  if (!room) {
    ++counters_.dropped_busy;
    log::warn("central", "busy",
              "queue full for " + std::to_string(std::max(1, cfg_.mqtt.keepalive_s / 3)) +
                  " s (the worker is behind): a message on " + printable(topic) +
                  " dropped; what matters is found as a gap and asked for again");
    return;
  }
  queue_bytes_ += charge;
  queue_.push_back(Message{std::move(topic), std::move(payload), std::move(correlation), std::nullopt, charge,
                           evidence ? CheckState::kPending : CheckState::kNone});
  // The worker waits for a first message, then lingers for a full batch (take_batch): woken for those two
  // only, not once a message.
  if (queue_.size() == 1 || queue_.size() == batch_fill()) {
    queue_cv_.notify_one();
  }
  if (!evidence) {
    return;
  }
  if (++pending_checks_ == 1 && worker_lingering_) {
    queue_cv_.notify_one();  // it checks while it lingers; woken when there was nothing left to check
  }
  if (pending_checks_ > kPahoChecksBeyond) {
    check_oldest_pending(lock);
  }
}

bool CentralService::check_oldest_pending(std::unique_lock<std::mutex>& lock) {
  if (pending_checks_ == 0) {
    return false;
  }
  const auto it =
      std::find_if(queue_.begin() + static_cast<std::ptrdiff_t>(std::min(checked_prefix_, queue_.size())),
                   queue_.end(), [](const Message& m) { return m.state == CheckState::kPending; });
  if (it == queue_.end()) {
    return false;
  }
  checked_prefix_ = static_cast<std::size_t>(it - queue_.begin()) + 1;
  Message& m = *it;  // stays where it is while claimed: take_batch never takes a claimed message
  m.state = CheckState::kClaimed;
  --pending_checks_;
  lock.unlock();
  std::optional<Prechecked> pre;
  try {
    pre = precheck(m.topic, m.payload);
  } catch (...) {
    // Out of memory, say: the worker checks it again when it stores it, and reports what fails there.
  }
  lock.lock();
  m.pre = std::move(pre);
  m.state = CheckState::kDone;
  checked_cv_.notify_all();  // a worker waiting for it at the front of the queue
  return true;
}

std::size_t CentralService::queue_depth() const {
  std::lock_guard lock(queue_mutex_);
  return queue_.size();
}

std::size_t CentralService::queue_bytes() const {
  std::lock_guard lock(queue_mutex_);
  return queue_bytes_;
}

std::size_t CentralService::batch_fill() const {
  return static_cast<std::size_t>(std::min(cfg_.feed.batch_max, cfg_.feed.queue_messages));
}

bool CentralService::take_batch(std::vector<Message>& batch) {
  std::unique_lock lock(queue_mutex_);
  queue_cv_.wait_for(lock, std::chrono::milliseconds(cfg_.gaps.check_interval_ms),
                     [this] { return stopping_ || !queue_.empty(); });
  if (stopping_ && queue_.empty()) {
    return false;
  }
  // Under load, records arrive a few at a time while the last batch commits: a batch of 20 costs PostgreSQL
  // nearly what a batch of 500 costs (a transaction, an fsync, ten statements). So a batch that is not full
  // waits up to feed.batch_linger_ms for more (docs/custody.md, "Central's verify-and-store rate").
  // It checks queued records meanwhile.
  if (!queue_.empty() && cfg_.feed.batch_linger_ms > 0) {
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.feed.batch_linger_ms);
    // Full also when the MQTT thread waits for room: the queue's byte bound is reached before batch_max.
    const auto full = [this] { return stopping_ || queue_.size() >= batch_fill() || space_waiters_ > 0; };
    while (!full() && std::chrono::steady_clock::now() < until) {
      if (check_oldest_pending(lock)) {
        continue;
      }
      worker_lingering_ = true;
      queue_cv_.wait_until(lock, until, [&] { return full() || pending_checks_ > 0; });
      worker_lingering_ = false;
    }
  }
  while (!queue_.empty() && batch.size() < static_cast<std::size_t>(cfg_.feed.batch_max)) {
    if (queue_.front().state == CheckState::kClaimed) {
      if (!batch.empty()) {
        break;  // Paho's thread is checking it: the next batch takes it
      }
      checked_cv_.wait(lock, [this] { return queue_.front().state != CheckState::kClaimed; });
    }
    if (queue_.front().state == CheckState::kPending) {
      --pending_checks_;  // checked in process(), on this thread
    }
    queue_bytes_ -= queue_.front().charge;
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
    checked_prefix_ -= checked_prefix_ > 0 ? 1 : 0;
  }
  space_cv_.notify_all();
  return true;
}

void CentralService::periodic_checks(std::int64_t now) {
  post_link_job([this, now] { check_broker_link(now); });
  reload_keys(false);  // key ranges changed by another instance's rotation (at most every 5 s)
  reexamine_quarantine();
  expire_quarantine(now);
  publish_receipts(store_->due_receipts(
      now, ReceiptPolicy{cfg_.central.id, static_cast<std::uint64_t>(cfg_.receipts.every_records),
                         cfg_.receipts.every_ms}));
  request_resends();
  std::vector<FilePublish> wants;
  try {
    files_->tick(store_->connection(), now, wants);
  } catch (const PgError& e) {
    if (e.connection_lost()) {
      throw;
    }
    // The recordings' check must not hold up receipts and resends (they ran above; this runs again).
    ++counters_.pg_errors;
    log::error("central", "", std::string("file transfers: ") + e.what());
  }
  publish_files(std::move(wants));
  age_out(now);
}

void CentralService::age_out(std::int64_t now) {
  if (cfg_.feed.unnamed_max_age_days == 0 || ++checks_since_age_out_ < kAgeOutEveryChecks) {
    return;
  }
  checks_since_age_out_ = 0;
  try {
    const OrphanSweep orphans = sweep_orphans(store_->connection(), cfg_.feed.media_dir, kOrphanMinAgeS,
                                              kOrphanEntriesPerRound, orphan_cursor_);
    if (orphans.removed > 0) {
      counters_.media_orphans_removed += orphans.removed;
      log::notice("central", "",
                  "removed " + std::to_string(orphans.removed) +
                      " files no media row holds, written over a day ago (a batch that failed after writing "
                      "them, a crash, a writer's temporary file)");
    }
    if (orphans.refused > 0) {
      counters_.media_orphans_refused += orphans.refused;
      log::error("central", "",
                 "the media directory " + cfg_.feed.media_dir + " holds " + std::to_string(orphans.refused) +
                     " files in one round that no media row of this database holds: none removed. Is "
                     "feed.media_dir the directory of postgres.conninfo's database (or was the database "
                     "restored to an earlier time)?");
    }
  } catch (const PgError& e) {
    if (e.connection_lost()) {
      throw;
    }
    ++counters_.pg_errors;
    log::error("central", "", std::string("removing files no row holds: ") + e.what());
  } catch (const std::exception& e) {
    log::error("central", "", std::string("removing files no row holds: ") + e.what());
  }
  const std::int64_t before = now - std::int64_t{cfg_.feed.unnamed_max_age_days} * 86400000;
  AgedOut gone;
  try {
    gone = age_out_unnamed(store_->connection(), before, kAgeOutLimit);
  } catch (const PgError& e) {
    if (e.connection_lost()) {
      throw;
    }
    ++counters_.pg_errors;  // tried again at the next round
    log::error("central", "", std::string("ageing out files no record names: ") + e.what());
    return;
  } catch (const std::exception& e) {
    log::error("central", "", std::string("ageing out files no record names: ") + e.what());
    return;  // out of memory reading forks, say: tried again at the next round
  }
  if (gone.files == 0) {
    return;
  }
  counters_.media_aged_out += gone.files;
  counters_.media_aged_out_bytes += gone.bytes;
  for (const std::string& gateway : gone.gateways) {
    unnamed_[gateway].read_ms = -1;  // its sum is read again
  }
  log::notice("central", "",
              "aged out " + std::to_string(gone.files) + " pictures (" + std::to_string(gone.bytes) +
                  " bytes) no stored record names, received over " +
                  std::to_string(cfg_.feed.unnamed_max_age_days) +
                  " days ago (feed.unnamed_max_age_days); a record naming one later asks for it again");
}

void CentralService::run_worker() {
  std::vector<Message> batch;
  auto pg_backoff = std::chrono::milliseconds(200);
  // A deadlock or serialization failure between instances aborts one transaction, with nothing wrong in its
  // data: the same batch goes again, up to this many times in a row, before its messages go one at a time.
  constexpr int kMaxTransientRetries = 5;
  int transient_retries = 0;
  std::minstd_rand jitter(static_cast<std::uint32_t>(now_ms()));
  for (;;) {
    if (batch.empty() && !take_batch(batch)) {
      return;
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
        periodic_checks(now);
      }
      pg_backoff = std::chrono::milliseconds(200);
      transient_retries = 0;
    } catch (const PgError& e) {
      ++counters_.pg_errors;
      const bool transient = e.sqlstate() == "40P01" || e.sqlstate() == "40001";
      if (transient && !batch.empty() && transient_retries < kMaxTransientRetries) {
        ++transient_retries;
        ++counters_.pg_transient;
        const auto pause = std::chrono::milliseconds(10 + jitter() % (50 * transient_retries));
        log::warn("central", "",
                  std::string(e.what()) + " (the batch of " + std::to_string(batch.size()) + " again in " +
                      std::to_string(pause.count()) + " ms: try " + std::to_string(transient_retries + 1) +
                      ")");
        std::unique_lock lock(queue_mutex_);
        queue_cv_.wait_for(lock, pause, [this] { return stopping_; });
        continue;  // on a stop too: the worker stores what is in hand before it ends
      }
      transient_retries = 0;
      if ((e.content_refused() || transient) && !batch.empty()) {
        // PostgreSQL refused the data itself (or the same batch deadlocked again and again): retrying the
        // same batch would stall this instance for ever. Each message goes alone; one refused alone is
        // quarantined, and found again as a gap if it matters.
        log::error("central", "",
                   std::string(e.what()) + " (storing the batch of " + std::to_string(batch.size()) +
                       " one message at a time)");
        if (process_singly(batch)) {
          continue;
        }
        // PostgreSQL failed for a reason not the message's meanwhile: what is left waits, as below.
      }
      log::error("central", "",
                 std::string(e.what()) + " (batch of " + std::to_string(batch.size()) +
                     " kept; retrying in " + std::to_string(pg_backoff.count()) + " ms)");
      if (e.connection_lost()) {
        store_.reset();
      }
      std::unique_lock lock(queue_mutex_);
      if (queue_cv_.wait_for(lock, pg_backoff, [this] { return stopping_; }) && batch.empty()) {
        counters_.dropped_stopping += queue_.size();  // the gateways still hold it
        return;
      }
      pg_backoff = std::min(pg_backoff * 2, std::chrono::milliseconds(10000));
      if (stopping_) {
        // What is in hand (and still queued) is not acknowledged to anyone: the gateways still hold it.
        counters_.dropped_stopping += batch.size() + queue_.size();
        return;
      }
    } catch (const std::exception& e) {
      // Not PostgreSQL's: a message central cannot handle must not end the instance. Each goes alone; what
      // still fails is counted and found again as a gap if it matters.
      ++counters_.refused;
      log::error("central", "",
                 std::string("storing a batch failed: ") + e.what() + " (one message at a time)");
      if (!process_singly(batch)) {
        std::unique_lock lock(queue_mutex_);
        queue_cv_.wait_for(lock, pg_backoff, [this] { return stopping_; });
        pg_backoff = std::min(pg_backoff * 2, std::chrono::milliseconds(10000));
      }
    }
  }
}

std::optional<Ed25519PublicKey> CentralService::key_for(const std::string& gateway, const std::string& kid) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (const auto g = keys_.find(gateway); g != keys_.end()) {
      if (const auto k = g->second.find(kid); k != g->second.end()) {
        return k->second.key;  // its seq range is checked once the seq is known (classify)
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
  auto snapshot = std::make_shared<const TrustedKeys>(keys_);
  std::lock_guard lock(key_snapshot_mutex_);
  key_snapshot_ = std::move(snapshot);
}

std::string CentralService::write_media(const std::string& sha256, const std::string& bytes) {
  const fs::path dir = fs::path(cfg_.feed.media_dir) / sha256.substr(0, 2);
  const fs::path path = dir / sha256;
  std::error_code ec;
  if (fs::file_size(path, ec) == bytes.size() && !ec) {
    // Content-addressed: the same name is the same bytes, once checked (a damaged copy is replaced).
    std::string unreadable;
    if (const auto held = sha256_file(path.string(), unreadable); held && held->sha256 == sha256) {
      // Another writer (instance) may have renamed it here and not synced it yet, or crashed before it did:
      // durable before a row counts it.
      if (const auto failed = fsync_file_and_directory(path)) {
        throw std::runtime_error("media: " + describe(*failed, path));
      }
      // Written now, as far as the sweep of files no row holds is concerned (sweep_orphans, a day).
      fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
      return path.string();
    }
  }
  fs::create_directories(dir);
  // A name no other writer uses: instances sharing the directory may run with one pid (containers), and
  // O_EXCL refuses a name taken all the same.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const fs::path tmp = dir / (sha256 + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rng()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
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
  if (const auto failed = fsync_directory(dir)) {
    throw std::runtime_error("media: " + describe(*failed, dir));  // the name may not survive a power cut
  }
  return path.string();
}

bool CentralService::room_for_unnamed(const std::string& gateway, const std::string& sha256,
                                      std::uint64_t bytes, const Batch& batch) {
  const std::uint64_t bound = static_cast<std::uint64_t>(cfg_.feed.unnamed_max_mb) << 20;
  PgConnection& pg = store_->connection();
  Unnamed& u = unnamed_[gateway];
  const std::int64_t now = now_ms();
  // Read again after a second, or after a batch with its pictures committed (commit()); after half a minute
  // when it was over the bound (the sum then runs over up to bound / kUnnamedMinCharge rows).
  if (u.read_ms < 0 || now - u.read_ms >= (u.over ? kUnnamedRefreshOverMs : kUnnamedRefreshMs)) {
    u.bytes = unnamed_bytes(pg, gateway);
    u.read_ms = now;
  }
  // This batch's pictures are not committed yet: the sum read does not hold them (a batch taken again after
  // a failure counts them once: a failed batch committed none).
  std::uint64_t pending = 0;
  for (const IncomingMedia& m : batch.media) {
    pending += m.gateway == gateway ? unnamed_charge(m.bytes) : 0;
  }
  u.over = u.bytes + pending + unnamed_charge(bytes) > bound;
  if (!u.over) {
    return true;
  }
  // Over the bound: a picture a stored record names, or one central holds already, is taken all the same.
  return pg
      .exec(
          "SELECT EXISTS (SELECT 1 FROM record_media WHERE sha256 = $1) OR EXISTS (SELECT 1 FROM media "
          "WHERE sha256 = $1)",
          {sha256}, "looking for a record naming a picture")
      .boolean(0, 0);
}

void CentralService::refuse_unnamed(const std::string& gateway, const std::string& sha256) {
  if (reexamining_) {
    return;  // its quarantine row stays
  }
  ++counters_.media_unnamed_refused;
  Unnamed& u = unnamed_[gateway];
  const std::int64_t now = now_ms();
  if (u.logged_ms < 0 || now - u.logged_ms >= 60000) {
    u.logged_ms = now;
    log::warn("central", gateway,
              "picture " + sha256 +
                  " refused: no stored record names it, and this gateway's files no record names take " +
                  std::to_string(u.bytes) + " bytes (feed.unnamed_max_mb " +
                  std::to_string(cfg_.feed.unnamed_max_mb) +
                  "); it is asked for again once a record names it (further refusals this minute are counted "
                  "only: central_media_unnamed_refused_total)");
  }
}

// Pictures over their gateway's bound, held back while the rest of the batch was read: one that a record of
// this batch names is taken (the gateway publishes a picture just before its record), the others refused.
void CentralService::settle_over_bound(Batch& batch) {
  for (const OverBound& o : over_bound_) {
    const bool named = std::any_of(batch.records.begin(), batch.records.end(), [&o](const IncomingRecord& r) {
      if (r.gateway != o.gateway) {
        return false;
      }
      const std::vector<std::string> pictures =
          record_columns(r.body).pictures;  // as record_media names them
      return std::find(pictures.begin(), pictures.end(), o.sha256) != pictures.end();
    });
    if (!named) {
      refuse_unnamed(o.gateway, o.sha256);
      continue;
    }
    try {
      batch.media.push_back(
          IncomingMedia{o.gateway, o.sha256, o.payload->size(), write_media(o.sha256, *o.payload)});
    } catch (const std::exception& e) {
      ++counters_.refused;  // not stored, so not counted as held; the gap check asks again
      log::error("central", o.gateway, "picture " + o.sha256 + " not taken: " + e.what());
    }
  }
  over_bound_.clear();
}

void CentralService::quarantine(Batch& batch, const std::string& gateway, const std::string& kind,
                                const std::string& payload, std::optional<std::uint64_t> seq, std::string kid,
                                std::string reason, bool enrolled) {
  std::string kept = payload.size() <= kQuarantineWhole ? payload : payload.substr(0, kQuarantineHead);
  if (kept.size() < payload.size()) {
    reason +=
        " (" + std::to_string(payload.size()) + " bytes, first " + std::to_string(kQuarantineHead) + " kept)";
  }
  if (kid.size() > 64 || !is_valid_utf8(kid) || kid.find('\0') != std::string::npos) {
    kid = printable(kid, 64);
  }
  if (reason.size() > 500 || !is_valid_utf8(reason) || reason.find('\0') != std::string::npos) {
    reason = printable(reason, 500);  // PostgreSQL text: UTF-8 without NUL
  }
  const std::string sha = sha256_hex(payload);
  // The same bytes again in this batch are one entry with a count (a flood of one message costs one row).
  for (QuarantineEntry& q : batch.quarantine) {
    if (q.payload_sha256 == sha && q.gateway == gateway && q.topic == kind) {
      ++q.count;
      return;
    }
  }
  batch.quarantine.push_back(QuarantineEntry{gateway, kind, seq, std::move(kid), std::move(kept), sha,
                                             payload.size(), std::move(reason), enrolled, 1});
}

namespace {

// What a feed topic's rest says the message is (the quarantine's topic column); empty: not a feed topic.
std::string kind_of(const std::string& rest) {
  if (rest == "evidence" || rest == "head" || rest == "resend/response") {
    return rest;
  }
  if (rest.rfind("media/", 0) == 0) {
    return "media";
  }
  if (rest.rfind("file/", 0) == 0) {
    return "file";
  }
  return {};
}

}  // namespace

void CentralService::classify(Message& m, Batch& batch) {
  const auto topic = parse_feed_topic(prefix_, m.topic);
  if (!topic) {
    ++counters_.refused;
    log::warn("central", "refused", "message on a topic outside the feed refused: " + printable(m.topic));
    return;
  }
  const std::string& gateway = topic->gateway;
  // What the topic says it is; anything else on our filters is refused.
  const std::string kind = kind_of(topic->rest);
  if (kind.empty()) {
    ++counters_.refused;
    log::warn("central", "refused", "message on " + printable(m.topic) + " refused: not a feed topic");
    return;
  }
  if (!enrolled(m, gateway, kind, batch)) {
    return;
  }
  if (kind == "evidence") {
    classify_record(m, gateway, batch);
  } else if (kind == "media") {
    const std::string sha = topic->rest.substr(6);
    if (!is_sha256_hex(sha) || m.payload.size() > kMaxMediaBytes || sha256_hex(m.payload) != sha) {
      ++counters_.media_refused;
      log::warn("central", gateway,
                "media on " + printable(m.topic) + " refused: " +
                    (!is_sha256_hex(sha)                 ? "its name is not a SHA-256"
                     : m.payload.size() > kMaxMediaBytes ? "larger than 64 MiB"
                                                         : "its SHA-256 is not its name"));
      return;
    }
    if (!room_for_unnamed(gateway, sha, m.payload.size(), batch)) {
      if (reexamining_ || over_bound_.size() >= kMaxOverBound) {
        refuse_unnamed(gateway, sha);
      } else {
        over_bound_.push_back(OverBound{gateway, sha, &m.payload});  // settled once the batch is read
      }
      return;
    }
    batch.media.push_back(IncomingMedia{gateway, sha, m.payload.size(), write_media(sha, m.payload)});
  } else if (kind == "file") {
    // Recordings: taken at once (not batched), each segment fsync'd before PostgreSQL counts it.
    std::vector<FilePublish> answers;
    files_->handle(store_->connection(), gateway, topic->rest, m.payload, now_ms(), answers);
    publish_files(std::move(answers));
  } else if (kind == "head") {
    classify_head(m, gateway, batch);
  } else {  // resend/response
    classify_reply(m, gateway, batch);
  }
}

bool CentralService::enrolled(const Message& m, const std::string& gateway, const std::string& kind,
                              Batch& batch) {
  if (keys_.find(gateway) != keys_.end()) {
    return true;
  }
  reload_keys(false);
  if (keys_.find(gateway) != keys_.end()) {
    return true;
  }
  ++counters_.unknown_gateway;
  if (!is_gateway_id(gateway)) {
    ++counters_.refused;  // no gateway can have this name: not even quarantined under it
    log::warn(
        "central", "refused",
        "message on " + printable(m.topic) + " refused: \"" + printable(gateway) + "\" is not a gateway id");
    return false;
  }
  // Kept aside within the quarantine's bounds (a gateway enrolled later sends these again on a resend).
  // The log names no device: names nobody enrolled are the sender's to choose, without end.
  log::warn("central", "unknown-gateway",
            "message on " + printable(m.topic) +
                " from a gateway that is not enrolled: quarantined (enroll it: checkpoint-central enroll)");
  quarantine(batch, gateway, kind, m.payload, std::nullopt, "", "gateway not enrolled", false);
  return false;
}

void CentralService::classify_record(Message& m, const std::string& gateway, Batch& batch) {
  const std::string kind = "evidence";
  if (m.payload.size() > kMaxRecordBytes) {
    log::warn("central", gateway, "record of " + std::to_string(m.payload.size()) + " bytes quarantined");
    quarantine(batch, gateway, kind, m.payload, std::nullopt, "",
               "record of " + std::to_string(m.payload.size()) + " bytes", true);
    return;
  }
  RecordCheck c;
  std::string jws_sha256;
  const bool prechecked = m.pre && [&] {
    const auto key = key_for(gateway, m.pre->check.kid);
    return key && key->raw() == m.pre->key_raw;  // still the key trusted for that kid
  }();
  if (prechecked) {
    c = std::move(m.pre->check);
    jws_sha256 = std::move(m.pre->jws_sha256);
  } else {
    c = check_record(m.payload, [this, &gateway](const std::string& kid) { return key_for(gateway, kid); });
    jws_sha256 = sha256_hex(m.payload);
  }
  m.pre.reset();
  std::string reason = c.reason;
  if (c.ok && c.gateway != gateway) {
    c.ok = false;
    reason = "record names gateway \"" + printable(c.gateway) + "\" on the topic of \"" + gateway + "\"";
  }
  if (c.ok && c.seq > static_cast<std::uint64_t>(INT64_MAX)) {
    c.ok = false;  // PostgreSQL's bigint; no chain gets there
    reason = "seq " + std::to_string(c.seq) + " is beyond 2^63-1";
  }
  if (c.ok && c.body.is_object() && c.body.value("type", std::string()) == "key_rotation") {
    // Signed by a trusted key, but naming no usable key (a JWK that is not Ed25519, new_kid not its kid, a
    // PEM of another key, old_kid not the signer's): every reader of the chain stops trusting it here
    // (records.md; checkpointctl verify says "chain BROKEN"), so central does not store it either, and
    // custody stops before it. It was stored, the old key kept trusted, and a receipt covered a chain the
    // stock verifier refuses.
    if (std::string why; !parse_key_rotation(c.body, c.kid, &why)) {
      c.ok = false;
      reason = why + " (a malformed key rotation: the chain cannot be trusted past it)";
    }
  }
  if (c.ok) {
    // The signature verified; the key must also be valid for this seq (a retired key signs nothing after
    // its key_rotation record). refuse_retired() checks the batch against PostgreSQL again.
    const TrustedKey& k = keys_.at(gateway).at(c.kid);
    if (std::string why = key_range_refusal(c.kid, k.from_seq, k.to_seq, c.seq); !why.empty()) {
      alarm_retired(gateway, c.seq, why);
      quarantine(batch, gateway, kind, m.payload, c.seq, c.kid, why, true);
      return;
    }
  }
  if (!c.ok) {
    std::optional<std::uint64_t> seq;
    if (c.seq != 0 && c.seq <= static_cast<std::uint64_t>(INT64_MAX)) {
      seq = c.seq;
    }
    log::warn(
        "central", gateway,
        std::string(c.unknown_key ? "record under an unknown key quarantined: " : "record quarantined: ") +
            reason);
    quarantine(batch, gateway, kind, m.payload, seq, c.kid, reason, true);
    return;
  }
  batch.records.push_back(IncomingRecord{gateway, c.seq, m.payload, std::move(jws_sha256), c.prev, c.kid,
                                         std::move(c.body), std::move(c.canonical_body)});
  trust_rotated_key(keys_, batch.records.back());  // key_rotation.h: the rest of this batch verifies
}

void CentralService::classify_head(const Message& m, const std::string& gateway, Batch& batch) {
  const custody::HeadCheck h = custody::check_head(
      m.payload, [this, &gateway](const std::string& kid) { return key_for(gateway, kid); }, gateway);
  std::string reason = h.reason;
  if (h.ok && h.head.seq > static_cast<std::uint64_t>(INT64_MAX)) {
    reason = "seq " + std::to_string(h.head.seq) + " is beyond 2^63-1";
  }
  if (h.ok && reason.empty()) {
    // A retired (or revoked) key announces nothing beyond the seq it was retired at: a leaked old key must
    // not set a head no record will ever reach (the announced head never moves back).
    if (const auto g = keys_.find(gateway); g != keys_.end()) {
      const auto k = g->second.find(h.kid);
      if (k != g->second.end() && k->second.to_seq && h.head.seq > *k->second.to_seq) {
        reason = "head seq " + std::to_string(h.head.seq) + " is signed by kid " + h.kid +
                 ", retired at seq " + std::to_string(*k->second.to_seq);
      }
    }
  }
  if (!h.ok || !reason.empty()) {
    ++counters_.heads_refused;
    log::warn("central", gateway, "head announcement refused: " + reason);
    return;
  }
  batch.heads.push_back(AnnouncedHead{h.head, m.payload});
}

void CentralService::classify_reply(const Message& m, const std::string& gateway, Batch& batch) {
  const auto reply = custody::parse_resend_reply(m.payload);
  if (!reply) {
    ++counters_.replies_refused;
    log::warn("central", gateway,
              "resend reply refused: not a JSON object with \"v\":1 (or over " +
                  std::to_string(custody::kMaxRequestBytes * 4) + " bytes)");
    return;
  }
  // Central's Correlation Data is decimal text; anything else matches no request of ours.
  std::string correlation = m.correlation;
  if (correlation.size() > kMaxCorrelation ||
      !std::all_of(correlation.begin(), correlation.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    correlation.clear();
  }
  batch.replies.push_back(IncomingReply{gateway, std::move(correlation), *reply, m.payload});
}

void CentralService::process(std::vector<Message>& messages) {
  Batch batch;
  over_bound_.clear();
  for (Message& m : messages) {
    ++counters_.messages;
    try {
      classify(m, batch);
    } catch (const PgError& e) {
      if (!e.content_refused()) {
        throw;  // PostgreSQL's state (a file message: link, deadlock): the batch goes again, as any batch
      }
      ++counters_.refused;
      log::error("central", "", "message on " + printable(m.topic) + " not taken: " + e.what());
    } catch (const std::exception& e) {
      // A media file we could not write: not stored, so not counted as held; the gap check asks again.
      // (Nothing a peer sends ends the instance: any other failure here is counted the same way.)
      ++counters_.refused;
      log::error("central", "", "message on " + printable(m.topic) + " not taken: " + e.what());
    }
  }
  settle_over_bound(batch);
  if (batch.empty()) {
    return;
  }
  commit(batch);
}

void CentralService::alarm_retired(const std::string& gateway, std::uint64_t seq, const std::string& why) {
  const std::string line =
      "RETIRED KEY: " + gateway + ":" + std::to_string(seq) + ": " + why + "; quarantined, not stored";
  if (reexamining_) {
    log::debug("central", gateway, line + " (re-examined)");
    return;
  }
  ++counters_.retired_key;
  log::error("central", gateway, line);
}

void CentralService::refuse_retired(Batch& batch) {
  // The instance's key cache may be up to kKeyReloadMs old: a rotation stored by another instance meanwhile
  // ended the old key's range. Checked against the committed ranges (one query per batch); a key this
  // batch's own rotation record enrols is not there yet and was checked by classify() from the cache.
  std::set<std::pair<std::string, std::string>> pairs;
  for (const IncomingRecord& r : batch.records) {
    pairs.emplace(r.gateway, r.kid);
  }
  if (pairs.empty()) {
    return;
  }
  const auto ranges = store_->key_ranges(pairs);
  std::vector<IncomingRecord> kept;
  kept.reserve(batch.records.size());
  for (IncomingRecord& r : batch.records) {
    std::string why;
    if (const auto it = ranges.find({r.gateway, r.kid}); it != ranges.end()) {
      why = key_range_refusal(r.kid, it->second.first, it->second.second, r.seq);
    }
    if (why.empty()) {
      kept.push_back(std::move(r));
      continue;
    }
    alarm_retired(r.gateway, r.seq, why);
    quarantine(batch, r.gateway, "evidence", r.jws, r.seq, r.kid, why, true);
  }
  batch.records = std::move(kept);
}

void CentralService::expire_quarantine(std::int64_t now) {
  if (cfg_.feed.quarantine_max_age_days == 0 || now - last_expiry_ms_ < 60000) {
    return;  // off, or looked less than a minute ago (one small query when nothing is old)
  }
  last_expiry_ms_ = now;
  const std::string days = std::to_string(cfg_.feed.quarantine_max_age_days);
  const auto discards =
      store_->expire_quarantine(now, static_cast<std::int64_t>(cfg_.feed.quarantine_max_age_days) * 86400000,
                                "unseen for " + days + " days (feed.quarantine_max_age_days)");
  for (const auto& [gateway, d] : discards) {
    counters_.quarantine_expired += static_cast<std::uint64_t>(d.rows);
    log::warn("central", gateway,
              "quarantine: " + std::to_string(d.rows) + " row(s), " + std::to_string(d.bytes) + " bytes of " +
                  printable(gateway) + " unseen for " + days +
                  " days discarded (feed.quarantine_max_age_days; who, why and which ids are kept in "
                  "quarantine_discards)");
  }
}

void CentralService::reexamine_quarantine() {
  // Rows of gateways with a key enrolled since they were last examined, a bounded number per round: each
  // goes through the checks of a new message; what now verifies is taken into the intake and its row
  // deleted in the same transaction, the rest is not looked at again until the next enrolment.
  // The scan reads the quarantine table (up to feed.quarantine_max_rows): only while it can find something,
  // i.e. a new enrolment, the 20 s after one (rows quarantined meanwhile by instances with older caches),
  // or a full page last time. Otherwise one small query on gateway_keys per round.
  constexpr std::size_t kReexaminePerRound = 200;
  const std::int64_t latest = store_->latest_enrolment_ms();
  if (latest == 0 || (latest == reexamine_enrolment_ms_ && now_ms() - latest > 20000 && !reexamine_more_)) {
    return;
  }
  reexamine_enrolment_ms_ = latest;
  const auto rows = store_->quarantine_to_reexamine(kReexaminePerRound);
  reexamine_more_ = rows.size() == kReexaminePerRound;
  if (rows.empty()) {
    return;
  }
  reload_keys(true);
  const std::int64_t examined = keys_loaded_ms_ - 1000;  // keys enrolled from here on bring them back
  Batch batch;
  std::vector<std::int64_t> unresolved;
  reexamining_ = true;
  for (const QuarantinedMessage& q : rows) {
    Batch one;
    const std::string rest = q.topic == "media" ? "media/" + q.payload_sha256 : q.topic;
    try {
      Message again{prefix_ + "/" + q.gateway + "/" + rest, q.payload, "", std::nullopt, 0};
      classify(again, one);
      refuse_retired(one);  // a row is deleted only for what is really taken in
    } catch (const std::exception& e) {
      log::warn("central", q.gateway, std::string("re-examining quarantine row: ") + e.what());
      one = Batch{};  // not taken in: the row stays
    }
    if (one.records.empty() && one.media.empty() && one.heads.empty()) {
      unresolved.push_back(q.id);  // still not trusted (or refused): stays, with its reason
      continue;
    }
    for (auto& r : one.records) {
      batch.records.push_back(std::move(r));
    }
    for (auto& m : one.media) {
      batch.media.push_back(std::move(m));
    }
    for (auto& h : one.heads) {
      batch.heads.push_back(std::move(h));
    }
    batch.resolved_quarantine.push_back(q.id);
  }
  reexamining_ = false;
  store_->mark_reexamined(unresolved, examined);
  if (batch.empty()) {
    return;
  }
  try {
    commit(batch);
  } catch (const PgError& e) {
    if (e.connection_lost()) {
      throw;
    }
    // PostgreSQL refused the content: these rows stay as they are and are not taken again until the next
    // enrolment (the resend repairs the gap as before).
    store_->mark_reexamined(batch.resolved_quarantine, examined);
    log::error("central", "quarantine", std::string("re-examined quarantine rows not stored: ") + e.what());
  }
}

void CentralService::commit(Batch& batch) {
  refuse_retired(batch);
  // classify() trusted each key_rotation record's key in the instance's cache before the store decided
  // what the record is. A fork or a duplicate of a rotation enrols nothing, and a failed batch commits
  // nothing: the cache is read back from PostgreSQL after any batch that held a rotation, so a rotation
  // that did not commit neither retires the old key nor trusts the new one beyond this batch.
  const bool had_rotation =
      std::any_of(batch.records.begin(), batch.records.end(),
                  [](const IncomingRecord& r) { return rotation_enrolment(r).has_value(); });
  struct ReloadAfter {
    CentralService* self;
    bool on;
    ~ReloadAfter() {
      if (on) {
        try {
          self->reload_keys(true);
        } catch (const std::exception& e) {
          self->keys_loaded_ms_ = 0;  // PostgreSQL is away: the next message's lookup reads them again
          log::warn("central", "keys", std::string("reading the trusted keys again: ") + e.what());
        }
      }
    }
  } reload_after{this, had_rotation};
  const BatchOutcome out = store_->store_batch(
      batch, now_ms(),
      ReceiptPolicy{cfg_.central.id, static_cast<std::uint64_t>(cfg_.receipts.every_records),
                    cfg_.receipts.every_ms});
  ++counters_.batches;
  counters_.records_stored += out.stored;
  counters_.duplicates += out.duplicates;
  counters_.forks += out.forks;
  counters_.forks_dropped += out.forks_dropped;
  counters_.quarantined += out.quarantined + out.quarantine_duplicates;
  counters_.quarantine_dropped += out.quarantine_dropped;
  counters_.media_stored += out.media_stored;
  for (const IncomingMedia& m : batch.media) {
    // What was taken counts from now on: the sum is read again at the gateway's next picture. Not while it is
    // over the bound (the sum then runs over up to bound / kUnnamedMinCharge rows; what was taken then was
    // named, or held already).
    Unnamed& u = unnamed_[m.gateway];
    u.read_ms = u.over ? u.read_ms : -1;
  }
  counters_.head_forks += out.head_forks;
  counters_.unsolicited_replies += out.unsolicited_replies;
  counters_.unrecoverable += out.unrecoverable.size();
  counters_.quarantine_resolved += out.quarantine_resolved;
  if (out.quarantine_resolved > 0) {
    log::notice("central", "quarantine",
                std::to_string(out.quarantine_resolved) +
                    " quarantined messages verify under the keys now enrolled: taken in, rows removed");
  }
  if (out.quarantine_dropped > 0) {
    log::warn("central", "quarantine",
              std::to_string(out.quarantine_dropped) +
                  " messages beyond the quarantine's bounds: counted, not kept (feed.quarantine_max_*)");
  }
  if (out.unsolicited_replies > 0) {
    log::warn("central", "quarantine",
              std::to_string(out.unsolicited_replies) +
                  " resend replies matching no open request of this central: quarantined, not believed");
  }
  for (const std::string& line : out.head_fork_lines) {
    log::error("central", line.substr(0, line.find(':')),
               "FORK: head announcement " + line + " (kept in head_forks; the announced head does not move)");
  }
  for (const std::string& line : out.unrecoverable) {
    log::error("central", line.substr(0, line.find(':')),
               "the gateway no longer holds " + line.substr(line.find(':') + 2) +
                   ": unrecoverable, not asked for again; custody stops before it");
  }
  for (const std::string& line : out.reply_errors) {
    log::warn("central", line.substr(0, line.find(':')),
              "the gateway refused a resend request: " + printable(line.substr(line.find(':') + 2), 200));
  }
  for (const std::string& id : out.fork_ids) {
    log::error("central", id.substr(0, id.find(':')),
               "FORK: " + id + " arrived again with other bytes, both signed by a trusted key; both kept");
  }
  for (const std::string& id : out.forks_not_kept) {
    log::error("central", id.substr(0, id.find(':')),
               "FORK: " + id +
                   " arrived again with other bytes, both signed by a trusted key; NOT kept: the "
                   "gateway already has " +
                   std::to_string(kMaxForksPerGateway) +
                   " forks kept (a cloned gateway? its key may be compromised)");
  }
  for (const std::string& id : out.late_in_lost_holes) {
    log::error("central", id.substr(0, id.find(':')),
               "FORK: " + id +
                   " arrived at a seq custody passed as an accepted loss; kept in forks, not in the chain "
                   "(checkpoint-central choose-branch decides)");
  }
  for (const std::string& c : out.chain_restarts) {
    log::error("central", c.substr(0, c.find(':')),
               "CHAIN RESTART: " + printable(c, 1000) +
                   " (docs/custody.md, \"A replaced store\"; checkpoint-central status)");
  }
  for (const std::string& b : out.chain_breaks) {
    log::error("central", b.substr(0, b.find(':')), "CHAIN BREAK at " + b);
  }
  for (const std::string& r : out.retired_set_aside) {
    ++counters_.retired_key;
    log::error("central", r.substr(0, r.find(':')),
               "RETIRED KEY: " + r +
                   "; stored by an instance before it knew of the rotation, found when the watermark reached "
                   "it: set aside (kept in forks) and asked for again");
  }
  publish_receipts(out.receipts);
}

bool CentralService::process_singly(std::vector<Message>& messages) {
  for (std::size_t done = 0; done < messages.size(); ++done) {
    const Message& m = messages[done];
    std::vector<Message> one{m};
    try {
      process(one);
    } catch (const PgError& e) {
      if (!e.content_refused()) {
        // Not this message's fault: it and the rest wait for PostgreSQL (the caller retries them).
        log::error("central", "",
                   std::string(e.what()) + " (" + std::to_string(messages.size() - done) +
                       " messages kept, stored again later)");
        if (e.connection_lost()) {
          store_.reset();
        }
        messages.erase(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(done));
        return false;
      }
      set_aside_alone(m, std::string("refused by PostgreSQL: ") + e.what());
    } catch (const std::exception& e) {
      set_aside_alone(m, std::string("central could not handle it: ") + e.what());
    }
  }
  messages.clear();
  return true;
}

void CentralService::set_aside_alone(const Message& m, const std::string& why) {
  ++counters_.refused;
  log::error("central", "", "message on " + printable(m.topic) + " not stored: " + printable(why, 400));
  const auto topic = parse_feed_topic(prefix_, m.topic);
  if (!topic || !is_gateway_id(topic->gateway) || !store_) {
    return;
  }
  // Kept for forensics (and an operator), never trusted: a signed record that central cannot handle is not
  // dropped without a trace. Its seq is asked for again as a gap if it matters.
  Batch q;
  quarantine(q, topic->gateway,
             topic->rest.rfind("media/", 0) == 0  ? "media"
             : topic->rest.rfind("file/", 0) == 0 ? "file"
                                                  : topic->rest.substr(0, 20),
             m.payload, std::nullopt, "", why, keys_.count(topic->gateway) != 0);
  try {
    counters_.quarantined +=
        store_->store_batch(q, now_ms(), ReceiptPolicy{cfg_.central.id, 1, cfg_.receipts.every_ms})
            .quarantined;
  } catch (const std::exception& e) {
    log::error("central", topic->gateway, std::string("quarantining it failed too: ") + e.what());
  }
}

// The broker's answer to one of central's publishes (a receipt, a resend request, a file message). A refusal
// (PUBACK >= 0x80: an ACL without central's topic, a quota) means the gateway never gets it: counted
// (central_publish_refused_total) and logged as an error, at most once a minute (the message is published
// again at its next refresh). Deletes itself when it has its answer.
class CentralService::PublishOutcome final : public mqtt::iaction_listener {
 public:
  PublishOutcome(CentralService& service, std::string topic) : service_(service), topic_(std::move(topic)) {}
  void on_success(const mqtt::token& tok) override { finish(static_cast<int>(tok.get_reason_code())); }
  void on_failure(const mqtt::token& tok) override {
    // Only a broker's answer carries a reason code (return code 0): other failures (a write that failed, a
    // session closed) leave it unset.
    const int reason = static_cast<int>(tok.get_reason_code());
    finish(tok.get_return_code() == 0 && reason >= 0x80 ? reason : -1);
  }

 private:
  void finish(int reason) {
    if (reason >= 0x80) {
      ++service_.counters_.publish_refused;
      const std::int64_t now = now_ms();
      std::int64_t last = service_.publish_refused_logged_ms_.load();
      if ((last < 0 || now - last >= 60000) &&
          service_.publish_refused_logged_ms_.compare_exchange_strong(last, now)) {
        log::error("central", "",
                   "mqtt: the broker refused the publish on " + topic_ + " (reason " +
                       std::to_string(reason) +
                       "; 135 is Not authorized: does the broker ACL let central publish there?); further "
                       "refusals this minute are counted only: central_publish_refused_total");
      }
    }
    delete this;
  }
  CentralService& service_;
  std::string topic_;
};

void CentralService::publish(const std::shared_ptr<mqtt::message>& msg) {
  auto* outcome = new PublishOutcome(*this, msg->get_topic());
  try {
    client_->publish(msg, nullptr, *outcome);
  } catch (...) {
    delete outcome;  // Paho did not take it: no answer comes
    throw;
  }
}

void CentralService::publish_receipts(const std::vector<custody::Receipt>& receipts) {
  for (const custody::Receipt& r : receipts) {
    auto msg =
        mqtt::make_message(prefix_ + "/" + r.gateway + "/custody", custody::seal_receipt(key_, r), 1, true);
    post_link_job([this, msg, gateway = r.gateway, through = r.through_seq] {
      try {
        publish(msg);
        ++counters_.receipts;
        log::info("central", gateway, "custody receipt through seq " + std::to_string(through));
      } catch (const mqtt::exception& e) {
        // Published again at the next refresh (10 x receipts.every_ms) or advance.
        log::warn("central", gateway, std::string("mqtt: receipt not published: ") + e.what());
      }
    });
  }
}

void CentralService::publish_files(std::vector<FilePublish> messages) {
  for (FilePublish& p : messages) {
    auto msg = mqtt::make_message(p.topic, std::move(p.payload), 1, false);
    post_link_job([this, msg] {
      try {
        publish(msg);
      } catch (const mqtt::exception& e) {
        // A lost receipt or want is sent again: the gateway repeats its fin, the stall check its want.
        log::warn("central", "", "mqtt: " + msg->get_topic() + " not published: " + e.what());
      }
    });
  }
}

void CentralService::request_resends() {
  const auto plans = store_->plan_resends(
      now_ms(), GapPolicy{cfg_.gaps.resend_after_ms, cfg_.gaps.retry_min_ms, cfg_.gaps.retry_max_ms});
  for (const ResendPlan& plan : plans) {
    const std::string topic = prefix_ + "/" + plan.gateway + "/resend";
    mqtt::properties props{
        {mqtt::property::RESPONSE_TOPIC, prefix_ + "/" + plan.gateway + "/resend/response"},
        {mqtt::property::CORRELATION_DATA, plan.correlation}};
    auto msg = mqtt::make_message(topic, custody::resend_request_json(plan.request), 1, false);
    msg->set_properties(props);
    post_link_job([this, msg, gateway = plan.gateway, why = plan.why] {
      try {
        publish(msg);
        ++counters_.resend_requests;
        log::notice("central", gateway, "asked for a resend: " + why);
      } catch (const mqtt::exception& e) {
        log::warn("central", gateway, std::string("mqtt: resend request not published: ") + e.what());
      }
    });
  }
}

void CentralService::post_link_job(std::function<void()> job) {
  {
    std::lock_guard lock(link_mutex_);
    if (link_jobs_.size() >= kMaxLinkJobs) {
      ++counters_.link_jobs_dropped;
      return;
    }
    link_jobs_.push_back(std::move(job));
  }
  link_cv_.notify_one();
}

void CentralService::run_link() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(link_mutex_);
      link_cv_.wait(lock, [this] { return link_stopping_ || !link_jobs_.empty(); });
      if (link_stopping_ && (link_jobs_.empty() || std::chrono::steady_clock::now() >= link_drain_until_)) {
        // At a stop the receipts and requests already decided go out first (for at most 5 s: stop()); what
        // is left then is issued again by another instance (receipts, gap plans).
        return;
      }
      job = std::move(link_jobs_.front());
      link_jobs_.pop_front();
    }
    job();
  }
}

void CentralService::request_stop() {
  {
    std::lock_guard lock(queue_mutex_);
    stop_requested_ = true;  // messages are still taken until stop() has left the shared subscription
  }
  queue_cv_.notify_all();
}

void CentralService::stop() {
  {
    std::lock_guard lock(queue_mutex_);
    if (stopped_) {
      return;
    }
    stopped_ = true;
  }
  leave_share_group();
  {
    std::lock_guard lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  space_cv_.notify_all();
  if (worker_.joinable()) {
    worker_.join();
  }
  {
    std::lock_guard lock(link_mutex_);
    link_stopping_ = true;
    link_drain_until_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  }
  link_cv_.notify_all();
  if (link_thread_.joinable()) {
    link_thread_.join();
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
  if (const std::uint64_t n = counters_.dropped_stopping.load(); n > 0) {
    log::warn(
        "central", "stop",
        std::to_string(n) +
            " message(s) arrived while the instance stopped (or PostgreSQL was away) and were not stored; "
            "what matters is found as a gap and asked for again");
  }
}

std::string CentralService::metrics_text() {
  metrics::Exposition e;
  add_counter_metrics(e);
  add_state_metrics(e);
  return e.text();
}

// The counters of this instance, in the order of docs/metrics.md.
void CentralService::add_counter_metrics(metrics::Exposition& e) {
  const auto c = [&](const char* name, const char* help, const std::atomic<std::uint64_t>& v) {
    e.add_counter(name, help, {}, static_cast<double>(v.load()));
  };
  c("central_messages_total", "Messages taken from the broker.", counters_.messages);
  c("central_records_stored_total", "Records verified and stored (first copy).", counters_.records_stored);
  c("central_duplicates_total", "Second copies with the same bytes (dropped).", counters_.duplicates);
  c("central_forks_total", "Second copies with other bytes (kept aside, alarmed).", counters_.forks);
  c("central_forks_dropped_total",
    "Forks not kept: the gateway already had 10000 rows in forks (alarmed, counted only).",
    counters_.forks_dropped);
  c("central_quarantined_total", "Records under an unknown key or failing verification (kept).",
    counters_.quarantined);
  c("central_quarantine_dropped_total", "Quarantine beyond its bound (counted only).",
    counters_.quarantine_dropped);
  c("central_quarantine_expired_total", "Quarantine rows discarded after feed.quarantine_max_age_days.",
    counters_.quarantine_expired);
  c("central_media_stored_total", "Media files stored.", counters_.media_stored);
  c("central_media_refused_total", "Media refused (hash mismatch, too large, bad name).",
    counters_.media_refused);
  c("central_media_unnamed_refused_total",
    "Pictures no stored record names refused beyond feed.unnamed_max_mb (asked for again once named).",
    counters_.media_unnamed_refused);
  c("central_media_aged_out_total",
    "Pictures no stored record names deleted after feed.unnamed_max_age_days.", counters_.media_aged_out);
  c("central_media_aged_out_bytes_total", "Their bytes.", counters_.media_aged_out_bytes);
  c("central_media_orphans_removed_total",
    "Files in the media directory no row holds, removed a day after they were written.",
    counters_.media_orphans_removed);
  c("central_media_orphans_refused_total",
    "Files no row holds left in place: more than 100 in a round, or no media row at all (the directory and "
    "the database do not go together).",
    counters_.media_orphans_refused);
  c("central_unknown_gateway_total",
    "Messages from gateways that are not enrolled (quarantined within bounds).", counters_.unknown_gateway);
  c("central_refused_total", "Messages refused: not a feed topic, not a gateway id, not storable.",
    counters_.refused);
  c("central_heads_refused_total", "Head announcements failing a check.", counters_.heads_refused);
  c("central_subscribe_refused_total", "Subscribe attempts the broker refused or did not answer.",
    counters_.subscribe_refused);
  c("central_messages_dropped_busy_total",
    "Messages dropped because the queue stayed full for a third of the keepalive (found again as gaps).",
    counters_.dropped_busy);
  c("central_messages_dropped_stopping_total",
    "Messages that arrived, or were in hand, while the instance stopped: not stored (found again as gaps).",
    counters_.dropped_stopping);
  c("central_link_jobs_dropped_total",
    "Receipts and resend requests not published because the link queue was full (issued again later).",
    counters_.link_jobs_dropped);
  c("central_reconnects_total", "Reconnects central made itself after Paho's automatic reconnect had not.",
    counters_.reconnects);
  c("central_replies_refused_total", "Resend replies that are not a JSON object.", counters_.replies_refused);
  c("central_unsolicited_replies_total", "Resend replies matching no open request (quarantined).",
    counters_.unsolicited_replies);
  c("central_head_forks_total", "Head announcements contradicting a stored record (kept, alarmed).",
    counters_.head_forks);
  c("central_unrecoverable_total", "Ranges and pictures a gateway said it no longer holds (recorded).",
    counters_.unrecoverable);
  c("central_receipts_total", "Custody receipts published.", counters_.receipts);
  const FileCounters& f = files_->counters();
  c("central_file_inits_total", "Recording transfers opened (init taken).", f.inits);
  c("central_file_segments_total", "Recording segments written, fsync'd and counted.", f.segments);
  c("central_file_segment_bytes_total", "Bytes of those segments.", f.segment_bytes);
  c("central_file_segments_duplicate_total", "Segments received again (dropped).", f.segments_duplicate);
  c("central_file_refused_total", "File transfer messages refused (malformed, out of bounds, bad checksum).",
    f.refused);
  c("central_file_unexpected_total", "Segments and fins of no open transfer (asked for later if needed).",
    f.unexpected);
  c("central_files_held_total", "Recordings held: every segment there and the whole SHA-256 checked.",
    f.files_held);
  c("central_file_mismatches_total", "Whole recordings whose SHA-256 was not their id (asked for again).",
    f.mismatches);
  c("central_file_damaged_total",
    "Recordings given up as damaged on the gateway: their whole file failed its SHA-256 3 times (not_held).",
    f.damaged);
  c("central_file_wants_total", "Requests to a gateway for missing byte ranges or whole files.", f.wants);
  c("central_file_aborts_total", "Recordings a gateway said it cannot send.", f.aborts);
  c("central_file_receipts_total", "Signed file receipts published.", f.receipts);
  c("central_file_unnamed_refused_total",
    "Recording inits no stored record names refused (later) beyond feed.unnamed_max_mb.", f.unnamed_refused);
  c("central_resend_requests_total", "Resend requests published.", counters_.resend_requests);
  c("central_publish_refused_total",
    "Publishes of central's (receipts, resend requests, file messages) the broker refused (PUBACK >= 0x80).",
    counters_.publish_refused);
  c("central_postgres_errors_total", "PostgreSQL errors (batch retried).", counters_.pg_errors);
  c("central_postgres_transient_total",
    "Batches PostgreSQL aborted for a deadlock or serialization failure between instances (stored again).",
    counters_.pg_transient);
  c("central_retired_key_total",
    "Records signed by a key outside its seq range (a retired key; quarantined).", counters_.retired_key);
  c("central_quarantine_resolved_total", "Quarantined messages re-examined after an enrolment and taken in.",
    counters_.quarantine_resolved);
}

// The queue of this instance, and per gateway and for the quarantine what PostgreSQL holds (all instances).
void CentralService::add_state_metrics(metrics::Exposition& e) {
  e.add_gauge("central_queue_messages", "Messages taken and not yet stored.", {},
              static_cast<double>(queue_depth()));
  e.add_gauge("central_queue_bytes", "Payload bytes taken and not yet stored.", {},
              static_cast<double>(queue_bytes()));
  std::lock_guard lock(metrics_mutex_);
  try {
    if (!metrics_store_) {
      metrics_store_ = std::make_unique<CentralStore>(cfg_.postgres.conninfo, quarantine_bounds(cfg_.feed));
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
      e.add_gauge("central_gateway_quarantined", "Messages quarantined for the gateway.", labels,
                  g["quarantined"].get<double>());
      e.add_gauge("central_gateway_head_forks", "Head announcements contradicting the stored chain.", labels,
                  g["head_forks"].get<double>());
      e.add_gauge("central_gateway_unrecoverable_media", "Pictures the gateway said it no longer holds.",
                  labels, g["unrecoverable_media_count"].get<double>());
      e.add_gauge("central_gateway_unrecoverable_ranges", "Seq ranges the gateway said it no longer holds.",
                  labels, static_cast<double>(g["unrecoverable"].size()));
      e.add_gauge("central_gateway_unnamed_bytes",
                  "Bytes of files the gateway sent that no stored record names (bound: feed.unnamed_max_mb).",
                  labels, g["unnamed_bytes"].get<double>());
    }
    const auto& q = status["quarantine"];
    e.add_gauge("central_quarantine_rows", "Rows in the quarantine table.", {}, q["rows"].get<double>());
    e.add_gauge("central_quarantine_bytes", "Payload bytes in the quarantine table.", {},
                q["bytes"].get<double>());
    e.add_gauge("central_quarantine_dropped", "Messages beyond the quarantine's bounds (all instances).", {},
                q["dropped"].get<double>());
    e.add_gauge("central_unknown_gateways", "Names not enrolled with quarantine rows.", {},
                status["unknown_gateways"]["count"].get<double>());
  } catch (const PgError& err) {
    metrics_store_.reset();
    log::warn("central", "", std::string("metrics: ") + err.what());
  }
}

}  // namespace cpd::central
