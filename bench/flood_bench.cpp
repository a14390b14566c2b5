// Flood benchmark: radar B runs nominal traffic while radar A runs nominal, then floods garbage and 10x /
// 100x the vehicle rate, valid frames as fast as the daemon reads them, and a clock stepping back on every
// frame; prints B's record latency, losses, A's counted errors and suppressed records and the daemon's
// peak RSS.
// Real processes, a real broker, a real disk.
//
//   build/bench/cpd-flood-bench [--seconds 20]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mqtt/async_client.h>
#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"

namespace {

using namespace cpd::testing;
using namespace std::chrono_literals;
using nlohmann::json;

constexpr int kNominalRate = 2;       // vehicles per second per radar
constexpr int kTrackTimeoutMs = 300;
constexpr const char* kGateway = "bench-gw";

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A subscriber that stamps each message with its arrival (wall clock, same host as the simulators), so
// latency runs from the radar's last frame on the wire to the record at a consumer.
class ArrivalLog {
 public:
  struct Message {
    std::string topic;
    std::string payload;
    std::int64_t arrival_ms = 0;
  };

  ArrivalLog(const std::string& uri, const std::string& client_id)
      : client_(uri, client_id, mqtt::create_options(MQTTVERSION_3_1_1),
                static_cast<mqtt::iclient_persistence*>(nullptr)) {
    client_.set_message_callback([this](mqtt::const_message_ptr m) {
      std::lock_guard lock(mutex_);
      messages_.push_back({m->get_topic(), m->to_string(), unix_ms()});
    });
    client_.connect(mqtt::connect_options_builder().clean_session(true).finalize())->wait();
    client_.subscribe(std::string("checkpoint/") + kGateway + "/#", 1)->wait();
  }
  ~ArrivalLog() {
    try {
      client_.disconnect()->wait();
    } catch (const mqtt::exception&) {
      // Already gone: nothing to clean up.
    }
  }

  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }

 private:
  mqtt::async_client client_;
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
};

struct Truth {
  int target = 0;
  std::int64_t first_radar_cs = 0;
  std::int64_t last_frame_ms = 0;
};

struct TruthFile {
  std::vector<Truth> sent;
  std::size_t unsent = 0;  // cut short: pushed back by the daemon past the simulator's queue, or stopped
};

TruthFile read_truth(const fs::path& file) {
  TruthFile out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto v = json::parse(line);
    if (!v.value("sent", false)) {
      ++out.unsent;
      continue;
    }
    std::string t = v["first_radar_time"].get<std::string>();
    t.erase(std::remove(t.begin(), t.end(), '.'), t.end());
    out.sent.push_back({v["target"].get<int>(), std::stoll(t), v["last_frame_unix_ms"].get<std::int64_t>()});
  }
  return out;
}

// CPU seconds (user + system) the process has used so far.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) {
    return 0.0;
  }
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  unsigned long utime = 0;
  unsigned long stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) {
      utime = std::stoul(field);
    } else if (i == 15) {
      stime = std::stoul(field);
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct Phase {
  std::string name;
  std::vector<std::string> radar_a_args;
};

struct Result {
  std::size_t a_sent = 0;
  std::size_t a_unsent = 0;
  std::size_t a_records = 0;
  std::uint64_t a_errors = 0;
  std::uint64_t a_noise = 0;
  std::uint64_t a_frames = 0;
  std::uint64_t a_suppressed = 0;  // records beyond A's record bound, counted
  std::size_t b_sent = 0;
  std::size_t b_lost = 0;
  std::int64_t seal_p50 = -1, seal_p99 = -1, seal_max = -1;
  std::int64_t arrive_p50 = -1, arrive_p99 = -1, arrive_max = -1;
  long peak_rss_kb = -1;
  double cpu_percent = 0.0;
};

std::int64_t percentile(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) {
    return -1;
  }
  const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

std::unique_ptr<Process> start_radar(const fs::path& dir, const std::string& name, std::vector<std::string> args,
                                     std::uint16_t& port) {
  std::vector<std::string> argv{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes", "2",
                                "--vehicles", "0", "--ground-truth", (dir / (name + ".jsonl")).string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto sim = std::make_unique<Process>(argv, dir / name);
  const auto line = sim->wait_for_stdout_line("listening ", 10s);
  if (!line) {
    throw std::runtime_error("simulator did not start: " + sim->stderr_text());
  }
  port = static_cast<std::uint16_t>(std::stoi(line->substr(10)));
  return sim;
}

Result run_phase(const fs::path& root, Mosquitto& broker, const Phase& phase, std::chrono::seconds duration) {
  const fs::path dir = root / phase.name;
  fs::create_directories(dir);
  std::uint16_t port_a = 0;
  std::uint16_t port_b = 0;
  auto sim_a = start_radar(dir, "radar-a", phase.radar_a_args, port_a);
  auto sim_b = start_radar(dir, "radar-b", {"--seed", "42", "--rate", std::to_string(kNominalRate)}, port_b);
  {
    std::ofstream cfg(dir / "checkpointd.yaml");
    cfg << "gateway:\n  id: " << kGateway << "\n"
        << "  site: {name: bench, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
        << "  key: " << (root / "gateway.key").string() << "\n"
        << "store:\n  path: " << (dir / "store.db").string() << "\n"
        << "mqtt:\n  uri: " << broker.uri() << "\n  client_id: " << kGateway << "-" << phase.name << "\n"
        << "metrics: {enabled: false}\n"
        << "devices:\n";
    for (const auto& [id, port] : {std::pair{"radar-a", port_a}, std::pair{"radar-b", port_b}}) {
      cfg << "  - id: " << id << "\n    kind: radar\n    tcp: {host: 127.0.0.1, port: " << port << "}\n"
          << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
          << "    calibration: {certificate: BENCH, valid_until: 2099-12-31}\n"
          << "    track_timeout_ms: " << kTrackTimeoutMs << "\n";
    }
  }
  ArrivalLog log(broker.uri(), std::string("flood-bench-") + phase.name);
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir / "checkpointd.yaml").string()}, dir / "daemon");
  const double cpu0 = cpu_seconds(daemon.pid());
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(duration);
  Result res;
  res.peak_rss_kb = peak_rss_kb(daemon.pid());
  res.cpu_percent = 100.0 * (cpu_seconds(daemon.pid()) - cpu0) /
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sim_a->signal(SIGTERM);
  sim_b->signal(SIGTERM);
  sim_a->wait(10s);
  sim_b->wait(10s);
  const auto truth_a = read_truth(dir / "radar-a.jsonl");
  const auto truth_b = read_truth(dir / "radar-b.jsonl");

  // B's records as they arrive; wait (bounded) for every vehicle B sent, then stop the daemon cleanly.
  const std::string evidence = std::string("checkpoint/") + kGateway + "/evidence";
  std::map<std::pair<int, std::int64_t>, std::pair<json, std::int64_t>> b_records;
  std::set<std::uint64_t> a_seqs;
  const auto collect = [&] {
    for (const auto& m : log.messages()) {
      if (m.topic != evidence) {
        continue;
      }
      const auto body = record_body(m.payload);
      if (body["type"] != "speed_measurement") {
        continue;
      }
      if (body["device"] == "radar-b") {
        const std::pair<int, std::int64_t> key{body["track"]["target"].get<int>(),
                                               body["track"]["samples"][0]["radar_time_cs"].get<std::int64_t>()};
        b_records.try_emplace(key, body, m.arrival_ms);  // the first arrival, not a redelivery
      } else {
        a_seqs.insert(body["seq"].get<std::uint64_t>());
      }
    }
  };
  const auto end = std::chrono::steady_clock::now() + 60s;
  do {
    collect();
    const bool all = std::all_of(truth_b.sent.begin(), truth_b.sent.end(),
                                 [&](const Truth& t) { return b_records.contains({t.target, t.first_radar_cs}); });
    if (all) {
      break;
    }
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < end);
  daemon.signal(SIGTERM);
  if (daemon.wait(60s) != 0) {
    throw std::runtime_error("daemon did not stop cleanly: " + daemon.stderr_text());
  }
  std::this_thread::sleep_for(500ms);  // the offline status (with the final counters) reaches the log
  collect();

  std::vector<std::int64_t> seal;
  std::vector<std::int64_t> arrive;
  for (const auto& t : truth_b.sent) {
    const auto it = b_records.find({t.target, t.first_radar_cs});
    if (it == b_records.end()) {
      ++res.b_lost;
      continue;
    }
    seal.push_back(it->second.first["created_ms"].get<std::int64_t>() - t.last_frame_ms);
    arrive.push_back(it->second.second - t.last_frame_ms);
  }
  std::sort(seal.begin(), seal.end());
  std::sort(arrive.begin(), arrive.end());
  res.seal_p50 = percentile(seal, 0.5);
  res.seal_p99 = percentile(seal, 0.99);
  res.seal_max = seal.empty() ? -1 : seal.back();
  res.arrive_p50 = percentile(arrive, 0.5);
  res.arrive_p99 = percentile(arrive, 0.99);
  res.arrive_max = arrive.empty() ? -1 : arrive.back();
  res.a_sent = truth_a.sent.size();
  res.a_unsent = truth_a.unsent;
  res.a_records = a_seqs.size();
  res.b_sent = truth_b.sent.size();
  for (const auto& m : log.messages()) {
    if (m.topic == std::string("checkpoint/") + kGateway + "/status") {
      const auto s = json::parse(m.payload, nullptr, false);
      if (!s.is_discarded() && s.contains("devices") && s["devices"].contains("radar-a")) {
        const auto& a = s["devices"]["radar-a"];
        res.a_errors = 0;
        for (const auto& [name, n] : a["errors"].items()) {
          res.a_errors += n.get<std::uint64_t>();
        }
        res.a_noise = a["noise_bytes"].get<std::uint64_t>();
        res.a_frames = a["frames"].get<std::uint64_t>();
        res.a_suppressed = a["records"]["suppressed"].get<std::uint64_t>();
      }
    }
  }
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 20;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--seconds") {
      seconds = std::max(1, std::atoi(argv[i + 1]));
    }
  }
  const char* keep = std::getenv("CPD_BENCH_KEEP");
  std::string tmpl = "/var/tmp/cpd-flood-bench-XXXXXX";
  const fs::path dir = ::mkdtemp(tmpl.data());
  make_gateway_key(dir);
  Mosquitto broker(dir / "broker");
  broker.start();

  const std::string rate = std::to_string(kNominalRate);
  const std::vector<Phase> phases = {
      {"nominal", {"--seed", "41", "--rate", rate}},
      {"flood10x", {"--seed", "41", "--rate", rate, "--flood-factor", "10", "--garbage-bps", "100000"}},
      {"flood100x", {"--seed", "41", "--rate", rate, "--flood-factor", "100", "--garbage-bps", "1000000"}},
      {"garbage10MBps", {"--seed", "41", "--rate", rate, "--garbage-bps", "10000000"}},
      // Valid frames as fast as the daemon reads them, radar clock 100 ppm slow (issue 12, defect 4).
      {"frameflood", {"--stream-flood", "--drift-ppm", "-100"}},
      // 100 vehicles/s of 40 frames at 1 ms, every frame stamped 2 s before the last (issue 12, defect 6).
      {"clockstep", {"--seed", "41", "--rate", "100", "--flood-factor", "4", "--frame-interval-ms", "1",
                     "--frames-per-track", "40", "--clock-step-back", "2"}},
  };
  std::printf("checkpointd flood benchmark: radar B nominal (%d vehicles/s), radar A as below, %d s per run (%s)\n",
              kNominalRate, seconds, dir.c_str());
  std::printf("%-14s %8s %8s %9s %9s %10s %10s %10s | %6s %5s %17s %17s | %8s %5s\n", "radar A", "A_sent", "A_cut",
              "A_records", "A_suppr", "A_frames", "A_errors", "A_noise_B", "B_sent", "B_lost", "B_seal_ms p50/p99/max",
              "B_arrive_ms p50/p99/max", "rss_kB", "cpu%");
  int status = 0;
  for (const auto& phase : phases) {
    const auto r = run_phase(dir, broker, phase, std::chrono::seconds(seconds));
    std::printf("%-14s %8zu %8zu %9zu %9llu %10llu %10llu %10llu | %6zu %5zu %5lld/%5lld/%5lld %5lld/%5lld/%5lld | "
                "%8ld %5.0f\n",
                phase.name.c_str(), r.a_sent, r.a_unsent, r.a_records, static_cast<unsigned long long>(r.a_suppressed),
                static_cast<unsigned long long>(r.a_frames), static_cast<unsigned long long>(r.a_errors),
                static_cast<unsigned long long>(r.a_noise), r.b_sent, r.b_lost, static_cast<long long>(r.seal_p50),
                static_cast<long long>(r.seal_p99), static_cast<long long>(r.seal_max),
                static_cast<long long>(r.arrive_p50), static_cast<long long>(r.arrive_p99),
                static_cast<long long>(r.arrive_max), r.peak_rss_kb, r.cpu_percent);
    std::fflush(stdout);
    status |= r.b_lost > 0 ? 1 : 0;
  }
  std::printf("A_cut: vehicles the simulator could not put on the wire whole (daemon back-pressure or stop);\n"
              "A_suppr: A's records beyond its record bound (max_records_per_s, default 50), counted and reported;\n"
              "B_seal: record created_ms - B's last frame on the wire; B_arrive: at a subscriber. Track timeout "
              "%d ms.\n",
              kTrackTimeoutMs);
  broker.stop();
  if (keep == nullptr) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return status;
}
