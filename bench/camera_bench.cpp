// `make bench` (second half): ANPR camera events per second end to end (two 200 KB pictures each, stored,
// fsynced, published, then the plate_read record PUBACKed), against this machine's raw fsync'd file
// writes and SHA-256 throughput measured in the same run. Real processes, a real broker, a real disk.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/encoding.h"
#include "daemon/media/media_store.h"
#include "tests/integration/harness.h"

namespace {

using namespace cpd::testing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The simulator's --picture-kb is KiB; the raw stages use the same byte count so the ratios compare like
// with like. MB below are 10^6 bytes.
constexpr int kPictureKb = 200;
constexpr std::size_t kPictureBytes = static_cast<std::size_t>(kPictureKb) * 1024;
constexpr int kPicturesPerEvent = 2;  // single-stage: detection + licensePlate
constexpr double kMB = 1e6;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A picture-sized buffer whose bytes differ per call (no file system or hash can short-cut repeats).
std::string picture_bytes(std::uint64_t n) {
  return pseudo_random_bytes(kPictureBytes, n);
}

struct DiskFigures {
  double files_per_s = 0;
  double mb_per_s = 0;
};

// The disk alone: MediaStore::put's sequence (temp file, write, fsync, close, rename, fsync the directory)
// without its SHA-256, so this is the raw limit the daemon's picture writes are held against.
DiskFigures measure_fsync_writes(const fs::path& dir, std::chrono::milliseconds budget) {
  fs::create_directories(dir);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    throw std::runtime_error("cannot open " + dir.string());
  }
  // Buffers prepared outside the timed loop: only the disk is timed.
  std::vector<std::string> buffers;
  for (std::uint64_t i = 0; i < 8; ++i) {
    buffers.push_back(picture_bytes(i));
  }
  std::size_t n = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < budget) {
    std::string tmp = (dir / ".tmp-XXXXXX").string();
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) {
      throw std::runtime_error("mkstemp in " + dir.string() + " failed");
    }
    const std::string& b = buffers[n % buffers.size()];
    std::size_t done = 0;
    while (done < b.size()) {
      const ssize_t w = ::write(fd, b.data() + done, b.size() - done);
      if (w < 0) {
        throw std::runtime_error("write to " + tmp + " failed");
      }
      done += static_cast<std::size_t>(w);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      throw std::runtime_error("fsync/close of " + tmp + " failed");
    }
    const auto final_path = dir / ("file-" + std::to_string(n));
    if (::rename(tmp.c_str(), final_path.c_str()) != 0 || ::fsync(dir_fd) != 0) {
      throw std::runtime_error("rename/fsync into " + dir.string() + " failed");
    }
    ++n;
  }
  const double s = seconds_since(start);
  ::close(dir_fd);
  return {static_cast<double>(n) / s, static_cast<double>(n * kPictureBytes) / kMB / s};
}

// The daemon's own writer (hash + the same fsync sequence), for reference beside the raw figure.
DiskFigures measure_media_put(const fs::path& dir, std::chrono::milliseconds budget) {
  cpd::media::MediaStore store(dir.string());
  std::string b = picture_bytes(1000);
  std::size_t n = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < budget) {
    // Distinct content each time, else put() finds the file present and skips the write.
    std::memcpy(b.data(), &n, sizeof n);
    cpd::media::StoredMedia out;
    if (const auto st = store.put(b, out); !st.is_ok()) {
      throw std::runtime_error("MediaStore::put failed: " + st.message());
    }
    ++n;
  }
  const double s = seconds_since(start);
  return {static_cast<double>(n) / s, static_cast<double>(n * kPictureBytes) / kMB / s};
}

double measure_sha256_mb_per_s(std::chrono::milliseconds budget) {
  std::string b = picture_bytes(2000);
  std::size_t n = 0;
  std::size_t sink = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < budget) {
    b[0] = static_cast<char>(n);
    sink += cpd::sha256_hex(b).size();
    ++n;
  }
  const double s = seconds_since(start);
  if (sink != n * 64) {
    throw std::runtime_error("sha256_hex returned an unexpected length");
  }
  return static_cast<double>(n * kPictureBytes) / kMB / s;
}

// CPU seconds (user + system) a process has used so far, from /proc/PID/stat; -1 if unreadable.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) {
    return -1;
  }
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  long utime = 0;
  long stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // fields 14 and 15 (1-based) are utime and stime
    if (i == 14) {
      utime = std::stol(f);
    } else if (i == 15) {
      stime = std::stol(f);
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// plate_read records the daemon has had PUBACKed (committed and no longer in the outbox), read from its
// store beside it (WAL). Each camera event with no radar track becomes exactly one plate_read.
std::size_t count_acked_plate_reads(const fs::path& db) {
  sqlite3* h = nullptr;
  std::size_t n = 0;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 1000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h,
                           "SELECT count(*) FROM records WHERE type = 'plate_read' "
                           "AND seq NOT IN (SELECT seq FROM outbox)",
                           -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = static_cast<std::size_t>(sqlite3_column_int64(st, 0));
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return n;
}

// Waits for `n` PUBACKed plate_reads. Gives up when `cut()` says the camera stream broke (the simulator
// closes a stream whose backlog overflows, and the events queued in it are gone) or, as a backstop, when
// the count stops moving for `stall`, so a bad run ends quickly instead of hanging.
template <class Cut>
bool wait_acked(const fs::path& db, std::size_t n, std::chrono::seconds stall, Cut cut) {
  std::size_t last = 0;
  auto last_change = Clock::now();
  for (int poll = 0;; ++poll) {
    const std::size_t now_acked = count_acked_plate_reads(db);
    if (now_acked >= n) {
      return true;
    }
    if (now_acked != last) {
      last = now_acked;
      last_change = Clock::now();
    } else if (Clock::now() - last_change > stall) {
      return false;
    }
    if (poll % 10 == 9 && cut()) {
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
}

struct CameraRun {
  double events_per_s = 0;
  std::size_t timed = 0;
  double seconds = 0;
  long peak_rss_kb = 0;
  double daemon_cpu = 0;    // share of one core used in the timed part
  bool complete = false;    // every event's record was PUBACKed
  bool stream_cut = false;  // the simulator dropped the stream (its backlog overflowed): offered too fast
};

// One daemon with a radar that sees no traffic (the camera must name a radar) and a camera sending
// `events` events at `rate` per second; times PUBACKed plate_reads after the first `warmup`.
CameraRun run_camera(const fs::path& dir, const Mosquitto& broker, const std::string& name, int events,
                     double rate, int warmup) {
  // --rate 1e-6 with one vehicle: the first arrival is days away, so the radar is connected but idle.
  Process radar({binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2", "--seed", "1",
                 "--vehicles", "1", "--rate", "0.000001"},
                dir / (name + "-radar"));
  Process camera({binary("tools/sim/checkpoint-sim"), "camera", "--port", "0", "--lanes", "2", "--seed", "1",
                  "--password", "bench-secret", "--events", std::to_string(events), "--rate",
                  std::to_string(rate), "--picture-kb", std::to_string(kPictureKb)},
                 dir / (name + "-camera"));
  const auto radar_line = radar.wait_for_stdout_line("listening ", 10s);
  const auto camera_line = camera.wait_for_stdout_line("listening ", 10s);
  if (!radar_line || !camera_line) {
    throw std::runtime_error("simulators did not start: " + radar.stderr_text() + camera.stderr_text());
  }
  const auto secret = dir / (name + "-cam.secret");
  std::ofstream(secret) << "bench-secret";
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  const auto db = dir / (name + ".db");
  const auto cfg = dir / (name + ".yaml");
  std::ofstream(cfg)
      << "gateway:\n  id: bench-gw\n"
      << "  site: {name: bench, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
      << "  key: " << (dir / "gateway.key").string() << "\n"
      << "store:\n  path: " << db.string() << "\n  media_dir: " << (dir / (name + "-media")).string() << "\n"
      << "mqtt:\n  uri: " << broker.uri() << "\n  client_id: bench-gw-" << name << "\n"
      << "correlation:\n  max_wait_ms: 100\n"
      << "validity:\n  clock_sync: assume\n"
      << "devices:\n  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: "
      << radar_line->substr(10) << "}\n"
      << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
      << "    calibration: {certificate: BENCH, valid_until: 2099-12-31}\n"
      << "  - id: cam-1\n    kind: camera\n    url: http://127.0.0.1:" << camera_line->substr(10)
      << "\n    username: admin\n    password_file: " << secret.string()
      << "\n    auth: digest\n    radar: radar-1\n";
  Process daemon({binary("daemon/app/checkpointd"), "--config", cfg.string()}, dir / name);

  CameraRun run;
  // The camera adapter logs a failed read when the stream is dropped mid-part. Log text is only a hint for
  // ending early here; the stall backstop does not depend on it.
  auto cut = [&] {
    run.stream_cut = run.stream_cut || daemon.stderr_text().find("read failed") != std::string::npos;
    return run.stream_cut;
  };
  // The first record takes a daemon start-up and two connections; after that progress never pauses long.
  if (wait_acked(db, 1, 20s, cut)) {
    auto t0 = Clock::now();
    std::size_t n0 = count_acked_plate_reads(db);
    // A stream cut during warm-up still leaves a (low) estimate of the limit, from the first record on.
    if (wait_acked(db, static_cast<std::size_t>(warmup), 8s, cut)) {
      t0 = Clock::now();
      n0 = count_acked_plate_reads(db);
      const double d0 = cpu_seconds(daemon.pid());
      run.complete = wait_acked(db, static_cast<std::size_t>(events), 8s, cut);
      run.daemon_cpu = (cpu_seconds(daemon.pid()) - d0) / seconds_since(t0);
    }
    const std::size_t n1 = count_acked_plate_reads(db);
    run.seconds = seconds_since(t0);
    run.timed = n1 - n0;
    run.events_per_s = static_cast<double>(run.timed) / run.seconds;
  }
  run.peak_rss_kb = peak_rss_kb(daemon.pid());
  daemon.signal(SIGTERM);
  if (daemon.wait(30s) != 0) {
    throw std::runtime_error("daemon did not stop cleanly: " + daemon.stderr_text());
  }
  if (!run.complete && !run.stream_cut) {
    const std::string log = daemon.stderr_text();
    std::printf("note   run %s at %.1f events/s: only %zu of %d plate_reads PUBACKed; daemon log tail:\n%s\n",
                name.c_str(), rate, count_acked_plate_reads(db), events,
                log.substr(log.size() > 1000 ? log.size() - 1000 : 0).c_str());
  }
  camera.signal(SIGTERM);
  radar.signal(SIGTERM);
  camera.wait(5s);
  radar.wait(5s);
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const int events = argc > 1 ? std::stoi(argv[1]) : 600;
  const double fixed_rate = argc > 2 ? std::stod(argv[2]) : 0;  // 0: find the daemon's limit first
  const char* keep = std::getenv("CPD_BENCH_KEEP");
  const char* base = std::getenv("CPD_BENCH_DIR");
  std::string tmpl = std::string(base != nullptr ? base : "/var/tmp") + "/cpd-camera-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "cannot create %s\n", tmpl.c_str());
    return 1;
  }
  const fs::path dir = tmpl;
  make_gateway_key(dir);
  Mosquitto broker(dir / "broker");
  broker.start();

  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows line by line when piped
  std::printf("checkpointd camera benchmark (one run on this machine; %s; %d KB pictures)\n", dir.c_str(),
              kPictureKb);
  const DiskFigures disk = measure_fsync_writes(dir / "raw-disk", 3s);
  std::printf(
      "stage  disk_fsync_writes_per_s       %10.0f   (%.1f MB/s; temp+write+fsync+rename+fsync dir)\n",
      disk.files_per_s, disk.mb_per_s);
  const DiskFigures put = measure_media_put(dir / "raw-media", 3s);
  std::printf(
      "stage  media_store_puts_per_s        %10.0f   (%.1f MB/s; MediaStore::put: SHA-256 + the above)\n",
      put.files_per_s, put.mb_per_s);
  const double sha = measure_sha256_mb_per_s(2s);
  std::printf("stage  sha256_mb_per_s               %10.1f   (%.0f pictures/s)\n", sha,
              sha * kMB / static_cast<double>(kPictureBytes));

  // The simulator closes a stream whose unread backlog passes 64 MB (~160 events of 400 KB), so the timed
  // run cannot offer all its events at once. It must offer them faster than the daemon's limit C (else the
  // simulator's pace is measured) but not so fast that more than ~160 queue: for 600 events, below about
  // 1.33 C. So the rate is searched for: start at 1.5x what the raw disk allows (2 pictures an event);
  // when the stream overflows, the daemon was busy all along, so its rate until then estimates C and the
  // next run offers 1.2x that (or 0.85x the last offer, whichever is lower); when the daemon kept up,
  // offer 1.5x more. A run that completes above its offer's 95% is reported as not saturated.
  double rate = fixed_rate > 0 ? fixed_rate : 0.75 * disk.files_per_s;
  const int warmup = std::max(1, events / 10);
  CameraRun run;
  // The figure reported: the fastest complete run, whether it saturated the daemon or kept up with its
  // offer (then a lower bound: offering more overflowed the simulator's stream first).
  std::optional<CameraRun> best;
  double best_rate = 0;
  long peak_rss_kb = 0;
  for (int attempt = 1; attempt <= 8; ++attempt) {
    run = run_camera(dir, broker, "camera-" + std::to_string(attempt), events, rate, warmup);
    peak_rss_kb = std::max(peak_rss_kb, run.peak_rss_kb);
    if (run.complete && (!best || run.events_per_s > best->events_per_s)) {
      best = run;
      best_rate = rate;
    }
    const bool kept_up = run.complete && run.events_per_s >= 0.95 * rate;
    std::printf("search camera_events_per_s           %10.1f   (offered %.1f/s: %s)\n", run.events_per_s,
                rate,
                run.stream_cut ? "stream overflowed"
                : kept_up      ? "daemon kept up"
                               : "saturated");
    if (fixed_rate > 0 || (run.complete && !kept_up)) {
      break;
    }
    if (run.stream_cut) {
      rate = run.events_per_s > 0 ? std::min(0.85 * rate, 1.2 * run.events_per_s) : 0.6 * rate;
    } else if (kept_up) {
      rate *= 1.5;
    } else {
      break;  // incomplete for another reason: reported below
    }
  }
  if (best) {
    run = *best;
    rate = best_rate;
  }
  run.peak_rss_kb = peak_rss_kb;
  const double pictures_per_s = run.events_per_s * kPicturesPerEvent;
  const double mb_per_s = pictures_per_s * static_cast<double>(kPictureBytes) / kMB;
  // Offered well above what came out: the daemon, not the simulator's pace, set the figure.
  const bool saturated = run.events_per_s < 0.95 * rate;
  std::printf(
      "pipeline  camera_events_per_s          %10.1f   (%zu events timed in %.1f s after %d warm-up, "
      "offered %.1f/s%s)\n",
      run.events_per_s, run.timed, run.seconds, warmup, rate,
      saturated ? "" : ", NOT saturated: a lower bound");
  std::printf(
      "pipeline  picture_mb_per_s             %10.1f   (%.0f pictures/s stored, fsynced, published)\n",
      mb_per_s, pictures_per_s);
  std::printf("cpu       daemon_cpu_percent           %10.0f   (of one core, timed part; %u cores online)\n",
              run.daemon_cpu * 100, std::thread::hardware_concurrency());
  std::printf("memory    daemon_peak_rss_kb           %ld   (largest over all runs)\n", run.peak_rss_kb);
  const double disk_ratio = pictures_per_s / disk.files_per_s;
  const double put_ratio = pictures_per_s / put.files_per_s;
  const double sha_ratio = mb_per_s / sha;
  std::printf("ratio     pictures / raw fsync'd writes %.2f\n", disk_ratio);
  std::printf("ratio     pictures / MediaStore::put    %.2f\n", put_ratio);
  std::printf("ratio     picture MB/s / SHA-256 MB/s   %.3f\n", sha_ratio);
  std::printf(
      "summary   %.1f camera events/s (%.1f MB/s of pictures) = %.0f%% of raw fsync'd writes, %.1f%% of "
      "SHA-256; peak RSS %.1f MB%s\n",
      run.events_per_s, mb_per_s, disk_ratio * 100, sha_ratio * 100,
      static_cast<double>(run.peak_rss_kb) / 1024, run.complete ? "" : " (INCOMPLETE run)");
  broker.stop();
  if (keep == nullptr) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return run.complete ? 0 : 1;
}
