// EvidenceStore against real SQLite files in a temp dir: chain head recovery after crashes, chain checks,
// outbox order and PUBACK removal, and the refusals at start (corrupt, not a database, newer schema).
#include "daemon/store/evidence_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "daemon/core/encoding.h"

namespace cpd::store {
namespace {

namespace fs = std::filesystem;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr UnixMs kBaseMs = 1'700'000'000'000;

SealedRecord make_record(std::uint64_t seq, std::string jws = {}) {
  SealedRecord r;
  r.seq = seq;
  r.id = "gw-7:" + std::to_string(seq);
  r.type = seq % 2 == 0 ? "speed_violation" : "passage";
  r.time_ms = kBaseMs + static_cast<UnixMs>(seq) * 10;
  r.created_ms = kBaseMs + static_cast<UnixMs>(seq) * 10 + 3;
  // ~1.5 KB, like a real JWS, so a few hundred records span many pages.
  r.jws = jws.empty() ? "eyJhbGciOiJFZERTQSJ9." + std::string(1400, static_cast<char>('A' + seq % 26)) + "." +
                            std::to_string(seq)
                      : std::move(jws);
  return r;
}

std::vector<SealedRecord> make_batch(std::uint64_t first, std::size_t n) {
  std::vector<SealedRecord> batch;
  for (std::size_t i = 0; i < n; ++i) {
    batch.push_back(make_record(first + i));
  }
  return batch;
}

std::string read_bytes(const fs::path& p) {
  std::string bytes(fs::file_size(p), '\0');
  std::ifstream in(p, std::ios::binary);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_EQ(in.gcount(), static_cast<std::streamsize>(bytes.size())) << p;
  return bytes;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint64_t> seqs_of(const std::vector<OutboxEntry>& entries) {
  std::vector<std::uint64_t> seqs;
  for (const auto& e : entries) {
    seqs.push_back(e.seq);
  }
  return seqs;
}

// Runs one SQL statement on a second, raw connection (what another process would see) and returns the
// first column of the first row.
std::string raw_query(const fs::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  std::string value;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  EXPECT_TRUE(rc == SQLITE_ROW || rc == SQLITE_DONE) << sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

class EvidenceStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-store-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    db_ = dir_ / "store.db";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Expects the constructor to refuse the file and returns the message.
  std::string open_error(const fs::path& p) {
    try {
      EvidenceStore store(p.string());
    } catch (const StoreError& e) {
      return e.what();
    }
    ADD_FAILURE() << "store " << p << " was opened, expected a StoreError";
    return {};
  }

  fs::path dir_;
  fs::path db_;
};

TEST_F(EvidenceStoreTest, NewStoreIsEmptyAtSchemaVersionInWalMode) {
  EvidenceStore store(db_.string());
  EXPECT_EQ(store.chain_head(), ChainHead{});
  EXPECT_EQ(store.chain_head().jws_sha256, std::string(64, '0'));
  EXPECT_EQ(store.record_count(), 0U);
  EXPECT_EQ(store.outbox_stats().count, 0U);
  EXPECT_FALSE(store.outbox_stats().oldest_created_ms.has_value());
  EXPECT_TRUE(store.outbox_after(0, 10).value().empty());
  EXPECT_FALSE(store.record(1).has_value());
  EXPECT_EQ(store.path(), db_.string());
  EXPECT_EQ(raw_query(db_, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw_query(db_, "PRAGMA user_version"), std::to_string(EvidenceStore::kSchemaVersion));
}

TEST_F(EvidenceStoreTest, AppendAdvancesHeadAndKeepsRecords) {
  EvidenceStore store(db_.string());
  ASSERT_TRUE(store.append(make_batch(1, 3)).is_ok());
  auto last = make_record(4, "abc");
  ASSERT_TRUE(store.append({last}).is_ok());
  // SHA-256("abc"), the FIPS 180-2 test vector: the head hashes the JWS bytes themselves.
  EXPECT_EQ(store.chain_head(),
            (ChainHead{4, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}));
  EXPECT_EQ(store.record_count(), 4U);
  auto got = store.record(2);
  ASSERT_TRUE(got.has_value());
  auto want = make_record(2);
  EXPECT_EQ(got->seq, want.seq);
  EXPECT_EQ(got->id, want.id);
  EXPECT_EQ(got->type, want.type);
  EXPECT_EQ(got->time_ms, want.time_ms);
  EXPECT_EQ(got->created_ms, want.created_ms);
  EXPECT_EQ(got->jws, want.jws);
  EXPECT_TRUE(store.append(std::vector<SealedRecord>{}).is_ok());
  EXPECT_EQ(store.record_count(), 4U);
  // The lowest seq held in a range (a receipt's lost_seqs are checked with it).
  EXPECT_EQ(store.first_held(2, 9).seq, std::optional<std::uint64_t>(2));
  EXPECT_EQ(store.first_held(4, 4).seq, std::optional<std::uint64_t>(4));
  EXPECT_EQ(store.first_held(5, 100).seq, std::nullopt);
  EXPECT_FALSE(store.first_held(5, 100).unreadable);
}

TEST_F(EvidenceStoreTest, ReopenRecoversHeadAfterPlainClose) {
  ChainHead head;
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(1, 5)).is_ok());
    ASSERT_TRUE(store.append(make_batch(6, 7)).is_ok());
    head = store.chain_head();
  }
  EvidenceStore store(db_.string());
  EXPECT_EQ(store.chain_head(), head);
  EXPECT_EQ(store.chain_head().seq, 12U);
  EXPECT_EQ(store.record_count(), 12U);
  // The chain continues exactly at head + 1: no seq skipped or reused.
  EXPECT_EQ(store.append(make_batch(12, 1)).kind(), Status::Kind::kFail);
  EXPECT_EQ(store.append(make_batch(14, 1)).kind(), Status::Kind::kFail);
  EXPECT_TRUE(store.append(make_batch(13, 1)).is_ok());
}

TEST_F(EvidenceStoreTest, CopyOfDbAndWalMidRunRecoversCommittedHead) {
  const fs::path copy_dir = dir_ / "copy";
  fs::create_directory(copy_dir);
  ChainHead head_at_copy;
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(1, 20)).is_ok());
    ASSERT_TRUE(store.append(make_batch(21, 9)).is_ok());
    head_at_copy = store.chain_head();
    // What a power cut leaves: the main file and the WAL holding the committed, not yet checkpointed frames.
    ASSERT_GT(fs::file_size(fs::path(db_.string() + "-wal")), 0U);
    fs::copy_file(db_, copy_dir / "store.db");
    fs::copy_file(db_.string() + "-wal", copy_dir / "store.db-wal");
    ASSERT_TRUE(store.append(make_batch(30, 5)).is_ok());  // after the "crash": must not be seen
  }
  EvidenceStore recovered((copy_dir / "store.db").string());
  EXPECT_EQ(recovered.chain_head(), head_at_copy);
  EXPECT_EQ(recovered.record_count(), 29U);
  EXPECT_EQ(recovered.outbox_stats().count, 29U);
  EXPECT_TRUE(recovered.append(make_batch(30, 2)).is_ok());
  EXPECT_EQ(recovered.chain_head().seq, 31U);
}

TEST_F(EvidenceStoreTest, ProcessKilledWithoutClosingKeepsCommittedRecords) {
  const pid_t child = fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    // The child never closes the store: _exit skips destructors, as a crash would.
    int code = 1;
    {
      auto* store = new EvidenceStore(db_.string());
      if (store->append(make_batch(1, 8)).is_ok() && store->append(make_batch(9, 8)).is_ok()) {
        code = 0;
      }
    }
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EvidenceStore store(db_.string());
  EXPECT_EQ(store.chain_head().seq, 16U);
  EXPECT_EQ(store.chain_head().jws_sha256.size(), 64U);
  EXPECT_NE(store.chain_head().jws_sha256, std::string(64, '0'));
  EXPECT_EQ(store.outbox_stats().count, 16U);
  auto rec = store.record(16);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->jws, make_record(16).jws);
}

TEST_F(EvidenceStoreTest, BatchThatDoesNotContinueTheChainIsRefusedAndWritesNothing) {
  EvidenceStore store(db_.string());
  ASSERT_TRUE(store.append(make_batch(1, 3)).is_ok());
  const ChainHead head = store.chain_head();

  auto check_refused = [&](const std::vector<SealedRecord>& batch, const char* why) {
    Status s = store.append(batch);
    EXPECT_EQ(s.kind(), Status::Kind::kFail) << why;
    EXPECT_THAT(s.message(), HasSubstr("seq")) << why;
    EXPECT_THAT(s.message(), HasSubstr(db_.string())) << why;
    EXPECT_EQ(store.chain_head(), head) << why;
    EXPECT_EQ(store.record_count(), 3U) << why;
    EXPECT_EQ(store.outbox_stats().count, 3U) << why;
    EXPECT_FALSE(store.record(4).has_value()) << why;
  };
  check_refused(make_batch(5, 2), "gap");
  check_refused(make_batch(3, 2), "reuse");
  check_refused({make_record(4), make_record(6)}, "not consecutive");
  check_refused({make_record(4), make_record(4)}, "repeated seq");

  // A constraint violation half-way (same id twice) rolls back the records already inserted.
  auto dup = make_batch(4, 2);
  dup[1].id = dup[0].id;
  Status s = store.append(dup);
  EXPECT_EQ(s.kind(), Status::Kind::kFail);
  EXPECT_THAT(s.message(), HasSubstr("UNIQUE"));
  EXPECT_EQ(store.record_count(), 3U);
  EXPECT_FALSE(store.record(4).has_value());
  EXPECT_EQ(store.chain_head(), head);

  EXPECT_TRUE(store.append(make_batch(4, 2)).is_ok());
  EXPECT_EQ(store.chain_head().seq, 5U);
}

TEST_F(EvidenceStoreTest, OutboxIsInSeqOrderAndLosesOnlyForwardedRecords) {
  EvidenceStore store(db_.string());
  ASSERT_TRUE(store.append(make_batch(1, 6)).is_ok());
  ASSERT_TRUE(store.append(make_batch(7, 4)).is_ok());

  auto first = store.outbox_after(0, 4).value();
  EXPECT_EQ(seqs_of(first), (std::vector<std::uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(first[1].jws, make_record(2).jws);
  EXPECT_EQ(first[1].created_ms, make_record(2).created_ms);
  EXPECT_EQ(seqs_of(store.outbox_after(4, 100).value()), (std::vector<std::uint64_t>{5, 6, 7, 8, 9, 10}));
  EXPECT_TRUE(store.outbox_after(10, 100).value().empty());
  EXPECT_TRUE(store.outbox_after(0, 0).value().empty());

  OutboxStats stats = store.outbox_stats();
  EXPECT_EQ(stats.count, 10U);
  EXPECT_EQ(stats.oldest_created_ms, make_record(1).created_ms);

  // PUBACKs arrive out of order; an unknown seq is ignored.
  ASSERT_TRUE(store.mark_forwarded({3, 2, 99}).is_ok());
  EXPECT_EQ(seqs_of(store.outbox_after(0, 100).value()),
            (std::vector<std::uint64_t>{1, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(store.outbox_stats().count, 8U);
  EXPECT_EQ(store.outbox_stats().oldest_created_ms, make_record(1).created_ms);

  ASSERT_TRUE(store.mark_forwarded({1}).is_ok());
  ASSERT_TRUE(store.mark_forwarded({1}).is_ok());  // a repeated PUBACK is harmless
  EXPECT_EQ(store.outbox_stats().oldest_created_ms, make_record(4).created_ms);
  EXPECT_TRUE(store.mark_forwarded({}).is_ok());

  // Records stay; the head does not move.
  EXPECT_EQ(store.record_count(), 10U);
  EXPECT_TRUE(store.record(2).has_value());
  EXPECT_EQ(store.chain_head().seq, 10U);

  ASSERT_TRUE(store.mark_forwarded({4, 5, 6, 7, 8, 9, 10}).is_ok());
  EXPECT_EQ(store.outbox_stats().count, 0U);
  EXPECT_FALSE(store.outbox_stats().oldest_created_ms.has_value());
}

TEST_F(EvidenceStoreTest, ReopenKeepsTheOutbox) {
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(1, 5)).is_ok());
    ASSERT_TRUE(store.mark_forwarded({1, 3}).is_ok());
  }
  EvidenceStore store(db_.string());
  EXPECT_EQ(seqs_of(store.outbox_after(0, 100).value()), (std::vector<std::uint64_t>{2, 4, 5}));
  EXPECT_EQ(store.outbox_stats().count, 3U);
  EXPECT_EQ(store.outbox_stats().oldest_created_ms, make_record(2).created_ms);
  EXPECT_EQ(store.record_count(), 5U);
}

TEST_F(EvidenceStoreTest, WriterHoldingTheLockGivesRetryAndNothingWritten) {
  EvidenceStore store(db_.string(), StoreOptions{.busy_timeout = std::chrono::milliseconds(50), .vfs = {}});
  ASSERT_TRUE(store.append(make_batch(1, 2)).is_ok());

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  Status s = store.append(make_batch(3, 2));
  EXPECT_EQ(s.kind(), Status::Kind::kRetry);
  EXPECT_THAT(s.message(), HasSubstr("locked"));
  EXPECT_EQ(store.mark_forwarded({1}).kind(), Status::Kind::kRetry);
  EXPECT_EQ(store.chain_head().seq, 2U);

  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE(store.append(make_batch(3, 2)).is_ok());
  EXPECT_EQ(store.record_count(), 4U);
  EXPECT_EQ(store.outbox_stats().count, 4U);
}

TEST_F(EvidenceStoreTest, CorruptedStoreIsRefusedAndLeftByteIdentical) {
  {
    EvidenceStore store(db_.string());
    for (std::uint64_t first = 1; first <= 200; first += 50) {
      ASSERT_TRUE(store.append(make_batch(first, 50)).is_ok());
    }
  }
  std::string bytes = read_bytes(db_);
  const std::size_t page = 4096;
  ASSERT_GT(bytes.size(), 20 * page) << "the store must span many pages";
  const std::size_t middle = (bytes.size() / page / 2) * page;
  for (std::size_t i = 0; i < page; ++i) {
    bytes[middle + i] = static_cast<char>(0xA5);
  }
  write_bytes(db_, bytes);

  const std::string message = open_error(db_);
  EXPECT_THAT(message, HasSubstr(db_.string()));
  EXPECT_THAT(message, HasSubstr("failed its integrity check: "));
  // The reason is the first finding (a page or a malformed image), not quick_check's banner line.
  EXPECT_THAT(message, Not(HasSubstr("***")));
  EXPECT_THAT(message, AnyOf(HasSubstr("Page"), HasSubstr("malformed"))) << message;
  EXPECT_THAT(message, HasSubstr("move it aside"));
  EXPECT_EQ(read_bytes(db_), bytes);
  EXPECT_TRUE(fs::exists(db_));
}

TEST_F(EvidenceStoreTest, CorruptedStoreWithPendingWalIsRefusedAndBothFilesLeftByteIdentical) {
  const fs::path copy_dir = dir_ / "copy";
  fs::create_directory(copy_dir);
  const fs::path copy_db = copy_dir / "store.db";
  const fs::path copy_wal = copy_dir / "store.db-wal";
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(1, 200)).is_ok());
  }
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(201, 3)).is_ok());
    fs::copy_file(db_, copy_db);
    fs::copy_file(db_.string() + "-wal", copy_wal);
  }
  std::string bytes = read_bytes(copy_db);
  const std::size_t page = 4096;
  const std::size_t middle = (bytes.size() / page / 2) * page;
  for (std::size_t i = 0; i < page; ++i) {
    bytes[middle + i] = static_cast<char>(0xA5);
  }
  write_bytes(copy_db, bytes);
  const std::string wal = read_bytes(copy_wal);
  ASSERT_GT(wal.size(), 0U);

  const std::string message = open_error(copy_db);
  EXPECT_THAT(message, HasSubstr("failed its integrity check: "));
  // Closing must not checkpoint the WAL into the bad file, nor delete the WAL.
  EXPECT_EQ(read_bytes(copy_db), bytes);
  ASSERT_TRUE(fs::exists(copy_wal));
  EXPECT_EQ(read_bytes(copy_wal), wal);
}

// The operator moves only store.db aside (or deletes it, or copies an empty file over it) while its
// write-ahead log holds the newest commits. An empty database opened beside the log made SQLite delete the
// log, and the records in it were lost from both stores. The store is refused, and the log left as found.
TEST_F(EvidenceStoreTest, AWriteAheadLogWithoutItsDatabaseIsRefusedAndKept) {
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(1, 3)).is_ok());
    fs::copy_file(db_.string() + "-wal", dir_ / "saved-wal");  // the log with the 3 commits, as it stands
  }
  const std::string wal = read_bytes(dir_ / "saved-wal");
  ASSERT_GT(wal.size(), 0U);
  fs::remove(db_);
  fs::remove(db_.string() + "-shm");
  write_bytes(db_.string() + "-wal", wal);
  std::string message = open_error(db_);
  EXPECT_THAT(message, HasSubstr("is missing but its write-ahead log"));
  EXPECT_FALSE(fs::exists(db_));
  EXPECT_EQ(read_bytes(db_.string() + "-wal"), wal);
  write_bytes(db_, "");
  message = open_error(db_);
  EXPECT_THAT(message, HasSubstr("is empty but its write-ahead log"));
  EXPECT_EQ(read_bytes(db_.string() + "-wal"), wal);
}

// Since when a store names media (the media sweep keeps a file older than that which no record names) is
// raised past the newest file a new store finds, never lowered: the daemon raises it for a store with no
// record, so a clock behind at creation cannot make a previous store's files look like this store's.
TEST_F(EvidenceStoreTest, MediaSinceIsRaisedNeverLowered) {
  EvidenceStore store(db_.string());
  const UnixMs created = store.media_since_ms();
  store.raise_media_since(created + 86'400'000);
  EXPECT_EQ(store.media_since_ms(), created + 86'400'000);
  store.raise_media_since(created);
  EXPECT_EQ(store.media_since_ms(), created + 86'400'000);
}

TEST_F(EvidenceStoreTest, NonDatabaseFileIsRefusedAndLeftByteIdentical) {
  std::string text;
  for (int i = 0; i < 300; ++i) {
    text += "this is a log file, not a database, line " + std::to_string(i) + "\n";
  }
  write_bytes(db_, text);
  const std::string message = open_error(db_);
  EXPECT_THAT(message, HasSubstr(db_.string()));
  EXPECT_THAT(message, HasSubstr("file is not a database"));
  EXPECT_EQ(read_bytes(db_), text);
}

TEST_F(EvidenceStoreTest, NewerSchemaVersionIsRefused) {
  {
    EvidenceStore store(db_.string());
    ASSERT_TRUE(store.append(make_batch(1, 2)).is_ok());
  }
  const int newer = EvidenceStore::kSchemaVersion + 1;
  raw_query(db_, "PRAGMA user_version=" + std::to_string(newer));
  const std::string before = read_bytes(db_);
  const std::string message = open_error(db_);
  EXPECT_THAT(message, HasSubstr(db_.string()));
  EXPECT_THAT(message, HasSubstr("schema version " + std::to_string(newer)));
  EXPECT_THAT(message, HasSubstr("newer"));
  EXPECT_EQ(read_bytes(db_), before);
}

TEST_F(EvidenceStoreTest, ForeignSqliteDatabaseIsRefused) {
  raw_query(db_, "CREATE TABLE settings(k TEXT, v TEXT)");
  const std::string before = read_bytes(db_);
  const std::string message = open_error(db_);
  EXPECT_THAT(message, HasSubstr(db_.string()));
  EXPECT_THAT(message, HasSubstr("not an evidence store"));
  EXPECT_EQ(read_bytes(db_), before);
}

TEST_F(EvidenceStoreTest, MissingDirectoryIsNamed) {
  const fs::path p = dir_ / "no-such-dir" / "store.db";
  const std::string message = open_error(p);
  EXPECT_THAT(message, HasSubstr(p.string()));
  EXPECT_THAT(message, HasSubstr("does not exist"));
  EXPECT_FALSE(fs::exists(dir_ / "no-such-dir"));
}

}  // namespace
}  // namespace cpd::store

namespace cpd::store {
namespace {

class DockLedgerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cpd-dock-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string db() const { return (dir_ / "store.db").string(); }
  static DockFileRow file(const std::string& id, const std::string& md5 = std::string(32, 'a')) {
    DockFileRow r;
    r.unique_id = id;
    r.md5 = md5;
    r.entry_json = "{\"uniqueId\":\"" + id + "\"}";
    return r;
  }
  fs::path dir_;
};

TEST_F(DockLedgerStoreTest, ListingAndCursorSurviveReopenAndRepeatedFilesKeepTheirState) {
  {
    EvidenceStore store(db());
    std::string cursor = "x";
    std::vector<DockFileRow> open;
    ASSERT_TRUE(store.dock_load("dock-1", cursor, open).is_ok());
    EXPECT_EQ(cursor, "");
    EXPECT_TRUE(open.empty());
    std::vector<DockFileRow> states;
    ASSERT_TRUE(store.dock_save_listing("dock-1", {file("A"), file("B")}, "c2", states).is_ok());
    ASSERT_EQ(states.size(), 2u);
    EXPECT_EQ(states[0].state, "pending");
    EXPECT_EQ(states[1].entry_json, "{\"uniqueId\":\"B\"}");

    // A's record is committed with its ledger change in the same transaction.
    StoredRecord r{make_record(1), {}};
    r.record.type = "recording";
    r.effects.dock_update = DockFileUpdate{"dock-1", "A", std::string(32, 'a'), std::string(64, 'f')};
    r.effects.kept_media = {KeptMedia{std::string(64, 'f'), true, kBaseMs + 1000}};
    r.effects.link_span = LinkSpan{kBaseMs - 10, kBaseMs + 100};
    ASSERT_TRUE(store.append({r}).is_ok());
  }
  EvidenceStore store(db());
  std::string cursor;
  std::vector<DockFileRow> open;
  ASSERT_TRUE(store.dock_load("dock-1", cursor, open).is_ok());
  EXPECT_EQ(cursor, "c2");
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].unique_id, "A");
  EXPECT_EQ(open[0].state, "recorded");
  EXPECT_EQ(open[0].sha256, std::string(64, 'f'));
  EXPECT_EQ(open[0].record_id, "gw-7:1");
  EXPECT_EQ(open[1].state, "pending");

  // The station restarts and lists both again: they are recognised, nothing becomes pending twice.
  std::vector<DockFileRow> states;
  ASSERT_TRUE(store.dock_save_listing("dock-1", {file("A"), file("B")}, "c9", states).is_ok());
  EXPECT_EQ(states[0].state, "recorded");
  EXPECT_EQ(states[1].state, "pending");
  // Same uniqueId, other bytes: another file.
  ASSERT_TRUE(store.dock_save_listing("dock-1", {file("A", std::string(32, 'b'))}, "c10", states).is_ok());
  EXPECT_EQ(states[0].state, "pending");

  ASSERT_TRUE(store.dock_mark_acked("dock-1", "A", std::string(32, 'a'), kBaseMs + 2000).is_ok());
  ASSERT_TRUE(store.dock_load("dock-1", cursor, open).is_ok());
  ASSERT_EQ(open.size(), 2u);  // B and the second A
  EXPECT_EQ(open[0].unique_id, "B");
  // Another dock's ledger is separate.
  ASSERT_TRUE(store.dock_load("dock-2", cursor, open).is_ok());
  EXPECT_TRUE(open.empty());
  EXPECT_EQ(cursor, "");
}

TEST_F(DockLedgerStoreTest, FaultRecordClosesTheFileWithoutAck) {
  EvidenceStore store(db());
  std::vector<DockFileRow> states;
  ASSERT_TRUE(store.dock_save_listing("dock-1", {file("Z")}, "c1", states).is_ok());
  StoredRecord r{make_record(1), {}};
  r.record.type = "recording_fault";
  r.effects.dock_update = DockFileUpdate{"dock-1", "Z", std::string(32, 'a'), ""};
  ASSERT_TRUE(store.append({r}).is_ok());
  std::string cursor;
  std::vector<DockFileRow> open;
  ASSERT_TRUE(store.dock_load("dock-1", cursor, open).is_ok());
  EXPECT_TRUE(open.empty());
  ASSERT_TRUE(store.dock_save_listing("dock-1", {file("Z")}, "c1", states).is_ok());
  EXPECT_EQ(states[0].state, "faulted");
}

// The ledger once kept every acknowledged row for ever: a station listing new files for years grew the
// table without a bound. Closed rows (acked, faulted) are kept for the retention, so a file listed again
// (station restart, lost cursor, a faulted file the station keeps) is still recognised; then they are pruned.
// Open rows are never pruned, whatever their age.
TEST_F(DockLedgerStoreTest, ClosedRowsArePrunedAfterTheRetentionAndOpenRowsAreKept) {
  constexpr UnixMs kDayMs = 86'400'000;
  EvidenceStore store(db());
  std::vector<DockFileRow> states;
  ASSERT_TRUE(
      store.dock_save_listing("dock-1", {file("A"), file("F"), file("R"), file("P")}, "c1", states).is_ok());
  ASSERT_TRUE(store.dock_save_listing("dock-2", {file("A2")}, "d1", states).is_ok());
  // A and A2 recorded then acknowledged; F faulted (its fault record closes it); R recorded, not yet acked.
  std::vector<StoredRecord> batch;
  const auto with_update = [&](std::uint64_t seq, const std::string& dev, const std::string& id,
                               const std::string& sha) {
    StoredRecord r{make_record(seq), {}};
    r.record.type = sha.empty() ? "recording_fault" : "recording";
    r.effects.dock_update = DockFileUpdate{dev, id, std::string(32, 'a'), sha};
    batch.push_back(r);
  };
  with_update(1, "dock-1", "A", std::string(64, '1'));
  with_update(2, "dock-1", "F", "");
  with_update(3, "dock-1", "R", std::string(64, '3'));
  with_update(4, "dock-2", "A2", std::string(64, '4'));
  ASSERT_TRUE(store.append(batch).is_ok());
  ASSERT_TRUE(store.dock_mark_acked("dock-1", "A", std::string(32, 'a'), kBaseMs + 1000).is_ok());
  ASSERT_TRUE(store.dock_mark_acked("dock-2", "A2", std::string(32, 'a'), kBaseMs + 5 * kDayMs).is_ok());
  const auto rows = [&] { return raw_query(dir_ / "store.db", "SELECT count(*) FROM dock_files"); };
  ASSERT_EQ(rows(), "5");

  // Within the retention nothing closed goes: a repeated listing still finds A acked and F faulted.
  std::uint64_t pruned = 99;
  ASSERT_TRUE(store.dock_prune(kBaseMs, 100, pruned).is_ok());
  EXPECT_EQ(pruned, 0u);
  ASSERT_TRUE(store.dock_save_listing("dock-1", {file("A"), file("F")}, "c1", states).is_ok());
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].state, "acked");
  EXPECT_EQ(states[1].state, "faulted");

  // Past it: A and F (closed at about kBaseMs) go, in batches of `limit`; A2 (closed 5 days later) stays,
  // and so do the open R and P, however old.
  ASSERT_TRUE(store.dock_prune(kBaseMs + 2 * kDayMs, 1, pruned).is_ok());
  EXPECT_EQ(pruned, 1u);
  ASSERT_TRUE(store.dock_prune(kBaseMs + 2 * kDayMs, 100, pruned).is_ok());
  EXPECT_EQ(pruned, 1u);
  EXPECT_EQ(rows(), "3");
  std::string cursor;
  std::vector<DockFileRow> open;
  ASSERT_TRUE(store.dock_load("dock-1", cursor, open).is_ok());
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].unique_id, "R");
  EXPECT_EQ(open[0].state, "recorded");
  EXPECT_EQ(open[1].unique_id, "P");
  EXPECT_EQ(raw_query(dir_ / "store.db", "SELECT state FROM dock_files WHERE unique_id = 'A2'"), "acked");
  ASSERT_TRUE(store.dock_prune(kBaseMs + 100 * kDayMs, 100, pruned).is_ok());
  EXPECT_EQ(pruned, 1u);
  EXPECT_EQ(rows(), "2");
  EXPECT_EQ(cursor, "c1");  // the cursor is not a ledger row: kept
}

TEST_F(DockLedgerStoreTest, KeptMediaIsHeldAndNotPublishedAndSpansAreFound) {
  EvidenceStore store(db());
  const std::string sha(64, 'e');
  StoredRecord rec{make_record(1), {}};
  rec.record.type = "recording";
  rec.effects.kept_media = {KeptMedia{sha, false, kBaseMs + 5000}};
  rec.effects.link_span = LinkSpan{kBaseMs, kBaseMs + 1000};
  SealedRecord passage = make_record(2);
  passage.type = "passage";
  passage.time_ms = kBaseMs + 500;
  ASSERT_TRUE(store.append({rec, {passage, {}}}).is_ok());

  EXPECT_TRUE(store.media_held(sha, kBaseMs + 4999));
  EXPECT_FALSE(store.media_held(sha, kBaseMs + 5000));
  EXPECT_TRUE(store.media_pending(sha));  // its record is not acknowledged yet
  auto entries = store.outbox_after(0, 10).value();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_TRUE(entries[0].media.empty()) << "recordings are never published";
  ASSERT_TRUE(store.mark_forwarded({1, 2}).is_ok());
  // A kept file (a recording) stays pending after the PUBACK and even in custody: recordings do not travel to
  // central yet, so no receipt covers them (docs/custody.md).
  EXPECT_TRUE(store.media_pending(sha));
  ASSERT_TRUE(store.set_custody({2, std::string(64, '0'), "central", "kid", "receipt", 1}).is_ok());
  EXPECT_TRUE(store.media_pending(sha));

  auto spans = store.spans_containing(kBaseMs + 1000);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].recording_id, "gw-7:1");
  EXPECT_TRUE(store.spans_containing(kBaseMs + 1001).empty());
  EXPECT_EQ(store.max_span_end(), kBaseMs + 1000);
  auto targets = store.records_in_span({"speeding", "passage"}, LinkSpan{kBaseMs + 500, kBaseMs + 500});
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_EQ(targets[0].id, "gw-7:2");
  EXPECT_EQ(targets[0].type, "passage");
  EXPECT_TRUE(store.records_in_span({"speeding"}, LinkSpan{kBaseMs, kBaseMs + 1000}).empty());
}

constexpr UnixMs kStoreDayMs = 86'400'000;

// Recordings to central (docs/custody.md): a kept file gets an upload row from its record, its progress is
// kept, and retention deletes it (with its record) only once central's file receipt was taken, its record is
// in custody and its hold ended.
TEST_F(DockLedgerStoreTest, ARecordingIsUploadedAndDeletedOnlyWithItsFileReceipt) {
  EvidenceStore store(db());
  const std::string sha(64, 'e');
  const std::string body = R"({"file_name":"a.mp4","important":true,"length":5000000,"type":"recording"})";
  StoredRecord rec{make_record(1, "eyJhbGciOiJFZERTQSJ9." + base64url_encode(body) + ".sig"), {}};
  rec.record.type = "recording";
  rec.effects.kept_media = {KeptMedia{sha, true, kBaseMs + 5000}};
  ASSERT_TRUE(store.append({rec, {make_record(2), {}}, {make_record(3), {}}}).is_ok());
  ASSERT_TRUE(store.mark_forwarded({1, 2, 3}).is_ok());

  EXPECT_EQ(store.uploads_discover(10), 1u);
  EXPECT_EQ(store.uploads_discover(10), 0u);  // once
  auto row = store.upload(sha);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->seq, 1u);
  EXPECT_EQ(row->length, 5000000u);
  EXPECT_TRUE(row->important);
  EXPECT_EQ(row->name, "a.mp4");
  EXPECT_EQ(store.uploads_pending(false, false, 10).size(), 0u);  // on_request: not asked for
  EXPECT_EQ(store.uploads_pending(false, true, 10).size(), 1u);   // important
  ASSERT_TRUE(store.upload_progress(sha, 2097152).is_ok());
  EXPECT_EQ(store.upload(sha)->sent_to, 2097152u);
  ASSERT_TRUE(store.upload_request(sha).is_ok());
  EXPECT_TRUE(store.upload(sha)->requested);
  EXPECT_EQ(store.upload(sha)->sent_to, 0u);
  EXPECT_EQ(store.uploads_pending(false, false, 10).size(), 1u);  // asked for: sent under every policy

  // In custody and past every retention, yet no file receipt: nothing goes.
  ASSERT_TRUE(store.set_custody({3, std::string(64, '0'), "central", "kid", "receipt", 1}).is_ok());
  auto pruned = store.prune_in_custody(3, kBaseMs + 100 * kStoreDayMs, 100, kBaseMs + 100 * kStoreDayMs);
  EXPECT_EQ(pruned.records, 1u);  // seq 2 only (seq 3 is the head)
  EXPECT_TRUE(pruned.media.empty());
  ASSERT_TRUE(store.record(1));

  // A receipt for another length changes nothing; the right one holds it.
  EXPECT_FALSE(store.upload_held(sha, 4999999, "central", "jws", kBaseMs));
  EXPECT_TRUE(store.upload_held(sha, 5000000, "central", "jws", kBaseMs));
  EXPECT_FALSE(store.upload_held(sha, 5000000, "central", "jws", kBaseMs));  // already held
  EXPECT_EQ(store.upload_stats().held, 1u);
  EXPECT_EQ(store.upload_stats().pending, 0u);
  // Still within its hold (important): kept.
  pruned = store.prune_in_custody(3, kBaseMs + 100 * kStoreDayMs, 100, kBaseMs + 4000);
  EXPECT_EQ(pruned.records, 0u);
  pruned = store.prune_in_custody(3, kBaseMs + 100 * kStoreDayMs, 100, kBaseMs + 6000);
  EXPECT_EQ(pruned.records, 1u);
  ASSERT_EQ(pruned.media.size(), 1u);
  EXPECT_EQ(pruned.media[0], sha);  // the caller deletes the file
  EXPECT_FALSE(store.record(1));
  EXPECT_EQ(raw_query(db(), "SELECT count(*) FROM uploads"), "0") << "its upload row goes with it";
}

// One recording is sent at a time: those central asked for first, then the ones the officer flagged
// important, then the rest, each group in seq order.
TEST_F(DockLedgerStoreTest, RecordingsAreSentAskedForFirstThenImportantThenInSeqOrder) {
  EvidenceStore store(db());
  std::vector<StoredRecord> records;
  const auto sha = [](int i) { return std::string(64, static_cast<char>('a' + i)); };
  for (int i = 1; i <= 4; ++i) {
    const std::string body = std::string(R"({"file_name":"f.mp4","important":)") +
                             (i == 3 || i == 4 ? "true" : "false") + R"(,"length":1000,"type":"recording"})";
    StoredRecord rec{
        make_record(static_cast<std::uint64_t>(i), "eyJhbGciOiJFZERTQSJ9." + base64url_encode(body) + ".sig"),
        {}};
    rec.record.type = "recording";
    rec.effects.kept_media = {KeptMedia{sha(i), i >= 3, kBaseMs + 5000}};
    records.push_back(rec);
  }
  ASSERT_TRUE(store.append(records).is_ok());
  ASSERT_TRUE(store.mark_forwarded({1, 2, 3, 4}).is_ok());
  ASSERT_EQ(store.uploads_discover(10), 4u);
  const auto order = [&] {
    std::string out;
    for (const auto& row : store.uploads_pending(true, false, 10)) {
      out += std::to_string(row.seq);
    }
    return out;
  };
  EXPECT_EQ(order(), "3412");
  // Files the uploader does not send now (refused by central, unreadable) are left out of the page, so they
  // cannot fill it and hide the files after them.
  std::string without3;
  for (const auto& row : store.uploads_pending(true, false, 2, false, {sha(3)})) {
    without3 += std::to_string(row.seq);
  }
  EXPECT_EQ(without3, "41");
  ASSERT_TRUE(store.upload_request(sha(2)).is_ok());
  EXPECT_EQ(order(), "2341");
  // What may overtake a file being sent: only rows not yet sent whole (a file sent whole waits for its
  // receipt, and only its init and fin go again).
  ASSERT_TRUE(store.upload_progress(sha(2), 1000).is_ok());
  ASSERT_TRUE(store.upload_progress(sha(3), 500).is_ok());
  std::string unsent;
  for (const auto& row : store.uploads_pending(true, false, 10, true)) {
    unsent += std::to_string(row.seq);
  }
  EXPECT_EQ(unsent, "341");
  // The files sent whole, waiting for their receipts, page by page in seq order from a cursor (their fins go
  // again): seq 2 only; with seq 1 sent whole too, pages of one walk 1 then 2 then nothing.
  const auto waiting = [&](std::int64_t after, std::size_t limit) {
    std::string out;
    for (const auto& row : store.uploads_sent_whole(true, false, after, limit)) {
      out += std::to_string(row.seq);
    }
    return out;
  };
  EXPECT_EQ(waiting(0, 10), "2");
  ASSERT_TRUE(store.upload_progress(sha(1), 1000).is_ok());
  EXPECT_EQ(waiting(0, 1), "1");
  EXPECT_EQ(waiting(1, 1), "2");
  EXPECT_EQ(waiting(2, 1), "");
  EXPECT_EQ(store.uploads_sent_whole(false, false, 0, 10).size(), 1u) << "on_request: only the one asked for";
}

TEST_F(DockLedgerStoreTest, AVersion2StoreIsMigratedKeepingItsRecordsAndPublishedMedia) {
  {
    // A store as the previous release left it: schema 2, one record with a published picture.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(this->db().c_str(), &db), SQLITE_OK);
    const char* sql = R"sql(
      CREATE TABLE records (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
        time_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, jws TEXT NOT NULL);
      CREATE INDEX records_type_time ON records(type, time_ms);
      CREATE TABLE outbox (seq INTEGER PRIMARY KEY REFERENCES records(seq));
      CREATE TABLE record_media (seq INTEGER NOT NULL REFERENCES records(seq), sha256 TEXT NOT NULL,
        PRIMARY KEY (seq, sha256)) WITHOUT ROWID;
      CREATE INDEX record_media_sha256 ON record_media(sha256);
      INSERT INTO records VALUES (1, 'gw-7:1', 'passage', 1, 2, 'a.b.c');
      INSERT INTO outbox VALUES (1);
      INSERT INTO record_media VALUES (1, 'dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd');
      PRAGMA user_version = 2;
    )sql";
    ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  EvidenceStore store(db());
  EXPECT_EQ(store.chain_head().seq, 1u);
  auto entries = store.outbox_after(0, 10).value();
  ASSERT_EQ(entries.size(), 1u);
  ASSERT_EQ(entries[0].media.size(), 1u);
  std::vector<DockFileRow> states;
  EXPECT_TRUE(store.dock_save_listing("dock-1", {file("A")}, "c1", states).is_ok());
}

}  // namespace
}  // namespace cpd::store
