// A tiny docking station for the recorder adapter's unit tests (not the simulator): status, listings with
// a cursor, file content with Range, acks; plus faults on demand (broken transfers, wrong md5, 409 on ack,
// a lost cursor, held downloads to count concurrency). Synchronous Beast, one thread per connection.
#pragma once

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/dock_messages.h"

namespace cpd::adapters::test {

// Hex digest of `bytes` by OpenSSL directly (independent of the FileDigest under test).
inline std::string openssl_hex(const EVP_MD* md, const std::string& bytes) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), out, &n, md, nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < n; ++i) {
    s += kHex[out[i] >> 4];
    s += kHex[out[i] & 15];
  }
  return s;
}
inline std::string md5_of(const std::string& bytes) {
  return openssl_hex(EVP_md5(), bytes);
}
inline std::string sha256_of(const std::string& bytes) {
  return openssl_hex(EVP_sha256(), bytes);
}

// Deterministic pseudo-random bytes (no repeating pattern, so a misplaced chunk changes the digest).
inline std::string test_bytes(std::size_t n, std::uint32_t seed) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761U + 1;
  for (auto& c : s) {
    x = x * 1664525U + 1013904223U;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

struct FakeDockFile {
  std::string unique_id;
  std::string content;
  std::string listed_md5;  // "" = the real md5 of content
  std::string start_time = "2026-11-27T11:37:12+08:00";
  std::string end_time = "2026-11-27T11:37:40+08:00";
  std::string collect_time = "2026-11-27T11:38:00+08:00";
  int breaks_left = 0;              // content requests still to cut off after break_at bytes
  std::size_t break_at = 0;         // absolute offset where such a transfer stops
  std::string raw_entry;            // non-empty: listed as these bytes exactly (a malformed entry)
  std::int64_t listed_length = -1;  // >= 0: the listing's length (the content is served as it is)
  bool not_found = false;           // listed, but its content answers 404
};

struct FakeDockAck {
  std::string unique_id;
  std::string sha256;
};

class FakeDock {
 public:
  explicit FakeDock(std::string token = "secret")
      : token_(std::move(token)),
        acceptor_(io_, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~FakeDock() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      for (auto* s : sockets_) {
        boost::system::error_code ignored;
        s->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
      }
    }
    cv_.notify_all();
    boost::system::error_code ignored;
    boost::asio::ip::tcp::socket waker(io_);
    waker.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port_), ignored);
    accept_thread_.join();
    for (auto& t : threads_) {
      t.join();
    }
  }

  FakeDock(const FakeDock&) = delete;
  FakeDock& operator=(const FakeDock&) = delete;

  std::uint16_t port() const { return port_; }

  // ---- set-up ----
  void add_file(FakeDockFile f) {
    std::lock_guard lock(mutex_);
    if (f.listed_md5.empty()) {
      f.listed_md5 = md5_of(f.content);
    }
    files_.push_back(std::move(f));
    cv_.notify_all();
  }
  void set_ack_status(unsigned status) {
    std::lock_guard lock(mutex_);
    ack_status_ = status;
  }
  // The next listing with a cursor answers 400 (the station lost its cursor state).
  void lose_cursor_once() {
    std::lock_guard lock(mutex_);
    lose_cursor_ = true;
  }
  // Content requests wait until `n` are under way together (at most 5 s), then `grace` more, so a client
  // that starts more than it may is seen doing so.
  void hold_downloads(int n, std::chrono::milliseconds grace) {
    std::lock_guard lock(mutex_);
    hold_n_ = n;
    hold_grace_ = grace;
  }
  void ignore_range(bool on) {
    std::lock_guard lock(mutex_);
    ignore_range_ = on;
  }
  // Listings serve every file after the cursor, whatever the limit (a hostile station).
  void ignore_limit(bool on) {
    std::lock_guard lock(mutex_);
    ignore_limit_ = on;
  }

  // ---- observations ----
  int content_requests(const std::string& id) const {
    std::lock_guard lock(mutex_);
    auto it = content_requests_.find(id);
    return it == content_requests_.end() ? 0 : it->second;
  }
  std::vector<std::string> ranges(const std::string& id) const {
    std::lock_guard lock(mutex_);
    auto it = ranges_.find(id);
    return it == ranges_.end() ? std::vector<std::string>{} : it->second;
  }
  std::vector<FakeDockAck> acks() const {
    std::lock_guard lock(mutex_);
    return acks_;
  }
  int max_concurrent() const {
    std::lock_guard lock(mutex_);
    return max_concurrent_;
  }
  int listings() const {
    std::lock_guard lock(mutex_);
    return listings_;
  }
  int bad_cursor_answers() const {
    std::lock_guard lock(mutex_);
    return bad_cursor_answers_;
  }
  int unauthorized() const {
    std::lock_guard lock(mutex_);
    return unauthorized_;
  }
  std::vector<std::string> auth_headers() const {
    std::lock_guard lock(mutex_);
    return auth_headers_;
  }
  // Waits (at most `timeout`) until pred() holds; pred runs under the server's lock.
  bool wait_for(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, pred);
  }
  // Unlocked accessors for use inside wait_for predicates.
  int content_requests_locked(const std::string& id) const {
    auto it = content_requests_.find(id);
    return it == content_requests_.end() ? 0 : it->second;
  }
  std::size_t acks_locked() const { return acks_.size(); }
  int listings_locked() const { return listings_; }
  // The `limit` of every listing request, in order.
  std::vector<std::size_t> limits() const {
    std::lock_guard lock(mutex_);
    return limits_;
  }
  int unauthorized_locked() const { return unauthorized_; }

 private:
  using tcp = boost::asio::ip::tcp;
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  void accept_loop() {
    while (true) {
      auto socket = std::make_unique<tcp::socket>(io_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      std::lock_guard lock(mutex_);
      if (stopping_ || ec) {
        return;
      }
      threads_.emplace_back([this, s = std::move(socket)]() mutable { serve(std::move(s)); });
    }
  }

  void serve(std::unique_ptr<tcp::socket> socket) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        return;
      }
      sockets_.push_back(socket.get());
    }
    boost::beast::flat_buffer buffer;
    Request req;
    boost::system::error_code ec;
    boost::beast::http::read(*socket, buffer, req, ec);
    if (!ec) {
      handle(*socket, req);
    }
    std::lock_guard lock(mutex_);
    std::erase(sockets_, socket.get());
    socket->shutdown(tcp::socket::shutdown_both, ec);
    socket->close(ec);
  }

  static void send(tcp::socket& socket, unsigned status, std::string body,
                   const std::string& content_type = "application/json") {
    Response res{static_cast<boost::beast::http::status>(status), 11};
    res.set(boost::beast::http::field::content_type, content_type);
    res.keep_alive(false);
    res.body() = std::move(body);
    res.prepare_payload();
    boost::system::error_code ec;
    boost::beast::http::write(socket, res, ec);
  }

  static std::string query_value(const std::string& query, const std::string& name) {
    std::size_t pos = 0;
    while (pos <= query.size()) {
      const std::size_t amp = query.find('&', pos);
      const std::string part = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
      if (part.rfind(name + "=", 0) == 0) {
        return part.substr(name.size() + 1);
      }
      if (amp == std::string::npos) {
        break;
      }
      pos = amp + 1;
    }
    return {};
  }

  static std::string entry(const FakeDockFile& f) {
    cpd::test::DockEntry e;
    e.unique_id = f.unique_id;
    e.file_name = f.unique_id + ".mp4";
    e.length = f.listed_length >= 0 ? f.listed_length : static_cast<std::int64_t>(f.content.size());
    e.md5 = f.listed_md5;
    e.start_time = f.start_time;
    e.end_time = f.end_time;
    e.collect_time = f.collect_time;
    e.important = true;
    e.gps = {{f.start_time, 30.274085, 120.15507}};
    return cpd::test::dock_entry_json(e).dump();
  }

  void handle(tcp::socket& socket, const Request& req) {
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    const std::string query =
        target.find('?') == std::string::npos ? "" : target.substr(target.find('?') + 1);
    {
      std::lock_guard lock(mutex_);
      auth_headers_.emplace_back(req[boost::beast::http::field::authorization]);
      if (req[boost::beast::http::field::authorization] != "Bearer " + token_) {
        ++unauthorized_;
        cv_.notify_all();
        send(socket, 401, cpd::test::dock_error_json("unauthorized"));
        return;
      }
    }
    constexpr std::string_view kFiles = "/api/v1/files";
    if (path == "/api/v1/status" && req.method() == boost::beast::http::verb::get) {
      cpd::test::DockStatus status;
      status.time = "2026-11-27T11:38:50+08:00";
      status.docked = {"BWC-00917"};
      send(socket, 200, cpd::test::dock_status_json(status));
      return;
    }
    if (path == kFiles && req.method() == boost::beast::http::verb::get) {
      list(socket, query);
      return;
    }
    if (path.rfind(std::string(kFiles) + "/", 0) == 0) {
      const std::string rest = path.substr(kFiles.size() + 1);
      const std::size_t slash = rest.find('/');
      const std::string id = rest.substr(0, slash);
      const std::string what = slash == std::string::npos ? "" : rest.substr(slash + 1);
      if (what == "content" && req.method() == boost::beast::http::verb::get) {
        content(socket, id, std::string(req[boost::beast::http::field::range]));
        return;
      }
      if (what == "ack" && req.method() == boost::beast::http::verb::post) {
        ack(socket, id, req.body());
        return;
      }
    }
    send(socket, 404, cpd::test::dock_error_json("not found"));
  }

  void list(tcp::socket& socket, const std::string& query) {
    std::unique_lock lock(mutex_);
    ++listings_;
    cv_.notify_all();
    const std::string after = query_value(query, "after");
    const std::string limit_text = query_value(query, "limit");
    const std::size_t limit = limit_text.empty() ? 50 : std::stoul(limit_text);
    std::size_t from = 0;
    if (!after.empty()) {
      const bool valid = after.size() > 1 && after[0] == 'c' &&
                         after.find_first_not_of("0123456789", 1) == std::string::npos &&
                         std::stoul(after.substr(1)) <= files_.size();
      if (lose_cursor_ || !valid) {
        lose_cursor_ = false;
        ++bad_cursor_answers_;
        lock.unlock();
        send(socket, 400, cpd::test::dock_error_json("bad cursor"));
        return;
      }
      from = std::stoul(after.substr(1));
    }
    limits_.push_back(limit);
    // A raw entry may hold bytes no JSON library would write: spliced in as it is.
    std::vector<std::string> entries;
    std::size_t i = from;
    for (std::size_t n = 0; i < files_.size() && (n < limit || ignore_limit_); ++i, ++n) {
      entries.push_back(files_[i].raw_entry.empty() ? entry(files_[i]) : files_[i].raw_entry);
    }
    lock.unlock();
    send(socket, 200, cpd::test::dock_listing_json(entries, "c" + std::to_string(i)));
  }

  void content(tcp::socket& socket, const std::string& id, const std::string& range) {
    std::unique_lock lock(mutex_);
    auto it =
        std::find_if(files_.begin(), files_.end(), [&](const FakeDockFile& f) { return f.unique_id == id; });
    if (it != files_.end() && it->not_found) {
      ++content_requests_[id];
      cv_.notify_all();
    }
    if (it == files_.end() || it->not_found) {
      lock.unlock();
      send(socket, 404, cpd::test::dock_error_json("not found"));
      return;
    }
    ++content_requests_[id];
    ranges_[id].push_back(range);
    const std::string content_bytes = it->content;  // a copy: the vector may grow meanwhile
    std::size_t from = 0;
    if (!range.empty() && !ignore_range_) {
      from = std::stoul(range.substr(std::string("bytes=").size()));
    }
    std::size_t end = content_bytes.size();
    if (it->breaks_left > 0) {
      --it->breaks_left;
      end = std::max(from, std::min(end, it->break_at));
    }
    const bool ranged = !range.empty() && !ignore_range_;
    ++concurrent_;
    max_concurrent_ = std::max(max_concurrent_, concurrent_);
    cv_.notify_all();
    if (hold_n_ > 0) {
      cv_.wait_for(lock, std::chrono::seconds(5), [&] { return concurrent_ >= hold_n_ || stopping_; });
      cv_.wait_for(lock, hold_grace_, [&] { return stopping_; });  // pacing: let extra starts show up
    }
    lock.unlock();

    std::string head = std::string(ranged ? "HTTP/1.1 206 Partial Content\r\n" : "HTTP/1.1 200 OK\r\n") +
                       "Content-Type: video/mp4\r\nConnection: close\r\nContent-Length: " +
                       std::to_string(content_bytes.size() - from) + "\r\n";
    if (ranged) {
      head += "Content-Range: bytes " + std::to_string(from) + "-" +
              std::to_string(content_bytes.size() - 1) + "/" + std::to_string(content_bytes.size()) + "\r\n";
    }
    head += "\r\n";
    boost::system::error_code ec;
    boost::asio::write(socket, boost::asio::buffer(head), ec);
    // All but the last byte, then the count goes down, then the last byte: the client cannot have the
    // whole file (and start another) before this download stops counting as concurrent.
    const std::size_t n = end - from;
    if (!ec && n > 1) {
      boost::asio::write(socket, boost::asio::buffer(content_bytes.data() + from, n - 1), ec);
    }
    {
      std::lock_guard relock(mutex_);
      --concurrent_;
      cv_.notify_all();
    }
    if (!ec && n > 0) {
      boost::asio::write(socket, boost::asio::buffer(content_bytes.data() + from + n - 1, 1), ec);
    }
  }

  void ack(tcp::socket& socket, const std::string& id, const std::string& body) {
    unsigned status = 200;
    {
      std::lock_guard lock(mutex_);
      auto it = std::find_if(files_.begin(), files_.end(),
                             [&](const FakeDockFile& f) { return f.unique_id == id; });
      const auto j = nlohmann::json::parse(body, nullptr, false);
      const std::string sha = j.is_object() && j.contains("sha256") && j["sha256"].is_string()
                                  ? j["sha256"].get<std::string>()
                                  : std::string("<bad body>");
      acks_.push_back({id, sha});
      cv_.notify_all();
      status = it == files_.end() ? 404 : ack_status_;
    }
    send(socket, status,
         status == 200   ? cpd::test::dock_acked_json()
         : status == 409 ? cpd::test::dock_error_json("checksum mismatch")
                         : cpd::test::dock_error_json("not found"));
  }

  const std::string token_;
  boost::asio::io_context io_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::thread accept_thread_;
  std::vector<std::thread> threads_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<tcp::socket*> sockets_;
  std::vector<FakeDockFile> files_;
  unsigned ack_status_ = 200;
  bool lose_cursor_ = false;
  bool ignore_range_ = false;
  bool ignore_limit_ = false;
  std::vector<std::size_t> limits_;
  int hold_n_ = 0;
  std::chrono::milliseconds hold_grace_{0};
  std::map<std::string, int> content_requests_;
  std::map<std::string, std::vector<std::string>> ranges_;
  std::vector<FakeDockAck> acks_;
  int concurrent_ = 0;
  int max_concurrent_ = 0;
  int listings_ = 0;
  int bad_cursor_answers_ = 0;
  int unauthorized_ = 0;
  std::vector<std::string> auth_headers_;
};

}  // namespace cpd::adapters::test
