// HttpExchanges: resolve under a timer, then connect, write and read on a beast::tcp_stream that expires at
// the same deadline. A finished exchange leaves the in-flight list before its handler runs.
#include "adapters/common/http_exchange.h"

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <utility>

namespace cpd::adapters {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

std::vector<std::string> www_authenticate_of(const http::fields& fields) {
  std::vector<std::string> out;
  for (auto it = fields.find(http::field::www_authenticate);
       it != fields.end() && it->name() == http::field::www_authenticate; ++it) {
    out.emplace_back(it->value());
  }
  return out;
}

struct HttpExchanges::Exchange {
  explicit Exchange(Strand& s) : resolver(s), stream(s), resolve_timer(s) {}
  void abort() {
    resolver.cancel();
    resolve_timer.cancel();
    stream.close();
  }
  tcp::resolver resolver;
  beast::tcp_stream stream;
  asio::steady_timer resolve_timer;
  std::chrono::steady_clock::time_point deadline;
  bool resolve_timed_out = false;
  std::uint64_t body_limit = 0;
  beast::flat_buffer buffer;
  Request request;
  http::response_parser<http::string_body> parser;
  HttpResult result;
  std::function<void(HttpResult)> done;
  bool finished = false;
};

struct HttpExchanges::State {
  Strand strand;
  std::function<UnixMs()> now_ms;
  std::vector<std::shared_ptr<Exchange>> in_flight;

  void finish(const std::shared_ptr<Exchange>& x, HttpResult r) {
    if (x->finished) {
      return;
    }
    x->finished = true;
    x->abort();
    std::erase(in_flight, x);
    x->done(std::move(r));
  }

  static HttpResult failure(const error_code& ec, const char* step) {
    HttpResult r;
    if (ec == beast::error::timeout) {
      r.ec = asio::error::timed_out;
      r.what = "request timed out";
    } else {
      r.ec = ec;
      r.what = std::string(step) + " failed: " + ec.message();
    }
    return r;
  }
};

HttpExchanges::HttpExchanges(Strand strand, std::function<UnixMs()> now_ms)
    : state_(std::make_shared<State>(State{std::move(strand), std::move(now_ms), {}})) {}

std::size_t HttpExchanges::in_flight() const {
  return state_->in_flight.size();
}

void HttpExchanges::abort_all() {
  // Closed here; each handler then completes with operation_aborted and finishes its exchange.
  for (const auto& x : std::vector<std::shared_ptr<Exchange>>(state_->in_flight)) {
    x->abort();
  }
}

void HttpExchanges::start(const std::string& host, std::uint16_t port, Request request,
                          std::uint64_t body_limit, std::chrono::milliseconds timeout,
                          std::function<void(HttpResult)> done) {
  const auto state = state_;
  auto x = std::make_shared<Exchange>(state->strand);
  x->request = std::move(request);
  x->request.keep_alive(false);
  x->parser.body_limit(body_limit);  // chunked bodies and bodies to EOF: checked as they arrive
  x->body_limit = body_limit;
  x->done = std::move(done);
  x->result.started_ms = state->now_ms();
  x->deadline = std::chrono::steady_clock::now() + timeout;
  state->in_flight.push_back(x);

  // The resolve has no stream yet: a timer bounds it (a name server that does not answer).
  x->resolve_timer.expires_at(x->deadline);
  x->resolve_timer.async_wait([x](const error_code& ec) {
    if (!ec) {
      x->resolve_timed_out = true;
      x->resolver.cancel();
    }
  });
  x->resolver.async_resolve(
      host, std::to_string(port),
      [state, x](const error_code& ec, const tcp::resolver::results_type& results) {
        x->resolve_timer.cancel();
        if (ec) {
          state->finish(x, State::failure(x->resolve_timed_out ? beast::error::timeout : ec, "resolve"));
          return;
        }
        x->stream.expires_at(x->deadline);
        x->stream.async_connect(results, [state, x](const error_code& e, const tcp::endpoint&) {
          if (e) {
            state->finish(x, State::failure(e, "connect"));
            return;
          }
          x->result.sent_ms = state->now_ms();
          http::async_write(x->stream, x->request, [state, x](const error_code& we, std::size_t) {
            if (we) {
              state->finish(x, State::failure(we, "write"));
              return;
            }
            read_answer(state, x);
          });
        });
      });
}

void HttpExchanges::read_answer(const std::shared_ptr<State>& state, const std::shared_ptr<Exchange>& x) {
  // The head first, then the body: Beast 1.74 (Debian 12) loses the body_limit error when the head and body
  // bytes arrive in one read (eager parsing), and its string body reserves the whole Content-Length first,
  // so an answer announcing 50 GB threw std::bad_alloc out of the handler. A Content-Length over the limit is
  // refused here before any body byte is read or reserved.
  http::async_read_header(x->stream, x->buffer, x->parser, [state, x](const error_code& he, std::size_t) {
    if (he) {
      state->finish(x, State::failure(he, "read"));
      return;
    }
    if (const auto length = x->parser.content_length(); length && *length > x->body_limit) {
      state->finish(x, State::failure(http::error::body_limit, "read"));
      return;
    }
    http::async_read(x->stream, x->buffer, x->parser, [state, x](const error_code& re, std::size_t) {
      if (re) {
        state->finish(x, State::failure(re, "read"));
        return;
      }
      HttpResult r = std::move(x->result);
      r.received_ms = state->now_ms();
      auto res = x->parser.release();
      r.status = res.result_int();
      r.www_authenticate = www_authenticate_of(res.base());
      r.body = std::move(res.body());
      state->finish(x, std::move(r));
    });
  });
}

}  // namespace cpd::adapters
