// checkpointctl status/tail against the real daemon's control socket: radar simulator -> checkpointd ->
// mosquitto, with the daemon's view (status, tailed records) checked against what reached the broker.
// Needs the daemon to run a control::ControlServer on control.socket (docs/control.md).
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct CtlResult {
  int code = -1;
  std::string out;
  std::string err;
};

class ControlSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    sim_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2",
                                 "--seed", "5", "--vehicles", "0", "--rate", "5"},
        dir_ / "sim");
    auto line = sim_->wait_for_stdout_line("listening ", 10s);
    ASSERT_TRUE(line) << "simulator did not start: " << sim_->stderr_text();
    const int sim_port = std::stoi(line->substr(10));
    CheckpointdConfig config(dir_.path(), broker_->uri());
    config.gateway_id("ctl-gw")
        .set("metrics.enabled", "false")
        .set("control.socket", socket_.string())
        .set("validity.clock_sync", "assume");
    config.add_radar("radar-1", sim_port).reconnect(200, 1000);
    config.write(dir_ / "checkpointd.yaml");
    collector_ = std::make_unique<MqttCollector>(broker_->uri(),
                                                 std::vector<std::string>{"checkpoint/ctl-gw/evidence"});
  }

  std::unique_ptr<Process> start_daemon() {
    auto p = std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                                (dir_ / "checkpointd.yaml").string()},
                                       dir_ / ("checkpointd-" + std::to_string(++runs_)));
    return p;
  }

  CtlResult ctl(std::vector<std::string> args, std::chrono::milliseconds timeout = 30s) {
    args.insert(args.begin(), binary("tools/checkpointctl/checkpointctl"));
    Process p(args, dir_ / ("ctl-" + std::to_string(++runs_)));
    CtlResult r;
    const auto code = p.wait(timeout);
    EXPECT_TRUE(code) << "checkpointctl did not finish: " << args[1];
    r.code = code.value_or(-1);
    r.out = p.stdout_text();
    r.err = p.stderr_text();
    return r;
  }

  bool wait_for_socket(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (fs::exists(socket_)) {
        return true;
      }
      pause(50ms);
    }
    return fs::exists(socket_);
  }

  TempDir dir_;
  fs::path socket_ = dir_ / "ctl.sock";
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<MqttCollector> collector_;
  int runs_ = 0;
};

TEST_F(ControlSocket, StatusAndTailShowTheRunningDaemonAndStatusSaysWhenItIsGone) {
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_socket(20s)) << "control socket " << socket_
                                    << " never appeared: is control::ControlServer wired into the daemon?\n"
                                    << daemon->stderr_text();
  EXPECT_EQ(fs::status(socket_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::group_write);

  // status --json: radar-1 connected (once the adapter has connected) and a backlog figure.
  json snapshot;
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < end) {
    const auto r = ctl({"status", "--socket", socket_.string(), "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    snapshot = json::parse(r.out);
    if (snapshot["devices"]["radar-1"].value("state", "") == "connected") {
      break;
    }
    pause(200ms);
  }
  ASSERT_EQ(snapshot["devices"]["radar-1"]["state"], "connected") << snapshot.dump(2);
  EXPECT_EQ(snapshot["devices"]["radar-1"]["kind"], "radar");
  ASSERT_TRUE(snapshot.contains("backlog")) << snapshot.dump(2);
  EXPECT_TRUE(snapshot["backlog"].is_number_integer());
  EXPECT_TRUE(snapshot["broker"].is_object());

  // The same through --config, and the human table.
  const auto human = ctl({"status", "--config", (dir_ / "checkpointd.yaml").string()});
  ASSERT_EQ(human.code, 0) << human.err;
  EXPECT_NE(human.out.find("radar-1"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("connected"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("Backlog:"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("Broker:"), std::string::npos) << human.out;

  // tail --count 5 --json: five consecutive records, byte for byte the bodies the broker got.
  const auto tail = ctl({"tail", "--socket", socket_.string(), "--count", "5", "--json"}, 90s);
  ASSERT_EQ(tail.code, 0) << tail.err;
  std::vector<json> tailed;
  std::istringstream lines(tail.out);
  for (std::string line; std::getline(lines, line);) {
    tailed.push_back(json::parse(line));
  }
  ASSERT_EQ(tailed.size(), 5u) << tail.out;
  for (std::size_t i = 1; i < tailed.size(); ++i) {
    EXPECT_EQ(tailed[i]["seq"].get<std::uint64_t>(), tailed[i - 1]["seq"].get<std::uint64_t>() + 1);
  }
  const auto last_seq = tailed.back()["seq"].get<std::uint64_t>();
  const auto by_seq = [&] {
    std::map<std::uint64_t, json> m;
    for (const auto& jws : collector_->payloads("checkpoint/ctl-gw/evidence")) {
      const auto body = record_body(jws);
      m[body["seq"].get<std::uint64_t>()] = body;
    }
    return m;
  };
  ASSERT_TRUE(collector_->wait_until([&] { return by_seq().count(last_seq) == 1; }, 30s));
  const auto published = by_seq();
  for (const auto& rec : tailed) {
    const auto it = published.find(rec["seq"].get<std::uint64_t>());
    ASSERT_NE(it, published.end()) << rec.dump();
    EXPECT_EQ(rec, it->second);
  }

  // The readable form: one "seq N  type  time" line per record.
  const auto readable = ctl({"tail", "--socket", socket_.string(), "--count", "2"}, 90s);
  ASSERT_EQ(readable.code, 0) << readable.err;
  std::istringstream rl(readable.out);
  int n = 0;
  for (std::string line; std::getline(rl, line); ++n) {
    EXPECT_EQ(line.rfind("seq ", 0), 0u) << line;
    EXPECT_NE(line.find("Z"), std::string::npos) << "UTC time: " << line;
  }
  EXPECT_EQ(n, 2);

  // A clean stop removes the socket: status exits 3 and says what to check.
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  EXPECT_FALSE(fs::exists(socket_)) << "the socket is removed on stop";
  const auto gone = ctl({"status", "--socket", socket_.string()});
  EXPECT_EQ(gone.code, 3) << gone.out << gone.err;
  EXPECT_NE(gone.err.find("is checkpointd running?"), std::string::npos) << gone.err;

  // A killed daemon leaves its socket behind: refused, reported as not running; the next start replaces it.
  daemon = start_daemon();
  ASSERT_TRUE(wait_for_socket(20s)) << daemon->stderr_text();
  ASSERT_EQ(ctl({"status", "--socket", socket_.string(), "--json"}).code, 0);
  daemon->signal(SIGKILL);
  ASSERT_TRUE(daemon->wait(10s));
  ASSERT_TRUE(fs::exists(socket_));
  const auto stale = ctl({"status", "--socket", socket_.string()});
  EXPECT_EQ(stale.code, 3) << stale.out << stale.err;
  EXPECT_NE(stale.err.find("not running"), std::string::npos) << stale.err;
  daemon = start_daemon();
  const auto again_end = std::chrono::steady_clock::now() + 20s;
  CtlResult again;
  while (std::chrono::steady_clock::now() < again_end) {
    again = ctl({"status", "--socket", socket_.string(), "--json"});
    if (again.code == 0) {
      break;
    }
    pause(200ms);
  }
  EXPECT_EQ(again.code, 0) << again.err << daemon->stderr_text();
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
}

TEST_F(ControlSocket, UsageErrorsExitTwo) {
  const auto both =
      ctl({"status", "--socket", socket_.string(), "--config", (dir_ / "checkpointd.yaml").string()});
  EXPECT_EQ(both.code, 2) << both.err;
  const auto bad_config = ctl({"status", "--config", (dir_ / "missing.yaml").string()});
  EXPECT_EQ(bad_config.code, 2) << bad_config.err;
  const auto help = ctl({"tail", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("Exit codes"), std::string::npos) << help.out;
}

}  // namespace
}  // namespace cpd::testing
