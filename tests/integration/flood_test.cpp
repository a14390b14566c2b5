// A hostile radar cannot starve a well-behaved one or grow the daemon's memory: radar A floods random
// garbage and ten times the nominal vehicle rate while radar B runs nominal traffic, through the real daemon.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/ed25519.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int kTrackTimeoutMs = 300;
constexpr int kNominalRate = 2;  // vehicles per second per radar
constexpr int kFloodFactor = 10;
// Garbage at 100 KB/s: about a hundred times a radar's nominal byte rate (2 vehicles/s * 8 frames * 60 B).
constexpr int kGarbageBytesPerSecond = 100'000;
constexpr auto kFloodTime = 15s;
// The daemon's bounded queues under the flood: 256 facts waiting for the store (a few KB each), 4 MB outbox
// pages, 8 MB of media in flight, and the adapter's fixed 4 KB read buffer and 128-byte frame limit. A
// nominal run peaks near 20-30 MB (bench: rss <= 32 MB target); twice that target leaves room for
// allocator slack but would catch any queue that grows with the flood (15 s at 100 KB/s is 1.5 MB of
// garbage and ~2400 frames per second of A's traffic; an unbounded buffer of either overshoots quickly).
constexpr long kPeakRssBoundKb = 64 * 1024;
// B's records must come out as fast as when nobody floods: track timeout, the 100 ms expiry tick, then
// sealing and commit (tens of ms). One second of slack still fails a read-starved or queue-starved B.
constexpr std::int64_t kMaxSealLatencyMs = kTrackTimeoutMs + 100 + 1000;

struct Truth {
  std::uint64_t vehicle = 0;
  int target = 0;
  int lane = 0;
  int peak_dkmh = 0;
  std::int64_t first_radar_cs = 0;
  std::int64_t last_frame_unix_ms = 0;
};

// Vehicles the simulator fully put on the wire (sent), from its ground-truth file.
std::vector<Truth> sent_vehicles(const fs::path& file) {
  std::vector<Truth> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto v = json::parse(line);
    if (!v.value("sent", false)) {
      continue;
    }
    std::string t = v["first_radar_time"].get<std::string>();
    t.erase(std::remove(t.begin(), t.end(), '.'), t.end());
    out.push_back({v["vehicle"].get<std::uint64_t>(), v["target"].get<int>(), v["lane"].get<int>(),
                   v["peak_dkmh"].get<int>(), std::stoll(t), v["last_frame_unix_ms"].get<std::int64_t>()});
  }
  return out;
}

// A record's identity on its radar: track number and the radar time of its first frame.
using TrackKey = std::pair<int, std::int64_t>;

TrackKey key_of(const json& record) {
  return {record["track"]["target"].get<int>(),
          record["track"]["samples"][0]["radar_time_cs"].get<std::int64_t>()};
}

std::uint64_t sum_errors(const json& device) {
  std::uint64_t n = 0;
  for (const auto& [name, count] : device["errors"].items()) {
    n += count.get<std::uint64_t>();
  }
  return n;
}

class Flood : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
  }

  std::unique_ptr<Process> start_sim(const std::string& name, std::vector<std::string> extra,
                                     std::uint16_t& port) {
    std::vector<std::string> argv{binary("tools/sim/checkpoint-sim"),
                                  "radar",
                                  "--port",
                                  "0",
                                  "--lanes",
                                  "2",
                                  "--vehicles",
                                  "0",
                                  "--ground-truth",
                                  (dir_ / (name + ".jsonl")).string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto sim = std::make_unique<Process>(argv, dir_ / name);
    auto line = sim->wait_for_stdout_line("listening ", 10s);
    EXPECT_TRUE(line) << "simulator did not start: " << sim->stderr_text();
    port = line ? static_cast<std::uint16_t>(std::stoi(line->substr(10))) : 0;
    return sim;
  }

  void write_config(std::uint16_t port_a, std::uint16_t port_b) {
    CheckpointdConfig config(dir_.path(), broker_->uri());
    config.set("metrics.enabled", "false");
    for (const auto& [id, port] : {std::pair{"radar-a", port_a}, std::pair{"radar-b", port_b}}) {
      config.add_radar(id, port).set("track_timeout_ms", kTrackTimeoutMs).reconnect(200, 1000);
    }
    config.write(dir_ / "checkpointd.yaml");
  }

  std::vector<std::uint64_t> verified_seqs() const {
    std::ifstream pem_in(pub_pem_);
    std::string pem((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>());
    ChainVerifier verifier(Ed25519PublicKey::from_pem(pem));
    verifier.expect_from_start(true);
    std::vector<std::uint64_t> seqs;
    for (const auto& jws : collector_->payloads("checkpoint/test-gw-1/evidence")) {
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

  TempDir dir_;
  fs::path pub_pem_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<MqttCollector> collector_;
};

TEST_F(Flood, AGarbageAndEventFloodFromOneRadarNeitherStarvesTheOtherNorGrowsMemory) {
  std::uint16_t port_a = 0;
  std::uint16_t port_b = 0;
  auto sim_a =
      start_sim("radar-a",
                {"--seed", "41", "--rate", std::to_string(kNominalRate), "--flood-factor",
                 std::to_string(kFloodFactor), "--garbage-bps", std::to_string(kGarbageBytesPerSecond)},
                port_a);
  auto sim_b = start_sim("radar-b", {"--seed", "42", "--rate", std::to_string(kNominalRate)}, port_b);
  ASSERT_NE(port_a, 0);
  ASSERT_NE(port_b, 0);
  write_config(port_a, port_b);
  collector_ =
      std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/test-gw-1/#"});
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir_ / "checkpointd.yaml").string()},
                 dir_ / "checkpointd");

  pause(kFloodTime);  // the run's length, not a synchronisation: the flood goes on for this long
  const long peak_kb = peak_rss_kb(daemon.pid());
  // The radars stop first, so their ground truth is complete; vehicles cut short are marked unsent.
  sim_a->signal(SIGTERM);
  sim_b->signal(SIGTERM);
  ASSERT_EQ(sim_a->wait(10s), 0) << sim_a->stderr_text();
  ASSERT_EQ(sim_b->wait(10s), 0) << sim_b->stderr_text();
  const auto truth_a = sent_vehicles(dir_ / "radar-a.jsonl");
  const auto truth_b = sent_vehicles(dir_ / "radar-b.jsonl");
  ASSERT_GE(truth_b.size(), static_cast<std::size_t>(kNominalRate * 10)) << "radar B ran its nominal traffic";
  ASSERT_GE(truth_a.size(), truth_b.size() * kFloodFactor / 2) << "radar A flooded vehicles";

  // Every vehicle either radar put on the wire becomes a record, including A's despite the garbage.
  const auto all_recorded = [&] {
    std::map<std::string, std::set<TrackKey>> keys;
    for (const auto& r : records_of(*collector_, "checkpoint/test-gw-1/evidence", {"speed_measurement"})) {
      keys[r["device"].get<std::string>()].insert(key_of(r));
    }
    const auto covered = [&](const std::vector<Truth>& truth, const std::string& device) {
      return std::all_of(truth.begin(), truth.end(), [&](const Truth& t) {
        return keys[device].contains({t.target, t.first_radar_cs});
      });
    };
    return covered(truth_a, "radar-a") && covered(truth_b, "radar-b");
  };
  EXPECT_TRUE(collector_->wait_until(all_recorded, 30s)) << daemon.stderr_text();

  daemon.signal(SIGTERM);
  ASSERT_EQ(daemon.wait(30s), 0) << daemon.stderr_text();
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        const auto audits = records_of(*collector_, "checkpoint/test-gw-1/evidence", {"audit"});
        return !audits.empty() && audits.back()["event"] == "stop";
      },
      10s));

  // B: each vehicle sealed with its lane and speed, within normal latency of its last frame on the wire.
  std::map<TrackKey, json> records_b;
  std::map<TrackKey, json> records_a;
  for (const auto& r : records_of(*collector_, "checkpoint/test-gw-1/evidence", {"speed_measurement"})) {
    (r["device"] == "radar-b" ? records_b : records_a).emplace(key_of(r), r);
  }
  std::vector<std::int64_t> latencies;
  for (const auto& t : truth_b) {
    const auto it = records_b.find({t.target, t.first_radar_cs});
    ASSERT_NE(it, records_b.end()) << "radar B vehicle " << t.vehicle << " lost";
    EXPECT_EQ(it->second["lane"].get<int>(), t.lane) << "vehicle " << t.vehicle;
    EXPECT_EQ(it->second["speed_dkmh"].get<int>(), t.peak_dkmh) << "vehicle " << t.vehicle;
    latencies.push_back(it->second["created_ms"].get<std::int64_t>() - t.last_frame_unix_ms);
  }
  std::sort(latencies.begin(), latencies.end());
  const auto median = latencies[latencies.size() / 2];
  const auto worst = latencies.back();
  std::printf(
      "flood: A %zu vehicles sent, %zu records; B %zu vehicles, seal latency median %lld ms, max %lld ms; "
      "daemon peak RSS %ld kB\n",
      truth_a.size(), records_a.size(), truth_b.size(), static_cast<long long>(median),
      static_cast<long long>(worst), peak_kb);
  EXPECT_LE(worst, kMaxSealLatencyMs * (kSanitized ? 4 : 1)) << "radar B starved under A's flood";
  EXPECT_GE(median, kTrackTimeoutMs) << "a record cannot be sealed before its track times out";
  for (const auto& t : truth_a) {
    const auto it = records_a.find({t.target, t.first_radar_cs});
    ASSERT_NE(it, records_a.end()) << "radar A vehicle " << t.vehicle << " lost";
    EXPECT_EQ(it->second["speed_dkmh"].get<int>(), t.peak_dkmh) << "vehicle " << t.vehicle;
  }

  // A's garbage is counted in the retained status (the last one, published at the clean stop); B has none.
  const auto status = collector_->payloads("checkpoint/test-gw-1/status");
  ASSERT_FALSE(status.empty());
  const auto last = json::parse(status.back());
  ASSERT_EQ(last["state"], "offline");
  const auto& dev_a = last["devices"]["radar-a"];
  const auto& dev_b = last["devices"]["radar-b"];
  EXPECT_GT(sum_errors(dev_a), 100u) << dev_a.dump();
  EXPECT_GT(dev_a["errors"]["checksum"].get<std::uint64_t>() +
                dev_a["errors"]["field_count"].get<std::uint64_t>() +
                dev_a["errors"]["unknown_type"].get<std::uint64_t>(),
            0u)
      << dev_a.dump();
  EXPECT_GT(dev_a["errors"]["truncated"].get<std::uint64_t>(), 0u) << dev_a.dump();
  EXPECT_GT(dev_a["noise_bytes"].get<std::uint64_t>(), static_cast<std::uint64_t>(kGarbageBytesPerSecond))
      << dev_a.dump();
  EXPECT_EQ(sum_errors(dev_b), 0u) << dev_b.dump();
  EXPECT_EQ(dev_b["noise_bytes"].get<std::uint64_t>(), 0u) << dev_b.dump();

  // Memory stayed bounded, and the chain is whole: every committed record arrived, in order, verified.
  ASSERT_GT(peak_kb, 0);
  if (!kSanitized) {
    EXPECT_LE(peak_kb, kPeakRssBoundKb) << "daemon peak RSS under flood";
  }
  const auto seqs = verified_seqs();
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_EQ(seqs[i], i + 1) << "seq gap or reorder at position " << i;
  }
  // After a clean stop the stop audit is the last record the daemon committed: its seq is the count.
  const auto audits = records_of(*collector_, "checkpoint/test-gw-1/evidence", {"audit"});
  EXPECT_EQ(seqs.size(), audits.back()["seq"].get<std::size_t>()) << "every committed record arrives";
}

}  // namespace
}  // namespace cpd::testing
