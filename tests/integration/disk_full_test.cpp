// A full disk, for real: the store and the media on a 48 MiB tmpfs, a camera sending ~2 MB/s of pictures and
// a recorder dock offering a 500 KB file every 0.75 s, the disk filled to below the reserve. The daemon keeps
// running, raises the alarm (a device_status record for "storage" and the status topic), keeps committing
// evidence records (pictures counted as not stored), stops acknowledging dock files it cannot store (they
// wait on the station), never deletes anything, and resumes by itself when space returns: every dock file is
// then collected once and acknowledged only with its record committed. Needs root for the mount.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/integration/gateway_config.h"
#include "tests/integration/harness.h"

namespace cpd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class DiskFull : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root to mount a size-limited tmpfs";
    }
    disk_ = dir_ / "disk";
    fs::create_directories(disk_);
    ASSERT_EQ(::mount("tmpfs", disk_.c_str(), "tmpfs", 0, "size=48m"), 0) << std::strerror(errno);
    mounted_ = true;
  }
  void TearDown() override {
    daemon_.reset();
    if (mounted_) {
      ::umount2(disk_.c_str(), MNT_DETACH);
    }
  }

  TempDir dir_;
  fs::path disk_;
  bool mounted_ = false;
  std::unique_ptr<Process> daemon_;
};

TEST_F(DiskFull, MediaStopsAtTheReserveRecordsGoOnTheAlarmIsRaisedAndClearedAndNothingIsLost) {
  make_gateway_key(dir_.path());
  Mosquitto broker(dir_ / "broker");
  broker.start();
  MqttCollector collector(broker.uri(), {"checkpoint/gw/#"});
  std::ofstream(dir_ / "radar.yaml") << "radar: {port: 0}\ncamera: {port: 0}\nvehicles: []\n";
  Process radar({binary("tools/sim/checkpoint-sim"), "scenario", (dir_ / "radar.yaml").string()},
                dir_ / "radar");
  auto radar_line = radar.wait_for_stdout_line("radar ", 10s);
  ASSERT_TRUE(radar_line) << radar.stderr_text();
  Process camera({binary("tools/sim/checkpoint-sim"), "camera", "--port", "0", "--password", "secret",
                  "--rate", "5", "--picture-kb", "200", "--seed", "4"},
                 dir_ / "camera");
  auto camera_line = camera.wait_for_stdout_line("listening ", 10s);
  ASSERT_TRUE(camera_line) << camera.stderr_text();
  std::ofstream(dir_ / "cam.secret") << "secret";
  ::chmod((dir_ / "cam.secret").c_str(), 0600);
  constexpr int kDockFiles = 24;
  Process dock({binary("tools/sim/checkpoint-sim"), "dock", "--port", "0", "--token", "disk-dock-token",
                "--ground-truth", (dir_ / "dock-truth.jsonl").string(), "--files", std::to_string(kDockFiles),
                "--file-kb", "500", "--file-interval-s", "0.75", "--seed", "5"},
               dir_ / "dock");
  auto dock_line = dock.wait_for_stdout_line("listening ", 10s);
  ASSERT_TRUE(dock_line) << dock.stderr_text();
  std::ofstream(dir_ / "dock.token") << "disk-dock-token\n";
  ::chmod((dir_ / "dock.token").c_str(), 0600);
  const auto acked = [&] { return dock_acks(dir_ / "dock-truth.jsonl"); };
  auto config = CheckpointdConfig::minimal(dir_.path(), broker.uri());
  config.set("store.path", (disk_ / "store.db").string())
      .set("store.reserve_mb", 10)
      .set("correlation.max_wait_ms", 200)
      .set("validity.clock_sync", "assume");
  config.add_radar("radar-1", radar_line->substr(6)).calibration("C", "2099-01-01");
  config.add_camera("cam-1", "http://127.0.0.1:" + camera_line->substr(10), dir_ / "cam.secret");
  config.add_dock("dock-1", "http://127.0.0.1:" + dock_line->substr(10), dir_ / "dock.token")
      .set("poll_interval_ms", 300)
      .reconnect(100, 1000);
  config.write(dir_ / "c.yaml");
  daemon_ = std::make_unique<Process>(
      std::vector<std::string>{binary("daemon/app/checkpointd"), "--config", (dir_ / "c.yaml").string()},
      dir_ / "checkpointd");
  const auto evidence = [&](const std::vector<std::string>& types) {
    return records_of(collector, "checkpoint/gw/evidence", types);
  };
  const auto storage_status = [&](const std::string& state) {
    for (const auto& r : evidence({"device_status"})) {
      if (r["device"] == "storage" && r["state"] == state) {
        return r;
      }
    }
    return json();
  };
  ASSERT_TRUE(collector.wait_until([&] { return evidence({"plate_read"}).size() >= 3; }, 30s))
      << daemon_->stderr_text();

  // Fill the disk to 4 MiB above the 10 MiB reserve: the camera's pictures cross the line within seconds.
  const auto free_bytes = [&] {
    struct statvfs st {};
    ::statvfs(disk_.c_str(), &st);
    return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  };
  {
    std::ofstream filler(disk_ / "filler", std::ios::binary);
    const std::string block(1 << 20, 'x');
    while (free_bytes() > (14u << 20)) {
      filler.write(block.data(), static_cast<std::streamsize>(block.size()));
      filler.flush();
    }
  }
  // The store's own files (the records may use the reserve: that is what it is for).
  const auto store_bytes = [&] {
    std::int64_t n = 0;
    for (const char* name : {"store.db", "store.db-wal", "store.db-shm"}) {
      std::error_code ec;
      const auto size = fs::file_size(disk_ / name, ec);
      n += ec ? 0 : static_cast<std::int64_t>(size);
    }
    return n;
  };
  const std::int64_t store_at_fill = store_bytes();
  ASSERT_TRUE(collector.wait_until([&] { return !storage_status("warning").is_null(); }, 30s))
      << daemon_->stderr_text();
  const json alarm = storage_status("warning");
  EXPECT_NE(alarm["text"].get<std::string>().find("kept for evidence records"), std::string::npos)
      << alarm.dump();
  // Evidence records go on being committed, naming the pictures that could not be stored.
  const std::uint64_t alarm_seq = alarm["seq"].get<std::uint64_t>();
  const auto reads_after = [&](std::uint64_t seq, bool with_missing) {
    std::size_t n = 0;
    for (const auto& r : evidence({"plate_read"})) {
      if (r["seq"].get<std::uint64_t>() > seq && (r["missing_pictures"].empty() != with_missing)) {
        ++n;
      }
    }
    return n;
  };
  ASSERT_TRUE(collector.wait_until([&] { return reads_after(alarm_seq, true) >= 5; }, 30s))
      << daemon_->stderr_text();
  // The status topic carries the alarm too (published at once on a change, and every 10 s).
  ASSERT_TRUE(collector.wait_until(
      [&] {
        for (const auto& p : collector.payloads("checkpoint/gw/status")) {
          const auto j = json::parse(p, nullptr, false);
          if (!j.is_discarded() && j.contains("storage") && j["storage"].value("state", "") == "warning") {
            return true;
          }
        }
        return false;
      },
      5s));
  EXPECT_TRUE(daemon_->running());

  // The dock's downloads stop at the reserve: a warning names the disk, and no file is acknowledged while
  // the disk stays full (a download past its last chunk when the disk filled may still finish: hence the
  // settle time before the count is taken).
  const auto dock_warning = [&] {
    for (const auto& r : evidence({"device_status"})) {
      if (r["device"] == "dock-1" && r["state"] == "warning" &&
          r["text"].get<std::string>().find("cannot store downloads") != std::string::npos) {
        return r;
      }
    }
    return json();
  };
  ASSERT_TRUE(collector.wait_until([&] { return !dock_warning().is_null(); }, 30s)) << daemon_->stderr_text();
  pause(2s);
  const auto acked_while_full = acked();
  pause(4s);
  EXPECT_EQ(acked(), acked_while_full) << "a dock file was acknowledged while the disk was full";
  EXPECT_LT(acked_while_full.size(), static_cast<std::size_t>(kDockFiles))
      << "the test needs files left to wait";
  // Media stopped at the reserve: what is free, plus what the store grew by since, is the 10 MiB reserve
  // less at most one chunk or picture per blocking thread (each checks the space, then writes).
  EXPECT_GE(static_cast<std::int64_t>(free_bytes()) + (store_bytes() - store_at_fill), (10 << 20) - (1 << 20))
      << "media went into the reserve: " << free_bytes() << " bytes free, store grew by "
      << store_bytes() - store_at_fill;
  std::cout << "[ disk ] while full: " << free_bytes() << " bytes free, store grew by "
            << store_bytes() - store_at_fill << " bytes, " << acked_while_full.size() << " of " << kDockFiles
            << " dock files acknowledged\n";

  // Space returns: the alarm clears by itself and pictures are stored again.
  fs::remove(disk_ / "filler");
  ASSERT_TRUE(collector.wait_until([&] { return !storage_status("ok").is_null(); }, 30s))
      << daemon_->stderr_text();
  const std::uint64_t ok_seq = storage_status("ok")["seq"].get<std::uint64_t>();
  ASSERT_TRUE(collector.wait_until([&] { return reads_after(ok_seq, false) >= 3; }, 30s))
      << daemon_->stderr_text();
  // The camera stops here: its ~2 MB/s of pictures would fill the disk again before the dock caught up.
  camera.signal(SIGTERM);
  // Every dock file is collected once, and acknowledged with the SHA-256 its committed record carries.
  ASSERT_TRUE(
      collector.wait_until([&] { return acked().size() == static_cast<std::size_t>(kDockFiles); }, 60s))
      << daemon_->stderr_text();
  ASSERT_TRUE(collector.wait_until([&] { return evidence({"recording"}).size() >= kDockFiles; }, 30s))
      << daemon_->stderr_text();
  std::map<std::string, std::string> recorded;
  for (const auto& r : evidence({"recording"})) {
    EXPECT_TRUE(recorded.emplace(r["unique_id"].get<std::string>(), r["sha256"].get<std::string>()).second)
        << "recorded twice: " << r["unique_id"];
  }
  EXPECT_EQ(recorded, acked());
  dock.signal(SIGTERM);
  pause(1s);
  daemon_->signal(SIGTERM);
  ASSERT_EQ(daemon_->wait(30s), 0) << daemon_->stderr_text();

  // Nothing lost: every seq from 1 to the last arrived.
  std::set<std::uint64_t> seqs;
  for (const auto& jws : collector.payloads("checkpoint/gw/evidence")) {
    seqs.insert(record_body(jws)["seq"].get<std::uint64_t>());
  }
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(*seqs.begin(), 1u);
  EXPECT_EQ(seqs.size(), *seqs.rbegin()) << "a gap in seq";
}

}  // namespace
}  // namespace cpd::testing
