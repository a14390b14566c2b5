// checkpointd as a systemd service: the sd_notify protocol (READY, STATUS, WATCHDOG cadence, RELOADING,
// STOPPING) read from our own NOTIFY_SOCKET, and SIGHUP reloads that add, remove and refuse devices without
// restarting the others or losing a record, each one an audit record.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/encoding.h"
#include "daemon/store/evidence_store.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A datagram socket standing in for systemd's notify socket: every message with its arrival time.
class NotifySocket {
 public:
  struct Message {
    Clock::time_point at;
    std::string text;
  };

  explicit NotifySocket(const fs::path& path) : path_(path.string()) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      throw std::runtime_error("cannot bind notify socket " + path_);
    }
    timeval tv{0, 100000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    reader_ = std::thread([this] { read_loop(); });
  }
  ~NotifySocket() {
    done_ = true;
    reader_.join();
    ::close(fd_);
  }
  const std::string& path() const { return path_; }

  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  // Messages containing the assignment `line` (e.g. "READY=1") as one of their lines.
  std::vector<Message> with_line(const std::string& line) const {
    std::vector<Message> out;
    for (const auto& m : messages()) {
      if (("\n" + m.text + "\n").find("\n" + line) != std::string::npos) {
        out.push_back(m);
      }
    }
    return out;
  }
  bool wait_for(const std::string& line, std::size_t count, std::chrono::milliseconds timeout) const {
    const auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      if (with_line(line).size() >= count) {
        return true;
      }
      pause(50ms);
    }
    return with_line(line).size() >= count;
  }

 private:
  void read_loop() {
    char buf[4096];
    while (!done_) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        std::lock_guard lock(mutex_);
        messages_.push_back({Clock::now(), std::string(buf, static_cast<std::size_t>(n))});
      }
    }
  }

  std::string path_;
  int fd_ = -1;
  std::atomic<bool> done_{false};
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
  std::thread reader_;
};

class Service : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    collector_ =
        std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{kEvidence, kStatus});
  }
  void TearDown() override {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
  }

  std::uint16_t start_radar(const std::string& name, const std::string& seed) {
    return start_sim(
        name, {"radar", "--port", "0", "--lanes", "2", "--seed", seed, "--vehicles", "0", "--rate", "20"});
  }

  std::uint16_t start_sim(const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), binary("tools/sim/checkpoint-sim"));
    auto sim = std::make_unique<Process>(args, dir_ / name);
    auto line = sim->wait_for_stdout_line("listening ", 10s);
    EXPECT_TRUE(line) << sim->stderr_text();
    sims_.push_back(std::move(sim));
    return line ? static_cast<std::uint16_t>(std::stoi(line->substr(10))) : 0;
  }

  fs::path secret(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::trunc) << text << "\n";
    ::chmod((dir_ / name).c_str(), 0600);
    return dir_ / name;
  }

  // Adds a device entry to the config write_config() writes.
  using AddDevice = std::function<void(CheckpointdConfig&)>;

  static AddDevice camera_entry(const std::string& id, std::uint16_t port, const fs::path& password_file) {
    return [=](CheckpointdConfig& config) {
      config.add_camera(id, "http://127.0.0.1:" + std::to_string(port), password_file).reconnect(200, 1000);
    };
  }

  static AddDevice dock_entry(const std::string& id, std::uint16_t port, const fs::path& token_file) {
    return [=](CheckpointdConfig& config) {
      config.add_dock(id, "http://127.0.0.1:" + std::to_string(port), token_file);
    };
  }

  static AddDevice radar_entry(const std::string& id, std::uint16_t port,
                               const std::string& certificate = "JJG527-2026-0412") {
    return [=](CheckpointdConfig& config) {
      config.add_radar(id, port).calibration(certificate, "2099-12-31").reconnect(200, 1000);
    };
  }

  // Writes the config with these device entries; returns the file's SHA-256.
  std::string write_config(const std::vector<AddDevice>& devices, const std::string& broker_uri = "") {
    CheckpointdConfig config(dir_.path(), broker_uri.empty() ? broker_->uri() : broker_uri);
    config.set("metrics.enabled", "false").set("validity.clock_sync", "assume");
    for (const auto& add : devices) {
      add(config);
    }
    return sha256_hex(config.write(dir_ / "checkpointd.yaml"));
  }

  std::unique_ptr<Process> start_daemon() {
    return std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                              (dir_ / "checkpointd.yaml").string()},
                                     dir_ / "checkpointd");
  }

  std::vector<json> bodies() const {
    std::vector<json> out;
    std::set<std::uint64_t> seen;
    for (const auto& jws : collector_->payloads(kEvidence)) {
      auto body = record_body(jws);
      if (seen.insert(body["seq"].get<std::uint64_t>()).second) {
        out.push_back(std::move(body));
      }
    }
    return out;
  }
  std::vector<json> audits(const std::string& event) const {
    std::vector<json> out;
    for (auto& b : bodies()) {
      if (b["type"] == "audit" && b["event"] == event) {
        out.push_back(b);
      }
    }
    return out;
  }
  std::size_t status_records_of(const std::string& device) const {
    std::size_t n = 0;
    for (const auto& b : bodies()) {
      if (b["type"] == "device_status" && b.value("device", "") == device) {
        ++n;
      }
    }
    return n;
  }
  // Records a camera or a dock produced: plate reads/passages naming the camera, recordings of the dock.
  std::size_t records_of_device(const std::string& id) const {
    std::size_t n = 0;
    for (const auto& b : bodies()) {
      if (b.value("camera", "") == id || (b["type"] == "recording" && b.value("device", "") == id)) {
        ++n;
      }
    }
    return n;
  }
  std::vector<json> states_of(const std::string& device) const {
    std::vector<json> out;
    for (const auto& b : bodies()) {
      if (b["type"] == "device_status" && b.value("device", "") == device) {
        out.push_back(b);
      }
    }
    return out;
  }
  std::size_t records_from(const std::string& radar) const {
    std::size_t n = 0;
    for (const auto& b : bodies()) {
      if (b["type"] == "speed_measurement" && b.value("device", "") == radar) {
        ++n;
      }
    }
    return n;
  }
  json last_status() const {
    const auto s = collector_->payloads(kStatus);
    return s.empty() ? json::object() : json::parse(s.back());
  }

  TempDir dir_;
  fs::path pub_pem_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<MqttCollector> collector_;
  std::vector<std::unique_ptr<Process>> sims_;
};

TEST_F(Service, TellsSystemdReadyStatusWatchdogReloadingAndStopping) {
  NotifySocket notify(dir_ / "notify.sock");
  ::setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
  ::setenv("WATCHDOG_USEC", "1000000", 1);  // WatchdogSec=1s: the daemon must ping at least every second
  write_config({radar_entry("radar-1", start_radar("sim-1", "3"))});
  auto daemon = start_daemon();
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");

  ASSERT_TRUE(notify.wait_for("READY=1", 1, 15s)) << daemon->stderr_text();
  // The store is open and the start audit submitted before READY: its record is already on its way.
  ASSERT_TRUE(collector_->wait_until([&] { return !audits("start").empty(); }, 15s));
  pause(3500ms);

  const auto ready_at = notify.with_line("READY=1").front().at;
  // While the store opens (its integrity check reads it whole), the start timeout is extended: a store that
  // takes longer than TimeoutStartSec to read must not be killed and restarted into the same check.
  const auto extend = notify.with_line("EXTEND_TIMEOUT_USEC=90000000");
  ASSERT_FALSE(extend.empty()) << "no EXTEND_TIMEOUT_USEC before READY=1";
  EXPECT_LT(extend.front().at, ready_at);
  EXPECT_NE(extend.front().text.find("STATUS=opening the evidence store"), std::string::npos)
      << extend.front().text;
  std::vector<Clock::time_point> pings;
  for (const auto& m : notify.with_line("WATCHDOG=1")) {
    if (m.at >= ready_at) {
      pings.push_back(m.at);
    }
  }
  ASSERT_GE(pings.size(), 5u) << "3.5 s with WatchdogSec=1s should bring about 7 pings";
  EXPECT_LE(pings.size(), 12u) << "pinging far more often than half the watchdog period";
  for (std::size_t i = 1; i < pings.size(); ++i) {
    EXPECT_LT(pings[i] - pings[i - 1], 1000ms) << "a gap of a whole watchdog period: systemd would kill us";
  }
  const auto statuses = notify.with_line("STATUS=");
  ASSERT_FALSE(statuses.empty());
  const std::string status = statuses.back().text;
  EXPECT_NE(status.find("1/1 devices connected"), std::string::npos) << status;
  EXPECT_NE(status.find("backlog"), std::string::npos) << status;
  EXPECT_NE(status.find("broker connected"), std::string::npos) << status;

  daemon->signal(SIGHUP);
  ASSERT_TRUE(notify.wait_for("RELOADING=1", 1, 10s));
  const auto reloading = notify.with_line("RELOADING=1").front();
  EXPECT_NE(reloading.text.find("MONOTONIC_USEC="), std::string::npos) << reloading.text;
  ASSERT_TRUE(notify.wait_for("READY=1", 2, 10s)) << "READY=1 again after the reload";
  EXPECT_GT(notify.with_line("READY=1").back().at, reloading.at);

  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  EXPECT_EQ(notify.with_line("STOPPING=1").size(), 1u);
  // The watchdog stops with the loop: nothing after STOPPING but the last messages of the stop itself.
  EXPECT_TRUE(notify.with_line("READY=1").back().at < notify.with_line("STOPPING=1").front().at);
}

TEST_F(Service, ReloadAddsRemovesAndRefusesDevicesWithoutLossOrRestartingOthers) {
  const std::uint16_t port1 = start_radar("sim-1", "5");
  const std::uint16_t port2 = start_radar("sim-2", "6");
  const std::string sha_one = write_config({radar_entry("radar-1", port1)});
  auto daemon = start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return records_from("radar-1") >= 3; }, 30s))
      << daemon->stderr_text();

  // 1. Add radar-2: started, radar-1 untouched (never disconnected, no reconnect).
  const std::size_t radar1_states = status_records_of("radar-1");
  const std::string sha_two = write_config({radar_entry("radar-1", port1), radar_entry("radar-2", port2)});
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload").size() == 1; }, 15s))
      << daemon->stderr_text();
  const json added = audits("reload").front();
  EXPECT_EQ(added["config_sha256_old"], sha_one);
  EXPECT_EQ(added["config_sha256_new"], sha_two);
  EXPECT_EQ(added["changes"]["devices_added"], json::array({"radar-2"}));
  EXPECT_EQ(added["changes"]["devices_removed"], json::array());
  EXPECT_EQ(added["changes"]["devices_changed"], json::array());
  ASSERT_TRUE(collector_->wait_until([&] { return records_from("radar-2") >= 3; }, 30s))
      << daemon->stderr_text();

  // 2. A broken file is refused; the daemon runs on with both radars.
  std::ofstream(dir_ / "checkpointd.yaml", std::ios::trunc)
      << "gateway:\n  id: test-gw-1\n  site: [unclosed\n";
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload_refused").size() == 1; }, 15s));
  const json refused = audits("reload_refused").front();
  EXPECT_EQ(refused["config_sha256"], sha_two);
  EXPECT_NE(refused["reason"].get<std::string>().find("checkpointd.yaml:"), std::string::npos)
      << refused.dump();
  EXPECT_NE(daemon->stderr_text().find("reload refused"), std::string::npos);

  // 3. A change to a section fixed at start (the broker) is refused as a whole, naming the section.
  write_config({radar_entry("radar-1", port1)}, "tcp://127.0.0.1:1");
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload_refused").size() == 2; }, 15s));
  const json refused_mqtt = audits("reload_refused").back();
  EXPECT_NE(refused_mqtt["reason"].get<std::string>().find("mqtt"), std::string::npos) << refused_mqtt.dump();
  EXPECT_EQ(refused_mqtt["changes"]["sections_needing_restart"], json::array({"mqtt"}));
  const auto r1 = records_from("radar-1");
  const auto r2 = records_from("radar-2");
  ASSERT_TRUE(collector_->wait_until(
      [&] { return records_from("radar-1") > r1 && records_from("radar-2") > r2; }, 30s))
      << "both radars keep running after refused reloads";

  // 4. Remove radar-2.
  write_config({radar_entry("radar-1", port1)});
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload").size() == 2; }, 15s));
  EXPECT_EQ(audits("reload").back()["changes"]["devices_removed"], json::array({"radar-2"}));
  EXPECT_EQ(audits("reload").back()["config_sha256_new"], sha_one);
  ASSERT_TRUE(collector_->wait_until([&] { return last_status()["devices"].size() == 1; }, 15s))
      << last_status().dump();
  const json st = last_status()["devices"]["radar-1"];
  EXPECT_EQ(st["state"], "connected");
  EXPECT_EQ(st["reconnects"], 0) << "radar-1 was restarted by a reload that did not concern it";
  EXPECT_EQ(status_records_of("radar-1"), radar1_states) << "radar-1 changed state during the reloads";

  // 5. Change radar-1 (a renewed calibration certificate): that adapter alone is restarted, and the
  // records after the reload carry the new certificate.
  const std::string sha_renewed = write_config({radar_entry("radar-1", port1, "JJG527-2027-0001")});
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload").size() == 3; }, 15s));
  EXPECT_EQ(audits("reload").back()["changes"]["devices_changed"], json::array({"radar-1"}));
  EXPECT_EQ(audits("reload").back()["config_sha256_new"], sha_renewed);
  const auto renewed = [&] {
    for (const auto& b : bodies()) {
      if (b["type"] == "speed_measurement" &&
          b["calibration"].value("certificate", "") == "JJG527-2027-0001") {
        return true;
      }
    }
    return false;
  };
  ASSERT_TRUE(collector_->wait_until(renewed, 30s)) << "no record under the renewed calibration";

  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  ASSERT_TRUE(collector_->wait_until([&] { return !audits("stop").empty(); }, 15s));

  // Nothing lost: every committed record arrived, verified, in one unbroken chain; radar-1 never dropped.
  const auto all = bodies();
  std::ifstream pem_in(pub_pem_);
  const std::string pem((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>());
  ChainVerifier verifier(Ed25519PublicKey::from_pem(pem));
  verifier.expect_from_start(true);
  std::set<std::uint64_t> seqs;
  for (const auto& jws : collector_->payloads(kEvidence)) {
    const auto r = verifier.feed(jws);
    ASSERT_TRUE(r.ok) << r.reason;
    seqs.insert(r.seq);
  }
  const auto committed = store::EvidenceStore((dir_ / "store.db").string()).chain_head().seq;
  EXPECT_EQ(seqs.size(), committed);
  EXPECT_EQ(*seqs.rbegin(), committed);
  EXPECT_GT(all.size(), 10u);
}

// Cameras and docks go through the same plan as radars: added ones start, a changed one (new credentials)
// is restarted alone and runs under its new settings, a removed one stops; the radar is never touched.
TEST_F(Service, ReloadAppliesCameraAndDockChangesWithoutTouchingTheRadar) {
  const std::uint16_t radar = start_radar("sim-radar", "9");
  const std::uint16_t camera = start_sim(
      "sim-camera", {"camera", "--port", "0", "--password", "cam-secret", "--rate", "4", "--lock-s", "0"});
  const std::uint16_t dock = start_sim("sim-dock", {"dock", "--port", "0", "--token", "dock-token", "--files",
                                                    "200", "--file-interval-s", "0.3", "--file-kb", "8"});
  const fs::path cam_ok = secret("cam.password", "cam-secret");
  const fs::path cam_wrong = secret("cam-wrong.password", "not-the-password");
  const fs::path dock_ok = secret("dock.token", "dock-token");
  const fs::path dock_wrong = secret("dock-wrong.token", "other-token");
  write_config({radar_entry("radar-1", radar)});
  auto daemon = start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return records_from("radar-1") >= 3; }, 30s))
      << daemon->stderr_text();
  const std::size_t radar_states = status_records_of("radar-1");

  // 1. Add a camera and a dock: both start and produce records.
  write_config({radar_entry("radar-1", radar), camera_entry("cam-1", camera, cam_ok),
                dock_entry("dock-1", dock, dock_ok)});
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload").size() == 1; }, 15s))
      << daemon->stderr_text();
  EXPECT_EQ(audits("reload").back()["changes"]["devices_added"], json::array({"cam-1", "dock-1"}));
  ASSERT_TRUE(collector_->wait_until(
      [&] { return records_of_device("cam-1") >= 3 && records_of_device("dock-1") >= 3; }, 30s))
      << "camera " << records_of_device("cam-1") << ", dock " << records_of_device("dock-1") << "\n"
      << daemon->stderr_text();

  // 2. Wrong credentials for both: each is restarted under its new settings, which the device refuses.
  const std::size_t cam_states = states_of("cam-1").size();
  const std::size_t dock_states = states_of("dock-1").size();
  write_config({radar_entry("radar-1", radar), camera_entry("cam-1", camera, cam_wrong),
                dock_entry("dock-1", dock, dock_wrong)});
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload").size() == 2; }, 15s));
  EXPECT_EQ(audits("reload").back()["changes"]["devices_changed"], json::array({"cam-1", "dock-1"}));
  const auto faulted = [&](const std::string& id, std::size_t before) {
    const auto states = states_of(id);
    return std::any_of(states.begin() + static_cast<std::ptrdiff_t>(std::min(before, states.size())),
                       states.end(), [](const json& st) { return st["state"] == "fault"; });
  };
  ASSERT_TRUE(collector_->wait_until(
      [&] { return faulted("cam-1", cam_states) && faulted("dock-1", dock_states); }, 30s))
      << "the new (wrong) credentials were not used\n"
      << daemon->stderr_text();

  // 3. Remove both: the status no longer lists them; the radar runs on.
  write_config({radar_entry("radar-1", radar)});
  daemon->signal(SIGHUP);
  ASSERT_TRUE(collector_->wait_until([&] { return audits("reload").size() == 3; }, 15s));
  EXPECT_EQ(audits("reload").back()["changes"]["devices_removed"], json::array({"cam-1", "dock-1"}));
  ASSERT_TRUE(collector_->wait_until([&] { return last_status()["devices"].size() == 1; }, 15s))
      << last_status().dump();
  const auto r1 = records_from("radar-1");
  ASSERT_TRUE(collector_->wait_until([&] { return records_from("radar-1") > r1 + 3; }, 30s));
  EXPECT_EQ(last_status()["devices"]["radar-1"]["reconnects"], 0);
  EXPECT_EQ(status_records_of("radar-1"), radar_states) << "the radar changed state during the reloads";

  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  ASSERT_TRUE(collector_->wait_until([&] { return !audits("stop").empty(); }, 15s));
  std::set<std::uint64_t> seqs;
  for (const auto& b : bodies()) {
    seqs.insert(b["seq"].get<std::uint64_t>());
  }
  const auto committed = store::EvidenceStore((dir_ / "store.db").string()).chain_head().seq;
  EXPECT_EQ(seqs.size(), committed) << "every committed record arrived";
}

}  // namespace
}  // namespace cpd::testing
