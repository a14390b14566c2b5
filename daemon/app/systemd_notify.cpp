// SystemdNotifier and the STATUS= line: the daemon's sd_notify messages.
#include "daemon/app/systemd_notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace cpd::app {

namespace {

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace

StartupKeepAlive::StartupKeepAlive(std::string what) {
  thread_ = std::thread([this, message = "EXTEND_TIMEOUT_USEC=90000000\nSTATUS=" + what] {
    std::unique_lock lock(mutex_);
    do {
      sd_notify(0, message.c_str());
    } while (!cv_.wait_for(lock, std::chrono::seconds(30), [this] { return done_; }));
  });
}

StartupKeepAlive::~StartupKeepAlive() {
  {
    std::lock_guard lock(mutex_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string systemd_status_line(const std::vector<std::unique_ptr<adapters::Adapter>>& adapters,
                                const StoreWorker& worker, const forwarder::MqttForwarder& forwarder,
                                const WallClock& clock) {
  std::size_t up = 0;
  std::string down;
  for (const auto& a : adapters) {
    const nlohmann::json st = a->status();
    if (st.value("state", "") == "connected") {
      ++up;
    } else if (down.size() < 80) {
      down += (down.empty() ? "" : ", ") + a->device_id() + " " + st.value("state", "?");
    }
  }
  const auto stats = worker.outbox_stats();
  const nlohmann::json broker = forwarder.status();
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
  line += ", " + std::to_string(worker.committed_records()) + " records sealed";
  return line;
}

void SystemdNotifier::start(std::function<std::string()> status_line) {
  status_line_ = std::move(status_line);
  if (sd_watchdog_enabled(0, &watchdog_usec_) <= 0) {
    watchdog_usec_ = 0;
  }
  send_ready();
  tick();
}

void SystemdNotifier::stop_heartbeat() {
  stopped_ = true;
  timer_.cancel();
}

void SystemdNotifier::send_ready() {
  sd_notify(0, "READY=1");
}

void SystemdNotifier::send_reloading(const std::string& config_source) {
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
             static_cast<unsigned long long>(monotonic_usec()), config_source.c_str());
}

void SystemdNotifier::send_stopping() {
  sd_notify(0, "STOPPING=1");
}

// The loop's heartbeat to systemd: WATCHDOG=1 comes from this timer on the event loop itself, so a hung
// loop stops it and systemd restarts the service. STATUS= goes with it when it changed (or every 10 s).
void SystemdNotifier::tick() {
  std::string message;
  if (watchdog_usec_ > 0) {
    message = "WATCHDOG=1\n";
  }
  const auto now = std::chrono::steady_clock::now();
  std::string line = status_line_();
  if (line != last_status_line_ || now - last_status_sent_ >= std::chrono::seconds(10)) {
    message += "STATUS=" + line;
    last_status_line_ = std::move(line);
    last_status_sent_ = now;
  }
  if (!message.empty()) {
    sd_notify(0, message.c_str());
  }
  if (stopped_) {
    return;
  }
  auto period = std::chrono::microseconds(watchdog_usec_ / 2);
  if (watchdog_usec_ == 0 || period > std::chrono::seconds(2)) {
    period = std::chrono::seconds(2);
  }
  timer_.expires_after(period);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) {
      tick();
    }
  });
}

}  // namespace cpd::app
