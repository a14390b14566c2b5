// Custody end to end with real parts: radar simulator -> checkpointd -> mosquitto -> checkpoint-central ->
// PostgreSQL, and custody receipts back to the gateway (docs/custody.md).
#include "daemon/core/custody.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/record_check.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class Custody : public CustodyFixture {
 protected:
  void start_radar(int vehicles, double rate) { CustodyFixture::start_radar(vehicles, rate, /*seed=*/11); }

  // The gateway's config; with custody on, it trusts central.pub.pem for receipts.
  void write_gateway_config(bool custody, int retention_days = 30) {
    GatewayConfig config;
    config.retention_days = retention_days;
    config.custody = custody;
    config.custody_extra = "  retention_check_ms: 300\n";
    CustodyFixture::write_gateway_config(config);
  }

  std::unique_ptr<Process> start_central(const std::string& name = "central",
                                         const std::string& id = "central-1") {
    CentralConfig config;
    config.client_id = id;
    write_central_config(name, config);
    std::unique_ptr<Process> p;
    CustodyFixture::start_central(p, name);
    return p;
  }

  void enroll() {
    write_central_config();
    ASSERT_EQ(central_enroll(), 0);
  }

  // Two instances on one shared subscription under 150 vehicles at 15/s, until central holds 40 records.
  struct TwoInstances {
    std::unique_ptr<Process> a, b, daemon;
  };
  void start_two_instances(TwoInstances& run) {
    enroll();
    run.a = start_central("central-a", "central-a");
    run.b = start_central("central-b", "central-b");
    start_radar(150, 15);
    write_gateway_config(true);
    run.daemon = start_daemon();
    ASSERT_TRUE(wait_for_condition([&] { return watermark() >= 40; }, 60s))
        << run.a->stderr_text() << run.b->stderr_text();
  }
  // The gateway has sealed all 150 vehicles and central's watermark has reached its head (within `limit`).
  void wait_for_all_in_custody(const Process& central, std::chrono::seconds limit) {
    ASSERT_TRUE(wait_for_condition(
        [&] {
          return store_query(dir_ / "store.db",
                             "SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 150;
        },
        90s));
    ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, limit))
        << "watermark " << watermark() << " head " << head_seq() << "\n"
        << central.stderr_text();
  }

  // The retained receipt; one that fails the gateway's checks is a test failure.
  std::optional<custody::Receipt> retained_receipt() {
    return CustodyFixture::retained_receipt(5s, /*expect_valid=*/true);
  }

  std::string slurp_jws(long long seq) {
    Process q({"/usr/bin/sqlite3", (dir_ / "store.db").string(),
               "SELECT jws FROM records WHERE seq = " + std::to_string(seq)},
              dir_ / ("jws-" + std::to_string(seq)));
    q.wait(10s);
    std::string out = q.stdout_text();
    while (!out.empty() && out.back() == '\n') {
      out.pop_back();
    }
    return out;
  }
};

TEST_F(Custody, CentralVerifiesStoresAndConfirmsEveryRecord) {
  enroll();
  auto central = start_central();
  start_radar(30, 20);
  write_gateway_config(false);
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 30; }, 60s))
      << daemon->stderr_text() << central->stderr_text();
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  const long long head = head_seq();
  ASSERT_GT(head, 30);
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head; }, 30s))
      << "watermark " << watermark() << " head " << head << "\n"
      << central->stderr_text();

  // Every stored record is the exact JWS the gateway sealed, with no duplicate rows.
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw'"), head);
  EXPECT_EQ(pg_int("SELECT count(DISTINCT seq) FROM records WHERE gateway = 'gw'"), head);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks"), 0);
  // The back office's columns are decoded from the body.
  EXPECT_EQ(
      pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement' AND speed_dkmh > 0 AND lane IN "
             "(1, 2)"),
      pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'"));
  EXPECT_EQ(pg_.query("SELECT site->>'name' FROM records WHERE seq = 1"), "K1234+500");
  EXPECT_EQ(pg_.query("SELECT site->>'km_marker' FROM records WHERE seq = 1"), "K1234+500");
  // The case-file columns of speeding_cases exist (schema 9); this radar-only run has no speeding rows.
  EXPECT_EQ(
      pg_int("SELECT count(*) FROM (SELECT area_code, road_code, km_marker, carriageway, plate_type_code, "
             "vehicle_type_code, radar_serial, calibration_certificate, camera_serial, config_sha256 "
             "FROM speeding_cases) c"),
      0);

  // A custody receipt through the head, signed by central, naming the head record's hash.
  ASSERT_TRUE(wait_for_condition(
      [&] {
        auto r = retained_receipt();
        return r && static_cast<long long>(r->through_seq) == head;
      },
      20s));
  const auto receipt = retained_receipt();
  ASSERT_TRUE(receipt);
  EXPECT_EQ(receipt->central, "central-test");
  EXPECT_EQ(receipt->head, sha256_hex(pg_.query("SELECT jws FROM records WHERE gateway = 'gw' AND seq = " +
                                                std::to_string(head))));

  // `export` gives the chain as JWS lines that the stock verifier accepts from seq 1.
  ASSERT_EQ(export_chain(), 0);
  std::string verify_out;
  std::string verify_err;
  EXPECT_EQ(verify_export(&verify_out, &verify_err, 30s), 0) << verify_out << verify_err;

  std::string status;
  ASSERT_EQ(central_cli({"status", "--config", (dir_ / "central.yaml").string(), "--json"}, &status), 0);
  const auto s = nlohmann::json::parse(status);
  EXPECT_EQ(s["gateways"][0]["watermark"].get<long long>(), head);
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(20s), 0) << central->stderr_text();
}

// The gateway side: receipts accepted into the chain, retention inside custody only, no receipt loop.
TEST_F(Custody, TheGatewaySealsCustodyAndDeletesOnlyWhatCentralHolds) {
  enroll();
  start_radar(40, 20);
  write_gateway_config(true, /*retention_days=*/0);
  // Central is not there yet: records pile up on the gateway and nothing may be deleted, however old.
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return head_seq() >= 20; }, 60s)) << daemon->stderr_text();
  pause(1500ms);  // several retention rounds (every 300 ms) with no receipt
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT min(seq) FROM records"), 1);
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT count(*) FROM custody"), 0);

  auto central = start_central();
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return store_query(dir_ / "store.db",
                           "SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 40 ||
               store_query(dir_ / "store.db",
                           "SELECT max(seq) FROM records WHERE type = 'speed_measurement'") > 0;
      },
      60s));
  // Central catches up from the head announcements and resends, then confirms; the gateway seals the custody.
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return store_query(dir_ / "store.db", "SELECT count(*) FROM records WHERE type = 'custody'") > 0;
      },
      60s))
      << daemon->stderr_text() << central->stderr_text();
  // Everything up to custody is pruned (retention 0 days) except the chain head; the pruned records are the
  // ones central holds.
  ASSERT_TRUE(wait_for_condition(
      [&] { return store_query(dir_ / "store.db", "SELECT min(seq) FROM records") > 1; }, 20s));
  const long long through = store_query(dir_ / "store.db", "SELECT through_seq FROM custody");
  const long long first = store_query(dir_ / "store.db", "SELECT min(seq) FROM records");
  EXPECT_LE(first, through + 1);
  // The watermark first: it never passes the highest seq stored, which only grows.
  const long long mark = watermark();
  EXPECT_LE(mark, pg_int("SELECT max(seq) FROM records WHERE gateway = 'gw'"));
  EXPECT_GE(watermark(), through);

  // Once the radar is done, an idle gateway does not seal a custody record per receipt for ever (each would
  // move central's watermark and bring the next receipt). Central has every custody record (the gateway
  // prunes its own copies once they are in custody too).
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 60s));
  pause(2s);
  const long long custody_records =
      pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND type = 'custody'");
  const long long head = head_seq();
  EXPECT_GE(custody_records, 1);
  pause(3s);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND type = 'custody'"), custody_records)
      << "receipts keep sealing custody records";
  EXPECT_EQ(head_seq(), head);
  // The chain head stays on the gateway whatever the retention: it is what the next record links to.
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT count(*) FROM records"), 1);
  const auto receipt = retained_receipt();
  ASSERT_TRUE(receipt);
  EXPECT_EQ(static_cast<long long>(receipt->through_seq), head);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

// Receipts that fail a check change nothing: a wrong key, another gateway, a head hash that is not ours.
TEST_F(Custody, ABadReceiptIsRefusedAndNothingIsDeleted) {
  start_radar(15, 20);
  write_gateway_config(true, 0);
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return head_seq() >= 10; }, 60s)) << daemon->stderr_text();
  const auto forged_key = Ed25519PrivateKey::generate();
  const auto central_key = Ed25519PrivateKey::load_pem_file((dir_ / "central.key").string());
  const long long seq = 5;
  std::ifstream db_check(dir_ / "store.db");
  ASSERT_TRUE(db_check.good());
  // The real hash of record 5, read the way a consumer would: from the store file.
  const std::string head5 = sha256_hex(slurp_jws(seq));
  const std::vector<std::pair<std::string, std::string>> bad = {
      {custody::seal_receipt(forged_key, {"central-test", "gw", 5, head5, 1, {}, {}}),
       "not a configured central key"},
      {custody::seal_receipt(central_key, {"central-test", "gw-other", 5, head5, 1, {}, {}}),
       "not this gateway"},
      {custody::seal_receipt(central_key, {"central-test", "gw", 5, std::string(64, 'f'), 1, {}, {}}),
       "is not the SHA-256"},
      {custody::seal_receipt(central_key, {"central-test", "gw", 999999, head5, 1, {}, {}}),
       "beyond this gateway's head"},
      // Central may name as lost only what the gateway said it no longer holds.
      {custody::seal_receipt(central_key, {"central-test", "gw", 5, head5, 1, {{2, 3}}, {}}),
       "names seq 2 as lost, but this gateway holds it"},
  };
  for (const auto& [jws, why] : bad) {
    ASSERT_EQ(mosquitto_pub("checkpoint/gw/custody", jws, /*retain=*/true, 10s), 0);
    EXPECT_TRUE(wait_for_condition([&] { return daemon->stderr_text().find(why) != std::string::npos; }, 10s))
        << why << "\n"
        << daemon->stderr_text();
  }
  pause(1s);  // retention rounds run every 300 ms
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT count(*) FROM custody"), 0);
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT count(*) FROM records WHERE type = 'custody'"), 0);
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT min(seq) FROM records"), 1);

  // The right receipt is accepted: one custody record, and the records through 5 may go.
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/custody",
                          custody::seal_receipt(central_key, {"central-test", "gw", 5, head5, 1, {}, {}}),
                          /*retain=*/true, 10s),
            0);
  ASSERT_TRUE(wait_for_condition(
      [&] { return store_query(dir_ / "store.db", "SELECT through_seq FROM custody") == 5; }, 10s))
      << daemon->stderr_text();
  EXPECT_EQ(store_query(dir_ / "store.db", "SELECT count(*) FROM records WHERE type = 'custody'"), 1);
  ASSERT_TRUE(wait_for_condition(
      [&] { return store_query(dir_ / "store.db", "SELECT min(seq) FROM records") == 6; }, 10s));
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

// A broker that loses what it held (killed, no persistence of the queue) while central is frozen: central
// finds the holes and the lost tail, asks the gateway to resend, and ends with every record, once.
TEST_F(Custody, ABrokerThatLosesMessagesIsRepairedByResends) {
  enroll();
  auto central = start_central();
  start_radar(120, 10);
  write_gateway_config(true);
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() >= 10; }, 60s)) << central->stderr_text();
  central->signal(SIGSTOP);
  const long long before = head_seq();
  ASSERT_TRUE(wait_for_condition([&] { return head_seq() >= before + 15; }, 30s));
  // The broker acknowledged these to the gateway and held them for central: killed, they are gone.
  broker_->process().signal(SIGKILL);
  broker_->process().wait(10s);
  std::error_code ec;
  fs::remove(dir_ / "broker" / "mosquitto.db", ec);
  broker_->start();
  central->signal(SIGCONT);
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return store_query(dir_ / "store.db",
                           "SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 120;
      },
      90s))
      << daemon->stderr_text();
  // Every record the gateway sealed reaches central's contiguous watermark, through resends.
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 90s))
      << "watermark " << watermark() << " head " << head_seq() << "\n"
      << central->stderr_text();
  EXPECT_GT(pg_int("SELECT resend_requests FROM gateways WHERE gateway = 'gw'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) - count(DISTINCT seq) FROM records WHERE gateway = 'gw'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine"), 0);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

// Two instances split the feed on one shared subscription; one is SIGKILLed mid-run with messages in hand.
// The other (and the gap repair) ends with every record, verified, once.
TEST_F(Custody, TwoInstancesShareTheFeedAndAKilledOneLosesNothing) {
  TwoInstances run;
  ASSERT_NO_FATAL_FAILURE(start_two_instances(run));
  auto& [a, b, daemon] = run;
  b->signal(SIGKILL);
  b->wait(10s);
  ASSERT_NO_FATAL_FAILURE(wait_for_all_in_custody(*a, 90s));
  // Both instances stored records: the feed was split.
  EXPECT_GT(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw'"), 150);
  EXPECT_EQ(pg_int("SELECT count(*) - count(DISTINCT seq) FROM records WHERE gateway = 'gw'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine"), 0);
  EXPECT_NE(b->stderr_text().find("subscribed to $share/central/"), std::string::npos);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

// An instance stopped cleanly (SIGTERM: a rolling restart) leaves the shared subscription before it drains,
// so the broker sends its share of the feed to the other instance instead of parking it in the stopped
// instance's persistent session: the watermark keeps up with no gap to repair and no resend request.
TEST_F(Custody, AnInstanceStoppedCleanlyHandsItsShareToTheOtherWithoutAGap) {
  TwoInstances run;
  ASSERT_NO_FATAL_FAILURE(start_two_instances(run));
  auto& [a, b, daemon] = run;
  b->signal(SIGTERM);
  EXPECT_EQ(b->wait(30s), 0) << b->stderr_text();
  EXPECT_NE(b->stderr_text().find("left the shared subscription"), std::string::npos) << b->stderr_text();
  ASSERT_NO_FATAL_FAILURE(wait_for_all_in_custody(*a, 30s));
  EXPECT_EQ(pg_int("SELECT resend_requests FROM gateways WHERE gateway = 'gw'"), 0) << a->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) - count(DISTINCT seq) FROM records WHERE gateway = 'gw'"), 0);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

// A record forged with another key on a gateway's topic is quarantined (kept, alarmed), never trusted, and
// does not stop the real chain.
TEST_F(Custody, ARecordUnderAnUnknownKeyIsQuarantinedNotTrusted) {
  enroll();
  auto central = start_central();
  start_radar(10, 20);
  write_gateway_config(true);
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() >= 5; }, 60s)) << central->stderr_text();
  const auto forger = Ed25519PrivateKey::generate();
  nlohmann::json body = {{"v", 1},
                         {"gateway", "gw"},
                         {"seq", 1000000},
                         {"prev", std::string(64, '0')},
                         {"id", "gw:1000000"},
                         {"type", "speeding"},
                         {"time_ms", 1},
                         {"created_ms", 1}};
  const std::string forged = sign_compact(forger, "evidence+jws", body);
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/evidence", forged, /*retain=*/false, 10s), 0);
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM quarantine") == 1; }, 20s))
      << central->stderr_text();
  EXPECT_EQ(pg_.query("SELECT kid FROM quarantine"), forger.public_key().kid());
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE seq = 1000000"), 0);
  EXPECT_NE(central->stderr_text().find("record under an unknown key quarantined"), std::string::npos);
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return store_query(dir_ / "store.db",
                           "SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 10;
      },
      60s));
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 60s));
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

}  // namespace
}  // namespace cpd::testing
