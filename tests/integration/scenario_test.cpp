// Radar and ANPR camera together, against the real daemon, the scenario simulator and a real mosquitto:
// every vehicle of a known scenario must come out as exactly the expected record, with the right plate,
// lane, speed and band, verifiable, with its pictures delivered before it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "daemon/core/encoding.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Options {
  std::string calibration_until = "2099-12-31";
  // More members of gateway.site (the case-file elements).
  std::vector<std::pair<std::string, std::string>> site_extra;
  std::string password = "secret";
};

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    collector_ = std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/gw/#"});
  }

  void start_scenario(const std::string& yaml) {
    std::ofstream(dir_ / "scenario.yaml") << yaml;
    sim_ =
        std::make_unique<Process>(std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "scenario",
                                                           (dir_ / "scenario.yaml").string(),
                                                           "--ground-truth", (dir_ / "truth.jsonl").string()},
                                  dir_ / "scenario");
    auto radar = sim_->wait_for_stdout_line("radar ", 10s);
    auto camera = sim_->wait_for_stdout_line("camera ", 10s);
    ASSERT_TRUE(radar && camera) << sim_->stderr_text();
    radar_port_ = std::stoi(radar->substr(6));
    camera_port_ = std::stoi(camera->substr(7));
  }

  void start_daemon(const Options& o = {}) {
    {
      std::ofstream(dir_ / "cam.secret") << o.password;
      ::chmod((dir_ / "cam.secret").c_str(), 0600);
    }
    auto config = CheckpointdConfig::minimal(dir_.path(), broker_->uri());
    config.set_yaml(
        "gateway.site",
        "{name: Test, road: G60, direction: N, lat: 30.274085, lon: 120.15507, utc_offset: \"+08:00\"}");
    for (const auto& [key, value] : o.site_extra) {
      config.set("gateway.site." + key, value);
    }
    config.set("correlation.window_ms", 500)
        .set("correlation.max_wait_ms", 2000)
        .set_yaml("correlation.lanes", "[{lane: 1, limit_kmh: 100}, {lane: 2, limit_kmh: 120}]")
        .set("validity.clock_sync", "assume");
    config.add_radar("radar-1", radar_port_).calibration("JJG527-2026-0412", o.calibration_until);
    config.add_camera("cam-1", "http://127.0.0.1:" + std::to_string(camera_port_), dir_ / "cam.secret")
        .set("auth", "digest");
    config.write(dir_ / "checkpointd.yaml");
    verify_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/checkpointctl/checkpointctl"), "verify", "--pubkey",
                                 pub_pem_.string(), "--mqtt", broker_->uri(), "--topic",
                                 "checkpoint/gw/evidence", "--from-start", "--seconds", "60"},
        dir_ / "verify");
    ASSERT_TRUE(verify_->wait_for_stderr_line("checkpointctl: subscribed to ", 20s))
        << verify_->stderr_text();
    daemon_ = std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                                 (dir_ / "checkpointd.yaml").string()},
                                        dir_ / "checkpointd");
  }

  std::vector<json> records(const std::set<std::string>& types) const {
    return records_of(*collector_, "checkpoint/gw/evidence", {types.begin(), types.end()});
  }

  const std::set<std::string> kVehicleTypes{"passage", "speeding", "plate_read", "speed_measurement"};

  bool wait_records(std::size_t n, std::chrono::seconds timeout) {
    return collector_->wait_until([&] { return records(kVehicleTypes).size() >= n; }, timeout);
  }

  void stop_and_verify() {
    daemon_->signal(SIGTERM);
    ASSERT_EQ(daemon_->wait(20s), 0) << daemon_->stderr_text();
    verify_->signal(SIGTERM);
    ASSERT_EQ(verify_->wait(10s), 0) << verify_->stdout_text() << verify_->stderr_text();
    EXPECT_NE(verify_->stdout_text().find("chain intact"), std::string::npos) << verify_->stdout_text();
  }

  TempDir dir_;
  fs::path pub_pem_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<MqttCollector> collector_;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<Process> daemon_;
  std::unique_ptr<Process> verify_;
  int radar_port_ = 0;
  int camera_port_ = 0;
};

constexpr const char* kScenario = R"(radar: {port: 0}
camera: {port: 0, username: admin, password: secret, clock_offset_ms: 0}
start_delay_ms: 5000
vehicles:
  - {at_ms: 0,    plate: 浙A12345, lane: 1, speed_kmh: 87.3, color: blue}
  - {at_ms: 300,  plate: 浙B77777, lane: 2, speed_kmh: 131.0}
  - {at_ms: 1500, plate: 沪C00001, lane: 1, speed_kmh: 121.0}
  - {at_ms: 2500, plate: unknown,  lane: 1, speed_kmh: 64.0}
  - {at_ms: 3500, plate: 苏E55555, lane: 2, speed_kmh: 99.0, camera: false}
  - {at_ms: 4500, plate: 皖F12121, lane: 1, speed_kmh: 70.0, radar: false}
  - {at_ms: 5500, plate: 京G66666, lane: 2, speed_kmh: 185.0}
  - {at_ms: 6500, plate: 津H10101, lane: 1, speed_kmh: 112.0}
  - {at_ms: 7500, plate: 浙J00001, lane: 2, speed_kmh: 100.0}
  - {at_ms: 8300, plate: 浙J00002, lane: 2, speed_kmh: 125.0}
)";

TEST_F(Checkpoint, EveryVehicleOfAKnownScenarioGivesExactlyTheExpectedRecord) {
  if (kSanitized) {
    // The exact set needs the simulator's radar frames on time (one vehicle 300 ms behind another in the
    // next lane); under ASan+UBSan on two busy cores a track was once split into two records (CI,
    // 2026-12-05: 12 records instead of 11). The rule is checked here in the plain build and in the
    // correlator's unit tests; the two cases below still drive the same daemon paths under the sanitizers.
    GTEST_SKIP()
        << "the exact record set depends on the simulator's frame timing, which an ASan build cannot keep";
  }
  start_scenario(kScenario);
  start_daemon();
  // 7 matched + (unknown: plate_read + speed_measurement) + camera miss + radar miss = 11
  ASSERT_TRUE(wait_records(11, 60s)) << records(kVehicleTypes).size() << " records\n"
                                     << daemon_->stderr_text();
  pause(3s);  // nothing more may come
  stop_and_verify();

  const auto all = records(kVehicleTypes);
  ASSERT_EQ(all.size(), 11u);
  std::map<std::string, json> by_plate;
  std::vector<json> lone_tracks;
  std::vector<json> lone_reads;
  for (const auto& r : all) {
    if (r["type"] == "speed_measurement") {
      lone_tracks.push_back(r);
    } else if (r["type"] == "plate_read") {
      lone_reads.push_back(r);
    } else {
      by_plate[r["plate"].get<std::string>()] = r;
    }
  }
  struct Expect {
    std::string plate;
    int lane;
    int dkmh;
    std::string type;
    std::string band;
  };
  const std::vector<Expect> matched = {
      {"浙A12345", 1, 873, "passage", ""},           {"浙B77777", 2, 1310, "speeding", "under_10"},
      {"沪C00001", 1, 1210, "speeding", "over_20"},  {"京G66666", 2, 1850, "speeding", "over_50"},
      {"津H10101", 1, 1120, "speeding", "over_10"},  {"浙J00001", 2, 1000, "passage", ""},
      {"浙J00002", 2, 1250, "speeding", "under_10"},
  };
  ASSERT_EQ(by_plate.size(), matched.size());
  for (const auto& e : matched) {
    SCOPED_TRACE(e.plate);
    ASSERT_EQ(by_plate.count(e.plate), 1u);
    const auto& r = by_plate[e.plate];
    EXPECT_EQ(r["type"], e.type);
    EXPECT_EQ(r["lane"], e.lane);
    EXPECT_EQ(r["speed_dkmh"], e.dkmh);
    if (!e.band.empty()) {
      EXPECT_EQ(r["band"], e.band);
    }
    EXPECT_EQ(r["enforceable"], true) << r["reasons"].dump();
    EXPECT_EQ(r["pictures"].size(), 2u);
    EXPECT_LE(std::abs(r["match"]["dt_ms"].get<int>()), 500);
    EXPECT_EQ(r["radar"], "radar-1");
    EXPECT_EQ(r["camera"], "cam-1");
  }
  // The unreadable plate and the radar's lone vehicle: speed records; the camera's lone vehicle and the
  // unreadable read: plate records.
  std::multiset<int> lone_speeds;
  for (const auto& t : lone_tracks) {
    lone_speeds.insert(t["speed_dkmh"].get<int>());
  }
  EXPECT_EQ(lone_speeds, (std::multiset<int>{640, 990}));
  std::multiset<std::string> lone_plates;
  for (const auto& r : lone_reads) {
    lone_plates.insert(r["plate"].get<std::string>());
  }
  EXPECT_EQ(lone_plates, (std::multiset<std::string>{"unknown", "皖F12121"}));

  // Every picture named arrived on the media topic and hashes to its name.
  std::set<std::string> media;
  for (const auto& m : collector_->messages()) {
    if (m.topic.rfind("checkpoint/gw/media/", 0) == 0) {
      EXPECT_EQ(sha256_hex(m.payload), m.topic.substr(20));
      media.insert(m.topic.substr(20));
    }
  }
  for (const auto& r : all) {
    for (const auto& p : r.value("pictures", json::array())) {
      EXPECT_EQ(media.count(p["sha256"].get<std::string>()), 1u) << r["id"];
    }
  }
}

TEST_F(Checkpoint, InvalidConditionsAreWrittenIntoTheRecordNotDropped) {
  start_scenario(R"(radar: {port: 0, status_code: 21}
camera: {port: 0, username: admin, password: secret, clock_offset_ms: 3000}
start_delay_ms: 5000
vehicles:
  - {at_ms: 0, plate: 浙A99999, lane: 1, speed_kmh: 130.0}
)");
  Options o;
  o.calibration_until = "2020-01-01";
  start_daemon(o);
  ASSERT_TRUE(wait_records(1, 60s)) << daemon_->stderr_text();
  stop_and_verify();
  const auto all = records(kVehicleTypes);
  ASSERT_EQ(all.size(), 1u) << "a camera 3 s off is corrected by its measured offset and still matches";
  const auto& r = all[0];
  EXPECT_EQ(r["type"], "speeding");
  EXPECT_EQ(r["plate"], "浙A99999");
  EXPECT_EQ(r["enforceable"], false);
  const auto reasons = r["reasons"].get<std::set<std::string>>();
  EXPECT_EQ(reasons.count("calibration_expired"), 1u) << r["reasons"];
  EXPECT_EQ(reasons.count("radar_fault"), 1u) << r["reasons"];
  EXPECT_EQ(reasons.count("camera_clock_offset_too_large"), 1u) << r["reasons"];
  EXPECT_NEAR(r["camera_event"]["clock_offset_ms"].get<double>(), 3000.0, 300.0);
}

// ---- The evidence sheet (checkpointctl sheet), checked with stock tools: pdftotext, pdftoppm, zbarimg ----

// The JWS of the first record of `type` on the evidence topic.
std::string jws_of(const MqttCollector& collector, const std::string& type) {
  for (const auto& payload : collector.payloads("checkpoint/gw/evidence")) {
    if (record_body(payload).value("type", "") == type) {
      return payload;
    }
  }
  return "";
}

// Runs a stock tool (or checkpointctl) to the end; its exit code and output.
std::pair<int, std::string> run_tool(const std::vector<std::string>& argv, const fs::path& log) {
  Process p(argv, log);
  const auto rc = p.wait(60s);
  return {rc.value_or(-1), p.stdout_text() + p.stderr_text()};
}

class Sheet : public Checkpoint {
 protected:
  // checkpointctl sheet for `jws` (written to <name>.jws); its exit code and output.
  std::pair<int, std::string> sheet(const std::string& jws, const std::string& name, const fs::path& media) {
    std::ofstream(dir_ / (name + ".jws")) << jws << "\n";
    return run_tool(
        {binary("tools/checkpointctl/checkpointctl"), "sheet", "--pubkey", pub_pem_.string(), "--media",
         media.string(), (dir_ / (name + ".jws")).string(), "-o", (dir_ / (name + ".pdf")).string()},
        dir_ / ("sheet-" + name));
  }

  std::string pdf_text(const std::string& name) {
    const auto [rc, text] =
        run_tool({"/usr/bin/pdftotext", "-enc", "UTF-8", (dir_ / (name + ".pdf")).string(), "-"},
                 dir_ / ("pdftotext-" + name));
    EXPECT_EQ(rc, 0) << text;
    return text;
  }

  // Renders every page with pdftoppm and returns what zbarimg decodes on them.
  std::string rendered_qr(const std::string& name) {
    const auto [info_rc, info] =
        run_tool({"/usr/bin/pdfinfo", (dir_ / (name + ".pdf")).string()}, dir_ / ("pdfinfo-" + name));
    EXPECT_EQ(info_rc, 0) << info;
    const auto [rc, out] = run_tool({"/usr/bin/pdftoppm", "-r", "150", "-png",
                                     (dir_ / (name + ".pdf")).string(), (dir_ / (name + "-page")).string()},
                                    dir_ / ("pdftoppm-" + name));
    EXPECT_EQ(rc, 0) << out;
    std::vector<std::string> zbar{"/usr/bin/zbarimg", "--raw", "-q"};
    int pages = 0;
    for (const auto& entry : fs::directory_iterator(dir_.path())) {
      const std::string file = entry.path().filename().string();
      if (file.rfind(name + "-page", 0) == 0 && entry.path().extension() == ".png") {
        zbar.push_back(entry.path().string());
        ++pages;
      }
    }
    EXPECT_GT(pages, 0);
    const auto at = info.find("Pages:");
    EXPECT_NE(at, std::string::npos) << info;
    EXPECT_EQ(at == std::string::npos ? -1 : std::stoi(info.substr(at + 6)), pages)
        << "pdftoppm renders every page: " << info;
    // zbarimg exits 4 when a page holds no code: only the last page has one.
    const auto [zbar_rc, qr] = run_tool(zbar, dir_ / ("zbar-" + name));
    EXPECT_TRUE(zbar_rc == 0 || zbar_rc == 4) << qr;
    return qr;
  }
};

TEST_F(Sheet, ASpeedingAndAPassageAreRenderedVerifiableAndATamperedRecordOrPictureIsRefused) {
  start_scenario(R"(radar: {port: 0}
camera: {port: 0, username: admin, password: secret, clock_offset_ms: 0}
start_delay_ms: 5000
vehicles:
  - {at_ms: 0,    plate: 浙A12345, lane: 1, speed_kmh: 150.0}
  - {at_ms: 1500, plate: 沪C00001, lane: 1, speed_kmh: 80.0}
)");
  Options o;
  o.site_extra = {
      {"area_code", "330106"}, {"road_code", "G60"}, {"km_marker", "K1234+500"}, {"carriageway", "up"}};
  start_daemon(o);
  ASSERT_TRUE(wait_records(2, 60s)) << daemon_->stderr_text();
  stop_and_verify();
  const fs::path media = dir_ / "media";
  const std::string speeding = jws_of(*collector_, "speeding");
  const std::string passage = jws_of(*collector_, "passage");
  ASSERT_FALSE(speeding.empty() || passage.empty());
  const json body = record_body(speeding);
  ASSERT_EQ(body["enforceable"], true) << body["reasons"];
  // What the camera's deviceInfo said it is, bounded, in the record.
  EXPECT_FALSE(body["camera_device"]["serial"].get<std::string>().empty()) << body["camera_device"];

  const auto [rc, out] = sheet(speeding, "speeding", media);
  ASSERT_EQ(rc, 0) << out;
  const std::string text = pdf_text("speeding");
  EXPECT_NE(text.find("道路交通安全违法行为图像取证记录"), std::string::npos) << text;
  EXPECT_NE(text.find("浙A12345"), std::string::npos) << text;
  const auto dkmh = body["speed_dkmh"].get<int>();
  EXPECT_NE(text.find(std::to_string(dkmh / 10) + "." + std::to_string(dkmh % 10) + " km/h"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("100 km/h"), std::string::npos) << text;
  EXPECT_NE(text.find("K1234+500"), std::string::npos) << text;
  EXPECT_NE(text.find("330106"), std::string::npos) << text;
  EXPECT_NE(text.find("上行"), std::string::npos) << text;
  EXPECT_EQ(text.find("NOT ENFORCEABLE"), std::string::npos) << text;
  const std::string qr = rendered_qr("speeding");
  EXPECT_NE(qr.find("id=gw:" + body["seq"].dump() + " "), std::string::npos) << qr;
  EXPECT_NE(qr.find("sha256=" + sha256_hex(speeding)), std::string::npos) << qr;

  // Small: the text, the font subset and the pictures as they are.
  std::uintmax_t picture_bytes = 0;
  for (const auto& p : body["pictures"]) {
    picture_bytes += p["bytes"].get<std::uintmax_t>();
  }
  EXPECT_LE(fs::file_size(dir_ / "speeding.pdf"), 300U * 1024U + picture_bytes);

  // The openssl commands the sheet prints verify the signature exactly as printed.
  std::ofstream(dir_ / "record.jws") << speeding << "\n";
  ASSERT_EQ(pub_pem_, dir_ / "gateway.pub.pem") << "the name the printed commands use";
  std::string script = "set -e; cd '" + dir_.path().string() + "'\n";
  for (const std::string line :
       {"printf %s \"$(cut -d. -f1,2 record.jws)\" > signing-input",
        "printf '%s==' \"$(cut -d. -f3 record.jws | tr '_-' '/+')\" | base64 -d > signature.bin",
        "openssl pkeyutl -verify -pubin -inkey gateway.pub.pem -rawin -in signing-input -sigfile "
        "signature.bin",
        "printf %s \"$(cat record.jws)\" | sha256sum"}) {
    EXPECT_NE(text.find(line), std::string::npos) << "printed on the sheet: " << line;
    script += line + "\n";
  }
  const auto [sh_rc, sh_out] = run_tool({"/bin/bash", "-c", script}, dir_ / "openssl");
  EXPECT_EQ(sh_rc, 0) << sh_out;
  EXPECT_NE(sh_out.find("Signature Verified Successfully"), std::string::npos) << sh_out;
  EXPECT_NE(sh_out.find(sha256_hex(speeding)), std::string::npos) << sh_out;

  // The same record straight from the gateway's store (read-only), by id; an id it does not hold is refused.
  const std::string id = body["id"];
  const auto [store_rc, store_out] =
      run_tool({binary("tools/checkpointctl/checkpointctl"), "sheet", "--pubkey", pub_pem_.string(),
                "--media", media.string(), "--store", (dir_ / "store.db").string(), "--id", id, "-o",
                (dir_ / "from-store.pdf").string()},
               dir_ / "sheet-store");
  EXPECT_EQ(store_rc, 0) << store_out;
  EXPECT_NE(pdf_text("from-store").find("浙A12345"), std::string::npos);
  const auto [missing_rc, missing_out] =
      run_tool({binary("tools/checkpointctl/checkpointctl"), "sheet", "--pubkey", pub_pem_.string(),
                "--media", media.string(), "--store", (dir_ / "store.db").string(), "--id", "gw:999999", "-o",
                (dir_ / "missing.pdf").string()},
               dir_ / "sheet-missing");
  EXPECT_EQ(missing_rc, 1) << missing_out;
  EXPECT_NE(missing_out.find("no record gw:999999"), std::string::npos) << missing_out;

  // A passage: rendered, and it says it is not a violation.
  const auto [passage_rc, passage_out] = sheet(passage, "passage", media);
  ASSERT_EQ(passage_rc, 0) << passage_out;
  const std::string passage_text = pdf_text("passage");
  EXPECT_NE(passage_text.find("沪C00001"), std::string::npos) << passage_text;
  EXPECT_NE(passage_text.find("not a violation"), std::string::npos) << passage_text;

  // A tampered record: one character of the body changed.
  std::string forged = speeding;
  const auto dot = forged.find('.');
  forged[dot + 10] = forged[dot + 10] == 'A' ? 'B' : 'A';
  const auto [forged_rc, forged_out] = sheet(forged, "forged", media);
  EXPECT_EQ(forged_rc, 1) << forged_out;
  EXPECT_NE(forged_out.find("does not verify"), std::string::npos) << forged_out;
  EXPECT_FALSE(fs::exists(dir_ / "forged.pdf"));

  // A file that is no JWS-per-line file (one endless line) is refused without being read whole.
  const auto [long_rc, long_out] = sheet(std::string(17 * 1024 * 1024, 'a'), "endless", media);
  EXPECT_EQ(long_rc, 1) << long_out;
  EXPECT_NE(long_out.find("a line longer than"), std::string::npos) << long_out;

  // Pictures laid out as central keeps them (<sha[0:2]>/<sha>): found there too.
  const fs::path sharded = dir_ / "central-media";
  for (const auto& p : body["pictures"]) {
    const std::string sha = p["sha256"];
    fs::create_directories(sharded / sha.substr(0, 2));
    fs::copy_file(media / sha, sharded / sha.substr(0, 2) / sha);
  }
  const auto [sharded_rc, sharded_out] = sheet(speeding, "sharded", sharded);
  EXPECT_EQ(sharded_rc, 0) << sharded_out;

  // A tampered picture: one byte of a picture changed in a copy of the media directory.
  const fs::path altered = dir_ / "altered-media";
  fs::copy(media, altered);
  const std::string picture = body["pictures"][0]["sha256"];
  {
    std::fstream f(altered / picture, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(1000);
    const char c = static_cast<char>(f.get());
    f.seekp(1000);
    f.put(static_cast<char>(c ^ 0x01));
  }
  const auto [altered_rc, altered_out] = sheet(speeding, "altered", altered);
  EXPECT_EQ(altered_rc, 1) << altered_out;
  EXPECT_NE(altered_out.find("does not match its SHA-256"), std::string::npos) << altered_out;
  EXPECT_FALSE(fs::exists(dir_ / "altered.pdf"));
}

TEST_F(Sheet, ANonEnforceableSpeedingSaysSoAtTheTopWithItsReasons) {
  start_scenario(R"(radar: {port: 0, status_code: 21}
camera: {port: 0, username: admin, password: secret}
start_delay_ms: 5000
vehicles:
  - {at_ms: 0, plate: 浙A99999, lane: 1, speed_kmh: 130.0}
)");
  start_daemon();
  ASSERT_TRUE(wait_records(1, 60s)) << daemon_->stderr_text();
  stop_and_verify();
  const std::string speeding = jws_of(*collector_, "speeding");
  ASSERT_FALSE(speeding.empty());
  ASSERT_EQ(record_body(speeding)["enforceable"], false);
  const auto [rc, out] = sheet(speeding, "invalid", dir_ / "media");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("NOT enforceable"), std::string::npos) << out;
  const std::string text = pdf_text("invalid");
  const auto banner = text.find("不可用于处罚 NOT ENFORCEABLE");
  ASSERT_NE(banner, std::string::npos) << text;
  EXPECT_LT(banner, text.find("浙A99999")) << "the warning comes before the record's content";
  EXPECT_NE(text.find("测速设备故障 (radar_fault)"), std::string::npos) << text;
  EXPECT_NE(text.find("未通过 FAILED"), std::string::npos) << text;
}

TEST_F(Checkpoint, WrongCameraCredentialsAreReportedWithoutLockingTheUser) {
  start_scenario(R"(radar: {port: 0}
camera: {port: 0, username: admin, password: secret}
vehicles: []
)");
  Options o;
  o.password = "wrong";
  start_daemon(o);
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        for (const auto& r : records({"device_status"})) {
          if (r["device"] == "cam-1" && r["state"] == "fault") {
            return true;
          }
        }
        return false;
      },
      30s))
      << daemon_->stderr_text();
  pause(3s);
  stop_and_verify();
  // The camera locks a user after 5 failures in a row: the gateway must stop well before that.
  EXPECT_EQ(sim_->stderr_text().find("locked"), std::string::npos) << sim_->stderr_text();
}

}  // namespace
}  // namespace cpd::testing
