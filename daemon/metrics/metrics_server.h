// MetricsServer: plain HTTP/1.1 on a local address for the Prometheus scraper (/metrics) and liveness checks
// (/healthz), running on the daemon's io_context. Bounded in header size, connections and time.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "daemon/core/status.h"

namespace cpd::metrics {

namespace detail {
struct MetricsServerState;  // shared with the connections, so it outlives the server object if they do
}  // namespace detail

struct MetricsServerOptions {
  std::string host = "127.0.0.1";  // numeric IPv4 or IPv6 address
  std::uint16_t port = 9464;       // 0: an ephemeral port, see MetricsServer::port()
  // At the limit a new connection closes the one waiting longest for its request (or, if every one is being
  // answered, one of those): a liveness probe is answered however many slow connections are held.
  std::size_t max_connections = 16;
  std::size_t header_limit = 8192;  // request line + headers; larger: 431 and close
  std::size_t body_limit = 4096;    // scrapers send no body; a larger one: 413 and close
  // A request must arrive whole within this (so a slow sender cannot hold a slot); also the idle time
  // allowed between keep-alive requests, and the time a response may take to be written.
  std::chrono::milliseconds read_timeout{10000};
};

class MetricsServer {
 public:
  using BodyProvider = std::function<std::string()>;
  // nullopt: healthy (200 "ok"); a reason: 503 with the reason as body.
  using HealthProvider = std::function<std::optional<std::string>()>;

  // The providers are called on the io_context's threads (one connection's strand at a time; with several
  // io threads, two connections may call them at once), and never after stop().
  MetricsServer(boost::asio::io_context& io, MetricsServerOptions options, BodyProvider metrics,
                HealthProvider unhealthy_reason);
  ~MetricsServer();  // stop()s
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds and listens, then accepts on the io_context. A bad address or a port in use is a failed Status
  // (e.g. "metrics: cannot bind 127.0.0.1:9464: Address already in use"), never an exception: the daemon logs
  // it and keeps collecting evidence without metrics.
  Status start();
  // The bound port after a successful start() (the chosen one for port 0); 0 before.
  std::uint16_t port() const;
  // Connections closed to make room for a new one at max_connections (thread-safe).
  std::uint64_t evicted_connections() const;
  // Closes the listener and every connection; pending operations finish with operation_aborted on the
  // io_context. Safe to call more than once and from any thread.
  void stop();

 private:
  std::shared_ptr<detail::MetricsServerState> state_;
};

}  // namespace cpd::metrics
