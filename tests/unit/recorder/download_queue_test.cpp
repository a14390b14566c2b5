// Unit tests of the recorder adapter's download queue: the order files are downloaded and acknowledged in,
// each file's phase through retries, mismatches, faults and acks, the counters derived from it, and the
// pending bounds with their hysteresis. No sockets, no files, no clock.
#include "adapters/recorder/download_queue.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cpd::adapters {
namespace {

DockFile file(const std::string& id, std::size_t entry_bytes = 10) {
  DockFile f;
  f.unique_id = id;
  f.md5 = "0123456789abcdef0123456789abcdef";
  f.raw_json = std::string(entry_bytes, 'x');
  return f;
}

std::string key(const std::string& id) {
  return dock_file_key(id, "0123456789abcdef0123456789abcdef");
}

class DownloadQueueTest : public ::testing::Test {
 protected:
  explicit DownloadQueueTest(DownloadQueue::Bounds bounds = {10, 1000})
      : queue_(bounds, [this](const DownloadQueueCounters& c, bool regained) {
          seen_.push_back(c);
          regained_ += regained ? 1 : 0;
        }) {}

  void add(const std::string& id, std::size_t entry_bytes = 10) {
    ASSERT_TRUE(queue_.add_pending(key(id), file(id, entry_bytes), 1000));
  }
  DockFilePhase phase(const std::string& id) const { return queue_.find(key(id))->phase; }

  DownloadQueue queue_;
  std::vector<DownloadQueueCounters> seen_;
  int regained_ = 0;
};

TEST_F(DownloadQueueTest, DownloadsInListingOrderAndCountsEachPhase) {
  add("A");
  add("B");
  EXPECT_FALSE(queue_.add_pending(key("A"), file("A"), 2000)) << "a key is taken once";
  EXPECT_EQ(queue_.counters().queued, 2u);
  EXPECT_EQ(queue_.counters().pending, 2u);
  EXPECT_EQ(queue_.counters().pending_bytes, 20u);
  EXPECT_EQ(queue_.find(key("A"))->listed_ms, 1000);

  EXPECT_EQ(queue_.start_next_download(), key("A"));
  EXPECT_EQ(phase("A"), DockFilePhase::kDownloading);
  EXPECT_EQ(queue_.counters().queued, 1u);
  EXPECT_EQ(queue_.counters().downloading, 1u);
  EXPECT_EQ(queue_.start_next_download(), key("B"));
  EXPECT_FALSE(queue_.has_queued());
  EXPECT_EQ(queue_.start_next_download(), std::nullopt);
  EXPECT_EQ(queue_.counters().downloading, 2u);
  // Every change reached the observer, the last with the counters as they are now.
  ASSERT_FALSE(seen_.empty());
  EXPECT_EQ(seen_.back().downloading, 2u);
  EXPECT_EQ(seen_.back().queued, 0u);
}

TEST_F(DownloadQueueTest, ABrokenTransferWaitsThenGoesFirst) {
  add("A");
  add("B");
  ASSERT_EQ(queue_.start_next_download(), key("A"));
  EXPECT_EQ(queue_.wait_for_retry(key("A"), false), 1);
  EXPECT_EQ(phase("A"), DockFilePhase::kWaiting);
  // A waiting file counts as queued (the status's "queued") but is not handed out before its retry.
  EXPECT_EQ(queue_.counters().queued, 2u);
  EXPECT_EQ(queue_.counters().downloading, 0u);
  EXPECT_TRUE(queue_.retry_due(key("A")));
  EXPECT_FALSE(queue_.retry_due(key("A"))) << "only a waiting file is released";
  EXPECT_EQ(queue_.start_next_download(), key("A")) << "a retry goes before the files listed after it";
  EXPECT_EQ(queue_.start_next_download(), key("B"));
}

TEST_F(DownloadQueueTest, BackoffAttemptsGrowUntilProgress) {
  add("A");
  ASSERT_TRUE(queue_.start_next_download());
  EXPECT_EQ(queue_.wait_for_retry(key("A"), false), 1);
  ASSERT_TRUE(queue_.retry_due(key("A")));
  ASSERT_TRUE(queue_.start_next_download());
  EXPECT_EQ(queue_.wait_for_retry(key("A"), false), 2);
  ASSERT_TRUE(queue_.retry_due(key("A")));
  ASSERT_TRUE(queue_.start_next_download());
  EXPECT_EQ(queue_.wait_for_retry(key("A"), true), 0) << "bytes arrived: the backoff starts again";
  ASSERT_TRUE(queue_.retry_due(key("A")));
  ASSERT_TRUE(queue_.start_next_download());
  EXPECT_EQ(queue_.wait_for_retry(key("A"), false), 1);
  ASSERT_TRUE(queue_.retry_due(key("A")));
  ASSERT_TRUE(queue_.start_next_download());
  queue_.collected(key("A"), "sha");
  EXPECT_EQ(queue_.find(key("A"))->breaks, 0);
}

TEST_F(DownloadQueueTest, RequeuedFileGoesToTheFront) {
  add("A");
  add("B");
  ASSERT_EQ(queue_.start_next_download(), key("A"));
  queue_.requeue_front(key("A"));
  EXPECT_EQ(phase("A"), DockFilePhase::kQueued);
  EXPECT_EQ(queue_.start_next_download(), key("A"));
}

TEST_F(DownloadQueueTest, FileCountsOnTheFile) {
  add("A");
  EXPECT_EQ(queue_.note_not_found(key("A")), 1);
  EXPECT_EQ(queue_.note_not_found(key("A")), 2);
  queue_.note_found(key("A"));
  EXPECT_EQ(queue_.note_not_found(key("A")), 1);
  EXPECT_EQ(queue_.note_mismatch(key("A")), 1);
  EXPECT_EQ(queue_.note_mismatch(key("A")), 2);
  queue_.note_resume(key("A"));
  EXPECT_EQ(queue_.find(key("A"))->resumes, 1);
  EXPECT_EQ(queue_.find(key("A"))->md5_failures, 2);
  EXPECT_EQ(queue_.note_mismatch(key("nope")), 0);
}

TEST_F(DownloadQueueTest, CollectedFileIsAcknowledgedAfterItsCommit) {
  add("A");
  ASSERT_TRUE(queue_.start_next_download());
  queue_.collected(key("A"), "sha-a");
  EXPECT_EQ(phase("A"), DockFilePhase::kCommitting);
  EXPECT_EQ(queue_.find(key("A"))->sha256, "sha-a");
  EXPECT_EQ(queue_.start_next_ack(), std::nullopt) << "no ack before the record is committed";

  EXPECT_EQ(queue_.committed(key("A")), DownloadQueue::Committed::kToAcknowledge);
  EXPECT_EQ(queue_.committed(key("A")), DownloadQueue::Committed::kIgnored) << "a second commit is ignored";
  EXPECT_EQ(phase("A"), DockFilePhase::kAckQueued);
  EXPECT_FALSE(queue_.acking());
  EXPECT_EQ(queue_.start_next_ack(), key("A"));
  EXPECT_TRUE(queue_.acking());
  queue_.acknowledged(key("A"));
  EXPECT_FALSE(queue_.acking()) << "the next ack may go while the ledger marks this one";
  EXPECT_EQ(phase("A"), DockFilePhase::kMarkingAcked);
  EXPECT_EQ(queue_.counters().pending, 1u);
  queue_.remove(key("A"));
  EXPECT_EQ(queue_.counters().pending, 0u);
  EXPECT_EQ(queue_.counters().pending_bytes, 0u);
}

TEST_F(DownloadQueueTest, FailedAckGoesFirstAndBacksOff) {
  ASSERT_TRUE(queue_.add_recorded(key("A"), file("A"), 1000, "sha-a"));
  ASSERT_TRUE(queue_.add_recorded(key("B"), file("B"), 1000, "sha-b"));
  EXPECT_EQ(queue_.counters().queued, 0u) << "files to acknowledge are not downloads";
  ASSERT_EQ(queue_.start_next_ack(), key("A"));
  queue_.ack_again(key("A"));
  EXPECT_EQ(queue_.ack_failed(), 0);
  EXPECT_EQ(queue_.ack_failed(), 1);
  EXPECT_EQ(queue_.start_next_ack(), key("A"));
  queue_.ack_succeeded();
  EXPECT_EQ(queue_.ack_failed(), 0);
}

TEST_F(DownloadQueueTest, FaultRecordClosesTheFileWithoutAck) {
  add("A");
  ASSERT_TRUE(queue_.start_next_download());
  queue_.collected(key("A"), "sha-a");
  queue_.closing(key("A"));  // e.g. the ack was refused, or the last MD5 mismatch
  EXPECT_TRUE(queue_.find(key("A"))->sha256.empty());
  EXPECT_EQ(queue_.committed(key("A")), DownloadQueue::Committed::kClosed);
  ASSERT_TRUE(queue_.add_closing(key("R"), file("R"), 5));
  EXPECT_EQ(phase("R"), DockFilePhase::kCommitting);
  EXPECT_EQ(queue_.committed(key("R")), DownloadQueue::Committed::kClosed);
}

TEST_F(DownloadQueueTest, RemovingAQueuedFileTakesItOutOfTheOrder) {
  add("A");
  add("B");
  queue_.remove(key("A"));
  EXPECT_EQ(queue_.counters().queued, 1u);
  EXPECT_EQ(queue_.start_next_download(), key("B"));
  EXPECT_FALSE(queue_.has_queued());
}

TEST_F(DownloadQueueTest, ClearForgetsEverything) {
  add("A");
  ASSERT_TRUE(queue_.add_recorded(key("B"), file("B"), 1000, "sha-b"));
  ASSERT_TRUE(queue_.start_next_download());
  queue_.clear();
  EXPECT_EQ(queue_.counters().pending, 0u);
  EXPECT_EQ(queue_.counters().downloading, 0u);
  EXPECT_FALSE(queue_.has_queued());
  EXPECT_EQ(queue_.start_next_ack(), std::nullopt);
  EXPECT_FALSE(queue_.contains(key("A")));
}

class DownloadQueueBoundsTest : public DownloadQueueTest {
 protected:
  DownloadQueueBoundsTest() : DownloadQueueTest({4, 100}) {}
};

TEST_F(DownloadQueueBoundsTest, RoomUnderBothBounds) {
  PendingRoom r = queue_.room();
  EXPECT_EQ(r.files, 4u);
  EXPECT_EQ(r.bytes, SIZE_MAX) << "with nothing pending one entry of any size fits";
  add("A", 30);
  r = queue_.room();
  EXPECT_EQ(r.files, 3u);
  EXPECT_EQ(r.bytes, 70u);
  add("B", 80);
  EXPECT_EQ(queue_.room().bytes, 0u);
  add("C");
  add("D");
  EXPECT_EQ(queue_.room().files, 0u);
}

TEST_F(DownloadQueueBoundsTest, LimitHoldsUntilHalfTheBoundIsFree) {
  for (const char* id : {"A", "B", "C", "D"}) {
    add(id);
  }
  queue_.hold_listings();
  EXPECT_TRUE(queue_.limit_reached());
  EXPECT_TRUE(queue_.counters().limit_reached);
  queue_.remove(key("A"));
  EXPECT_TRUE(queue_.limit_reached()) << "three of four pending: not yet half free";
  EXPECT_EQ(regained_, 0);
  queue_.remove(key("B"));
  EXPECT_FALSE(queue_.limit_reached());
  EXPECT_FALSE(queue_.counters().limit_reached);
  EXPECT_EQ(regained_, 1);
}

TEST_F(DownloadQueueBoundsTest, HoldBelowHalfTheBoundEndsAtOnce) {
  add("A");  // a listing the ledger cut although little is pending
  queue_.hold_listings();
  EXPECT_FALSE(queue_.limit_reached());
  EXPECT_EQ(regained_, 1);
}

}  // namespace
}  // namespace cpd::adapters
