// End to end with real parts: radar simulator -> checkpointd -> SQLite -> mosquitto -> subscriber.
// Every record is verified as a central consumer would (signature, seq, prev chain).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/encoding.h"
#include "daemon/store/evidence_store.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class RadarPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
  }

  void start_sim(std::vector<std::string> extra) {
    std::vector<std::string> argv{
        binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2", "--ground-truth",
        (dir_ / "truth.jsonl").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    sim_ = std::make_unique<Process>(argv, dir_ / "sim");
    auto line = sim_->wait_for_stdout_line("listening ", 10s);
    ASSERT_TRUE(line) << "simulator did not start: " << sim_->stderr_text();
    sim_port_ = static_cast<std::uint16_t>(std::stoi(line->substr(10)));
  }

  void write_config() {
    CheckpointdConfig config(dir_.path(), broker_->uri());
    config.add_radar("radar-1", sim_port_).reconnect(200, 1000);
    config.write(dir_ / "checkpointd.yaml");
  }

  std::unique_ptr<Process> start_daemon() {
    auto p = std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                                (dir_ / "checkpointd.yaml").string()},
                                       dir_ / "checkpointd");
    return p;
  }

  std::vector<std::string> evidence() const { return collector_->payloads("checkpoint/test-gw-1/evidence"); }

  std::size_t count_type(const std::string& type) const {
    std::set<std::uint64_t> seqs;
    for (const auto& jws : evidence()) {
      const auto body = record_body(jws);
      if (body["type"] == type) {
        seqs.insert(body["seq"].get<std::uint64_t>());
      }
    }
    return seqs.size();
  }

  // Verifies everything received, in arrival order, as a consumer would; returns the distinct seqs.
  std::vector<std::uint64_t> verify_all() const {
    std::ifstream pem_in(pub_pem_);
    std::string pem((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>());
    ChainVerifier verifier(Ed25519PublicKey::from_pem(pem));
    verifier.expect_from_start(true);
    std::vector<std::uint64_t> seqs;
    for (const auto& jws : evidence()) {
      const auto r = verifier.feed(jws);
      EXPECT_TRUE(r.ok) << r.reason;
      if (!r.ok) {
        break;
      }
      if (!r.duplicate) {
        seqs.push_back(r.seq);
      }
    }
    return seqs;
  }

  std::uint64_t store_count() const {
    return store::EvidenceStore((dir_ / "store.db").string()).record_count();
  }

  TempDir dir_;
  fs::path pub_pem_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::uint16_t sim_port_ = 0;
  std::unique_ptr<MqttCollector> collector_;
};

TEST_F(RadarPipeline, SimulatedVehiclesBecomeVerifiedRecordsMatchingGroundTruth) {
  constexpr int kVehicles = 12;
  start_sim({"--seed", "7", "--vehicles", std::to_string(kVehicles), "--rate", "4"});
  write_config();
  collector_ =
      std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/test-gw-1/#"});
  // A central consumer with the stock tool, subscribed before the daemon starts.
  Process verify({binary("tools/checkpointctl/checkpointctl"), "verify", "--pubkey", pub_pem_.string(),
                  "--mqtt", broker_->uri(), "--topic", "checkpoint/test-gw-1/evidence", "--from-start",
                  "--count", std::to_string(kVehicles), "--seconds", "90"},
                 dir_ / "verify");
  ASSERT_TRUE(verify.wait_for_stderr_line("checkpointctl: subscribed to ", 20s)) << verify.stderr_text();
  auto daemon = start_daemon();

  ASSERT_TRUE(collector_->wait_until([&] { return count_type("speed_measurement") >= kVehicles; }, 60s))
      << "got " << count_type("speed_measurement") << " speed records\n"
      << daemon->stderr_text();
  pause(1500ms);  // nothing more may come
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
  ASSERT_TRUE(collector_->wait_until([&] { return count_type("audit") >= 2; }, 10s));

  // Ground truth from the simulator: every vehicle it sent, with lane and peak speed.
  std::multiset<std::pair<int, int>> expected;
  std::ifstream truth(dir_ / "truth.jsonl");
  for (std::string line; std::getline(truth, line);) {
    const auto v = json::parse(line);
    if (v.value("sent", false)) {
      expected.insert({v["lane"].get<int>(), v["peak_dkmh"].get<int>()});
    }
  }
  ASSERT_EQ(expected.size(), static_cast<std::size_t>(kVehicles));

  std::multiset<std::pair<int, int>> got;
  for (const auto& jws : evidence()) {
    const auto body = record_body(jws);
    if (body["type"] == "speed_measurement") {
      got.insert({body["lane"].get<int>(), body["speed_dkmh"].get<int>()});
      EXPECT_EQ(body["gateway"], "test-gw-1");
      EXPECT_EQ(body["calibration"]["valid"], true);
      EXPECT_FALSE(body["raw_frames"].empty());
      EXPECT_EQ(body["radar_status"]["code"], 0);
    }
  }
  EXPECT_EQ(got, expected);

  const auto seqs = verify_all();
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs.front(), 1u);
  EXPECT_EQ(seqs.size(), store_count()) << "every committed record arrives";
  const auto first = record_body(evidence().front());
  EXPECT_EQ(first["type"], "audit");
  EXPECT_EQ(first["event"], "start");
  const auto last = record_body(evidence().back());
  EXPECT_EQ(last["event"], "stop");

  ASSERT_EQ(verify.wait(30s), 0) << verify.stdout_text() << verify.stderr_text();
  EXPECT_NE(verify.stdout_text().find("verified " + std::to_string(kVehicles) + " records (seq 1.."),
            std::string::npos)
      << verify.stdout_text();

  const auto status = collector_->payloads("checkpoint/test-gw-1/status");
  ASSERT_FALSE(status.empty());
  EXPECT_EQ(json::parse(status.back())["state"], "offline");
}

TEST_F(RadarPipeline, KilledDaemonRestartsAndTheChainContinuesWithoutGap) {
  start_sim({"--seed", "11", "--vehicles", "0", "--rate", "10"});
  write_config();
  collector_ = std::make_unique<MqttCollector>(broker_->uri(),
                                               std::vector<std::string>{"checkpoint/test-gw-1/evidence"});
  for (int round = 0; round < 3; ++round) {
    auto daemon = start_daemon();
    const auto before = count_type("speed_measurement");
    ASSERT_TRUE(collector_->wait_until([&] { return count_type("speed_measurement") >= before + 8; }, 60s))
        << daemon->stderr_text();
    daemon->signal(SIGKILL);
    ASSERT_TRUE(daemon->wait(10s));
  }
  auto daemon = start_daemon();
  const auto before = count_type("speed_measurement");
  ASSERT_TRUE(collector_->wait_until([&] { return count_type("speed_measurement") >= before + 5; }, 60s));
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
  pause(500ms);

  const auto seqs = verify_all();
  ASSERT_FALSE(seqs.empty());
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_EQ(seqs[i], i + 1) << "seq gap or reorder at position " << i;
  }
  EXPECT_EQ(seqs.size(), store_count());
  EXPECT_EQ(count_type("audit"), 5u) << "4 starts and 1 clean stop";
}

TEST_F(RadarPipeline, BrokerDownForTenSecondsUnderTrafficLosesNothing) {
  start_sim({"--seed", "5", "--vehicles", "0", "--rate", "10"});
  write_config();
  collector_ = std::make_unique<MqttCollector>(broker_->uri(),
                                               std::vector<std::string>{"checkpoint/test-gw-1/evidence"});
  auto daemon = start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return count_type("speed_measurement") >= 5; }, 60s));
  ASSERT_TRUE(
      stop_broker_with_daemon_frozen(*daemon, *collector_, "checkpoint/test-gw-1/evidence", *broker_));
  pause(10s);
  ASSERT_TRUE(
      start_broker_with_daemon_frozen(*daemon, *collector_, "checkpoint/test-gw-1/evidence", *broker_));
  const auto committed_during_outage = store_count();
  ASSERT_TRUE(collector_->wait_until([&] { return evidence().size() >= committed_during_outage + 5; }, 60s))
      << daemon->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
  pause(500ms);

  const auto seqs = verify_all();
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_EQ(seqs[i], i + 1) << "seq gap or reorder at position " << i;
  }
  EXPECT_EQ(seqs.size(), store_count()) << "every committed record arrives";
}

// The radar drops its link and reboots (clock restarts) under traffic: the adapter reports the outage as a
// device_status record, reconnects by itself with backoff and goes on measuring in the radar's new epoch.
TEST_F(RadarPipeline, ARadarLinkCutIsReportedAndRecovered) {
  start_sim({"--seed", "8", "--vehicles", "0", "--rate", "5", "--reboot-every", "3"});
  write_config();
  collector_ = std::make_unique<MqttCollector>(broker_->uri(),
                                               std::vector<std::string>{"checkpoint/test-gw-1/evidence"});
  auto daemon = start_daemon();
  const auto states = [&] {
    std::vector<std::string> out;
    for (const auto& r : records_of(*collector_, "checkpoint/test-gw-1/evidence", {"device_status"})) {
      if (r["device"] == "radar-1") {
        out.push_back(r["state"].get<std::string>());
      }
    }
    return out;
  };
  const auto reconnected = [&] {
    const auto s = states();
    const auto down = std::find(s.begin(), s.end(), "disconnected");
    return down != s.end() && std::find(down, s.end(), "connected") != s.end();
  };
  ASSERT_TRUE(collector_->wait_until(reconnected, 60s)) << daemon->stderr_text();
  // Measuring goes on after the reboot: a track in a later radar clock epoch.
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        for (const auto& r :
             records_of(*collector_, "checkpoint/test-gw-1/evidence", {"speed_measurement"})) {
          if (r["radar_clock"]["epoch"].get<int>() >= 1) {
            return true;
          }
        }
        return false;
      },
      60s))
      << daemon->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
}

// No busy timer: with no vehicle on the road the daemon sleeps until something happens. The correlator and
// the radar's track expiry tick (every 100 ms) only while they hold a track; what is left is the
// once-a-second storage check, the systemd heartbeat, the radar's status messages and Paho's keep-alive
// threads: about 4 wakeups a second here, against about 14 when both ticks ran on an empty road.
TEST_F(RadarPipeline, AnEmptyRoadWakesTheDaemonOnlyForItsSlowChecks) {
  start_sim({"--seed", "4", "--vehicles", "1", "--rate", "5"});
  write_config();
  collector_ = std::make_unique<MqttCollector>(broker_->uri(),
                                               std::vector<std::string>{"checkpoint/test-gw-1/evidence"});
  auto daemon = start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return count_type("speed_measurement") == 1; }, 30s))
      << daemon->stderr_text();
  pause(1s);  // the vehicle's track has closed and its record is PUBACKed: nothing is pending
  const long long before = wakeups(daemon->pid());
  pause(5s);
  const double per_s = static_cast<double>(wakeups(daemon->pid()) - before) / 5.0;
  EXPECT_LT(per_s, 10.0) << "wakeups per second on an empty road";
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
}

// SIGTERM while the first broker connect may still be in flight: the daemon waits for it and forwards what
// it committed (the start and stop audits) instead of leaving them in the outbox until the next start.
TEST_F(RadarPipeline, StopRightAfterStartStillForwardsTheAudits) {
  start_sim({"--seed", "3", "--vehicles", "0", "--rate", "0"});
  write_config();
  collector_ = std::make_unique<MqttCollector>(broker_->uri(),
                                               std::vector<std::string>{"checkpoint/test-gw-1/evidence"});
  auto daemon = start_daemon();
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (daemon->stderr_text().find("running ") == std::string::npos &&
         std::chrono::steady_clock::now() < end) {
    pause(1ms);
  }
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(20s), 0) << daemon->stderr_text();
  ASSERT_TRUE(collector_->wait_until([&] { return count_type("audit") == 2; }, 10s)) << daemon->stderr_text();
  EXPECT_EQ(store::EvidenceStore((dir_ / "store.db").string()).outbox_stats().count, 0u)
      << "nothing left behind in the outbox";
}

}  // namespace
}  // namespace cpd::testing
