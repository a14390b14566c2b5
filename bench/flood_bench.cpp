// Flood benchmark: radar B runs nominal traffic while radar A runs nominal, then floods garbage and 10x /
// 100x the vehicle rate, valid frames as fast as the daemon reads them, and a clock stepping back on every
// frame; prints B's record latency, losses, A's counted errors and suppressed records and the daemon's
// peak RSS. Then three other hostile peers, each alone against its own daemon (issue 12): a dock listing new
// files endlessly, a control client pipelining `status` without reading, and a broker refusing every
// evidence publish (PUBACK 135); each prints the daemon's RSS and the bound it keeps.
// Real processes, a real broker, a real disk.
//
//   build/bench/cpd-flood-bench [--seconds 20] [--other-seconds 10] [--only name,name...]
#include <fcntl.h>
#include <linux/sockios.h>
#include <mqtt/async_client.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.h"

namespace {

using namespace cpd::testing;
using namespace std::chrono_literals;
using nlohmann::json;

constexpr int kNominalRate = 2;  // vehicles per second per radar
constexpr int kTrackTimeoutMs = 300;
constexpr const char* kGateway = "bench-gw";

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
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

std::unique_ptr<Process> start_radar(const fs::path& dir, const std::string& name,
                                     std::vector<std::string> args, std::uint16_t& port) {
  std::vector<std::string> argv{binary("tools/sim/checkpoint-sim"),
                                "radar",
                                "--port",
                                "0",
                                "--lanes",
                                "2",
                                "--vehicles",
                                "0",
                                "--ground-truth",
                                (dir / (name + ".jsonl")).string()};
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
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir / "checkpointd.yaml").string()},
                 dir / "daemon");
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
        const std::pair<int, std::int64_t> key{
            body["track"]["target"].get<int>(),
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
    const bool all = std::all_of(truth_b.sent.begin(), truth_b.sent.end(), [&](const Truth& t) {
      return b_records.contains({t.target, t.first_radar_cs});
    });
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

// --- Other hostile peers, each against its own daemon -------------------------------------------------

// The config head every daemon of these phases shares; devices follow.
void write_config_head(std::ostream& cfg, const fs::path& root, const fs::path& dir,
                       const std::string& broker_uri, const std::string& client_id) {
  cfg << "gateway:\n  id: " << kGateway << "\n"
      << "  site: {name: bench, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
      << "  key: " << (root / "gateway.key").string() << "\n"
      << "store:\n  path: " << (dir / "store.db").string() << "\n"
      << "mqtt:\n  uri: " << broker_uri << "\n  client_id: " << client_id << "\n"
      << "metrics: {enabled: false}\n"
      << "control: {socket: " << (dir / "ctl.sock").string() << "}\n"
      << "validity:\n  clock_sync: assume\n";
}

void write_radar_device(std::ostream& cfg, const std::string& id, std::uint16_t port) {
  cfg << "  - id: " << id << "\n    kind: radar\n    tcp: {host: 127.0.0.1, port: " << port << "}\n"
      << "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}, {lane: 2, x_min: 3.75, x_max: 7.5}]\n"
      << "    calibration: {certificate: BENCH, valid_until: 2099-12-31}\n"
      << "    track_timeout_ms: " << kTrackTimeoutMs << "\n";
}

void stop_daemon(Process& daemon) {
  daemon.signal(SIGTERM);
  if (daemon.wait(60s) != 0) {
    throw std::runtime_error("daemon did not stop cleanly: " + daemon.stderr_text());
  }
}

int connect_control(const fs::path& socket_path, bool nonblocking) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) {
      ::close(fd);
    }
    return -1;
  }
  return fd;
}

// One `status` answer over the control socket (the raw line, newline included); "" while it does not answer.
std::string control_status_line(const fs::path& socket_path) {
  const int fd = connect_control(socket_path, false);
  if (fd < 0) {
    return {};
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string reply;
  if (::send(fd, "{\"cmd\":\"status\"}\n", 17, MSG_NOSIGNAL) == 17) {
    char buf[65536];
    while (reply.find('\n') == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        break;
      }
      reply.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto nl = reply.find('\n');
  return nl == std::string::npos ? std::string() : reply.substr(0, nl + 1);
}

json control_status(const fs::path& socket_path, std::chrono::seconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  do {
    const auto line = control_status_line(socket_path);
    if (!line.empty()) {
      auto j = json::parse(line, nullptr, false);
      if (j.is_object()) {
        return j;
      }
    }
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < end);
  throw std::runtime_error("no status on " + socket_path.string());
}

// a. A dock station that lists 500 new files on every page, ignoring `limit`, for the whole run; the daemon
// keeps the documented defaults (list_limit 100, max_pending_files 1000).
struct DockFloodResult {
  std::size_t listed = 0;
  long long records = 0;  // recording records committed during the flood
  long long acked = 0;    // files the station saw acknowledged by the end of the flood
  long rss_base_kb = 0, rss_peak_kb = 0, hwm_kb = 0;
  long long open_peak = 0, rows_end = 0;
  int bound = 1000;
};

DockFloodResult run_dock_flood(const fs::path& root, Mosquitto& broker, std::chrono::seconds duration) {
  const fs::path dir = root / "dockflood";
  fs::create_directories(dir);
  std::ofstream(dir / "dock.token") << "bench-token\n";
  ::chmod((dir / "dock.token").c_str(), 0600);
  const fs::path truth = dir / "dock.jsonl";
  Process sim({binary("tools/sim/checkpoint-sim"), "dock", "--port", "0", "--token", "bench-token",
               "--ground-truth", truth.string(), "--flood-s", std::to_string(duration.count() + 30),
               "--flood-page", "500", "--ignore-limit", "--file-bytes", "2048", "--seed", "12"},
              dir / "dock");
  const auto line = sim.wait_for_stdout_line("listening ", 20s);
  if (!line) {
    throw std::runtime_error("dock simulator did not start: " + sim.stderr_text());
  }
  DockFloodResult res;
  {
    std::ofstream cfg(dir / "checkpointd.yaml");
    write_config_head(cfg, root, dir, broker.uri(), std::string(kGateway) + "-dockflood");
    cfg << "devices:\n  - id: dock-1\n    kind: recorder_dock\n    url: http://127.0.0.1:" << line->substr(10)
        << "\n    token_file: " << (dir / "dock.token").string() << "\n    poll_interval_ms: 300\n"
        << "    max_pending_files: " << res.bound << "\n";
  }
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir / "checkpointd.yaml").string()},
                 dir / "daemon");
  const fs::path db = dir / "store.db";
  const auto open_rows = [&] {
    return store_query(db, "SELECT count(*) FROM dock_files WHERE state IN ('pending', 'recorded')");
  };
  const auto recordings = [&] {
    return store_query(db, "SELECT count(*) FROM records WHERE type = 'recording'");
  };
  // The flood starts with the first listing; the baseline is taken once the first file is acknowledged.
  const auto first_end = std::chrono::steady_clock::now() + 30s;
  while (dock_acks(truth).empty() && std::chrono::steady_clock::now() < first_end) {
    std::this_thread::sleep_for(100ms);
  }
  res.rss_base_kb = rss_kb(daemon.pid());
  res.rss_peak_kb = res.rss_base_kb;
  const long long records_base = recordings();
  const auto end = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < end) {
    res.rss_peak_kb = std::max(res.rss_peak_kb, rss_kb(daemon.pid()));
    res.open_peak = std::max(res.open_peak, open_rows());
    std::this_thread::sleep_for(200ms);
  }
  res.hwm_kb = peak_rss_kb(daemon.pid());
  res.records = recordings() - records_base;
  res.rows_end = store_query(db, "SELECT count(*) FROM dock_files");
  res.acked = static_cast<long long>(dock_acks(truth).size());
  std::ifstream in(truth);
  for (std::string l; std::getline(in, l);) {
    const auto j = json::parse(l, nullptr, false);
    res.listed += !j.is_discarded() && j.value("event", "") == "file" ? 1 : 0;
  }
  stop_daemon(daemon);
  sim.signal(SIGTERM);
  sim.wait(10s);
  return res;
}

// b. A control client that pipelines `status` and never reads. It writes the next request as soon as the
// daemon has taken the last from the socket (SIOCOUTQ 0), so every request taken is answered and what the
// daemon still holds for the client is known from outside: answers owed minus the bytes already in the
// client's receive queue (peeked, never read).
struct ControlFloodResult {
  std::uint64_t requests = 0;  // taken by the daemon
  std::uint64_t answers_in_socket = 0;
  std::size_t answer_bytes = 0;  // one status answer
  long long queued_peak = 0;     // bytes held by the daemon for the client, peak over the run
  long long queued_end = 0;
  std::size_t socket_bytes = 0;  // in the client's receive queue at the end
  double stalled_s = 0.0;        // time the daemon did not take the next request
  long rss_base_kb = 0, rss_peak_kb = 0, hwm_kb = 0;
};

ControlFloodResult run_control_flood(const fs::path& root, Mosquitto& broker, std::chrono::seconds duration) {
  const fs::path dir = root / "controlpipe";
  fs::create_directories(dir);
  std::uint16_t port = 0;
  auto radar = start_radar(dir, "radar-b", {"--seed", "42", "--rate", std::to_string(kNominalRate)}, port);
  {
    std::ofstream cfg(dir / "checkpointd.yaml");
    write_config_head(cfg, root, dir, broker.uri(), std::string(kGateway) + "-controlpipe");
    cfg << "devices:\n";
    write_radar_device(cfg, "radar-b", port);
  }
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir / "checkpointd.yaml").string()},
                 dir / "daemon");
  const fs::path sock = dir / "ctl.sock";
  control_status(sock, 30s);
  std::this_thread::sleep_for(2s);  // settled: records flowing
  ControlFloodResult res;
  res.answer_bytes = control_status_line(sock).size();
  res.rss_base_kb = rss_kb(daemon.pid());
  res.rss_peak_kb = res.rss_base_kb;
  const int fd = connect_control(sock, true);
  if (fd < 0) {
    throw std::runtime_error("cannot connect to " + sock.string());
  }
  std::vector<char> peek;
  const auto queued_now = [&] {
    int outq = 0;
    int inq = 0;
    ::ioctl(fd, SIOCOUTQ, &outq);
    ::ioctl(fd, FIONREAD, &inq);
    peek.resize(static_cast<std::size_t>(std::max(inq, 1)));
    const ssize_t n = ::recv(fd, peek.data(), peek.size(), MSG_PEEK | MSG_DONTWAIT);
    std::size_t lines = 0;
    std::size_t line_bytes = 0;
    for (ssize_t i = 0; i < n; ++i) {
      if (peek[static_cast<std::size_t>(i)] == '\n') {
        ++lines;
        line_bytes = static_cast<std::size_t>(i) + 1;
      }
    }
    const std::size_t in_socket = n > 0 ? static_cast<std::size_t>(n) : 0;
    const double per_answer = lines > 0 ? static_cast<double>(line_bytes) / static_cast<double>(lines)
                                        : static_cast<double>(res.answer_bytes);
    const std::uint64_t taken = res.requests - (outq > 0 ? 1 : 0);
    res.answers_in_socket = lines;
    res.socket_bytes = in_socket;
    return static_cast<long long>(static_cast<double>(taken - std::min<std::uint64_t>(taken, lines)) *
                                  per_answer) -
           static_cast<long long>(in_socket - line_bytes);
  };
  static constexpr char kRequest[] = "{\"cmd\":\"status\"}\n";
  const auto t0 = std::chrono::steady_clock::now();
  const auto end = t0 + duration;
  auto next_sample = t0;
  auto stalled_since = t0;
  bool stalled = false;
  while (std::chrono::steady_clock::now() < end) {
    int outq = 0;
    ::ioctl(fd, SIOCOUTQ, &outq);
    const auto now = std::chrono::steady_clock::now();
    if (outq == 0) {
      if (stalled) {
        res.stalled_s += std::chrono::duration<double>(now - stalled_since).count();
        stalled = false;
      }
      if (::send(fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL | MSG_DONTWAIT) ==
          static_cast<ssize_t>(sizeof kRequest - 1)) {
        ++res.requests;
      }
    } else {
      if (!stalled) {
        stalled = true;
        stalled_since = now;
      }
      std::this_thread::sleep_for(200us);
    }
    if (now >= next_sample) {
      res.rss_peak_kb = std::max(res.rss_peak_kb, rss_kb(daemon.pid()));
      res.queued_peak = std::max(res.queued_peak, queued_now());
      next_sample = now + 100ms;
    }
  }
  if (stalled) {
    res.stalled_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - stalled_since).count();
  }
  res.rss_peak_kb = std::max(res.rss_peak_kb, rss_kb(daemon.pid()));
  res.queued_end = queued_now();
  res.queued_peak = std::max(res.queued_peak, res.queued_end);
  res.hwm_kb = peak_rss_kb(daemon.pid());
  ::close(fd);
  stop_daemon(daemon);
  radar->signal(SIGTERM);
  radar->wait(10s);
  return res;
}

// c. A broker whose ACL lets the gateway publish its status and media but not evidence: every evidence
// publish is answered PUBACK 135 (Not authorized). The daemon keeps its default backoff
// (mqtt.reconnect_min_ms 500 doubling to reconnect_max_ms 30 000, jitter [b/2, b]).
struct RefusalResult {
  double seconds = 0.0;
  long long refused = 0;  // refused publishes during the run
  long long failed = 0;   // failed attempts during the run
  long long refused_all = 0;
  int attempts = 0;  // broker.refusing.attempts at the end
  long long outbox_before = 0, outbox_after = 0, records_after = 0;
  long long published = 0;
  long rss_base_kb = 0, rss_peak_kb = 0, hwm_kb = 0;
};

RefusalResult run_broker_refusal(const fs::path& root, std::chrono::seconds duration) {
  const fs::path dir = root / "brokerrefusal";
  fs::create_directories(dir);
  Mosquitto broker(dir / "broker");
  const fs::path acl = dir / "broker" / "acl";
  std::ofstream(acl) << "topic read checkpoint/#\n"
                     << "topic write checkpoint/" << kGateway << "/status\n"
                     << "topic write checkpoint/" << kGateway << "/media/#\n";
  // As in broker_faults_test: mosquitto 2.0.11 with max_queued_messages 0 drops a connection whose denied
  // publish is followed by another in the same read; its default keeps it. The last value in the file wins.
  std::ofstream(dir / "broker" / "mosquitto.conf", std::ios::app) << "acl_file " << acl.string() << "\n"
                                                                  << "max_queued_messages 100000\n";
  broker.start();
  std::uint16_t port = 0;
  auto radar = start_radar(dir, "radar-b", {"--seed", "42", "--rate", std::to_string(kNominalRate)}, port);
  {
    std::ofstream cfg(dir / "checkpointd.yaml");
    write_config_head(cfg, root, dir, broker.uri(), std::string(kGateway) + "-refusal");
    cfg << "devices:\n";
    write_radar_device(cfg, "radar-b", port);
  }
  Process daemon({binary("daemon/app/checkpointd"), "--config", (dir / "checkpointd.yaml").string()},
                 dir / "daemon");
  const fs::path sock = dir / "ctl.sock";
  const fs::path db = dir / "store.db";
  const auto broker_status = [&] { return control_status(sock, 30s)["broker"]; };
  const auto refusing_end = std::chrono::steady_clock::now() + 60s;
  while (!broker_status().value("refusing", json()).is_object()) {
    if (std::chrono::steady_clock::now() > refusing_end) {
      throw std::runtime_error("the broker never refused: " + daemon.stderr_text());
    }
    std::this_thread::sleep_for(200ms);
  }
  std::this_thread::sleep_for(1s);  // the first window's worth of refusals is in; measure retries from here
  RefusalResult res;
  const auto t0 = std::chrono::steady_clock::now();
  const json before = broker_status();
  res.outbox_before = store_query(db, "SELECT count(*) FROM outbox");
  res.rss_base_kb = rss_kb(daemon.pid());
  res.rss_peak_kb = res.rss_base_kb;
  const auto end = t0 + duration;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(200ms);
    res.rss_peak_kb = std::max(res.rss_peak_kb, rss_kb(daemon.pid()));
  }
  const json after = broker_status();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.outbox_after = store_query(db, "SELECT count(*) FROM outbox");
  res.records_after = store_query(db, "SELECT count(*) FROM records");
  res.hwm_kb = peak_rss_kb(daemon.pid());
  res.refused = after.value("refused", 0LL) - before.value("refused", 0LL);
  res.failed = after.value("failed", 0LL) - before.value("failed", 0LL);
  res.refused_all = after.value("refused", 0LL);
  res.published = after.value("published", 0LL);
  if (after.value("refusing", json()).is_object()) {
    res.attempts = after["refusing"].value("attempts", 0);
  }
  stop_daemon(daemon);
  radar->signal(SIGTERM);
  radar->wait(10s);
  broker.stop();
  return res;
}

bool selected(const std::vector<std::string>& only, const std::string& name) {
  return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 20;
  int other_seconds = 10;
  std::vector<std::string> only;  // phase names; empty: all
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--seconds") {
      seconds = std::max(1, std::atoi(argv[i + 1]));
    } else if (std::string(argv[i]) == "--other-seconds") {
      other_seconds = std::max(1, std::atoi(argv[i + 1]));
    } else if (std::string(argv[i]) == "--only") {
      std::stringstream list(argv[i + 1]);
      for (std::string name; std::getline(list, name, ',');) {
        only.push_back(name);
      }
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
      {"clockstep",
       {"--seed", "41", "--rate", "100", "--flood-factor", "4", "--frame-interval-ms", "1",
        "--frames-per-track", "40", "--clock-step-back", "2"}},
  };
  std::printf(
      "checkpointd flood benchmark: radar B nominal (%d vehicles/s), radar A as below, %d s per run (%s)\n",
      kNominalRate, seconds, dir.c_str());
  std::printf("%-14s %8s %8s %9s %9s %10s %10s %10s | %6s %5s %17s %17s | %8s %5s\n", "radar A", "A_sent",
              "A_cut", "A_records", "A_suppr", "A_frames", "A_errors", "A_noise_B", "B_sent", "B_lost",
              "B_seal_ms p50/p99/max", "B_arrive_ms p50/p99/max", "rss_kB", "cpu%");
  int status = 0;
  for (const auto& phase : phases) {
    if (!selected(only, phase.name)) {
      continue;
    }
    const auto r = run_phase(dir, broker, phase, std::chrono::seconds(seconds));
    std::printf(
        "%-14s %8zu %8zu %9zu %9llu %10llu %10llu %10llu | %6zu %5zu %5lld/%5lld/%5lld %5lld/%5lld/%5lld | "
        "%8ld %5.0f\n",
        phase.name.c_str(), r.a_sent, r.a_unsent, r.a_records,
        static_cast<unsigned long long>(r.a_suppressed), static_cast<unsigned long long>(r.a_frames),
        static_cast<unsigned long long>(r.a_errors), static_cast<unsigned long long>(r.a_noise), r.b_sent,
        r.b_lost, static_cast<long long>(r.seal_p50), static_cast<long long>(r.seal_p99),
        static_cast<long long>(r.seal_max), static_cast<long long>(r.arrive_p50),
        static_cast<long long>(r.arrive_p99), static_cast<long long>(r.arrive_max), r.peak_rss_kb,
        r.cpu_percent);
    std::fflush(stdout);
    status |= r.b_lost > 0 ? 1 : 0;
  }
  std::printf(
      "A_cut: vehicles the simulator could not put on the wire whole (daemon back-pressure or stop);\n"
      "A_suppr: A's records beyond its record bound (max_records_per_s, default 50), counted and reported;\n"
      "B_seal: record created_ms - B's last frame on the wire; B_arrive: at a subscriber. Track timeout "
      "%d ms.\n",
      kTrackTimeoutMs);

  const auto other = std::chrono::seconds(other_seconds);
  std::printf("\nOther hostile peers, each alone against its own daemon, %d s each:\n", other_seconds);
  if (selected(only, "dockflood")) {
    const auto r = run_dock_flood(dir, broker, other);
    std::printf(
        "%-14s %zu files listed (500 new per page, limit ignored), %lld recorded, %lld acked; open ledger "
        "rows peak %lld (max_pending_files %d), %lld rows at the end; RSS %ld -> peak %ld kB (+%ld kB), "
        "VmHWM %ld kB\n",
        "dockflood", r.listed, r.records, r.acked, r.open_peak, r.bound, r.rows_end, r.rss_base_kb,
        r.rss_peak_kb, r.rss_peak_kb - r.rss_base_kb, r.hwm_kb);
    std::fflush(stdout);
    status |= r.open_peak > r.bound ? 2 : 0;
  }
  if (selected(only, "controlpipe")) {
    const auto r = run_control_flood(dir, broker, other);
    const long long bound = (64LL << 10) + static_cast<long long>(r.answer_bytes);
    std::printf(
        "%-14s %llu status requests taken, %llu answers (%zu B) in the client's unread socket; daemon-held "
        "answer "
        "bytes peak %lld, end %lld (bound 64 KiB + one answer = %lld); reading paused %.1f of %d s; RSS %ld "
        "-> peak %ld kB (+%ld kB), VmHWM %ld kB\n",
        "controlpipe", static_cast<unsigned long long>(r.requests),
        static_cast<unsigned long long>(r.answers_in_socket), r.socket_bytes, r.queued_peak, r.queued_end,
        bound, r.stalled_s, other_seconds, r.rss_base_kb, r.rss_peak_kb, r.rss_peak_kb - r.rss_base_kb,
        r.hwm_kb);
    std::fflush(stdout);
    status |= r.queued_peak > bound ? 2 : 0;
  }
  if (selected(only, "brokerrefusal")) {
    const auto r = run_broker_refusal(dir, other);
    std::printf(
        "%-14s %lld refused publishes in %.1f s (%.2f/s), %lld failed attempts (%.2f/s), %lld refused in "
        "all, "
        "attempts %d, published %lld; outbox %lld -> %lld of %lld records (nothing deleted: %s); RSS %ld -> "
        "peak %ld kB (+%ld kB), VmHWM %ld kB\n",
        "brokerrefusal", r.refused, r.seconds, static_cast<double>(r.refused) / r.seconds, r.failed,
        static_cast<double>(r.failed) / r.seconds, r.refused_all, r.attempts, r.published, r.outbox_before,
        r.outbox_after, r.records_after, r.outbox_after == r.records_after ? "yes" : "NO", r.rss_base_kb,
        r.rss_peak_kb, r.rss_peak_kb - r.rss_base_kb, r.hwm_kb);
    std::fflush(stdout);
    status |= r.outbox_after != r.records_after || r.outbox_after < r.outbox_before ? 2 : 0;
  }
  std::printf(
      "Backoff for refused publishes: mqtt.reconnect_min_ms 500 doubling to reconnect_max_ms 30000, jitter "
      "[b/2, b]: at most 1 attempt per 250 ms at first, 1 per 15 s at the cap.\n");
  broker.stop();
  if (keep == nullptr) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return status;
}
