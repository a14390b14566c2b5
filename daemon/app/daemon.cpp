#include "daemon/app/daemon.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <systemd/sd-daemon.h>

#include "adapters/registry.h"
#include "daemon/app/store_worker.h"
#include "daemon/app/storage_guard.h"
#include "daemon/app/store_dock_ledger.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/sealer.h"
#include "daemon/forwarder/mqtt_forwarder.h"
#include "daemon/log/log.h"
#include "daemon/media/media_store.h"
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

  PipelineSink(asio::io_context& io, pipeline::Correlator& correlator, StoreWorker& worker, const WallClock& clock,
               const config::ValiditySection& validity)
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

  void emit(adapters::DeviceEvent event) override {
    const auto ready_at = std::chrono::steady_clock::now();
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
    if (assume_clock_sync_) {
      correlator_.set_clock_sync(pipeline::ClockSync{true, "assume", -1, -1});
    } else {
      correlator_.set_clock_sync(pipeline::read_kernel_clock_sync());
    }
  }

  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer tick_timer_;
  pipeline::Correlator& correlator_;
  StoreWorker& worker_;
  const WallClock& clock_;
  bool assume_clock_sync_;
  bool stopped_ = false;
  std::uint64_t ticks_ = 0;
};

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
  std::unique_ptr<pipeline::Correlator> correlator;
  std::unique_ptr<PipelineSink> sink;
  std::vector<std::unique_ptr<adapters::Adapter>> adapters;
  std::optional<adapters::AdapterContext> adapter_ctx;
  asio::signal_set signals{io, SIGINT, SIGTERM};
  std::unique_ptr<StorageGuard> storage;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> shutdown_guard;
  asio::steady_timer storage_timer{io};
  bool stopping = false;

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

  json status_snapshot() const {
    json devices = json::object();
    for (const auto& a : adapters) {
      devices[a->device_id()] = a->status();
    }
    const auto stats = worker->outbox_stats();
    json s = {{"backlog", stats.count}, {"devices", devices}, {"broker", forwarder->status()},
              {"storage", storage ? storage->status() : json::object()}, {"time_ms", clock.now_ms()}};
    if (stats.oldest_created_ms) {
      s["backlog_oldest_ms"] = *stats.oldest_created_ms;
    }
    return s;
  }

  void shutdown(const std::string& why) {
    if (stopping) {
      return;
    }
    stopping = true;
    // Keeps io.run() going while the last records are committed on the store thread: without it the loop
    // can run out of work (adapters stopped, timers cancelled) before the commit callback posts back.
    shutdown_guard.emplace(io.get_executor());
    storage_timer.cancel();
    sd_notify(0, "STOPPING=1");
    log::notice("daemon", "", "stopping (" + why + ")");
    for (auto& a : adapters) {
      a->stop();
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

Daemon::Daemon(config::Config config) : impl_(std::make_unique<Impl>()) { impl_->cfg = std::move(config); }

Daemon::~Daemon() = default;

int Daemon::run() {
  Impl& d = *impl_;
  const auto& cfg = d.cfg;

  d.key = Ed25519PrivateKey::load_pem_file(cfg.gateway.key_path);
  d.store = std::make_unique<store::EvidenceStore>(cfg.store.path);
  {
    std::string media_dir = cfg.store.media_dir;
    if (media_dir.empty()) {
      media_dir = (std::filesystem::path(cfg.store.path).parent_path() / "media").string();
    }
    d.media = std::make_unique<media::MediaStore>(media_dir);
    d.media->set_reserve(static_cast<std::uint64_t>(cfg.store.reserve_mb) * 1024 * 1024);
  }
  d.storage = std::make_unique<StorageGuard>(static_cast<std::uint64_t>(cfg.store.reserve_mb) * 1024 * 1024);
  d.blocking = std::make_unique<asio::thread_pool>(2);
  const ChainHead head = d.store->chain_head();
  d.sealer = std::make_unique<Sealer>(*d.key, cfg.gateway.id, head);
  d.correlator = std::make_unique<pipeline::Correlator>(cfg);
  log::notice("daemon", "", "store " + cfg.store.path + " opened at seq " + std::to_string(head.seq) +
                                "; signing key kid " + d.sealer->kid());

  d.worker = std::make_unique<StoreWorker>(
      *d.store, *d.sealer, d.clock, static_cast<std::size_t>(cfg.store.commit_max_batch),
      [&d](std::uint64_t last_seq, std::vector<forwarder::CommittedRecord> records) {
        if (d.forwarder) {
          d.forwarder->notify_committed(last_seq, std::move(records));
        }
      },
      d.media.get(), cfg.store.media_retention_days, d.correlator->link_rule(), cfg.store.important_retention_days);
  d.dock_ledger = std::make_unique<StoreDockLedger>(*d.worker);
  d.forwarder = std::make_unique<forwarder::MqttForwarder>(d.io, cfg.mqtt, cfg.gateway.id, *d.worker,
                                                            [&d] { return d.status_snapshot(); });
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

  json details = {{"version", CPD_VERSION}, {"config_sha256", cfg.sha256}, {"kid", d.sealer->kid()},
                  {"pid", static_cast<std::int64_t>(::getpid())}, {"devices", device_ids},
                  {"resumed_at_seq", head.seq}};
  d.worker->submit(d.correlator->audit("start", d.clock.now_ms(), details));

  d.forwarder->notify_committed(head.seq);
  d.forwarder->start();
  d.sink->start();
  d.storage_tick();
  for (auto& a : d.adapters) {
    a->start();
  }
  d.signals.async_wait([&d](boost::system::error_code ec, int signo) {
    if (!ec) {
      d.shutdown(signo == SIGTERM ? "SIGTERM" : "SIGINT");
    }
  });
  sd_notify(0, "READY=1");
  log::notice("daemon", "", "running " + std::to_string(d.adapters.size()) + " devices, forwarding to " +
                                cfg.mqtt.uri);
  d.io.run();
  d.blocking->join();
  d.worker->drain_and_stop();
  const auto fs = d.forwarder->status();
  log::notice("mqtt", "", "ready-to-PUBACK latency over " + fs["latency"]["count"].dump() + " records: p50 " +
                              fs["latency"]["p50_ms"].dump() + " ms, p99 " + fs["latency"]["p99_ms"].dump() +
                              " ms, max " + fs["latency"]["max_ms"].dump() + " ms");
  d.forwarder.reset();
  log::notice("daemon", "", "stopped cleanly at seq " + std::to_string(d.store->chain_head().seq));
  return 0;
}

}  // namespace cpd::app
