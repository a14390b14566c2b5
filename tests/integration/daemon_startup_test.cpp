// Start-up failures of the real daemon binary: one clear line naming the cause, a non-zero exit, and
// nothing touched that was already there.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;

class DaemonStartup : public ::testing::Test {
 protected:
  void SetUp() override { make_gateway_key(dir_.path()); }

  void write_config() {
    auto config = CheckpointdConfig::minimal(dir_.path(), "tcp://127.0.0.1:9", "gw-1");
    config.set("gateway.site.name", "s");
    config.add_radar("radar-1", 9).lanes(1).calibration("C", "2099-01-01");
    config.write(dir_ / "c.yaml");
  }

  // Runs checkpointd with args; returns {exit code, stderr}.
  std::pair<int, std::string> run(std::vector<std::string> args) {
    args.insert(args.begin(), binary("daemon/app/checkpointd"));
    Process p(args, dir_ / ("run" + std::to_string(runs_++)));
    const auto code = p.wait(20s);
    EXPECT_TRUE(code.has_value()) << "daemon did not exit";
    return {code.value_or(-1), p.stderr_text() + p.stdout_text()};
  }

  TempDir dir_;
  int runs_ = 0;
};

TEST_F(DaemonStartup, CheckConfigAcceptsAValidFile) {
  write_config();
  const auto [code, out] = run({"--check-config", (dir_ / "c.yaml").string()});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("valid"), std::string::npos) << out;
}

TEST_F(DaemonStartup, CheckConfigNamesFileLineColumnAndKey) {
  // Written by hand, not with CheckpointdConfig: the place expected below is a line and column of this text.
  std::ofstream(dir_ / "c.yaml")
      << "gateway:\n  id: gw-1\n"
      << "  site: {name: s, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
      << "  key: " << (dir_ / "gateway.key").string() << "\n"
      << "store:\n  path: " << (dir_ / "store.db").string() << "\n"
      << "mqtt:\n  uri: tcp://127.0.0.1:9\n"
      << "devices:\n"
      << "  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: 70000}\n"
      << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]\n"
      << "    calibration: {certificate: C, valid_until: 2099-01-01}\n";
  const auto [code, out] = run({"--check-config", (dir_ / "c.yaml").string()});
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("c.yaml:12:34: devices[0].tcp.port: must be between 1 and 65535"), std::string::npos)
      << out;
}

TEST_F(DaemonStartup, RefusesAKeyReadableByOthersAndSaysWhy) {
  write_config();
  ::chmod((dir_ / "gateway.key").c_str(), 0644);
  const auto [code, out] = run({"--config", (dir_ / "c.yaml").string()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("0644"), std::string::npos) << out;
  EXPECT_NE(out.find((dir_ / "gateway.key").string()), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ / "store.db")) << "nothing is created before the key is accepted";
}

TEST_F(DaemonStartup, RefusesAMissingKey) {
  write_config();
  fs::remove(dir_ / "gateway.key");
  const auto [code, out] = run({"--config", (dir_ / "c.yaml").string()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("gateway.key"), std::string::npos) << out;
}

TEST_F(DaemonStartup, RefusesACorruptStoreAndLeavesItAsItWas) {
  write_config();
  const std::string garbage(8192, '\x5a');
  std::ofstream(dir_ / "store.db", std::ios::binary) << garbage;
  const auto [code, out] = run({"--config", (dir_ / "c.yaml").string()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("store.db"), std::string::npos) << out;
  std::ifstream in(dir_ / "store.db", std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(after, garbage) << "the bad store is kept for inspection, never replaced";
}

TEST_F(DaemonStartup, ErrorIsOneLine) {
  write_config();
  fs::remove(dir_ / "gateway.key");
  const auto [code, out] = run({"--config", (dir_ / "c.yaml").string()});
  EXPECT_EQ(code, 1);
  // Config warnings (<4>) may come first; the reason it cannot start is one error line, the last.
  std::size_t errors = 0;
  for (std::size_t pos = out.find("<3>"); pos != std::string::npos; pos = out.find("<3>", pos + 1)) {
    ++errors;
  }
  EXPECT_EQ(errors, 1u) << out;
  const auto last = out.rfind("<3>");
  ASSERT_NE(last, std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin() + static_cast<std::ptrdiff_t>(last), out.end(), '\n'), 1) << out;
}

}  // namespace
}  // namespace cpd::testing
