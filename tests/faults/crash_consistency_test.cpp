// Crash consistency under load (issue 5 part 1): while a generated scenario (radar, camera, officer stops on
// a dock) and a second dock with multi-MB files drive traffic, checkpointd is SIGKILLed at random moments
// and restarted; a subscriber that was there from the start must then hold every committed record, unbroken.
//
// CPD_FAULT_KILLS (default 30) sets the number of kills, CPD_FAULT_SEED (default: fixed) the randomness;
// `make faults` runs the long form (500 kills). The counts are printed as one "[ faults ]" line.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kEvidenceTopic = "checkpoint/gw/evidence";
constexpr const char* kMediaPrefix = "checkpoint/gw/media/";
constexpr const char* kDockToken = "fault-dock-token";

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    return fallback;
  }
  return std::stoull(v);
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return std::move(out).str();
}

// The store file as the daemon left it, read while no daemon runs (or, read-only, beside a running one).
struct StoreSnapshot {
  bool opened = false;
  std::string error;
  std::string quick_check;
  std::map<std::uint64_t, std::pair<std::string, std::string>> records;  // seq -> (id, jws)
  std::int64_t outbox = -1;
};

StoreSnapshot read_store(const fs::path& path, bool with_quick_check) {
  StoreSnapshot s;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    s.error = db != nullptr ? sqlite3_errmsg(db) : "open failed";
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 5000);
  const auto query = [&](const char* sql, auto on_row) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
      s.error = std::string(sql) + ": " + sqlite3_errmsg(db);
      sqlite3_finalize(stmt);
      return false;
    }
    int rc = SQLITE_ROW;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      on_row(stmt);
    }
    if (rc != SQLITE_DONE) {
      s.error = std::string(sql) + ": " + sqlite3_errmsg(db);
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE;
  };
  const auto text = [](sqlite3_stmt* st, int col) {
    const auto* p = sqlite3_column_text(st, col);
    return p != nullptr ? std::string(reinterpret_cast<const char*>(p)) : std::string();
  };
  bool ok = true;
  if (with_quick_check) {
    ok = query("PRAGMA quick_check", [&](sqlite3_stmt* st) { s.quick_check += text(st, 0); });
  }
  ok = ok && query("SELECT seq, id, jws FROM records ORDER BY seq", [&](sqlite3_stmt* st) {
         s.records[static_cast<std::uint64_t>(sqlite3_column_int64(st, 0))] = {text(st, 1), text(st, 2)};
       });
  ok = ok && query("SELECT COUNT(*) FROM outbox",
                   [&](sqlite3_stmt* st) { s.outbox = sqlite3_column_int64(st, 0); });
  s.opened = ok;
  sqlite3_close(db);
  return s;
}

// A scenario long enough to outlast the kills: a vehicle every 150-500 ms in either lane at speeds across
// every band (some seen by only one device), and an officer stop every ~12 s with a 1-3 MB recording.
std::string generate_scenario(std::mt19937_64& rng, std::int64_t duration_ms) {
  static const char* const kProvinces[] = {"浙", "沪", "苏", "皖", "京", "津", "粤", "鲁", "豫", "川"};
  std::uniform_int_distribution<int> gap(150, 500);
  std::uniform_int_distribution<int> lane(1, 2);
  std::uniform_real_distribution<double> speed(50.0, 190.0);
  std::uniform_int_distribution<int> pct(0, 99);
  std::uniform_int_distribution<int> province(0, 9);
  std::uniform_int_distribution<int> letter(0, 25);
  std::uniform_int_distribution<std::int64_t> stop_bytes(1'000'000, 3'000'000);
  std::ostringstream y;
  y << "radar: {port: 0}\n"
    << "camera: {port: 0, username: admin, password: fault-secret, picture_kb: 24}\n"
    << "dock: {port: 0, token: " << kDockToken << ", station_id: DS-FAULT-1}\n"
    << "start_delay_ms: 1500\n"
    << "vehicles:\n";
  std::int64_t at = 0;
  for (int n = 0; at < duration_ms; ++n) {
    char plate[64];
    std::snprintf(plate, sizeof plate, "%s%c%05d", kProvinces[province(rng)], 'A' + letter(rng), n % 100000);
    y << "  - {at_ms: " << at << ", plate: " << plate << ", lane: " << lane(rng)
      << ", speed_kmh: " << speed(rng);
    const int p = pct(rng);
    if (p < 5) {
      y << ", camera: false";
    } else if (p < 10) {
      y << ", radar: false";
    }
    y << "}\n";
    at += gap(rng);
  }
  y << "stops:\n";
  int officer = 0;
  for (std::int64_t s = 2000; s + 4000 < duration_ms; s += 12'000) {
    ++officer;
    char id[32];
    std::snprintf(id, sizeof id, "3301021988%08d", officer);
    y << "  - {at_ms: " << s << ", duration_ms: 3000, officer_id: '" << id << "', officer_name: 王伟"
      << ", recorder: BWC-" << (900 + officer % 50)
      << ", important: " << (officer % 2 == 0 ? "true" : "false")
      << ", dock_after_ms: 1000, bytes: " << stop_bytes(rng) << "}\n";
  }
  return y.str();
}

class CrashConsistency : public ::testing::Test {
 protected:
  void SetUp() override {
    pub_pem_ = make_gateway_key(dir_.path());
    broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
    broker_->start();
    // Both subscribers are there before the daemon's first start and stay to the end.
    collector_ = std::make_unique<MqttCollector>(broker_->uri(), std::vector<std::string>{"checkpoint/gw/#"});
    verify_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/checkpointctl/checkpointctl"), "verify", "--pubkey",
                                 pub_pem_.string(), "--mqtt", broker_->uri(), "--topic", kEvidenceTopic,
                                 "--from-start", "--seconds", "86400"},
        dir_ / "verify");
    // --from-start needs seq 1: the daemon may not start before the verifier's subscription stands.
    ASSERT_TRUE(verify_->wait_for_stderr_line("checkpointctl: subscribed to ", 20s))
        << verify_->stderr_text();
    std::ofstream(dir_ / "dock.token") << kDockToken << "\n";
    ::chmod((dir_ / "dock.token").c_str(), 0600);
    std::ofstream(dir_ / "cam.secret") << "fault-secret";
    ::chmod((dir_ / "cam.secret").c_str(), 0600);
  }

  void start_traffic(std::mt19937_64& rng, std::int64_t duration_ms) {
    std::ofstream(dir_ / "scenario.yaml") << generate_scenario(rng, duration_ms);
    scenario_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "scenario",
                                 (dir_ / "scenario.yaml").string(), "--ground-truth",
                                 (dir_ / "scenario-truth.jsonl").string()},
        dir_ / "scenario");
    ASSERT_TRUE(scenario_->wait_for_stdout_line("dock ", 20s)) << scenario_->stderr_text();
    // A second station with ground truth of every ack: a 3 MB file every 1.5 s.
    const std::uint64_t files = static_cast<std::uint64_t>(duration_ms / 1500) + 2;
    dock_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "dock", "--port", "0", "--token",
                                 kDockToken, "--ground-truth", (dir_ / "dock-truth.jsonl").string(),
                                 "--files", std::to_string(files), "--file-kb", "3000", "--file-interval-s",
                                 "1.5", "--seed", std::to_string(rng() % 100000)},
        dir_ / "dock");
    auto line = dock_->wait_for_stdout_line("listening ", 20s);
    ASSERT_TRUE(line) << dock_->stderr_text();
    const std::string dock_port = line->substr(10);

    const auto port_of = [&](const std::string& what) {
      std::istringstream out(scenario_->stdout_text());
      for (std::string l; std::getline(out, l);) {
        if (l.rfind(what + " ", 0) == 0) {
          return l.substr(what.size() + 1);
        }
      }
      return std::string();
    };
    auto config = CheckpointdConfig::minimal(dir_.path(), broker_->uri());
    config.set("store.reserve_mb", 16)
        .set("mqtt.reconnect_min_ms", 100)
        .set("mqtt.reconnect_max_ms", 1000)
        .set("correlation.max_wait_ms", 800)
        .set_yaml("correlation.lanes", "[{lane: 1, limit_kmh: 100}, {lane: 2, limit_kmh: 120}]")
        .set("validity.clock_sync", "assume");
    config.add_radar("radar-1", port_of("radar")).calibration("C", "2099-01-01").reconnect(100, 1000);
    config.add_camera("cam-1", "http://127.0.0.1:" + port_of("camera"), dir_ / "cam.secret")
        .reconnect(100, 1000);
    config.add_dock("dock-scn", "http://127.0.0.1:" + port_of("dock"), dir_ / "dock.token")
        .set("poll_interval_ms", 300)
        .reconnect(100, 1000);
    config.add_dock("dock-gt", "http://127.0.0.1:" + dock_port, dir_ / "dock.token")
        .set("poll_interval_ms", 300)
        .reconnect(100, 1000)
        .set("max_parallel_downloads", 2);
    config.write(dir_ / "c.yaml");
  }

  void start_daemon() {
    daemon_ = std::make_unique<Process>(
        std::vector<std::string>{binary("daemon/app/checkpointd"), "--config", (dir_ / "c.yaml").string()},
        dir_ / ("checkpointd-" + std::to_string(++daemon_runs_)));
  }

  // The daemon logs "running" once its SIGTERM handler is in place and its devices are started.
  bool wait_running(std::chrono::milliseconds timeout) {
    return collector_->wait_until(
        [&] { return daemon_->stderr_text().find(" running ") != std::string::npos; }, timeout);
  }

  // uniqueIds the second station saw acknowledged.
  std::set<std::string> acked() const {
    std::set<std::string> ids;
    for (const auto& [id, sha256] : dock_acks(dir_ / "dock-truth.jsonl")) {
      ids.insert(id);
    }
    return ids;
  }

  // After a kill, before the restart: the store opens, is sound, its seqs run 1..N, and every file the
  // second station saw acknowledged has its recording record committed.
  void check_after_kill(int kill) {
    const auto s = read_store(dir_ / "store.db", true);
    ASSERT_TRUE(s.opened) << "kill " << kill << ": " << s.error;
    ASSERT_EQ(s.quick_check, "ok") << "kill " << kill;
    if (!s.records.empty()) {
      ASSERT_EQ(s.records.rbegin()->first, s.records.size()) << "kill " << kill << ": a seq gap in the store";
    }
    std::set<std::string> committed;
    for (const auto& [seq, rec] : s.records) {
      const json body = record_body(rec.second);
      if (body.value("type", "") == "recording" && body.value("device", "") == "dock-gt") {
        committed.insert(body["unique_id"].get<std::string>());
      }
    }
    const auto a = acked();
    for (const auto& id : a) {
      ++ack_checks_;
      ASSERT_EQ(committed.count(id), 1u)
          << "kill " << kill << ": " << id << " was acknowledged but its record is not committed";
    }
    acked_max_ = std::max(acked_max_, a.size());
  }

  TempDir dir_;
  fs::path pub_pem_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<MqttCollector> collector_;
  std::unique_ptr<Process> verify_;
  std::unique_ptr<Process> scenario_;
  std::unique_ptr<Process> dock_;
  std::unique_ptr<Process> daemon_;
  int daemon_runs_ = 0;
  std::size_t ack_checks_ = 0;
  std::size_t acked_max_ = 0;
};

TEST_F(CrashConsistency, RandomKillsUnderLoadLoseNothingAndBreakNothing) {
  const int kills_wanted = static_cast<int>(env_number("CPD_FAULT_KILLS", 30));
  const std::uint64_t seed = env_number("CPD_FAULT_SEED", 20261127);
  std::mt19937_64 rng(seed);
  // Each cycle is up to ~7 s of running plus a restart: the traffic outlasts the kills.
  start_traffic(rng, static_cast<std::int64_t>(kills_wanted) * 4000 + 20'000);
  if (HasFatalFailure()) {
    return;
  }

  // Kill moments: every sixth cycle within 200 ms of the start (start-up: store open, recovery, first
  // connects), a sixth during a graceful shutdown (SIGTERM, then SIGKILL 0-80 ms later), the rest uniform
  // over 0-7 s (the camera holds its events until its clock offset is measured, so matched vehicles need the
  // longer runs).
  std::uniform_int_distribution<int> early_ms(0, 200);
  std::uniform_int_distribution<int> steady_ms(0, 7000);
  std::uniform_int_distribution<int> shutdown_ms(0, 80);
  int kills = 0;
  int early = 0;
  int in_shutdown = 0;
  int exited_before_kill = 0;
  for (int cycle = 1; kills < kills_wanted; ++cycle) {
    start_daemon();
    const int k = cycle % 6;  // the moment within each kind is random
    if (k == 0) {
      pause(std::chrono::milliseconds(early_ms(rng)));
      ++early;
    } else if (k == 1) {
      // SIGTERM once the daemon handles it (before that it is an ordinary kill), then SIGKILL mid-shutdown.
      wait_running(5s);
      pause(std::chrono::milliseconds(steady_ms(rng) / 2));
      daemon_->signal(SIGTERM);
      pause(std::chrono::milliseconds(shutdown_ms(rng)));
    } else {
      pause(std::chrono::milliseconds(steady_ms(rng)));
    }
    if (daemon_->running()) {
      daemon_->signal(SIGKILL);
      in_shutdown += k == 1 ? 1 : 0;
      ++kills;
    } else {
      ++exited_before_kill;  // a graceful stop finished first: fine, but not a kill
    }
    const auto rc = daemon_->wait(10s);
    ASSERT_TRUE(rc) << "cycle " << cycle << ": the daemon did not die";
    ASSERT_TRUE(*rc == 128 + SIGKILL || *rc == 0) << "cycle " << cycle << ": exit " << *rc << "\n"
                                                  << daemon_->stderr_text();
    check_after_kill(kills);
    if (HasFatalFailure()) {
      return;
    }
  }

  // The end: traffic stops, one last run drains the outbox, then a graceful stop (which drains up to its
  // stop record) leaves nothing unforwarded.
  scenario_->signal(SIGTERM);
  dock_->signal(SIGTERM);
  scenario_->wait(10s);
  dock_->wait(10s);
  start_daemon();
  ASSERT_TRUE(wait_running(20s)) << daemon_->stderr_text();
  // Connected first: a SIGTERM while the first connect is in flight stops without forwarding (by design:
  // a down broker must not hold up a shutdown), leaving the start record for the next run.
  ASSERT_TRUE(collector_->wait_until(
      [&] { return daemon_->stderr_text().find("mqtt: connected") != std::string::npos; }, 20s))
      << daemon_->stderr_text();
  ASSERT_TRUE(collector_->wait_until(
      [&] {
        const auto s = read_store(dir_ / "store.db", false);
        return s.opened && s.outbox == 0 && !s.records.empty();
      },
      120s))
      << daemon_->stderr_text();
  daemon_->signal(SIGTERM);
  ASSERT_EQ(daemon_->wait(30s), 0) << daemon_->stderr_text();
  const auto store = read_store(dir_ / "store.db", true);
  ASSERT_TRUE(store.opened) << store.error;
  ASSERT_EQ(store.quick_check, "ok");
  EXPECT_EQ(store.outbox, 0) << "a clean stop with the broker up leaves nothing unforwarded";
  ASSERT_FALSE(store.records.empty());
  const std::uint64_t n = store.records.rbegin()->first;
  EXPECT_EQ(n, store.records.size()) << "seq gap in the store";
  ASSERT_TRUE(
      collector_->wait_until([&] { return collector_->count(kEvidenceTopic) >= store.records.size(); }, 30s));
  pause(1s);  // late redeliveries

  // What the subscriber holds, in arrival order.
  const auto messages = collector_->messages();
  std::map<std::uint64_t, std::string> received;  // seq -> jws
  std::map<std::string, std::string> media;       // sha256 -> payload hash
  std::size_t duplicates = 0;
  std::size_t bad_duplicates = 0;
  std::size_t undecodable = 0;
  ChainVerifier chain(Ed25519PublicKey::from_pem(file_bytes(pub_pem_)));
  chain.expect_from_start(true);
  std::size_t chain_failures = 0;
  std::string first_chain_failure;
  for (const auto& m : messages) {
    if (m.topic.rfind(kMediaPrefix, 0) == 0) {
      media[m.topic.substr(std::string(kMediaPrefix).size())] = sha256_hex(m.payload);
      continue;
    }
    if (m.topic != kEvidenceTopic) {
      continue;
    }
    const auto v = chain.feed(m.payload);
    if (!v.ok && !v.duplicate) {
      if (chain_failures++ == 0) {
        first_chain_failure = "seq " + std::to_string(v.seq) + ": " + v.reason;
      }
    }
    json body;
    try {
      body = record_body(m.payload);
    } catch (const std::exception&) {
      ++undecodable;
      continue;
    }
    const auto seq = body.value("seq", std::uint64_t{0});
    auto [it, inserted] = received.emplace(seq, m.payload);
    if (!inserted) {
      ++duplicates;
      if (it->second != m.payload) {
        ++bad_duplicates;  // same seq, other bytes: a fork of the chain
        ADD_FAILURE() << "seq " << seq << " arrived twice with different bytes";
      }
    }
  }

  std::size_t lost = 0;
  std::size_t altered = 0;
  std::size_t media_checked = 0;
  std::size_t media_missing = 0;
  std::size_t recordings_checked = 0;
  std::map<std::string, std::size_t> by_type;
  // Work a kill interrupted must not be done twice: one recording per station file, one link per pair.
  std::map<std::string, std::size_t> recordings_of_file;
  std::map<std::string, std::size_t> links_of_pair;
  for (const auto& [seq, rec] : store.records) {
    const auto it = received.find(seq);
    if (it == received.end()) {
      if (lost++ < 10) {
        ADD_FAILURE() << "committed seq " << seq << " (" << rec.first << ") never arrived";
      }
      continue;
    }
    if (it->second != rec.second) {
      ++altered;
      ADD_FAILURE() << "seq " << seq << " arrived with other bytes than committed";
      continue;
    }
    const json body = record_body(rec.second);
    EXPECT_EQ(body.value("id", ""), rec.first) << "seq " << seq;
    ++by_type[body.value("type", "?")];
    for (const auto& p : body.value("pictures", json::array())) {
      const std::string sha = p.value("sha256", "");
      ++media_checked;
      const auto m = media.find(sha);
      if (m == media.end() || m->second != sha) {
        if (media_missing++ < 10) {
          ADD_FAILURE() << "seq " << seq << ": picture " << sha
                        << (m == media.end() ? " never arrived" : " arrived with other bytes");
        }
      }
    }
    if (body.value("type", "") == "recording") {
      ++recordings_of_file[body.value("device", "") + "/" + body.value("unique_id", "")];
    }
    if (body.value("type", "") == "link") {
      ++links_of_pair[body.value("recording", "") + "/" + body.value("record", "")];
    }
    if (body.value("type", "") == "recording" && body.contains("stored")) {
      // Recordings stay on the gateway: the kept file must be whole.
      const fs::path kept = body["stored"].value("path", "");
      ++recordings_checked;
      EXPECT_TRUE(fs::exists(kept) && sha256_hex(file_bytes(kept)) == body.value("sha256", ""))
          << "seq " << seq << ": kept recording " << kept;
    }
  }
  std::size_t recorded_twice = 0;
  for (const auto& [file, count] : recordings_of_file) {
    recorded_twice += count - 1;
    EXPECT_EQ(count, 1u) << file << " recorded " << count << " times";
  }
  std::size_t linked_twice = 0;
  for (const auto& [pair, count] : links_of_pair) {
    linked_twice += count - 1;
  }
  std::size_t phantom = 0;
  for (const auto& [seq, jws] : received) {
    phantom += store.records.count(seq) == 0 ? 1 : 0;
  }
  std::size_t gaps = 0;  // seqs below the highest received that never arrived
  if (!received.empty()) {
    for (std::uint64_t s = 1; s < received.rbegin()->first; ++s) {
      gaps += received.count(s) == 0 ? 1 : 0;
    }
  }
  // The stored chain itself, in seq order.
  ChainVerifier stored_chain(Ed25519PublicKey::from_pem(file_bytes(pub_pem_)));
  stored_chain.expect_from_start(true);
  std::size_t stored_chain_failures = 0;
  for (const auto& [seq, rec] : store.records) {
    stored_chain_failures += stored_chain.feed(rec.second).ok ? 0 : 1;
  }
  // The independent subscriber: `checkpointctl verify --mqtt --from-start`, media topic included.
  verify_->signal(SIGTERM);
  const auto verify_rc = verify_->wait(20s);
  const std::string verify_out = verify_->stdout_text();

  std::ostringstream types;
  for (const auto& [t, c] : by_type) {
    types << " " << t << "=" << c;
  }
  std::cout << "[ faults ] seed " << seed << ": kills " << kills << " (" << early
            << " within 200 ms of start, " << in_shutdown << " during shutdown; " << exited_before_kill
            << " graceful stops beat the kill), runs " << daemon_runs_ << "\n"
            << "[ faults ] records committed " << store.records.size() << ", received distinct "
            << received.size() << ", lost " << lost << ", altered " << altered << ", phantom " << phantom
            << ", gaps " << gaps << ", duplicates " << duplicates << " (conflicting " << bad_duplicates
            << "), chain failures " << chain_failures << " (stored " << stored_chain_failures
            << "), undecodable " << undecodable << "\n"
            << "[ faults ] media checked " << media_checked << " (missing/bad " << media_missing
            << "), recordings kept and hashed " << recordings_checked << " (recorded twice " << recorded_twice
            << "), links " << links_of_pair.size() << " (linked twice " << linked_twice << ")"
            << ", dock files acked " << acked_max_ << " (ack-vs-store checks " << ack_checks_ << ")\n"
            << "[ faults ] types:" << types.str() << "\n"
            << "[ faults ] checkpointctl: " << verify_out;

  // CPD_FAULT_KEEP=DIR: keep this run's directory (logs, store, ground truth) for a look even when it passed.
  if (const char* keep = std::getenv("CPD_FAULT_KEEP"); keep != nullptr && *keep != '\0') {
    fs::copy(dir_.path(), keep, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  }
  EXPECT_GE(kills, kills_wanted);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(altered, 0u);
  EXPECT_EQ(phantom, 0u);
  EXPECT_EQ(gaps, 0u);
  EXPECT_EQ(bad_duplicates, 0u);
  EXPECT_EQ(undecodable, 0u);
  EXPECT_EQ(chain_failures, 0u) << first_chain_failure;
  EXPECT_EQ(stored_chain_failures, 0u);
  EXPECT_EQ(media_missing, 0u);
  EXPECT_EQ(linked_twice, 0u);
  EXPECT_EQ(chain.verified(), store.records.size());
  EXPECT_GT(acked_max_, 0u) << "the second station never saw an ack: the dock path was not exercised";
  EXPECT_GT(media_checked, 0u) << "no picture was named: the camera path was not exercised";
  EXPECT_EQ(verify_rc, std::optional<int>(0)) << verify_out << verify_->stderr_text();
  EXPECT_NE(verify_out.find("chain intact"), std::string::npos) << verify_out;
}

}  // namespace
}  // namespace cpd::testing
