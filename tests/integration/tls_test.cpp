// Transport security against a real mosquitto with a TLS-only listener and certificates made here with the
// openssl CLI: mutual TLS and passwords deliver records; a wrong CA, a wrong host name, an expired
// certificate and a wrong password each fail with a clear reason and never fall back to plaintext; and no
// secret (camera password, dock token, MQTT password) appears in logs, --check-config output or records.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kMqttPassword = "mqtt-Pw-7f3a9c";
constexpr const char* kCameraPassword = "cam-Pw-b41d0e";
constexpr const char* kDockToken = "dock-Tok-52e8aa";

void run_shell(const std::string& script, const fs::path& log) {
  const std::string cmd = "set -e; " + script + " >>" + log.string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "failed: " << script;
}

void write_private(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  ::chmod(p.c_str(), 0600);
}

class TlsIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    make_gateway_key(dir_.path());
    make_certificates();
    write_private(dir_ / "mqtt.pw", std::string(kMqttPassword) + "\n");
    write_private(dir_ / "cam.secret", std::string(kCameraPassword) + "\n");
    write_private(dir_ / "dock.token", std::string(kDockToken) + "\n");
    run_shell("mosquitto_passwd -c -b " + (dir_ / "broker.passwd").string() + " gw " + kMqttPassword,
              dir_ / "certs.log");
  }

  // A CA; a server certificate for 127.0.0.1/localhost; one for another name; an expired one (`openssl ca`
  // with a validity window in the past); a client certificate; and an unrelated second CA.
  void make_certificates() {
    const std::string d = dir_.path().string();
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::string s = "cd " + d + "; ";
    s += "openssl req -x509 " + ec + " -keyout ca.key -out ca.pem -days 30 -subj /CN=cpd-test-ca; ";
    s += "openssl req -x509 " + ec + " -keyout other-ca.key -out other-ca.pem -days 30 -subj /CN=other-ca; ";
    const auto issue = [&](const std::string& name, const std::string& cn, const std::string& san) {
      return "openssl req " + ec + " -keyout " + name + ".key -out " + name + ".csr -subj /CN=" + cn + "; " +
             "printf 'subjectAltName=" + san + "\\n' > " + name + ".ext; " + "openssl x509 -req -in " + name +
             ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out " + name + ".pem -extfile " + name +
             ".ext; ";
    };
    s += issue("server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost");
    s += issue("wrongname", "broker.other.example", "DNS:broker.other.example");
    s += issue("client", "gw", "DNS:gw");
    s += "mkdir -p ca.db; : > ca.db/index.txt; echo 1000 > ca.db/serial; ";
    s += "printf '[ca]\\ndefault_ca=t\\n[t]\\ndatabase=" + d + "/ca.db/index.txt\\nserial=" + d +
         "/ca.db/serial\\nnew_certs_dir=" + d + "/ca.db\\ncertificate=" + d + "/ca.pem\\nprivate_key=" + d +
         "/ca.key\\ndefault_md=sha256\\npolicy=p\\nx509_extensions=x\\n[p]\\ncommonName=supplied\\n"
         "[x]\\nsubjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ca.cnf; ";
    s += "openssl req " + ec + " -keyout expired.key -out expired.csr -subj /CN=127.0.0.1; ";
    s += "openssl ca -batch -config ca.cnf -in expired.csr -out expired.pem -notext "
         "-startdate 20200101000000Z -enddate 20200201000000Z; ";
    s += "chmod 600 *.key";
    run_shell(s, dir_ / "certs.log");
  }

  void start_broker(const std::string& server_cert, bool mutual, bool passwords) {
    MosquittoOptions options;
    options.tls = MosquittoOptions::Tls{dir_ / "ca.pem", dir_ / (server_cert + ".pem"),
                                        dir_ / (server_cert + ".key"), mutual};
    if (passwords) {
      options.password_file = dir_ / "broker.passwd";
    }
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker", 0, options);
    broker_->start();
  }

  // The daemon's config with the broker at `uri` (reconnects after 200 ms to 1 s, a 3 s connect timeout) and
  // a radar that need not be reachable.
  CheckpointdConfig broker_config(const std::string& uri) const {
    auto config = CheckpointdConfig::minimal(dir_.path(), uri);
    config.set("mqtt.reconnect_min_ms", 200)
        .set("mqtt.reconnect_max_ms", 1000)
        .set("mqtt.connect_timeout_s", 3)
        .set("validity.clock_sync", "assume");
    config.add_radar("radar-1", 9).lanes(1).calibration("C", "2099-01-01");
    return config;
  }

  // broker_config() for the test's TLS broker: trusting `ca`, with or without the client certificate, as user
  // gw with the password in `password_file` (no credentials when empty).
  CheckpointdConfig tls_config(const std::string& ca = "ca.pem", bool client_cert = true,
                               const std::string& password_file = "mqtt.pw") const {
    auto config = broker_config(broker_->uri());
    config.set("mqtt.tls.ca_file", (dir_ / ca).string());
    if (client_cert) {
      config.set("mqtt.tls.cert_file", (dir_ / "client.pem").string())
          .set("mqtt.tls.key_file", (dir_ / "client.key").string());
    }
    if (!password_file.empty()) {
      config.set("mqtt.username", "gw").set("mqtt.password_file", (dir_ / password_file).string());
    }
    return config;
  }

  void start_daemon() {
    daemon_ =
        std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--verbose",
                                                           "--config", (dir_ / "c.yaml").string()},
                                  dir_ / "checkpointd");
  }

  std::string daemon_output() const { return daemon_->stdout_text() + daemon_->stderr_text(); }

  // Waits for a "cannot connect to broker" log line holding `reason`; returns the whole output.
  std::string expect_connect_failure(const std::string& reason) {
    std::string out;
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < end) {
      out = daemon_output();
      const auto at = out.find("cannot connect to broker " + broker_->uri());
      if (at != std::string::npos && out.find(reason, at) != std::string::npos) {
        break;
      }
      pause(100ms);
    }
    EXPECT_NE(out.find("cannot connect to broker " + broker_->uri()), std::string::npos) << out;
    EXPECT_NE(out.find(reason), std::string::npos) << "the log says why: " << out;
    // The daemon keeps running and retrying, and the broker never had a session from it.
    pause(1500ms);
    EXPECT_TRUE(daemon_->running()) << out;
    EXPECT_EQ(broker_->log_text().find(" as gw "), std::string::npos)
        << "the broker accepted the daemon: " << broker_->log_text();
    daemon_->signal(SIGTERM);
    EXPECT_EQ(daemon_->wait(20s), 0) << daemon_output();
    return out;
  }

  MqttCollector::Options collector_options() const {
    return {dir_ / "ca.pem", dir_ / "client.pem", dir_ / "client.key", "gw", kMqttPassword};
  }

  TempDir dir_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> daemon_;
};

TEST_F(TlsIntegration, MutualTlsWithPasswordDeliversRecordsAndLeaksNoSecret) {
  start_broker("server", /*mutual=*/true, /*passwords=*/true);
  MqttCollector collector(broker_->uri(), {"checkpoint/gw/#"}, collector_options());
  // Devices holding the other secrets; they need not be reachable for their secrets to be loaded.
  auto config = tls_config();
  config.add_camera("cam-1", "http://127.0.0.1:9", dir_ / "cam.secret");
  config.add_dock("dock-1", "http://127.0.0.1:9", dir_ / "dock.token");
  config.write(dir_ / "c.yaml");

  Process check({binary("daemon/app/checkpointd"), "--check-config", (dir_ / "c.yaml").string()},
                dir_ / "check");
  ASSERT_EQ(check.wait(20s), 0) << check.stderr_text();
  const std::string check_out = check.stdout_text() + check.stderr_text();

  start_daemon();
  ASSERT_TRUE(collector.wait_until(
      [&] { return !records_of(collector, "checkpoint/gw/evidence", {"audit"}).empty(); }, 20s))
      << daemon_output();
  ASSERT_TRUE(collector.wait_until([&] { return collector.count("checkpoint/gw/status") > 0; }, 15s));
  const json status = json::parse(collector.payloads("checkpoint/gw/status").back());
  EXPECT_EQ(status["broker"]["tls"]["client_certificate"], true) << status.dump();
  EXPECT_EQ(status["broker"]["tls"]["verify_hostname"], true) << status.dump();
  daemon_->signal(SIGTERM);
  ASSERT_EQ(daemon_->wait(20s), 0) << daemon_output();

  std::string published;
  for (const auto& m : collector.messages()) {
    published += m.payload + "\n";
  }
  const std::string logs = daemon_output();
  EXPECT_NE(logs.find("connected to " + broker_->uri()), std::string::npos) << logs;
  for (const char* secret : {kMqttPassword, kCameraPassword, kDockToken}) {
    EXPECT_EQ(check_out.find(secret), std::string::npos) << "--check-config printed a secret: " << check_out;
    EXPECT_EQ(logs.find(secret), std::string::npos) << "the daemon logged a secret";
    EXPECT_EQ(published.find(secret), std::string::npos) << "a secret was published";
  }
}

TEST_F(TlsIntegration, WrongCaFailsWithVerificationReason) {
  start_broker("server", false, false);
  tls_config("other-ca.pem", false, "").write(dir_ / "c.yaml");
  start_daemon();
  expect_connect_failure("server certificate rejected");
}

TEST_F(TlsIntegration, WrongHostnameFailsWithHostnameReason) {
  start_broker("wrongname", false, false);
  tls_config("ca.pem", false, "").write(dir_ / "c.yaml");
  start_daemon();
  expect_connect_failure("hostname mismatch");
}

TEST_F(TlsIntegration, ExpiredCertificateFailsWithExpiryReason) {
  start_broker("expired", false, false);
  tls_config("ca.pem", false, "").write(dir_ / "c.yaml");
  start_daemon();
  expect_connect_failure("certificate has expired");
}

TEST_F(TlsIntegration, MissingClientCertificateIsRefusedByAMutualTlsBroker) {
  start_broker("server", true, false);
  tls_config("ca.pem", false, "").write(dir_ / "c.yaml");
  start_daemon();
  expect_connect_failure("TLS");
}

TEST_F(TlsIntegration, WrongPasswordFailsAsNotAuthorized) {
  start_broker("server", false, true);
  write_private(dir_ / "wrong.pw", "not-the-password\n");
  tls_config("ca.pem", false, "wrong.pw").write(dir_ / "c.yaml");
  start_daemon();
  // mosquitto answers a wrong password with CONNACK reason 0x87.
  const std::string out = expect_connect_failure("Not authorized");
  EXPECT_EQ(out.find("not-the-password"), std::string::npos) << "the password is never logged";
}

TEST_F(TlsIntegration, NothingPlaintextReachesATlsOnlyBroker) {
  start_broker("server", false, false);
  // A plaintext client cannot even connect to the TLS port.
  EXPECT_ANY_THROW(MqttCollector(broker_->uri().replace(0, 3, "tcp"), {"checkpoint/gw/#"}));
  // A daemon configured for plaintext against it never gets a session either, and keeps trying.
  broker_config("tcp://127.0.0.1:" + std::to_string(broker_->port())).write(dir_ / "c.yaml");
  start_daemon();
  std::string out;
  const auto end = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < end &&
         (out = daemon_output()).find("cannot connect to broker") == std::string::npos) {
    pause(100ms);
  }
  EXPECT_NE(out.find("cannot connect to broker tcp://127.0.0.1:" + std::to_string(broker_->port())),
            std::string::npos)
      << out;
  EXPECT_TRUE(daemon_->running());
  EXPECT_EQ(broker_->log_text().find(" as gw "), std::string::npos) << broker_->log_text();
  daemon_->signal(SIGTERM);
  EXPECT_EQ(daemon_->wait(20s), 0) << daemon_output();
}

}  // namespace
}  // namespace cpd::testing
