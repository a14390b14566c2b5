// The recorder-dock adapter against a small fake station on a loopback socket (dock_test_server.h), a
// DockLedger kept in memory with its own worker thread (like the store worker), and a sink that commits
// records only when the test says so: hashing, ack after commit, Range resumes, MD5 faults, ack conflicts,
// repeated listings, the parallel limit, 401, and a partial file left from an earlier run.
#include "adapters/recorder/recorder_adapter.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/digest.h"
#include "daemon/media/media_store.h"
#include "daemon/pipeline/recorder_clock.h"
#include "tests/support/device_test_helpers.h"
#include "tests/unit/recorder/dock_test_server.h"

namespace cpd::adapters {
namespace {

using cpd::test::of_type;

namespace asio = boost::asio;
namespace fs = std::filesystem;
using test::FakeDock;
using test::FakeDockFile;
using test::md5_of;
using test::sha256_of;
using test::test_bytes;

constexpr UnixMs kDockNow = 1795750730000;  // 2026-11-27T03:38:50Z = 11:38:50+08:00, the station's time
constexpr const char* kDevice = "dock-1";

// Waits for pred with a deadline, re-checking when `cv` is notified or every few ms (for state that no
// condition variable covers, such as the adapter's status snapshot).
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  std::mutex m;
  std::condition_variable cv;
  std::unique_lock lock(m);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (cv.wait_until(lock,
                      std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(5))) ==
            std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline) {
      return pred();
    }
  }
  return true;
}

// The dock ledger in memory, answering on its own thread as the store worker does.
class MemoryLedger final : public DockLedger {
 public:
  MemoryLedger() : worker_([this] { run(); }) {}
  ~MemoryLedger() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  void load(const std::string& device_id, std::function<void(Status, DockLedgerState)> done) override {
    post([this, device_id, done = std::move(done)] {
      DockLedgerState st;
      {
        std::lock_guard lock(mutex_);
        ++loads_;
        st.cursor = cursor_[device_id];
        for (const auto& key : order_) {
          const auto& f = files_.at(key);
          if (f.state == DockFileState::kPending || f.state == DockFileState::kRecorded) {
            st.open.push_back(f);
          }
        }
      }
      done(Status::ok(), std::move(st));
    });
  }

  void save_listing(const std::string& device_id, std::vector<DockLedgerFile> files, std::string next_cursor,
                    DockListingBudget budget,
                    std::function<void(Status, std::vector<DockLedgerFile>)> done) override {
    post([this, device_id, files = std::move(files), next_cursor, budget, done = std::move(done)]() mutable {
      std::vector<DockLedgerFile> out;
      {
        std::lock_guard lock(mutex_);
        std::size_t new_files = 0;
        std::size_t new_bytes = 0;
        bool complete = true;
        for (auto& f : files) {
          const std::string key = f.unique_id + "|" + f.md5;
          if (!files_.contains(key)) {
            // As the store does: new files only within the budget, and the first that does not fit ends it.
            if (new_files >= budget.files || f.entry_json.size() > budget.bytes - new_bytes) {
              complete = false;
              break;
            }
            ++new_files;
            new_bytes += f.entry_json.size();
            f.state = DockFileState::kPending;
            files_[key] = f;
            order_.push_back(key);
          }
          out.push_back(files_[key]);
        }
        if (complete) {
          cursor_[device_id] = next_cursor;
        }
        ++saves_;
      }
      cv_.notify_all();
      done(Status::ok(), std::move(out));
    });
  }

  void mark_acked(const std::string&, const std::string& unique_id, const std::string& md5,
                  std::function<void(Status)> done) override {
    post([this, unique_id, md5, done = std::move(done)] {
      {
        std::lock_guard lock(mutex_);
        files_[unique_id + "|" + md5].state = DockFileState::kAcked;
      }
      cv_.notify_all();
      done(Status::ok());
    });
  }

  // What a record's commit does (RecordEffects::dock_update): kRecorded with the sha256, or kFaulted for a
  // fault.
  void commit(const std::string& unique_id, const std::string& md5, const std::string& sha256, bool fault,
              std::function<void()> then) {
    post([this, unique_id, md5, sha256, fault, then = std::move(then)] {
      {
        std::lock_guard lock(mutex_);
        auto& f = files_[unique_id + "|" + md5];
        f.state = fault ? DockFileState::kFaulted : DockFileState::kRecorded;
        f.sha256 = sha256;
        f.record_id = "gw:" + std::to_string(++records_);
      }
      then();
    });
  }

  // A file from an earlier run.
  void preload(DockLedgerFile f, const std::string& cursor) {
    std::lock_guard lock(mutex_);
    const std::string key = f.unique_id + "|" + f.md5;
    files_[key] = std::move(f);
    order_.push_back(key);
    cursor_[kDevice] = cursor;
  }

  std::optional<DockFileState> state(const std::string& unique_id, const std::string& md5) const {
    std::lock_guard lock(mutex_);
    auto it = files_.find(unique_id + "|" + md5);
    if (it == files_.end()) {
      return std::nullopt;
    }
    return it->second.state;
  }
  std::string cursor() const {
    std::lock_guard lock(mutex_);
    auto it = cursor_.find(kDevice);
    return it == cursor_.end() ? std::string() : it->second;
  }

 private:
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }
  void run() {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) {
          return;
        }
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::map<std::string, DockLedgerFile> files_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> cursor_;
  int loads_ = 0;
  int saves_ = 0;
  int records_ = 0;
  std::thread worker_;  // last: started after everything it uses
};

// Collects events; commits a recording (or fault) through the ledger when the test asks, or at once when
// auto_commit is on.
class RecordingSink final : public EventSink {
 public:
  explicit RecordingSink(MemoryLedger& ledger) : ledger_(ledger) {}

  void emit(DeviceEvent event) override {
    std::unique_lock lock(mutex_);
    events_.push_back(event);
    const std::size_t index = events_.size() - 1;
    const bool commit_now = auto_commit_;
    lock.unlock();
    cv_.notify_all();
    if (commit_now) {
      commit(index);
    }
  }
  bool congested() const override { return congested_; }

  void set_auto_commit(bool on) {
    std::lock_guard lock(mutex_);
    auto_commit_ = on;
  }
  void set_congested(bool on) { congested_ = on; }

  // Commits the event at `index` (a RecordingCollected or DockFileFault): ledger first, then on_committed
  // on the ledger's thread, as the store worker does.
  void commit(std::size_t index) {
    DeviceEvent ev;
    {
      std::lock_guard lock(mutex_);
      ev = events_.at(index);
    }
    if (auto* rc = std::get_if<RecordingCollected>(&ev)) {
      auto cb = rc->on_committed;
      ledger_.commit(rc->file.unique_id, rc->file.md5, rc->sha256, false, [cb] { cb("gw:rec"); });
    } else if (auto* f = std::get_if<DockFileFault>(&ev)) {
      auto cb = f->on_committed;
      ledger_.commit(f->file.unique_id, f->file.md5, "", true, [cb] { cb("gw:fault"); });
    }
  }

  bool wait_for(const std::function<bool(const std::vector<DeviceEvent>&)>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return pred(events_); });
  }
  std::vector<DeviceEvent> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  MemoryLedger& ledger_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<DeviceEvent> events_;
  bool auto_commit_ = false;
  std::atomic<bool> congested_{false};
};

template <typename T>
std::size_t count_of(const std::vector<DeviceEvent>& events) {
  return of_type<T>(events).size();
}

// Index of the n-th event of type T (0-based).
template <typename T>
std::size_t index_of(const std::vector<DeviceEvent>& events, std::size_t n = 0) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (std::holds_alternative<T>(events[i]) && n-- == 0) {
      return i;
    }
  }
  return events.size();
}

FakeDockFile dock_file(std::string unique_id, std::string content) {
  FakeDockFile f;
  f.unique_id = std::move(unique_id);
  f.content = std::move(content);
  return f;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class RecorderAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-recorder-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    media_ = std::make_unique<media::MediaStore>((dir_ / "media").string());
  }
  void TearDown() override {
    if (adapter_) {
      adapter_->stop();
    }
    work_.reset();
    for (auto& t : io_threads_) {
      t.join();
    }
    blocking_.join();
    adapter_.reset();
    fs::remove_all(dir_);
  }

  RecorderDockConfig config_for(std::uint16_t port) const {
    RecorderDockConfig c;
    c.id = kDevice;
    c.url = "http://127.0.0.1:" + std::to_string(port);
    c.host = "127.0.0.1";
    c.port = port;
    c.token_file = "/etc/checkpointd/dock-1.token";
    c.token = "secret";
    c.poll_interval_ms = 50;
    c.list_limit = 100;
    c.max_parallel_downloads = 2;
    c.request_timeout_s = 5;
    c.download_idle_timeout_s = 5;
    c.max_md5_attempts = 3;
    c.reconnect_initial_ms = 20;
    c.reconnect_max_ms = 200;
    c.auth_backoff_s = 60;
    return c;
  }

  void start(const RecorderDockConfig& c) {
    ctx_.emplace(AdapterContext{io_, sink_, clock_, &blocking_, media_.get(), &ledger_});
    adapter_ = make_recorder_adapter(c, *ctx_);
    adapter_->start();
    for (int i = 0; i < 2; ++i) {
      io_threads_.emplace_back([this] { io_.run(); });
    }
  }

  std::string partial_path(const std::string& unique_id, const std::string& md5) const {
    return media_->partial_dir() + "/" + kDevice + "-" + unique_id + "-" + md5 + ".part";
  }

  std::uint64_t counter(const std::string& name) const {
    return adapter_->status().at(name).get<std::uint64_t>();
  }

  fs::path dir_;
  std::unique_ptr<media::MediaStore> media_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{io_.get_executor()};
  asio::thread_pool blocking_{2};
  cpd::test::FixedClock clock_{kDockNow};
  MemoryLedger ledger_;
  RecordingSink sink_{ledger_};
  std::optional<AdapterContext> ctx_;
  std::unique_ptr<Adapter> adapter_;
  std::vector<std::thread> io_threads_;
};

TEST_F(RecorderAdapterTest, DownloadsHashesAndAcksOnlyAfterCommit) {
  FakeDock dock;
  const std::string big = test_bytes(3 * 1024 * 1024 + 12345, 1);  // several chunks
  const std::string small = test_bytes(777, 2);
  dock.add_file(dock_file("BWC-00917-20261127-000153", big));
  dock.add_file(dock_file("BWC-00917-20261127-000154", small));
  start(config_for(dock.port()));

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 2; }));
  const auto recs = of_type<RecordingCollected>(sink_.events());
  std::map<std::string, std::string> content = {{"BWC-00917-20261127-000153", big},
                                                {"BWC-00917-20261127-000154", small}};
  for (const auto& rc : recs) {
    const std::string& bytes = content.at(rc.file.unique_id);
    // The adapter's streaming digest against OpenSSL and against FileDigest over the same bytes at once.
    EXPECT_EQ(rc.sha256, sha256_of(bytes));
    FileDigest whole;
    whole.update(bytes);
    EXPECT_EQ(rc.sha256, whole.finish().sha256);
    EXPECT_EQ(rc.media_path, media_->path_of(rc.sha256));
    EXPECT_EQ(read_file(rc.media_path), bytes);
    EXPECT_EQ(rc.device_id, kDevice);
    EXPECT_EQ(rc.station_id, "DS-2011-0042");
    EXPECT_EQ(rc.firmware, "3.4.1");
    EXPECT_EQ(rc.download_attempts, 1);
    EXPECT_EQ(rc.resumes, 0);
    EXPECT_EQ(rc.collected_ms, kDockNow);
    ASSERT_TRUE(rc.station_clock.has_value());
    // Station time 11:38:50 (whole seconds) against a gateway fixed at 11:38:50.000: offset in [0, 1000].
    EXPECT_GE(rc.station_clock->offset_ms, 0);
    EXPECT_LE(rc.station_clock->offset_ms, 1000);
    // What the recorder-clock rule (daemon/pipeline) needs: when the file was listed, the tolerance.
    EXPECT_EQ(rc.listed_ms, kDockNow);
    EXPECT_EQ(rc.recorder_clock_tolerance_s, config_for(0).recorder_clock_tolerance_s);
    const auto clock =
        pipeline::read_recorder_clock(rc.file, rc.listed_ms, rc.station_clock, rc.recorder_clock_tolerance_s);
    EXPECT_FALSE(clock.recorder_clock_off);
    EXPECT_EQ(clock.recorder_offset_ms, 0);
    EXPECT_EQ(clock.start_ms, rc.file.start_ms - rc.station_clock->offset_ms);
    EXPECT_FALSE(fs::exists(partial_path(rc.file.unique_id, rc.file.md5)));
  }
  // Nothing is acked before its record is committed.
  EXPECT_TRUE(dock.acks().empty());
  EXPECT_EQ(ledger_.state("BWC-00917-20261127-000153", md5_of(big)), DockFileState::kPending);

  const auto events = sink_.events();
  const std::size_t first = index_of<RecordingCollected>(events, 0);
  const auto& committed = std::get<RecordingCollected>(events[first]);
  sink_.commit(first);
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 1; }));
  const auto acks = dock.acks();
  EXPECT_EQ(acks[0].unique_id, committed.file.unique_id);
  EXPECT_EQ(acks[0].sha256, sha256_of(content.at(committed.file.unique_id)));
  ASSERT_TRUE(eventually(
      [&] { return ledger_.state(committed.file.unique_id, committed.file.md5) == DockFileState::kAcked; }));

  sink_.commit(index_of<RecordingCollected>(events, 1));
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 2; }));
  ASSERT_TRUE(eventually([&] { return counter("acks") == 2; }));
  const auto st = adapter_->status();
  EXPECT_EQ(st["kind"], "recorder_dock");
  EXPECT_EQ(st["station_id"], "DS-2011-0042");
  EXPECT_EQ(st["collected"], 2);
  EXPECT_EQ(st["bytes_collected"], big.size() + small.size());
  EXPECT_EQ(st["files_listed"], 2);
  // The token went out as a bearer token and never anywhere else.
  for (const auto& h : dock.auth_headers()) {
    EXPECT_EQ(h, "Bearer secret");
  }
  EXPECT_EQ(st.dump().find("secret"), std::string::npos);
}

TEST_F(RecorderAdapterTest, BrokenTransferResumesWithRange) {
  FakeDock dock;
  const std::string bytes = test_bytes(2 * 1024 * 1024 + 99, 3);
  const std::size_t cut = 1024 * 1024 + 4321;
  FakeDockFile f1 = dock_file("F1", bytes);
  f1.breaks_left = 1;
  f1.break_at = cut;
  dock.add_file(f1);
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 1; }));
  const auto rc = of_type<RecordingCollected>(sink_.events()).at(0);
  EXPECT_EQ(rc.sha256, sha256_of(bytes));
  EXPECT_EQ(read_file(rc.media_path), bytes);
  EXPECT_EQ(rc.resumes, 1);
  EXPECT_EQ(rc.download_attempts, 1);
  const auto ranges = dock.ranges("F1");
  ASSERT_EQ(ranges.size(), 2U);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=" + std::to_string(cut) + "-");
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 1; }));
  EXPECT_EQ(dock.acks()[0].sha256, sha256_of(bytes));
  EXPECT_EQ(counter("resumes"), 1U);
}

TEST_F(RecorderAdapterTest, PartialFileFromEarlierRunResumesWithRange) {
  FakeDock dock;
  const std::string bytes = test_bytes(1500000, 4);
  const std::string md5 = md5_of(bytes);
  const std::size_t k = 600001;
  dock.add_file(dock_file("F2", bytes));
  {
    std::ofstream out(partial_path("F2", md5), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(k));
  }
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 1; }));
  const auto rc = of_type<RecordingCollected>(sink_.events()).at(0);
  EXPECT_EQ(rc.sha256, sha256_of(bytes));
  EXPECT_EQ(read_file(rc.media_path), bytes);
  EXPECT_EQ(rc.resumes, 1);
  ASSERT_EQ(dock.ranges("F2").size(), 1U);
  EXPECT_EQ(dock.ranges("F2")[0], "bytes=" + std::to_string(k) + "-");
  EXPECT_FALSE(fs::exists(partial_path("F2", md5)));
}

TEST_F(RecorderAdapterTest, StationIgnoringRangeStartsTheFileOver) {
  FakeDock dock;
  dock.ignore_range(true);
  const std::string bytes = test_bytes(800000, 5);
  const std::string md5 = md5_of(bytes);
  dock.add_file(dock_file("F3", bytes));
  {
    std::ofstream out(partial_path("F3", md5), std::ios::binary);
    out.write(bytes.data(), 1000);
  }
  start(config_for(dock.port()));
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 1; }));
  const auto rc = of_type<RecordingCollected>(sink_.events()).at(0);
  EXPECT_EQ(rc.sha256, sha256_of(bytes));
  EXPECT_EQ(read_file(rc.media_path), bytes);
  EXPECT_EQ(dock.content_requests("F3"), 1);
}

TEST_F(RecorderAdapterTest, Md5MismatchThreeTimesIsOneFaultAndNoAck) {
  FakeDock dock;
  const std::string bytes = test_bytes(300000, 6);
  const std::string wrong_md5 = "0123456789abcdef0123456789ABCDEF";
  FakeDockFile bad = dock_file("BAD", bytes);
  bad.listed_md5 = wrong_md5;
  dock.add_file(bad);
  dock.add_file(dock_file("GOOD", test_bytes(1000, 7)));
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<DockFileFault>(ev) == 1; }));
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 1; }));  // GOOD only
  // The fault's commit marks the file faulted; later polls list nothing new and nothing more happens.
  ASSERT_TRUE(eventually(
      [&] { return ledger_.state("BAD", "0123456789abcdef0123456789abcdef") == DockFileState::kFaulted; }));
  const int listings = dock.listings();
  ASSERT_TRUE(dock.wait_for([&] { return dock.listings_locked() >= listings + 3; }));

  const auto events = sink_.events();
  const auto faults = of_type<DockFileFault>(events);
  ASSERT_EQ(faults.size(), 1U);
  EXPECT_EQ(faults[0].reason, "md5_mismatch");
  EXPECT_EQ(faults[0].attempts, 3);
  EXPECT_EQ(faults[0].sha256, sha256_of(bytes));
  EXPECT_NE(faults[0].detail.find("0123456789abcdef0123456789abcdef"), std::string::npos);
  EXPECT_NE(faults[0].detail.find(md5_of(bytes)), std::string::npos);
  EXPECT_EQ(faults[0].file.unique_id, "BAD");
  EXPECT_EQ(dock.content_requests("BAD"), 3);
  for (const auto& rc : of_type<RecordingCollected>(events)) {
    EXPECT_NE(rc.file.unique_id, "BAD");
  }
  for (const auto& a : dock.acks()) {
    EXPECT_NE(a.unique_id, "BAD");
  }
  EXPECT_EQ(counter("md5_mismatches"), 3U);
  EXPECT_EQ(counter("faults"), 1U);
  EXPECT_FALSE(fs::exists(partial_path("BAD", "0123456789abcdef0123456789abcdef")));
}

TEST_F(RecorderAdapterTest, AckConflictBecomesFault) {
  FakeDock dock;
  dock.set_ack_status(409);
  const std::string bytes = test_bytes(5000, 8);
  dock.add_file(dock_file("C1", bytes));
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<DockFileFault>(ev) == 1; }));
  const auto f = of_type<DockFileFault>(sink_.events()).at(0);
  EXPECT_EQ(f.reason, "ack_conflict");
  EXPECT_EQ(f.sha256, sha256_of(bytes));
  EXPECT_EQ(f.file.unique_id, "C1");
  ASSERT_TRUE(eventually([&] { return ledger_.state("C1", md5_of(bytes)) == DockFileState::kFaulted; }));
  EXPECT_EQ(dock.acks().size(), 1U);
  EXPECT_EQ(counter("ack_conflicts"), 1U);
  EXPECT_EQ(counter("acks"), 0U);
}

TEST_F(RecorderAdapterTest, RepeatedListingAfterLostCursorIsNotDownloadedTwice) {
  FakeDock dock;
  const std::string a = test_bytes(4000, 9);
  const std::string b = test_bytes(5000, 10);
  dock.add_file(dock_file("R1", a));
  dock.add_file(dock_file("R2", b));
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 2; }));
  ASSERT_TRUE(eventually([&] { return ledger_.state("R2", md5_of(b)) == DockFileState::kAcked; }));

  // The station restarts and forgets the cursor: the next listing answers 400, the adapter lists from the
  // start and gets R1 and R2 again, plus a new R3.
  dock.add_file(dock_file("R3", test_bytes(6000, 11)));
  dock.lose_cursor_once();
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 3; }));
  ASSERT_TRUE(eventually([&] { return counter("repeated") >= 2; }));

  EXPECT_EQ(dock.bad_cursor_answers(), 1);
  EXPECT_EQ(dock.content_requests("R1"), 1);
  EXPECT_EQ(dock.content_requests("R2"), 1);
  EXPECT_EQ(dock.content_requests("R3"), 1);
  EXPECT_EQ(count_of<RecordingCollected>(sink_.events()), 3U);
  bool warned = false;
  for (const auto& s : of_type<DeviceStatusEvent>(sink_.events())) {
    warned = warned || (s.state == "warning" && s.text.find("cursor") != std::string::npos);
  }
  EXPECT_TRUE(warned);
  EXPECT_EQ(ledger_.cursor(), "c3");
}

TEST_F(RecorderAdapterTest, ParallelDownloadsStayWithinTheLimit) {
  FakeDock dock;
  dock.hold_downloads(2, std::chrono::milliseconds(150));
  for (int i = 0; i < 6; ++i) {
    dock.add_file(dock_file("P" + std::to_string(i), test_bytes(20000 + i, 20 + i)));
  }
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 6; },
                             std::chrono::seconds(20)));
  EXPECT_EQ(dock.max_concurrent(), 2);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(dock.content_requests("P" + std::to_string(i)), 1);
  }
}

TEST_F(RecorderAdapterTest, CongestedSinkHoldsNewDownloads) {
  FakeDock dock;
  dock.add_file(dock_file("Q1", test_bytes(1000, 30)));
  sink_.set_congested(true);
  start(config_for(dock.port()));
  // Listed and persisted, but not fetched while the core is behind.
  ASSERT_TRUE(eventually([&] { return counter("files_listed") == 1 && counter("queued") == 1; }));
  ASSERT_TRUE(dock.wait_for([&] { return dock.listings_locked() >= 3; }));
  EXPECT_EQ(dock.content_requests("Q1"), 0);
  sink_.set_congested(false);
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 1; }));
}

TEST_F(RecorderAdapterTest, UnauthorizedIsAFaultNamingTheTokenFile) {
  FakeDock dock("another-token");
  dock.add_file(dock_file("U1", test_bytes(100, 40)));
  start(config_for(dock.port()));
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) {
    for (const auto& s : of_type<DeviceStatusEvent>(ev)) {
      if (s.state == "fault") {
        return true;
      }
    }
    return false;
  }));
  const auto statuses = of_type<DeviceStatusEvent>(sink_.events());
  const auto fault =
      std::find_if(statuses.begin(), statuses.end(), [](const auto& s) { return s.state == "fault"; });
  ASSERT_NE(fault, statuses.end());
  EXPECT_EQ(fault->kind, "recorder_dock");
  EXPECT_EQ(fault->device_id, kDevice);
  EXPECT_NE(fault->text.find("/etc/checkpointd/dock-1.token"), std::string::npos);
  EXPECT_EQ(fault->text.find("secret"), std::string::npos);
  EXPECT_EQ(adapter_->status()["state"], "auth_failed");
  EXPECT_EQ(dock.unauthorized(), 1);  // waits auth_backoff_s (60 s) before asking again
  EXPECT_EQ(dock.content_requests("U1"), 0);
}

TEST_F(RecorderAdapterTest, UnreachableStationIsReportedOnceAndRecovered) {
  // A port with nothing listening: bind, note the port, close.
  std::uint16_t port = 0;
  {
    asio::io_context tmp;
    asio::ip::tcp::acceptor a(tmp, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  start(config_for(port));
  ASSERT_TRUE(eventually([&] { return counter("reconnects") >= 3; }));
  const auto statuses = of_type<DeviceStatusEvent>(sink_.events());
  ASSERT_EQ(statuses.size(), 1U);
  EXPECT_EQ(statuses[0].state, "disconnected");
  EXPECT_EQ(adapter_->status()["state"], "disconnected");
}

TEST_F(RecorderAdapterTest, RecordedFilesFromTheLedgerAreAckedAtStart) {
  FakeDock dock;
  const std::string bytes = test_bytes(2000, 50);
  dock.add_file(dock_file("L1", bytes));
  DockLedgerFile lf;
  lf.unique_id = "L1";
  lf.md5 = md5_of(bytes);
  lf.entry_json = R"({"uniqueId":"L1"})";  // not needed to ack
  lf.state = DockFileState::kRecorded;
  lf.sha256 = sha256_of(bytes);
  lf.record_id = "gw:7";
  ledger_.preload(lf, "c1");
  start(config_for(dock.port()));
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 1; }));
  EXPECT_EQ(dock.acks()[0].sha256, sha256_of(bytes));
  ASSERT_TRUE(eventually([&] { return ledger_.state("L1", lf.md5) == DockFileState::kAcked; }));
  EXPECT_EQ(dock.content_requests("L1"), 0);
}

TEST_F(RecorderAdapterTest, RecorderAheadOfTheStationIsCorrected) {
  FakeDock dock;
  // Collected "at" 11:48:50 by the recorder while the station's clock read 11:38:50: 10 minutes ahead.
  FakeDockFile f = dock_file("A1", test_bytes(100, 60));
  f.start_time = "2026-11-27T11:45:00+08:00";
  f.end_time = "2026-11-27T11:47:00+08:00";
  f.collect_time = "2026-11-27T11:48:50+08:00";
  dock.add_file(f);
  start(config_for(dock.port()));
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 1; }));
  const auto rc = of_type<RecordingCollected>(sink_.events()).at(0);
  ASSERT_TRUE(rc.station_clock.has_value());
  const std::int64_t s = rc.station_clock->offset_ms;
  // The rule (daemon/pipeline/recorder_clock.h) on what the adapter reported.
  const auto clock =
      pipeline::read_recorder_clock(rc.file, rc.listed_ms, rc.station_clock, rc.recorder_clock_tolerance_s);
  EXPECT_TRUE(clock.recorder_clock_off);
  EXPECT_EQ(clock.recorder_offset_ms, 600000 - s);
  // Corrected: recorder time - recorder offset - station offset = 10 minutes earlier on the gateway clock.
  EXPECT_EQ(clock.start_ms, rc.file.start_ms - 600000);
  EXPECT_EQ(clock.end_ms, rc.file.end_ms - 600000);
}

// Issue 12, defect 2: a malformed entry (start time 0000-00-00, a uniqueId with ../ or a NUL, text that is
// not UTF-8, a member named twice) blocked every file listed with or after it, for good. Each is refused
// alone as a fault naming the entry and the reason; the files around them are collected and the cursor
// moves past all of them.
TEST_F(RecorderAdapterTest, MalformedEntriesAreFaultedAloneAndTheOthersCollected) {
  FakeDock dock;
  const std::string good1 = test_bytes(3000, 70);
  const std::string good2 = test_bytes(4000, 71);
  dock.add_file(dock_file("GOOD-1", good1));
  auto malformed = [&](const std::string& id, const std::string& raw) {
    FakeDockFile f = dock_file(id, "x");
    f.raw_entry = raw;
    dock.add_file(f);
  };
  const std::string md5 = md5_of("x");
  const std::string tail = R"(,"deviceId":"BWC-00917","officerId":"1","caseCode":"","fileName":"a.mp4",)"
                           R"("fileType":"video","format":"mp4","length":1,"md5":")" +
                           md5 +
                           R"(","endTime":"2026-11-27T11:37:40+08:00",)"
                           R"("collectTime":"2026-11-27T11:38:00+08:00","important":false)";
  malformed("ZERO", R"({"uniqueId":"ZERO","officerName":"a","startTime":"0000-00-00")" + tail + "}");
  malformed("DOTS", R"({"uniqueId":"../../etc/x","officerName":"a","startTime":"2026-11-27T11:37:12+08:00")" +
                        tail + "}");
  malformed("NUL", R"({"uniqueId":"BWC\u0000x","officerName":"a","startTime":"2026-11-27T11:37:12+08:00")" +
                       tail + "}");
  malformed("GBK",
            "{\"uniqueId\":\"GBK\",\"officerName\":\"\xCD\xF5\xCE\xB0\","
            "\"startTime\":\"2026-11-27T11:37:12+08:00\"" +
                tail + "}");
  malformed("TWICE", R"({"uniqueId":"TWICE","officerName":"a","startTime":"2026-11-27T11:37:12+08:00")" +
                         tail + R"(,"length":999})");
  dock.add_file(dock_file("GOOD-2", good2));
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));

  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 2; })) << adapter_->status().dump();
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<DockFileFault>(ev) == 5; }))
      << adapter_->status().dump();
  ASSERT_TRUE(eventually([&] { return ledger_.cursor() == "c7"; }));
  std::map<std::string, DockFileFault> by_field;
  for (const auto& f : of_type<DockFileFault>(sink_.events())) {
    EXPECT_EQ(f.reason, "bad_entry");
    EXPECT_EQ(f.attempts, 0);
    EXPECT_TRUE(f.sha256.empty());
    EXPECT_FALSE(f.file.raw_json.empty());  // the entry's bytes, for the record
    by_field[f.detail.substr(0, f.detail.find(':', f.detail.find(": ") + 2))] = f;
  }
  ASSERT_EQ(by_field.size(), 5U) << ::testing::PrintToString(sink_.events().size());
  EXPECT_TRUE(by_field.contains("refused (schema): files[1].startTime"));
  EXPECT_TRUE(by_field.contains("refused (schema): files[2].uniqueId"));
  EXPECT_TRUE(by_field.contains("refused (schema): files[3].uniqueId"));
  EXPECT_TRUE(by_field.contains("refused (not_utf8): files[4].officerName"));
  EXPECT_TRUE(by_field.contains("refused (duplicate_key): files[5].length"));
  // Keyed by the listed id where it is one, else by the entry's bytes; every one closed in the ledger.
  EXPECT_EQ(by_field["refused (schema): files[1].startTime"].file.unique_id, "ZERO");
  EXPECT_EQ(by_field["refused (schema): files[2].uniqueId"].file.unique_id.rfind("refused-", 0), 0U);
  for (const auto& [field, f] : by_field) {
    ASSERT_TRUE(eventually([&] {
      return ledger_.state(f.file.unique_id, f.file.md5) == DockFileState::kFaulted;
    })) << field;
  }
  for (const char* id : {"ZERO", "DOTS", "NUL", "GBK", "TWICE"}) {
    EXPECT_EQ(dock.content_requests(id), 0) << id;
  }
  EXPECT_EQ(counter("entries_refused"), 5U);
  const auto errors = adapter_->status()["errors"];
  EXPECT_EQ(errors["schema"], 3);
  EXPECT_EQ(errors["not_utf8"], 1);
  EXPECT_EQ(errors["duplicate_key"], 1);
  // Listed again (the station restarts and forgets the cursor): recognised, not faulted twice.
  dock.lose_cursor_once();
  ASSERT_TRUE(eventually([&] { return counter("repeated") >= 7; }));
  EXPECT_EQ(count_of<DockFileFault>(sink_.events()), 5U);
}

// Issue 12, defect 5: files taken from the station are bounded (max_pending_files); the others stay on it,
// behind the cursor, and are all collected once there is room.
TEST_F(RecorderAdapterTest, PendingFilesAreBoundedAndTheRestWaitOnTheStation) {
  FakeDock dock;
  constexpr int kFiles = 10;
  for (int i = 0; i < kFiles; ++i) {
    dock.add_file(dock_file("B" + std::to_string(i), test_bytes(1000 + i, 80 + i)));
  }
  RecorderDockConfig c = config_for(dock.port());
  c.max_pending_files = 3;
  start(c);  // no commits: nothing leaves the pending set
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 3; }));
  // Polls go on; listings are held at the bound.
  ASSERT_TRUE(eventually([&] { return counter("listings_held") >= 3; }));
  EXPECT_EQ(count_of<RecordingCollected>(sink_.events()), 3U);
  EXPECT_EQ(counter("pending"), 3U);
  EXPECT_TRUE(adapter_->status()["pending_limit_reached"].get<bool>());
  EXPECT_EQ(ledger_.cursor(), "c3");
  EXPECT_FALSE(ledger_.state("B3", md5_of(test_bytes(1003, 83))).has_value()) << "persisted beyond the bound";
  for (const auto limit : dock.limits()) {
    EXPECT_LE(limit, 3U);
  }
  // Room again: everything is collected and acknowledged, none twice.
  sink_.set_auto_commit(true);
  for (std::size_t i = 0; i < 3; ++i) {
    sink_.commit(index_of<RecordingCollected>(sink_.events(), i));
  }
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == kFiles; }, std::chrono::seconds(20)))
      << adapter_->status().dump();
  for (int i = 0; i < kFiles; ++i) {
    EXPECT_EQ(dock.content_requests("B" + std::to_string(i)), 1);
  }
  EXPECT_GT(counter("listings_held"), 0U);
}

// A station that ignores `limit` and lists everything: the ledger takes what fits and keeps the cursor, so
// the files not taken are listed again (and taken) later; none is lost, none persisted beyond the bound.
TEST_F(RecorderAdapterTest, AStationIgnoringTheLimitIsCutAtTheBound) {
  FakeDock dock;
  dock.ignore_limit(true);
  constexpr int kFiles = 12;
  for (int i = 0; i < kFiles; ++i) {
    dock.add_file(dock_file("I" + std::to_string(i), test_bytes(500 + i, 100 + i)));
  }
  RecorderDockConfig c = config_for(dock.port());
  c.max_pending_files = 4;
  start(c);
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<RecordingCollected>(ev) == 4; }));
  ASSERT_TRUE(eventually([&] { return counter("listings_held") >= 3; }));
  EXPECT_EQ(count_of<RecordingCollected>(sink_.events()), 4U);
  EXPECT_EQ(ledger_.cursor(), "") << "the cursor moved past files not taken";
  EXPECT_FALSE(ledger_.state("I4", md5_of(test_bytes(504, 104))).has_value());
  sink_.set_auto_commit(true);
  for (std::size_t i = 0; i < 4; ++i) {
    sink_.commit(index_of<RecordingCollected>(sink_.events(), i));
  }
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == kFiles; }, std::chrono::seconds(20)))
      << adapter_->status().dump();
  ASSERT_TRUE(eventually([&] { return ledger_.cursor() == "c12"; }));
  for (int i = 0; i < kFiles; ++i) {
    EXPECT_EQ(dock.content_requests("I" + std::to_string(i)), 1);
  }
}

// Issue 12: a file bigger than its listed size was reported as md5_mismatch.
TEST_F(RecorderAdapterTest, AFileBiggerThanListedIsASizeMismatch) {
  FakeDock dock;
  FakeDockFile f = dock_file("BIG", test_bytes(5000, 120));
  f.listed_length = 4000;
  dock.add_file(f);
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<DockFileFault>(ev) == 1; }));
  const auto fault = of_type<DockFileFault>(sink_.events()).at(0);
  EXPECT_EQ(fault.reason, "size_mismatch");
  EXPECT_EQ(fault.attempts, 3);
  EXPECT_EQ(adapter_->status()["errors"]["size_mismatch"], 3);
  EXPECT_EQ(counter("md5_mismatches"), 0U);
}

// A listed file whose content answers 404 used to be dropped and listed again for ever (and could fill the
// ledger behind the pending bound): now it is asked a few times with backoff, then closed by a fault.
TEST_F(RecorderAdapterTest, AListedFileThatIsNotFoundBecomesAFault) {
  FakeDock dock;
  FakeDockFile gone = dock_file("GONE", test_bytes(100, 130));
  gone.not_found = true;
  dock.add_file(gone);
  dock.add_file(dock_file("HERE", test_bytes(100, 131)));
  sink_.set_auto_commit(true);
  start(config_for(dock.port()));
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return count_of<DockFileFault>(ev) == 1; }));
  ASSERT_TRUE(dock.wait_for([&] { return dock.acks_locked() == 1; }));
  const auto fault = of_type<DockFileFault>(sink_.events()).at(0);
  EXPECT_EQ(fault.reason, "not_found");
  EXPECT_EQ(fault.file.unique_id, "GONE");
  EXPECT_EQ(dock.content_requests("GONE"), 3);
  ASSERT_TRUE(
      eventually([&] { return ledger_.state("GONE", md5_of(gone.content)) == DockFileState::kFaulted; }));
  // The ledger is written by the commit; the adapter forgets the file when the commit reaches its strand.
  EXPECT_TRUE(eventually([&] { return counter("pending") == 0U; })) << adapter_->status().dump();
}

}  // namespace
}  // namespace cpd::adapters
