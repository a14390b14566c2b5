// Device probes for `checkpointctl devices test`: one synchronous conversation per device, on a private
// io_context with a deadline per step, reusing the adapters' pure parsers and Digest authentication.
// Every failure becomes a ProbeReport with a plain explanation; nothing here throws for device input.
#include "tools/checkpointctl/device_probe.h"

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/serial_port.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <utility>
#include <variant>

#include "adapters/camera/http_auth.h"
#include "adapters/camera/isapi_xml.h"
#include "adapters/common/offset_clock.h"
#include "adapters/radar/radar_frame_parser.h"
#include "adapters/recorder/dock_protocol.h"
#include "daemon/core/time.h"

namespace cpd::ctl {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxBodyBytes = 1024 * 1024;  // deviceInfo, time and status are a few KiB
constexpr const char* kUserAgent = "checkpointctl/" CPD_VERSION;

UnixMs now_ms() {
  return SystemWallClock().now_ms();
}

struct Failure {
  ProbeProblem problem = ProbeProblem::kNone;
  std::string text;
};

// Bytes from a device, shown safely: printable ASCII as is, the rest as \xNN, at most `max` bytes.
std::string shown_bytes(std::string_view bytes, std::size_t max = 120) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  if (bytes.size() > max) {
    out += "...";
  }
  return "'" + out + "'";
}

// A TLS record starts with its content type (0x15 alert, 0x16 handshake) and major version 3.
bool looks_like_tls(std::string_view bytes) {
  return bytes.size() >= 2 && (bytes[0] == '\x15' || bytes[0] == '\x16') && bytes[1] == '\x03';
}

std::string signed_ms(std::int64_t ms) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%+.3f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

std::string iso_utc(UnixMs ms) {
  const auto t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

// Runs the io_context until its work is done or `deadline`; on the deadline `cancel` aborts what is
// pending and the aborted handlers are drained. false: the deadline came first.
bool run_until(asio::io_context& io, Clock::time_point deadline, const std::function<void()>& cancel) {
  io.restart();
  io.run_until(deadline);
  if (io.stopped()) {
    return true;
  }
  cancel();
  io.restart();
  io.run();
  return false;
}

std::string seconds_text(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g s", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

Failure resolve_failure(const error_code& ec, const std::string& host) {
  if (ec == asio::error::host_not_found || ec == asio::error::no_data) {
    return {ProbeProblem::kDns, "DNS name not found: '" + host +
                                    "' does not resolve to an address (typo in the host name, or the name is "
                                    "not in DNS/hosts; an IP address avoids DNS)"};
  }
  if (ec == asio::error::host_not_found_try_again) {
    return {ProbeProblem::kDns, "DNS lookup of '" + host +
                                    "' failed for now (no DNS server answered): check this host's DNS "
                                    "settings and network, or use an IP address"};
  }
  return {ProbeProblem::kDns, "DNS lookup of '" + host + "' failed: " + ec.message()};
}

Failure connect_failure(const error_code& ec, const std::string& address) {
  if (ec == asio::error::connection_refused) {
    return {ProbeProblem::kRefused, "connection refused by " + address +
                                        ": the host is up but nothing is listening on that port (device "
                                        "service not running, or the wrong port in the config)"};
  }
  if (ec == asio::error::host_unreachable || ec == asio::error::network_unreachable) {
    return {ProbeProblem::kUnreachable, "no route to " + address + " (" + ec.message() +
                                            "): wrong address or subnet, or this host's network is down"};
  }
  return {ProbeProblem::kUnexpectedReply, "cannot connect to " + address + ": " + ec.message()};
}

Failure timeout_failure(const std::string& address, const std::string& step, std::chrono::milliseconds t) {
  return {ProbeProblem::kTimeout, "timeout: no answer from " + address + " within " + seconds_text(t) + " (" +
                                      step +
                                      "): the device is off or unreachable, or a firewall drops the "
                                      "packets"};
}

// Resolves and connects `socket`; nullopt on success.
std::optional<Failure> connect_tcp(asio::io_context& io, tcp::socket& socket, const std::string& host,
                                   std::uint16_t port, std::chrono::milliseconds timeout) {
  const std::string address = host + ":" + std::to_string(port);
  tcp::resolver resolver(io);
  error_code rec;
  tcp::resolver::results_type results;
  resolver.async_resolve(host, std::to_string(port), [&](const error_code& e, tcp::resolver::results_type r) {
    rec = e;
    results = std::move(r);
  });
  if (!run_until(io, Clock::now() + timeout, [&] { resolver.cancel(); })) {
    return Failure{ProbeProblem::kDns, "DNS lookup of '" + host + "' got no answer within " +
                                           seconds_text(timeout) + ": check this host's DNS settings"};
  }
  if (rec) {
    return resolve_failure(rec, host);
  }
  error_code cec;
  asio::async_connect(socket, results, [&](const error_code& e, const tcp::endpoint&) { cec = e; });
  if (!run_until(io, Clock::now() + timeout, [&] {
        error_code ignored;
        socket.close(ignored);
      })) {
    return timeout_failure(address, "connecting", timeout);
  }
  if (cec) {
    return connect_failure(cec, address);
  }
  return std::nullopt;
}

// ---- HTTP ----

struct HttpAnswer {
  int status = 0;
  std::string reason;
  std::vector<std::string> www_authenticate;
  std::string body;
  UnixMs sent_ms = 0;      // gateway time the request was sent
  UnixMs received_ms = 0;  // and the answer read
};

using HttpOutcome = std::variant<HttpAnswer, Failure>;

// Why a GET got no usable HTTP answer (nothing in time, a TLS port, a closed connection, a body over the
// bound, not HTTP); nullopt when the answer was read.
std::optional<Failure> exchange_failure(const std::string& address, const std::string& target,
                                        std::chrono::milliseconds timeout, bool in_time, const error_code& ec,
                                        std::string_view received) {
  if (in_time && !ec) {
    return std::nullopt;
  }
  if (looks_like_tls(received)) {
    return Failure{ProbeProblem::kTls, "TLS expected: " + address +
                                           " answered with a TLS record, so the port wants https, but the "
                                           "config says http (use the device's plain-HTTP port)"};
  }
  if (!in_time) {
    return timeout_failure(address, "waiting for the HTTP answer to GET " + target, timeout);
  }
  if (received.empty() &&
      (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset)) {
    return Failure{ProbeProblem::kUnexpectedReply,
                   "unexpected reply: " + address + " closed the connection without an HTTP answer to GET " +
                       target + " (is it the right port? a port that expects TLS (https) may do this too)"};
  }
  if (ec == http::error::body_limit) {
    return Failure{ProbeProblem::kUnexpectedReply,
                   "unexpected reply: " + address + " answered GET " + target + " with a body over " +
                       std::to_string(kMaxBodyBytes) + " bytes (a device's answer here is a few KiB)"};
  }
  return Failure{ProbeProblem::kUnexpectedReply,
                 "unexpected reply: not HTTP (" + ec.message() + "); received " + shown_bytes(received)};
}

HttpOutcome http_get(const std::string& host, std::uint16_t port, const std::string& target,
                     const std::string& authorization, std::chrono::milliseconds timeout) {
  const std::string address = host + ":" + std::to_string(port);
  asio::io_context io;
  tcp::socket socket(io);
  if (auto f = connect_tcp(io, socket, host, port, timeout)) {
    return *f;
  }
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host,
          host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port) : address);
  req.set(http::field::user_agent, kUserAgent);
  if (!authorization.empty()) {
    req.set(http::field::authorization, authorization);
  }
  req.keep_alive(false);
  HttpAnswer answer;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxBodyBytes);
  error_code ec;
  answer.sent_ms = now_ms();
  http::async_write(socket, req, [&](const error_code& e, std::size_t) {
    ec = e;
    if (!e) {
      // Head first: Beast 1.74 loses the body_limit error when head and body come in one read, and reserves
      // the whole Content-Length (a device announcing 50 GB ended checkpointctl with std::bad_alloc).
      http::async_read_header(socket, buffer, parser, [&](const error_code& he, std::size_t) {
        ec = he;
        if (const auto length = parser.content_length(); !he && length && *length > kMaxBodyBytes) {
          ec = http::error::body_limit;
        } else if (!he) {
          http::async_read(socket, buffer, parser, [&](const error_code& re, std::size_t) { ec = re; });
        }
      });
    }
  });
  const bool in_time = run_until(io, Clock::now() + timeout, [&] {
    error_code ignored;
    socket.close(ignored);
  });
  answer.received_ms = now_ms();
  const auto* data = static_cast<const char*>(buffer.data().data());
  const std::string_view received(data, buffer.size());
  if (auto f = exchange_failure(address, target, timeout, in_time, ec, received)) {
    return *f;
  }
  auto res = parser.release();
  answer.status = res.result_int();
  answer.reason = std::string(res.reason());
  for (auto it = res.find(http::field::www_authenticate);
       it != res.end() && it->name() == http::field::www_authenticate; ++it) {
    answer.www_authenticate.emplace_back(it->value());
  }
  answer.body = std::move(res.body());
  // nginx and others answer a plain request on a TLS port with a 400 that says so.
  if (answer.status == 400 &&
      (answer.body.find("HTTPS port") != std::string::npos || answer.body.find("TLS") != std::string::npos)) {
    return Failure{ProbeProblem::kTls, "TLS expected: " + address +
                                           " says plain HTTP was sent to its HTTPS port, but the config says "
                                           "http (use the device's plain-HTTP port)"};
  }
  return answer;
}

std::string status_text(const HttpAnswer& a) {
  return std::to_string(a.status) + (a.reason.empty() ? "" : " " + a.reason);
}

Failure unexpected_status(const HttpAnswer& a, const std::string& target) {
  return {ProbeProblem::kUnexpectedReply,
          "unexpected reply: HTTP " + status_text(a) + " to GET " + target + ", body " + shown_bytes(a.body)};
}

void fail(ProbeReport& report, const Failure& f) {
  report.ok = false;
  report.problem = f.problem;
  report.explanation = f.text;
}

// ---- radar ----

struct RadarListen {
  std::string bytes_sample;  // the first bytes, for "unexpected reply"
  std::uint64_t bytes = 0;
  std::vector<adapters::RadarFrame> frames;
  adapters::RadarFrameParser parser;
  std::string closed;  // why the link ended early, empty if it stayed up
  std::int64_t closed_after_ms = -1;
};

// Reads from `stream` until the deadline, polling with "*P\r" at the start (so even an idle streaming
// radar answers at once) and every poll_interval_ms when it is configured to be polled.
template <typename Stream>
void listen_radar(asio::io_context& io, Stream& stream, int poll_interval_ms,
                  std::chrono::milliseconds listen, RadarListen& out) {
  static const std::string kPoll = "*P\r";
  std::array<char, 4096> buf{};
  const auto start = Clock::now();
  asio::steady_timer poll_timer(io);
  bool closed = false;
  std::function<void()> read = [&] {
    stream.async_read_some(asio::buffer(buf), [&](const error_code& ec, std::size_t n) {
      if (n > 0) {
        const std::string_view chunk(buf.data(), n);
        out.bytes += n;
        if (out.bytes_sample.size() < 120) {
          out.bytes_sample.append(chunk.substr(0, 120 - out.bytes_sample.size()));
        }
        out.parser.feed(chunk, out.frames);
      }
      if (ec) {
        if (ec != asio::error::operation_aborted) {
          closed = true;
          out.closed = ec == asio::error::eof ? "the radar closed the connection" : ec.message();
          out.closed_after_ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
          poll_timer.cancel();
        }
        return;
      }
      read();
    });
  };
  std::function<void()> poll = [&] {
    asio::async_write(stream, asio::buffer(kPoll), [&](const error_code& ec, std::size_t) {
      if (ec || closed || poll_interval_ms <= 0) {
        return;
      }
      poll_timer.expires_after(std::chrono::milliseconds(poll_interval_ms));
      poll_timer.async_wait([&](const error_code& te) {
        if (!te && !closed) {
          poll();
        }
      });
    });
  };
  read();
  poll();
  run_until(io, start + listen, [&] {
    closed = true;
    poll_timer.cancel();
    error_code ignored;
    stream.close(ignored);
  });
}

std::string tenths(std::int32_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%.1f", static_cast<double>(v) / 10.0);
  return buf;
}

// What the radar sent while the probe listened, counted: detections (self-test X/Y apart), the first of
// each kind as a sample, and each distinct status in the order first seen.
struct RadarTally {
  std::uint64_t detects = 0;
  std::uint64_t statuses = 0;
  std::uint64_t tests = 0;
  const adapters::RadarDetect* sample = nullptr;
  const adapters::RadarDetect* test_sample = nullptr;
  std::vector<std::pair<std::pair<int, std::string>, int>> status_seen;  // (code, text) -> count, in order
  const adapters::RadarStatus* last_status = nullptr;
};

RadarTally tally_radar(const RadarListen& l) {
  using adapters::RadarDetect;
  using adapters::RadarStatus;
  RadarTally t;
  for (const auto& f : l.frames) {
    if (const auto* d = std::get_if<RadarDetect>(&f.message)) {
      ++t.detects;
      const bool test = d->dir == 'X' || d->dir == 'Y';
      t.tests += test ? 1 : 0;
      if (!test && t.sample == nullptr) {
        t.sample = d;
      }
      if (test && t.test_sample == nullptr) {
        t.test_sample = d;
      }
    } else {
      const auto& s = std::get<RadarStatus>(f.message);
      ++t.statuses;
      t.last_status = &s;
      auto it = std::find_if(t.status_seen.begin(), t.status_seen.end(), [&](const auto& e) {
        return e.first.first == s.code && e.first.second == s.text;
      });
      if (it == t.status_seen.end()) {
        t.status_seen.push_back({{s.code, s.text}, 1});
      } else {
        ++it->second;
      }
    }
  }
  return t;
}

// The sample target, as a technician reads it (speed, range, lane by the configured lanes), or none.
json report_sample_target(const adapters::RadarConfig& radar, const adapters::RadarDetect* shown,
                          ProbeReport& report) {
  json sample_json;
  if (shown != nullptr) {
    const char* units = shown->units == 'K' ? "km/h" : "mph";
    std::string lane = "outside every configured lane";
    if (shown->coord == 'C') {
      const double x = shown->x_tenths / 10.0;
      for (const auto& ln : radar.lanes) {
        if (x >= ln.x_min && x < ln.x_max) {
          lane = "lane " + std::to_string(ln.lane);
        }
      }
    } else {
      lane = "azimuth (polar), lane not derived";
    }
    const std::string dir = shown->dir == 'A'   ? "approaching"
                            : shown->dir == 'R' ? "receding"
                                                : "self-test target";
    report.lines.push_back("sample target: #" + std::to_string(shown->target) + " " + dir + " " +
                           tenths(shown->speed_tenths) + " " + units + " at " + tenths(shown->range_dm) +
                           " m, x " + tenths(shown->x_tenths) + (shown->coord == 'C' ? " m" : " deg") + " (" +
                           lane + "), amplitude " + tenths(shown->amplitude_ddb) + " dB");
    sample_json = {{"target", shown->target},
                   {"dir", std::string(1, shown->dir)},
                   {"speed", shown->speed_tenths / 10.0},
                   {"units", std::string(1, shown->units)},
                   {"range_m", shown->range_dm / 10.0},
                   {"x", shown->x_tenths / 10.0},
                   {"coord", std::string(1, shown->coord)},
                   {"lane", lane}};
  } else {
    report.lines.push_back("sample target: none tracked while listening");
  }
  return sample_json;
}

// The probe's verdict from what was heard: no data, no frame, a fault, or ok (with a warning's note).
void radar_verdict(const adapters::RadarConfig& radar, const RadarListen& l, std::chrono::milliseconds listen,
                   const adapters::RadarStatus* last_status, ProbeReport& report) {
  const auto& c = l.parser.counters();
  if (l.bytes == 0) {
    fail(report,
         {ProbeProblem::kNoData,
          "no data: connected, but the radar sent nothing in " + seconds_text(listen) +
              ", not even an answer to the poll *P. It accepts one client at a time: is checkpointd (or "
              "another tool) connected to it? Stop that first" +
              (std::holds_alternative<adapters::SerialLink>(radar.link)
                   ? std::string("; on serial also check wiring and baud rate")
                   : std::string())});
    return;
  }
  if (c.frames == 0) {
    fail(report, {ProbeProblem::kUnexpectedReply,
                  "unexpected reply: " + std::to_string(l.bytes) +
                      " bytes but no valid radar frame, received " + shown_bytes(l.bytes_sample) +
                      (std::holds_alternative<adapters::SerialLink>(radar.link)
                           ? std::string(" (wrong baud rate?)")
                           : std::string(" (is this the radar's port?)"))});
    return;
  }
  if (last_status != nullptr && last_status->code >= 20) {
    char code[16];
    std::snprintf(code, sizeof(code), "%02d", last_status->code);
    fail(report, {ProbeProblem::kDeviceFault, std::string("the radar reports fault ") + code + " '" +
                                                  last_status->text +
                                                  "': speeds it measures now are not valid evidence"});
    return;
  }
  report.ok = true;
  if (last_status != nullptr && last_status->code >= 10) {
    report.lines.push_back("note: the radar reports a warning (status " + std::to_string(last_status->code) +
                           " " + last_status->text + ")");
  }
}

void report_radar(const adapters::RadarConfig& radar, const RadarListen& l, std::chrono::milliseconds listen,
                  ProbeReport& report) {
  const RadarTally t = tally_radar(l);
  const auto& c = l.parser.counters();
  report.lines.push_back(
      "listened " + seconds_text(listen) + ": " + std::to_string(l.bytes) + " bytes, " +
      std::to_string(c.frames) + " frames (detect 02: " + std::to_string(t.detects) +
      (t.tests > 0 ? ", of them " + std::to_string(t.tests) + " self-test X/Y" : std::string()) +
      "; status 09: " + std::to_string(t.statuses) + ")");
  json by_type = {{"detect", t.detects}, {"status", t.statuses}, {"self_test", t.tests}};
  json statuses_json = json::array();
  for (const auto& [key, count] : t.status_seen) {
    char code[16];
    std::snprintf(code, sizeof(code), "%02d", key.first);
    const std::string meaning = key.first == 0 ? "OK" : key.first < 20 ? "warning" : "FAULT";
    report.lines.push_back(std::string("status ") + code + " " + key.second + " (" + meaning + ")" +
                           (count > 1 ? " x" + std::to_string(count) : ""));
    statuses_json.push_back({{"code", key.first}, {"text", key.second}, {"count", count}});
  }
  json errors = json::object();
  std::string error_text;
  for (std::size_t i = 0; i < adapters::kFrameErrorCount; ++i) {
    const auto e = static_cast<adapters::FrameError>(i);
    if (c.error(e) > 0) {
      errors[std::string(adapters::frame_error_name(e))] = c.error(e);
      error_text += (error_text.empty() ? "" : ", ") + std::string(adapters::frame_error_name(e)) + " " +
                    std::to_string(c.error(e));
    }
  }
  report.lines.push_back("parse errors: " + (error_text.empty() ? std::string("none") : error_text) +
                         (c.noise_bytes > 0 ? "; noise bytes " + std::to_string(c.noise_bytes) : ""));
  const json sample_json =
      report_sample_target(radar, t.sample != nullptr ? t.sample : t.test_sample, report);
  if (!l.closed.empty()) {
    report.lines.push_back("link ended after " + std::to_string(l.closed_after_ms) + " ms: " + l.closed);
  }
  report.data["bytes"] = l.bytes;
  report.data["frames"] = c.frames;
  report.data["frames_by_type"] = by_type;
  report.data["statuses"] = statuses_json;
  report.data["parse_errors"] = errors;
  report.data["noise_bytes"] = c.noise_bytes;
  report.data["sample_target"] = sample_json;

  radar_verdict(radar, l, listen, t.last_status, report);
}

void probe_radar(const adapters::RadarConfig& radar, const ProbeOptions& options, ProbeReport& report) {
  asio::io_context io;
  RadarListen l;
  if (const auto* link = std::get_if<adapters::TcpLink>(&radar.link)) {
    report.address = link->host + ":" + std::to_string(link->port);
    tcp::socket socket(io);
    if (auto f = connect_tcp(io, socket, link->host, link->port, options.timeout)) {
      fail(report, *f);
      return;
    }
    report.lines.push_back("connected to " + report.address + " (tcp)");
    listen_radar(io, socket, radar.poll_interval_ms, options.listen, l);
  } else {
    const auto& serial = std::get<adapters::SerialLink>(radar.link);
    report.address = "serial " + serial.device + " at " + std::to_string(serial.baud) + " baud";
    asio::serial_port port(io);
    error_code ec;
    port.open(serial.device, ec);
    if (!ec) {
      port.set_option(asio::serial_port::baud_rate(serial.baud), ec);
    }
    if (!ec) {
      port.set_option(asio::serial_port::character_size(8), ec);
    }
    if (!ec) {
      port.set_option(asio::serial_port::parity(asio::serial_port::parity::none), ec);
    }
    if (!ec) {
      port.set_option(asio::serial_port::stop_bits(asio::serial_port::stop_bits::one), ec);
    }
    if (!ec) {
      port.set_option(asio::serial_port::flow_control(asio::serial_port::flow_control::none), ec);
    }
    if (ec) {
      std::string hint;
      if (ec == asio::error::no_such_device || ec.value() == ENOENT) {
        hint = ": no such device (is the adapter plugged in? see ls /dev/serial/by-id/)";
      } else if (ec == asio::error::access_denied || ec.value() == EACCES) {
        hint = ": permission denied (the user needs the device's group, usually dialout)";
      } else if (ec.value() == EBUSY) {
        hint = ": busy (another program, e.g. checkpointd, has it open)";
      } else {
        hint = ": " + ec.message();
      }
      fail(report, {ProbeProblem::kLocalError, "cannot open " + serial.device + hint});
      return;
    }
    report.lines.push_back("opened " + report.address + " 8N1");
    listen_radar(io, port, radar.poll_interval_ms, options.listen, l);
  }
  report_radar(radar, l, options.listen, report);
}

// ---- camera ----

// One authenticated GET: Digest takes the challenge of a first 401 and answers once (twice if the
// nonce was only stale). Wrong credentials are never retried: 5 in a row lock the user for 30 minutes.
HttpOutcome camera_get(const adapters::CameraConfig& cam, adapters::DigestAuthenticator& digest,
                       const std::string& target, std::chrono::milliseconds timeout) {
  bool fresh_answer = false;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string authorization;
    if (cam.auth == "basic") {
      authorization = adapters::basic_authorization(cam.username, cam.password);
      fresh_answer = true;
    } else if (digest.has_challenge()) {
      authorization = digest.authorization("GET", target);
    }
    HttpOutcome out = http_get(cam.host, cam.port, target, authorization, timeout);
    auto* a = std::get_if<HttpAnswer>(&out);
    if (a == nullptr || a->status != 401) {
      return out;
    }
    if (cam.auth == "basic" || (fresh_answer && !authorization.empty())) {
      if (digest.take_challenge(a->www_authenticate) && digest.challenge()->stale && attempt < 2) {
        continue;  // right password, old nonce: the camera asks again with a new one
      }
      return out;
    }
    if (!digest.take_challenge(a->www_authenticate)) {
      std::string offered;
      for (const auto& w : a->www_authenticate) {
        offered += (offered.empty() ? "" : "; ") + w;
      }
      const bool basic_only = offered.rfind("Basic", 0) == 0;
      return Failure{
          ProbeProblem::kUnexpectedReply,
          "unexpected reply: 401 without a usable Digest (MD5, qop=auth) challenge; the camera offers " +
              shown_bytes(offered) + (basic_only ? " (set auth: basic for this camera)" : "")};
    }
    fresh_answer = true;
  }
  return Failure{ProbeProblem::kUnexpectedReply,
                 "unexpected reply: the camera kept asking for authentication"};
}

// A 401/403 after our one answer, in the words the spec gives them.
Failure auth_failure(const adapters::CameraConfig& cam, const HttpAnswer& a) {
  if (a.status == 403) {
    return {ProbeProblem::kLocked,
            "user locked: the camera answers 403 Forbidden for user '" + cam.username +
                "'; it locks a user for 30 minutes after 5 failed logins in a row. Wait for the lock to end "
                "(or unlock the user in the camera's web page) and fix password_file first"};
  }
  return {ProbeProblem::kWrongCredentials,
          "wrong credentials: the camera refused user '" + cam.username + "' with the password in " +
              cam.password_file +
              " (401). Do not retry in a loop: 5 failures in a row lock the user for 30 "
              "minutes"};
}

// GET /ISAPI/System/deviceInfo: the camera answers, the credentials work, and who it is. False: reported.
bool probe_camera_info(const adapters::CameraConfig& cam, adapters::DigestAuthenticator& digest,
                       const ProbeOptions& options, ProbeReport& report) {
  const std::string info_target = "/ISAPI/System/deviceInfo";
  HttpOutcome out = camera_get(cam, digest, info_target, options.timeout);
  if (const auto* f = std::get_if<Failure>(&out)) {
    fail(report, *f);
    return false;
  }
  const auto& info_answer = std::get<HttpAnswer>(out);
  if (info_answer.status == 401 || info_answer.status == 403) {
    fail(report, auth_failure(cam, info_answer));
    return false;
  }
  if (info_answer.status == 404) {
    fail(report, {ProbeProblem::kUnexpectedReply, "unexpected reply: 404 for " + info_target + " at " +
                                                      report.address + ": this is not an ISAPI camera"});
    return false;
  }
  if (info_answer.status != 200) {
    fail(report, unexpected_status(info_answer, info_target));
    return false;
  }
  const auto info = adapters::parse_device_info(info_answer.body);
  if (!info) {
    fail(report, {ProbeProblem::kUnexpectedReply,
                  "unexpected reply: " + info_target +
                      " is not an ISAPI DeviceInfo document: " + shown_bytes(info_answer.body)});
    return false;
  }
  report.lines.push_back(std::string("authenticated as '") + cam.username + "' (" + cam.auth + ")");
  report.lines.push_back("model: " + info->model);
  report.lines.push_back("serial number: " + info->serial_number);
  report.lines.push_back("firmware: " + info->firmware_version);
  report.lines.push_back("device name: " + info->device_name + ", device id: " + info->device_id);
  report.data["device_info"] = {{"model", info->model},
                                {"serial_number", info->serial_number},
                                {"firmware_version", info->firmware_version},
                                {"device_name", info->device_name},
                                {"device_id", info->device_id}};
  return true;
}

// One GET /ISAPI/System/time, added to the clock estimate. Nullopt: reported.
std::optional<adapters::IsapiTime> read_camera_time(const adapters::CameraConfig& cam,
                                                    adapters::DigestAuthenticator& digest,
                                                    const ProbeOptions& options,
                                                    adapters::OffsetClockEstimator& clock,
                                                    ProbeReport& report) {
  const std::string time_target = "/ISAPI/System/time";
  HttpOutcome t = camera_get(cam, digest, time_target, options.timeout);
  if (const auto* f = std::get_if<Failure>(&t)) {
    fail(report, *f);
    return std::nullopt;
  }
  const auto& ta = std::get<HttpAnswer>(t);
  if (ta.status == 401 || ta.status == 403) {
    fail(report, auth_failure(cam, ta));
    return std::nullopt;
  }
  if (ta.status != 200) {
    fail(report, unexpected_status(ta, time_target));
    return std::nullopt;
  }
  auto parsed = adapters::parse_time(ta.body);
  if (!parsed) {
    fail(report, {ProbeProblem::kUnexpectedReply, "unexpected reply: " + time_target +
                                                      " is not an ISAPI Time document with an ISO 8601 "
                                                      "localTime: " +
                                                      shown_bytes(ta.body)});
    return std::nullopt;
  }
  clock.add(parsed->time.unix_ms, parsed->time.has_fraction ? 1 : 1000, ta.sent_ms, ta.received_ms);
  return parsed;
}

// The clock: three reads bound the offset to an interval each; their intersection is the estimate, checked
// against validity.max_camera_clock_offset_ms. False: reported.
bool probe_camera_clock(const adapters::CameraConfig& cam, adapters::DigestAuthenticator& digest,
                        const ProbeOptions& options, ProbeReport& report) {
  adapters::OffsetClockEstimator clock;
  std::optional<adapters::IsapiTime> last_time;
  for (int i = 0; i < 3; ++i) {
    const UnixMs wait_until = clock.next_probe_ms(now_ms());
    // Reading when the camera's next whole second falls mid-interval halves the uncertainty.
    const UnixMs wait_ms = wait_until - now_ms();
    if (i > 0 && wait_ms > 0 && wait_ms < 1500) {
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
    last_time = read_camera_time(cam, digest, options, clock, report);
    if (!last_time) {
      return false;
    }
  }
  const auto estimate = clock.estimate();
  if (!estimate) {
    fail(report, {ProbeProblem::kUnexpectedReply,
                  "unexpected reply: the camera's clock readings are impossible "
                  "(answer before the question)"});
    return false;
  }
  report.lines.push_back("camera clock: " + last_time->local_time + " (timeMode " + last_time->time_mode +
                         "); this host: " + iso_utc(estimate->measured_ms));
  report.lines.push_back("clock offset (camera minus this host): " + signed_ms(estimate->offset_ms) +
                         " +/- " + std::to_string(estimate->uncertainty_ms) + " ms");
  report.data["clock"] = {{"camera_time", last_time->local_time},
                          {"time_mode", last_time->time_mode},
                          {"offset_ms", estimate->offset_ms},
                          {"uncertainty_ms", estimate->uncertainty_ms}};
  const std::int64_t off = estimate->offset_ms < 0 ? -estimate->offset_ms : estimate->offset_ms;
  if (off - estimate->uncertainty_ms > options.max_camera_clock_offset_ms) {
    fail(report, {ProbeProblem::kDeviceFault,
                  "the camera's clock is off by " + signed_ms(estimate->offset_ms) +
                      ", more than validity.max_camera_clock_offset_ms (" +
                      std::to_string(options.max_camera_clock_offset_ms) +
                      " ms): its plate reads would be marked invalid; check NTP on the camera"});
    return false;
  }
  return true;
}

void probe_camera(const adapters::CameraConfig& cam, const ProbeOptions& options, ProbeReport& report) {
  report.address = (cam.host.find(':') != std::string::npos ? "[" + cam.host + "]" : cam.host) + ":" +
                   std::to_string(cam.port);
  adapters::DigestAuthenticator digest(cam.username, cam.password);
  report.ok =
      probe_camera_info(cam, digest, options, report) && probe_camera_clock(cam, digest, options, report);
}

// ---- recorder dock ----

void probe_dock(const adapters::RecorderDockConfig& dock, const ProbeOptions& options, ProbeReport& report) {
  report.address = (dock.host.find(':') != std::string::npos ? "[" + dock.host + "]" : dock.host) + ":" +
                   std::to_string(dock.port) + dock.base_path;
  const std::string target = adapters::dock_status_target(dock.base_path);
  HttpOutcome out = http_get(dock.host, dock.port, target, "Bearer " + dock.token, options.timeout);
  if (const auto* f = std::get_if<Failure>(&out)) {
    fail(report, *f);
    return;
  }
  const auto& a = std::get<HttpAnswer>(out);
  if (a.status == 401 || a.status == 403) {
    fail(report, {ProbeProblem::kWrongCredentials,
                  "wrong credentials: the station refused the bearer token in " + dock.token_file + " (" +
                      status_text(a) + "); the token must be the one configured on the station"});
    return;
  }
  if (a.status == 404) {
    fail(report,
         {ProbeProblem::kUnexpectedReply, "unexpected reply: 404 for " + target + " at " + report.address +
                                              ": not a docking station, or a wrong path in url"});
    return;
  }
  if (a.status != 200) {
    fail(report, unexpected_status(a, target));
    return;
  }
  const auto status = adapters::parse_dock_status(a.body);
  if (!status) {
    fail(report,
         {ProbeProblem::kUnexpectedReply, "unexpected reply: " + target + " is not the station status (" +
                                              status.error.detail + "): " + shown_bytes(a.body)});
    return;
  }
  const auto& s = *status.value;
  std::string docked;
  for (const auto& r : s.docked) {
    docked += (docked.empty() ? "" : ", ") + r;
  }
  // The station read its clock between our request and its answer: offset against the midpoint.
  const UnixMs mid = a.sent_ms + (a.received_ms - a.sent_ms) / 2;
  const std::int64_t offset = s.time_ms - mid;
  const std::int64_t uncertainty = (a.received_ms - a.sent_ms) / 2 + (s.time_has_fraction ? 1 : 1000);
  report.lines.push_back("station id: " + s.station_id + ", firmware " + s.firmware);
  report.lines.push_back("recorders docked: " + std::to_string(s.docked.size()) + " of " +
                         std::to_string(s.slots) + " slots" + (docked.empty() ? "" : " (" + docked + ")"));
  report.lines.push_back("free space: " + std::to_string(s.free_bytes / (1024 * 1024)) + " MiB");
  report.lines.push_back("station clock: " + s.time + "; clock offset (station minus this host): " +
                         signed_ms(offset) + " +/- " + std::to_string(uncertainty) + " ms");
  report.data["station_id"] = s.station_id;
  report.data["firmware"] = s.firmware;
  report.data["slots"] = s.slots;
  report.data["docked"] = s.docked;
  report.data["free_bytes"] = s.free_bytes;
  report.data["clock"] = {{"station_time", s.time}, {"offset_ms", offset}, {"uncertainty_ms", uncertainty}};
  report.ok = true;
}

}  // namespace

std::string_view probe_problem_name(ProbeProblem problem) {
  switch (problem) {
    case ProbeProblem::kNone:
      return "none";
    case ProbeProblem::kDns:
      return "dns";
    case ProbeProblem::kRefused:
      return "refused";
    case ProbeProblem::kTimeout:
      return "timeout";
    case ProbeProblem::kUnreachable:
      return "unreachable";
    case ProbeProblem::kTls:
      return "tls_expected";
    case ProbeProblem::kWrongCredentials:
      return "wrong_credentials";
    case ProbeProblem::kLocked:
      return "locked";
    case ProbeProblem::kUnexpectedReply:
      return "unexpected_reply";
    case ProbeProblem::kNoData:
      return "no_data";
    case ProbeProblem::kDeviceFault:
      return "device_fault";
    case ProbeProblem::kLocalError:
      return "local_error";
  }
  return "unknown";
}

ProbeReport probe_device(const config::DeviceConfig& device, const ProbeOptions& options) {
  ProbeReport report;
  report.device = device.id;
  report.kind = device.kind;
  try {
    if (const auto* radar = std::get_if<adapters::RadarConfig>(&device.settings)) {
      probe_radar(*radar, options, report);
    } else if (const auto* camera = std::get_if<adapters::CameraConfig>(&device.settings)) {
      probe_camera(*camera, options, report);
    } else if (const auto* dock = std::get_if<adapters::RecorderDockConfig>(&device.settings)) {
      probe_dock(*dock, options, report);
    }
  } catch (const std::exception& e) {
    // Asio may throw for local resource exhaustion; the report still says what happened.
    fail(report, {ProbeProblem::kLocalError, std::string("probe failed on this host: ") + e.what()});
  }
  return report;
}

}  // namespace cpd::ctl
