// EvidenceStore::continue_chain against a real SQLite file: an empty store that continues a chain after a
// custody receipt (docs/custody.md, "A replaced store") has its head at the receipt with no record there,
// appends from the next seq, keeps the origin across a reopen, and refuses a second origin.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "daemon/store/evidence_store.h"

namespace cpd::store {
namespace {

namespace fs = std::filesystem;

SealedRecord record_at(std::uint64_t seq) {
  SealedRecord r;
  r.seq = seq;
  r.id = "gw-7:" + std::to_string(seq);
  r.type = "audit";
  r.time_ms = 1'700'000'000'000 + static_cast<UnixMs>(seq);
  r.created_ms = r.time_ms;
  r.jws = "eyJhbGciOiJFZERTQSJ9.body" + std::to_string(seq) + ".sig";
  return r;
}

CustodyState receipt_at(std::uint64_t seq) {
  return CustodyState{seq,     std::string(64, 'a'), "zj-central", "0123456789abcdef",
                      "h.b.s", 1'700'000'000'500};
}

class ChainOriginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cpd-origin-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "store.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string path_;
};

TEST_F(ChainOriginTest, EmptyStoreContinuesAfterTheReceiptAndKeepsItAcrossAReopen) {
  {
    EvidenceStore store(path_);
    EXPECT_EQ(store.chain_head().seq, 0U);
    EXPECT_FALSE(store.chain_origin());
    ASSERT_TRUE(store.continue_chain(receipt_at(41)).is_ok());
    EXPECT_EQ(store.chain_head().seq, 41U);
    EXPECT_EQ(store.chain_head().jws_sha256, std::string(64, 'a'));
    ASSERT_TRUE(store.custody());
    EXPECT_EQ(store.custody()->through_seq, 41U);  // central holds 1..41: the custody state says so
    EXPECT_EQ(store.record_count(), 0U);
    EXPECT_FALSE(store.record(41));
  }
  {
    // Reopened before any record: the head is still the origin (a crash before the audit record).
    EvidenceStore store(path_);
    EXPECT_EQ(store.chain_head().seq, 41U);
    ASSERT_TRUE(store.chain_origin());
    EXPECT_EQ(store.chain_origin()->receipt, "h.b.s");
    // seq 1 does not continue the chain at 41; seq 42 does.
    EXPECT_FALSE(store.append({record_at(1)}).is_ok());
    ASSERT_TRUE(store.append({record_at(42), record_at(43)}).is_ok());
    EXPECT_EQ(store.chain_head().seq, 43U);
  }
  EvidenceStore store(path_);
  EXPECT_EQ(store.chain_head().seq, 43U);
  EXPECT_EQ(store.first_seq(), 42U);
  EXPECT_FALSE(store.continue_chain(receipt_at(50)).is_ok());  // holds records: refused, nothing written
  EXPECT_EQ(store.chain_origin()->through_seq, 41U);
  EXPECT_TRUE(store.append({record_at(44)}).is_ok());
}

TEST_F(ChainOriginTest, AStoreWithRecordsOrAnOriginRefusesAnotherOrigin) {
  {
    EvidenceStore store(path_);
    ASSERT_TRUE(store.append({record_at(1)}).is_ok());
    EXPECT_FALSE(store.continue_chain(receipt_at(7)).is_ok());
    EXPECT_FALSE(store.chain_origin());
    EXPECT_FALSE(store.custody());
    EXPECT_EQ(store.chain_head().seq, 1U);
  }
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  EvidenceStore store(path_);
  ASSERT_TRUE(store.continue_chain(receipt_at(7)).is_ok());
  EXPECT_FALSE(store.continue_chain(receipt_at(9)).is_ok());
  EXPECT_EQ(store.chain_head().seq, 7U);
  EXPECT_FALSE(store.continue_chain(CustodyState{0, std::string(64, 'a'), "c", "k", "r", 1}).is_ok());
}

}  // namespace
}  // namespace cpd::store
