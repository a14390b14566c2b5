#include "daemon/app/daemon.h"

#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <systemd/sd-daemon.h>

#include "adapters/registry.h"
#include "daemon/app/store_worker.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/sealer.h"
#include "daemon/forwarder/mqtt_forwarder.h"
#include "daemon/log/log.h"
#include "daemon/pipeline/correlator.h"
#include "daemon/store/evidence_store.h"

namespace cpd::app {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// Device events arrive on adapter strands; the correlator is single-threaded, so they are serialised on
// the pipeline strand and the resulting facts handed to the store worker.
class PipelineSink final : public adapters::EventSink {
 public:
  // Above this many facts waiting for the store, adapters pause reading (back-pressure to the device).
  static constexpr std::uint64_t kMaxQueuedFacts = 256;

  PipelineSink(asio::io_context& io, pipeline::Correlator& correlator, StoreWorker& worker)
      : strand_(asio::make_strand(io)), correlator_(correlator), worker_(worker) {}

  void emit(adapters::DeviceEvent event) override {
    const auto ready_at = std::chrono::steady_clock::now();
    asio::post(strand_, [this, ready_at, ev = std::move(event)] {
      for (auto& fact : correlator_.on_event(ev)) {
        fact.ready_at = ready_at;
        worker_.submit(std::move(fact));
      }
    });
  }

  // Runs `fn` on the pipeline strand after every event already emitted.
  void after_pending(std::function<void()> fn) { asio::post(strand_, std::move(fn)); }

  bool congested() const override { return worker_.queued() > kMaxQueuedFacts; }

 private:
  asio::strand<asio::io_context::executor_type> strand_;
  pipeline::Correlator& correlator_;
  StoreWorker& worker_;
};

}  // namespace

struct Daemon::Impl {
  config::Config cfg;
  SystemWallClock clock;
  std::optional<Ed25519PrivateKey> key;
  std::unique_ptr<store::EvidenceStore> store;
  std::unique_ptr<Sealer> sealer;
  asio::io_context io{1};
  std::unique_ptr<StoreWorker> worker;
  std::unique_ptr<forwarder::MqttForwarder> forwarder;
  std::unique_ptr<pipeline::Correlator> correlator;
  std::unique_ptr<PipelineSink> sink;
  std::vector<std::unique_ptr<adapters::Adapter>> adapters;
  std::optional<adapters::AdapterContext> adapter_ctx;
  asio::signal_set signals{io, SIGINT, SIGTERM};
  bool stopping = false;

  json status_snapshot() const {
    json devices = json::object();
    for (const auto& a : adapters) {
      devices[a->device_id()] = a->status();
    }
    const auto stats = worker->outbox_stats();
    json s = {{"backlog", stats.count}, {"devices", devices}, {"broker", forwarder->status()},
              {"time_ms", clock.now_ms()}};
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
    sd_notify(0, "STOPPING=1");
    log::notice("daemon", "", "stopping (" + why + ")");
    for (auto& a : adapters) {
      a->stop();
    }
    // The adapters' stop handlers run first (they emit the tracks still open); the stop audit record
    // then comes after everything they emitted. The forwarder drains up to it, then says offline.
    asio::post(io, [this, why] {
      sink->after_pending([this, why] {
        json details = {{"version", CPD_VERSION}, {"config_sha256", cfg.sha256}, {"reason", why}};
        worker->submit(correlator->audit("stop", clock.now_ms(), details), [this](const SealedRecord& rec) {
          const std::uint64_t seq = rec.seq;
          asio::post(io, [this, seq] {
            forwarder->stop(seq, std::chrono::seconds(5), [this] {
              worker->drain_and_stop();
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
      });
  d.forwarder = std::make_unique<forwarder::MqttForwarder>(d.io, cfg.mqtt, cfg.gateway.id, *d.worker,
                                                            [&d] { return d.status_snapshot(); });
  d.sink = std::make_unique<PipelineSink>(d.io, *d.correlator, *d.worker);
  d.adapter_ctx.emplace(adapters::AdapterContext{d.io, *d.sink, d.clock});

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
