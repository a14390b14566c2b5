// The recorder docking station simulator: a Beast HTTP/1.1 keep-alive server for specs/recorder-dock.md.
// File contents are never stored: a counter-based generator keyed by the uniqueId produces any byte range on
// demand, so multi-GB files stream with back-pressure (one chunk in flight per connection).
#include "tools/sim/dock_sim.h"

#include <openssl/evp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

#include "tests/support/camera_messages.h"
#include "tests/support/dock_messages.h"
#include "tools/sim/listen.h"
#include "tools/sim/sim_common.h"

namespace cpd::sim {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using ojson = nlohmann::ordered_json;

constexpr std::size_t kChunk = 256 * 1024;  // body bytes per write: one in flight per connection
constexpr std::size_t kHashChunk = 1 << 20;
constexpr int kDefaultLimit = 50;
constexpr int kMaxLimit = 500;
constexpr std::uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr double kBaseLat = 30.274085;  // the checkpoint's neighbourhood (spec example)
constexpr double kBaseLon = 120.155070;

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31U);
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ULL;
  }
  return h;
}

std::string to_hex(const unsigned char* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4U];
    out += kHex[p[i] & 15U];
  }
  return out;
}

struct Digests {
  std::string md5;
  std::string sha256;
};

// One streaming pass over the generated content (the station's checksum as copied off the recorder).
Digests digest_content(const DockContent& content, std::uint64_t length) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md5(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!md5 || !sha || EVP_DigestInit_ex(md5.get(), EVP_md5(), nullptr) != 1 ||
      EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("dock-sim: OpenSSL digest init failed");
  }
  std::vector<char> buf(kHashChunk);
  for (std::uint64_t at = 0; at < length;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kHashChunk, length - at));
    content.fill(at, buf.data(), n);
    EVP_DigestUpdate(md5.get(), buf.data(), n);
    EVP_DigestUpdate(sha.get(), buf.data(), n);
    at += n;
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  Digests d;
  EVP_DigestFinal_ex(md5.get(), out.data(), &len);
  d.md5 = to_hex(out.data(), len);
  EVP_DigestFinal_ex(sha.get(), out.data(), &len);
  d.sha256 = to_hex(out.data(), len);
  return d;
}

std::optional<std::string> format_of(const std::string& file_type) {
  if (file_type == "video") {
    return "mp4";
  }
  if (file_type == "audio") {
    return "wav";
  }
  if (file_type == "photo") {
    return "jpg";
  }
  return std::nullopt;
}

std::string content_type_of(const std::string& format) {
  if (format == "mp4") {
    return "video/mp4";
  }
  if (format == "wav") {
    return "audio/wav";
  }
  return "image/jpeg";
}

// Percent-decoding of a query value or path segment; nullopt on a broken escape.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) {
        return std::nullopt;
      }
      unsigned v = 0;
      const auto r = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (r.ec != std::errc() || r.ptr != s.data() + i + 3) {
        return std::nullopt;
      }
      out += static_cast<char>(v);
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (pair.empty()) {
      continue;
    }
    const auto eq = pair.find('=');
    const auto k = percent_decode(pair.substr(0, eq), true);
    const auto v =
        percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (k && v) {
      out[*k] = *v;
    } else if (k) {
      out[*k] = "\x01";  // an undecodable value: never a valid cursor or limit
    }
  }
  return out;
}

struct ByteRange {
  std::uint64_t from = 0;
  std::uint64_t to = 0;  // exclusive
};

// A Range header's bytes=<from>- (the spec) or bytes=<from>-<last> within a body of `length` bytes; nullopt
// for anything else, which is ignored (RFC 9110: full body). `from` may lie past the end (416).
std::optional<ByteRange> requested_range(std::string_view v, std::uint64_t length) {
  if (!v.starts_with("bytes=") || v.find(',') != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view spec = v.substr(6);
  const auto dash = spec.find('-');
  std::uint64_t f = 0;
  std::uint64_t l = 0;
  const auto rf = std::from_chars(spec.data(), spec.data() + (dash == std::string_view::npos ? 0 : dash), f);
  const bool from_ok =
      dash != std::string_view::npos && dash > 0 && rf.ec == std::errc() && rf.ptr == spec.data() + dash;
  const std::string_view last_text = from_ok ? spec.substr(dash + 1) : std::string_view();
  bool last_ok = last_text.empty();
  if (from_ok && !last_text.empty()) {
    const auto rl = std::from_chars(last_text.data(), last_text.data() + last_text.size(), l);
    last_ok = rl.ec == std::errc() && rl.ptr == last_text.data() + last_text.size() && l >= f;
  }
  if (!from_ok || !last_ok) {
    return std::nullopt;
  }
  return ByteRange{f, last_text.empty() ? length : std::min(length, l + 1)};
}

// Local date/time pieces for names: "20261127" and "113712" from an ISO time "2026-11-27T11:37:12+08:00".
std::pair<std::string, std::string> name_parts(const std::string& iso) {
  std::string date = iso.substr(0, 4) + iso.substr(5, 2) + iso.substr(8, 2);
  std::string time = iso.substr(11, 2) + iso.substr(14, 2) + iso.substr(17, 2);
  return {date, time};
}

// The instant a listed time names: truncation to whole seconds unless the listing carries milliseconds.
std::int64_t listed_instant(std::int64_t ms, bool with_ms) {
  if (with_ms) {
    return ms;
  }
  return ms - (((ms % 1000) + 1000) % 1000);
}

struct Officer {
  const char* id;
  const char* name;
};
constexpr std::array<Officer, 12> kOfficers = {{
    {"330102198801010011", "王伟"},
    {"330102199003150024", "李娜"},
    {"330103198706220035", "张强"},
    {"330104199112080046", "刘洋"},
    {"330105198905300057", "陈静"},
    {"330106199207190068", "杨磊"},
    {"330106198610250079", "赵敏"},
    {"330108199301110081", "黄勇"},
    {"330109198802280092", "周杰"},
    {"330110199409090103", "吴芳"},
    {"330122198512310114", "徐斌"},
    {"330127199006060125", "孙丽"},
}};

std::string recorder_name(std::size_t i) {
  std::array<char, 16> buf{};
  std::snprintf(buf.data(), buf.size(), "BWC-%05u", static_cast<unsigned>(917 + 4 * i));
  return buf.data();
}

}  // namespace

// ---- DockContent ----

DockContent::DockContent(std::string_view unique_id) : key_(mix64(fnv1a(unique_id))) {}

void DockContent::fill(std::uint64_t offset, char* out, std::size_t n) const {
  std::uint64_t word = offset / 8;
  std::size_t skip = static_cast<std::size_t>(offset % 8);
  while (n > 0) {
    const std::uint64_t w = mix64(key_ + (word + 1) * kGamma);
    if (skip == 0 && n >= 8) {
      // Little-endian byte order whatever the host, so the content is the same everywhere.
      if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(out, &w, 8);
      } else {
        for (unsigned k = 0; k < 8; ++k) {
          out[k] = static_cast<char>(static_cast<unsigned char>(w >> (8U * k)));
        }
      }
      out += 8;
      n -= 8;
    } else {
      const std::size_t take = std::min<std::size_t>(8 - skip, n);
      for (std::size_t k = 0; k < take; ++k) {
        out[k] = static_cast<char>(static_cast<unsigned char>(w >> (8U * (skip + k))));
      }
      out += take;
      n -= take;
      skip = 0;
    }
    ++word;
  }
}

std::string DockContent::bytes(std::uint64_t offset, std::size_t n) const {
  std::string s(n, '\0');
  fill(offset, s.data(), n);
  return s;
}

// ---- the station ----

class DockSession;

// A body to stream: [from, to) of a file's content, possibly with a corrupted byte or a planned break.
struct DockTransfer {
  std::string unique_id;
  DockContent content{""};
  std::uint64_t from = 0;
  std::uint64_t to = 0;
  std::optional<std::uint64_t> corrupt_at;   // absolute offset of the flipped byte
  std::optional<std::uint64_t> break_after;  // body bytes before the connection is cut
};

struct DockAnswer {
  http::status status = http::status::ok;
  std::string body;  // JSON
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<DockTransfer> transfer;
  bool close = false;  // close without answering (connection from before a restart)

  static DockAnswer error(http::status status, std::string_view what) {
    DockAnswer a;
    a.status = status;
    a.body = test::dock_error_json(std::string(what));
    return a;
  }
};

class DockSim::Impl : public std::enable_shared_from_this<DockSim::Impl> {
 public:
  using Request = http::request<http::string_body>;

  Impl(asio::io_context& io, DockOptions opt)
      : io_(io),
        opt_(std::move(opt)),
        acceptor_(io),
        file_timer_(io),
        burst_timer_(io),
        restart_timer_(io),
        outage_timer_(io),
        token_(opt_.token),
        rng_(opt_.seed),
        boot_tag_(boot_tag_for(0)) {}

  bool start();
  bool open(std::uint16_t port);
  void accept();
  void stop();
  void restart(double outage_s);
  void close_sessions();
  void forget(const std::shared_ptr<DockSession>& s) { sessions_.erase(s); }

  // lock_held: called with mu_ held (the flood, from a listing); the on_file_added callback is not run.
  DockFileTruth add_file(DockFileSpec spec, bool lock_held = false);
  void name_file(DockFileSpec& spec, const std::string& format, DockFileTruth& t);
  test::DockEntry listing_entry(const DockFileSpec& spec, const DockFileTruth& t) const;
  void store_file(const DockFileSpec& spec, const test::DockEntry& entry, DockFileTruth& t);
  void flood(std::uint64_t after);
  DockFileSpec random_spec(std::int64_t bytes);
  DockFileSpec random_spec_locked(std::int64_t bytes);
  DockFileSpec generated_spec();
  void schedule_files();
  void schedule_restarts();

  DockAnswer handle(const Request& req, std::uint64_t boot);
  void note_completed(const std::string& id);
  bool stale(std::uint64_t boot) const { return boot != boot_.load(); }

  std::uint32_t boot_tag_for(std::uint64_t boot) const {
    return static_cast<std::uint32_t>(mix64(opt_.seed ^ ((boot + 1) * kGamma)) & 0xFFFFFFFFULL);
  }
  std::string cursor(std::uint64_t seq) const {
    std::array<char, 32> buf{};
    std::snprintf(buf.data(), buf.size(), "%08x%016llx", boot_tag_, static_cast<unsigned long long>(seq));
    return buf.data();
  }
  void write_truth(const std::string& line) {
    if (truth_.is_open()) {
      truth_ << line << '\n';
      truth_.flush();
    }
  }
  void log_ack(const DockAckRecord& rec) {
    ack_log_.push_back(rec);
    write_truth(dock_ack_truth_json(rec));
  }

  struct Entry {
    DockFileTruth truth;
    std::string listing_json;  // this file's entry in a listing
    bool acked = false;
    int md5_bad_downloads = 0;
    int break_times = 0;
    std::int64_t break_after_bytes = 0;
    std::size_t gets = 0;      // content requests
    std::size_t attempts = 0;  // content requests from byte 0 (a new download)
    std::size_t completed = 0;
    bool current_corrupt = false;  // the download in progress serves the corrupted byte
  };

  // The routes of handle(), with mu_ held and the request authorized.
  DockAnswer handle_status(const Request& req);
  DockAnswer handle_listing(const Request& req, const std::map<std::string, std::string>& query);
  DockAnswer handle_file(const Request& req, std::string_view rest);  // rest: "<uniqueId>/<action>"
  DockAnswer handle_content(const Request& req, const std::string& id);
  DockAnswer handle_ack(const Request& req, const std::string& id);
  DockTransfer start_download(Entry& e, std::uint64_t from, std::uint64_t to);

  asio::io_context& io_;
  DockOptions opt_;
  tcp::acceptor acceptor_;
  asio::steady_timer file_timer_;
  asio::steady_timer burst_timer_;
  asio::steady_timer restart_timer_;
  asio::steady_timer outage_timer_;
  std::uint16_t port_ = 0;
  std::set<std::shared_ptr<DockSession>> sessions_;  // io thread only
  bool stopping_ = false;                            // io thread only
  bool down_ = false;                                // io thread only: restart outage
  std::atomic<std::uint64_t> boot_{0};

  mutable std::mutex mu_;  // everything below: handlers on the io thread and the test API share it
  std::string token_;
  std::mt19937_64 rng_;
  std::uint32_t boot_tag_;
  std::map<std::string, Entry> files_;
  std::map<std::uint64_t, std::string> by_seq_;
  std::map<std::string, int> recorder_counter_;
  std::uint64_t next_seq_ = 1;
  std::uint64_t generated_ = 0;
  std::vector<DockAckRecord> ack_log_;
  std::size_t restarts_ = 0;
  std::ofstream truth_;
  std::function<void(const DockFileTruth&)> on_added_;
  std::optional<std::int64_t> flood_started_ms_;  // the first listing, when flooding
};

class DockSession : public std::enable_shared_from_this<DockSession> {
 public:
  DockSession(std::shared_ptr<DockSim::Impl> sim, tcp::socket socket, std::uint64_t boot)
      : sim_(std::move(sim)), socket_(std::move(socket)), boot_(boot) {}

  void start() { read_request(); }

  void close() {
    if (closed_) {
      return;
    }
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    sim_->forget(shared_from_this());
  }

 private:
  void read_request() {
    parser_.emplace();
    parser_->body_limit(64 * 1024);
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](const error_code& ec, std::size_t) {
                       if (ec || self->closed_ || self->sim_->stopping_) {
                         self->close();
                         return;
                       }
                       self->on_request(self->parser_->release());
                     });
  }

  void on_request(const http::request<http::string_body>& req) {
    DockAnswer a = sim_->handle(req, boot_);
    if (a.close) {
      close();
      return;
    }
    keep_alive_ = req.keep_alive();
    if (a.transfer) {
      start_transfer(std::move(*a.transfer), a.status, a.headers, req.version());
      return;
    }
    http::response<http::string_body> res{a.status, req.version()};
    res.set(http::field::server, "dock-sim");
    res.set(http::field::content_type, "application/json");
    for (const auto& [k, v] : a.headers) {
      res.set(k, v);
    }
    res.keep_alive(keep_alive_);
    res.body() = std::move(a.body);
    res.prepare_payload();
    std::ostringstream os;
    os << res;
    out_ = os.str();
    asio::async_write(
        socket_, asio::buffer(out_),
        [self = shared_from_this()](const error_code& ec, std::size_t) { self->after_response(ec); });
  }

  void after_response(const error_code& ec) {
    if (ec || closed_ || !keep_alive_ || sim_->stale(boot_)) {
      close();
      return;
    }
    read_request();
  }

  void start_transfer(DockTransfer t, http::status status,
                      const std::vector<std::pair<std::string, std::string>>& headers, unsigned version) {
    std::string head = "HTTP/" + std::to_string(version / 10) + "." + std::to_string(version % 10) + " " +
                       std::to_string(static_cast<unsigned>(status)) + " " +
                       std::string(http::obsolete_reason(status)) + "\r\nServer: dock-sim\r\n";
    for (const auto& [k, v] : headers) {
      head += k + ": " + v + "\r\n";
    }
    head += "Content-Length: " + std::to_string(t.to - t.from) + "\r\n";
    head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    out_ = std::move(head);
    transfer_ = std::move(t);
    sent_ = 0;
    chunk_.resize(kChunk);
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const error_code& ec, std::size_t) {
                        if (ec || self->closed_) {
                          self->close();
                          return;
                        }
                        self->send_chunk();
                      });
  }

  void send_chunk() {
    DockTransfer& t = *transfer_;
    if (sim_->stopping_ || sim_->stale(boot_)) {
      close();  // a restart drops downloads in progress
      return;
    }
    const std::uint64_t at = t.from + sent_;
    if (at >= t.to) {
      const std::string id = t.unique_id;
      transfer_.reset();
      chunk_.clear();
      chunk_.shrink_to_fit();
      sim_->note_completed(id);
      after_response({});
      return;
    }
    std::uint64_t n = std::min<std::uint64_t>(kChunk, t.to - at);
    if (t.break_after) {
      if (sent_ >= *t.break_after) {
        close();  // the planned break: the client sees the body end early
        return;
      }
      n = std::min<std::uint64_t>(n, *t.break_after - sent_);
    }
    t.content.fill(at, chunk_.data(), static_cast<std::size_t>(n));
    if (t.corrupt_at && *t.corrupt_at >= at && *t.corrupt_at < at + n) {
      chunk_[static_cast<std::size_t>(*t.corrupt_at - at)] ^= static_cast<char>(0x5A);
    }
    asio::async_write(socket_, asio::buffer(chunk_.data(), static_cast<std::size_t>(n)),
                      [self = shared_from_this()](const error_code& ec, std::size_t written) {
                        if (ec || self->closed_) {
                          self->close();
                          return;
                        }
                        self->sent_ += written;
                        self->send_chunk();
                      });
  }

  std::shared_ptr<DockSim::Impl> sim_;
  tcp::socket socket_;
  std::uint64_t boot_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string out_;
  std::optional<DockTransfer> transfer_;
  std::vector<char> chunk_;
  std::uint64_t sent_ = 0;
  bool keep_alive_ = true;
  bool closed_ = false;
};

// ---- Impl: lifecycle ----

bool DockSim::Impl::open(std::uint16_t port) {
  if (!open_listener(acceptor_, opt_.host, port, "dock-sim")) {
    return false;
  }
  port_ = acceptor_.local_endpoint().port();
  return true;
}

bool DockSim::Impl::start() {
  if (opt_.token.empty()) {
    std::cerr << "dock-sim: the token must not be empty\n";
    return false;
  }
  if (!open(opt_.port)) {
    return false;
  }
  if (!opt_.ground_truth.empty()) {
    const std::lock_guard lock(mu_);
    truth_.open(opt_.ground_truth, std::ios::out | std::ios::trunc);
    if (!truth_) {
      std::cerr << "dock-sim: cannot write " << opt_.ground_truth << "\n";
      return false;
    }
  }
  accept();
  schedule_files();
  schedule_restarts();
  return true;
}

void DockSim::Impl::accept() {
  acceptor_.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket s) {
    if (ec || self->stopping_ || self->down_) {
      return;  // acceptor closed (restart outage or shutdown)
    }
    error_code ignored;
    s.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<DockSession>(self, std::move(s), self->boot_.load());
    self->sessions_.insert(session);
    session->start();
    self->accept();
  });
}

void DockSim::Impl::close_sessions() {
  const auto sessions = sessions_;
  for (const auto& s : sessions) {
    s->close();
  }
  sessions_.clear();
}

void DockSim::Impl::stop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  file_timer_.cancel();
  burst_timer_.cancel();
  restart_timer_.cancel();
  outage_timer_.cancel();
  close_sessions();
}

void DockSim::Impl::restart(double outage_s) {
  {
    const std::lock_guard lock(mu_);
    const std::uint64_t boot = boot_.load() + 1;
    std::uint32_t tag = boot_tag_for(boot);
    if (tag == boot_tag_) {
      ++tag;  // old cursors must never be valid again
    }
    boot_tag_ = tag;
    boot_.store(boot);
    ++restarts_;
    write_truth(
        nlohmann::json{{"event", "restart"}, {"time_ms", unix_now_ms()}, {"outage_s", outage_s}}.dump());
  }
  // Sockets belong to the io thread; requests on old connections are refused (closed) meanwhile because
  // their session's boot no longer matches.
  asio::post(io_, [self = shared_from_this(), outage_s] {
    if (self->stopping_) {
      return;
    }
    self->close_sessions();
    if (outage_s <= 0.0 || self->down_) {
      return;
    }
    self->down_ = true;
    error_code ignored;
    self->acceptor_.close(ignored);
    self->outage_timer_.expires_after(std::chrono::milliseconds(static_cast<std::int64_t>(outage_s * 1000)));
    self->outage_timer_.async_wait([self](const error_code& ec) {
      if (ec || self->stopping_) {
        return;
      }
      if (!self->open(self->port_)) {
        self->stop();
        return;
      }
      self->down_ = false;
      self->accept();
    });
  });
}

void DockSim::Impl::schedule_restarts() {
  if (opt_.restart_every_s <= 0.0) {
    return;
  }
  restart_timer_.expires_after(
      std::chrono::milliseconds(static_cast<std::int64_t>(opt_.restart_every_s * 1000)));
  restart_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
    if (ec || self->stopping_) {
      return;
    }
    self->restart(self->opt_.restart_outage_s);
    self->schedule_restarts();
  });
}

DockFileSpec DockSim::Impl::generated_spec() {
  DockFileSpec spec;
  {
    const std::lock_guard lock(mu_);
    spec = random_spec_locked(opt_.file_bytes);
    ++generated_;
    if (opt_.fault_every > 0 && generated_ % opt_.fault_every == 0) {
      spec.md5_bad_downloads = opt_.md5_bad_downloads;
      spec.md5_wrong_listing = opt_.md5_wrong_listing;
      spec.break_after_bytes = opt_.break_after_bytes;
      spec.break_times = opt_.break_times;
    }
  }
  return spec;
}

void DockSim::Impl::schedule_files() {
  if (opt_.burst_at_s >= 0.0 && opt_.burst_files > 0) {
    burst_timer_.expires_after(std::chrono::milliseconds(static_cast<std::int64_t>(opt_.burst_at_s * 1000)));
    burst_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || self->stopping_) {
        return;
      }
      const std::int64_t now = unix_now_ms();
      for (std::uint64_t i = 0; i < self->opt_.burst_files; ++i) {
        DockFileSpec spec = self->generated_spec();
        spec.collect_unix_ms = now;  // one instant: the whole shift docks together
        self->add_file(std::move(spec));
      }
    });
  }
  if (opt_.files == 0) {
    return;
  }
  if (opt_.file_interval_s <= 0.0) {
    for (std::uint64_t i = 0; i < opt_.files; ++i) {
      add_file(generated_spec());
    }
    return;
  }
  struct Tick {
    static void arm(const std::shared_ptr<DockSim::Impl>& self, std::uint64_t left) {
      self->file_timer_.expires_after(
          std::chrono::milliseconds(static_cast<std::int64_t>(self->opt_.file_interval_s * 1000)));
      self->file_timer_.async_wait([self, left](const error_code& ec) {
        if (ec || self->stopping_) {
          return;
        }
        self->add_file(self->generated_spec());
        if (left > 1) {
          arm(self, left - 1);
        }
      });
    }
  };
  Tick::arm(shared_from_this(), opt_.files);
}

// ---- Impl: files ----

DockFileSpec DockSim::Impl::random_spec(std::int64_t bytes) {
  const std::lock_guard lock(mu_);
  return random_spec_locked(bytes);
}

DockFileSpec DockSim::Impl::random_spec_locked(std::int64_t bytes) {
  DockFileSpec s;
  const std::size_t who = static_cast<std::size_t>(rng_() % kOfficers.size());
  s.recorder = recorder_name(who);
  s.officer_id = kOfficers[who].id;
  s.officer_name = kOfficers[who].name;
  const double u = uniform01(rng_);
  s.file_type = u < 0.8 ? "video" : u < 0.9 ? "audio" : "photo";
  s.length = bytes;
  const std::int64_t now = unix_now_ms();
  s.collect_unix_ms = now;
  s.end_unix_ms = now - 5'000 - static_cast<std::int64_t>(rng_() % 1'800'000);
  const std::int64_t dur = s.file_type == "photo" ? 0 : 20'000 + static_cast<std::int64_t>(rng_() % 580'000);
  s.start_unix_ms = s.end_unix_ms - dur;
  s.important = uniform01(rng_) < 0.3;
  return s;
}

DockFileTruth DockSim::Impl::add_file(DockFileSpec spec, bool lock_held) {
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  const auto format = format_of(spec.file_type);
  if (!format) {
    throw std::invalid_argument("dock-sim: file_type must be video, audio or photo: " + spec.file_type);
  }
  if (spec.length < 0) {
    throw std::invalid_argument("dock-sim: negative length");
  }
  DockFileTruth t;
  {
    if (!lock_held) {
      lock.lock();
    }
    name_file(spec, *format, t);
    if (!lock_held) {
      lock.unlock();
    }
  }
  t.device_id = spec.recorder;
  t.officer_id = spec.officer_id;
  t.officer_name = spec.officer_name;
  t.file_type = spec.file_type;
  t.format = *format;
  t.length = spec.length;
  t.important = spec.important;
  // The expensive part (a pass over the whole content) runs without the lock, so serving goes on.
  const DockContent content(t.unique_id);
  const Digests d = digest_content(content, static_cast<std::uint64_t>(t.length));
  t.md5 = d.md5;
  t.sha256 = d.sha256;
  t.listed_md5 = spec.md5_wrong_listing ? test::md5_hex("wrong:" + t.unique_id) : t.md5;
  const test::DockEntry entry = listing_entry(spec, t);
  std::function<void(const DockFileTruth&)> callback;
  {
    if (!lock_held) {
      lock.lock();
    }
    store_file(spec, entry, t);
    callback = lock_held ? nullptr : on_added_;
    if (!lock_held) {
      lock.unlock();
    }
  }
  if (callback) {
    callback(t);
  }
  return t;
}

// With mu_ held: the file's true and listed times, its uniqueId and its name on the recorder.
void DockSim::Impl::name_file(DockFileSpec& spec, const std::string& format, DockFileTruth& t) {
  const std::int64_t now = unix_now_ms();
  t.collect_ms = spec.collect_unix_ms != 0 ? spec.collect_unix_ms : now;
  if (spec.start_unix_ms == 0 && spec.end_unix_ms == 0) {
    spec.end_unix_ms = t.collect_ms - 5'000;
    spec.start_unix_ms = spec.end_unix_ms - 60'000;
  } else if (spec.end_unix_ms == 0) {
    spec.end_unix_ms = spec.start_unix_ms;
  }
  t.start_ms = spec.start_unix_ms;
  t.end_ms = spec.end_unix_ms;
  if (spec.recorder_clock_offset_ms) {
    t.recorder_offset_ms = *spec.recorder_clock_offset_ms;
  } else if (const auto it = opt_.recorder_clock_offsets.find(spec.recorder);
             it != opt_.recorder_clock_offsets.end()) {
    t.recorder_offset_ms = it->second;
  } else {
    t.recorder_offset_ms = opt_.recorder_clock_offset_ms;
  }
  const int utc = opt_.utc_offset_min;
  t.start_time = test::camera_time(t.start_ms + t.recorder_offset_ms, utc, opt_.time_ms);
  t.end_time = test::camera_time(t.end_ms + t.recorder_offset_ms, utc, opt_.time_ms);
  t.collect_time = test::camera_time(t.collect_ms + t.recorder_offset_ms, utc, opt_.time_ms);
  t.listed_start_ms = listed_instant(t.start_ms + t.recorder_offset_ms, opt_.time_ms);
  t.listed_end_ms = listed_instant(t.end_ms + t.recorder_offset_ms, opt_.time_ms);
  t.listed_collect_ms = listed_instant(t.collect_ms + t.recorder_offset_ms, opt_.time_ms);
  // Recorders number their files; the name carries the recorder-clock start.
  const int n = ++recorder_counter_[spec.recorder];
  std::array<char, 16> num{};
  std::snprintf(num.data(), num.size(), "%06d", n % 1'000'000);
  const auto [date, hms] = name_parts(test::camera_time(t.start_ms + t.recorder_offset_ms, utc, false));
  t.unique_id = spec.unique_id.empty() ? spec.recorder + "-" + date + "-" + num.data() : spec.unique_id;
  t.file_name = date + "_" + hms + "_" + num.data() + "." + format;
  if (files_.contains(t.unique_id)) {
    throw std::invalid_argument("dock-sim: duplicate uniqueId " + t.unique_id);
  }
}

// The file's entry in a listing, with its GPS track: one fix every 5 s of the recording (at most 60), a slow
// walk from the start position.
test::DockEntry DockSim::Impl::listing_entry(const DockFileSpec& spec, const DockFileTruth& t) const {
  test::DockEntry entry{t.unique_id,  t.device_id, t.officer_id,   t.officer_name, spec.case_code,
                        t.file_name,  t.file_type, t.format,       t.length,       t.listed_md5,
                        t.start_time, t.end_time,  t.collect_time, t.important,    {}};
  std::mt19937_64 walk(mix64(fnv1a(t.unique_id) ^ 0x6A5ULL));
  double lat = spec.lat.value_or(kBaseLat + (uniform01(walk) - 0.5) * 0.002);
  double lon = spec.lon.value_or(kBaseLon + (uniform01(walk) - 0.5) * 0.002);
  const std::int64_t span = std::max<std::int64_t>(0, t.end_ms - t.start_ms);
  const std::int64_t step = std::max<std::int64_t>(5'000, span / 59 + 1);
  for (std::int64_t at = 0; at <= span; at += step) {
    entry.gps.push_back(
        {test::camera_time(t.start_ms + at + t.recorder_offset_ms, opt_.utc_offset_min, false),
         std::round(lat * 1e6) / 1e6, std::round(lon * 1e6) / 1e6});
    lat += (uniform01(walk) - 0.5) * 0.0002;
    lon += (uniform01(walk) - 0.5) * 0.0002;
  }
  return entry;
}

// With mu_ held: gives the file its sequence number and puts it on the station.
void DockSim::Impl::store_file(const DockFileSpec& spec, const test::DockEntry& entry, DockFileTruth& t) {
  if (files_.contains(t.unique_id)) {
    throw std::invalid_argument("dock-sim: duplicate uniqueId " + t.unique_id);
  }
  t.seq = next_seq_++;
  Entry e;
  e.truth = t;
  e.listing_json = test::dock_entry_json(entry).dump();
  e.md5_bad_downloads = spec.md5_bad_downloads;
  e.break_times = spec.break_times;
  e.break_after_bytes = spec.break_after_bytes;
  files_.emplace(t.unique_id, std::move(e));
  by_seq_.emplace(t.seq, t.unique_id);
  write_truth(dock_file_truth_json(t));
}

// With mu_ held: while the flood lasts, tops up the unacknowledged files after `after` to a full page.
void DockSim::Impl::flood(std::uint64_t after) {
  const std::int64_t now = unix_now_ms();
  if (!flood_started_ms_) {
    flood_started_ms_ = now;
  }
  if (static_cast<double>(now - *flood_started_ms_) > opt_.flood_s * 1000.0) {
    return;
  }
  std::size_t waiting = 0;
  for (auto it = by_seq_.upper_bound(after); it != by_seq_.end(); ++it) {
    waiting += files_.at(it->second).acked ? 0 : 1;
  }
  const auto page = static_cast<std::size_t>(std::clamp(opt_.flood_page, 1, kMaxLimit));
  for (; waiting < page; ++waiting) {
    add_file(random_spec_locked(opt_.file_bytes), true);
  }
}

void DockSim::Impl::note_completed(const std::string& id) {
  const std::lock_guard lock(mu_);
  if (const auto it = files_.find(id); it != files_.end()) {
    ++it->second.completed;
  }
}

// ---- Impl: the HTTP interface ----

DockAnswer DockSim::Impl::handle(const Request& req, std::uint64_t boot) {
  const std::lock_guard lock(mu_);
  if (stale(boot)) {
    DockAnswer a;
    a.close = true;  // the connection was opened before a restart
    return a;
  }
  const auto auth = req.find(http::field::authorization);
  if (auth == req.end() ||
      std::string_view(auth->value().data(), auth->value().size()) != "Bearer " + token_) {
    DockAnswer a = DockAnswer::error(http::status::unauthorized, "unauthorized");
    a.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"dock\"");
    return a;
  }
  const std::string_view target(req.target().data(), req.target().size());
  const auto qmark = target.find('?');
  const std::string_view path = target.substr(0, qmark);
  const auto query =
      parse_query(qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1));
  const std::string_view files_prefix = "/api/v1/files/";

  if (path == "/api/v1/status") {
    return handle_status(req);
  }
  if (path == "/api/v1/files") {
    return handle_listing(req, query);
  }
  if (path.starts_with(files_prefix)) {
    return handle_file(req, path.substr(files_prefix.size()));
  }
  return DockAnswer::error(http::status::not_found, "not found");
}

DockAnswer DockSim::Impl::handle_status(const Request& req) {
  if (req.method() != http::verb::get) {
    return DockAnswer::error(http::status::method_not_allowed, "method not allowed");
  }
  std::set<std::string> docked;
  std::int64_t pending_bytes = 0;
  for (const auto& [id, e] : files_) {
    if (!e.acked) {
      docked.insert(e.truth.device_id);
      pending_bytes += e.truth.length;
    }
  }
  test::DockStatus status{
      opt_.station_id,
      opt_.firmware,
      test::camera_time(unix_now_ms() + opt_.station_clock_offset_ms, opt_.utc_offset_min, false),
      opt_.slots,
      {},
      std::max<std::int64_t>(0, opt_.capacity_bytes - pending_bytes)};
  for (const auto& r : docked) {
    if (status.docked.size() >= static_cast<std::size_t>(std::max(0, opt_.slots))) {
      break;
    }
    status.docked.push_back(r);
  }
  DockAnswer a;
  a.body = test::dock_status_json(status);
  return a;
}

DockAnswer DockSim::Impl::handle_listing(const Request& req,
                                         const std::map<std::string, std::string>& query) {
  if (req.method() != http::verb::get) {
    return DockAnswer::error(http::status::method_not_allowed, "method not allowed");
  }
  int limit = kDefaultLimit;
  if (const auto it = query.find("limit"); it != query.end()) {
    long long v = 0;
    const auto r = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
    if (r.ec != std::errc() || r.ptr != it->second.data() + it->second.size() || v <= 0) {
      return DockAnswer::error(http::status::bad_request, "bad limit");
    }
    limit = static_cast<int>(std::min<long long>(v, kMaxLimit));
  }
  std::uint64_t after = 0;
  std::string given;
  if (const auto it = query.find("after"); it != query.end()) {
    given = it->second;
    // "<boot tag: 8 hex><seq: 16 hex>": valid only in this boot and for a sequence number handed out.
    bool ok = given.size() == 24 && given.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (ok) {
      std::uint32_t tag = 0;
      std::from_chars(given.data(), given.data() + 8, tag, 16);
      std::from_chars(given.data() + 8, given.data() + 24, after, 16);
      ok = tag == boot_tag_ && after < next_seq_;
    }
    if (!ok) {
      return DockAnswer::error(http::status::bad_request, "bad cursor");
    }
  }
  if (opt_.flood_s > 0.0) {
    flood(after);
  }
  if (opt_.ignore_limit) {
    limit = std::clamp(opt_.flood_page, 1, kMaxLimit);
  }
  std::vector<std::string> entries;
  std::uint64_t last = after;
  for (auto it = by_seq_.upper_bound(after); it != by_seq_.end() && std::ssize(entries) < limit; ++it) {
    const Entry& e = files_.at(it->second);
    if (e.acked) {
      continue;
    }
    entries.push_back(e.listing_json);
    last = it->first;
  }
  DockAnswer a;
  a.body = test::dock_listing_json(entries, entries.empty() && !given.empty() ? given : cursor(last));
  return a;
}

DockAnswer DockSim::Impl::handle_file(const Request& req, std::string_view rest) {
  const auto slash = rest.find('/');
  const std::string_view action =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  const auto id = percent_decode(rest.substr(0, slash), false);
  if (!id || (action != "content" && action != "ack")) {
    return DockAnswer::error(http::status::not_found, "not found");
  }
  if (action == "content") {
    return handle_content(req, *id);
  }
  return handle_ack(req, *id);
}

DockAnswer DockSim::Impl::handle_content(const Request& req, const std::string& id) {
  if (req.method() != http::verb::get) {
    return DockAnswer::error(http::status::method_not_allowed, "method not allowed");
  }
  const auto it = files_.find(id);
  if (it == files_.end()) {
    return DockAnswer::error(http::status::not_found, "not found");
  }
  Entry& e = it->second;
  const auto length = static_cast<std::uint64_t>(e.truth.length);
  std::uint64_t from = 0;
  std::uint64_t to = length;
  bool ranged = false;
  if (const auto h = req.find(http::field::range); h != req.end()) {
    if (const auto r = requested_range(std::string_view(h->value().data(), h->value().size()), length)) {
      if (r->from >= length) {
        DockAnswer a = DockAnswer::error(http::status::range_not_satisfiable, "range not satisfiable");
        a.headers.emplace_back("Content-Range", "bytes */" + std::to_string(length));
        return a;
      }
      ranged = true;
      from = r->from;
      to = r->to;
    }
  }
  DockAnswer a;
  a.transfer = start_download(e, from, to);
  a.status = ranged ? http::status::partial_content : http::status::ok;
  a.headers.emplace_back("Content-Type", content_type_of(e.truth.format));
  a.headers.emplace_back("Accept-Ranges", "bytes");
  if (ranged) {
    a.headers.emplace_back("Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(to - 1) +
                                                "/" + std::to_string(length));
  }
  return a;
}

// Counts a content request for [from, to) and plans its faults: the corrupted byte, the cut connection.
DockTransfer DockSim::Impl::start_download(Entry& e, std::uint64_t from, std::uint64_t to) {
  const auto length = static_cast<std::uint64_t>(e.truth.length);
  ++e.gets;
  if (from == 0) {
    ++e.attempts;  // a new download; a ranged request resumes the one in progress
    e.current_corrupt = static_cast<int>(e.attempts) <= e.md5_bad_downloads;
  }
  DockTransfer t;
  t.unique_id = e.truth.unique_id;
  t.content = DockContent(e.truth.unique_id);
  t.from = from;
  t.to = to;
  if (e.current_corrupt && length > 0) {
    t.corrupt_at = length / 2;
  }
  if (static_cast<int>(e.gets) <= e.break_times && e.break_after_bytes > 0 &&
      static_cast<std::uint64_t>(e.break_after_bytes) < to - from) {
    t.break_after = static_cast<std::uint64_t>(e.break_after_bytes);
  }
  return t;
}

DockAnswer DockSim::Impl::handle_ack(const Request& req, const std::string& id) {
  if (req.method() != http::verb::post) {
    return DockAnswer::error(http::status::method_not_allowed, "method not allowed");
  }
  const auto it = files_.find(id);
  DockAckRecord rec;
  rec.unique_id = id;
  rec.time_ms = unix_now_ms();
  if (it == files_.end()) {
    rec.outcome = "unknown";
    log_ack(rec);
    return DockAnswer::error(http::status::not_found, "not found");
  }
  const auto body = nlohmann::json::parse(req.body(), nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("sha256") || !body["sha256"].is_string()) {
    return DockAnswer::error(http::status::bad_request, "bad request");
  }
  rec.sha256 = body["sha256"].get<std::string>();
  std::string lower = rec.sha256;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower != it->second.truth.sha256) {
    rec.outcome = "mismatch";
    log_ack(rec);
    return DockAnswer::error(http::status::conflict, "checksum mismatch");
  }
  it->second.acked = true;
  rec.outcome = "acked";
  log_ack(rec);
  DockAnswer a;
  a.body = test::dock_acked_json();
  return a;
}

// ---- DockSim ----

DockSim::DockSim(asio::io_context& io, DockOptions opt) : impl_(std::make_shared<Impl>(io, std::move(opt))) {}
DockSim::~DockSim() {
  impl_->stop();
}
bool DockSim::start() {
  return impl_->start();
}
std::uint16_t DockSim::port() const {
  return impl_->port_;
}
void DockSim::stop() {
  impl_->stop();
}
DockFileTruth DockSim::add_file(DockFileSpec spec) {
  return impl_->add_file(std::move(spec));
}
DockFileSpec DockSim::random_spec(std::int64_t bytes) {
  return impl_->random_spec(bytes);
}
std::vector<DockFileTruth> DockSim::add_burst(std::size_t count, std::int64_t bytes) {
  std::vector<DockFileSpec> specs;
  {
    const std::lock_guard lock(impl_->mu_);
    for (std::size_t i = 0; i < count; ++i) {
      specs.push_back(impl_->random_spec_locked(bytes));
    }
  }
  const std::int64_t now = unix_now_ms();
  std::vector<DockFileTruth> out;
  for (auto& s : specs) {
    s.collect_unix_ms = now;  // one instant: the whole shift docks together
    out.push_back(impl_->add_file(std::move(s)));
  }
  return out;
}
void DockSim::restart(double outage_s) {
  impl_->restart(outage_s);
}
void DockSim::set_token(std::string token) {
  const std::lock_guard lock(impl_->mu_);
  impl_->token_ = std::move(token);
}
std::vector<DockAckRecord> DockSim::acks() const {
  const std::lock_guard lock(impl_->mu_);
  std::vector<DockAckRecord> out;
  std::copy_if(impl_->ack_log_.begin(), impl_->ack_log_.end(), std::back_inserter(out),
               [](const DockAckRecord& r) { return r.outcome == "acked"; });
  return out;
}
std::vector<DockAckRecord> DockSim::ack_log() const {
  const std::lock_guard lock(impl_->mu_);
  return impl_->ack_log_;
}
bool DockSim::acked(const std::string& unique_id) const {
  const std::lock_guard lock(impl_->mu_);
  const auto it = impl_->files_.find(unique_id);
  return it != impl_->files_.end() && it->second.acked;
}
std::size_t DockSim::downloads_started(const std::string& unique_id) const {
  const std::lock_guard lock(impl_->mu_);
  const auto it = impl_->files_.find(unique_id);
  return it == impl_->files_.end() ? 0 : it->second.gets;
}
std::size_t DockSim::downloads_completed(const std::string& unique_id) const {
  const std::lock_guard lock(impl_->mu_);
  const auto it = impl_->files_.find(unique_id);
  return it == impl_->files_.end() ? 0 : it->second.completed;
}
std::size_t DockSim::files_pending() const {
  const std::lock_guard lock(impl_->mu_);
  return static_cast<std::size_t>(std::count_if(impl_->files_.begin(), impl_->files_.end(),
                                                [](const auto& kv) { return !kv.second.acked; }));
}
std::vector<DockFileTruth> DockSim::files() const {
  const std::lock_guard lock(impl_->mu_);
  std::vector<DockFileTruth> out;
  for (const auto& [seq, id] : impl_->by_seq_) {
    out.push_back(impl_->files_.at(id).truth);
  }
  return out;
}
std::size_t DockSim::restarts() const {
  const std::lock_guard lock(impl_->mu_);
  return impl_->restarts_;
}
void DockSim::on_file_added(std::function<void(const DockFileTruth&)> callback) {
  const std::lock_guard lock(impl_->mu_);
  impl_->on_added_ = std::move(callback);
}

std::string dock_file_truth_json(const DockFileTruth& t) {
  const ojson j = {
      {"event", "file"},
      {"seq", t.seq},
      {"uniqueId", t.unique_id},
      {"deviceId", t.device_id},
      {"officerId", t.officer_id},
      {"fileType", t.file_type},
      {"length", t.length},
      {"md5", t.md5},
      {"listed_md5", t.listed_md5},
      {"sha256", t.sha256},
      {"start_ms", t.start_ms},
      {"end_ms", t.end_ms},
      {"collect_ms", t.collect_ms},
      {"recorder_offset_ms", t.recorder_offset_ms},
      {"startTime", t.start_time},
      {"endTime", t.end_time},
      {"collectTime", t.collect_time},
      {"important", t.important},
  };
  return j.dump();
}

std::string dock_ack_truth_json(const DockAckRecord& a) {
  const ojson j = {
      {"event", "ack"},       {"uniqueId", a.unique_id}, {"time_ms", a.time_ms},
      {"outcome", a.outcome}, {"sha256", a.sha256},
  };
  return j.dump();
}

namespace {

// Command-line values that become DockOptions only after checks (apply_dock_args).
struct DockArgs {
  std::string token_file;
  std::string utc = "+08:00";
  std::int64_t file_kb = -1;
  std::int64_t file_bytes = -1;
  std::vector<std::string> recorder_offsets;
};

void add_dock_station_options(CLI::App& app, DockOptions& opt, DockArgs& args) {
  app.add_option("--port", opt.port, "TCP port (0 = any; printed as 'listening <port>')");
  app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
  auto* tok =
      app.add_option("--token", opt.token, "Bearer token every request must carry")->capture_default_str();
  app.add_option("--token-file", args.token_file, "read the token from this file (trailing newline ignored)")
      ->excludes(tok);
  app.add_option("--station-id", opt.station_id, "stationId in /status")->capture_default_str();
  app.add_option("--firmware", opt.firmware, "firmware in /status")->capture_default_str();
  app.add_option("--slots", opt.slots, "slots in /status")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--capacity-bytes", opt.capacity_bytes,
                 "storage; freeBytes = capacity - unacknowledged bytes")
      ->capture_default_str();
  app.add_option("--station-clock-offset-ms", opt.station_clock_offset_ms,
                 "station clock minus true time, ms (the /status time)")
      ->capture_default_str();
  app.add_option(
         "--recorder-clock-offset-ms", opt.recorder_clock_offset_ms,
         "recorder clock minus true time, ms, for every recorder (listed start/end/collect/gps times)")
      ->capture_default_str();
  app.add_option("--recorder-offset", args.recorder_offsets,
                 "one recorder's clock offset, ID=MS (repeatable; overrides --recorder-clock-offset-ms)");
  app.add_option("--utc-offset", args.utc, "offset written in every time, e.g. +08:00")
      ->capture_default_str();
  app.add_flag("--time-ms", opt.time_ms,
               "list times with milliseconds (default: whole seconds, as the spec)");
  app.add_option("--seed", opt.seed, "seed for recorders, officers, types and spans of generated files")
      ->capture_default_str();
}

void add_dock_file_options(CLI::App& app, DockOptions& opt, DockArgs& args) {
  app.add_option("--files", opt.files, "files to generate (random recorders and officers)")
      ->capture_default_str();
  auto* kb = app.add_option("--file-kb", args.file_kb, "size of each generated file, KiB (default 1024)")
                 ->check(CLI::NonNegativeNumber);
  app.add_option("--file-bytes", args.file_bytes, "size of each generated file, bytes (several GB is fine)")
      ->check(CLI::NonNegativeNumber)
      ->excludes(kb);
  app.add_option("--file-interval-s", opt.file_interval_s,
                 "0: all --files at start; else one every S seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--burst-at-s", opt.burst_at_s,
                 "shift change: dock --burst-files files at once, S seconds in");
  app.add_option("--burst-files", opt.burst_files, "files in the shift-change burst")->capture_default_str();
}

// Faults, restarts, the hostile modes and the ground truth; and the help's footer.
void add_dock_fault_options(CLI::App& app, DockOptions& opt) {
  app.add_option("--fault-every", opt.fault_every,
                 "the faults below hit every K-th generated file (1 = every file)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--md5-bad-downloads", opt.md5_bad_downloads,
                 "the first N downloads (GETs from byte 0) of a faulted file carry one corrupted byte")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--md5-wrong-listing", opt.md5_wrong_listing,
               "a faulted file's listed md5 is permanently wrong (its content and sha256 are right)");
  app.add_option("--break-after-bytes", opt.break_after_bytes,
                 "cut the connection after this many body bytes of a response (with --break-times)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--break-times", opt.break_times,
                 "the first M content GETs of a faulted file are cut (resumes count as GETs)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--restart-every-s", opt.restart_every_s,
                 "restart every S seconds: cursors forgotten (old ones: 400 bad cursor), connections closed, "
                 "unacknowledged files listed again from the start")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--restart-outage-s", opt.restart_outage_s, "how long a restart refuses connections")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--flood-s", opt.flood_s,
                 "hostile: for S seconds from the first listing, every listing finds --flood-page new files "
                 "(random, --file-bytes each) after its cursor")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--flood-page", opt.flood_page, "files per flooded listing")
      ->check(CLI::Range(1, kMaxLimit))
      ->capture_default_str();
  app.add_flag("--ignore-limit", opt.ignore_limit,
               "hostile: every listing holds --flood-page files whatever `limit` asked for");
  app.add_option("--ground-truth", opt.ground_truth,
                 "JSON lines: one per file added (true span, md5, sha256), per ack answer, per restart");
  app.footer(
      "Listing: limit defaults to 50, values above 500 are served as 500, limit <= 0 or not a number is "
      "400 {\"error\":\"bad limit\"}. Content is generated from the uniqueId (never stored); md5 and sha256 "
      "are computed when a file is added (a pass over its content).");
}

// Puts the checked command-line values into `opt`; false, with a message on stderr, when one is wrong.
bool apply_dock_args(const DockArgs& args, DockOptions& opt) {
  if (!args.token_file.empty()) {
    std::ifstream in(args.token_file, std::ios::binary);
    if (!in) {
      std::cerr << "dock: cannot read --token-file " << args.token_file << "\n";
      return false;
    }
    std::ostringstream os;
    os << in.rdbuf();
    opt.token = os.str();
    while (!opt.token.empty() && (opt.token.back() == '\n' || opt.token.back() == '\r')) {
      opt.token.pop_back();
    }
  }
  if (opt.token.empty()) {
    std::cerr << "dock: the token must not be empty\n";
    return false;
  }
  const auto off = test::parse_utc_offset(args.utc);
  if (!off) {
    std::cerr << "dock: --utc-offset must look like +08:00\n";
    return false;
  }
  opt.utc_offset_min = *off;
  if (args.file_kb >= 0) {
    opt.file_bytes = args.file_kb * 1024;
  }
  if (args.file_bytes >= 0) {
    opt.file_bytes = args.file_bytes;
  }
  for (const auto& r : args.recorder_offsets) {
    const auto eq = r.find('=');
    std::int64_t ms = 0;
    const char* end = r.data() + r.size();
    if (eq == std::string::npos || eq == 0 || std::from_chars(r.data() + eq + 1, end, ms).ptr != end) {
      std::cerr << "dock: --recorder-offset must look like BWC-00917=5000, got " << r << "\n";
      return false;
    }
    opt.recorder_clock_offsets[r.substr(0, eq)] = ms;
  }
  return true;
}

// Serves until SIGINT or SIGTERM.
int serve_dock(const DockOptions& opt) {
  asio::io_context io;
  DockSim sim(io, opt);
  if (!sim.start()) {
    return 1;
  }
  std::cout << "listening " << sim.port() << std::endl;  // first line, flushed: harnesses wait for it
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code& ec, int) {
    if (!ec) {
      sim.stop();
    }
  });
  io.run();
  return 0;
}

}  // namespace

int run_dock_sim(int argc, char** argv) {
  DockOptions opt;
  CLI::App app{"Recorder docking station simulator: serves specs/recorder-dock.md over HTTP", "dock"};
  DockArgs args;
  add_dock_station_options(app, opt, args);
  add_dock_file_options(app, opt, args);
  add_dock_fault_options(app, opt);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!apply_dock_args(args, opt)) {
    return 2;
  }
  return serve_dock(opt);
}

}  // namespace cpd::sim
