#include "daemon/app/daemon.h"

#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include "adapters/registry.h"
#include "daemon/app/custody_agent.h"
#include "daemon/app/recording_uploader.h"
#include "daemon/app/reload_plan.h"
#include "daemon/app/signing_key_files.h"
#include "daemon/app/storage_guard.h"
#include "daemon/app/store_dock_ledger.h"
#include "daemon/app/store_worker.h"
#include "daemon/config/config_warnings.h"
#include "daemon/control/control_server.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/key_rotation.h"
#include "daemon/core/sealer.h"
#include "daemon/forwarder/mqtt_forwarder.h"
#include "daemon/log/log.h"
#include "daemon/media/media_store.h"
#include "daemon/metrics/daemon_metrics.h"
#include "daemon/metrics/histogram.h"
#include "daemon/metrics/metrics_server.h"
#include "daemon/pipeline/clock_sync.h"
#include "daemon/pipeline/correlator.h"
#include "daemon/store/evidence_store.h"

namespace cpd::app {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// Device events arrive on adapter strands; the correlator is single-threaded, so they are serialised on
// the pipeline strand and the resulting facts handed to the store worker. A timer on the same strand
// releases decided matches and expired waits, and refreshes the gateway's clock-sync state.
class PipelineSink final : public adapters::EventSink {
 public:
  // Above this many facts waiting for the store, adapters pause reading (back-pressure to the device).
  static constexpr std::uint64_t kMaxQueuedFacts = 256;

  PipelineSink(asio::io_context& io, pipeline::Correlator& correlator, StoreWorker& worker,
               const WallClock& clock, const config::ValiditySection& validity)
      : strand_(asio::make_strand(io)),
        tick_timer_(strand_),
        correlator_(correlator),
        worker_(worker),
        clock_(clock),
        assume_clock_sync_(validity.clock_sync == "assume") {}

  void start() {
    asio::post(strand_, [this] {
      refresh_clock_sync();
      tick();
    });
  }

  // Per device: events received and when the last one came (gateway clock), for status and metrics.
  struct Activity {
    std::uint64_t events = 0;
    UnixMs last_event_ms = 0;
  };

  void emit(adapters::DeviceEvent event) override {
    const auto ready_at = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mutex_);
      auto& a = activity_[std::visit([](const auto& e) { return e.device_id; }, event)];
      ++a.events;
      a.last_event_ms = clock_.now_ms();
    }
    asio::post(strand_, [this, ready_at, ev = std::move(event)] {
      submit(correlator_.on_event(ev, clock_.now_ms()), ready_at);
    });
  }

  // Runs `fn` on the pipeline strand after every event already emitted, once everything the correlator
  // still holds has been released as unmatched records (shutdown).
  void flush_then(std::function<void()> fn) {
    asio::post(strand_, [this, fn = std::move(fn)] {
      stopped_ = true;
      tick_timer_.cancel();
      submit(correlator_.flush(), std::chrono::steady_clock::now());
      fn();
    });
  }

  bool congested() const override { return worker_.queued() > kMaxQueuedFacts; }

  std::map<std::string, Activity> activity() const {
    std::lock_guard lock(mutex_);
    return activity_;
  }

  pipeline::ClockSync clock_sync() const {
    std::lock_guard lock(mutex_);
    return clock_sync_;
  }

  // A reload: the correlator takes the new rules on its strand (between events, never during one); then
  // `then` runs there too.
  void reconfigure(config::Config next, std::function<void()> then) {
    asio::post(strand_, [this, next = std::move(next), then = std::move(then)] {
      correlator_.reconfigure(next);
      assume_clock_sync_ = next.validity.clock_sync == "assume";
      refresh_clock_sync();
      then();
    });
  }

 private:
  void submit(std::vector<Fact> facts, std::chrono::steady_clock::time_point ready_at) {
    for (auto& fact : facts) {
      if (fact.ready_at == std::chrono::steady_clock::time_point{}) {
        fact.ready_at = ready_at;
      }
      worker_.submit(std::move(fact));
    }
  }

  void tick() {
    if (stopped_) {
      return;
    }
    submit(correlator_.tick(clock_.now_ms()), std::chrono::steady_clock::now());
    if (++ticks_ % 100 == 0) {  // every ~10 s
      refresh_clock_sync();
    }
    tick_timer_.expires_after(std::chrono::milliseconds(100));
    tick_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) {
        tick();
      }
    });
  }

  void refresh_clock_sync() {
    auto state =
        assume_clock_sync_ ? pipeline::ClockSync{true, "assume", -1, -1} : pipeline::read_kernel_clock_sync();
    {
      std::lock_guard lock(mutex_);
      clock_sync_ = state;
    }
    correlator_.set_clock_sync(std::move(state));
  }

  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer tick_timer_;
  pipeline::Correlator& correlator_;
  StoreWorker& worker_;
  const WallClock& clock_;
  bool assume_clock_sync_;
  bool stopped_ = false;
  std::uint64_t ticks_ = 0;
  mutable std::mutex mutex_;
  std::map<std::string, Activity> activity_;
  pipeline::ClockSync clock_sync_;
};

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

// The file's SHA-256 as it is on disk now (also when it does not parse), for the reload audit records.
std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return "";
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return sha256_hex(bytes.str());
}

}  // namespace

struct Daemon::Impl {
  config::Config cfg;
  SystemWallClock clock;
  std::optional<Ed25519PrivateKey> key;
  std::unique_ptr<store::EvidenceStore> store;
  std::unique_ptr<media::MediaStore> media;
  std::unique_ptr<asio::thread_pool> blocking;  // file writes, fsync, hashing: never on the io thread
  std::unique_ptr<Sealer> sealer;
  asio::io_context io{1};
  std::unique_ptr<StoreWorker> worker;
  std::unique_ptr<StoreDockLedger> dock_ledger;
  std::unique_ptr<forwarder::MqttForwarder> forwarder;
  std::unique_ptr<CustodyAgent> custody;        // only with a custody section (docs/custody.md)
  std::unique_ptr<RecordingUploader> uploader;  // recordings to central, with custody
  std::unique_ptr<pipeline::Correlator> correlator;
  std::unique_ptr<PipelineSink> sink;
  std::vector<std::unique_ptr<adapters::Adapter>> adapters;
  std::optional<adapters::AdapterContext> adapter_ctx;
  asio::signal_set signals{io, SIGINT, SIGTERM};
  asio::signal_set reload_signal{io, SIGHUP};
  asio::steady_timer notify_timer{io};
  std::uint64_t watchdog_usec = 0;  // systemd's WatchdogSec (WATCHDOG_USEC); 0 = no watchdog
  std::string last_status_line;
  std::chrono::steady_clock::time_point last_status_sent{};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  mutable std::mutex counts_mutex;
  std::map<std::string, std::uint64_t> records_by_type;  // committed since start
  std::string kid;        // under counts_mutex: the kid signing new records (changes at a key rotation)
  bool rotating = false;  // io thread: a rotate_key request is being served
  std::unique_ptr<StorageGuard> storage;
  std::unique_ptr<control::ControlServer> control;  // checkpointctl status/tail; absent if it could not start
  metrics::Histograms histograms;                   // publish and commit (fsync) latency
  std::unique_ptr<metrics::MetricsServer>
      metrics_server;  // /metrics, /healthz; absent if off or it could not bind

  // /healthz: 503 with the reason when the gateway cannot do its job (records cannot be committed, or it
  // is stopping). A broker that is away is not unhealthy: records wait in the outbox.
  std::optional<std::string> unhealthy_reason() const {
    if (stopping) {
      return std::string("stopping");
    }
    if (storage) {
      const json st = storage->status();
      if (st.value("state", "") == "fault") {
        return "storage fault: " + st.value("text", std::string("records cannot be committed"));
      }
    }
    return std::nullopt;
  }

  void start_metrics() {
    if (!cfg.metrics.enabled) {
      log::notice("metrics", "", "metrics endpoint off (metrics.enabled: false)");
      return;
    }
    metrics::MetricsServerOptions options;
    options.host = cfg.metrics.host;
    options.port = static_cast<std::uint16_t>(cfg.metrics.port);
    auto server = std::make_unique<metrics::MetricsServer>(
        io, options,
        [this] {
          return metrics::render_daemon_metrics(status_snapshot(), histograms, metrics::read_process_stats());
        },
        [this] { return unhealthy_reason(); });
    if (const Status st = server->start(); st.is_ok()) {
      log::notice("metrics", "",
                  "serving /metrics and /healthz on http://" + cfg.metrics.host + ":" +
                      std::to_string(server->port()));
      metrics_server = std::move(server);
    } else {
      log::error("metrics", "",
                 "no metrics endpoint on " + cfg.metrics.host + ":" + std::to_string(cfg.metrics.port) +
                     " (evidence collection goes on): " + st.message());
    }
  }
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> shutdown_guard;
  asio::steady_timer storage_timer{io};
  bool stopping = false;

  // An empty store's start (docs/custody.md, "A replaced store"): nothing is sealed and no device is read
  // until it is decided how the chain starts (bounded by custody.empty_store_wait_ms). io thread.
  enum class Sealing { waiting, starting, started };
  Sealing sealing = Sealing::started;
  std::optional<std::string> deferred_shutdown;  // a signal that came before sealing started
  json start_details;                            // the `start` audit record's details

  // The wait is over: continue the chain after `receipt` (the store takes it as its origin first), or
  // start a new chain at seq 1 because of `why`.
  void begin_sealing(std::optional<store::CustodyState> receipt, std::string why) {
    if (sealing != Sealing::waiting) {
      return;
    }
    sealing = Sealing::starting;
    if (!receipt) {
      seal_first_records(std::nullopt, std::move(why));
      return;
    }
    worker->run_on_worker([this, receipt = std::move(*receipt), why](store::EvidenceStore& s) mutable {
      const Status st = s.continue_chain(receipt);
      if (st.is_ok()) {
        sealer->reset(s.chain_head());  // nothing was sealed yet: the worker's next seq is through_seq + 1
      }
      asio::post(io, [this, st, receipt = std::move(receipt), why = std::move(why)]() mutable {
        if (!st.is_ok()) {
          log::error("daemon", "", "the chain cannot continue after the custody receipt: " + st.message());
          seal_first_records(std::nullopt,
                             "the chain could not continue after the custody receipt: " + st.message());
          return;
        }
        if (custody) {
          custody->origin_committed(receipt);
        }
        seal_first_records(std::move(receipt), std::move(why));
      });
    });
  }

  // The first records of this run (`store_replaced` when the chain continues after a receipt, then
  // `start`, which says `new_chain` and why when an empty store starts at seq 1); then devices are read.
  void seal_first_records(std::optional<store::CustodyState> continued, std::string why) {
    json details = start_details;
    if (continued) {
      const custody::Receipt receipt{
          continued->central, cfg.gateway.id, continued->through_seq, continued->head, 0, {}, {}};
      worker->submit(correlator->audit(
          "store_replaced", clock.now_ms(),
          custody::store_replaced_details(receipt, continued->kid, continued->receipt,
                                          "the store held no record at start (" + why + ")")));
      details["resumed_at_seq"] = continued->through_seq;
      log::warn("daemon", "",
                "empty store: the chain continues after central " + continued->central +
                    "'s custody receipt through seq " + std::to_string(continued->through_seq) +
                    " (audit store_replaced at seq " + std::to_string(continued->through_seq + 1) +
                    "); whatever the previous store sealed after that seq is not held here");
    } else if (!why.empty()) {
      details["new_chain"] = why;
      log::warn("daemon", "", "empty store: a new chain starts at seq 1 (" + why + ")");
    }
    worker->submit(correlator->audit("start", clock.now_ms(), details));
    storage_tick();
    sink->start();
    for (auto& a : adapters) {
      a->start();
    }
    sealing = Sealing::started;
    if (deferred_shutdown) {
      shutdown(*deferred_shutdown);
    }
  }

  // Once a second: free space of the store's and media's file systems and the store worker's commit state;
  // a change becomes a device_status record for "storage" (the alarm) and shows in the status topic.
  void storage_tick() {
    StorageReadings r;
    const auto store_space = media::read_space(std::filesystem::path(cfg.store.path).parent_path().string());
    const auto media_space = media::read_space(media->dir());
    r.store_free_bytes = store_space.ok ? store_space.free_bytes : UINT64_MAX;
    r.media_free_bytes = media_space.ok ? media_space.free_bytes : UINT64_MAX;
    r.commit_failures = worker->commit_failures();
    r.commit_pending_retry = worker->commit_pending_retry();
    r.refused_writes = media->refused_writes();
    r.queued_facts = worker->queued();
    r.salvaged_facts = worker->salvaged_facts();
    if (auto ev = storage->update(r, clock.now_ms())) {
      if (ev->state == "ok") {
        log::notice("storage", "", "ok: " + ev->text);
      } else {
        log::error("storage", "", ev->state + ": " + ev->text);
      }
      sink->emit(std::move(*ev));
      forwarder->publish_status_now();
    }
    if (stopping) {
      return;
    }
    storage_timer.expires_after(std::chrono::seconds(1));
    storage_timer.async_wait([this](boost::system::error_code ec) {
      if (!ec) {
        storage_tick();
      }
    });
  }

  // What check-config would warn about (calibration ending soon, two devices on one address, ...): in the
  // journal at start and after each reload.
  void log_config_warnings() const {
    for (const auto& w : config::config_warnings(cfg, clock.now_ms())) {
      log::warn("config", w.device, config::format_warning(w));
    }
  }

  json status_snapshot() const {
    json devices = json::object();
    const auto activity = sink->activity();
    for (const auto& a : adapters) {
      json st = a->status();
      const auto it = activity.find(a->device_id());
      st["events"] = it == activity.end() ? 0 : it->second.events;
      if (it != activity.end()) {
        st["last_event_ms"] = it->second.last_event_ms;
      }
      devices[a->device_id()] = std::move(st);
    }
    const auto stats = worker->outbox_stats();
    const auto sync = sink->clock_sync();
    json by_type = json::object();
    {
      std::lock_guard lock(counts_mutex);
      for (const auto& [type, n] : records_by_type) {
        by_type[type] = n;
      }
    }
    json s = {{"backlog", stats.count},
              {"devices", devices},
              {"broker", forwarder->status()},
              {"storage", storage ? storage->status() : json::object()},
              {"time_ms", clock.now_ms()},
              {"version", CPD_VERSION},
              {"config_sha256", cfg.sha256},
              {"uptime_s",
               std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
                   .count()},
              {"records_by_type", by_type},
              {"clock_sync",
               {{"synced", sync.synchronized},
                {"source", sync.source},
                {"max_error_us", sync.max_error_us},
                {"est_error_us", sync.est_error_us}}}};
    if (stats.oldest_created_ms) {
      s["backlog_oldest_ms"] = *stats.oldest_created_ms;
    }
    s["custody"] = custody ? custody->status() : json{{"enabled", false}};
    if (uploader) {
      s["custody"]["recordings"] = uploader->status();
    }
    {
      std::lock_guard lock(counts_mutex);
      s["kid"] = kid;
    }
    return s;
  }

  // One line for systemd's STATUS=: "3/3 devices connected, backlog 0, broker connected, 120 records".
  std::string status_line() const {
    std::size_t up = 0;
    std::string down;
    for (const auto& a : adapters) {
      const json st = a->status();
      if (st.value("state", "") == "connected") {
        ++up;
      } else if (down.size() < 80) {
        down += (down.empty() ? "" : ", ") + a->device_id() + " " + st.value("state", "?");
      }
    }
    const auto stats = worker->outbox_stats();
    const json broker = forwarder->status();
    std::string line = std::to_string(up) + "/" + std::to_string(adapters.size()) + " devices connected";
    if (!down.empty()) {
      line += " (" + down + ")";
    }
    line += ", backlog " + std::to_string(stats.count);
    if (stats.oldest_created_ms && stats.count > 0) {
      line += " (oldest " +
              std::to_string(std::max<std::int64_t>(0, (clock.now_ms() - *stats.oldest_created_ms) / 1000)) +
              " s)";
    }
    line += broker.value("connected", false) ? ", broker connected" : ", broker disconnected";
    line += ", " + std::to_string(worker->committed_records()) + " records sealed";
    return line;
  }

  // The loop's heartbeat to systemd: WATCHDOG=1 comes from this timer on the event loop itself, so a hung
  // loop stops it and systemd restarts the service. STATUS= goes with it when it changed (or every 10 s).
  void notify_tick() {
    std::string message;
    if (watchdog_usec > 0) {
      message = "WATCHDOG=1\n";
    }
    const auto now = std::chrono::steady_clock::now();
    std::string line = status_line();
    if (line != last_status_line || now - last_status_sent >= std::chrono::seconds(10)) {
      message += "STATUS=" + line;
      last_status_line = std::move(line);
      last_status_sent = now;
    }
    if (!message.empty()) {
      sd_notify(0, message.c_str());
    }
    if (stopping) {
      return;
    }
    auto period = std::chrono::microseconds(watchdog_usec / 2);
    if (watchdog_usec == 0 || period > std::chrono::seconds(2)) {
      period = std::chrono::seconds(2);
    }
    notify_timer.expires_after(period);
    notify_timer.async_wait([this](boost::system::error_code ec) {
      if (!ec) {
        notify_tick();
      }
    });
  }

  void wait_for_reload_signal() {
    reload_signal.async_wait([this](boost::system::error_code ec, int /*signo*/) {
      if (ec || stopping) {
        return;
      }
      if (sealing != Sealing::started) {
        // Its audit record would come before the chain's first records (docs/custody.md, "A replaced store").
        log::warn("daemon", "", "SIGHUP ignored: the chain's start is still being decided (empty store)");
      } else {
        reload();
      }
      wait_for_reload_signal();
    });
  }

  // SIGHUP: re-reads the config file. A file that does not load, or that changes a section fixed at start,
  // is refused as a whole (the daemon keeps the running config); otherwise devices are added, removed and
  // restarted as the plan says, unaffected adapters keep running, and the correlator takes the new rules.
  // Either way an audit record says what happened, with the hashes of the old and the new file.
  void reload() {
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
               static_cast<unsigned long long>(monotonic_usec()), cfg.source.c_str());
    log::notice("daemon", "", "reloading " + cfg.source);
    std::optional<config::Config> next;
    std::string error;
    ReloadPlan plan;
    try {
      next = config::load_config(cfg.source);
      plan = plan_reload(cfg, *next);
      if (!plan.applicable()) {
        std::string sections;
        for (const auto& s : plan.restart_sections) {
          sections += (sections.empty() ? "" : ", ") + s;
        }
        error = cfg.source + ": section(s) " + sections +
                " changed; they take effect only at start: restart checkpointd to apply them";
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    const UnixMs now = clock.now_ms();
    if (!error.empty()) {
      log::error(
          "daemon", "",
          "reload refused, still running on the previous config (sha256 " + cfg.sha256 + "): " + error);
      json details = {{"version", CPD_VERSION},
                      {"file", cfg.source},
                      {"config_sha256", cfg.sha256},
                      {"file_sha256", next ? next->sha256 : file_sha256(cfg.source)},
                      {"reason", error}};
      if (next) {
        details["changes"] = plan.to_json();
      }
      worker->submit(correlator->audit("reload_refused", now, details));
      sd_notify(0, "READY=1");
      return;
    }
    for (const auto* ids : {&plan.removed, &plan.changed}) {
      for (const auto& id : *ids) {
        const auto it = std::find_if(adapters.begin(), adapters.end(),
                                     [&id](const auto& a) { return a->device_id() == id; });
        if (it != adapters.end()) {
          (*it)->stop();  // its open tracks and pending pictures still come out; handlers keep it alive
          adapters.erase(it);
        }
      }
    }
    json details = {{"version", CPD_VERSION},
                    {"file", cfg.source},
                    {"config_sha256_old", cfg.sha256},
                    {"config_sha256_new", next->sha256},
                    {"changes", plan.to_json()}};
    const std::string summary = plan.summary();
    cfg = std::move(*next);
    for (const auto& dev : cfg.devices) {
      const bool start = std::find(plan.added.begin(), plan.added.end(), dev.id) != plan.added.end() ||
                         std::find(plan.changed.begin(), plan.changed.end(), dev.id) != plan.changed.end();
      if (!start) {
        continue;
      }
      adapters.push_back(adapters::find_adapter_kind(dev.kind)->create(dev.settings, *adapter_ctx));
      adapters.back()->start();
    }
    // The audit goes out from the pipeline strand once the correlator has the new rules, so every record
    // sealed after it was decided under them.
    sink->reconfigure(cfg, [this, details = std::move(details)] {
      worker->submit(correlator->audit("reload", clock.now_ms(), details));
    });
    log::notice("daemon", "", "reloaded " + cfg.source + " (sha256 " + cfg.sha256 + "): " + summary);
    log_config_warnings();
    forwarder->publish_status_now();
    last_status_line.clear();
    sd_notify(0, "READY=1");
  }

  // checkpointctl rotate-key (docs/custody.md, "Key rotation"), on the io thread. The new key is on disk
  // (<key>.next, fsync'd) before its key_rotation record is submitted; the store worker seals that record
  // under the old key and everything after it under the new one; only once it is committed is the new key
  // installed as gateway.key (the old one kept as <key>.retired-<kid>). A crash at any step is resolved at
  // the next start (resolve_unfinished_rotation).
  void rotate_key(std::function<void(json)> reply) {
    if (stopping || rotating || sealing != Sealing::started) {
      reply(
          json{{"error", stopping   ? "checkpointd is stopping"
                         : rotating ? "a key rotation is already in progress"
                                    : "the chain's start is still being decided (empty store); try again"}});
      return;
    }
    const std::string key_path = cfg.gateway.key_path;
    std::shared_ptr<const Ed25519PrivateKey> next;
    try {
      next = std::make_shared<const Ed25519PrivateKey>(write_next_key(key_path));
    } catch (const std::exception& e) {
      log::error("daemon", "", std::string("key rotation refused: ") + e.what());
      reply(json{{"error", std::string("key rotation refused: ") + e.what()}});
      return;
    }
    rotating = true;
    const Ed25519PublicKey old_public = key->public_key();  // the sealer's key: no rotation is under way
    const std::string old_kid = old_public.kid();
    const std::string new_kid = next->public_key().kid();
    log::notice("daemon", "",
                "rotating the signing key: kid " + old_kid + " -> " + new_kid + " (new key in " +
                    next_key_path(key_path) + ")");
    Fact fact = make_key_rotation_fact(old_public, next->public_key(), clock.now_ms());
    worker->submit_key_rotation(
        std::move(fact), next, [this, next, key_path, old_kid, new_kid, reply](const SealedRecord& rec) {
          // On the store worker thread, once the record is committed (or what was sealed in its place).
          json answer;
          if (rec.type != "key_rotation" || !rec.salvage_reason.empty()) {
            // Signing failed and a fault record took its place (or it was salvaged): the store worker did not
            // switch keys, so the chain did not rotate.
            std::string why =
                "the key_rotation record could not be sealed (" + rec.id + " is a " + rec.type + ")";
            try {
              discard_next_key(key_path);
            } catch (const std::exception& e) {
              why += "; " + std::string(e.what());
            }
            log::error("daemon", "", "key rotation failed: " + why);
            answer = {{"error", "key rotation failed: " + why}};
          } else {
            *key = *next;  // head announcements are signed on this thread too
            {
              std::lock_guard lock(counts_mutex);
              kid = new_kid;
            }
            answer = {{"rotated",
                       {{"seq", rec.seq},
                        {"old_kid", old_kid},
                        {"new_kid", new_kid},
                        {"key_file", key_path},
                        {"old_key_file", retired_key_path(key_path, old_kid)}}}};
            try {
              install_next_key(key_path, old_kid);
              log::notice("daemon", "",
                          "signing key rotated at seq " + std::to_string(rec.seq) + ": kid " + old_kid +
                              " -> " + new_kid + "; old key kept as " + retired_key_path(key_path, old_kid));
            } catch (const std::exception& e) {
              // The record is committed and the new key is durable as <key>.next: records go on under it, and
              // the next start finishes the installation.
              log::error("daemon", "",
                         std::string("key rotated at seq ") + std::to_string(rec.seq) +
                             " but the key files were not renamed (done at the next start): " + e.what());
              answer["rotated"]["warning"] = e.what();
            }
          }
          asio::post(io, [this] { rotating = false; });
          reply(std::move(answer));
        });
  }

  void shutdown(const std::string& why) {
    if (sealing != Sealing::started) {
      // Nothing sealed yet: the chain's first records go first, then the stop.
      if (!deferred_shutdown) {
        deferred_shutdown = why;
      }
      begin_sealing(std::nullopt, "stopped (" + why + ") before a custody receipt came");
      return;
    }
    if (stopping) {
      return;
    }
    stopping = true;
    if (control) {
      control->stop();
    }
    if (metrics_server) {
      metrics_server->stop();
    }
    notify_timer.cancel();
    reload_signal.cancel();
    // Keeps io.run() going while the last records are committed on the store thread: without it the loop
    // can run out of work (adapters stopped, timers cancelled) before the commit callback posts back.
    shutdown_guard.emplace(io.get_executor());
    storage_timer.cancel();
    sd_notify(0, "STOPPING=1");
    log::notice("daemon", "", "stopping (" + why + ")");
    for (auto& a : adapters) {
      a->stop();
    }
    if (custody) {
      custody->stop();
    }
    if (uploader) {
      uploader->stop();
    }
    // The adapters' stop handlers run first (they emit the tracks still open); the stop audit record
    // then comes after everything they emitted. The forwarder drains up to it, then says offline.
    asio::post(io, [this, why] {
      sink->flush_then([this, why] {
        json details = {{"version", CPD_VERSION}, {"config_sha256", cfg.sha256}, {"reason", why}};
        worker->submit(correlator->audit("stop", clock.now_ms(), details), [this](const SealedRecord& rec) {
          const std::uint64_t seq = rec.seq;
          asio::post(io, [this, seq] {
            forwarder->stop(seq, std::chrono::seconds(5), [this] {
              worker->drain_and_stop();
              shutdown_guard.reset();
              io.stop();
            });
          });
        });
      });
    });
  }
};

Daemon::Daemon(config::Config config) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
}

Daemon::~Daemon() = default;

int Daemon::run() {
  Impl& d = *impl_;
  const auto& cfg = d.cfg;

  d.log_config_warnings();
  d.key = config::load_signing_key(cfg);
  d.store = std::make_unique<store::EvidenceStore>(cfg.store.path);
  {
    // A key rotation a crash interrupted: finished if the chain took it, abandoned otherwise.
    const ChainHead h = d.store->chain_head();
    std::string head_jws;
    if (h.seq > 0) {
      if (auto rec = d.store->record(h.seq)) {
        head_jws = rec->jws;
      }
    }
    std::string note;
    if (auto rotated =
            resolve_unfinished_rotation(cfg.gateway.key_path, d.key->public_key().kid(), head_jws, note)) {
      d.key = std::move(*rotated);
    }
    if (!note.empty()) {
      log::warn("daemon", "", note);
    }
  }
  {
    std::string media_dir = cfg.store.media_dir;
    if (media_dir.empty()) {
      media_dir = (std::filesystem::path(cfg.store.path).parent_path() / "media").string();
    }
    d.media = std::make_unique<media::MediaStore>(media_dir);
    d.media->set_reserve(static_cast<std::uint64_t>(cfg.store.reserve_mb) * 1024 * 1024);
  }
  d.storage = std::make_unique<StorageGuard>(static_cast<std::uint64_t>(cfg.store.reserve_mb) * 1024 * 1024);
  {
    // Before any other thread starts: start() narrows the umask around bind() (socket mode 0660).
    auto server = std::make_unique<control::ControlServer>(d.io, cfg.control.socket,
                                                           [&d] { return d.status_snapshot(); });
    server->add_command("rotate_key", [&d](const json& /*request*/, std::function<void(json)> reply) {
      d.rotate_key(std::move(reply));
    });
    if (const Status st = server->start(); st.is_ok()) {
      log::notice("control", "", "control socket " + cfg.control.socket + " (checkpointctl status / tail)");
      d.control = std::move(server);
    } else {
      log::error("control", "",
                 "no control socket (checkpointctl status/tail will not reach this daemon): " + st.message());
    }
  }
  d.blocking = std::make_unique<asio::thread_pool>(2);
  const ChainHead head = d.store->chain_head();
  d.sealer = std::make_unique<Sealer>(*d.key, cfg.gateway.id, head);
  d.sealer->set_site(pipeline::site_json(cfg.gateway.id, cfg.gateway.site));  // fixed at reload
  d.kid = d.sealer->kid();
  d.correlator = std::make_unique<pipeline::Correlator>(cfg);
  log::notice("daemon", "",
              "store " + cfg.store.path + " opened at seq " + std::to_string(head.seq) +
                  "; signing key kid " + d.sealer->kid());

  d.worker = std::make_unique<StoreWorker>(
      *d.store, *d.sealer, d.clock, static_cast<std::size_t>(cfg.store.commit_max_batch),
      [&d](std::uint64_t last_seq, std::vector<forwarder::CommittedRecord> records) {
        {
          std::lock_guard lock(d.counts_mutex);
          for (const auto& r : records) {
            ++d.records_by_type[r.type];
          }
        }
        if (d.control && d.control->tail_clients() > 0) {
          std::vector<control::TailRecord> tail;
          tail.reserve(records.size());
          for (const auto& r : records) {
            tail.push_back({r.seq, r.type, 0, r.jws});
          }
          d.control->on_committed(std::move(tail));
        }
        if (d.forwarder) {
          d.forwarder->notify_committed(last_seq, std::move(records));
        }
      },
      d.media.get(), cfg.store.media_retention_days, d.correlator->link_rule(),
      cfg.store.important_retention_days);
  d.worker->set_commit_observer([&d](std::chrono::steady_clock::duration took, std::size_t /*records*/) {
    d.histograms.fsync_latency.observe(std::chrono::duration<double>(took).count());
  });
  d.dock_ledger = std::make_unique<StoreDockLedger>(*d.worker, d.clock, cfg.store.media_retention_days);
  d.forwarder = std::make_unique<forwarder::MqttForwarder>(d.io, cfg.mqtt, cfg.gateway.id, *d.worker,
                                                           [&d] { return d.status_snapshot(); });
  d.forwarder->set_latency_observer([&d](double seconds) { d.histograms.publish_latency.observe(seconds); });
  d.sink = std::make_unique<PipelineSink>(d.io, *d.correlator, *d.worker, d.clock, cfg.validity);
  d.adapter_ctx.emplace(
      adapters::AdapterContext{d.io, *d.sink, d.clock, d.blocking.get(), d.media.get(), d.dock_ledger.get()});

  json device_ids = json::array();
  for (const auto& dev : cfg.devices) {
    const auto* kind = adapters::find_adapter_kind(dev.kind);
    if (kind == nullptr) {
      throw StartupError(dev.place + ": device " + dev.id + ": no adapter for kind '" + dev.kind + "'");
    }
    d.adapters.push_back(kind->create(dev.settings, *d.adapter_ctx));
    device_ids.push_back(dev.id);
  }

  d.start_details = {{"version", CPD_VERSION}, {"config_sha256", cfg.sha256},
                     {"kid", d.sealer->kid()}, {"pid", static_cast<std::int64_t>(::getpid())},
                     {"devices", device_ids},  {"resumed_at_seq", head.seq}};
  // An empty store (a new gateway, or a replaced store: docs/custody.md) looks for its retained custody
  // receipt before it seals anything, so its chain can continue after what central holds.
  const bool empty_store = d.store->record_count() == 0;
  const std::optional<store::CustodyState> origin = empty_store ? d.store->chain_origin() : std::nullopt;
  if (empty_store) {
    d.sealing = Impl::Sealing::waiting;
  }

  if (cfg.custody.enabled) {
    CustodyHost host;
    host.run_on_store = [&d](std::function<void(store::EvidenceStore&)> task) {
      d.worker->run_on_worker(std::move(task));
    };
    host.submit = [&d](Fact fact, std::function<void(const SealedRecord&)> handler) {
      d.worker->submit(std::move(fact), std::move(handler));
    };
    host.read_media = [&d](const std::string& sha256) { return d.media->read(sha256); };
    host.remove_media = [&d](const std::string& sha256) {
      std::error_code ec;
      std::filesystem::remove(d.media->path_of(sha256), ec);
    };
    host.chain_head = [&d] { return d.store->chain_head(); };
    d.custody = std::make_unique<CustodyAgent>(d.io, cfg, *d.key, *d.forwarder, std::move(host), d.clock);
    if (empty_store && !origin && cfg.custody.empty_store_wait_ms > 0) {
      log::notice("daemon", "",
                  "empty store: waiting up to " + std::to_string(cfg.custody.empty_store_wait_ms) +
                      " ms for the retained custody receipt before sealing");
      d.custody->await_origin(std::chrono::milliseconds(cfg.custody.empty_store_wait_ms),
                              [&d](std::optional<store::CustodyState> receipt, std::string why) {
                                asio::post(
                                    d.io, [&d, receipt = std::move(receipt), why = std::move(why)]() mutable {
                                      d.begin_sealing(std::move(receipt), std::move(why));
                                    });
                              });
    }
    UploaderHost files;
    files.run_on_store = [&d](std::function<void(store::EvidenceStore&)> task) {
      d.worker->run_on_worker(std::move(task));
    };
    files.run_blocking = [&d](std::function<void()> task) { asio::post(*d.blocking, std::move(task)); };
    files.media_path = [&d](const std::string& sha256) { return d.media->path_of(sha256); };
    files.submit = [&d](Fact fact, std::function<void(const SealedRecord&)> handler) {
      d.worker->submit(std::move(fact), std::move(handler));
    };
    d.uploader = std::make_unique<RecordingUploader>(d.io, cfg, *d.forwarder, std::move(files), d.clock);
    d.custody->add_topics(d.uploader->topics(),
                          [&d](forwarder::InboundMessage m) { d.uploader->on_message(std::move(m)); });
    d.custody->start();  // subscribes through the forwarder: before it connects
    d.uploader->start();
  }
  d.forwarder->notify_committed(head.seq);
  d.forwarder->start();
  d.start_metrics();
  if (!empty_store) {
    d.worker->submit(d.correlator->audit("start", d.clock.now_ms(), d.start_details));
    d.storage_tick();
    d.sink->start();
    for (auto& a : d.adapters) {
      a->start();
    }
  } else if (origin) {
    // A crash after the store took the receipt as its origin and before store_replaced committed.
    d.sealing = Impl::Sealing::starting;
    if (d.custody) {
      d.custody->origin_committed(*origin);
    }
    d.seal_first_records(origin,
                         "the store was empty at start; its chain had already been continued after "
                         "this receipt before a restart");
  } else if (!cfg.custody.enabled) {
    d.begin_sealing(std::nullopt, "no custody section: no central receipt to continue after");
  } else if (cfg.custody.empty_store_wait_ms == 0) {
    d.begin_sealing(std::nullopt, "custody.empty_store_wait_ms is 0");
  }
  d.signals.async_wait([&d](boost::system::error_code ec, int signo) {
    if (!ec) {
      d.shutdown(signo == SIGTERM ? "SIGTERM" : "SIGINT");
    }
  });
  d.wait_for_reload_signal();
  if (sd_watchdog_enabled(0, &d.watchdog_usec) <= 0) {
    d.watchdog_usec = 0;
  }
  sd_notify(0, "READY=1");
  d.notify_tick();
  log::notice("daemon", "",
              "running " + std::to_string(d.adapters.size()) + " devices, forwarding to " + cfg.mqtt.uri);
  d.io.run();
  d.blocking->join();
  d.worker->drain_and_stop();
  const auto fs = d.forwarder->status();
  log::notice("mqtt", "",
              "ready-to-PUBACK latency over " + fs["latency"]["count"].dump() + " records: p50 " +
                  fs["latency"]["p50_ms"].dump() + " ms, p99 " + fs["latency"]["p99_ms"].dump() +
                  " ms, max " + fs["latency"]["max_ms"].dump() + " ms");
  d.forwarder.reset();
  log::notice("daemon", "", "stopped cleanly at seq " + std::to_string(d.store->chain_head().seq));
  return 0;
}

}  // namespace cpd::app
