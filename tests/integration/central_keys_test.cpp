// Central's key trust with real parts (docs/custody.md, "Key trust", "Quarantine"): radar simulator ->
// checkpointd -> mosquitto -> checkpoint-central -> PostgreSQL. A key rotated away from is trusted only
// through its key_rotation record's seq (a record forged with it for a later seq is quarantined and alarmed,
// never stored); a gateway enrolled after it has sent traffic gets its quarantined records taken in once
// enrolled.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "daemon/core/ed25519.h"
#include "daemon/core/key_rotation.h"
#include "daemon/core/record_check.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class CentralKeys : public CustodyFixture {
 protected:
  void SetUp() override {
    CustodyFixture::SetUp();
    old_kid_ = gateway_kid();
  }

  void start_radar(int vehicles, double rate) { CustodyFixture::start_radar(vehicles, rate, /*seed=*/17); }
  void write_gateway_config() {
    GatewayConfig config;
    config.control = true;
    CustodyFixture::write_gateway_config(config);
  }

  // resend_after_ms: how long a gap waits before central asks for a resend (long: only re-examining the
  // quarantine can close it within the test).
  void write_central_config(int resend_after_ms) {
    CentralConfig config;
    config.resend_after_ms = resend_after_ms;
    config.metrics = true;
    CustodyFixture::write_central_config("central", config);
  }

  void start_central() { CustodyFixture::start_central(central_, "central", &metrics_port_); }

  std::string old_kid_;
  std::unique_ptr<Process> central_;
};

TEST_F(CentralKeys, RecordForgedUnderTheRetiredKeyIsQuarantinedAndAlarmedNotStored) {
  write_central_config(1000);
  // A name no feed topic can carry is refused, with the rule.
  std::string refusal;
  EXPECT_NE(central_enroll("gw/x", {}, &refusal), 0);
  EXPECT_THAT(refusal, HasSubstr("is not a gateway id"));
  ASSERT_EQ(central_enroll(), 0);
  start_central();
  start_radar(30, 10);
  write_gateway_config();
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() >= 10; }, 30s))
      << daemon->stderr_text() << central_->stderr_text();

  // A key_rotation validly signed by the gateway's key (a clone of the gateway) at a seq central holds:
  // a fork. It enrols nothing, so the key it names stays untrusted and the gateway's key is not retired.
  const auto current = Ed25519PrivateKey::load_pem_file((dir_ / "gateway.key").string());
  const auto other = Ed25519PrivateKey::generate();
  nlohmann::json fork_body = {{"v", 1},
                              {"gateway", "gw"},
                              {"seq", 5},
                              {"id", "gw:5"},
                              {"prev", std::string(64, 'b')},
                              {"type", "key_rotation"},
                              {"time_ms", 1767225600000},
                              {"created_ms", 1767225600000}};
  fork_body.update(
      make_key_rotation_fact(current.public_key(), other.public_key(), UnixMs{1767225600000}).fields);
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/evidence", sign_compact(current, "evidence+jws", fork_body),
                          /*retain=*/false, 60s),
            0);
  ASSERT_TRUE(
      wait_for_condition([&] { return pg_int("SELECT count(*) FROM forks WHERE gateway = 'gw'") == 1; }, 15s))
      << central_->stderr_text();
  nlohmann::json under_other = fork_body;
  under_other["seq"] = 6;
  under_other["id"] = "gw:6";
  under_other["type"] = "audit";
  under_other["message"] = "signed by the key a fork named";
  for (const char* member : {"old_kid", "new_kid", "new_public_key", "new_public_key_pem"}) {
    under_other.erase(member);
  }
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/evidence", sign_compact(other, "evidence+jws", under_other),
                          /*retain=*/false, 60s),
            0);
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw' AND kid = '" +
                      other.public_key().kid() + "'") == 1;
      },
      15s))
      << central_->stderr_text();
  EXPECT_THAT(pg_.query("SELECT reason FROM quarantine WHERE gateway = 'gw'"), HasSubstr("no trusted key"));
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks WHERE gateway = 'gw'"), 1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM gateway_keys WHERE gateway = 'gw'"), 1);
  EXPECT_EQ(pg_.query("SELECT valid_to_seq IS NULL FROM gateway_keys WHERE gateway = 'gw'"), "t");
  const long long before_rotation = head_seq();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() >= before_rotation; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(prometheus_sample(metrics(), "central_retired_key_total"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw'"), 1);
  // A key_rotation signed by the gateway's key whose new_kid is not the kid of the key it names: every
  // reader of the chain (checkpointctl verify) stops trusting the chain there, so central does not store it
  // (it was stored, and a receipt covered a chain the stock verifier calls broken). Far ahead of the chain.
  nlohmann::json malformed = fork_body;
  malformed["seq"] = 1000000;
  malformed["id"] = "gw:1000000";
  malformed["new_kid"] = "0000000000000000";
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/evidence", sign_compact(current, "evidence+jws", malformed),
                          /*retain=*/false, 60s),
            0);
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_int(
                   "SELECT count(*) FROM quarantine WHERE gateway = 'gw' AND reason LIKE "
                   "'key_rotation record: new_kid %a malformed key rotation%'") == 1;
      },
      15s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq = 1000000"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM gateway_keys WHERE gateway = 'gw'"), 1);
  pg_.query("DELETE FROM quarantine WHERE gateway = 'gw'");  // the later checks count only the forgery

  std::string out;
  ASSERT_EQ(ctl({"rotate-key", "--config", (dir_ / "checkpointd.yaml").string(), "--json"}, &out), 0)
      << out << daemon->stderr_text();
  const auto answer = nlohmann::json::parse(out);
  const long long rot_seq = answer["seq"].get<long long>();
  const std::string new_kid = answer["new_kid"].get<std::string>();

  // Central holds the rotation: the old key through rot_seq, the new one from rot_seq + 1.
  ASSERT_TRUE(wait_for_condition([&] { return watermark() > rot_seq; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT valid_to_seq FROM gateway_keys WHERE gateway = 'gw' AND kid = '" + old_kid_ + "'"),
            rot_seq);
  EXPECT_EQ(
      pg_int("SELECT valid_from_seq FROM gateway_keys WHERE gateway = 'gw' AND kid = '" + new_kid + "'"),
      rot_seq + 1);
  EXPECT_EQ(pg_.query("SELECT valid_to_seq IS NULL FROM gateway_keys WHERE gateway = 'gw' AND kid = '" +
                      new_kid + "'"),
            "t");

  // A record for a later seq, validly signed with the retired key (as one who stole it would), published
  // on the gateway's evidence topic.
  const auto retired =
      Ed25519PrivateKey::load_pem_file((dir_ / ("gateway.key.retired-" + old_kid_)).string());
  ASSERT_EQ(retired.public_key().kid(), old_kid_);
  const long long forged_seq = head_seq() + 1000;
  const nlohmann::json body = {{"v", 1},
                               {"gateway", "gw"},
                               {"seq", forged_seq},
                               {"id", "gw:" + std::to_string(forged_seq)},
                               {"prev", std::string(64, 'a')},
                               {"type", "audit"},
                               {"message", "forged"},
                               {"time_ms", 1767225600000},
                               {"created_ms", 1767225600000}};
  const std::string forged = sign_compact(retired, "evidence+jws", body);
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/evidence", forged, /*retain=*/false, 60s), 0);

  const std::string seq_text = std::to_string(forged_seq);
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw' AND seq = " + seq_text) == 1;
      },
      15s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT kid FROM quarantine WHERE gateway = 'gw' AND seq = " + seq_text), old_kid_);
  EXPECT_THAT(pg_.query("SELECT reason FROM quarantine WHERE gateway = 'gw' AND seq = " + seq_text),
              HasSubstr("retired at seq " + std::to_string(rot_seq)));
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq = " + seq_text), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks WHERE gateway = 'gw'"), 1);  // the clone's rotation
  EXPECT_LT(pg_int("SELECT max_seq FROM gateways WHERE gateway = 'gw'"), forged_seq);
  EXPECT_EQ(prometheus_sample(metrics(), "central_retired_key_total"), 1);
  EXPECT_THAT(central_->stderr_text(), HasSubstr("RETIRED KEY: gw:" + seq_text));

  // The operator's view of it.
  ASSERT_EQ(
      central_cli({"quarantine", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw", "--json"},
                  &out),
      0);
  const auto q = nlohmann::json::parse(out);
  ASSERT_EQ(q["total"], 1) << out;
  EXPECT_EQ(q["rows"][0]["seq"], forged_seq);
  EXPECT_EQ(q["rows"][0]["count"], 1);
  EXPECT_THAT(q["rows"][0]["reason"].get<std::string>(), HasSubstr("forgery"));

  // The gateway's own chain is untouched: all in custody, the quarantine holds only the forgery.
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 30; }, 30s));
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 20s))
      << "watermark " << watermark() << " head " << head_seq();
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw'"), 1);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();

  // The new key leaks: an operator revokes it after the last seq but one; what it signed before stays stored
  // (and is reported for review), what it signs later is quarantined as a retired key's.
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 20s));
  const long long last = head_seq();
  ASSERT_EQ(central_cli({"revoke-key", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw",
                         "--kid", new_kid, "--after-seq", std::to_string(last - 1)},
                        &out),
            0)
      << out;
  EXPECT_THAT(out,
              HasSubstr("trusted for seq " + std::to_string(rot_seq + 1) + ".." + std::to_string(last - 1)));
  EXPECT_THAT(out, HasSubstr("REVIEW: 1 records"));
  EXPECT_EQ(pg_int("SELECT valid_to_seq FROM gateway_keys WHERE gateway = 'gw' AND kid = '" + new_kid + "'"),
            last - 1);
  EXPECT_NE(central_cli({"revoke-key", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw",
                         "--kid", "0000000000000000", "--after-seq", "1"}),
            0);
  const auto leaked = Ed25519PrivateKey::load_pem_file((dir_ / "gateway.key").string());
  ASSERT_EQ(leaked.public_key().kid(), new_kid);
  nlohmann::json later = body;
  later["seq"] = last + 500;
  later["id"] = "gw:" + std::to_string(last + 500);
  ASSERT_EQ(mosquitto_pub("checkpoint/gw/evidence", sign_compact(leaked, "evidence+jws", later), false, 60s),
            0);
  EXPECT_TRUE(wait_for_condition(
      [&] {
        return pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw' AND seq = " +
                      std::to_string(last + 500)) == 1;
      },
      20s))
      << central_->stderr_text();
  EXPECT_EQ(
      pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq = " + std::to_string(last + 500)), 0);
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

TEST_F(CentralKeys, GatewayEnrolledAfterItsTrafficEndsWithEverythingInCustodyAndNoQuarantine) {
  // Resends only after 60 s: within this test, only re-examining the quarantine brings the early records in.
  write_central_config(60000);
  start_central();
  start_radar(30, 10);
  write_gateway_config();
  auto daemon = start_daemon();
  // Not enrolled yet: records and head announcements wait in quarantine.
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw' AND topic = 'evidence'") >= 10;
      },
      30s))
      << daemon->stderr_text() << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM records"), 0);

  ASSERT_EQ(central_enroll(), 0);
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 30; }, 30s))
      << central_->stderr_text();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 20s))
      << "watermark " << watermark() << " head " << head_seq() << "\n"
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw'"), head_seq());
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM quarantine") == 0; }, 10s))
      << pg_.query("SELECT topic || ' ' || reason FROM quarantine LIMIT 5");
  EXPECT_EQ(pg_int("SELECT rows FROM quarantine_usage WHERE gateway = ''"), 0);
  EXPECT_EQ(pg_int("SELECT resend_requests FROM gateways WHERE gateway = 'gw'"), 0);
  const std::string m = metrics();
  EXPECT_GE(prometheus_sample(m, "central_quarantine_resolved_total"), 10);
  EXPECT_EQ(prometheus_sample(m, "central_quarantine_rows"), 0);
  std::string out;
  ASSERT_EQ(central_cli({"quarantine", "--config", (dir_ / "central.yaml").string()}, &out), 0);
  EXPECT_THAT(out, HasSubstr("quarantine: 0 rows"));
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

}  // namespace
}  // namespace cpd::testing
