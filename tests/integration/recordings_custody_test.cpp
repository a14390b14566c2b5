// Recordings to central (docs/custody.md, "Recordings to central"), end to end with real parts: a dock
// simulator offering a 1 GiB body-worn recording, checkpointd collecting it and sending it to a real
// checkpoint-central over a real mosquitto, with the broker killed (no persistence) mid-transfer. The file
// must arrive whole and hash-checked, resumed rather than sent again from the start, and the gateway must
// take central's signed file receipt (and refuse a forged one).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "daemon/core/digest.h"
#include "daemon/core/encoding.h"
#include "daemon/core/file_transfer.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;

// SHA-256 of a file read here, independently of central's own check.
std::string sha256_of_file(const fs::path& path, std::uint64_t& bytes) {
  std::ifstream in(path, std::ios::binary);
  FileDigest digest;
  std::vector<char> buf(1 << 20);
  bytes = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    digest.update(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())));
    bytes += static_cast<std::uint64_t>(in.gcount());
  }
  return digest.finish().sha256;
}

class RecordingsCustodyTest : public CustodyFixture {
 protected:
  // checkpoint-sim dock with one generated file of `kib` KiB; returns its port; the sim's own SHA-256 of the
  // file (ground truth) once it is listed.
  std::uint16_t start_dock(std::uint64_t kib, int files = 1) {
    std::ofstream(dir_ / "dock.token") << "s3cret-token\n";
    ::chmod((dir_ / "dock.token").c_str(), 0600);
    dock_ = std::make_unique<Process>(
        std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "dock", "--port", "0", "--token",
                                 "s3cret-token", "--files", std::to_string(files), "--file-kb",
                                 std::to_string(kib), "--seed", "5", "--ground-truth",
                                 (dir_ / "dock.jsonl").string()},
        dir_ / "dock");
    auto line = dock_->wait_for_stdout_line("listening ", 20s);
    EXPECT_TRUE(line) << dock_->stderr_text();
    return line ? static_cast<std::uint16_t>(std::stoi(line->substr(10))) : 0;
  }

  std::string dock_device(std::uint16_t port) {
    return "  - id: dock-1\n    kind: recorder_dock\n    url: http://127.0.0.1:" + std::to_string(port) +
           "\n    token_file: " + (dir_ / "dock.token").string() +
           "\n    poll_interval_ms: 300\n    reconnect_initial_ms: 100\n    reconnect_max_ms: 1000\n";
  }

  std::string truth_sha256() {
    const auto all = truth_sha256s();
    return all.empty() ? std::string() : all.front();
  }

  std::vector<std::string> truth_sha256s() {
    std::ifstream in(dir_ / "dock.jsonl");
    std::string line;
    std::vector<std::string> out;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == "file") {
        out.push_back(j.value("sha256", ""));
      }
    }
    return out;
  }

  nlohmann::json gateway_files() {
    std::string out;
    if (ctl({"status", "--socket", (dir_ / "control.sock").string(), "--json"}, &out) != 0) {
      return {};
    }
    const auto j = nlohmann::json::parse(out, nullptr, false);
    if (!j.is_object() || !j.contains("custody") || !j["custody"].contains("recordings")) {
      return {};
    }
    return j["custody"]["recordings"];
  }

  std::unique_ptr<Process> dock_;
};

TEST_F(RecordingsCustodyTest, AOneGigabyteRecordingReachesCentralThroughABrokenLinkHashChecked) {
  constexpr std::uint64_t kKib = 1 << 20;  // 1 GiB
  constexpr std::uint64_t kBytes = kKib * 1024;
  start_radar(4, 1.0, 3);
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint16_t dock_port = start_dock(kKib);
  GatewayConfig gateway;
  gateway.control = true;
  gateway.custody_extra =
      "  recordings: {policy: all, rate_kib_s: 1048576, segment_kib: 1024, receipt_wait_ms: 2000}\n";
  gateway.extra_devices = dock_device(dock_port);
  write_gateway_config(gateway);
  CentralConfig central_config;
  central_config.feed_extra = "  max_file_mb: 2048\n";
  central_config.gaps_extra = "  file_stall_ms: 1500\n";
  central_config.metrics = true;
  write_central_config("central", central_config);
  ASSERT_EQ(central_enroll(), 0);
  std::unique_ptr<Process> central;
  std::uint16_t metrics_port = 0;
  start_central(central, "central", &metrics_port);
  auto daemon = start_daemon();

  const std::string sha = [&] {
    std::string s;
    wait_for_condition([&] { return !(s = truth_sha256()).empty(); }, 30s);
    return s;
  }();
  ASSERT_EQ(sha.size(), 64u);

  // Mid-transfer, central is frozen while the broker queues segments for it, then the broker is killed:
  // what it held (acknowledged to the gateway, not yet delivered) is gone.
  ASSERT_TRUE(wait_for_condition(
      [&] {
        return pg_int("SELECT coalesce(max(received_bytes), 0) FROM file_uploads") > 300LL * 1024 * 1024;
      },
      120s))
      << "central received " << pg_int("SELECT coalesce(max(received_bytes), 0) FROM file_uploads")
      << " bytes";
  // A file receipt signed by a key the gateway does not trust is refused before anything changes.
  const auto forger = Ed25519PrivateKey::generate();
  ASSERT_EQ(
      mosquitto_pub("checkpoint/gw/files/receipt",
                    filex::seal_file_receipt(forger, {"central-test", "gw", sha, kBytes, 1}), false, 10s),
      0);
  central->signal(SIGSTOP);
  const std::uint64_t sent_before = gateway_files().value("bytes_sent", std::uint64_t{0});
  wait_for_condition(
      [&] { return gateway_files().value("bytes_sent", std::uint64_t{0}) > sent_before + (40u << 20); }, 20s);
  broker_->process().signal(SIGKILL);
  broker_->process().wait(10s);
  central->signal(SIGCONT);
  pause(1000ms);
  broker_->start();

  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM file_uploads WHERE state = 'held'") == 1; }, 180s))
      << "state " << pg_int("SELECT count(*) FROM file_uploads") << " rows; received "
      << pg_int("SELECT coalesce(max(received_bytes), 0) FROM file_uploads");

  std::cout << "1 GiB recording held by central "
            << std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0).count()
            << " s after the dock started (download, upload, broker kill, repair)" << std::endl;
  // Central holds exactly the dock's bytes (hashed here again, independently of central's check).
  EXPECT_EQ(pg_int("SELECT bytes FROM media WHERE sha256 = '" + sha + "'"), static_cast<long long>(kBytes));
  std::uint64_t bytes = 0;
  EXPECT_EQ(sha256_of_file(dir_ / "central-media" / sha.substr(0, 2) / sha, bytes), sha);
  EXPECT_EQ(bytes, kBytes);
  EXPECT_EQ(pg_int("SELECT count(*) FROM file_segments"), 0);  // a held file keeps no segment rows
  EXPECT_FALSE(fs::exists(dir_ / "central-media" / "partial" / "gw" / (sha + ".part")));

  // The gateway took the real receipt, refused the forged one, and resumed rather than starting again.
  nlohmann::json files;
  ASSERT_TRUE(wait_for_condition(
      [&] {
        files = gateway_files();
        return files.is_object() && files.value("receipts_accepted", 0) >= 1;
      },
      30s))
      << files.dump();
  EXPECT_GE(files.value("receipts_refused", 0), 1) << files.dump();
  // The chain shows when central took the file: one recording_custody record with the receipt in it (the
  // file receipt arrives again with every fin; it is sealed once).
  const fs::path store_db = dir_ / "store.db";
  EXPECT_EQ(store_query(store_db, "SELECT count(*) FROM records WHERE type = 'recording_custody'"), 1);
  {
    Process q(
        {"/usr/bin/sqlite3", store_db.string(), "SELECT jws FROM records WHERE type = 'recording_custody'"},
        dir_ / "recording-custody");
    q.wait(10s);
    const nlohmann::json body = record_body(q.stdout_text().substr(0, q.stdout_text().find('\n')));
    EXPECT_EQ(body["sha256"], sha) << body.dump();
    EXPECT_EQ(body["size"], kBytes) << body.dump();
    EXPECT_EQ(body["central"], "central-test") << body.dump();
    EXPECT_GE(body["recording_seq"].get<std::uint64_t>(), 1u) << body.dump();
    EXPECT_EQ(body["receipt_sha256"], sha256_hex(body["receipt"].get<std::string>())) << body.dump();
  }
  EXPECT_GE(files.value("wants", 0), 1) << files.dump();  // central asked for what the broker lost
  // Sent again: what the broker lost (what it took while central was frozen, and what the gateway sent
  // before central subscribed again), never what central holds: the tail is not sent twice. A few segments
  // may race a want (asked for while they wait in central's queue, at most feed.queue_mb).
  const std::string metrics = http_get_body(metrics_port, "/metrics");
  const auto metric = [&](const std::string& name) {
    const auto pos = metrics.find("\n" + name + " ");
    return pos == std::string::npos ? -1.0 : std::stod(metrics.substr(pos + name.size() + 2));
  };
  // Twice: while the transfer is open (duplicate), or after the file is held (unexpected; so are fins of a
  // file sent whole whose receipt the gateway did not have yet).
  const double duplicates =
      metric("central_file_segments_duplicate_total") + metric("central_file_unexpected_total");
  std::cout << "the gateway sent " << files.value("bytes_sent", std::uint64_t{0}) << " bytes for " << kBytes
            << "; central received " << duplicates << " segments twice" << std::endl;
  EXPECT_GE(metric("central_file_segments_duplicate_total"), 0.0) << metrics;
  EXPECT_GE(metric("central_file_unexpected_total"), 0.0) << metrics;
  EXPECT_LE(duplicates, 32.0) << files.dump();
  EXPECT_EQ(files.value("pending", -1), 0) << files.dump();
  EXPECT_EQ(files.value("held", 0), 1) << files.dump();
  EXPECT_GE(pg_int("SELECT wants FROM file_uploads WHERE sha256 = '" + sha + "'"), 1);

  // Its hold (store.media_retention_days, at least a day) has not ended: the gateway keeps its copy (the
  // deletion once it has is EvidenceStore's unit test ARecordingIsUploadedAndDeletedOnlyWithItsFileReceipt).
  EXPECT_TRUE(fs::exists(dir_ / "media" / sha));

  // An operator asks the gateway for a recording it never had: the gateway answers abort, central records
  // it as not held (and stops asking).
  const std::string missing(64, 'd');
  ASSERT_EQ(central_cli({"files", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw",
                         "--request", missing}),
            0);
  EXPECT_TRUE(wait_for_condition(
      [&] {
        return pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + missing + "'") == "not_held";
      },
      20s))
      << pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + missing + "'");
  std::string listing;
  ASSERT_EQ(central_cli({"files", "--config", (dir_ / "central.yaml").string()}, &listing), 0);
  EXPECT_NE(listing.find(sha + " held 1073741824/1073741824"), std::string::npos) << listing;
  EXPECT_NE(listing.find(missing + " not_held"), std::string::npos) << listing;

  // Hostile file messages on the gateway's topics are refused, bounded and counted; none opens more than
  // feed.max_open_files transfers, and transfers the gateway never had end as not_held.
  const auto fake = [](char c) { return std::string(64, c); };
  const std::string base = "checkpoint/gw/file/";
  // Larger than feed.max_file_mb: no transfer.
  EXPECT_EQ(mosquitto_pub(base + fake('1') + "/init",
                          filex::init_json({fake('1'), 4ULL << 30, 1 << 20, "huge.mp4", 1}), false, 10s),
            0);
  // Five transfers opened at once: feed.max_open_files (4) of them are taken.
  for (char c : {'2', '3', '4', '5', '6'}) {
    EXPECT_EQ(mosquitto_pub(base + fake(c) + "/init", filex::init_json({fake(c), 8192, 4096, "x.mp4", 1}),
                            false, 10s),
              0);
  }
  // A segment whose bytes do not match its checksum, and one of a file nobody opened.
  const std::string segment(4096, 'z');
  EXPECT_EQ(mosquitto_pub(base + fake('2') + "/0/" + fake('f'), segment, false, 10s), 0);
  EXPECT_EQ(mosquitto_pub(base + fake('9') + "/0/" + sha256_hex(segment), segment, false, 10s), 0);
  // Garbage on the gateway's inputs.
  EXPECT_EQ(mosquitto_pub("checkpoint/gw/files/want", "{not json", false, 10s), 0);
  EXPECT_EQ(mosquitto_pub("checkpoint/gw/files/receipt", std::string(100000, 'A'), false, 10s), 0);
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM file_uploads WHERE sha256 ~ '^[2-6]{64}$'") == 4; }, 20s));
  EXPECT_EQ(pg_int("SELECT count(*) FROM file_uploads WHERE sha256 = '" + fake('1') + "'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM file_segments"), 0);
  // Stalled, they are asked for; the gateway does not hold them and says so.
  EXPECT_TRUE(wait_for_condition(
      [&] {
        return pg_int(
                   "SELECT count(*) FROM file_uploads WHERE state = 'not_held' AND sha256 ~ '^[2-6]{64}$'") ==
               4;
      },
      30s))
      << pg_.query("SELECT string_agg(state, ',') FROM file_uploads");
  files = gateway_files();
  EXPECT_GE(files.value("wants_refused", 0), 1) << files.dump();
  EXPECT_GE(files.value("receipts_refused", 0), 2) << files.dump();
  EXPECT_GE(files.value("aborts_sent", 0), 5) << files.dump();

  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0);
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(30s), 0);
}

// A file central asks for does not wait behind the file being sent: that one pauses once its segments in
// flight are PUBACKed, the asked-for file goes, then the paused one resumes where it stopped (not from byte
// 0, and nothing is sent twice).
TEST_F(RecordingsCustodyTest, AFileCentralAsksForOvertakesTheFileBeingSent) {
  constexpr std::uint64_t kKib = 2048;  // two files of 2 MiB, in segments of 64 KiB, at 256 KiB/s
  constexpr std::uint64_t kBytes = kKib * 1024;
  constexpr std::uint64_t kSegment = 64 * 1024;
  start_radar(4, 1.0, 7);
  const std::uint16_t dock_port = start_dock(kKib, 2);
  GatewayConfig gateway;
  gateway.control = true;
  gateway.custody_extra =
      "  recordings: {policy: all, rate_kib_s: 256, segment_kib: 64, receipt_wait_ms: 2000}\n";
  gateway.extra_devices = dock_device(dock_port);
  write_gateway_config(gateway);
  write_central_config();
  ASSERT_EQ(central_enroll(), 0);
  std::unique_ptr<Process> central;
  start_central(central);
  auto daemon = start_daemon();

  // Both recordings collected and waiting, one of them being sent.
  nlohmann::json files;
  ASSERT_TRUE(wait_for_condition(
      [&] {
        files = gateway_files();
        return files.is_object() && files.value("pending", 0) == 2 && files["sending"].is_string() &&
               files.value("bytes_sent", std::uint64_t{0}) >= 4 * kSegment;
      },
      60s))
      << files.dump() << "\n"
      << daemon->stderr_text();
  const std::vector<std::string> shas = truth_sha256s();
  ASSERT_EQ(shas.size(), 2u);
  const std::string first = files["sending"].get<std::string>();
  const std::string asked = first == shas[0] ? shas[1] : shas[0];
  ASSERT_EQ(central_cli({"files", "--config", (dir_ / "central.yaml").string(), "--gateway", "gw",
                         "--request", asked}),
            0);
  const auto state = [&](const std::string& sha) {
    return pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + sha + "'");
  };
  ASSERT_TRUE(wait_for_condition([&] { return state(asked) == "held"; }, 60s)) << state(asked) << "\n"
                                                                               << gateway_files().dump();
  // The asked-for file came first: the one being sent is still not whole at central.
  EXPECT_NE(state(first), "held");
  files = gateway_files();
  EXPECT_GE(files.value("pauses", 0), 1) << files.dump();
  EXPECT_NE(daemon->stderr_text().find("recording " + first + ": paused at byte "), std::string::npos)
      << daemon->stderr_text();

  ASSERT_TRUE(wait_for_condition([&] { return state(first) == "held"; }, 60s)) << state(first) << "\n"
                                                                               << gateway_files().dump();
  for (const std::string& sha : shas) {
    std::uint64_t bytes = 0;
    EXPECT_EQ(sha256_of_file(dir_ / "central-media" / sha.substr(0, 2) / sha, bytes), sha);
    EXPECT_EQ(bytes, kBytes);
  }
  // Resumed, not started again: each byte went once (a segment of slack for a want racing the pause).
  files = gateway_files();
  EXPECT_LE(files.value("bytes_sent", std::uint64_t{0}), 2 * kBytes + kSegment) << files.dump();
  EXPECT_GE(files.value("bytes_sent", std::uint64_t{0}), 2 * kBytes) << files.dump();
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0);
  central->signal(SIGTERM);
  EXPECT_EQ(central->wait(30s), 0);
}

// Scale-out: two instances on one shared subscription take the segments of one recording between them (all
// state in PostgreSQL and the shared media directory); one is SIGKILLed mid-transfer with segments in hand.
// The survivor and the gap repair end with the whole file, hash-checked.
TEST_F(RecordingsCustodyTest, TwoInstancesShareARecordingAndAKilledOneLosesNothing) {
  constexpr std::uint64_t kKib = 64 * 1024;  // 64 MiB in 256 segments of 256 KiB
  constexpr std::uint64_t kBytes = kKib * 1024;
  start_radar(4, 1.0, 5);
  const std::uint16_t dock_port = start_dock(kKib);
  GatewayConfig gateway;
  gateway.control = true;
  gateway.custody_extra =
      "  recordings: {policy: all, rate_kib_s: 8192, segment_kib: 256, receipt_wait_ms: 2000}\n";
  gateway.extra_devices = dock_device(dock_port);
  write_gateway_config(gateway);
  write_central_config();
  ASSERT_EQ(central_enroll(), 0);
  std::uint16_t port_a = 0;
  std::uint16_t port_b = 0;
  std::unique_ptr<Process> a;
  std::unique_ptr<Process> b;
  for (const auto& [name, port, proc] :
       {std::tuple{"central-a", &port_a, &a}, std::tuple{"central-b", &port_b, &b}}) {
    CentralConfig config;
    config.client_id = name;
    config.metrics = true;
    config.gaps_extra = "  file_stall_ms: 1500\n";
    write_central_config(name, config);
    start_central(*proc, name, port);
  }
  auto daemon = start_daemon();

  const auto segments = [](std::uint16_t port) {
    const std::string text = http_get_body(port, "/metrics");
    const std::string name = "\ncentral_file_segments_total ";
    const auto pos = text.find(name);
    return pos == std::string::npos ? -1.0 : std::stod(text.substr(pos + name.size()));
  };
  // Both take segments (the broker splits the feed), then b dies with what it holds.
  ASSERT_TRUE(wait_for_condition([&] { return segments(port_a) > 5 && segments(port_b) > 5; }, 90s))
      << "a " << segments(port_a) << " b " << segments(port_b) << "\n"
      << daemon->stderr_text();
  b->signal(SIGKILL);
  b->wait(10s);
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM file_uploads WHERE state = 'held'") == 1; }, 90s))
      << "received " << pg_int("SELECT coalesce(max(received_bytes), 0) FROM file_uploads") << "\n"
      << a->stderr_text();
  const std::string sha = truth_sha256();
  std::uint64_t bytes = 0;
  EXPECT_EQ(sha256_of_file(dir_ / "central-media" / sha.substr(0, 2) / sha, bytes), sha);
  EXPECT_EQ(bytes, kBytes);
  EXPECT_EQ(pg_int("SELECT received_bytes FROM file_uploads WHERE sha256 = '" + sha + "'"),
            static_cast<long long>(kBytes));  // each segment counted once, whoever took it
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(30s), 0);
  a->signal(SIGTERM);
  EXPECT_EQ(a->wait(30s), 0);
}

}  // namespace
}  // namespace cpd::testing
