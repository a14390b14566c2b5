// Custody end to end (issue 13, section 6; docs/custody.md "Measured"): radar simulator -> checkpointd ->
// mosquitto (no persistence) -> checkpoint-central -> a private PostgreSQL, and custody receipts back.
// In one run (~4 min; traffic for at least --min-run-s):
//   1. latency from a record's sealing (`created_ms`) to the custody receipt covering it being accepted at
//      the gateway (`received_ms` of the gateway's custody state), at 20 vehicles/s, receipts and custody
//      knobs at their defaults; then again with central on a short receipts.every_ms;
//   2. time from a broker restart under traffic to every hole repaired: central's watermark reaches the
//      gateway's head at the restart and a receipt through it is accepted at the gateway (a plain restart,
//      then a crash with ~60 records held by the broker for a stalled central; --restarts times each);
//   3. the gateway store's size over the whole run with retention on (store.retention_days 0: a record goes
//      at the first retention round after it is in custody; custody.retention_check_ms at its default).
//
//   build/bench/cpd-custody-bench [--rate 20] [--lanes 4] [--window-s 50] [--short-every-ms 500]
//                                 [--restarts 2] [--min-run-s 180]
//   (exits non-zero when a phase does not complete: no receipt, hole not repaired, daemon died)
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/ed25519.h"
#include "tests/integration/harness.h"
#include "tests/integration/postgres.h"

namespace {

using namespace cpd::testing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kGateway = "bench-gw";

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Options {
  double rate = 20.0;  // vehicles per second, all lanes together
  int lanes = 4;
  int warmup_s = 10;
  int window_s = 50;
  int short_every_ms = 500;  // 0: skip the short-receipt phase
  int restarts = 2;          // of each kind
  int min_run_s = 180;       // traffic at least this long, for the store's size under retention
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--rate" && has_value) {
      o.rate = std::stod(argv[++i]);
    } else if (a == "--lanes" && has_value) {
      o.lanes = std::stoi(argv[++i]);
    } else if (a == "--window-s" && has_value) {
      o.window_s = std::stoi(argv[++i]);
    } else if (a == "--short-every-ms" && has_value) {
      o.short_every_ms = std::stoi(argv[++i]);
    } else if (a == "--restarts" && has_value) {
      o.restarts = std::stoi(argv[++i]);
    } else if (a == "--min-run-s" && has_value) {
      o.min_run_s = std::stoi(argv[++i]);
    } else {
      throw std::invalid_argument(
          "usage: cpd-custody-bench [--rate vehicles/s] [--lanes N] [--window-s S] [--short-every-ms MS|0] "
          "[--restarts N] [--min-run-s S]");
    }
  }
  if (o.rate <= 0 || o.lanes < 1 || o.lanes > 8 || o.window_s < 5 ||
      (o.short_every_ms != 0 && o.short_every_ms < 100) || o.restarts < 0 || o.min_run_s < 0) {
    throw std::invalid_argument(
        "--rate > 0, --lanes 1..8, --window-s >= 5, --short-every-ms 0 or >= 100, --restarts >= 0, "
        "--min-run-s >= 0");
  }
  return o;
}

std::int64_t percentile(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) {
    return -1;
  }
  const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

long long bytes_of(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<long long>(n);
}

// Watches the gateway's SQLite store from beside the daemon (WAL lets a reader in): every record's seq and
// created_ms (read long before retention may delete it), every change of the accepted custody state, and
// once a second the store's size. One thread, polling every 20 ms.
class GatewayWatch {
 public:
  struct Record {
    long long seq;
    std::int64_t created_ms;
    bool vehicle;  // a speed_measurement (one per vehicle: the radar is alone, no camera)
  };
  struct Receipt {
    long long through_seq;
    std::int64_t received_ms;  // when the gateway accepted it (its clock)
  };
  struct SizeSample {
    double t_s;
    long long db_bytes;
    long long wal_bytes;
    long long rows;
    long long pages;
    long long free_pages;
    long long page_size;
    long long used_bytes() const { return (pages - free_pages) * page_size; }
  };

  explicit GatewayWatch(fs::path db) : db_(std::move(db)), start_(Clock::now()) {
    thread_ = std::thread([this] { loop(); });
  }
  ~GatewayWatch() {
    stop_ = true;
    thread_.join();
  }

  long long head() const {
    std::lock_guard lock(mutex_);
    return records_.empty() ? 0 : records_.back().seq;
  }
  long long through() const {
    std::lock_guard lock(mutex_);
    return receipts_.empty() ? 0 : receipts_.back().through_seq;
  }
  std::vector<Record> records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }
  std::vector<Receipt> receipts() const {
    std::lock_guard lock(mutex_);
    return receipts_;
  }
  std::vector<SizeSample> sizes() const {
    std::lock_guard lock(mutex_);
    return sizes_;
  }

 private:
  void loop() {
    sqlite3* h = nullptr;
    auto last_size = Clock::now() - 10s;
    while (!stop_) {
      if (h == nullptr && fs::exists(db_)) {
        if (sqlite3_open_v2(db_.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
          sqlite3_close(h);
          h = nullptr;
        } else {
          sqlite3_busy_timeout(h, 2000);
        }
      }
      if (h != nullptr) {
        poll(h);
        if (Clock::now() - last_size >= 1s) {
          last_size = Clock::now();
          sample_size(h);
        }
      }
      std::this_thread::sleep_for(20ms);
    }
    sqlite3_close(h);
  }

  static long long one(sqlite3* h, const char* sql) {
    sqlite3_stmt* st = nullptr;
    long long v = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
      v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
  }

  void poll(sqlite3* h) {
    std::vector<Record> fresh;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(
            h, "SELECT seq, created_ms, type = 'speed_measurement' FROM records WHERE seq > ?1 ORDER BY seq",
            -1, &st, nullptr) == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, last_seq_);
      while (sqlite3_step(st) == SQLITE_ROW) {
        fresh.push_back(
            {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int(st, 2) != 0});
      }
    }
    sqlite3_finalize(st);
    std::optional<Receipt> receipt;
    if (sqlite3_prepare_v2(h, "SELECT through_seq, received_ms FROM custody WHERE id = 1", -1, &st,
                           nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      receipt = Receipt{sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)};
    }
    sqlite3_finalize(st);
    std::lock_guard lock(mutex_);
    if (!fresh.empty()) {
      last_seq_ = fresh.back().seq;
      records_.insert(records_.end(), fresh.begin(), fresh.end());
    }
    if (receipt && (receipts_.empty() || receipts_.back().received_ms != receipt->received_ms)) {
      receipts_.push_back(*receipt);
    }
  }

  void sample_size(sqlite3* h) {
    SizeSample s{seconds_since(start_),           bytes_of(db_),
                 bytes_of(db_.string() + "-wal"), one(h, "SELECT count(*) FROM records"),
                 one(h, "PRAGMA page_count"),     one(h, "PRAGMA freelist_count"),
                 one(h, "PRAGMA page_size")};
    std::lock_guard lock(mutex_);
    sizes_.push_back(s);
  }

  fs::path db_;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  long long last_seq_ = 0;
  std::vector<Record> records_;
  std::vector<Receipt> receipts_;
  std::vector<SizeSample> sizes_;
  std::thread thread_;
};

struct LatencyResult {
  std::size_t records = 0;
  std::size_t vehicles = 0;
  double vehicles_per_s = 0;
  std::size_t receipts = 0;
  std::int64_t p50 = -1, p99 = -1, max = -1;
};

// Latency of every record sealed in [from_ms, to_ms): the first accepted receipt whose through_seq covers it.
LatencyResult latency(const GatewayWatch& watch, std::int64_t from_ms, std::int64_t to_ms) {
  LatencyResult r;
  const auto records = watch.records();
  const auto receipts = watch.receipts();
  std::vector<std::int64_t> lat;
  for (const auto& rec : records) {
    if (rec.created_ms < from_ms || rec.created_ms >= to_ms) {
      continue;
    }
    ++r.records;
    r.vehicles += rec.vehicle ? 1 : 0;
    for (const auto& rc : receipts) {
      if (rc.through_seq >= rec.seq && rc.received_ms >= rec.created_ms) {
        lat.push_back(rc.received_ms - rec.created_ms);
        break;
      }
    }
  }
  for (const auto& rc : receipts) {
    r.receipts += rc.received_ms >= from_ms && rc.received_ms < to_ms ? 1 : 0;
  }
  r.vehicles_per_s = static_cast<double>(r.vehicles) / (static_cast<double>(to_ms - from_ms) / 1000.0);
  if (lat.size() != r.records) {
    r.p50 = r.p99 = r.max = -1;  // some record not covered: reported as a failure
    return r;
  }
  std::sort(lat.begin(), lat.end());
  r.p50 = percentile(lat, 0.5);
  r.p99 = percentile(lat, 0.99);
  r.max = lat.empty() ? -1 : lat.back();
  return r;
}

class Bench {
 public:
  explicit Bench(const Options& opt) : opt_(opt) {
    std::string tmpl = "/var/tmp/cpd-custody-XXXXXX";
    dir_ = ::mkdtemp(tmpl.data());
    pub_pem_ = make_gateway_key(dir_);
    auto central_key = cpd::Ed25519PrivateKey::generate();
    central_key.save_pem_file((dir_ / "central.key").string());
    std::ofstream(dir_ / "central.pub.pem") << central_key.public_key().pem();
  }

  int run();

 private:
  long long pg_int(const std::string& sql) {
    const std::string v = pg_->query(sql);
    try {
      return v.empty() ? -1 : std::stoll(v);
    } catch (const std::exception&) {
      return -1;
    }
  }
  long long watermark() {
    return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = '" + kGateway + "'");
  }
  long long resend_requests() {
    return pg_int("SELECT resend_requests FROM gateways WHERE gateway = '" + kGateway + "'");
  }

  // Central's config: receipts and gaps at their defaults unless `short_every_ms` (then every_ms and a gap
  // check interval of a fifth of it). A fixed client id, so a restarted instance takes the session over.
  fs::path write_central_config(const std::string& name, int short_every_ms) {
    const fs::path path = dir_ / (name + ".yaml");
    std::ofstream out(path);
    out << "central:\n  id: bench-central\n  key: " << (dir_ / "central.key").string() << "\n"
        << "postgres:\n  conninfo: \"" << pg_->conninfo() << "\"\n"
        << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: bench-central\n"
        << "feed:\n  media_dir: " << (dir_ / "central-media").string() << "\n"
        << "metrics: {enabled: false}\n";
    if (short_every_ms > 0) {
      out << "receipts:\n  every_ms: " << short_every_ms << "\n"
          << "gaps:\n  check_interval_ms: " << std::max(50, short_every_ms / 5) << "\n";
    }
    return path;
  }

  std::unique_ptr<Process> start_central(const std::string& name, int short_every_ms) {
    const fs::path cfg = write_central_config(name, short_every_ms);
    auto p = std::make_unique<Process>(
        std::vector<std::string>{binary("central/checkpoint-central"), "run", "--config", cfg.string()},
        dir_ / name);
    if (!p->wait_for_stdout_line("running: ", 60s)) {
      throw std::runtime_error("checkpoint-central did not start: " + p->stderr_text());
    }
    return p;
  }

  void write_gateway_config(std::uint16_t sim_port) {
    std::ofstream cfg(dir_ / "checkpointd.yaml");
    cfg << "gateway:\n  id: " << kGateway << "\n"
        << "  site: {name: bench, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
        << "  key: " << (dir_ / "gateway.key").string() << "\n"
        << "store:\n  path: " << (dir_ / "store.db").string() << "\n  retention_days: 0\n"
        << "mqtt:\n  uri: " << broker_->uri() << "\n  client_id: " << kGateway << "\n"
        << "metrics: {enabled: false}\n"
        << "devices:\n  - id: radar-1\n    kind: radar\n    tcp: {host: 127.0.0.1, port: " << sim_port
        << "}\n"
        << "    lanes: [";
    for (int l = 1; l <= opt_.lanes; ++l) {
      cfg << (l > 1 ? ", " : "") << "{lane: " << l << ", x_min: " << 3.75 * (l - 1) << ", x_max: " << 3.75 * l
          << "}";
    }
    cfg << "]\n    calibration: {certificate: BENCH, valid_until: 2099-12-31}\n"
        // Every custody knob at its default: head_interval_ms 5000, resend_records_per_s 1000,
        // retention_check_ms 60000, record_min_interval_s 60.
        << "custody:\n  central_keys: [{pem: " << (dir_ / "central.pub.pem").string() << "}]\n";
  }

  void alive() {
    if (!daemon_->running()) {
      throw std::runtime_error("checkpointd died: " + daemon_->stderr_text());
    }
    if (!central_->running()) {
      throw std::runtime_error("checkpoint-central died: " + central_->stderr_text());
    }
  }

  // Waits until the gateway has accepted a receipt through `seq`; false after `timeout`.
  bool wait_through(long long seq, std::chrono::seconds timeout) {
    const auto end = Clock::now() + timeout;
    while (Clock::now() < end) {
      if (watch_->through() >= seq) {
        return true;
      }
      alive();
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  bool measure_latency(const std::string& label, const std::string& conditions);
  bool measure_restart(const std::string& label, bool crash_with_central_stalled);

  Options opt_;
  fs::path dir_;
  fs::path pub_pem_;
  std::unique_ptr<Postgres> pg_;
  std::unique_ptr<Mosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<Process> central_;
  std::unique_ptr<Process> daemon_;
  std::unique_ptr<GatewayWatch> watch_;
};

bool Bench::measure_latency(const std::string& label, const std::string& conditions) {
  std::this_thread::sleep_for(std::chrono::seconds(opt_.warmup_s));
  const std::int64_t from = wall_ms();
  std::this_thread::sleep_for(std::chrono::seconds(opt_.window_s));
  const std::int64_t to = wall_ms();
  long long last = 0;
  for (const auto& r : watch_->records()) {
    if (r.created_ms < to) {
      last = r.seq;
    }
  }
  const bool covered = wait_through(last, 90s);
  const auto r = latency(*watch_, from, to);
  std::printf(
      "rate      %-9s vehicles_per_s                %8.1f   (%zu vehicles, %zu records sealed in %d s; sim "
      "--rate %.0f, %d lanes)\n",
      label.c_str(), r.vehicles_per_s, r.vehicles, r.records, opt_.window_s, opt_.rate, opt_.lanes);
  if (!covered || r.p50 < 0) {
    std::printf(
        "latency   %-9s seal_to_receipt_ms            NOT COVERED within 90 s after the window (through "
        "%lld, last %lld)\n",
        label.c_str(), watch_->through(), last);
    return false;
  }
  std::printf(
      "latency   %-9s seal_to_receipt_ms p50 / p99 / max  %lld / %lld / %lld ms   (%s; %zu receipts accepted "
      "in the window)\n",
      label.c_str(), static_cast<long long>(r.p50), static_cast<long long>(r.p99),
      static_cast<long long>(r.max), conditions.c_str(), r.receipts);
  std::fflush(stdout);
  return true;
}

// A broker restart under traffic (no persistence: everything it held is gone). Repaired when central's
// watermark reaches the gateway's head at the restart and the gateway has accepted a receipt through it.
bool Bench::measure_restart(const std::string& label, bool crash_with_central_stalled) {
  const long long requests_before = resend_requests();
  long long held = 0;
  if (crash_with_central_stalled) {
    // Central takes nothing for 3 s: the broker acknowledges the gateway's records and holds them for it.
    central_->signal(SIGSTOP);
    const long long before = watch_->head();
    std::this_thread::sleep_for(3s);
    held = watch_->head() - before;
    broker_->process().signal(SIGKILL);
    broker_->process().wait(10s);
  } else {
    broker_->stop();
  }
  // Read from the store itself at the restart (the watch polls every 20 ms).
  const long long head = store_query(dir_ / "store.db", "SELECT max(seq) FROM records");
  const auto down_at = Clock::now();
  broker_->start();
  const auto up_at = Clock::now();
  if (crash_with_central_stalled) {
    central_->signal(SIGCONT);
  }
  double wm_s = -1, receipt_s = -1;
  long long max_lag = 0;  // records stored above the watermark: waiting behind a hole
  while (seconds_since(up_at) < 150) {
    alive();
    const long long wm = watermark();
    const long long max_seq = pg_int("SELECT max_seq FROM gateways WHERE gateway = '" + kGateway + "'");
    max_lag = std::max(max_lag, max_seq - wm);
    if (wm_s < 0 && wm >= head) {
      wm_s = seconds_since(up_at);
    }
    if (receipt_s < 0 && watch_->through() >= head) {
      receipt_s = seconds_since(up_at);
      // A receipt through the head means the watermark was there first (the psql poll is the slower one).
      wm_s = wm_s < 0 ? receipt_s : std::min(wm_s, receipt_s);
    }
    if (wm_s >= 0 && receipt_s >= 0) {
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  const long long requests = resend_requests() - requests_before;
  const double down_s = std::chrono::duration<double>(up_at - down_at).count();
  const std::string what = crash_with_central_stalled
                               ? "broker SIGKILLed after central stalled 3 s (" + std::to_string(held) +
                                     " records sealed meanwhile)"
                               : "broker stopped (SIGTERM) and started again, central keeping up";
  if (wm_s < 0 || receipt_s < 0) {
    std::printf(
        "restart   %-9s NOT REPAIRED within 150 s (head at restart %lld, watermark %lld, gateway through "
        "%lld)\n",
        label.c_str(), head, watermark(), watch_->through());
    return false;
  }
  std::printf(
      "restart   %-9s to_watermark_s / to_receipt_at_gateway_s  %.1f / %.1f s   (%s; head at restart seq "
      "%lld, "
      "broker down %.2f s, at most %lld records stored above the watermark, %lld resend requests%s)\n",
      label.c_str(), wm_s, receipt_s, what.c_str(), head, down_s, max_lag, requests,
      requests == 0 ? ": nothing was lost" : "");
  std::fflush(stdout);
  return true;
}

int Bench::run() {
  const auto start = Clock::now();
  pg_ = std::make_unique<Postgres>();
  pg_->start();
  broker_ = std::make_unique<Mosquitto>(dir_ / "broker");
  {
    // The harness's broker persists; this one does not (the restart loses whatever it held).
    std::ifstream in(dir_ / "broker" / "mosquitto.conf");
    std::string conf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = conf.find("persistence true");
    if (at == std::string::npos) {
      throw std::runtime_error("mosquitto.conf has no 'persistence true' to turn off");
    }
    conf.replace(at, std::string("persistence true").size(), "persistence false");
    std::ofstream(dir_ / "broker" / "mosquitto.conf") << conf;
  }
  broker_->start();

  write_central_config("central", 0);
  Process enroll({binary("central/checkpoint-central"), "enroll", "--config",
                  (dir_ / "central.yaml").string(), "--gateway", kGateway, "--pubkey", pub_pem_.string()},
                 dir_ / "enroll");
  if (enroll.wait(60s) != 0) {
    throw std::runtime_error("enroll failed: " + enroll.stderr_text());
  }
  central_ = start_central("central", 0);

  // A lane holds one vehicle at a time: 4 frames 25 ms apart let a lane take up to 10 vehicles/s (the default
  // 8 x 50 ms caps a lane at 2.5/s, 4 lanes at 10/s).
  sim_ = std::make_unique<Process>(
      std::vector<std::string>{binary("tools/sim/checkpoint-sim"), "radar", "--port", "0", "--lanes",
                               std::to_string(opt_.lanes), "--seed", "13", "--vehicles", "0", "--rate",
                               std::to_string(opt_.rate), "--frames-per-track", "4", "--frame-interval-ms",
                               "25"},
      dir_ / "sim");
  const auto line = sim_->wait_for_stdout_line("listening ", 10s);
  if (!line) {
    throw std::runtime_error("simulator did not start: " + sim_->stderr_text());
  }
  write_gateway_config(static_cast<std::uint16_t>(std::stoi(line->substr(10))));
  watch_ = std::make_unique<GatewayWatch>(dir_ / "store.db");
  daemon_ = std::make_unique<Process>(std::vector<std::string>{binary("daemon/app/checkpointd"), "--config",
                                                               (dir_ / "checkpointd.yaml").string()},
                                      dir_ / "checkpointd");
  const auto traffic_at = Clock::now();
  std::printf(
      "checkpointd custody bench (%s): %.0f vehicles/s on %d lanes, radar only; PostgreSQL fsync=off\n",
      dir_.c_str(), opt_.rate, opt_.lanes);
  std::fflush(stdout);

  bool ok = true;
  ok &= measure_latency("defaults",
                        "central receipts.every_ms 5000, every_records 1000, gaps.check_interval_ms 1000; "
                        "gateway custody knobs at their defaults");
  for (int i = 1; i <= opt_.restarts; ++i) {
    ok &= measure_restart("restart#" + std::to_string(i), false);
    ok &= measure_restart("crash#" + std::to_string(i), true);
  }
  if (opt_.short_every_ms > 0) {
    // A new central instance with a short every_ms takes the same session over.
    central_->signal(SIGTERM);
    central_->wait(30s);
    central_ = start_central("central-short", opt_.short_every_ms);
    const std::string cond =
        "central receipts.every_ms " + std::to_string(opt_.short_every_ms) + ", gaps.check_interval_ms " +
        std::to_string(std::max(50, opt_.short_every_ms / 5)) + "; gateway custody knobs at their defaults";
    ok &= measure_latency("short", cond);
  }
  while (seconds_since(traffic_at) < opt_.min_run_s) {
    alive();
    std::this_thread::sleep_for(500ms);
  }
  alive();
  const double run_s = seconds_since(traffic_at);

  // Custody counters from the gateway itself.
  Process status({binary("tools/checkpointctl/checkpointctl"), "status", "--json", "--config",
                  (dir_ / "checkpointd.yaml").string()},
                 dir_ / "status");
  status.wait(30s);
  nlohmann::json custody;
  try {
    custody = nlohmann::json::parse(status.stdout_text()).value("custody", nlohmann::json::object());
  } catch (const std::exception&) {
    custody = nlohmann::json::object();
  }
  daemon_->signal(SIGTERM);
  const auto rc = daemon_->wait(60s);
  central_->signal(SIGTERM);
  central_->wait(30s);
  sim_->signal(SIGTERM);
  sim_->wait(5s);
  const auto sizes = watch_->sizes();
  const auto records = watch_->records();
  watch_.reset();

  // Store size over the whole run. "used" is what SQLite holds ((page_count - freelist_count) x page_size,
  // the WAL's newer pages included); the files never shrink (no VACUUM): freed pages are reused.
  long long max_files = 0, max_used = 0, max_rows = 0;
  std::vector<std::size_t> prunes;  // samples right after a retention round deleted records
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto& s = sizes[i];
    max_files = std::max(max_files, s.db_bytes + s.wal_bytes);
    max_used = std::max(max_used, s.used_bytes());
    max_rows = std::max(max_rows, s.rows);
    if (i > 0 && s.rows < sizes[i - 1].rows) {
      prunes.push_back(i);
    }
    if ((i % 20 == 0 || i + 1 == sizes.size()) && s.rows >= 0) {
      std::printf("  store at %4.0f s: files db %8lld + wal %8lld B, used %8lld B, records held %5lld\n",
                  s.t_s, s.db_bytes, s.wal_bytes, s.used_bytes(), s.rows);
    }
  }
  const auto& last = sizes.back();
  const long long sealed = records.empty() ? 0 : records.back().seq;
  const std::string cond = "store.retention_days 0, custody.retention_check_ms 60000 (default); " +
                           std::to_string(static_cast<int>(run_s)) + " s of traffic, " +
                           std::to_string(sealed) + " records sealed";
  std::printf("store     files_bytes (db+wal) max / end     %lld / %lld B   (%s)\n", max_files,
              last.db_bytes + last.wal_bytes, cond.c_str());
  std::printf(
      "store     used_bytes max / end               %lld / %lld B   (records held max %lld, end %lld)\n",
      max_used, last.used_bytes(), max_rows, last.rows);
  if (!prunes.empty()) {
    const auto& before = sizes[prunes.front() - 1];
    const auto& at = sizes[prunes.front()];
    // From the second round on, the files hold what one round's worth of records needs: the steady state.
    const auto& steady = sizes[prunes.size() > 1 ? prunes[1] : prunes.front()];
    const double per_record = static_cast<double>(before.used_bytes()) / static_cast<double>(before.rows);
    std::printf(
        "store     used_bytes_per_record              %.0f B   (%lld records held before the first prune at "
        "%.0f s)\n",
        per_record, before.rows, at.t_s);
    std::printf(
        "store     files growth from prune round %zu to the end  %lld B over %.0f s   (files %lld B then, "
        "%lld B at the "
        "end; %zu retention rounds deleted records)\n",
        prunes.size() > 1 ? std::size_t{2} : std::size_t{1},
        last.db_bytes + last.wal_bytes - steady.db_bytes - steady.wal_bytes, last.t_s - steady.t_s,
        steady.db_bytes + steady.wal_bytes, last.db_bytes + last.wal_bytes, prunes.size());
    std::printf("store     without retention                  %.0f MB/day   (%.0f B x %.1f records/s)\n",
                per_record * static_cast<double>(sealed) / run_s * 86400.0 / 1e6, per_record,
                static_cast<double>(sealed) / run_s);
  } else {
    std::printf("store     NO PRUNE seen during the run\n");
    ok = false;
  }
  std::printf(
      "custody   gateway: receipts_accepted %lld, pruned_records %lld, resent_records %lld, resend_requests "
      "%lld, through_seq %lld\n",
      custody.value("receipts_accepted", -1LL), custody.value("pruned_records", -1LL),
      custody.value("resent_records", -1LL), custody.value("resend_requests", -1LL),
      custody.value("through_seq", -1LL));
  std::printf("check     daemon exit %d, whole bench %.0f s\n", rc ? *rc : -1, seconds_since(start));
  ok &= rc == 0;
  std::printf("result    %s\n", ok ? "every phase completed" : "FAILED");
  broker_->stop();
  pg_->stop();
  if (ok && std::getenv("CPD_BENCH_KEEP") == nullptr) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Bench bench(parse(argc, argv));
    return bench.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpd-custody-bench: %s\n", e.what());
    return 2;
  }
}
