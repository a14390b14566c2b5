// A replaced gateway store with real parts (radar simulator -> checkpointd -> mosquitto -> checkpoint-central
// -> PostgreSQL): the gateway's store and media are deleted after central confirmed everything, and the
// gateway, started again on the empty store, continues its chain after the retained custody receipt with a
// `store_replaced` audit record (docs/custody.md, "A replaced store"). Central stores the continued chain
// as its ordinary chain: no fork, no chain break, nothing unrecoverable, and the export verifies across.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "tests/integration/harness.h"
#include "tests/integration/postgres.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;

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

class ReplacedStore : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    auto central_key = Ed25519PrivateKey::generate();
    central_key.save_pem_file((dir_ / "central.key").string());
    std::ofstream(dir_ / "central.pub.pem") << central_key.public_key().pem();
    central_pub_ = std::make_unique<Ed25519PublicKey>(central_key.public_key());
    pg_.start();
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
  }

  void start_radar(int vehicles, double rate) {
    sim_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2",
                                 "--seed", std::to_string(11 + sim_runs_), "--vehicles",
                                 std::to_string(vehicles), "--rate", std::to_string(rate)},
        dir_ / ("sim-" + std::to_string(sim_runs_)));
    ++sim_runs_;
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
        << "store:\n  path: " << (dir_ / "gw" / "store.db").string() << "\n"
        << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: gw\n"
        << "  reconnect_min_ms: 200\n  reconnect_max_ms: 1000\n"
        << "metrics: {enabled: false}\n"
        << "devices:\n"
        << "  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: " << sim_port_ << "}\n"
        << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
        << "    calibration: {certificate: JJG527-2026-0412, valid_until: 2099-12-31}\n"
        << "    reconnect_initial_ms: 200\n    reconnect_max_ms: 1000\n"
        << "custody:\n  central_keys: [{pem: " << (dir_ / "central.pub.pem").string() << "}]\n"
        << "  head_interval_ms: 500\n  retention_check_ms: 300\n  empty_store_wait_ms: 2000\n";
  }

  void write_central_config() {
    std::ofstream(dir_ / "central.yaml")
        << "central:\n  id: central-test\n  key: " << (dir_ / "central.key").string() << "\n"
        << "postgres:\n  conninfo: \"" << pg_.conninfo() << "\"\n"
        << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: central-1\n"
        << "  reconnect_min_ms: 200\n  reconnect_max_ms: 1000\n"
        << "feed:\n  media_dir: " << (dir_ / "central-media").string() << "\n"
        << "receipts:\n  every_records: 50\n  every_ms: 300\n"
        << "gaps:\n  resend_after_ms: 1000\n  retry_min_ms: 500\n  retry_max_ms: 2000\n  check_interval_ms: "
           "200\n"
        << "metrics: {enabled: false}\n";
  }

  int central_cli(const std::vector<std::string>& args, std::string* out = nullptr) {
    std::vector<std::string> argv{binary("central/checkpoint-central")};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv, dir_ / ("cli-" + std::to_string(cli_runs_++)));
    const auto code = p.wait(60s);
    if (out != nullptr) {
      *out = p.stdout_text();
    }
    EXPECT_TRUE(code) << "checkpoint-central " << args.front() << " did not finish";
    return code.value_or(-1);
  }

  std::unique_ptr<Process> start_daemon() {
    fs::create_directories(dir_ / "gw");
    return std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                              (dir_ / "checkpointd.yaml").string()},
                                     dir_ / ("checkpointd-" + std::to_string(daemon_runs_++)));
  }

  fs::path store() const { return dir_ / "gw" / "store.db"; }
  long long pg_int(const std::string& sql) {
    const std::string v = pg_.query(sql);
    return v.empty() ? -1 : std::stoll(v);
  }
  long long watermark() { return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gw'"); }
  long long head_seq() { return store_query(store(), "SELECT max(seq) FROM records"); }
  nlohmann::json central_body(long long seq) {
    const std::string jws =
        pg_.query("SELECT jws FROM records WHERE gateway = 'gw' AND seq = " + std::to_string(seq));
    return jws.empty() ? nlohmann::json() : record_body(jws);
  }

  std::optional<custody::Receipt> retained_receipt() {
    MqttCollector c(broker_->uri(), {"checkpoint/gw/custody"});
    c.wait_until([&] { return c.count("checkpoint/gw/custody") > 0; }, 3s);
    const auto payloads = c.payloads("checkpoint/gw/custody");
    if (payloads.empty()) {
      return std::nullopt;
    }
    const auto check = custody::check_receipt(
        payloads.back(),
        [&](const std::string& kid) -> std::optional<Ed25519PublicKey> {
          return kid == central_pub_->kid() ? std::optional<Ed25519PublicKey>(*central_pub_) : std::nullopt;
        },
        "gw");
    return check.ok ? std::optional<custody::Receipt>(check.receipt) : std::nullopt;
  }

  TempDir dir_;
  Postgres pg_;
  fs::path pub_pem_;
  std::unique_ptr<Ed25519PublicKey> central_pub_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::uint16_t sim_port_ = 0;
  int sim_runs_ = 0;
  int daemon_runs_ = 0;
  int cli_runs_ = 0;
};

TEST_F(ReplacedStore, TheChainContinuesAfterTheReceiptAndCentralTakesItAsItsOrdinaryChain) {
  write_central_config();
  ASSERT_EQ(central_cli({"enroll", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw", "--pubkey",
                         pub_pem_.string()}),
            0);
  auto central = std::make_unique<Process>(
      std::vector<std::string>{binary("central/checkpoint-central"), "run", "--config",
                               (dir_ / "central.yaml").string()},
      dir_ / "central");
  ASSERT_TRUE(central->wait_for_stdout_line("running: ", 30s)) << central->stderr_text();

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
  EXPECT_NE(first.value("new_chain", std::string()).find("no custody receipt within 2000 ms"), std::string::npos)
      << first.dump();
  // Central confirms everything, the stop record included: the retained receipt names the old head.
  ASSERT_TRUE(wait_for_condition(
      [&] {
        const auto r = retained_receipt();
        return r && static_cast<long long>(r->through_seq) == old_head;
      },
      20s))
      << "watermark " << watermark() << " head " << old_head << "\n" << central->stderr_text();
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
        return pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND type = 'speed_measurement' AND "
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
      << "watermark " << watermark() << " head " << new_head << "\n" << central->stderr_text();
  // All of the old chain was in custody: nothing is unrecoverable, no fork, no chain break.
  EXPECT_EQ(pg_int("SELECT count(*) FROM unrecoverable WHERE gateway = 'gw'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_forks"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine"), 0);
  EXPECT_EQ(pg_.query("SELECT coalesce(chain_break_seq::text, 'none') FROM gateways WHERE gateway = 'gw'"),
            "none");
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw'"), new_head);

  // The export verifies from seq 1 across the replaced store.
  std::string exported;
  ASSERT_EQ(central_cli({"export", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw"}, &exported),
            0);
  std::ofstream(dir_ / "export.jws") << exported;
  Process verify({binary("tools/checkpointctl/checkpointctl"), "verify", "--pubkey", pub_pem_.string(),
                  "--from-start", (dir_ / "export.jws").string()},
                 dir_ / "verify");
  EXPECT_EQ(verify.wait(30s), 0) << verify.stdout_text() << verify.stderr_text();
  EXPECT_NE(verify.stdout_text().find("seq 1.." + std::to_string(new_head)), std::string::npos)
      << verify.stdout_text();
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(20s), 0) << central->stderr_text();
}

}  // namespace
}  // namespace cpd::testing
