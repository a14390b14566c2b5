// Broker faults under radar traffic (issue 5, section 2): a broker replaced by a fresh one without the
// daemon's session (Paho's -11 path), and a broker down for a while; checked at a subscriber against the store.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "daemon/core/chain_verifier.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const std::string kEvidence = "checkpoint/test-gw-1/evidence";
const std::string kStatus = "checkpoint/test-gw-1/status";

long long outbox_count(const fs::path& db) { return store_query(db, "SELECT count(*) FROM outbox"); }
long long committed_max_seq(const fs::path& db) { return store_query(db, "SELECT coalesce(max(seq), 0) FROM records"); }

// What a consumer checks over everything it received, in arrival order.
struct ChainCheck {
  bool ok = true;
  std::string reason;
  std::vector<std::uint64_t> seqs;  // distinct, in arrival order
  std::uint64_t duplicates = 0;
};

class BrokerFaults : public ::testing::Test {
 protected:
  void SetUp() override { pub_pem_ = make_gateway_key(dir_.path()); }

  void start_sim(double vehicles_per_s) {
    sim_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2", "--seed",
                                 "21", "--vehicles", "0", "--rate", std::to_string(vehicles_per_s),
                                 // Short tracks: a lane holds one vehicle at a time, so the default 8 x 50 ms
                                 // frames would cap the traffic at 2.5 vehicles/s per lane.
                                 "--frames-per-track", "4", "--frame-interval-ms", "25"},
        dir_ / "sim");
    auto line = sim_->wait_for_stdout_line("listening ", 10s);
    ASSERT_TRUE(line) << "simulator did not start: " << sim_->stderr_text();
    sim_port_ = static_cast<std::uint16_t>(std::stoi(line->substr(10)));
  }

  void write_config(const std::string& uri) {
    std::ofstream(dir_ / "checkpointd.yaml")
        << "gateway:\n"
        << "  id: test-gw-1\n"
        << "  site: {name: \"Test site\", road: G60, direction: N, lat: 30.274085, lon: 120.15507, "
           "utc_offset: \"+08:00\"}\n"
        << "  key: " << (dir_ / "gateway.key").string() << "\n"
        << "store:\n  path: " << db().string() << "\n"
        << "mqtt:\n  uri: " << uri << "\n  client_id: test-gw-1\n  topic_prefix: checkpoint\n"
        << "  reconnect_min_ms: 200\n  reconnect_max_ms: 1000\n"
        << "metrics: {enabled: false}\n"
        << "devices:\n"
        << "  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: " << sim_port_ << "}\n"
        << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
        << "    calibration: {certificate: JJG527-2026-0412, valid_until: 2099-12-31}\n"
        << "    reconnect_initial_ms: 200\n    reconnect_max_ms: 1000\n";
  }

  std::unique_ptr<Process> start_daemon() {
    return std::make_unique<Process>(
        std::vector<std::string>{binary("daemon/app/checkpointd"), "--config", (dir_ / "checkpointd.yaml").string()},
        dir_ / "checkpointd");
  }

  fs::path db() const { return dir_ / "store.db"; }

  ChainCheck verify(const std::vector<std::string>& jws_in_arrival_order) const {
    std::ifstream pem_in(pub_pem_);
    const std::string pem((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>());
    ChainVerifier verifier(Ed25519PublicKey::from_pem(pem));
    verifier.expect_from_start(true);
    ChainCheck out;
    for (const auto& jws : jws_in_arrival_order) {
      const auto r = verifier.feed(jws);
      if (!r.ok) {
        out.ok = false;
        out.reason = "after seq " + std::to_string(out.seqs.empty() ? 0 : out.seqs.back()) + ": " + r.reason;
        break;
      }
      if (r.duplicate) {
        ++out.duplicates;
      } else {
        out.seqs.push_back(r.seq);
      }
    }
    return out;
  }

  static bool has_stop_audit(const MqttCollector& c) {
    for (const auto& r : records_of(c, kEvidence, {"audit"})) {
      if (r.value("event", "") == "stop") {
        return true;
      }
    }
    return false;
  }

  TempDir dir_;
  fs::path pub_pem_;
  std::unique_ptr<Process> sim_;
  std::uint16_t sim_port_ = 0;
};

// The broker is frozen (no more PUBACKs: the window fills and the rest piles up in the outbox), then killed
// and replaced on the same port by a broker that never saw the daemon. Paho reconnects with session_present
// false and abandons its unacknowledged publishes with MQTTASYNC_OPERATION_INCOMPLETE (-11); everything the
// old broker did not acknowledge must come again from the outbox, in order, to a subscriber of the new broker.
TEST_F(BrokerFaults, FreshBrokerWithoutSessionReceivesEveryRecordTheOldOneDidNotAcknowledge) {
  const std::uint16_t port = free_port();
  Mosquitto old_broker(dir_ / "broker1", port);
  old_broker.start();
  start_sim(20);
  write_config(old_broker.uri());
  auto first = std::make_unique<MqttCollector>(old_broker.uri(), std::vector<std::string>{kEvidence});
  auto daemon = start_daemon();
  ASSERT_TRUE(first->wait_until([&] { return first->count(kEvidence) >= 20; }, 60s)) << daemon->stderr_text();

  old_broker.process().signal(SIGSTOP);
  // 64 awaiting PUBACK (the window) and more behind them in the outbox.
  ASSERT_TRUE(first->wait_until([&] { return outbox_count(db()) >= 120; }, 60s))
      << "outbox " << outbox_count(db()) << "\n" << daemon->stderr_text();
  // Broker 1 has been frozen for seconds: what its subscriber got is final.
  const auto from_old = first->payloads(kEvidence);

  // The daemon is held still while the brokers change, so the new broker's subscriber is in place before the
  // daemon can reconnect (a fresh broker keeps nothing for a subscriber that has not subscribed yet).
  daemon->signal(SIGSTOP);
  old_broker.process().signal(SIGKILL);
  ASSERT_TRUE(old_broker.process().wait(10s));
  const long long committed_at_swap = committed_max_seq(db());
  const long long unacked_at_swap = outbox_count(db());
  Mosquitto fresh_broker(dir_ / "broker2", port);
  fresh_broker.start();
  MqttCollector second(fresh_broker.uri(), {kEvidence, kStatus});
  daemon->signal(SIGCONT);

  // Everything committed before the swap arrives, then traffic goes on for a while.
  ASSERT_TRUE(second.wait_until(
      [&] {
        return !second.payloads(kEvidence).empty() &&
               record_body(second.payloads(kEvidence).back())["seq"].get<long long>() >= committed_at_swap + 20;
      },
      60s))
      << "fresh broker got " << second.count(kEvidence) << " records\n" << daemon->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  ASSERT_TRUE(second.wait_until([&] { return has_stop_audit(second); }, 10s));

  const auto committed = static_cast<std::uint64_t>(store_query(db(), "SELECT count(*) FROM records"));
  EXPECT_EQ(outbox_count(db()), 0) << "a clean stop with the broker up leaves nothing unforwarded";

  // One consumer's view: broker 1's deliveries, then broker 2's, must form one unbroken chain 1..committed.
  std::vector<std::string> all = from_old;
  const auto from_fresh = second.payloads(kEvidence);
  all.insert(all.end(), from_fresh.begin(), from_fresh.end());
  const auto chain = verify(all);
  ASSERT_TRUE(chain.ok) << chain.reason;
  ASSERT_EQ(chain.seqs.size(), committed) << "every committed record arrives at one broker or the other";
  for (std::size_t i = 0; i < chain.seqs.size(); ++i) {
    ASSERT_EQ(chain.seqs[i], i + 1) << "gap or reorder at position " << i;
  }

  // What broker 1 delivered is exactly what it acknowledged before it froze; the rest (the window in flight
  // and the backlog behind it) came from the outbox through broker 2, starting right after.
  const auto old_chain = verify(from_old);
  ASSERT_TRUE(old_chain.ok) << old_chain.reason;
  ASSERT_FALSE(old_chain.seqs.empty());
  const std::uint64_t last_old = old_chain.seqs.back();
  const std::uint64_t first_fresh = record_body(from_fresh.front())["seq"].get<std::uint64_t>();
  EXPECT_LE(first_fresh, last_old + 1);
  EXPECT_GE(static_cast<long long>(committed_at_swap) - static_cast<long long>(last_old), 120 - 1)
      << "the swap happened with records awaiting PUBACK and a backlog";
  EXPECT_GE(unacked_at_swap, 120);

  // The daemon saw the connection go and Paho's abandoned publishes (counted as failed attempts).
  const auto statuses = second.payloads(kStatus);
  ASSERT_FALSE(statuses.empty());
  const auto last_status = json::parse(statuses.back());
  EXPECT_EQ(last_status["state"], "offline");
  EXPECT_GE(last_status["broker"]["disconnects"].get<int>(), 1) << last_status.dump();
  EXPECT_GE(last_status["broker"]["failed"].get<int>(), 1) << last_status.dump();
  std::cout << "[ figures  ] broker 1 delivered seq 1.." << last_old << "; at the swap " << unacked_at_swap
            << " unacknowledged of " << committed_at_swap << " committed; broker 2 delivered "
            << from_fresh.size() << " messages from seq " << first_fresh << "; " << committed
            << " records in all, " << chain.duplicates << " redeliveries; daemon status " << last_status["broker"].dump()
            << "\n";
}

// The broker goes away for 25 s under traffic: records pile up on disk (outbox), the daemon's memory stays
// flat, and when the broker is back the backlog drains to the subscriber in seq order without a gap.
TEST_F(BrokerFaults, BrokerDownUnderTrafficBacklogGrowsOnDiskAndDrainsInSeqOrder) {
  constexpr int kDownSeconds = 25;
  Mosquitto broker(dir_ / "broker");
  broker.start();
  start_sim(20);
  write_config(broker.uri());
  MqttCollector collector(broker.uri(), {kEvidence, kStatus});
  auto daemon = start_daemon();
  ASSERT_TRUE(collector.wait_until([&] { return collector.count(kEvidence) >= 40; }, 60s)) << daemon->stderr_text();

  const long rss_before = rss_kb(daemon->pid());
  ASSERT_TRUE(stop_broker_with_daemon_frozen(*daemon, collector, kEvidence, broker));
  const auto down_at = std::chrono::steady_clock::now();
  long long backlog_first = -1;
  long long backlog_peak = 0;
  long rss_peak = rss_before;
  // Sampling once a second for the outage's length (the outage is the test's subject, not a wait for work).
  for (int s = 0; s < kDownSeconds; ++s) {
    pause(1s);
    const long long backlog = outbox_count(db());
    if (s == 2) {
      backlog_first = backlog;
    }
    backlog_peak = std::max(backlog_peak, backlog);
    rss_peak = std::max(rss_peak, rss_kb(daemon->pid()));
  }
  ASSERT_TRUE(daemon->running()) << daemon->stderr_text();
  const long long committed_at_return = committed_max_seq(db());
  EXPECT_GE(backlog_peak, 8 * kDownSeconds) << "traffic went on into the store during the outage";
  EXPECT_GT(backlog_peak, backlog_first + 100) << "the backlog grows while the broker is away";

  ASSERT_TRUE(start_broker_with_daemon_frozen(*daemon, collector, kEvidence, broker));
  const auto up_at = std::chrono::steady_clock::now();  // the daemon sees the broker from here
  ASSERT_TRUE(collector.wait_until(
      [&] {
        const auto p = collector.payloads(kEvidence);
        return !p.empty() && record_body(p.back())["seq"].get<long long>() >= committed_at_return;
      },
      60s))
      << daemon->stderr_text();
  const double drain_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - up_at).count();
  const long rss_after = rss_kb(daemon->pid());
  const long hwm = peak_rss_kb(daemon->pid());

  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  ASSERT_TRUE(collector.wait_until([&] { return has_stop_audit(collector); }, 10s));

  const auto committed = static_cast<std::uint64_t>(store_query(db(), "SELECT count(*) FROM records"));
  EXPECT_EQ(outbox_count(db()), 0);
  const auto chain = verify(collector.payloads(kEvidence));
  ASSERT_TRUE(chain.ok) << chain.reason;
  ASSERT_EQ(chain.seqs.size(), committed);
  for (std::size_t i = 0; i < chain.seqs.size(); ++i) {
    ASSERT_EQ(chain.seqs[i], i + 1) << "gap or reorder at position " << i;
  }

  // Memory: the backlog lives on disk. Thousands of ~3 KB records would be megabytes if held in memory;
  // allow the allocator some slack, not the backlog.
  if (!kSanitized) {
    EXPECT_LT(rss_peak - rss_before, 8 * 1024) << "RSS before " << rss_before << " kB, peak " << rss_peak << " kB";
  }

  // The status topic tells the operator about the backlog once the broker is back.
  long long status_backlog_peak = 0;
  for (const auto& s : collector.payloads(kStatus)) {
    const auto j = json::parse(s, nullptr, false);
    if (j.is_object() && j.contains("backlog") && j["backlog"].is_number()) {
      status_backlog_peak = std::max(status_backlog_peak, j["backlog"].get<long long>());
    }
  }
  EXPECT_GT(status_backlog_peak, 0) << "the status after the reconnect reports the backlog";

  const double down_s = std::chrono::duration<double>(up_at - down_at).count();
  std::cout << "[ figures  ] broker down " << down_s << " s: backlog peak " << backlog_peak << " (status said "
            << status_backlog_peak << "), drained in " << drain_s << " s ("
            << (drain_s > 0 ? static_cast<double>(backlog_peak) / drain_s : 0.0) << " records/s); RSS before "
            << rss_before << " kB, peak during " << rss_peak << " kB, after " << rss_after << " kB, VmHWM "
            << hwm << " kB; " << committed << " records, " << chain.duplicates << " redeliveries\n";
}

}  // namespace
}  // namespace cpd::testing
