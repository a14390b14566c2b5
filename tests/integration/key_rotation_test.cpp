// Key rotation end to end with real parts (docs/custody.md, "Key rotation"): radar simulator -> checkpointd
// -> mosquitto -> checkpoint-central -> PostgreSQL. `checkpointctl rotate-key` mid-run: the gateway seals a
// key_rotation record under the old key and signs on with the new one; central enrols the new key from the
// record and keeps taking the chain; the exported chain verifies from seq 1 with the old public key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class KeyRotation : public CustodyFixture {
 protected:
  void start_radar(int vehicles, double rate) { CustodyFixture::start_radar(vehicles, rate, /*seed=*/13); }
  void write_gateway_config() {
    GatewayConfig config;
    config.control = true;
    CustodyFixture::write_gateway_config(config);
  }
};

TEST_F(KeyRotation, KeyRotationMidRunCentralFollows) {
  write_central_config();
  ASSERT_EQ(central_enroll(), 0);
  const std::string old_kid = gateway_kid();
  std::unique_ptr<Process> central;
  ASSERT_NO_FATAL_FAILURE(start_central(central));
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
  ASSERT_EQ(export_chain(), 0);
  ASSERT_EQ(verify_export(&out, &err, 60s), 0) << out << err;
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
