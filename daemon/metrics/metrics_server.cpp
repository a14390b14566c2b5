// MetricsServer: Beast's async server shape (one strand per connection, the acceptor on its own strand).
// At max_connections a new connection closes the one that has waited longest for its request, so slow or
// idle clients holding every slot cannot keep a liveness probe from being answered.
#include "daemon/metrics/metrics_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace cpd::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto kAcceptRetry = std::chrono::milliseconds(100);
constexpr auto kLingerMax = std::chrono::milliseconds(2000);
constexpr std::size_t kLingerBytes = 64 * 1024;

bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

}  // namespace

namespace detail {

class MetricsSession;

struct MetricsServerState : std::enable_shared_from_this<MetricsServerState> {
  MetricsServerState(asio::io_context& io_context, MetricsServerOptions opts, MetricsServer::BodyProvider m,
                     MetricsServer::HealthProvider h)
      : io(io_context),
        options(std::move(opts)),
        metrics(std::move(m)),
        unhealthy(std::move(h)),
        strand(asio::make_strand(io_context)),
        acceptor(strand),
        retry_timer(strand) {}

  void do_accept();
  void on_accept(const beast::error_code& ec, tcp::socket socket);
  void session_ended(MetricsSession* s);
  void stop();

  asio::io_context& io;
  const MetricsServerOptions options;
  const MetricsServer::BodyProvider metrics;
  const MetricsServer::HealthProvider unhealthy;
  asio::strand<asio::io_context::executor_type> strand;
  tcp::acceptor acceptor;  // used on `strand` only (and in start(), before any operation)
  asio::steady_timer retry_timer;
  std::atomic<std::uint16_t> port{0};
  std::atomic<bool> stopped{false};

  std::mutex mutex;  // guards what follows: sessions end on their own strands
  std::unordered_map<MetricsSession*, std::weak_ptr<MetricsSession>> sessions;
  bool started = false;
  std::atomic<std::uint64_t> evicted{0};
};

class MetricsSession : public std::enable_shared_from_this<MetricsSession> {
 public:
  MetricsSession(tcp::socket socket, std::shared_ptr<MetricsServerState> state)
      : stream_(std::move(socket)), state_(std::move(state)) {}

  ~MetricsSession() { state_->session_ended(this); }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // From any thread: the close runs on the connection's strand, pending operations end aborted.
  void close_later() {
    evicting_ = true;
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  // Since when this connection has been waiting for (the rest of) a request; max() while it is answered
  // or already being closed. Read from the acceptor's strand to pick the connection to close at the limit.
  std::int64_t waiting_since() const { return evicting_ ? kNotWaiting : waiting_since_.load(); }
  static constexpr std::int64_t kNotWaiting = std::numeric_limits<std::int64_t>::max();
  bool evicting() const { return evicting_; }

 private:
  void read() {
    if (state_->stopped) {
      close();
      return;
    }
    waiting_since_ = std::chrono::steady_clock::now().time_since_epoch().count();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(state_->options.header_limit));
    parser_->body_limit(state_->options.body_limit);
    stream_.expires_after(state_->options.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(const beast::error_code& ec) {
    waiting_since_ = kNotWaiting;
    if (ec == http::error::header_limit) {
      respond_error(http::status::request_header_fields_too_large, "request header too large\n");
      return;
    }
    if (ec == http::error::body_limit) {
      respond_error(http::status::payload_too_large, "request body too large\n");
      return;
    }
    if (ec && is_parse_error(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message) {
      respond_error(http::status::bad_request, "bad request\n");
      return;
    }
    if (ec) {
      // end of stream, timeout (slow or idle client), reset, or stop(): nothing to answer.
      close();
      return;
    }
    if (state_->stopped) {
      close();
      return;
    }
    respond(parser_->get());
  }

  void respond(const http::request<http::string_body>& req) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(req.keep_alive());
    res->set(http::field::server, "checkpointd");
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    const bool known = target == "/metrics" || target == "/healthz";
    if (!known) {
      res->result(http::status::not_found);
      res->body() = "not found; try /metrics or /healthz\n";
    } else if (req.method() != http::verb::get) {
      res->result(http::status::method_not_allowed);
      res->set(http::field::allow, "GET");
      res->body() = "method not allowed\n";
    } else {
      // A provider failing is our bug, not the client's: 500, and the daemon keeps running.
      try {
        if (target == "/metrics") {
          res->result(http::status::ok);
          res->set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
          res->body() = state_->metrics ? state_->metrics() : std::string();
        } else {
          const auto reason = state_->unhealthy ? state_->unhealthy() : std::nullopt;
          res->result(reason ? http::status::service_unavailable : http::status::ok);
          res->body() = reason ? *reason + "\n" : "ok\n";
        }
      } catch (const std::exception& e) {
        res->result(http::status::internal_server_error);
        res->set(http::field::content_type, "text/plain; charset=utf-8");
        res->body() = std::string("internal error: ") + e.what() + "\n";
      }
    }
    res->prepare_payload();
    write(std::move(res));
  }

  void respond_error(http::status status, std::string body) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "checkpointd");
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    res->keep_alive(false);
    res->body() = std::move(body);
    linger_ = true;
    res->prepare_payload();
    write(std::move(res));
  }

  void write(std::shared_ptr<http::response<http::string_body>> res) {
    stream_.expires_after(state_->options.read_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
      if (!ec && self->linger_) {
        self->linger();
        return;
      }
      if (ec || !res->keep_alive() || self->state_->stopped) {
        self->close();
        return;
      }
      self->read();
    });
  }

  // After an error answer the request may still have unread bytes; closing over them would send a reset that
  // can destroy the answer in the client's buffer. So: FIN first, then read and discard for a bounded while.
  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::min<std::chrono::milliseconds>(state_->options.read_timeout, kLingerMax));
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > kLingerBytes || self->state_->stopped) {
                                self->close();
                                return;
                              }
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool linger_ = false;
  std::array<char, 4096> drain_{};
  std::size_t drained_ = 0;
  std::atomic<std::int64_t> waiting_since_{kNotWaiting};  // steady clock ticks
  std::atomic<bool> evicting_{false};
  std::shared_ptr<MetricsServerState> state_;
};

}  // namespace detail

void detail::MetricsServerState::do_accept() {
  if (stopped) {
    return;
  }
  acceptor.async_accept(asio::make_strand(io),
                        [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
                          self->on_accept(ec, std::move(socket));
                        });
}

void detail::MetricsServerState::on_accept(const beast::error_code& ec, tcp::socket socket) {
  if (stopped || ec == asio::error::operation_aborted) {
    return;
  }
  if (ec) {
    // Out of descriptors and the like: try again shortly rather than spinning on the error.
    retry_timer.expires_after(kAcceptRetry);
    retry_timer.async_wait([self = shared_from_this()](beast::error_code tec) {
      if (!tec) {
        self->do_accept();
      }
    });
    return;
  }
  auto session = std::make_shared<MetricsSession>(std::move(socket), shared_from_this());
  std::shared_ptr<MetricsSession> victim;
  {
    std::lock_guard lock(mutex);
    // At the limit the connection waiting longest for its request makes room (40 slow connections once kept
    // /healthz unanswered for more than 15 s). Connections being answered are left to finish; if every one
    // is, the oldest still goes, so a new connection is always served at once.
    std::size_t live = 0;
    std::int64_t oldest = MetricsSession::kNotWaiting;
    std::shared_ptr<MetricsSession> any;
    for (auto& [ptr, weak] : sessions) {
      auto s = weak.lock();
      const std::int64_t since = s ? s->waiting_since() : MetricsSession::kNotWaiting;
      if (!s || (since == MetricsSession::kNotWaiting && s->evicting())) {
        continue;  // already closing
      }
      ++live;
      if (since < oldest) {
        oldest = since;
        victim = s;
      }
      if (!any) {
        any = std::move(s);
      }
    }
    if (live < std::max<std::size_t>(options.max_connections, 1)) {
      victim.reset();
    } else if (!victim) {
      victim = std::move(any);
    }
    sessions.emplace(session.get(), session);
  }
  if (victim) {
    evicted.fetch_add(1);
    victim->close_later();
  }
  session->start();
  do_accept();
}

void detail::MetricsServerState::session_ended(MetricsSession* s) {
  std::lock_guard lock(mutex);
  sessions.erase(s);
}

void detail::MetricsServerState::stop() {
  if (stopped.exchange(true)) {
    return;
  }
  std::vector<std::shared_ptr<MetricsSession>> live;
  {
    std::lock_guard lock(mutex);
    for (auto& [ptr, weak] : sessions) {
      if (auto s = weak.lock()) {
        live.push_back(std::move(s));
      }
    }
  }
  asio::post(strand, [self = shared_from_this()] {
    beast::error_code ignored;
    self->acceptor.close(ignored);
    self->retry_timer.cancel();
  });
  for (auto& s : live) {
    s->close_later();
  }
}

MetricsServer::MetricsServer(asio::io_context& io, MetricsServerOptions options, BodyProvider metrics,
                             HealthProvider unhealthy_reason)
    : state_(std::make_shared<detail::MetricsServerState>(io, std::move(options), std::move(metrics),
                                                          std::move(unhealthy_reason))) {}

MetricsServer::~MetricsServer() {
  stop();
}

Status MetricsServer::start() {
  detail::MetricsServerState& s = *state_;
  if (s.started || s.stopped) {
    return Status::fail("metrics: server already started or stopped");
  }
  const std::string where = s.options.host + ":" + std::to_string(s.options.port);
  beast::error_code ec;
  const auto address = asio::ip::make_address(s.options.host, ec);
  if (ec) {
    return Status::fail("metrics: host '" + s.options.host + "' is not a numeric IP address");
  }
  const tcp::endpoint endpoint(address, s.options.port);
  auto fail = [&](const std::string& what) {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    return Status::fail("metrics: cannot " + what + " " + where + ": " + ec.message());
  };
  s.acceptor.open(endpoint.protocol(), ec);
  if (ec) {
    return fail("open a socket for");
  }
  s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) {
    return fail("set SO_REUSEADDR on");
  }
  s.acceptor.bind(endpoint, ec);
  if (ec) {
    return fail("bind");
  }
  s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail("listen on");
  }
  s.port = s.acceptor.local_endpoint(ec).port();
  s.started = true;
  asio::post(s.strand, [st = state_] { st->do_accept(); });
  return Status::ok();
}

std::uint16_t MetricsServer::port() const {
  return state_->port;
}

std::uint64_t MetricsServer::evicted_connections() const {
  return state_->evicted.load();
}

void MetricsServer::stop() {
  state_->stop();
}

}  // namespace cpd::metrics
