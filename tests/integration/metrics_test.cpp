// /metrics and /healthz of the real daemon: radar simulator -> checkpointd -> mosquitto, scraped over a raw
// loopback socket, with the scrape checked against what reached the broker (records, the status topic).
// Needs the daemon to run a metrics::MetricsServer from the config's metrics section (docs/metrics.md).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct HttpResult {
  int status = 0;
  std::string head;
  std::string body;
};

// One GET with Connection: close, read to EOF; nullopt if the connection failed or took over 5 s.
std::optional<HttpResult> http_get(std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return std::nullopt;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  const std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  ok = ok && ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  while (ok) {
    char buf[8192];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      ok = false;
    } else if (n == 0) {
      break;
    } else {
      raw.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto end = raw.find("\r\n\r\n");
  if (!ok || end == std::string::npos || raw.size() < 12) {
    return std::nullopt;
  }
  return HttpResult{std::stoi(raw.substr(9, 3)), raw.substr(0, end + 2), raw.substr(end + 4)};
}

// The value of the sample whose name-and-labels part is exactly `series`, e.g. x_total{a="b"}.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

class Metrics : public ::testing::Test {
 protected:
  void SetUp() override {
    make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    sim_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2",
                                 "--seed", "9", "--vehicles", std::to_string(kVehicles), "--rate", "4"},
        dir_ / "sim");
    auto line = sim_->wait_for_stdout_line("listening ", 10s);
    ASSERT_TRUE(line) << "simulator did not start: " << sim_->stderr_text();
    sim_port_ = std::stoi(line->substr(10));
    collector_ =
        std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/met-gw/#"});
  }

  void write_config(std::uint16_t metrics_port) {
    CheckpointdConfig config(dir_.path(), broker_->uri());
    config.gateway_id("met-gw")
        .set("metrics.host", "127.0.0.1")
        .set("metrics.port", metrics_port)
        .set("validity.clock_sync", "assume");
    config.add_radar("radar-1", sim_port_).reconnect(200, 1000);
    config.write(dir_ / "checkpointd.yaml");
  }

  std::unique_ptr<Process> start_daemon() {
    return std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                              (dir_ / "checkpointd.yaml").string()},
                                     dir_ / "checkpointd");
  }

  std::size_t speed_records() const {
    return records_of(*collector_, "checkpoint/met-gw/evidence", {"speed_measurement"}).size();
  }

  // The radar's frame count in the last status message received so far, and how many there were.
  std::pair<std::size_t, std::optional<double>> last_status_frames() const {
    const auto all = collector_->payloads("checkpoint/met-gw/status");
    if (all.empty()) {
      return {0, std::nullopt};
    }
    const auto s = json::parse(all.back(), nullptr, false);
    const auto pointer = "/devices/radar-1/frames"_json_pointer;
    if (s.is_discarded() || !s.contains(pointer) || !s[pointer].is_number()) {
      return {all.size(), std::nullopt};
    }
    return {all.size(), s[pointer].get<double>()};
  }

  static constexpr int kVehicles = 6;
  TempDir dir_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  int sim_port_ = 0;
  std::unique_ptr<MqttCollector> collector_;
};

TEST_F(Metrics, ScrapeAgreesWithTheBrokerAndHealthzIsOk) {
  const std::uint16_t port = free_port();
  write_config(port);
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_port(port, 15s))
      << "nothing listens on the metrics port (server wired into the daemon?)\n"
      << daemon->stderr_text();
  ASSERT_TRUE(
      collector_->wait_until([&] { return speed_records() >= static_cast<std::size_t>(kVehicles); }, 60s))
      << "got " << speed_records() << " speed records\n"
      << daemon->stderr_text();

  const auto health = http_get(port, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
  const auto missing = http_get(port, "/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  // The frame counter, sandwiched between two status messages: the one before the scrape and the next one.
  ASSERT_TRUE(collector_->wait_until([&] { return last_status_frames().second.has_value(); }, 15s));
  const auto [n_before, frames_before] = last_status_frames();
  const auto scrape = http_get(port, "/metrics");
  ASSERT_TRUE(scrape);
  ASSERT_EQ(scrape->status, 200);
  EXPECT_NE(scrape->head.find("version=0.0.4"), std::string::npos) << scrape->head;
  const std::string& text = scrape->body;
  ASSERT_TRUE(collector_->wait_until([&, n = n_before] { return last_status_frames().first > n; }, 15s))
      << "no status message after the scrape";
  const auto frames_after = last_status_frames().second;

  const auto frames = sample(text, R"(checkpointd_device_frames_total{device="radar-1",kind="radar"})");
  ASSERT_TRUE(frames) << text;
  ASSERT_TRUE(frames_before && frames_after);
  EXPECT_GT(*frames, 0);
  EXPECT_LE(*frames_before, *frames);
  EXPECT_LE(*frames, *frames_after);

  const auto speed = sample(text, R"(checkpointd_records_total{type="speed_measurement"})");
  ASSERT_TRUE(speed) << text;
  EXPECT_GE(*speed, static_cast<double>(kVehicles)) << "every speed record received was committed first";
  EXPECT_EQ(sample(text, R"(checkpointd_device_up{device="radar-1",kind="radar"})"), 1.0);
  EXPECT_EQ(sample(text, "checkpointd_broker_up"), 1.0);
  const auto published = sample(text, "checkpointd_records_published_total");
  ASSERT_TRUE(published);
  EXPECT_GE(*published, static_cast<double>(kVehicles));
  const auto latency_count = sample(text, "checkpointd_publish_latency_seconds_count");
  ASSERT_TRUE(latency_count) << text;
  EXPECT_GT(*latency_count, 0) << "the forwarder observes publish latency";
  const auto fsync_count = sample(text, "checkpointd_store_fsync_duration_seconds_count");
  ASSERT_TRUE(fsync_count);
  EXPECT_GT(*fsync_count, 0) << "the store worker observes fsync latency";
  const auto rss = sample(text, "process_resident_memory_bytes");
  ASSERT_TRUE(rss);
  EXPECT_GT(*rss, 1e6);
  EXPECT_TRUE(sample(text, "checkpointd_outbox_records"));
  // Nothing the simulator sends makes the sealer refuse a fact: exported, and 0.
  EXPECT_EQ(sample(text, "checkpointd_storage_salvaged_facts_total"), std::optional<double>(0.0));

  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
}

TEST_F(Metrics, APortInUseIsLoggedAndEvidenceIsStillCollected) {
  // Hold the port with a listening socket of our own.
  const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(holder, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const auto port = ntohs(addr.sin_port);

  write_config(port);
  auto daemon = start_daemon();
  EXPECT_TRUE(collector_->wait_until([&] { return speed_records() >= 2; }, 60s))
      << "no evidence while the metrics port was taken\n"
      << daemon->stderr_text();
  EXPECT_TRUE(daemon->running());
  EXPECT_NE(daemon->stderr_text().find("metrics"), std::string::npos) << "the bind failure is logged";
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
  ::close(holder);
}

}  // namespace
}  // namespace cpd::testing
