// A full disk, for real: the store and the media on a 48 MiB tmpfs, a camera sending ~2 MB/s of pictures,
// the disk filled to below the reserve. The daemon keeps running, raises the alarm (a device_status record
// for "storage" and the status topic), keeps committing evidence records (pictures counted as not stored),
// never deletes anything, and resumes by itself when space returns. Needs root for the mount.
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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
  Process radar({binary("tools/sim/checkpoint-sim"), "scenario", (dir_ / "radar.yaml").string()}, dir_ / "radar");
  auto radar_line = radar.wait_for_stdout_line("radar ", 10s);
  ASSERT_TRUE(radar_line) << radar.stderr_text();
  Process camera({binary("tools/sim/checkpoint-sim"), "camera", "--port", "0", "--password", "secret", "--rate", "5",
                  "--picture-kb", "200", "--seed", "4"},
                 dir_ / "camera");
  auto camera_line = camera.wait_for_stdout_line("listening ", 10s);
  ASSERT_TRUE(camera_line) << camera.stderr_text();
  std::ofstream(dir_ / "cam.secret") << "secret";
  ::chmod((dir_ / "cam.secret").c_str(), 0600);
  std::ofstream(dir_ / "c.yaml") << "gateway:\n  id: gw\n  site: {name: t, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
                                 << "  key: " << (dir_ / "gateway.key").string() << "\n"
                                 << "store:\n  path: " << (disk_ / "store.db").string() << "\n  reserve_mb: 10\n"
                                 << "mqtt:\n  uri: " << broker.uri() << "\n"
                                 << "correlation:\n  max_wait_ms: 200\n"
                                 << "validity:\n  clock_sync: assume\n"
                                 << "devices:\n"
                                 << "  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: "
                                 << radar_line->substr(6) << "}\n"
                                 << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
                                 << "    calibration: {certificate: C, valid_until: 2099-01-01}\n"
                                 << "  - id: cam-1\n    kind: camera\n    url: http://127.0.0.1:" << camera_line->substr(10)
                                 << "\n    username: admin\n    password_file: " << (dir_ / "cam.secret").string()
                                 << "\n    radar: radar-1\n";
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
  ASSERT_TRUE(collector.wait_until([&] { return !storage_status("warning").is_null(); }, 30s))
      << daemon_->stderr_text();
  const json alarm = storage_status("warning");
  EXPECT_NE(alarm["text"].get<std::string>().find("kept for evidence records"), std::string::npos) << alarm.dump();
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

  // Space returns: the alarm clears by itself and pictures are stored again.
  fs::remove(disk_ / "filler");
  ASSERT_TRUE(collector.wait_until([&] { return !storage_status("ok").is_null(); }, 30s)) << daemon_->stderr_text();
  const std::uint64_t ok_seq = storage_status("ok")["seq"].get<std::uint64_t>();
  ASSERT_TRUE(collector.wait_until([&] { return reads_after(ok_seq, false) >= 3; }, 30s)) << daemon_->stderr_text();
  camera.signal(SIGTERM);
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
