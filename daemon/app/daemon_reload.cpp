// Daemon reload: SIGHUP re-reads the config file and applies it, or refuses it as a whole.
#include <algorithm>
#include <fstream>
#include <sstream>

#include "adapters/registry.h"
#include "daemon/app/daemon_impl.h"
#include "daemon/config/config.h"
#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::app {

using nlohmann::json;

namespace {

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

void Daemon::Impl::wait_for_reload_signal() {
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
void Daemon::Impl::reload() {
  systemd.send_reloading(cfg.source);
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
    refuse_reload(next, plan, error, now);
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
  systemd.resend_status();
  systemd.send_ready();
}

// The running config stays; the reload_refused audit record says why, with the file's hash (and the plan
// when the file loaded).
void Daemon::Impl::refuse_reload(const std::optional<config::Config>& next, const ReloadPlan& plan,
                                 const std::string& error, UnixMs now) {
  log::error("daemon", "",
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
  systemd.send_ready();
}

}  // namespace cpd::app
