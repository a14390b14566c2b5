// Daemon: start-up in named steps, the chain's first records, the storage watch and the shutdown. Impl's
// definition is in daemon_impl.h; status, reload and key rotation have their own files.
#include "daemon/app/daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "adapters/registry.h"
#include "daemon/app/daemon_impl.h"
#include "daemon/config/config_warnings.h"
#include "daemon/log/log.h"

namespace cpd::app {

namespace asio = boost::asio;
using nlohmann::json;

Daemon::Daemon(config::Config config) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
}

Daemon::~Daemon() = default;

int Daemon::run() {
  Impl& d = *impl_;
  const auto& cfg = d.cfg;

  {
    const StartupKeepAlive keep_alive("opening the evidence store (integrity check of " + cfg.store.path +
                                      ")");
    d.open_stores();
  }
  d.start_control();
  const ChainHead head = d.start_pipeline();
  const json device_ids = d.create_adapters();

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
    d.start_custody(empty_store && !origin);
  }
  d.forwarder->notify_committed(head.seq);
  d.forwarder->start();
  d.start_metrics();
  d.start_sealing(empty_store, origin);
  d.wait_for_stop_signal();
  d.wait_for_reload_signal();
  d.systemd.start([&d] { return systemd_status_line(d.adapters, *d.worker, *d.forwarder, d.clock); });
  log::notice("daemon", "",
              "running " + std::to_string(d.adapters.size()) + " devices, forwarding to " + cfg.mqtt.uri);
  d.io.run();
  d.finish_run();
  return 0;
}

// The signing key and the stores: evidence (with an interrupted key rotation resolved), media, and the
// storage watch.
void Daemon::Impl::open_stores() {
  log_config_warnings();
  key = config::load_signing_key(cfg);
  store = std::make_unique<store::EvidenceStore>(cfg.store.path);
  finish_interrupted_rotation();
  {
    std::string media_dir = cfg.store.media_dir;
    if (media_dir.empty()) {
      media_dir = (std::filesystem::path(cfg.store.path).parent_path() / "media").string();
    }
    media = std::make_unique<media::MediaStore>(media_dir);
    media->set_reserve(static_cast<std::uint64_t>(cfg.store.reserve_mb) * 1024 * 1024);
  }
  if (store->record_count() == 0) {
    // A store with no record names no file: every file already in the media directory is a previous
    // store's. Since-when this store names media is raised past the newest of them, so the media sweep
    // keeps them all whatever the clock said when the store was made (a board without a battery-backed
    // clock can start a replaced disk's store years behind the files it finds).
    // A file whose time cannot be read, or a directory that cannot be listed, fails the start (the daemon
    // is started again): a bound set below a previous store's file would let the sweep delete it.
    std::optional<UnixMs> newest;
    std::error_code ec;
    std::filesystem::directory_iterator it(media->dir(), ec);
    for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      if (it->path().filename().string().size() != 64) {
        continue;
      }
      struct stat st {};
      if (::stat(it->path().c_str(), &st) != 0) {
        if (errno == ENOENT) {
          continue;  // gone since it was listed
        }
        throw store::StoreError("media: cannot read the time of " + it->path().string() + ": " +
                                std::strerror(errno) + "; not started");
      }
      const UnixMs ms = static_cast<UnixMs>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000 + 1;
      newest = std::max(newest.value_or(ms), ms);
    }
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw store::StoreError("media: cannot list " + media->dir() + ": " + ec.message() + "; not started");
    }
    if (newest) {
      store->raise_media_since(*newest);
    }
  }
  storage = std::make_unique<StorageGuard>(static_cast<std::uint64_t>(cfg.store.reserve_mb) * 1024 * 1024);
}

// checkpointctl's socket. Before any other thread starts: start() narrows the umask around bind() (socket
// mode 0660).
void Daemon::Impl::start_control() {
  auto server =
      std::make_unique<control::ControlServer>(io, cfg.control.socket, [this] { return status_snapshot(); });
  server->add_command("rotate_key", [this](const json& /*request*/, std::function<void(json)> reply) {
    rotate_key(std::move(reply));
  });
  if (const Status st = server->start(); st.is_ok()) {
    log::notice("control", "", "control socket " + cfg.control.socket + " (checkpointctl status / tail)");
    control = std::move(server);
  } else {
    log::error("control", "",
               "no control socket (checkpointctl status/tail will not reach this daemon): " + st.message());
  }
}

// Sealer, correlator, store worker, forwarder and the adapters' sink, around the chain head the store
// opened at (returned).
ChainHead Daemon::Impl::start_pipeline() {
  blocking = std::make_unique<asio::thread_pool>(2);
  const ChainHead head = store->chain_head();
  sealer = std::make_unique<Sealer>(*key, cfg.gateway.id, head);
  sealer->set_site(pipeline::site_json(cfg.gateway.id, cfg.gateway.site));  // fixed at reload
  kid = sealer->kid();
  correlator = std::make_unique<pipeline::Correlator>(cfg);
  log::notice("daemon", "",
              "store " + cfg.store.path + " opened at seq " + std::to_string(head.seq) +
                  "; signing key kid " + sealer->kid());

  worker = std::make_unique<StoreWorker>(
      *store, *sealer, clock, static_cast<std::size_t>(cfg.store.commit_max_batch),
      [this](std::uint64_t last_seq, std::vector<forwarder::CommittedRecord> records) {
        on_committed(last_seq, std::move(records));
      },
      media.get(), cfg.store.media_retention_days, correlator->link_rule(),
      cfg.store.important_retention_days);
  worker->set_commit_observer([this](std::chrono::steady_clock::duration took, std::size_t /*records*/) {
    histograms.fsync_latency.observe(std::chrono::duration<double>(took).count());
  });
  worker->set_commit_linger(std::chrono::milliseconds(cfg.store.commit_linger_ms));
  dock_ledger = std::make_unique<StoreDockLedger>(*worker, clock, cfg.store.media_retention_days);
  forwarder = std::make_unique<forwarder::MqttForwarder>(io, cfg.mqtt, cfg.gateway.id, *worker,
                                                         [this] { return status_snapshot(); });
  forwarder->set_latency_observer([this](double seconds) { histograms.publish_latency.observe(seconds); });
  sink = std::make_unique<PipelineSink>(io, *correlator, *worker, clock, cfg.validity);
  adapter_ctx.emplace(
      adapters::AdapterContext{io, *sink, clock, blocking.get(), media.get(), dock_ledger.get()});
  return head;
}

// On the store worker thread, after each committed batch: counts, checkpointctl tail, the forwarder.
void Daemon::Impl::on_committed(std::uint64_t last_seq, std::vector<forwarder::CommittedRecord> records) {
  {
    std::lock_guard lock(counts_mutex);
    for (const auto& r : records) {
      ++records_by_type[r.type];
    }
  }
  if (control && control->tail_clients() > 0) {
    std::vector<control::TailRecord> tail;
    tail.reserve(records.size());
    for (const auto& r : records) {
      tail.push_back({r.seq, r.type, 0, r.jws});
    }
    control->on_committed(std::move(tail));
  }
  if (forwarder) {
    forwarder->notify_committed(last_seq, std::move(records));
  }
}

// One adapter per configured device (not started yet); returns the device ids for the `start` record.
json Daemon::Impl::create_adapters() {
  json device_ids = json::array();
  for (const auto& dev : cfg.devices) {
    const auto* kind = adapters::find_adapter_kind(dev.kind);
    if (kind == nullptr) {
      throw StartupError(dev.place + ": device " + dev.id + ": no adapter for kind '" + dev.kind + "'");
    }
    adapters.push_back(kind->create(dev.settings, *adapter_ctx));
    device_ids.push_back(dev.id);
  }
  return device_ids;
}

// The custody agent and the recording uploader (custody section only). With `await_origin` (an empty store
// that holds no receipt yet) sealing waits up to custody.empty_store_wait_ms for the retained receipt.
void Daemon::Impl::start_custody(bool await_origin) {
  custody = std::make_unique<CustodyAgent>(io, cfg, *key, *forwarder, custody_host(), clock);
  if (await_origin && cfg.custody.empty_store_wait_ms > 0) {
    log::notice("daemon", "",
                "empty store: waiting up to " + std::to_string(cfg.custody.empty_store_wait_ms) +
                    " ms for the retained custody receipt before sealing");
    custody->await_origin(std::chrono::milliseconds(cfg.custody.empty_store_wait_ms),
                          [this](std::optional<store::CustodyState> receipt, std::string why) {
                            asio::post(io,
                                       [this, receipt = std::move(receipt), why = std::move(why)]() mutable {
                                         begin_sealing(std::move(receipt), std::move(why));
                                       });
                          });
  }
  uploader = std::make_unique<RecordingUploader>(io, cfg, *forwarder, uploader_host(), clock);
  custody->add_topics(uploader->topics(),
                      [this](forwarder::InboundMessage m) { uploader->on_message(std::move(m)); });
  custody->start();  // subscribes through the forwarder: before it connects
  uploader->start();
}

CustodyHost Daemon::Impl::custody_host() {
  CustodyHost host;
  host.run_on_store = [this](std::function<void(store::EvidenceStore&)> task) {
    worker->run_on_worker(std::move(task));
  };
  host.submit = [this](Fact fact, std::function<void(const SealedRecord&)> handler) {
    worker->submit(std::move(fact), std::move(handler));
  };
  host.read_media = [this](const std::string& sha256) {
    return media->read(sha256, custody::kMaxPictureBytes);
  };
  host.media_absent = [this](const std::string& sha256) {
    // No picture of that name here: no file, or one too large to be a picture (never read whole).
    struct stat st {};
    if (::stat(media->path_of(sha256).c_str(), &st) != 0) {
      return errno == ENOENT;
    }
    return static_cast<std::uint64_t>(st.st_size) > custody::kMaxPictureBytes;
  };
  host.remove_media = [this](const std::string& sha256) {
    std::error_code ec;
    std::filesystem::remove(media->path_of(sha256), ec);
  };
  host.chain_head = [this] { return store->chain_head(); };
  return host;
}

UploaderHost Daemon::Impl::uploader_host() {
  UploaderHost files;
  files.run_on_store = [this](std::function<void(store::EvidenceStore&)> task) {
    worker->run_on_worker(std::move(task));
  };
  files.run_blocking = [this](std::function<void()> task) { asio::post(*blocking, std::move(task)); };
  files.media_path = [this](const std::string& sha256) { return media->path_of(sha256); };
  files.submit = [this](Fact fact, std::function<void(const SealedRecord&)> handler) {
    worker->submit(std::move(fact), std::move(handler));
  };
  return files;
}

// A store with records seals its `start` record and reads devices now; an empty one decides first how its
// chain starts (begin_sealing), now or once the custody agent's wait is over.
void Daemon::Impl::start_sealing(bool empty_store, const std::optional<store::CustodyState>& origin) {
  if (!empty_store) {
    worker->submit(correlator->audit("start", clock.now_ms(), start_details));
    storage_tick();
    sink->start();
    for (auto& a : adapters) {
      a->start();
    }
  } else if (origin) {
    // A crash after the store took the receipt as its origin and before store_replaced committed.
    sealing = Sealing::starting;
    if (custody) {
      custody->origin_committed(*origin);
    }
    seal_first_records(origin,
                       "the store was empty at start; its chain had already been continued after "
                       "this receipt before a restart");
  } else if (!cfg.custody.enabled) {
    begin_sealing(std::nullopt, "no custody section: no central receipt to continue after");
  } else if (cfg.custody.empty_store_wait_ms == 0) {
    begin_sealing(std::nullopt, "custody.empty_store_wait_ms is 0");
  }
}

void Daemon::Impl::wait_for_stop_signal() {
  signals.async_wait([this](boost::system::error_code ec, int signo) {
    if (!ec) {
      shutdown(signo == SIGTERM ? "SIGTERM" : "SIGINT");
    }
  });
}

// After the event loop ran out (a clean stop): the last commits, the forwarder's latency summary.
void Daemon::Impl::finish_run() {
  blocking->join();
  worker->drain_and_stop();
  const auto fs = forwarder->status();
  log::notice("mqtt", "",
              "ready-to-PUBACK latency over " + fs["latency"]["count"].dump() + " records: p50 " +
                  fs["latency"]["p50_ms"].dump() + " ms, p99 " + fs["latency"]["p99_ms"].dump() +
                  " ms, max " + fs["latency"]["max_ms"].dump() + " ms");
  forwarder.reset();
  log::notice("daemon", "", "stopped cleanly at seq " + std::to_string(store->chain_head().seq));
}

// The wait is over: continue the chain after `receipt` (the store takes it as its origin first), or
// start a new chain at seq 1 because of `why`.
void Daemon::Impl::begin_sealing(std::optional<store::CustodyState> receipt, std::string why) {
  if (sealing != Sealing::waiting) {
    if (receipt && custody) {
      custody->origin_failed();  // decided already (a SIGTERM began a new chain): this receipt is not taken
    }
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
        if (custody) {
          custody->origin_failed();
        }
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
void Daemon::Impl::seal_first_records(std::optional<store::CustodyState> continued, std::string why) {
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
void Daemon::Impl::storage_tick() {
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
void Daemon::Impl::log_config_warnings() const {
  for (const auto& w : config::config_warnings(cfg, clock.now_ms())) {
    log::warn("config", w.device, config::format_warning(w));
  }
}

void Daemon::Impl::shutdown(const std::string& why) {
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
  systemd.stop_heartbeat();
  reload_signal.cancel();
  // Keeps io.run() going while the last records are committed on the store thread: without it the loop
  // can run out of work (adapters stopped, timers cancelled) before the commit callback posts back.
  shutdown_guard.emplace(io.get_executor());
  storage_timer.cancel();
  systemd.send_stopping();
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

}  // namespace cpd::app
