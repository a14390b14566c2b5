// `make bench` (third part): recorder-dock ingest (download + SHA-256/MD5 + fsync + record + ack) in MB/s
// against this machine's raw fsync'd sequential writes and SHA-256/MD5 throughput measured in the same
// run, and the daemon's peak RSS while it ingests one 2 GB file. Real processes, a real broker, a real disk.
//
//   build/bench/cpd-dock-bench [--big-mb 2048] [--burst-files 200] [--burst-kb 2048]
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/core/digest.h"
#include "tests/integration/harness.h"

namespace {

using namespace cpd::testing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr double kMB = 1e6;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Sequential 1 MiB writes into one file, then fsync: what the dock adapter's download writer does.
double measure_fsync_stream_mb_per_s(const fs::path& path, std::size_t total_bytes) {
  const std::string chunk = pseudo_random_bytes(1 << 20, 7);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw std::runtime_error("cannot create " + path.string());
  }
  const auto start = Clock::now();
  std::size_t done = 0;
  while (done < total_bytes) {
    const ssize_t w = ::write(fd, chunk.data(), chunk.size());
    if (w <= 0) {
      throw std::runtime_error("write to " + path.string() + " failed");
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    throw std::runtime_error("fsync of " + path.string() + " failed");
  }
  const double s = seconds_since(start);
  fs::remove(path);
  return static_cast<double>(done) / kMB / s;
}

// SHA-256 and MD5 together over the same bytes, as FileDigest does for each download.
double measure_digest_mb_per_s(std::chrono::milliseconds budget) {
  const std::string chunk = pseudo_random_bytes(1 << 20, 9);
  cpd::FileDigest digest;
  std::size_t bytes = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < budget) {
    digest.update(chunk);
    bytes += chunk.size();
  }
  const double s = seconds_since(start);
  if (digest.finish().sha256.size() != 64) {
    throw std::runtime_error("digest failed");
  }
  return static_cast<double>(bytes) / kMB / s;
}

std::size_t acked(const fs::path& truth) {
  std::set<std::string> ids;
  std::ifstream in(truth);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == "ack" && j.value("outcome", "") == "acked") {
      ids.insert(j.value("uniqueId", ""));
    }
  }
  return ids.size();
}

struct IngestRun {
  double seconds = 0;
  double mb_per_s = 0;
  double files_per_s = 0;
  long peak_rss_kb = 0;
};

// One daemon collecting `files` files of `bytes` each from a fresh dock simulator, timed from the first
// listing the sim answers to the last acknowledgement (the daemon's start-up is not counted).
IngestRun run_ingest(const fs::path& dir, const Mosquitto& broker, const std::string& name, std::size_t files,
                     std::int64_t bytes, int parallel) {
  const fs::path run = dir / name;
  fs::create_directories(run);
  make_gateway_key(run);
  std::ofstream(run / "dock.token") << "bench-token\n";
  ::chmod((run / "dock.token").c_str(), 0600);
  const fs::path truth = run / "dock.jsonl";
  Process sim(
      {binary("tools/sim/checkpoint-sim"), "dock", "--port", "0", "--token", "bench-token", "--files",
       std::to_string(files), "--file-bytes", std::to_string(bytes), "--ground-truth", truth.string()},
      run / "sim");
  // The sim hashes each file when it is added (seconds for 2 GB): it listens once they are ready.
  const auto line = sim.wait_for_stdout_line("listening ", 600s);
  if (!line) {
    throw std::runtime_error("dock simulator did not start: " + sim.stderr_text());
  }
  std::ofstream(run / "c.yaml") << "gateway:\n  id: gw\n"
                                << "  site: {name: bench, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
                                << "  key: " << (run / "gateway.key").string() << "\n"
                                << "store:\n  path: " << (run / "store.db").string() << "\n"
                                << "mqtt:\n  uri: " << broker.uri() << "\n  client_id: " << name << "\n"
                                << "validity:\n  clock_sync: assume\n"
                                << "devices:\n  - id: dock-1\n    kind: recorder_dock\n"
                                << "    url: http://127.0.0.1:" << line->substr(10) << "\n"
                                << "    token_file: " << (run / "dock.token").string() << "\n"
                                << "    poll_interval_ms: 200\n    list_limit: 500\n"
                                << "    max_parallel_downloads: " << parallel << "\n";
  Process daemon({binary("daemon/app/checkpointd"), "--config", (run / "c.yaml").string()},
                 run / "checkpointd");
  // Start the clock at the daemon's first poll (its start-up is a few ms; the first poll follows at once).
  const auto start = Clock::now();
  long rss = 0;
  while (acked(truth) < files) {
    if (!daemon.running()) {
      throw std::runtime_error("checkpointd exited: " + daemon.stderr_text());
    }
    if (seconds_since(start) > 1800) {
      throw std::runtime_error("ingest did not finish in 30 minutes");
    }
    rss = std::max(rss, peak_rss_kb(daemon.pid()));
    pause(20ms);
  }
  IngestRun r;
  r.seconds = seconds_since(start);
  r.peak_rss_kb = std::max(rss, peak_rss_kb(daemon.pid()));
  r.mb_per_s = static_cast<double>(bytes) * static_cast<double>(files) / kMB / r.seconds;
  r.files_per_s = static_cast<double>(files) / r.seconds;
  daemon.signal(SIGTERM);
  daemon.wait(30s);
  sim.signal(SIGTERM);
  sim.wait(10s);
  std::error_code ec;
  fs::remove_all(run, ec);  // gigabytes of media
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t big_mb = 2048;
  std::size_t burst_files = 200;
  std::int64_t burst_kb = 2048;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--big-mb") {
      big_mb = std::stoll(argv[i + 1]);
    } else if (a == "--burst-files") {
      burst_files = std::stoul(argv[i + 1]);
    } else if (a == "--burst-kb") {
      burst_kb = std::stoll(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: cpd-dock-bench [--big-mb N] [--burst-files N] [--burst-kb N]\n");
      return 2;
    }
  }
  try {
    TempDir dir;
    Mosquitto broker(dir / "broker");
    broker.start();
    std::printf("dock bench (MB = 10^6 bytes)\n");
    const double disk = measure_fsync_stream_mb_per_s(dir / "raw.bin", std::size_t{1} << 30);
    std::printf("  raw sequential writes + fsync (1 GiB, 1 MiB writes): %8.1f MB/s\n", disk);
    const double digest = measure_digest_mb_per_s(2000ms);
    std::printf("  SHA-256 + MD5 over the same bytes:                   %8.1f MB/s\n", digest);

    const auto big = run_ingest(dir.path(), broker, "big", 1, big_mb * 1024 * 1024, 2);
    std::printf(
        "  one %lld MiB file, end to end (download+hash+fsync+record+ack): %.1f s, %.1f MB/s "
        "(%.2f of raw writes, %.2f of hashing), daemon peak RSS %.1f MB\n",
        static_cast<long long>(big_mb), big.seconds, big.mb_per_s, big.mb_per_s / disk, big.mb_per_s / digest,
        static_cast<double>(big.peak_rss_kb) / 1024.0);
    const auto burst = run_ingest(dir.path(), broker, "burst", burst_files, burst_kb * 1024, 2);
    std::printf(
        "  shift-change burst: %zu files of %lld KiB in %.1f s: %.1f files/s, %.1f MB/s, daemon peak RSS "
        "%.1f MB\n",
        burst_files, static_cast<long long>(burst_kb), burst.seconds, burst.files_per_s, burst.mb_per_s,
        static_cast<double>(burst.peak_rss_kb) / 1024.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpd-dock-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
