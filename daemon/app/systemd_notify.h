// SystemdNotifier: what the daemon tells systemd (sd_notify): READY, RELOADING, STOPPING, and from a timer
// on the event loop the watchdog heartbeat and the STATUS= line (built by systemd_status_line).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/adapter.h"
#include "daemon/app/store_worker.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/mqtt_forwarder.h"

namespace cpd::app {

// One line for systemd's STATUS=: "3/3 devices connected, backlog 0, broker connected, 120 records".
std::string systemd_status_line(const std::vector<std::unique_ptr<adapters::Adapter>>& adapters,
                                const StoreWorker& worker, const forwarder::MqttForwarder& forwarder,
                                const WallClock& clock);

// While it lives (a long step before READY=1: the store's integrity check reads the whole store), tells
// systemd every 30 s to extend the start timeout by 90 s, with `what` as STATUS=. Without it a store larger
// than TimeoutStartSec can read made systemd kill every start, and restart it into the same check, for ever.
class StartupKeepAlive {
 public:
  explicit StartupKeepAlive(std::string what);
  ~StartupKeepAlive();
  StartupKeepAlive(const StartupKeepAlive&) = delete;
  StartupKeepAlive& operator=(const StartupKeepAlive&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

class SystemdNotifier {
 public:
  explicit SystemdNotifier(boost::asio::io_context& io) : timer_(io) {}

  // Reads systemd's WatchdogSec, says READY=1 and starts the heartbeat; `status_line` is asked for the
  // STATUS= line at each beat (on the io thread).
  void start(std::function<std::string()> status_line);
  // No further heartbeat (shutdown); a beat already due still goes out, without re-arming.
  void stop_heartbeat();

  void send_ready();
  void send_reloading(const std::string& config_source);
  void send_stopping();
  // The next heartbeat sends STATUS= even if the line did not change (after a reload).
  void resend_status() { last_status_line_.clear(); }

 private:
  void tick();

  boost::asio::steady_timer timer_;
  std::uint64_t watchdog_usec_ = 0;  // systemd's WatchdogSec (WATCHDOG_USEC); 0 = no watchdog
  std::string last_status_line_;
  std::chrono::steady_clock::time_point last_status_sent_{};
  std::function<std::string()> status_line_;
  bool stopped_ = false;
};

}  // namespace cpd::app
