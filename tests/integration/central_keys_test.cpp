// Central's key trust with real parts (docs/custody.md, "Key trust", "Quarantine"): radar simulator ->
// checkpointd -> mosquitto -> checkpoint-central -> PostgreSQL. A key rotated away from is trusted only through
// its key_rotation record's seq (a record forged with it for a later seq is quarantined and alarmed, never
// stored); a gateway enrolled after it has sent traffic gets its quarantined records taken in once enrolled.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "daemon/core/ed25519.h"
#include "daemon/core/record_check.h"
#include "tests/integration/harness.h"
#include "tests/integration/postgres.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

template <class Pred>
bool wait_for_condition(Pred pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) {
      return true;
    }
    pause(std::chrono::milliseconds(100));
  }
  return pred();
}

// The value of an unlabelled sample in Prometheus text; -1 if absent.
double metric(const std::string& text, const std::string& name) {
  const auto pos = text.find("\n" + name + " ");
  return pos == std::string::npos ? -1 : std::stod(text.substr(pos + name.size() + 2));
}

class CentralKeys : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    auto central_key = Ed25519PrivateKey::generate();
    central_key.save_pem_file((dir_ / "central.key").string());
    std::ofstream(dir_ / "central.pub.pem") << central_key.public_key().pem();
    std::ifstream pem_in(pub_pem_);
    old_kid_ = Ed25519PublicKey::from_pem(
                   std::string((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>()))
                   .kid();
    pg_.start();
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
  }

  void start_radar(int vehicles, double rate) {
    sim_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2",
                                 "--seed", "17", "--vehicles", std::to_string(vehicles), "--rate",
                                 std::to_string(rate)},
        dir_ / "sim");
    auto line = sim_->wait_for_stdout_line("listening ", 10s);
    ASSERT_TRUE(line) << sim_->stderr_text();
    sim_port_ = static_cast<std::uint16_t>(std::stoi(line->substr(10)));
  }

  void write_gateway_config() {
    std::ofstream out(dir_ / "checkpointd.yaml");
    out << "gateway:\n  id: gw\n"
        << "  site: {name: \"K1234+500\", road: G60, direction: N, lat: 30.27, lon: 120.15, utc_offset: "
           "\"+08:00\"}\n"
        << "  key: " << (dir_ / "gateway.key").string() << "\n"
        << "store:\n  path: " << (dir_ / "store.db").string() << "\n"
        << "control:\n  socket: " << (dir_ / "control.sock").string() << "\n"
        << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: gw\n"
        << "  reconnect_min_ms: 200\n  reconnect_max_ms: 1000\n"
        << "metrics: {enabled: false}\n"
        << "devices:\n"
        << "  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: " << sim_port_ << "}\n"
        << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
        << "    calibration: {certificate: JJG527-2026-0412, valid_until: 2099-12-31}\n"
        << "    reconnect_initial_ms: 200\n    reconnect_max_ms: 1000\n"
        << "custody:\n  central_keys: [{pem: " << (dir_ / "central.pub.pem").string() << "}]\n"
        << "  head_interval_ms: 500\n";
  }

  // resend_after_ms: how long a gap waits before central asks for a resend (long: only re-examining the
  // quarantine can close it within the test).
  void write_central_config(int resend_after_ms) {
    std::ofstream(dir_ / "central.yaml")
        << "central:\n  id: central-test\n  key: " << (dir_ / "central.key").string() << "\n"
        << "postgres:\n  conninfo: \"" << pg_.conninfo() << "\"\n"
        << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: central-1\n"
        << "  reconnect_min_ms: 200\n  reconnect_max_ms: 1000\n"
        << "feed:\n  media_dir: " << (dir_ / "central-media").string() << "\n"
        << "receipts:\n  every_records: 50\n  every_ms: 300\n"
        << "gaps:\n  resend_after_ms: " << resend_after_ms
        << "\n  retry_min_ms: 500\n  retry_max_ms: 2000\n  check_interval_ms: 200\n"
        << "metrics: {enabled: true, host: 127.0.0.1, port: 0}\n";
  }

  void start_central() {
    central_ = std::make_unique<Process>(
        std::vector<std::string>{binary("central/checkpoint-central"), "run", "--config",
                                 (dir_ / "central.yaml").string()},
        dir_ / "central");
    const auto line = central_->wait_for_stdout_line("metrics: http://127.0.0.1:", 30s);
    ASSERT_TRUE(line) << central_->stderr_text();
    metrics_port_ = line->substr(line->rfind(':') + 1);
    while (!metrics_port_.empty() && (metrics_port_.back() < '0' || metrics_port_.back() > '9')) {
      metrics_port_.pop_back();
    }
    ASSERT_TRUE(central_->wait_for_stdout_line("running: ", 30s)) << central_->stderr_text();
  }

  std::string metrics() {
    std::string out;
    run({"/usr/bin/curl", "-s", "http://127.0.0.1:" + metrics_port_ + "/metrics"}, &out);
    return out;
  }

  int run(const std::vector<std::string>& argv, std::string* out = nullptr, std::string* err = nullptr) {
    Process p(argv, dir_ / ("run-" + std::to_string(runs_++)));
    const auto code = p.wait(60s);
    if (out != nullptr) {
      *out = p.stdout_text();
    }
    if (err != nullptr) {
      *err = p.stderr_text();
    }
    EXPECT_TRUE(code) << argv.front() << " did not finish";
    return code.value_or(-1);
  }
  int central_cli(std::vector<std::string> args, std::string* out = nullptr) {
    args.insert(args.begin(), binary("central/checkpoint-central"));
    return run(args, out);
  }
  int enroll() {
    return central_cli({"enroll", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw", "--pubkey",
                        pub_pem_.string()});
  }

  std::unique_ptr<Process> start_daemon() {
    return std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                              (dir_ / "checkpointd.yaml").string()},
                                     dir_ / "checkpointd");
  }

  long long pg_int(const std::string& sql) {
    const std::string v = pg_.query(sql);
    return v.empty() ? -1 : std::stoll(v);
  }
  long long watermark() { return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gw'"); }
  long long head_seq() { return store_query(dir_ / "store.db", "SELECT max(seq) FROM records"); }

  TempDir dir_;
  Postgres pg_;
  fs::path pub_pem_;
  std::string old_kid_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<Process> central_;
  std::string metrics_port_;
  std::uint16_t sim_port_ = 0;
  int runs_ = 0;
};

TEST_F(CentralKeys, RecordForgedUnderTheRetiredKeyIsQuarantinedAndAlarmedNotStored) {
  write_central_config(1000);
  ASSERT_EQ(enroll(), 0);
  start_central();
  start_radar(30, 10);
  write_gateway_config();
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() >= 10; }, 30s))
      << daemon->stderr_text() << central_->stderr_text();

  std::string out;
  ASSERT_EQ(run({binary("tools/checkpointctl/checkpointctl"), "rotate-key", "--config",
                 (dir_ / "checkpointd.yaml").string(), "--json"},
                &out),
            0)
      << out << daemon->stderr_text();
  const auto answer = nlohmann::json::parse(out);
  const long long rot_seq = answer["seq"].get<long long>();
  const std::string new_kid = answer["new_kid"].get<std::string>();

  // Central holds the rotation: the old key through rot_seq, the new one from rot_seq + 1.
  ASSERT_TRUE(wait_for_condition([&] { return watermark() > rot_seq; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT valid_to_seq FROM gateway_keys WHERE gateway = 'gw' AND kid = '" + old_kid_ + "'"),
            rot_seq);
  EXPECT_EQ(pg_int("SELECT valid_from_seq FROM gateway_keys WHERE gateway = 'gw' AND kid = '" + new_kid + "'"),
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
  ASSERT_EQ(run({"/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(broker_->port()), "-q", "1",
                 "-t", "checkpoint/gw/evidence", "-m", forged}),
            0);

  const std::string seq_text = std::to_string(forged_seq);
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw' AND seq = " + seq_text) == 1; },
      15s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT kid FROM quarantine WHERE gateway = 'gw' AND seq = " + seq_text), old_kid_);
  EXPECT_THAT(pg_.query("SELECT reason FROM quarantine WHERE gateway = 'gw' AND seq = " + seq_text),
              HasSubstr("retired at seq " + std::to_string(rot_seq)));
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq = " + seq_text), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks WHERE gateway = 'gw'"), 0);
  EXPECT_LT(pg_int("SELECT max_seq FROM gateways WHERE gateway = 'gw'"), forged_seq);
  EXPECT_EQ(metric(metrics(), "central_retired_key_total"), 1);
  EXPECT_THAT(central_->stderr_text(), HasSubstr("RETIRED KEY: gw:" + seq_text));

  // The operator's view of it.
  ASSERT_EQ(central_cli({"quarantine", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw", "--json"},
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

  ASSERT_EQ(enroll(), 0);
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
  EXPECT_GE(metric(m, "central_quarantine_resolved_total"), 10);
  EXPECT_EQ(metric(m, "central_quarantine_rows"), 0);
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
