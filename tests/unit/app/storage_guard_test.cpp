// StorageGuard: free space and commit failures in, storage state changes out (pure; readings are given).
#include "daemon/app/storage_guard.h"

#include <gtest/gtest.h>

namespace cpd::app {
namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

StorageReadings space(std::uint64_t free_mib, std::uint64_t refused = 0) {
  StorageReadings r;
  r.store_free_bytes = free_mib * kMiB;
  r.media_free_bytes = free_mib * kMiB;
  r.refused_writes = refused;
  return r;
}

TEST(StorageGuard, PlentyOfSpaceSaysNothing) {
  StorageGuard g(64 * kMiB);
  EXPECT_FALSE(g.update(space(1000), 1));
  EXPECT_FALSE(g.update(space(900), 2));
  EXPECT_EQ(g.state(), "ok");
}

TEST(StorageGuard, LowSpaceWarnsOnceAndClearsWithHysteresis) {
  StorageGuard g(64 * kMiB);
  EXPECT_FALSE(g.update(space(100), 1));
  auto low = g.update(space(60, 3), 2);
  ASSERT_TRUE(low);
  EXPECT_EQ(low->device_id, "storage");
  EXPECT_EQ(low->state, "warning");
  EXPECT_NE(low->text.find("3 writes refused"), std::string::npos) << low->text;
  EXPECT_FALSE(g.update(space(50, 9), 3)) << "still low: no new event";
  EXPECT_FALSE(g.update(space(65, 9), 4)) << "just above the line: not yet back (hysteresis)";
  auto back = g.update(space(80, 9), 5);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->state, "ok");
  EXPECT_EQ(g.status()["refused_media_writes"], 9);
}

TEST(StorageGuard, RefusedWritesWarnEvenWhenTheOtherDiskLooksFine) {
  StorageGuard g(64 * kMiB);
  auto r = space(1000, 1);
  auto ev = g.update(r, 1);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->state, "warning");
}

TEST(StorageGuard, FailingCommitsAreAFaultUntilTheBatchIsCommitted) {
  StorageGuard g(64 * kMiB);
  auto r = space(10);
  r.commit_failures = 2;
  r.commit_pending_retry = true;
  r.queued_facts = 40;
  auto fault = g.update(r, 1);
  ASSERT_TRUE(fault);
  EXPECT_EQ(fault->state, "fault");
  EXPECT_NE(fault->text.find("40 facts waiting"), std::string::npos) << fault->text;
  r.commit_failures = 5;
  EXPECT_FALSE(g.update(r, 2));
  r.commit_pending_retry = false;
  auto after = g.update(r, 3);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->state, "warning") << "committed again, but space is still below the reserve";
}

TEST(StorageGuard, AProblemAtStartIsReported) {
  StorageGuard g(64 * kMiB);
  auto ev = g.update(space(10), 1);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->state, "warning");
}

}  // namespace
}  // namespace cpd::app
