// Plain loopback clients for the simulator tests: Beast HTTP requests, and a raw reader of the camera's
// chunked multipart alert stream that checks the framing byte for byte (independent of any adapter).
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cpd::sim::testing {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

inline http::response<http::string_body> http_get(std::uint16_t port, const std::string& target,
                                                  const std::string& authorization = {}) {
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) {
    req.set(http::field::authorization, authorization);
  }
  http::write(s, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(s, buf, res);
  return res;
}

struct Part {
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// Reads the response head, then de-chunks the body and splits it into parts using Content-Length only.
// Any framing error fails the read (error_ is set) instead of guessing.
class AlertStreamClient {
 public:
  AlertStreamClient(std::uint16_t port, const std::string& authorization) : socket_(io_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    const std::string req =
        "GET /ISAPI/Event/notification/alertStream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " +
        authorization + "\r\n\r\n";
    asio::write(socket_, asio::buffer(req));
    while (raw_.find("\r\n\r\n") == std::string::npos) {
      if (!fill()) {
        error_ = "no response head";
        return;
      }
    }
    const auto end = raw_.find("\r\n\r\n");
    head_ = raw_.substr(0, end + 2);
    raw_.erase(0, end + 4);
  }

  const std::string& head() const { return head_; }
  const std::string& error() const { return error_; }

  // The next part, or nullopt at EOF / on a framing error.
  std::optional<Part> next(const std::string& boundary) {
    const std::string delim = "--" + boundary + "\r\n";
    if (!need(delim.size())) {
      return std::nullopt;
    }
    if (body_.compare(0, delim.size(), delim) != 0) {
      error_ = "part does not start with the boundary: " + body_.substr(0, 40);
      return std::nullopt;
    }
    std::size_t end = std::string::npos;
    while ((end = body_.find("\r\n\r\n")) == std::string::npos) {
      if (!more()) {
        return std::nullopt;
      }
    }
    Part p;
    std::size_t at = delim.size();
    while (at < end + 2) {
      const auto eol = body_.find("\r\n", at);
      const std::string line = body_.substr(at, eol - at);
      const auto colon = line.find(':');
      if (colon == std::string::npos) {
        error_ = "bad part header line: " + line;
        return std::nullopt;
      }
      std::string name = line.substr(0, colon);
      for (auto& c : name) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      p.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
      at = eol + 2;
    }
    if (!p.headers.contains("content-length")) {
      error_ = "part without Content-Length";
      return std::nullopt;
    }
    const std::size_t n = std::stoul(p.headers["content-length"]);
    const std::size_t total = end + 4 + n + 2;
    if (!need(total)) {
      return std::nullopt;
    }
    p.body = body_.substr(end + 4, n);
    if (body_.compare(end + 4 + n, 2, "\r\n") != 0) {
      error_ = "part body is not followed by CRLF (Content-Length wrong)";
      return std::nullopt;
    }
    body_.erase(0, total);
    return p;
  }

  bool eof() const { return eof_; }

 private:
  bool fill() {
    std::array<char, 65536> buf{};
    boost::system::error_code ec;
    const std::size_t n = socket_.read_some(asio::buffer(buf), ec);
    if (ec) {
      eof_ = true;
      return false;
    }
    raw_.append(buf.data(), n);
    return true;
  }

  // De-chunks whatever whole chunks are in raw_; reads more when none is complete.
  bool more() {
    for (;;) {
      const auto eol = raw_.find("\r\n");
      if (eol != std::string::npos) {
        const std::size_t size = std::stoul(raw_.substr(0, eol), nullptr, 16);
        if (raw_.size() >= eol + 2 + size + 2) {
          if (raw_.compare(eol + 2 + size, 2, "\r\n") != 0) {
            error_ = "chunk not followed by CRLF";
            return false;
          }
          body_.append(raw_, eol + 2, size);
          raw_.erase(0, eol + 2 + size + 2);
          return true;
        }
      }
      if (!fill()) {
        return false;
      }
    }
  }

  bool need(std::size_t n) {
    while (body_.size() < n) {
      if (!more()) {
        return false;
      }
    }
    return true;
  }

  asio::io_context io_;
  tcp::socket socket_;
  std::string raw_;   // chunked bytes not yet decoded
  std::string body_;  // decoded multipart bytes
  std::string head_;
  std::string error_;
  bool eof_ = false;
};

// Pulls `<name>...</name>` text out of an XML document (tests only need flat, unique elements).
inline std::string xml_text(const std::string& xml, const std::string& name) {
  const auto a = xml.find("<" + name + ">");
  const auto b = xml.find("</" + name + ">");
  if (a == std::string::npos || b == std::string::npos || b < a) {
    return {};
  }
  return xml.substr(a + name.size() + 2, b - a - name.size() - 2);
}

}  // namespace cpd::sim::testing
