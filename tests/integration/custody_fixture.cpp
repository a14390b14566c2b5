#include "tests/integration/custody_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "tests/integration/gateway_config.h"

namespace cpd::testing {

using namespace std::chrono_literals;

CustodyFixture::CustodyFixture() : store_db_(dir_ / "store.db") {}

void CustodyFixture::SetUp() {
  pub_pem_ = make_gateway_key(dir_.path());
  auto central_key = Ed25519PrivateKey::generate();
  central_key.save_pem_file((dir_ / "central.key").string());
  std::ofstream(dir_ / "central.pub.pem") << central_key.public_key().pem();
  central_pub_ = std::make_unique<Ed25519PublicKey>(central_key.public_key());
  pg_.start();
  broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
  broker_->start();
}

void CustodyFixture::start_radar(int vehicles, double rate, int seed, const std::string& log) {
  sim_ = std::make_unique<Process>(
      std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2",
                               "--seed", std::to_string(seed), "--vehicles", std::to_string(vehicles),
                               "--rate", std::to_string(rate)},
      dir_ / log);
  auto line = sim_->wait_for_stdout_line("listening ", 10s);
  ASSERT_TRUE(line) << sim_->stderr_text();
  sim_port_ = static_cast<std::uint16_t>(std::stoi(line->substr(10)));
}

void CustodyFixture::write_gateway_config(const GatewayConfig& config) {
  CheckpointdConfig out(dir_.path(), broker_->uri());
  out.gateway_id("gw")
      .set_yaml(
          "gateway.site",
          "{name: \"K1234+500\", road: G60, direction: N, lat: 30.27, lon: 120.15, utc_offset: \"+08:00\", "
          "area_code: \"330106\", km_marker: K1234+500}")
      .set("store.path", store_db_.string())
      .erase("mqtt.topic_prefix")
      .set("metrics.enabled", "false");
  if (config.retention_days) {
    out.set("store.retention_days", *config.retention_days);
  }
  if (config.control) {
    out.set("control.socket", (dir_ / "control.sock").string());
  }
  out.add_radar("radar-1", sim_port_).reconnect(200, 1000);
  if (!config.extra_devices.empty()) {
    out.merge_yaml("devices:\n" + config.extra_devices);
  }
  if (config.custody) {
    out.set_yaml("custody.central_keys", "[{pem: " + (dir_ / "central.pub.pem").string() + "}]")
        .set("custody.head_interval_ms", 500);
    if (!config.custody_extra.empty()) {
      out.merge_yaml("custody:\n" + config.custody_extra);
    }
  }
  out.write(dir_ / "checkpointd.yaml");
}

void CustodyFixture::write_central_config(const std::string& name, const CentralConfig& config) {
  std::ofstream(dir_ / (name + ".yaml"))
      << "central:\n  id: central-test\n  key: " << (dir_ / "central.key").string() << "\n"
      << "postgres:\n  conninfo: \"" << pg_.conninfo() << "\"\n"
      << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: " << config.client_id << "\n"
      << "  reconnect_min_ms: 200\n  reconnect_max_ms: 1000\n"
      << "feed:\n  media_dir: " << (dir_ / "central-media").string() << "\n"
      << config.feed_extra << "receipts:\n"
      << config.receipts << "gaps:\n  resend_after_ms: " << config.resend_after_ms
      << "\n  retry_min_ms: 500\n  retry_max_ms: 2000\n  check_interval_ms: 200\n"
      << config.gaps_extra
      << (config.metrics ? "metrics: {enabled: true, host: 127.0.0.1, port: 0}\n"
                         : "metrics: {enabled: false}\n");
}

void CustodyFixture::start_central(std::unique_ptr<Process>& central, const std::string& name,
                                   std::uint16_t* metrics_port) {
  central =
      std::make_unique<Process>(std::vector<std::string>{binary("central/checkpoint-central"), "run",
                                                         "--config", (dir_ / (name + ".yaml")).string()},
                                dir_ / name);
  if (metrics_port != nullptr) {
    const auto line = central->wait_for_stdout_line("metrics: http://127.0.0.1:", 30s);
    ASSERT_TRUE(line) << central->stderr_text();
    *metrics_port = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(':') + 1)));
  }
  ASSERT_TRUE(central->wait_for_stdout_line("running: ", 30s)) << central->stderr_text();
}

std::unique_ptr<Process> CustodyFixture::start_daemon() {
  return std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                            (dir_ / "checkpointd.yaml").string()},
                                   dir_ / ("checkpointd-" + std::to_string(daemon_runs_++)));
}

int CustodyFixture::run(const std::vector<std::string>& argv, std::string* out, std::string* err,
                        std::chrono::milliseconds timeout) {
  Process p(argv, dir_ / ("run-" + std::to_string(runs_++)));
  const auto code = p.wait(timeout);
  if (out != nullptr) {
    *out = p.stdout_text();
  }
  if (err != nullptr) {
    *err = p.stderr_text();
  }
  std::string command;
  for (const auto& arg : argv) {
    command += (command.empty() ? "" : " ") + arg;
  }
  EXPECT_TRUE(code) << command.substr(0, 300) << " did not finish";
  return code.value_or(-1);
}

int CustodyFixture::central_cli(std::vector<std::string> args, std::string* out, std::string* err) {
  args.insert(args.begin(), binary("central/checkpoint-central"));
  return run(args, out, err);
}

int CustodyFixture::ctl(std::vector<std::string> args, std::string* out, std::string* err) {
  args.insert(args.begin(), binary("tools/checkpointctl/checkpointctl"));
  return run(args, out, err);
}

int CustodyFixture::central_enroll(const std::string& gateway, const fs::path& pubkey, std::string* err) {
  return central_cli({"enroll", "--config", (dir_ / "central.yaml").string(), "--gateway", gateway,
                      "--pubkey", (pubkey.empty() ? pub_pem_ : pubkey).string()},
                     nullptr, err);
}

int CustodyFixture::export_chain() {
  std::string exported;
  const int code =
      central_cli({"export", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw"}, &exported);
  std::ofstream(dir_ / "export.jws") << exported;
  return code;
}

int CustodyFixture::verify_export(std::string* out, std::string* err, std::chrono::milliseconds timeout) {
  return run({binary("tools/checkpointctl/checkpointctl"), "verify", "--pubkey", pub_pem_.string(),
              "--from-start", (dir_ / "export.jws").string()},
             out, err, timeout);
}

int CustodyFixture::mosquitto_pub(const std::string& topic, const std::string& payload, bool retain,
                                  std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{"/usr/bin/mosquitto_pub",        "-h", "127.0.0.1", "-p",
                                std::to_string(broker_->port()), "-q", "1"};
  if (retain) {
    argv.emplace_back("-r");
  }
  argv.insert(argv.end(), {"-t", topic, "-m", payload});
  return run(argv, nullptr, nullptr, timeout);
}

std::string CustodyFixture::gateway_kid() const {
  std::ifstream pem_in(pub_pem_);
  return Ed25519PublicKey::from_pem(
             std::string((std::istreambuf_iterator<char>(pem_in)), std::istreambuf_iterator<char>()))
      .kid();
}

long long CustodyFixture::pg_int(const std::string& sql) {
  const std::string v = pg_.query(sql);
  return v.empty() ? -1 : std::stoll(v);
}

long long CustodyFixture::watermark() {
  return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gw'");
}

long long CustodyFixture::head_seq() {
  return store_query(store_db_, "SELECT max(seq) FROM records");
}

std::string CustodyFixture::metrics() {
  return http_get_body(metrics_port_, "/metrics");
}

std::optional<custody::Receipt> CustodyFixture::retained_receipt(std::chrono::milliseconds wait,
                                                                 bool expect_valid) {
  MqttCollector c(broker_->uri(), {"checkpoint/gw/custody"});
  c.wait_until([&] { return c.count("checkpoint/gw/custody") > 0; }, wait);
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
  if (expect_valid) {
    EXPECT_TRUE(check.ok) << check.reason;
  }
  return check.ok ? std::optional<custody::Receipt>(check.receipt) : std::nullopt;
}

}  // namespace cpd::testing
