// Daemon status: the snapshot behind checkpointctl status, the MQTT status topic and /metrics; /healthz.
#include <chrono>

#include "daemon/app/daemon_impl.h"
#include "daemon/log/log.h"
#include "daemon/metrics/daemon_metrics.h"

namespace cpd::app {

using nlohmann::json;

// /healthz: 503 with the reason when the gateway cannot do its job (records cannot be committed, or it
// is stopping). A broker that is away is not unhealthy: records wait in the outbox.
std::optional<std::string> Daemon::Impl::unhealthy_reason() const {
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

void Daemon::Impl::start_metrics() {
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
    log::notice(
        "metrics", "",
        "serving /metrics and /healthz on http://" + cfg.metrics.host + ":" + std::to_string(server->port()));
    metrics_server = std::move(server);
  } else {
    log::error("metrics", "",
               "no metrics endpoint on " + cfg.metrics.host + ":" + std::to_string(cfg.metrics.port) +
                   " (evidence collection goes on): " + st.message());
  }
}

json Daemon::Impl::status_snapshot() const {
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
  json s = {
      {"backlog", stats.count},
      {"devices", devices},
      {"broker", forwarder->status()},
      {"storage", storage ? storage->status() : json::object()},
      {"time_ms", clock.now_ms()},
      {"version", CPD_VERSION},
      {"config_sha256", cfg.sha256},
      {"uptime_s",
       std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started).count()},
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

}  // namespace cpd::app
