// A replaced gateway store with real parts (radar simulator -> checkpointd -> mosquitto -> checkpoint-central
// -> PostgreSQL): the gateway's store and media are deleted after central confirmed everything, and the
// gateway, started again on the empty store, continues its chain after the retained custody receipt with a
// `store_replaced` audit record (docs/custody.md, "A replaced store"). Central stores the continued chain
// as its ordinary chain: no fork, no chain break, nothing unrecoverable, and the export verifies across.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;

class ReplacedStore : public CustodyFixture {
 protected:
  ReplacedStore() { store_db_ = dir_ / "gw" / "store.db"; }

  // A new simulator each time (seed 11, 12, ...).
  void start_radar(int vehicles, double rate) {
    const int run = sim_runs_++;
    CustodyFixture::start_radar(vehicles, rate, 11 + run, "sim-" + std::to_string(run));
  }

  void write_gateway_config() {
    GatewayConfig config;
    config.custody_extra = "  retention_check_ms: 300\n  empty_store_wait_ms: 2000\n";
    CustodyFixture::write_gateway_config(config);
  }

  std::unique_ptr<Process> start_daemon() {
    fs::create_directories(dir_ / "gw");
    return CustodyFixture::start_daemon();
  }

  fs::path store() const { return store_db_; }
  nlohmann::json central_body(long long seq) {
    const std::string jws =
        pg_.query("SELECT jws FROM records WHERE gateway = 'gw' AND seq = " + std::to_string(seq));
    return jws.empty() ? nlohmann::json() : record_body(jws);
  }
  std::optional<custody::Receipt> retained_receipt() { return CustodyFixture::retained_receipt(3s); }

  int sim_runs_ = 0;
};

TEST_F(ReplacedStore, TheChainContinuesAfterTheReceiptAndCentralTakesItAsItsOrdinaryChain) {
  write_central_config();
  ASSERT_EQ(central_enroll(), 0);
  std::unique_ptr<Process> central;
  ASSERT_NO_FATAL_FAILURE(start_central(central));

  // First life: a new gateway. No receipt is retained yet, so after the wait its chain starts at seq 1
  // and its `start` record says why.
  start_radar(20, 20);
  write_gateway_config();
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 20; }, 40s))
      << daemon->stderr_text() << central->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  const long long old_head = head_seq();
  ASSERT_GT(old_head, 20);
  const auto first = central_body(1);
  EXPECT_EQ(first["event"], "start");
  EXPECT_NE(first.value("new_chain", std::string()).find("no custody receipt within 2000 ms"),
            std::string::npos)
      << first.dump();
  // Central confirms everything, the stop record included: the retained receipt names the old head.
  ASSERT_TRUE(wait_for_condition(
      [&] {
        const auto r = retained_receipt();
        return r && static_cast<long long>(r->through_seq) == old_head;
      },
      20s))
      << "watermark " << watermark() << " head " << old_head << "\n"
      << central->stderr_text();
  const auto receipt = retained_receipt();
  ASSERT_TRUE(receipt);

  // The store (and its media) is gone: a replaced disk.
  fs::remove_all(dir_ / "gw");

  // Second life on the empty store, with new traffic.
  start_radar(10, 20);
  write_gateway_config();
  daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_int(
                   "SELECT count(*) FROM records WHERE gateway = 'gw' AND type = 'speed_measurement' AND "
                   "seq > " +
                   std::to_string(old_head)) >= 10;
      },
      40s))
      << daemon->stderr_text() << central->stderr_text();
  // The first record of the new store: seq old_head + 1, prev = the receipt's head, naming the receipt.
  EXPECT_EQ(store_query(store(), "SELECT min(seq) FROM records"), old_head + 1);
  const auto replaced = central_body(old_head + 1);
  EXPECT_EQ(replaced["type"], "audit");
  EXPECT_EQ(replaced["event"], "store_replaced");
  EXPECT_EQ(replaced["prev"], receipt->head);
  EXPECT_EQ(replaced["continued_from_seq"].get<long long>(), old_head);
  EXPECT_EQ(replaced["lost_after_seq"].get<long long>(), old_head);
  EXPECT_EQ(replaced["central"], "central-test");
  EXPECT_EQ(replaced["central_kid"], central_pub_->kid());
  const auto start = central_body(old_head + 2);
  EXPECT_EQ(start["event"], "start");
  EXPECT_EQ(start["resumed_at_seq"].get<long long>(), old_head);
  EXPECT_FALSE(start.contains("new_chain"));
  // The gateway's custody state is the receipt it continued from (no seq before it is held, none re-sent).
  EXPECT_GE(store_query(store(), "SELECT through_seq FROM custody"), old_head);
  EXPECT_EQ(store_query(store(), "SELECT seq FROM chain_origin"), old_head);

  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  const long long new_head = head_seq();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == new_head; }, 20s))
      << "watermark " << watermark() << " head " << new_head << "\n"
      << central->stderr_text();
  // All of the old chain was in custody: nothing is unrecoverable, no fork, no chain break.
  EXPECT_EQ(pg_int("SELECT count(*) FROM unrecoverable WHERE gateway = 'gw'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_forks"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine"), 0);
  EXPECT_EQ(pg_.query("SELECT coalesce(chain_break_seq::text, 'none') FROM gateways WHERE gateway = 'gw'"),
            "none");
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw'"), new_head);
  // Central says so explicitly: a chain restart of kind store_replaced at old_head + 1, not a fork.
  EXPECT_EQ(pg_.query("SELECT kind || ' ' || seq || ' ' || as_fork FROM chain_restarts WHERE gateway = 'gw'"),
            "store_replaced " + std::to_string(old_head + 1) + " false");
  std::string status;
  ASSERT_EQ(central_cli({"status", "--config", (dir_ / "central.yaml").string()}, &status), 0);
  EXPECT_NE(status.find("STORE REPLACED at seq " + std::to_string(old_head + 1)), std::string::npos)
      << status;

  // The export verifies from seq 1 across the replaced store.
  ASSERT_EQ(export_chain(), 0);
  std::string verify_out;
  std::string verify_err;
  EXPECT_EQ(verify_export(&verify_out, &verify_err, 30s), 0) << verify_out << verify_err;
  EXPECT_NE(verify_out.find("seq 1.." + std::to_string(new_head)), std::string::npos) << verify_out;
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(20s), 0) << central->stderr_text();
}

// A replaced store with no receipt to continue after (here: the gateway does not wait for one) starts a new
// chain at seq 1. Central holds the old chain's seq 1: the new one arrives as forks, and central says what it
// is (a NEW CHAIN with the gateway's reason), not only that seqs fork.
TEST_F(ReplacedStore, ANewChainOnAReplacedStoreIsShownAsSuchByCentral) {
  write_central_config();
  ASSERT_EQ(central_enroll(), 0);
  std::unique_ptr<Process> central;
  ASSERT_NO_FATAL_FAILURE(start_central(central));
  start_radar(10, 20);
  write_gateway_config();
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 10; }, 40s))
      << daemon->stderr_text() << central->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM chain_restarts"), 0);  // a gateway's first chain is no restart

  fs::remove_all(dir_ / "gw");
  start_radar(5, 20);
  GatewayConfig config;
  config.custody_extra = "  empty_store_wait_ms: 0\n";
  CustodyFixture::write_gateway_config(config);
  daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_.query("SELECT kind || ' ' || seq || ' ' || as_fork FROM chain_restarts") ==
               "new_chain 1 true";
      },
      30s))
      << pg_.query("SELECT string_agg(kind || ' ' || seq, ',') FROM chain_restarts")
      << central->stderr_text();
  EXPECT_NE(pg_.query("SELECT reason FROM chain_restarts").find("empty_store_wait_ms is 0"),
            std::string::npos);
  EXPECT_GE(pg_int("SELECT forks FROM gateways WHERE gateway = 'gw'"), 1);
  std::string status;
  ASSERT_EQ(central_cli({"status", "--config", (dir_ / "central.yaml").string()}, &status), 0);
  EXPECT_NE(status.find("NEW CHAIN at seq 1 (a fork of the old chain)"), std::string::npos) << status;
  EXPECT_NE(central->stderr_text().find("CHAIN RESTART: gw:1 new_chain"), std::string::npos);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(20s), 0) << central->stderr_text();
}

}  // namespace
}  // namespace cpd::testing
