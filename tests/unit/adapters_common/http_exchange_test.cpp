// HttpExchanges against a loopback listener the test drives by hand: an answer (status, body, every
// WWW-Authenticate), a peer that never answers (the deadline: "request timed out"), a refused connection,
// a body over the limit, and abort_all (each exchange still reports, with the failure).
#include "adapters/common/http_exchange.h"

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <optional>
#include <string>

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

class HttpExchangeTest : public ::testing::Test {
 protected:
  HttpExchangeTest()
      : strand_(asio::make_strand(io_)), acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {}

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  // Accepts one connection, reads the request head, then writes `answer` (or nothing when empty) and keeps
  // the connection open until the test ends.
  void serve_once(std::string answer) {
    acceptor_.async_accept(
        [this, answer = std::move(answer)](const boost::system::error_code& ec, tcp::socket s) {
          if (ec) {
            return;
          }
          peer_.emplace(std::move(s));
          asio::async_read_until(*peer_, request_, "\r\n\r\n",
                                 [this, answer](const boost::system::error_code& rec, std::size_t) {
                                   if (rec || answer.empty()) {
                                     return;
                                   }
                                   asio::async_write(*peer_, asio::buffer(answer),
                                                     [](const boost::system::error_code&, std::size_t) {});
                                 });
        });
  }

  HttpResult run(HttpExchanges& x, std::uint16_t to_port, std::chrono::milliseconds timeout,
                 std::uint64_t limit = 1 << 20) {
    std::optional<HttpResult> got;
    HttpExchanges::Request req{http::verb::get, "/ISAPI/System/time", 11};
    req.set(http::field::host, "127.0.0.1");
    x.start("127.0.0.1", to_port, std::move(req), limit, timeout, [&](HttpResult r) { got = std::move(r); });
    io_.run_for(std::chrono::seconds(10));
    EXPECT_TRUE(got.has_value());
    EXPECT_EQ(x.in_flight(), 0u);
    return got.value_or(HttpResult{});
  }

  asio::io_context io_;
  HttpExchanges::Strand strand_;
  tcp::acceptor acceptor_;
  std::optional<tcp::socket> peer_;
  asio::streambuf request_;
  UnixMs clock_ = 1000;
};

TEST_F(HttpExchangeTest, AnAnswerBringsStatusBodyAndEveryChallenge) {
  serve_once(
      "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a\"\r\nWWW-Authenticate: Basic "
      "realm=\"b\"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!");
  HttpExchanges x(strand_, [this] { return clock_++; });
  const HttpResult r = run(x, port(), std::chrono::milliseconds(5000));
  EXPECT_FALSE(r.ec) << r.what;
  EXPECT_EQ(r.what, "");
  EXPECT_EQ(r.status, 401u);
  EXPECT_EQ(r.body, "nope!");
  EXPECT_EQ(r.www_authenticate, (std::vector<std::string>{"Digest realm=\"a\"", "Basic realm=\"b\""}));
  EXPECT_LT(r.started_ms, r.sent_ms);
  EXPECT_LT(r.sent_ms, r.received_ms);
  std::string head(asio::buffers_begin(request_.data()), asio::buffers_end(request_.data()));
  EXPECT_NE(head.find("GET /ISAPI/System/time HTTP/1.1\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Connection: close\r\n"), std::string::npos) << head;
}

TEST_F(HttpExchangeTest, APeerThatNeverAnswersEndsAtTheDeadline) {
  serve_once("");  // reads the request, says nothing
  HttpExchanges x(strand_, [this] { return clock_++; });
  const auto t0 = std::chrono::steady_clock::now();
  const HttpResult r = run(x, port(), std::chrono::milliseconds(300));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.ec, asio::error::timed_out);
  EXPECT_EQ(r.what, "request timed out");
  EXPECT_GE(took, std::chrono::milliseconds(250));
  EXPECT_LT(took, std::chrono::seconds(5));
}

TEST_F(HttpExchangeTest, ARefusedConnectionIsAConnectFailure) {
  const std::uint16_t closed = port();
  acceptor_.close();
  HttpExchanges x(strand_, [this] { return clock_++; });
  const HttpResult r = run(x, closed, std::chrono::milliseconds(5000));
  EXPECT_EQ(r.ec, asio::error::connection_refused);
  EXPECT_EQ(r.what.rfind("connect failed: ", 0), 0u) << r.what;
}

TEST_F(HttpExchangeTest, ABodyOverTheLimitIsAReadFailure) {
  serve_once("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'));
  HttpExchanges x(strand_, [this] { return clock_++; });
  const HttpResult r = run(x, port(), std::chrono::milliseconds(5000), 10);
  EXPECT_EQ(r.ec, http::error::body_limit) << r.status << " " << r.body.size() << " " << r.what;
  EXPECT_EQ(r.what.rfind("read failed: ", 0), 0u) << r.what;
}

TEST_F(HttpExchangeTest, AHugeContentLengthIsRefusedBeforeAnyBodyIsReserved) {
  // Head and the first body bytes in one write: Beast alone would reserve 50 GB (std::bad_alloc).
  serve_once("HTTP/1.1 200 OK\r\nContent-Length: 50000000000\r\n\r\nxxxxxxxx");
  HttpExchanges x(strand_, [this] { return clock_++; });
  const HttpResult r = run(x, port(), std::chrono::milliseconds(5000), 1 << 20);
  EXPECT_EQ(r.ec, http::error::body_limit);
  EXPECT_EQ(r.what.rfind("read failed: ", 0), 0u) << r.what;
}

TEST_F(HttpExchangeTest, AChunkedBodyOverTheLimitIsAReadFailure) {
  serve_once(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n");
  HttpExchanges x(strand_, [this] { return clock_++; });
  const HttpResult r = run(x, port(), std::chrono::milliseconds(5000), 10);
  EXPECT_EQ(r.ec, http::error::body_limit);
}

TEST_F(HttpExchangeTest, AbortAllEndsEveryExchangeWithAFailure) {
  serve_once("");
  HttpExchanges x(strand_, [this] { return clock_++; });
  std::optional<HttpResult> got;
  HttpExchanges::Request req{http::verb::get, "/", 11};
  x.start("127.0.0.1", port(), std::move(req), 1024, std::chrono::milliseconds(5000),
          [&](HttpResult r) { got = std::move(r); });
  EXPECT_EQ(x.in_flight(), 1u);
  asio::steady_timer t(io_, std::chrono::milliseconds(100));
  t.async_wait([&](const boost::system::error_code&) { asio::post(strand_, [&] { x.abort_all(); }); });
  io_.run_for(std::chrono::seconds(3));
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->ec);
  EXPECT_NE(got->ec, asio::error::timed_out);
  EXPECT_EQ(x.in_flight(), 0u);
}

}  // namespace
}  // namespace cpd::adapters
