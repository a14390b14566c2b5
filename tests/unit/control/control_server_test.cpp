// ControlServer over a real unix socket in a temp dir. The io_context runs on the test thread, driven by
// the client helper while it waits for bytes, so every step happens in a known order (no sleeps).
#include "daemon/control/control_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "daemon/core/encoding.h"

namespace cpd::control {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

// Resident set of this process (VmRSS), kB.
long rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

fs::path make_temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "cpd-control-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
  }
  return tmpl;
}

// A JWS-shaped string whose payload names type and time_ms (the server reads them when not given).
std::string fake_jws(std::uint64_t seq, const std::string& type, std::size_t pad = 0) {
  const json body = {{"seq", seq},
                     {"type", type},
                     {"time_ms", 1700000000000 + static_cast<std::int64_t>(seq)},
                     {"pad", std::string(pad, 'x')}};
  return base64url_encode(R"({"alg":"EdDSA"})") + "." + base64url_encode(body.dump()) + "." +
         base64url_encode("signature");
}

class ControlServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (int fd : fds_) {
      ::close(fd);
    }
    fs::remove_all(dir_);
  }

  std::string sock_path() const { return (dir_ / "ctl.sock").string(); }

  std::unique_ptr<ControlServer> make_server(ControlLimits limits = {}) {
    return std::make_unique<ControlServer>(
        io_, sock_path(),
        [this] {
          ++status_calls_;
          EXPECT_EQ(std::this_thread::get_id(), test_thread_) << "provider runs on the io thread";
          json snapshot = {{"devices", {{"radar-1", {{"kind", "radar"}, {"state", "connected"}}}}},
                           {"backlog", 3},
                           {"calls", status_calls_}};
          if (!status_pad_.empty()) {
            snapshot["pad"] = status_pad_;  // a daemon with many devices answers with kilobytes
          }
          return snapshot;
        },
        limits);
  }

  // A non-blocking client connection; -1 with errno set on failure.
  int connect_client() {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock_path().c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      const int err = errno;
      ::close(fd);
      errno = err;
      return -1;
    }
    fds_.push_back(fd);
    return fd;
  }

  void send_all(int fd, const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EAGAIN) {
        io_.run_one_for(10ms);
      } else {
        FAIL() << "send: " << std::strerror(errno);
      }
    }
  }

  // The next line from the server (without '\n'); nullopt at EOF. Runs the io_context while waiting.
  std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout = 10s) {
    auto& buf = pending_[fd];
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (const auto nl = buf.find('\n'); nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return line;
      }
      char chunk[65536];
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) {
        buf.append(chunk, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        return std::nullopt;
      }
      if (std::chrono::steady_clock::now() > end) {
        ADD_FAILURE() << "no line from the server in time";
        return std::nullopt;
      }
      io_.run_one_for(10ms);
    }
  }

  json request(int fd, const std::string& line) {
    send_all(fd, line + "\n");
    auto reply = read_line(fd);
    if (!reply) {
      ADD_FAILURE() << "connection closed instead of a reply to " << line;
      return nullptr;
    }
    return json::parse(*reply);
  }

  template <class Pred>
  bool pump_until(Pred pred, std::chrono::milliseconds timeout = 10s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred() && std::chrono::steady_clock::now() < end) {
      io_.run_one_for(10ms);
    }
    return pred();
  }

  fs::path dir_ = make_temp_dir();
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{io_.get_executor()};
  std::thread::id test_thread_ = std::this_thread::get_id();
  int status_calls_ = 0;
  std::string status_pad_;
  std::vector<int> fds_;
  std::map<int, std::string> pending_;
};

TEST_F(ControlServerTest, StatusRoundTripKeepsTheConnectionForMoreRequests) {
  auto server = make_server();
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const json first = request(fd, R"({"cmd":"status"})");
  EXPECT_EQ(first["devices"]["radar-1"]["state"], "connected");
  EXPECT_EQ(first["backlog"], 3);
  EXPECT_EQ(first["calls"], 1);
  const json second = request(fd, R"({"cmd":"status"})");
  EXPECT_EQ(second["calls"], 2) << "a fresh snapshot per request";
  EXPECT_EQ(server->clients(), 1u);
}

TEST_F(ControlServerTest, BadRequestsAreAnsweredWithAnErrorAndTheConnectionStays) {
  auto server = make_server();
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  const json unknown = request(fd, R"({"cmd":"reboot"})");
  EXPECT_NE(unknown.value("error", "").find("unknown cmd 'reboot'"), std::string::npos) << unknown;
  const json garbage = request(fd, "not json at all");
  EXPECT_NE(garbage.value("error", "").find("not JSON"), std::string::npos) << garbage;
  const json no_cmd = request(fd, R"({"command":"status"})");
  EXPECT_TRUE(no_cmd.contains("error"));
  EXPECT_EQ(request(fd, R"({"cmd":"status"})")["backlog"], 3);
}

TEST_F(ControlServerTest, TailReceivesCommittedRecordsInOrder) {
  auto server = make_server();
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(server->tail_clients(), 0u);
  EXPECT_EQ(request(fd, R"({"cmd":"tail"})")["tail"], "started");
  EXPECT_EQ(server->tail_clients(), 1u);

  // Committed from another thread, as the store worker does: single records and batches.
  std::thread store_worker([&] {
    for (std::uint64_t seq = 1; seq <= 50; ++seq) {
      server->on_committed(seq, "speed_measurement", fake_jws(seq, "speed_measurement"));
    }
    std::vector<TailRecord> batch;
    for (std::uint64_t seq = 51; seq <= 100; ++seq) {
      batch.push_back(TailRecord{seq, "", 0, fake_jws(seq, "plate_read")});
    }
    server->on_committed(std::move(batch));
  });
  for (std::uint64_t seq = 1; seq <= 100; ++seq) {
    const auto line = read_line(fd);
    ASSERT_TRUE(line) << "stream ended at seq " << seq;
    const json rec = json::parse(*line);
    ASSERT_EQ(rec["seq"], seq);
    EXPECT_EQ(rec["jws"], fake_jws(seq, seq <= 50 ? "speed_measurement" : "plate_read"));
    EXPECT_EQ(rec["type"], seq <= 50 ? "speed_measurement" : "plate_read");
    if (seq > 50) {
      EXPECT_EQ(rec["time_ms"], 1700000000000 + static_cast<std::int64_t>(seq)) << "read from the JWS";
    }
  }
  store_worker.join();
}

TEST_F(ControlServerTest, SlowTailClientIsCutOffWithAnErrorLineAndBoundedMemory) {
  ControlLimits limits;
  limits.tail_queue_bytes = 64 * 1024;
  limits.slow_close_grace = 60s;  // the client reads after the burst: it must get the error line
  auto server = make_server(limits);
  ASSERT_TRUE(server->start().is_ok());
  const int slow = connect_client();
  const int fast = connect_client();
  ASSERT_GE(slow, 0);
  ASSERT_GE(fast, 0);
  EXPECT_EQ(request(slow, R"({"cmd":"tail"})")["tail"], "started");
  EXPECT_EQ(request(fast, R"({"cmd":"tail"})")["tail"], "started");

  // 2000 records of ~1.5 KiB: far more than the socket buffer plus the 64 KiB queue. The fast client
  // reads as they come; the slow one reads nothing until the burst is over.
  constexpr std::uint64_t kRecords = 2000;
  std::uint64_t fast_seen = 0;
  for (std::uint64_t seq = 1; seq <= kRecords; ++seq) {
    server->on_committed(seq, "speed_measurement", fake_jws(seq, "speed_measurement", 1000));
    if (seq % 20 == 0) {
      while (fast_seen < seq) {
        const auto line = read_line(fast);
        ASSERT_TRUE(line);
        ASSERT_EQ(json::parse(*line)["seq"], ++fast_seen);
      }
    }
  }
  while (io_.poll() > 0) {
  }
  std::uint64_t last_seq = 0;
  std::uint64_t received = 0;
  std::optional<json> error;
  while (auto line = read_line(slow)) {
    const json j = json::parse(*line);
    if (j.contains("error")) {
      error = j;
      continue;
    }
    ASSERT_FALSE(error) << "nothing after the error line";
    ASSERT_GT(j["seq"].get<std::uint64_t>(), last_seq);
    last_seq = j["seq"].get<std::uint64_t>();
    ++received;
  }
  ASSERT_TRUE(error) << "the slow client must be told why it is cut off";
  const std::string text = (*error)["error"];
  EXPECT_EQ(text.rfind("too slow, ", 0), 0u) << text;
  const std::uint64_t skipped = std::stoull(text.substr(10));
  EXPECT_GT(skipped, 0u);
  EXPECT_LT(received, kRecords);
  EXPECT_LE(received + skipped, kRecords);
  EXPECT_EQ(fast_seen, kRecords) << "a client that keeps up loses nothing";
  EXPECT_EQ(server->tail_clients(), 1u);
  EXPECT_EQ(server->clients(), 1u);
}

TEST_F(ControlServerTest, OversizeRequestIsRejectedAndClosed) {
  auto server = make_server();
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  send_all(fd, R"({"cmd":"status","pad":")" + std::string(5000, 'a') + "\"}\n");
  const auto line = read_line(fd);
  ASSERT_TRUE(line);
  EXPECT_NE(json::parse(*line).value("error", "").find("request too long (limit 4096 bytes)"),
            std::string::npos)
      << *line;
  EXPECT_FALSE(read_line(fd)) << "closed after the error";
  EXPECT_EQ(status_calls_, 0);
}

// Issue 12: a client that pipelines status requests and never reads an answer made the daemon queue every
// answer (14 MB -> 421 MB). For 10 s the client writes requests as fast as the socket takes them; the
// answers held for it must stay within reply_queue_bytes plus one answer, and once it reads, it is served.
TEST_F(ControlServerTest, PipeliningClientThatNeverReadsIsNotReadPastTheReplyBound) {
  status_pad_ = std::string(2000, 'x');
  const ControlLimits limits;  // the defaults: 64 KiB of answers per client
  auto server = make_server(limits);
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  const std::size_t answer_bytes = request(fd, R"({"cmd":"status"})").dump().size() + 1;
  const std::size_t bound = limits.reply_queue_bytes + answer_bytes;

  std::string burst;
  for (int i = 0; i < 256; ++i) {
    burst += "{\"cmd\":\"status\"}\n";
  }
  const long rss_before = rss_kb();
  std::size_t offset = 0;
  std::uint64_t sent_requests = 0;
  std::size_t peak_queued = 0;
  long rss_peak = rss_before;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < 10s) {
    const ssize_t n = ::send(fd, burst.data() + offset, burst.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      offset = (offset + static_cast<std::size_t>(n)) % burst.size();
      sent_requests += static_cast<std::size_t>(n);
    }
    while (io_.poll_one() > 0) {
      peak_queued = std::max(peak_queued, server->queued_bytes());
    }
    peak_queued = std::max(peak_queued, server->queued_bytes());
    rss_peak = std::max(rss_peak, rss_kb());
    if (peak_queued > 64 * bound) {
      break;  // unbounded: no need to let it eat the machine for the rest of the 10 s
    }
    if (n <= 0) {
      io_.run_one_for(1ms);  // the socket is full: the server is not reading (the point), let time pass
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int answered_while_flooding = status_calls_;
  std::cout << "[ figures  ] " << seconds << " s of pipelined requests (" << sent_requests / 17
            << " written by the client): " << answered_while_flooding << " answered, peak queued "
            << peak_queued << " bytes (bound " << bound << "), test process RSS " << rss_before << " -> peak "
            << rss_peak << " kB\n";
  EXPECT_GE(seconds, 9.5);
  EXPECT_LE(peak_queued, bound) << "answers queued for a client that does not read";
#ifndef CPD_SANITIZED  // ASan's shadow memory and quarantine make RSS figures meaningless there
  EXPECT_LT(rss_peak - rss_before, 16 * 1024) << "kB";
#endif
  EXPECT_GT(answered_while_flooding, 1) << "the answers up to the bound were produced";

  // The client starts reading: it is served again (reading resumed as the queue drained).
  for (int i = 0; i < answered_while_flooding + 50; ++i) {
    const auto line = read_line(fd);
    ASSERT_TRUE(line) << "answer " << i;
    ASSERT_EQ(json::parse(*line)["backlog"], 3);
  }
  EXPECT_GT(status_calls_, answered_while_flooding);
  EXPECT_EQ(server->clients(), 1u);
}

// Idle connections holding every slot must not keep a technician's `checkpointctl status` out (the 40 slow
// connections of issue 12, for the control socket): the longest idle one makes room; tail clients stay.
TEST_F(ControlServerTest, AtTheLimitTheLongestIdleConnectionMakesRoom) {
  ControlLimits limits;
  limits.max_clients = 3;
  auto server = make_server(limits);
  ASSERT_TRUE(server->start().is_ok());
  const int tail = connect_client();
  ASSERT_GE(tail, 0);
  EXPECT_EQ(request(tail, R"({"cmd":"tail"})")["tail"], "started");
  const int a = connect_client();
  ASSERT_TRUE(pump_until([&] { return server->clients() == 2; }));
  const int b = connect_client();
  ASSERT_TRUE(pump_until([&] { return server->clients() == 3; }));
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(request(a, R"({"cmd":"status"})")["backlog"], 3);  // a is now more recent than b

  const int c = connect_client();
  ASSERT_GE(c, 0);
  EXPECT_EQ(request(c, R"({"cmd":"status"})")["backlog"], 3) << "served at once, though every slot was taken";
  const auto line = read_line(b);
  ASSERT_TRUE(line);
  EXPECT_EQ(json::parse(*line)["error"],
            "closed: too many clients (3); this connection was the longest idle");
  EXPECT_FALSE(read_line(b));
  EXPECT_EQ(request(a, R"({"cmd":"status"})")["backlog"], 3);
  EXPECT_EQ(server->clients(), 3u);
  EXPECT_EQ(server->tail_clients(), 1u);
}

TEST_F(ControlServerTest, WhenEverySlotIsATailClientANewConnectionIsTurnedAway) {
  ControlLimits limits;
  limits.max_clients = 2;
  auto server = make_server(limits);
  ASSERT_TRUE(server->start().is_ok());
  const int a = connect_client();
  const int b = connect_client();
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(request(a, R"({"cmd":"tail"})")["tail"], "started");
  EXPECT_EQ(request(b, R"({"cmd":"tail"})")["tail"], "started");
  const int c = connect_client();
  ASSERT_GE(c, 0);
  const auto line = read_line(c);
  ASSERT_TRUE(line);
  EXPECT_EQ(json::parse(*line)["error"], "too many clients (2)");
  EXPECT_FALSE(read_line(c));
  // A slot freed is a slot to take.
  ::shutdown(b, SHUT_RDWR);
  ASSERT_TRUE(pump_until([&] { return server->clients() == 1; }));
  const int d = connect_client();
  ASSERT_GE(d, 0);
  EXPECT_EQ(request(d, R"({"cmd":"status"})")["backlog"], 3);
}

TEST_F(ControlServerTest, IdleStatusConnectionIsClosed) {
  ControlLimits limits;
  limits.idle_timeout = 100ms;
  auto server = make_server(limits);
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(request(fd, R"({"cmd":"status"})")["backlog"], 3);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(read_line(fd, 5s)) << "closed once idle";
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  EXPECT_EQ(server->clients(), 0u);
}

TEST_F(ControlServerTest, SocketIsCreatedWithMode0660AndRemovedOnStop) {
  const mode_t old_mask = ::umask(0);  // the server must not depend on the process umask
  auto server = make_server();
  const Status s = server->start();
  ::umask(old_mask);
  ASSERT_TRUE(s.is_ok()) << s.message();
  struct stat st {};
  ASSERT_EQ(::lstat(sock_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(pump_until([&] { return server->clients() == 1; }));
  server->stop();
  EXPECT_FALSE(fs::exists(sock_path()));
  EXPECT_FALSE(read_line(fd)) << "clients are closed on stop";
}

TEST_F(ControlServerTest, StaleSocketFileIsReplaced) {
  {
    // A socket file nobody listens on any more: what a killed daemon leaves behind.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock_path().c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  ASSERT_TRUE(fs::exists(sock_path()));
  auto server = make_server();
  const Status s = server->start();
  ASSERT_TRUE(s.is_ok()) << s.message();
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(request(fd, R"({"cmd":"status"})")["backlog"], 3);
}

TEST_F(ControlServerTest, SecondServerOnTheSamePathIsRefusedAndTheFirstKeepsServing) {
  auto first = make_server();
  ASSERT_TRUE(first->start().is_ok());
  auto second = make_server();
  const Status s = second->start();
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("another process is listening"), std::string::npos) << s.message();
  second.reset();  // its stop() must not remove the first one's socket
  ASSERT_TRUE(fs::exists(sock_path()));
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(request(fd, R"({"cmd":"status"})")["backlog"], 3);
}

TEST_F(ControlServerTest, PathThatIsNotASocketIsLeftAlone) {
  std::ofstream(sock_path()) << "precious";
  auto server = make_server();
  const Status s = server->start();
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("is not a socket"), std::string::npos) << s.message();
  std::ifstream in(sock_path());
  std::string text;
  in >> text;
  EXPECT_EQ(text, "precious");
}

TEST_F(ControlServerTest, MissingDirectoryIsAStartFailureValue) {
  ControlServer server(io_, (dir_ / "no-such-dir" / "ctl.sock").string(), [] { return json::object(); });
  const Status s = server.start();
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("cannot create control socket"), std::string::npos) << s.message();
}

// A command added by the daemon (rotate_key): answered when its handler replies, from another thread;
// nothing more is read from that client until then; unknown commands list it.
TEST_F(ControlServerTest, AddedCommandRepliesLaterFromAnotherThread) {
  auto server = make_server();
  std::function<void(json)> pending;
  server->add_command("rotate_key", [&](const json& req, std::function<void(json)> reply) {
    EXPECT_EQ(req["cmd"], "rotate_key");
    pending = std::move(reply);
  });
  ASSERT_TRUE(server->start().is_ok());
  const int fd = connect_client();
  ASSERT_GE(fd, 0);
  send_all(fd, "{\"cmd\":\"rotate_key\"}\n{\"cmd\":\"status\"}\n");
  ASSERT_TRUE(pump_until([&] { return static_cast<bool>(pending); }));
  pump_until([] { return false; }, 200ms);
  EXPECT_EQ(status_calls_, 0) << "the status request waits for the command's answer";
  std::thread([reply = pending] { reply(json{{"rotated", {{"seq", 7}}}}); }).join();
  const auto first = read_line(fd);
  ASSERT_TRUE(first);
  EXPECT_EQ(json::parse(*first)["rotated"]["seq"], 7);
  const auto second = read_line(fd);
  ASSERT_TRUE(second);
  EXPECT_EQ(json::parse(*second)["calls"], 1);
  const json unknown = request(fd, R"({"cmd":"reboot"})");
  EXPECT_NE(unknown["error"].get<std::string>().find("status, tail, rotate_key"), std::string::npos)
      << unknown;
}

}  // namespace
}  // namespace cpd::control
