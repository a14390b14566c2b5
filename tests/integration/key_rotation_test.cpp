// Key rotation end to end with real parts (docs/custody.md, "Key rotation"): radar simulator -> checkpointd
// -> mosquitto -> checkpoint-central -> PostgreSQL. `checkpointctl rotate-key` mid-run: the gateway seals a
// key_rotation record under the old key and signs on with the new one; central enrols the new key from the
// record and keeps taking the chain; the exported chain verifies from seq 1 with the old public key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
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

class KeyRotation : public ::testing::Test {
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
                                 "--seed", "13", "--vehicles", std::to_string(vehicles), "--rate",
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
  int ctl(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr) {
    args.insert(args.begin(), binary("tools/checkpointctl/checkpointctl"));
    return run(args, out, err);
  }

  std::unique_ptr<Process> start_daemon() {
    return std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                              (dir_ / "checkpointd.yaml").string()},
                                     dir_ / ("checkpointd-" + std::to_string(daemon_runs_++)));
  }

  long long pg_int(const std::string& sql) {
    const std::string v = pg_.query(sql);
    return v.empty() ? -1 : std::stoll(v);
  }
  long long watermark() { return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gw'"); }
  long long head_seq() { return store_query(dir_ / "store.db", "SELECT max(seq) FROM records"); }

  std::optional<custody::Receipt> retained_receipt() {
    MqttCollector c(broker_->uri(), {"checkpoint/gw/custody"});
    c.wait_until([&] { return c.count("checkpoint/gw/custody") > 0; }, 5s);
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
  int daemon_runs_ = 0;
  int runs_ = 0;
};

TEST_F(KeyRotation, KeyRotationMidRunCentralFollows) {
  write_central_config();
  ASSERT_EQ(central_cli({"enroll", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw", "--pubkey",
                         pub_pem_.string()}),
            0);
  std::ifstream pem_in(pub_pem_);
  const std::string pem((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>());
  const std::string old_kid = Ed25519PublicKey::from_pem(pem).kid();
  auto central = std::make_unique<Process>(
      std::vector<std::string>{binary("central/checkpoint-central"), "run", "--config",
                               (dir_ / "central.yaml").string()},
      dir_ / "central");
  ASSERT_TRUE(central->wait_for_stdout_line("running: ", 30s)) << central->stderr_text();
  start_radar(60, 10);
  write_gateway_config();
  auto daemon = start_daemon();

  // Traffic flows and central holds some of it under the old key.
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 15; }, 30s))
      << daemon->stderr_text() << central->stderr_text();

  std::string out;
  std::string err;
  ASSERT_EQ(ctl({"rotate-key", "--config", (dir_ / "checkpointd.yaml").string(), "--json"}, &out, &err), 0)
      << out << err << daemon->stderr_text();
  const auto answer = nlohmann::json::parse(out);
  const long long rot_seq = answer["seq"].get<long long>();
  const std::string new_kid = answer["new_kid"].get<std::string>();
  EXPECT_EQ(answer["old_kid"], old_kid);
  EXPECT_NE(new_kid, old_kid);
  EXPECT_FALSE(answer.contains("warning")) << out;

  // On disk: gateway.key is the new key, the old one kept beside it, no rotation left pending.
  EXPECT_EQ(Ed25519PrivateKey::load_pem_file((dir_ / "gateway.key").string()).public_key().kid(), new_kid);
  const fs::path retired = dir_ / ("gateway.key.retired-" + old_kid);
  ASSERT_TRUE(fs::exists(retired));
  EXPECT_EQ(Ed25519PrivateKey::load_pem_file(retired.string()).public_key().kid(), old_kid);
  EXPECT_FALSE(fs::exists(dir_ / "gateway.key.next"));
  // Status shows the kid now signing.
  ASSERT_EQ(ctl({"status", "--config", (dir_ / "checkpointd.yaml").string(), "--json"}, &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out)["kid"], new_kid);

  // The radar goes on; every record reaches central's custody, receipt through the head.
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE type = 'speed_measurement'") >= 60; }, 40s))
      << daemon->stderr_text() << central->stderr_text();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 20s))
      << "watermark " << watermark() << " head " << head_seq() << "\n"
      << central->stderr_text();
  ASSERT_TRUE(wait_for_condition(
      [&] {
        auto r = retained_receipt();
        return r && static_cast<long long>(r->through_seq) == head_seq();
      },
      20s));
  const long long head = head_seq();
  EXPECT_GT(head, rot_seq + 10);

  // Central enrolled the new key from the record; nothing of the gateway's own chain sits in quarantine.
  EXPECT_EQ(pg_.query("SELECT source FROM gateway_keys WHERE gateway = 'gw' AND kid = '" + new_kid + "'"),
            "rotation:" + std::to_string(rot_seq));
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw'"), head);
  EXPECT_EQ(pg_.query("SELECT type FROM records WHERE gateway = 'gw' AND seq = " + std::to_string(rot_seq)),
            "key_rotation");
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq <= " + std::to_string(rot_seq) +
                   " AND kid <> '" + old_kid + "'"),
            0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq > " + std::to_string(rot_seq) +
                   " AND kid <> '" + new_kid + "'"),
            0);

  // The exported chain verifies from seq 1 with the OLD public key: the verifier follows the rotation.
  std::string exported;
  ASSERT_EQ(central_cli({"export", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw"}, &exported), 0);
  std::ofstream(dir_ / "export.jws") << exported;
  ASSERT_EQ(ctl({"verify", "--pubkey", pub_pem_.string(), "--from-start", (dir_ / "export.jws").string()}, &out,
                &err),
            0)
      << out << err;
  EXPECT_THAT(out, HasSubstr("1 key rotation followed (now kid " + new_kid + ")"));

  // A restart signs with the installed new key.
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return head_seq() > head + 1; }, 20s)) << daemon->stderr_text();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == head_seq(); }, 20s)) << central->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq > " + std::to_string(rot_seq) +
                   " AND kid <> '" + new_kid + "'"),
            0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw'"), 0);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(20s), 0) << central->stderr_text();
}

}  // namespace
}  // namespace cpd::testing
