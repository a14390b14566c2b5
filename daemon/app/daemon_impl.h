// Daemon::Impl: the daemon's parts and their wiring, private to daemon/app. Its members are destroyed in
// reverse order of declaration, so their order is part of the shutdown: keep it. The member functions are
// defined by concern: start-up, sealing and shutdown in daemon.cpp, status in daemon_status.cpp, SIGHUP in
// daemon_reload.cpp, key rotation in daemon_key_rotation.cpp.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "daemon/app/custody_agent.h"
#include "daemon/app/daemon.h"
#include "daemon/app/pipeline_sink.h"
#include "daemon/app/recording_uploader.h"
#include "daemon/app/reload_plan.h"
#include "daemon/app/storage_guard.h"
#include "daemon/app/store_dock_ledger.h"
#include "daemon/app/store_worker.h"
#include "daemon/app/systemd_notify.h"
#include "daemon/control/control_server.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/sealer.h"
#include "daemon/forwarder/mqtt_forwarder.h"
#include "daemon/media/media_store.h"
#include "daemon/metrics/histogram.h"
#include "daemon/metrics/metrics_server.h"
#include "daemon/pipeline/correlator.h"
#include "daemon/store/evidence_store.h"

namespace cpd::app {

struct Daemon::Impl {
  config::Config cfg;
  SystemWallClock clock;
  std::optional<Ed25519PrivateKey> key;
  std::unique_ptr<store::EvidenceStore> store;
  std::unique_ptr<media::MediaStore> media;
  std::unique_ptr<boost::asio::thread_pool> blocking;  // file writes, fsync, hashing: never on the io thread
  std::unique_ptr<Sealer> sealer;
  boost::asio::io_context io{1};
  std::unique_ptr<StoreWorker> worker;
  std::unique_ptr<StoreDockLedger> dock_ledger;
  std::unique_ptr<forwarder::MqttForwarder> forwarder;
  std::unique_ptr<CustodyAgent> custody;        // only with a custody section (docs/custody.md)
  std::unique_ptr<RecordingUploader> uploader;  // recordings to central, with custody
  std::unique_ptr<pipeline::Correlator> correlator;
  std::unique_ptr<PipelineSink> sink;
  std::vector<std::unique_ptr<adapters::Adapter>> adapters;
  std::optional<adapters::AdapterContext> adapter_ctx;
  boost::asio::signal_set signals{io, SIGINT, SIGTERM};
  boost::asio::signal_set reload_signal{io, SIGHUP};
  SystemdNotifier systemd{io};  // READY/RELOADING/STOPPING, watchdog and STATUS= line
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
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> shutdown_guard;
  boost::asio::steady_timer storage_timer{io};
  bool stopping = false;

  // An empty store's start (docs/custody.md, "A replaced store"): nothing is sealed and no device is read
  // until it is decided how the chain starts (bounded by custody.empty_store_wait_ms). io thread.
  enum class Sealing { waiting, starting, started };
  Sealing sealing = Sealing::started;
  std::optional<std::string> deferred_shutdown;  // a signal that came before sealing started
  nlohmann::json start_details;                  // the `start` audit record's details

  // Start-up steps of Daemon::run(), in this order, and their helpers (daemon.cpp).
  void open_stores();
  void start_control();
  ChainHead start_pipeline();  // the chain head the store opened at
  nlohmann::json create_adapters();
  void start_custody(bool await_origin);
  void start_sealing(bool empty_store, const std::optional<store::CustodyState>& origin);
  void wait_for_stop_signal();
  void finish_run();
  void on_committed(std::uint64_t last_seq, std::vector<forwarder::CommittedRecord> records);
  CustodyHost custody_host();
  UploaderHost uploader_host();

  // Sealing and shutdown (daemon.cpp).
  void begin_sealing(std::optional<store::CustodyState> receipt, std::string why);
  void seal_first_records(std::optional<store::CustodyState> continued, std::string why);
  void storage_tick();
  void log_config_warnings() const;
  void shutdown(const std::string& why);

  // Status for checkpointctl, MQTT, /metrics and /healthz (daemon_status.cpp).
  nlohmann::json status_snapshot() const;
  std::optional<std::string> unhealthy_reason() const;
  void start_metrics();

  // SIGHUP (daemon_reload.cpp).
  void wait_for_reload_signal();
  void reload();
  void refuse_reload(const std::optional<config::Config>& next, const ReloadPlan& plan,
                     const std::string& error, UnixMs now);

  // Key rotation (daemon_key_rotation.cpp).
  void finish_interrupted_rotation();
  void rotate_key(std::function<void(nlohmann::json)> reply);
};

}  // namespace cpd::app
