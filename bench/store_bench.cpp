// Measures what SQLite on this disk can commit at all (WAL, synchronous=FULL, grouped commits), so the
// pipeline benchmark can be read against the storage ceiling.
#include "bench/store_bench.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace cpd::bench {

namespace {

namespace fs = std::filesystem;

// The same tables as schema v1 of the evidence store, so indexes and the outbox cost what they cost there.
constexpr const char* kSchema = R"sql(
  PRAGMA journal_mode=WAL;
  PRAGMA synchronous=FULL;
  CREATE TABLE records (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    time_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, jws TEXT NOT NULL);
  CREATE INDEX records_type_time ON records(type, time_ms);
  CREATE TABLE outbox (seq INTEGER PRIMARY KEY REFERENCES records(seq));
)sql";

fs::path bench_dir() {
  if (const char* env = std::getenv("CPD_BENCH_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  std::error_code ec;
  if (fs::is_directory("/var/tmp", ec)) {
    return "/var/tmp";
  }
  return fs::temp_directory_path();
}

// Owns the temp directory, the connection and the statements; releases them on every path.
class TempStore {
 public:
  TempStore() {
    std::string templ = (bench_dir() / "cpd-store-bench-XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr) {
      throw std::runtime_error("store bench: cannot make a temp dir in " + bench_dir().string());
    }
    dir_ = templ;
    const std::string path = (dir_ / "bench.db").string();
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
      fail("open " + path);
    }
    exec(kSchema);
    prepare(&insert_record_,
            "INSERT INTO records(seq, id, type, time_ms, created_ms, jws) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    prepare(&insert_outbox_, "INSERT INTO outbox(seq) VALUES (?1)");
  }
  ~TempStore() {
    sqlite3_finalize(insert_record_);
    sqlite3_finalize(insert_outbox_);
    sqlite3_close_v2(db_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  TempStore(const TempStore&) = delete;
  TempStore& operator=(const TempStore&) = delete;

  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      fail(sql);
    }
  }

  void insert(std::int64_t seq, const std::string& jws) {
    const std::string id = "bench-gw:" + std::to_string(seq);
    sqlite3_bind_int64(insert_record_, 1, seq);
    sqlite3_bind_text(insert_record_, 2, id.c_str(), static_cast<int>(id.size()), SQLITE_STATIC);
    sqlite3_bind_text(insert_record_, 3, "passage", -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert_record_, 4, 1'700'000'000'000 + seq);
    sqlite3_bind_int64(insert_record_, 5, 1'700'000'000'000 + seq);
    sqlite3_bind_text(insert_record_, 6, jws.c_str(), static_cast<int>(jws.size()), SQLITE_STATIC);
    step(insert_record_);
    sqlite3_bind_int64(insert_outbox_, 1, seq);
    step(insert_outbox_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("store bench: " + what + ": " + sqlite3_errmsg(db_));
  }
  void prepare(sqlite3_stmt** stmt, const char* sql) {
    if (sqlite3_prepare_v2(db_, sql, -1, stmt, nullptr) != SQLITE_OK) {
      fail(sql);
    }
  }
  void step(sqlite3_stmt* stmt) {
    const int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) {
      fail("insert");
    }
  }

  fs::path dir_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_record_ = nullptr;
  sqlite3_stmt* insert_outbox_ = nullptr;
};

// A JWS-shaped ASCII string of about 1.5 KB that differs per record (no page ever compresses to nothing).
std::string jws_for(std::int64_t seq) {
  static const std::string body = [] {
    const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string s;
    unsigned x = 2463534242U;
    for (int i = 0; i < 1400; ++i) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      s += alphabet[x % 64];
    }
    return s;
  }();
  return "eyJhbGciOiJFZERTQSIsInR5cCI6ImNwZCtqd3MifQ." + body + "." + std::to_string(seq);
}

}  // namespace

double measure_grouped_inserts(std::size_t batch, std::chrono::milliseconds budget) {
  if (batch == 0) {
    throw std::invalid_argument("store bench: batch must be at least 1");
  }
  TempStore store;
  std::int64_t seq = 0;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = std::chrono::steady_clock::duration::zero();
  do {
    store.exec("BEGIN IMMEDIATE");
    for (std::size_t i = 0; i < batch; ++i) {
      ++seq;
      store.insert(seq, jws_for(seq));
    }
    store.exec("COMMIT");  // one WAL fsync per transaction with synchronous=FULL
    elapsed = std::chrono::steady_clock::now() - start;
  } while (elapsed < budget);
  return static_cast<double>(seq) / std::chrono::duration<double>(elapsed).count();
}

}  // namespace cpd::bench
