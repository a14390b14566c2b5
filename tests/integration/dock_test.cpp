// Recorder docks end to end: the real daemon, `checkpoint-sim dock` processes and a real mosquitto. Every
// file is collected once, hashed, kept and acknowledged only after its record is committed; broken
// downloads resume, station restarts repeat listings without duplicates, MD5 mismatches are retried and
// then recorded as faults, a wrong token is a clear error, and a SIGKILL never leaves a file acknowledged
// whose record is not in the store.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "daemon/core/encoding.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return std::move(out).str();
}

struct Dock {
  std::string id;
  std::unique_ptr<Process> proc;
  fs::path truth;
  std::uint16_t port = 0;
};

class DockIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    collector_ = std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/gw/#"});
    std::ofstream(dir_ / "dock.token") << "s3cret-token\n";
    ::chmod((dir_ / "dock.token").c_str(), 0600);
  }

  // Starts a dock simulator with token "s3cret-token" and the given extra options.
  Dock& add_dock(const std::string& id, std::vector<std::string> args) {
    Dock d;
    d.id = id;
    d.truth = dir_ / (id + ".jsonl");
    std::vector<std::string> argv{binary("tools/sim/checkpoint-sim"),
                                  "dock",
                                  "--port",
                                  "0",
                                  "--token",
                                  "s3cret-token",
                                  "--ground-truth",
                                  d.truth.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    d.proc = std::make_unique<Process>(argv, dir_ / id);
    auto line = d.proc->wait_for_stdout_line("listening ", 20s);
    EXPECT_TRUE(line) << d.proc->stderr_text();
    d.port = line ? static_cast<std::uint16_t>(std::stoi(line->substr(10))) : 0;
    docks_.push_back(std::move(d));
    return docks_.back();
  }

  // `dock_keys`: more keys of every dock's entry.
  void write_config(const std::vector<std::pair<std::string, int>>& dock_keys = {},
                    const std::string& token_file = "dock.token") {
    auto config = CheckpointdConfig::minimal(dir_.path(), broker_->uri());
    config.set("validity.clock_sync", "assume");
    for (const auto& d : docks_) {
      auto dock = config.add_dock(d.id, "http://127.0.0.1:" + std::to_string(d.port), dir_ / token_file);
      dock.set("poll_interval_ms", 300).reconnect(100, 1000);
      for (const auto& [key, value] : dock_keys) {
        dock.set(key, value);
      }
    }
    config.write(dir_ / "c.yaml");
  }

  void start_daemon() {
    daemon_ = std::make_unique<Process>(
        std::vector<std::string>{binary("daemon/app/checkpointd"), "--config", (dir_ / "c.yaml").string()},
        dir_ / ("checkpointd-" + std::to_string(++daemon_runs_)));
  }

  void stop_daemon() {
    daemon_->signal(SIGTERM);
    ASSERT_EQ(daemon_->wait(30s), 0) << daemon_->stderr_text();
  }

  static std::vector<json> truth(const Dock& d, const std::string& event) {
    std::vector<json> out;
    std::ifstream in(d.truth);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) {
        continue;
      }
      auto j = json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("event", "") == event) {
        out.push_back(std::move(j));
      }
    }
    return out;
  }

  static std::set<std::string> acked(const Dock& d) {
    std::set<std::string> ids;
    for (const auto& [id, sha256] : dock_acks(d.truth)) {
      ids.insert(id);
    }
    return ids;
  }

  std::vector<json> records(const std::string& type) const {
    return records_of(*collector_, "checkpoint/gw/evidence", {type});
  }

  // The committed records of one type straight from the store file (the daemon need not be running).
  std::vector<json> store_records(const std::string& type) const {
    std::vector<json> out;
    sqlite3* db = nullptr;
    if (sqlite3_open_v2((dir_ / "store.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      return out;
    }
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT jws FROM records WHERE type = ?1 ORDER BY seq", -1, &stmt, nullptr) ==
        SQLITE_OK) {
      sqlite3_bind_text(stmt, 1, type.c_str(), -1, SQLITE_TRANSIENT);
      while (sqlite3_step(stmt) == SQLITE_ROW) {
        out.push_back(record_body(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))));
      }
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  TempDir dir_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<MqttCollector> collector_;
  std::deque<Dock> docks_;  // references to earlier docks stay valid as more are added
  std::unique_ptr<Process> daemon_;
  int daemon_runs_ = 0;
};

TEST_F(DockIntegration, EveryFileIsCollectedOnceHashedKeptAndAcknowledgedAfterItsRecord) {
  constexpr std::size_t kFiles = 12;
  Dock& dock = add_dock("dock-1", {"--files", std::to_string(kFiles), "--file-kb", "700", "--seed", "3"});
  write_config({{"list_limit", 5}, {"max_parallel_downloads", 3}});
  start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return acked(dock).size() >= kFiles; }, 60s))
      << acked(dock).size() << " acked\n"
      << daemon_->stderr_text();
  ASSERT_TRUE(collector_->wait_until([&] { return records("recording").size() >= kFiles; }, 20s));
  pause(1s);  // anything doubled would arrive now
  stop_daemon();

  std::map<std::string, json> expected;
  for (const auto& f : truth(dock, "file")) {
    expected[f["uniqueId"].get<std::string>()] = f;
  }
  ASSERT_EQ(expected.size(), kFiles);
  const auto recs = records("recording");
  ASSERT_EQ(recs.size(), kFiles) << "one record per file, none twice";
  std::set<std::string> seen;
  for (const auto& r : recs) {
    const std::string id = r["listing"].is_string()
                               ? json::parse(r["listing"].get<std::string>())["uniqueId"].get<std::string>()
                               : "";
    ASSERT_EQ(expected.count(id), 1u) << r.dump();
    EXPECT_TRUE(seen.insert(id).second) << id << " recorded twice";
    const json& t = expected[id];
    EXPECT_EQ(r["sha256"], t["sha256"]);
    EXPECT_EQ(r["md5"], t["md5"]);
    EXPECT_EQ(r["length"], t["length"]);
    EXPECT_EQ(r["recorder_id"], t["deviceId"]);
    EXPECT_EQ(r["officer_id"], t["officerId"]);
    EXPECT_EQ(r["important"], t["important"]);
    EXPECT_EQ(r["recorder_start"], t["startTime"]);
    // The recorder clock is right, so the corrected span is the true one within what the interface allows:
    // listed in whole seconds (truncated) and corrected by the station's offset, measured in whole seconds.
    const double bound = 1000.0 + r["clock"].value("station_uncertainty_ms", 1000.0);
    EXPECT_NEAR(r["start_ms"].get<double>(), t["start_ms"].get<double>(), bound) << r["clock"].dump();
    EXPECT_NEAR(r["end_ms"].get<double>(), t["end_ms"].get<double>(), bound) << r["clock"].dump();
    EXPECT_FALSE(r["recorder_clock_off"].get<bool>());
    EXPECT_EQ(r["links"], json::array());
    // Kept on the gateway under its hash, never published.
    const fs::path kept = r["stored"]["path"].get<std::string>();
    ASSERT_TRUE(fs::exists(kept)) << kept;
    EXPECT_EQ(sha256_hex(file_bytes(kept)), t["sha256"]);
    EXPECT_EQ(collector_->count("checkpoint/gw/media/" + t["sha256"].get<std::string>()), 0u);
  }
  // Each ack carried the file's SHA-256 and came after the record was sealed.
  std::map<std::string, std::int64_t> created;
  for (const auto& r : recs) {
    created[r["sha256"].get<std::string>()] = r["created_ms"].get<std::int64_t>();
  }
  std::size_t ok_acks = 0;
  for (const auto& a : truth(dock, "ack")) {
    ASSERT_EQ(a["outcome"], "acked") << a.dump();
    ASSERT_EQ(created.count(a["sha256"].get<std::string>()), 1u);
    EXPECT_GE(a["time_ms"].get<std::int64_t>(), created[a["sha256"].get<std::string>()]);
    ++ok_acks;
  }
  EXPECT_EQ(ok_acks, kFiles) << "each file acknowledged once";
  EXPECT_TRUE(records("recording_fault").empty());
}

TEST_F(DockIntegration, BrokenDownloadsResumeAndStationRestartsDoNotDuplicate) {
  constexpr std::size_t kFiles = 6;
  Dock& dock =
      add_dock("dock-1", {"--files", std::to_string(kFiles), "--file-kb", "3000", "--break-after-bytes",
                          "700000", "--break-times", "2", "--restart-every-s", "1.5", "--seed", "5"});
  write_config({{"max_parallel_downloads", 2}, {"download_idle_timeout_s", 5}});
  start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return acked(dock).size() >= kFiles; }, 90s))
      << acked(dock).size() << " acked\n"
      << daemon_->stderr_text();
  // Let the restarting station repeat its listings a few more times.
  pause(4s);
  stop_daemon();
  EXPECT_GE(truth(dock, "restart").size(), 2u);
  const auto recs = records("recording");
  ASSERT_EQ(recs.size(), kFiles) << "a repeated listing is recognised, not collected again";
  std::map<std::string, std::string> sha_by_id;
  for (const auto& f : truth(dock, "file")) {
    sha_by_id[f["uniqueId"].get<std::string>()] = f["sha256"].get<std::string>();
  }
  int resumed = 0;
  std::set<std::string> ids;
  for (const auto& r : recs) {
    const auto id = json::parse(r["listing"].get<std::string>())["uniqueId"].get<std::string>();
    EXPECT_TRUE(ids.insert(id).second);
    EXPECT_EQ(r["sha256"], sha_by_id[id]) << "a resumed download must hash like the whole file";
    resumed += r["download"]["resumes"].get<int>() > 0 ? 1 : 0;
  }
  EXPECT_GT(resumed, 0) << "the station broke every file's first two transfers";
}

TEST_F(DockIntegration, Md5MismatchIsRetriedAndAfterThreeBecomesAFaultRecordNeverAcknowledged) {
  Dock& flaky =
      add_dock("dock-a", {"--files", "1", "--file-kb", "300", "--md5-bad-downloads", "2", "--seed", "7"});
  Dock& broken =
      add_dock("dock-b", {"--files", "1", "--file-kb", "300", "--md5-wrong-listing", "--seed", "8"});
  write_config();
  start_daemon();
  ASSERT_TRUE(collector_->wait_until(
      [&] { return acked(flaky).size() == 1 && !records("recording_fault").empty(); }, 60s))
      << daemon_->stderr_text();
  pause(3s);  // several more polls: the faulted file must not be fetched or reported again
  stop_daemon();

  const auto recs = records("recording");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["device"], "dock-a");
  EXPECT_EQ(recs[0]["download"]["attempts"], 3) << "two corrupted downloads, the third matched";
  EXPECT_EQ(recs[0]["sha256"], truth(flaky, "file")[0]["sha256"]);

  const auto faults = records("recording_fault");
  ASSERT_EQ(faults.size(), 1u) << "reported once";
  const json& f = faults[0];
  const json file = truth(broken, "file")[0];
  EXPECT_EQ(f["device"], "dock-b");
  EXPECT_EQ(f["reason"], "md5_mismatch");
  EXPECT_EQ(f["attempts"], 3);
  EXPECT_EQ(f["unique_id"], file["uniqueId"]);
  EXPECT_EQ(f["md5"], file["listed_md5"]);
  EXPECT_EQ(f["sha256"], file["sha256"]) << "the bytes were right; the station's checksum was not";
  EXPECT_TRUE(acked(broken).empty()) << "a faulted file stays on the station";
}

TEST_F(DockIntegration, AKilledDaemonNeverLeavesAFileAcknowledgedWithoutItsCommittedRecord) {
  // ~800 MB: several seconds of collection on the build machine, so the kills land mid-download, between
  // a download and its record, and between a record and its ack.
  constexpr std::size_t kFiles = 40;
  Dock& dock = add_dock("dock-1", {"--files", std::to_string(kFiles), "--file-kb", "20000", "--seed", "11"});
  write_config({{"max_parallel_downloads", 2}, {"list_limit", 7}});
  std::mt19937 rng(20261127);
  std::uniform_int_distribution<int> delay_ms(150, 900);
  int kills = 0;
  for (; kills < 10 && acked(dock).size() < kFiles; ++kills) {
    start_daemon();
    pause(std::chrono::milliseconds(delay_ms(rng)));
    daemon_->signal(SIGKILL);
    ASSERT_TRUE(daemon_->wait(10s));
    // The moment of truth: everything the station saw acknowledged has its record in the store.
    std::set<std::string> committed;
    for (const auto& r : store_records("recording")) {
      committed.insert(json::parse(r["listing"].get<std::string>())["uniqueId"].get<std::string>());
    }
    for (const auto& id : acked(dock)) {
      ASSERT_EQ(committed.count(id), 1u)
          << id << " was acknowledged but its record is not committed (kill " << kills + 1 << ")";
    }
  }
  EXPECT_GE(kills, 4);
  std::cout << "[ dock kills ] " << kills << " SIGKILLs, " << acked(dock).size() << " of " << kFiles
            << " files acknowledged before the last restart\n";
  start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return acked(dock).size() >= kFiles; }, 120s))
      << acked(dock).size() << " acked\n"
      << daemon_->stderr_text();
  ASSERT_TRUE(collector_->wait_until([&] { return records("recording").size() >= kFiles; }, 30s));
  pause(1s);
  stop_daemon();

  std::map<std::string, int> per_file;
  for (const auto& r : store_records("recording")) {
    ++per_file[json::parse(r["listing"].get<std::string>())["uniqueId"].get<std::string>()];
  }
  EXPECT_EQ(per_file.size(), kFiles);
  for (const auto& [id, n] : per_file) {
    EXPECT_EQ(n, 1) << id << " collected " << n << " times across " << kills << " kills";
  }
  // Whatever reached the subscriber is the committed set (redeliveries carry the same id).
  std::set<std::string> delivered;
  for (const auto& r : records("recording")) {
    delivered.insert(r["id"].get<std::string>());
  }
  EXPECT_EQ(delivered.size(), kFiles);
}

// The station unreachable for a while (restarts with a 3 s outage, connections refused): the adapter says so
// once per outage as a device_status record, recovers by itself with backoff, and collects everything once.
TEST_F(DockIntegration, AnUnreachableStationIsReportedAndRecoveredWithoutLoss) {
  constexpr std::size_t kFiles = 8;
  Dock& dock =
      add_dock("dock-1", {"--files", std::to_string(kFiles), "--file-kb", "4000", "--file-interval-s", "0.5",
                          "--restart-every-s", "2", "--restart-outage-s", "3", "--seed", "13"});
  write_config();
  start_daemon();
  ASSERT_TRUE(collector_->wait_until([&] { return acked(dock).size() >= kFiles; }, 90s))
      << acked(dock).size() << " acked\n"
      << daemon_->stderr_text();
  pause(1s);
  stop_daemon();
  int down = 0;
  int up_after_down = 0;
  for (const auto& r : records("device_status")) {
    if (r["device"] != "dock-1") {
      continue;
    }
    if (r["state"] == "disconnected") {
      ++down;
    } else if (r["state"] == "connected" && down > 0) {
      ++up_after_down;
    }
  }
  EXPECT_GE(truth(dock, "restart").size(), 1u);
  EXPECT_GE(down, 1) << "the outage is a device_status record";
  EXPECT_GE(up_after_down, 1) << "and so is the recovery";
  std::set<std::string> ids;
  for (const auto& r : records("recording")) {
    EXPECT_TRUE(ids.insert(r["unique_id"].get<std::string>()).second) << "collected twice";
  }
  EXPECT_EQ(ids.size(), kFiles);
}

TEST_F(DockIntegration, AWrongTokenIsAClearFaultAndNothingIsCollected) {
  Dock& dock = add_dock("dock-1", {"--files", "2", "--file-kb", "100"});
  std::ofstream(dir_ / "wrong.token") << "not-the-token\n";
  ::chmod((dir_ / "wrong.token").c_str(), 0600);
  write_config({}, "wrong.token");
  start_daemon();
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        for (const auto& r : records("device_status")) {
          if (r["device"] == "dock-1" && r["state"] == "fault") {
            return true;
          }
        }
        return false;
      },
      30s))
      << daemon_->stderr_text();
  stop_daemon();
  for (const auto& r : records("device_status")) {
    if (r["device"] == "dock-1" && r["state"] == "fault") {
      const std::string text = r["text"].get<std::string>();
      EXPECT_NE(text.find("401"), std::string::npos) << text;
      EXPECT_NE(text.find("wrong.token"), std::string::npos) << "names the token file: " << text;
      EXPECT_EQ(text.find("not-the-token"), std::string::npos) << "never the secret: " << text;
    }
  }
  EXPECT_NE(daemon_->stderr_text().find("dock-1"), std::string::npos);
  EXPECT_EQ(daemon_->stderr_text().find("not-the-token"), std::string::npos);
  EXPECT_TRUE(records("recording").empty());
  EXPECT_TRUE(acked(dock).empty());
}

// Links against a scenario whose ground truth is known: vehicles before, inside and between two officer
// stops (margins 0; every vehicle at least 2.5 s from a stop's edge, more than the whole-second listing
// and the clock corrections can move it). The second recorder's clock is 90 s fast.
TEST_F(DockIntegration, LinksAreExactlyTheVehicleRecordsInsideEachRecording) {
  if (kSanitized) {
    // Exact links need the scenario simulator's radar frames on time; the ASan-built simulator once sent
    // them late enough to split a vehicle's track into two records (CI, 2026-12-05), so an extra vehicle
    // record fell inside a span. The link rule itself is checked here in the plain build and in unit tests.
    GTEST_SKIP() << "exact links depend on the simulator's frame timing, which an ASan build cannot keep";
  }
  std::ofstream(dir_ / "scenario.yaml")
      << "radar: {port: 0}\n"
      << "camera: {port: 0, username: admin, password: s3cret}\n"
      << "dock: {port: 0, token: s3cret-token, recorder_clock_offsets: {BWC-00002: 90000}}\n"
      << "start_delay_ms: 5000\n"
      << "vehicles:\n"
      << "  - {at_ms: 0, plate: 浙A00001, lane: 1, speed_kmh: 130.0}\n"
      << "  - {at_ms: 5500, plate: 浙A00002, lane: 2, speed_kmh: 90.0}\n"
      << "  - {at_ms: 7000, plate: 浙A00003, lane: 1, speed_kmh: 140.0}\n"
      << "  - {at_ms: 12500, plate: 浙A00004, lane: 1, speed_kmh: 90.0}\n"
      << "  - {at_ms: 17500, plate: 浙A00005, lane: 2, speed_kmh: 150.0, camera: false}\n"
      << "  - {at_ms: 18500, plate: 浙A00006, lane: 1, speed_kmh: 95.0}\n"
      << "  - {at_ms: 24000, plate: 浙A00007, lane: 2, speed_kmh: 100.0}\n"
      << "stops:\n"
      << "  - {at_ms: 3000, duration_ms: 6500, officer_id: '330102198801010011', officer_name: 王伟,"
      << " recorder: BWC-00001, important: true, dock_after_ms: 1000, bytes: 400000}\n"
      << "  - {at_ms: 15000, duration_ms: 6000, officer_id: '330102199003150024', officer_name: 李娜,"
      << " recorder: BWC-00002, important: false, dock_after_ms: 1000, bytes: 300000}\n";
  Process sim({binary("tools/sim/checkpoint-sim"), "scenario", (dir_ / "scenario.yaml").string(),
               "--ground-truth", (dir_ / "truth.jsonl").string()},
              dir_ / "scenario");
  ASSERT_TRUE(sim.wait_for_stdout_line("dock ", 20s)) << sim.stderr_text();
  const auto port_of = [&](const std::string& what) {
    std::istringstream out(sim.stdout_text());
    for (std::string line; std::getline(out, line);) {
      if (line.rfind(what + " ", 0) == 0) {
        return line.substr(what.size() + 1);
      }
    }
    return std::string();
  };
  std::ofstream(dir_ / "cam.secret") << "s3cret";
  ::chmod((dir_ / "cam.secret").c_str(), 0600);
  auto config = CheckpointdConfig::minimal(dir_.path(), broker_->uri());
  config.set_yaml("correlation.lanes", "[{lane: 1, limit_kmh: 100}, {lane: 2, limit_kmh: 120}]")
      .set("validity.clock_sync", "assume")
      .set("links.margin_before_s", 0)
      .set("links.margin_after_s", 0);
  // A track closes after 1.5 s without its target, not 400 ms: under a loaded CI machine the simulator once
  // sent a vehicle's frames late enough to split its track into two records (ctest -j3, 2026-12-07). The
  // vehicles of a lane here are at least 5.5 s apart, so the longer wait merges nothing.
  config.add_radar("radar-1", port_of("radar")).calibration("C", "2099-01-01").set("track_timeout_ms", 1500);
  config.add_camera("cam-1", "http://127.0.0.1:" + port_of("camera"), dir_ / "cam.secret");
  config.add_dock("dock-1", "http://127.0.0.1:" + port_of("dock"), dir_ / "dock.token")
      .set("poll_interval_ms", 300);
  config.write(dir_ / "c.yaml");
  start_daemon();

  // Ground truth: vehicles (time of the peak, UTC) and stops (true span, UTC).
  const auto truth_lines = [&] {
    std::vector<json> out;
    std::ifstream in(dir_ / "truth.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (in.eof()) {
        break;  // a last line without its newline: the simulator is still writing it
      }
      out.push_back(json::parse(line));
    }
    return out;
  };
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        std::size_t stops = 0;
        std::size_t vehicles = 0;
        for (const auto& t : truth_lines()) {
          (t.contains("stop") ? stops : vehicles) += 1;
        }
        return stops == 2 && vehicles == 7 && records("recording").size() == 2;
      },
      90s))
      << daemon_->stderr_text();
  pause(3s);  // the last vehicle's records and any late link records
  stop_daemon();

  // Which vehicle each record is: by plate when the camera read it, else by speed (radar only).
  std::map<std::string, std::string> record_of_plate;
  std::map<std::string, std::string> type_of;
  for (const std::string type : {"passage", "speeding", "speed_measurement", "plate_read"}) {
    for (const auto& r : records(type)) {
      const std::string key = r.contains("plate") ? r["plate"].get<std::string>()
                                                  : "speed:" + std::to_string(r["speed_dkmh"].get<int>());
      EXPECT_EQ(record_of_plate.count(key), 0u) << key << " recorded twice";
      record_of_plate[key] = r["id"].get<std::string>();
      type_of[r["id"].get<std::string>()] = type;
    }
  }
  std::map<std::string, std::set<std::string>> expected;  // recording uniqueId -> record ids
  std::vector<json> vehicles;
  std::vector<json> stops;
  for (const auto& t : truth_lines()) {
    (t.contains("stop") ? stops : vehicles).push_back(t);
  }
  for (const auto& s : stops) {
    auto& ids = expected[s["uniqueId"].get<std::string>()];
    for (const auto& v : vehicles) {
      const std::int64_t t = v["time_ms"].get<std::int64_t>();
      if (t >= s["start_ms"].get<std::int64_t>() && t <= s["end_ms"].get<std::int64_t>()) {
        const std::string plate = v["plate"].get<std::string>();
        const bool camera = v.value("camera_sent", true);
        const std::string key = camera ? plate : "speed:" + std::to_string(v["dkmh"].get<int>());
        ASSERT_EQ(record_of_plate.count(key), 1u) << key;
        ids.insert(record_of_plate[key]);
      }
    }
    EXPECT_EQ(ids.size(), 2u) << "the scenario puts two vehicles in each stop";
  }

  const auto recs = records("recording");
  ASSERT_EQ(recs.size(), 2u);
  std::set<std::pair<std::string, std::string>> expected_pairs;
  for (const auto& r : recs) {
    const std::string uid = r["unique_id"].get<std::string>();
    ASSERT_EQ(expected.count(uid), 1u) << uid;
    std::set<std::string> got;
    for (const auto& id : r["links"]) {
      got.insert(id.get<std::string>());
    }
    EXPECT_EQ(got, expected[uid]) << "links of " << uid;
    for (const auto& id : expected[uid]) {
      expected_pairs.emplace(r["id"].get<std::string>(), id);
    }
    if (r["recorder_id"] == "BWC-00002") {
      EXPECT_TRUE(r["recorder_clock_off"].get<bool>()) << r.dump();
      EXPECT_NEAR(r["clock"]["recorder_offset_ms"].get<double>(), 90000.0, 2500.0);
    }
  }
  // One link record per (recording, vehicle record) pair, naming both.
  std::set<std::pair<std::string, std::string>> link_pairs;
  std::size_t speeding_links = 0;
  std::size_t speeding_met = 0;
  for (const auto& l : records("link")) {
    EXPECT_TRUE(link_pairs.emplace(l["recording"].get<std::string>(), l["record"].get<std::string>()).second);
    EXPECT_EQ(l["record_type"], type_of[l["record"].get<std::string>()]);
    // GA/T 832's "one panorama plus video", said by each link of a speeding record: the stops are videos
    // holding the vehicle's time (margins 0), so it is met with a panorama and a measured station clock.
    if (l["record_type"] != "speeding") {
      EXPECT_FALSE(l.contains("panoramas_with_video")) << l.dump();
      continue;
    }
    ++speeding_links;
    const json& v = l["panoramas_with_video"];
    EXPECT_EQ(v["video"], true) << l.dump();
    EXPECT_EQ(v["covers_record_time"], true) << l.dump();
    EXPECT_EQ(v["met"], v["panoramas"].get<int>() >= 1 && v["recording_time_reliable"] == true) << l.dump();
    speeding_met += v["met"] == true ? 1 : 0;
  }
  // 浙A00003 (140 km/h) inside BWC-00001's stop, whose clock the station measured: met.
  EXPECT_GT(speeding_met, 0u);
  EXPECT_GT(speeding_links, 0u)
      << "the scenario's 130 and 140 km/h vehicles in lane 1 (limit 100) are speeding";
  EXPECT_EQ(link_pairs, expected_pairs);

  // The evidence sheet of that speeding record, from the gateway's store, lists its link and the check.
  ASSERT_EQ(record_of_plate.count("浙A00003"), 1u);
  Process sheet(
      {binary("tools/checkpointctl/checkpointctl"), "sheet", "--pubkey", (dir_ / "gateway.pub.pem").string(),
       "--media", (dir_ / "media").string(), "--store", (dir_ / "store.db").string(), "--id",
       record_of_plate["浙A00003"], "-o", (dir_ / "sheet.pdf").string()},
      dir_ / "sheet");
  ASSERT_EQ(sheet.wait(60s), 0) << sheet.stderr_text();
  EXPECT_NE(sheet.stdout_text().find("1 linked recordings"), std::string::npos) << sheet.stdout_text();
  Process text({"/usr/bin/pdftotext", "-enc", "UTF-8", (dir_ / "sheet.pdf").string(), "-"},
               dir_ / "pdftotext");
  ASSERT_EQ(text.wait(60s), 0) << text.stderr_text();
  EXPECT_NE(text.stdout_text().find("Linked body-worn recordings"), std::string::npos) << text.stdout_text();
  EXPECT_NE(text.stdout_text().find("符合 met"), std::string::npos) << text.stdout_text();
  sim.signal(SIGTERM);
}

// Issue 12, defect 5: a station that lists new files endlessly (every page full of files never seen, and
// more than `limit` asked for) grew the daemon by 400 MB in 30 s with 43 000 files queued. Files taken from
// a station are now bounded (max_pending_files): the rest wait on it, the cursor before them. Under a
// 12 s flood the daemon's RSS, its open dock-ledger rows and its store stay bounded, and afterwards every
// file the station ever listed is collected, recorded and acknowledged exactly once.
TEST_F(DockIntegration, AStationListingNewFilesEndlesslyIsBoundedAndEveryFileIsCollected) {
  constexpr int kMaxPending = 200;
  constexpr auto kFlood = 12s;
  Dock& dock = add_dock("dock-1", {"--flood-s", "12", "--flood-page", "500", "--ignore-limit", "--file-bytes",
                                   "2048", "--seed", "12"});
  write_config({{"list_limit", 100}, {"max_parallel_downloads", 4}, {"max_pending_files", kMaxPending}});
  start_daemon();
  const fs::path db = dir_ / "store.db";
  const auto store_bytes = [&] {
    std::int64_t n = 0;
    for (const char* name : {"store.db", "store.db-wal"}) {
      std::error_code ec;
      const auto size = fs::file_size(dir_ / name, ec);
      n += ec ? 0 : static_cast<std::int64_t>(size);
    }
    return n;
  };
  const auto open_rows = [&] {
    return store_query(db, "SELECT count(*) FROM dock_files WHERE state IN ('pending', 'recorded')");
  };
  // The flood starts with the first listing; the baseline is taken once the first file is acknowledged.
  ASSERT_TRUE(collector_->wait_until([&] { return !acked(dock).empty(); }, 30s)) << daemon_->stderr_text();
  const long rss_base = rss_kb(daemon_->pid());
  const std::int64_t store_base = store_bytes();
  const long long records_base = store_query(db, "SELECT count(*) FROM records");
  long rss_peak = rss_base;
  long long open_peak = 0;
  const auto flood_end = std::chrono::steady_clock::now() + kFlood;
  while (std::chrono::steady_clock::now() < flood_end) {
    rss_peak = std::max(rss_peak, rss_kb(daemon_->pid()));
    open_peak = std::max(open_peak, open_rows());
    pause(200ms);
  }
  const std::int64_t store_growth = store_bytes() - store_base;
  const long long records_during = store_query(db, "SELECT count(*) FROM records") - records_base;
  const std::size_t listed = truth(dock, "file").size();
  std::printf(
      "[ dock flood ] %zu files listed in %lld s, %lld records during the flood; RSS %ld -> peak %ld kB "
      "(+%ld kB); open ledger rows peak %lld (bound %d); store +%lld bytes (%lld per record)\n",
      listed, static_cast<long long>(kFlood.count()), records_during, rss_base, rss_peak, rss_peak - rss_base,
      open_peak, kMaxPending, static_cast<long long>(store_growth),
      records_during > 0 ? static_cast<long long>(store_growth) / records_during : 0LL);
  EXPECT_GT(open_peak, kMaxPending / 2) << "the flood never reached the bound: not a flood";
  ASSERT_LE(open_peak, kMaxPending) << "files taken beyond max_pending_files";
  if (!kSanitized) {
    // Nominal RSS is near 20-30 MB; the open files (at most 200 entries of ~5 KB) and the downloads add
    // a few MB. Without the bound this grew by hundreds of MB.
    ASSERT_LE(rss_peak - rss_base, 32 * 1024) << "daemon RSS grew under the flood";
  }
  // The store grows by the records of the files collected (each carries its listing entry, ~18 KB per
  // record with the WAL measured), not by what the station merely listed.
  ASSERT_LE(store_growth, records_during * 24 * 1024 + (8 << 20)) << "store grew beyond its records";

  // After the flood: every file listed is collected once, recorded and acknowledged with its SHA-256.
  std::map<std::string, std::string> expected;
  for (const auto& f : truth(dock, "file")) {
    expected[f["uniqueId"].get<std::string>()] = f["sha256"].get<std::string>();
  }
  ASSERT_TRUE(collector_->wait_until([&] { return dock_acks(dock.truth).size() >= expected.size(); }, 90s))
      << dock_acks(dock.truth).size() << " of " << expected.size() << " acknowledged\n"
      << daemon_->stderr_text();
  EXPECT_EQ(dock_acks(dock.truth), expected);
  // The station's ack answer comes before the ledger row is marked: wait for the last few.
  EXPECT_TRUE(collector_->wait_until([&] { return open_rows() == 0; }, 10s)) << open_rows() << " still open";
  stop_daemon();
  const auto recs = store_records("recording");
  std::set<std::string> recorded;
  for (const auto& r : recs) {
    EXPECT_TRUE(recorded.insert(r["unique_id"].get<std::string>()).second) << r["unique_id"] << " twice";
  }
  EXPECT_EQ(recorded.size(), expected.size());
  EXPECT_TRUE(store_records("recording_fault").empty());
}

}  // namespace
}  // namespace cpd::testing
