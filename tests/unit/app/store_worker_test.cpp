// StoreWorker with a real SQLite store and media directory: facts are sealed and committed in order,
// the outbox pages carry their media bytes, retention never deletes an unacknowledged record's media, a
// fact the sealer refuses is still sealed (salvaged), shutdown retries count consecutive failures, and
// failed fsyncs (a SQLite VFS that fails on demand) are retried without losing or repeating a record.
#include "daemon/app/store_worker.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "daemon/core/encoding.h"
#include "daemon/pipeline/recording_fact.h"
#include "tests/support/faulty_vfs.h"
#include "tests/unit/app/app_test_support.h"

namespace cpd::app {
namespace {

using test::eventually;
using test::FixedClock;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class StoreWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cpd-sw-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    store_ = std::make_unique<store::EvidenceStore>((dir_ / "store.db").string());
    media_ = std::make_unique<media::MediaStore>((dir_ / "media").string());
    sealer_ = std::make_unique<Sealer>(key_, "gw", store_->chain_head());
  }
  void TearDown() override {
    worker_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void start_worker(int retention_days = 30) {
    worker_ = std::make_unique<StoreWorker>(
        *store_, *sealer_, clock_, 64,
        [this](std::uint64_t last, std::vector<forwarder::CommittedRecord>) {
          std::lock_guard lock(mutex_);
          last_seq_ = last;
          cv_.notify_all();
        },
        media_.get(), retention_days);
  }

  bool wait_seq(std::uint64_t seq) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 5s, [&] { return last_seq_ >= seq; });
  }

  std::vector<store::OutboxEntry> fetch(std::uint64_t after, std::size_t limit) {
    std::mutex m;
    std::condition_variable cv;
    std::optional<std::vector<store::OutboxEntry>> out;
    worker_->fetch_after(after, limit, [&](std::optional<std::vector<store::OutboxEntry>> e) {
      std::lock_guard lock(m);
      out = std::move(e).value_or(std::vector<store::OutboxEntry>{});
      cv.notify_all();
    });
    std::unique_lock lock(m);
    cv.wait_for(lock, 5s, [&] { return out.has_value(); });
    return out.value_or(std::vector<store::OutboxEntry>{});
  }

  std::string put(const std::string& bytes) {
    media::StoredMedia stored;
    EXPECT_TRUE(media_->put(bytes, stored).is_ok());
    return stored.sha256;
  }

  void age(const std::string& sha, int days) {
    fs::last_write_time(media_->path_of(sha),
                        fs::file_time_type::clock::now() - std::chrono::hours(24 * days));
  }

  Fact fact_with_media(std::vector<std::string> media) {
    Fact f;
    f.type = "plate_read";
    f.time_ms = 1795700000000;
    nlohmann::json pictures = nlohmann::json::array();
    for (const auto& m : media) {
      pictures.push_back({{"sha256", m}});
    }
    f.fields = {{"pictures", pictures}};
    f.media = std::move(media);
    return f;
  }

  fs::path dir_;
  Ed25519PrivateKey key_ = Ed25519PrivateKey::generate();
  FixedClock clock_;
  std::unique_ptr<store::EvidenceStore> store_;
  std::unique_ptr<media::MediaStore> media_;
  std::unique_ptr<Sealer> sealer_;
  std::unique_ptr<StoreWorker> worker_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t last_seq_ = 0;
};

// store.commit_linger_ms: facts submitted within the linger share one transaction (one fsync); a full batch
// and a stop do not wait for it.
TEST_F(StoreWorkerTest, FactsWithinTheCommitLingerShareOneCommit) {
  start_worker();
  std::mutex m;
  std::vector<std::size_t> commits;
  worker_->set_commit_observer([&](std::chrono::steady_clock::duration, std::size_t records) {
    std::lock_guard lock(m);
    commits.push_back(records);
  });
  worker_->set_commit_linger(400ms);
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    worker_->submit(fact_with_media({}));
  }
  ASSERT_TRUE(wait_seq(3));
  EXPECT_GE(std::chrono::steady_clock::now() - started, 390ms);
  {
    std::lock_guard lock(m);
    EXPECT_EQ(commits, std::vector<std::size_t>{3});
  }
  // A full batch (64 here) goes at once, whatever the linger.
  worker_->set_commit_linger(std::chrono::milliseconds(60000));
  for (int i = 0; i < 64; ++i) {
    worker_->submit(fact_with_media({}));
  }
  ASSERT_TRUE(wait_seq(3 + 64));
  // A stop commits what waits without waiting out the linger.
  worker_->submit(fact_with_media({}));
  const auto stopping = std::chrono::steady_clock::now();
  worker_->drain_and_stop();
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 10s);
  EXPECT_EQ(store_->chain_head().seq, 3u + 64u + 1u);
}

TEST_F(StoreWorkerTest, CommitsFactsInOrderAndPagesCarryTheirMedia) {
  const std::string a = put("picture-a");
  const std::string b = put("picture-b");
  start_worker();
  worker_->submit(fact_with_media({a, b}));
  Fact plain;
  plain.type = "audit";
  worker_->submit(plain);
  ASSERT_TRUE(wait_seq(2));
  const auto entries = fetch(0, 10);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].seq, 1u);
  ASSERT_EQ(entries[0].media.size(), 2u);
  ASSERT_EQ(entries[0].media_bytes.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(sha256_hex(entries[0].media_bytes[i]), entries[0].media[i]);
  }
  EXPECT_TRUE(entries[1].media.empty());
}

TEST_F(StoreWorkerTest, AMediaFileThatNoLongerHashesRightIsNotPublished) {
  const std::string a = put("picture-a");
  std::ofstream(media_->path_of(a), std::ios::trunc) << "tampered";
  start_worker();
  worker_->submit(fact_with_media({a}));
  ASSERT_TRUE(wait_seq(1));
  const auto entries = fetch(0, 10);
  ASSERT_EQ(entries.size(), 1u);
  ASSERT_EQ(entries[0].media_bytes.size(), 1u);
  EXPECT_TRUE(entries[0].media_bytes[0].empty());
  EXPECT_TRUE(fs::exists(media_->path_of(a))) << "kept for inspection";
}

TEST_F(StoreWorkerTest, RetentionDeletesOnlyOldMediaInCentralsCustody) {
  const std::string pending = put("old, named by a record not yet PUBACKed");
  const std::string acked = put("old, named by a PUBACKed record central has not confirmed");
  const std::string held = put("old, named by a record in custody");
  const std::string orphan = put("old, named by nothing, younger than the store");
  const std::string foreign = put("old, named by nothing, older than the store (a previous store's)");
  const std::string fresh = put("recent, named by nothing");
  // This store names media since 45 days ago (its creation, here moved back for the test).
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "store.db").c_str(), &db), SQLITE_OK);
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();  // file times are real ones
    const std::string since = std::to_string(now_ms - 45LL * 86400000);
    EXPECT_EQ(
        sqlite3_exec(db, ("UPDATE store_info SET value = " + since + " WHERE key = 'media_since_ms'").c_str(),
                     nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  // Records first (the sweep runs when the worker first has work), then age the files.
  start_worker(30);
  worker_->submit(fact_with_media({pending}));
  worker_->submit(fact_with_media({held}));
  worker_->submit(fact_with_media({acked}));
  ASSERT_TRUE(wait_seq(3));
  worker_->forwarded({2, 3});
  worker_.reset();  // drains: the PUBACK deletion is committed
  // Central's receipt covers seq 1..2; seq 1 is still in the outbox.
  ASSERT_TRUE(store_->set_custody({2, std::string(64, '0'), "central", "kid", "receipt", 1}).is_ok());
  for (const auto& sha : {pending, acked, held, orphan}) {
    age(sha, 40);
  }
  age(foreign, 50);
  age(fresh, 2);
  // Temporary files of writes a crash interrupted: a stale one goes, one being written now stays.
  const fs::path stale_tmp = fs::path(media_->dir()) / ".tmp-AbC123";
  const fs::path live_tmp = fs::path(media_->dir()) / ".tmp-XyZ789";
  std::ofstream(stale_tmp) << "half a picture";
  std::ofstream(live_tmp) << "a picture being written";
  fs::last_write_time(stale_tmp, fs::file_time_type::clock::now() - std::chrono::hours(25));
  start_worker(30);
  Fact wake;
  wake.type = "audit";
  worker_->submit(wake);
  ASSERT_TRUE(wait_seq(4));
  worker_.reset();
  EXPECT_TRUE(fs::exists(media_->path_of(pending))) << "its record is still in the outbox";
  EXPECT_TRUE(fs::exists(media_->path_of(acked))) << "a PUBACK is not custody";
  EXPECT_FALSE(fs::exists(media_->path_of(held)));
  EXPECT_FALSE(fs::exists(media_->path_of(orphan)));
  EXPECT_TRUE(fs::exists(media_->path_of(foreign)))
      << "older than the store and named by none of its records: not this store's to delete";
  EXPECT_TRUE(fs::exists(media_->path_of(fresh))) << "younger than the retention period";
  EXPECT_FALSE(fs::exists(stale_tmp)) << "a crash's temporary file, a day old";
  EXPECT_TRUE(fs::exists(live_tmp));
}

nlohmann::json body_of(const std::string& jws) {
  const auto a = jws.find('.');
  const auto b = jws.find('.', a + 1);
  return nlohmann::json::parse(base64url_decode(jws.substr(a + 1, b - a - 1)).value());
}

class LinkTest : public StoreWorkerTest {
 protected:
  static constexpr UnixMs kT = 1795699000000;

  void start() {
    worker_ = std::make_unique<StoreWorker>(
        *store_, *sealer_, clock_, 64,
        [this](std::uint64_t last, std::vector<forwarder::CommittedRecord> records) {
          std::lock_guard lock(mutex_);
          last_seq_ = last;
          for (auto& r : records) {
            bodies_.push_back(body_of(r.jws));
          }
          cv_.notify_all();
        },
        media_.get(), 30, pipeline::LinkRule{}, 200);
  }
  static Fact vehicle(const std::string& type, UnixMs t) {
    Fact f;
    f.type = type;
    f.time_ms = t;
    f.fields = {{"plate", "浙A12345"}};
    return f;
  }
  pipeline::DockFileFact recording(UnixMs start, UnixMs end, bool important = false) {
    pipeline::DockFileFact f;
    f.fact.type = "recording";
    f.fact.time_ms = start;
    f.fact.fields = {{"unique_id", "BWC-1-" + std::to_string(start)}};
    f.effects.link_span = pipeline::LinkRule{}.span(start, end);
    f.effects.kept_media = {store::KeptMedia{std::string(64, 'c'), important}};
    f.effects.dock_update = store::DockFileUpdate{"dock-1", "BWC-1-" + std::to_string(start),
                                                  std::string(32, '0'), std::string(64, 'c')};
    f.on_committed = [this](const std::string& id) {
      std::lock_guard lock(mutex_);
      committed_ids_.push_back(id);
    };
    return f;
  }
  std::vector<nlohmann::json> of_type(const std::string& type) {
    std::lock_guard lock(mutex_);
    std::vector<nlohmann::json> out;
    for (const auto& b : bodies_) {
      if (b["type"] == type) {
        out.push_back(b);
      }
    }
    return out;
  }
  std::vector<nlohmann::json> bodies_;
  std::vector<std::string> committed_ids_;
};

TEST_F(LinkTest, ARecordingListsTheVehicleRecordsInItsSpanAndEachPairGetsALinkRecord) {
  start();
  worker_->submit(vehicle("speeding", kT));         // gw:1, inside
  worker_->submit(vehicle("passage", kT - 59000));  // gw:2, inside the 60 s margin before
  worker_->submit(vehicle("passage", kT - 61001));  // gw:3, 1 ms before the span
  worker_->submit(vehicle("device_status", kT));    // gw:4, not a vehicle record
  ASSERT_TRUE(wait_seq(4));
  worker_->submit(recording(kT - 1000, kT + 30000));  // gw:5 in a later batch: from the store
  ASSERT_TRUE(wait_seq(7));
  const auto recs = of_type("recording");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["links"], nlohmann::json::array({"gw:1", "gw:2"}));
  const auto links = of_type("link");
  ASSERT_EQ(links.size(), 2u);
  EXPECT_EQ(links[0]["seq"], 6);
  EXPECT_EQ(links[0]["recording"], "gw:5");
  EXPECT_EQ(links[0]["record"], "gw:1");
  EXPECT_EQ(links[0]["record_type"], "speeding");
  EXPECT_EQ(links[1]["record"], "gw:2");
  {
    std::lock_guard lock(mutex_);
    EXPECT_EQ(committed_ids_, std::vector<std::string>{"gw:5"});
  }
  // The kept file is held for the retention period and its dock file is recorded with the record.
  EXPECT_TRUE(store_->media_held(std::string(64, 'c'), clock_.now_ms() + 29LL * 24 * 3600 * 1000));
  EXPECT_FALSE(store_->media_held(std::string(64, 'c'), clock_.now_ms() + 31LL * 24 * 3600 * 1000));
}

// GA/T 832's "one panorama plus video": a link between a speeding record and a video recording says whether
// the pair meets it, from the records' sealed bodies, whether the speeding record was stored before the
// recording, sealed after it, or in the same batch. A passage link says nothing of it.
TEST_F(LinkTest, ASpeedingRecordsLinkToAVideoSaysWhetherOnePanoramaPlusVideoIsMet) {
  start();
  const auto speeding = [](UnixMs t, int panoramas) {
    Fact f = vehicle("speeding", t);
    f.fields["checks"] = {{"panoramas", {{"count", panoramas}}}};
    return f;
  };
  const auto video = [this](UnixMs start, UnixMs end, const std::string& file_type) {
    pipeline::DockFileFact f = recording(start, end);
    f.fact.fields["file_type"] = file_type;
    f.fact.fields["start_ms"] = start;
    f.fact.fields["end_ms"] = end;
    f.fact.fields["time_reliable"] = true;
    return f;
  };
  worker_->submit(speeding(kT, 1));          // gw:1, inside the video
  worker_->submit(speeding(kT - 30000, 1));  // gw:2, within the margin only
  worker_->submit(vehicle("passage", kT));   // gw:3
  ASSERT_TRUE(wait_seq(3));
  worker_->submit(video(kT - 1000, kT + 5000, "video"));  // gw:4 -> links gw:5..7
  ASSERT_TRUE(wait_seq(7));
  worker_->submit(speeding(kT + 2000, 0));  // gw:8, no usable panorama -> link gw:9
  ASSERT_TRUE(wait_seq(9));
  worker_->submit(video(kT + 100000, kT + 110000, "audio"));  // gw:10 -> link gw:12 (same batch, usually)
  worker_->submit(speeding(kT + 105000, 1));                  // gw:11
  ASSERT_TRUE(wait_seq(12));
  std::map<std::string, nlohmann::json> by_record;
  for (const auto& l : of_type("link")) {
    by_record[l["record"].get<std::string>()] = l;
  }
  ASSERT_EQ(by_record.size(), 5u);
  EXPECT_EQ(by_record["gw:1"]["panoramas_with_video"]["met"], true) << by_record["gw:1"].dump();
  EXPECT_EQ(by_record["gw:1"]["panoramas_with_video"]["panoramas"], 1);
  EXPECT_EQ(by_record["gw:2"]["panoramas_with_video"]["met"], false);
  EXPECT_EQ(by_record["gw:2"]["panoramas_with_video"]["covers_record_time"], false);
  EXPECT_FALSE(by_record["gw:3"].contains("panoramas_with_video"));
  EXPECT_EQ(by_record["gw:8"]["panoramas_with_video"]["met"], false);
  EXPECT_EQ(by_record["gw:8"]["panoramas_with_video"]["covers_record_time"], true);
  EXPECT_EQ(by_record["gw:11"]["panoramas_with_video"]["video"], false);
  EXPECT_EQ(by_record["gw:11"]["panoramas_with_video"]["met"], false);
}

TEST_F(LinkTest, AnImportantRecordingIsHeldForTheLongerPeriod) {
  start();
  worker_->submit(recording(kT, kT + 1000, true));
  ASSERT_TRUE(wait_seq(1));
  EXPECT_TRUE(store_->media_held(std::string(64, 'c'), clock_.now_ms() + 199LL * 24 * 3600 * 1000));
}

TEST_F(LinkTest, AVehicleRecordSealedAfterTheRecordingGetsALinkRecord) {
  start();
  worker_->submit(recording(kT, kT + 10000));  // gw:1, links []
  ASSERT_TRUE(wait_seq(1));
  worker_->submit(vehicle("passage", kT + 5000));  // gw:2 (from the store's spans) -> link gw:3
  ASSERT_TRUE(wait_seq(3));
  // Submitted together (usually one batch, both orders; the store path gives the same result otherwise).
  worker_->submit(vehicle("speeding", kT + 100000));    // gw:4
  worker_->submit(recording(kT + 99000, kT + 101000));  // gw:5 links [gw:4] -> link gw:6
  worker_->submit(vehicle("plate_read", kT + 100500));  // gw:7 -> link gw:8
  ASSERT_TRUE(wait_seq(8));
  const auto recs = of_type("recording");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["links"], nlohmann::json::array());
  EXPECT_EQ(recs[1]["links"], nlohmann::json::array({"gw:4"}));
  const auto links = of_type("link");
  ASSERT_EQ(links.size(), 3u);
  EXPECT_EQ(links[0]["seq"], 3);
  EXPECT_EQ(links[0]["recording"], "gw:1");
  EXPECT_EQ(links[0]["record"], "gw:2");
  EXPECT_EQ(links[1]["recording"], "gw:5");
  EXPECT_EQ(links[1]["record"], "gw:4");
  EXPECT_EQ(links[2]["recording"], "gw:5");
  EXPECT_EQ(links[2]["record"], "gw:7");
  EXPECT_EQ(links[2]["time_ms"], kT + 100500);
}

// Another connection holding the write lock: the worker's commits fail (Status::retry) until released.
class WriteLock {
 public:
  explicit WriteLock(const fs::path& db) { EXPECT_EQ(sqlite3_open(db.c_str(), &db_), SQLITE_OK); }
  ~WriteLock() {
    release();
    sqlite3_close(db_);
  }
  void take() { ASSERT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK); }
  void release() {
    if (sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

 private:
  sqlite3* db_ = nullptr;
};

// Defect: the shutdown limit counted failures over the worker's whole life, so after an earlier outage of
// 21+ failed commits, shutdown gave up at its first failed retry and a fact submitted later was lost.
TEST_F(StoreWorkerTest, AnEarlierOutageDoesNotShortenTheRetriesAtShutdown) {
  store_ = std::make_unique<store::EvidenceStore>(
      (dir_ / "store.db").string(),
      store::StoreOptions{.busy_timeout = std::chrono::milliseconds(1), .vfs = {}});
  start_worker();
  worker_->set_commit_retry_backoff(10ms, 10ms);
  WriteLock lock(dir_ / "store.db");

  // An outage of 25 failed commits, then the store recovers.
  lock.take();
  worker_->submit(fact_with_media({}));
  ASSERT_TRUE(eventually([&] { return worker_->commit_failures() >= 25; }));
  lock.release();
  ASSERT_TRUE(wait_seq(1));

  // A second, short outage while the daemon stops: the worker must keep retrying (up to 21 in a row).
  lock.take();
  worker_->submit(fact_with_media({}));
  const std::uint64_t before = worker_->commit_failures();
  ASSERT_TRUE(eventually([&] { return worker_->commit_failures() > before; }));
  std::thread stopper([&] { worker_->drain_and_stop(); });
  const std::uint64_t at_stop = worker_->commit_failures();
  const bool kept_trying = eventually([&] { return worker_->commit_failures() >= at_stop + 3; }, 2s);
  lock.release();
  stopper.join();
  EXPECT_TRUE(kept_trying) << "gave up at shutdown after " << worker_->commit_failures() - at_stop
                           << " failed retries";
  EXPECT_EQ(store_->chain_head().seq, 2u) << "the fact submitted before shutdown was not committed";
  EXPECT_EQ(worker_->committed_records(), 2u);
}

// A fact the sealer refuses (here: a fraction, a reserved name, text that is not UTF-8, a member name
// that is not UTF-8) is sealed anyway with everything that can be kept; it is never a bare fault.
TEST_F(StoreWorkerTest, AFactTheSealerRefusesIsSealedWithEveryMemberThatCanBe) {
  std::vector<nlohmann::json> bodies;
  worker_ = std::make_unique<StoreWorker>(
      *store_, *sealer_, clock_, 64,
      [&](std::uint64_t last, std::vector<forwarder::CommittedRecord> records) {
        std::lock_guard lock(mutex_);
        last_seq_ = last;
        for (auto& r : records) {
          bodies.push_back(body_of(r.jws));
        }
        cv_.notify_all();
      },
      media_.get());
  Fact f;
  f.type = "speeding";
  f.time_ms = 1795700000000;
  f.fields = {{"speed_dkmh", 1500},
              {"plate",
               "\xd5\xe3"
               "A12345"},
              {"ratio", 1.5},
              {"seq", 7},
              {"camera_event", {{"uuid", "u-1"}, {"raw_xml", "<p>\xd5\xe3</p>"}}},
              {"enforceable", true},
              {"reasons", nlohmann::json::array()}};
  f.fields["bad\xff"] = 1;
  f.media = {std::string(64, 'a')};
  worker_->submit(f);
  ASSERT_TRUE(wait_seq(1));
  EXPECT_EQ(worker_->salvaged_facts(), 1u);
  std::lock_guard lock(mutex_);
  ASSERT_EQ(bodies.size(), 1u);
  const auto& b = bodies[0];
  EXPECT_EQ(b["type"], "speeding");
  EXPECT_EQ(b["seq"], 1);
  EXPECT_EQ(b["speed_dkmh"], 1500);
  EXPECT_EQ(b["plate"], "\\xd5\\xe3A12345");
  EXPECT_EQ(b["plate_raw_b64"], "1eNBMTIzNDU=");
  EXPECT_EQ(b["camera_event"]["uuid"], "u-1");
  EXPECT_EQ(b["camera_event"]["raw_xml_raw_b64"], base64_encode("<p>\xd5\xe3</p>"));
  EXPECT_EQ(b["text_not_utf8"], nlohmann::json::array({"camera_event.raw_xml", "plate"}));
  EXPECT_EQ(b["enforceable"], false);
  EXPECT_EQ(b["reasons"], nlohmann::json::array({"unsealable_fields"}));
  std::vector<std::string> named;
  for (const auto& u : b["unsealable_fields"]) {
    named.push_back(u["path"].get<std::string>());
  }
  EXPECT_EQ(named, (std::vector<std::string>{"bad\\xff", "ratio", "seq"}));
  EXPECT_FALSE(b.contains("fault"));
}

// The disk fails: the commit's fsync returns an I/O error twice (SQLITE_IOERR_FSYNC, through a VFS that
// fails on demand) while facts keep arriving. The worker counts the failed commits and commits the same
// facts again: every fact ends in the store once, in order, each record chained to the one before, no seq
// skipped or reused.
TEST_F(StoreWorkerTest, FailedFsyncsAreRetriedAndNoRecordIsLostOrRepeated) {
  testing::FaultyVfs& vfs = testing::FaultyVfs::instance();
  store::StoreOptions options;
  options.vfs = testing::FaultyVfs::kName;
  store_ = std::make_unique<store::EvidenceStore>((dir_ / "store.db").string(), options);
  start_worker();
  worker_->set_commit_retry_backoff(5ms, 20ms);
  worker_->submit(fact_with_media({}));
  ASSERT_TRUE(wait_seq(1));

  const int failed_before = vfs.failed_syncs();
  vfs.fail_syncs(1, 2);  // the next two syncs fail
  for (int i = 0; i < 10; ++i) {
    worker_->submit(fact_with_media({}));
  }
  ASSERT_TRUE(wait_seq(11));
  EXPECT_EQ(vfs.failed_syncs() - failed_before, 2);
  EXPECT_GE(worker_->commit_failures(), 1u);
  // The count is updated just after the commit handler that wait_seq() watches.
  EXPECT_TRUE(eventually([&] { return worker_->committed_records() == 11u; }))
      << worker_->committed_records();
  EXPECT_EQ(store_->chain_head().seq, 11u);
  std::string prev(64, '0');
  for (std::uint64_t seq = 1; seq <= 11; ++seq) {
    const auto rec = store_->record(seq);
    ASSERT_TRUE(rec.has_value()) << "seq " << seq << " missing";
    const std::string& jws = rec->jws;
    const auto dot1 = jws.find('.');
    const auto body =
        nlohmann::json::parse(*base64url_decode(jws.substr(dot1 + 1, jws.rfind('.') - dot1 - 1)));
    EXPECT_EQ(body["seq"], seq);
    EXPECT_EQ(body["prev"], prev) << "seq " << seq;
    prev = sha256_hex(jws);
  }
  EXPECT_FALSE(store_->record(12).has_value());
}

}  // namespace
}  // namespace cpd::app
