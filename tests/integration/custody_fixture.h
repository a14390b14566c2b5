// The custody setup shared by the integration tests of checkpoint-central (custody_test, key_rotation_test,
// central_keys_test, replaced_store_test, central_hostile_test): a real mosquitto, a private PostgreSQL
// (postgres.h), a gateway key "gw" and a central key in a temp directory, the configs of checkpointd (with a
// custody section) and checkpoint-central, their processes and CLIs, and the queries the tests read back.
// Each test keeps its own specific setup (and every assertion about what it tests) in its own file.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "tests/integration/harness.h"
#include "tests/integration/postgres.h"

namespace cpd::testing {

// Polls `pred` every 100 ms until it holds or `timeout` passes.
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

// The gateway's checkpointd.yaml (gateway "gw", one radar on the simulator's port).
struct GatewayConfig {
  std::optional<int> retention_days;  // store.retention_days; unset: the default
  bool control = false;               // control.socket in the temp directory (for checkpointctl)
  bool custody = true;                // a custody section trusting central.pub.pem, head_interval_ms 500
  std::string custody_extra;          // further lines of the custody section ("  key: value\n" each)
  std::string extra_devices;          // further device entries ("  - id: ...\n" lines)
};

// checkpoint-central's config (central "central-test", the test's PostgreSQL and broker).
struct CentralConfig {
  std::string client_id = "central-1";
  int resend_after_ms = 1000;  // gaps.resend_after_ms
  std::string feed_extra;      // further lines of the feed section ("  key: value\n" each)
  std::string gaps_extra;      // further lines of the gaps section
  bool metrics = false;        // on: metrics on 127.0.0.1, a free port
  std::string receipts = "  every_records: 50\n  every_ms: 300\n";  // the receipts section's lines
};

class CustodyFixture : public ::testing::Test {
 protected:
  CustodyFixture();
  // Gateway key (gateway.key, its public PEM in pub_pem_), central key (central.key, central.pub.pem,
  // central_pub_); PostgreSQL and mosquitto started.
  void SetUp() override;

  // checkpoint-sim radar on a free port (2 lanes), logs under dir_/log; its port in sim_port_.
  void start_radar(int vehicles, double rate, int seed, const std::string& log = "sim");

  void write_gateway_config(const GatewayConfig& config = {});
  // dir_/<name>.yaml
  void write_central_config(const std::string& name = "central", const CentralConfig& config = {});

  // `checkpoint-central run` on dir_/<name>.yaml (logs under dir_/<name>), into `central`; waits 30 s for
  // its "running: " line; with `metrics_port`, first for its metrics line, whose port is stored there.
  void start_central(std::unique_ptr<Process>& central, const std::string& name = "central",
                     std::uint16_t* metrics_port = nullptr);
  // checkpointd on dir_/checkpointd.yaml (logs under dir_/checkpointd-<n>).
  std::unique_ptr<Process> start_daemon();

  // A command run to its end (logs under dir_/run-<n>): its exit code, -1 (and a failure) if it did not end
  // within `timeout`.
  int run(const std::vector<std::string>& argv, std::string* out = nullptr, std::string* err = nullptr,
          std::chrono::milliseconds timeout = std::chrono::seconds(60));
  int central_cli(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr);
  int ctl(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr);
  // `checkpoint-central enroll` on dir_/central.yaml; pubkey: pub_pem_ when empty.
  int central_enroll(const std::string& gateway = "gw", const fs::path& pubkey = {},
                     std::string* err = nullptr);
  // `checkpoint-central export --gateway gw` into dir_/export.jws; the export's exit code.
  int export_chain();
  // `checkpointctl verify --pubkey pub_pem_ --from-start dir_/export.jws`; its exit code.
  int verify_export(std::string* out, std::string* err, std::chrono::milliseconds timeout);
  // mosquitto_pub of one QoS 1 message to the test broker; its exit code.
  int mosquitto_pub(const std::string& topic, const std::string& payload, bool retain,
                    std::chrono::milliseconds timeout);

  // The kid of the gateway key the test started with (pub_pem_).
  std::string gateway_kid() const;
  // One integer from PostgreSQL; -1 when there is no value.
  long long pg_int(const std::string& sql);
  long long watermark();  // central's watermark_seq for gw
  long long head_seq();   // max(seq) in the gateway's store
  // checkpoint-central's /metrics (start_central with a metrics port).
  std::string metrics();

  // The receipt retained on the gateway's custody topic (waiting up to `wait` for it), checked as the
  // gateway checks it; with `expect_valid`, a receipt that fails the check is a test failure.
  std::optional<custody::Receipt> retained_receipt(std::chrono::milliseconds wait = std::chrono::seconds(5),
                                                   bool expect_valid = false);

  TempDir dir_;
  fs::path store_db_;  // the gateway's store: dir_/store.db unless a test moves it before SetUp
  Postgres pg_;
  fs::path pub_pem_;
  std::unique_ptr<Ed25519PublicKey> central_pub_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::uint16_t sim_port_ = 0;
  std::uint16_t metrics_port_ = 0;
  int daemon_runs_ = 0;
  int runs_ = 0;
};

}  // namespace cpd::testing
