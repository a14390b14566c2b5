// One short HTTP/1.1 request and its answer on a connection of its own (Connection: close), for the
// device adapters' control requests: the camera's ISAPI GETs, the dock's status, listing and ack. Resolve,
// connect, write and read share one deadline: the resolve is bounded by a timer, the rest by
// beast::tcp_stream's expiry. Everything runs on the adapter's strand.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/time.h"

namespace cpd::adapters {

// The answer, or why there is none.
struct HttpResult {
  boost::system::error_code ec;  // set on a transport failure (asio::error::timed_out past the deadline)
  std::string what;              // the transport failure ("connect failed: …"), empty on an HTTP answer
  unsigned status = 0;
  std::vector<std::string> www_authenticate;  // every WWW-Authenticate field of the answer, in order
  std::string body;
  UnixMs started_ms = 0;   // the exchange began (before resolve and connect)
  UnixMs sent_ms = 0;      // connected, the request about to be written
  UnixMs received_ms = 0;  // the whole answer read
};

// Every WWW-Authenticate field of a response, in order.
std::vector<std::string> www_authenticate_of(const boost::beast::http::fields& fields);

class HttpExchanges {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  using Request = boost::beast::http::request<boost::beast::http::string_body>;

  HttpExchanges(Strand strand, std::function<UnixMs()> now_ms);

  // Sends `request` to host:port and reads the answer (at most `body_limit` bytes of body); `done` is
  // called once, on the strand, with the answer or the failure. The request is sent as it is, with
  // Connection: close.
  void start(const std::string& host, std::uint16_t port, Request request, std::uint64_t body_limit,
             std::chrono::milliseconds timeout, std::function<void(HttpResult)> done);

  // Closes every exchange in flight: each one's `done` is still called, with the failure (the caller's
  // `done` decides whether that still matters).
  void abort_all();

  std::size_t in_flight() const;

 private:
  struct Exchange;
  struct State;
  static void read_answer(const std::shared_ptr<State>& state, const std::shared_ptr<Exchange>& x);
  std::shared_ptr<State> state_;
};

}  // namespace cpd::adapters
