// The store worker across a key rotation (StoreWorker::submit_key_rotation) on a real SQLite store: the
// key_rotation record is sealed under the old key and everything after it under the new one, also when the
// batch holding it first fails to commit (the sealer goes back to the old key and seals it all again).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "daemon/app/store_worker.h"
#include "daemon/core/chain_verifier.h"
#include "daemon/core/encoding.h"
#include "daemon/core/key_rotation.h"
#include "tests/unit/app/app_test_support.h"

namespace cpd::app {
namespace {

using test::eventually;
using test::FixedClock;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string kid_of(const std::string& jws) {
  const auto header = base64url_decode(jws.substr(0, jws.find('.')));
  return nlohmann::json::parse(header.value_or("{}")).value("kid", std::string());
}

Fact audit(int i) {
  Fact f;
  f.type = "audit";
  f.time_ms = 1795700000000;
  f.fields = {{"event", "test"}, {"i", i}};
  return f;
}

TEST(StoreWorkerRotation, RecordsAfterTheRotationAreSignedByTheNewKeyEvenAfterAFailedCommit) {
  std::string tmpl = (fs::temp_directory_path() / "cpd-swr-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const fs::path dir = tmpl;
  {
    store::EvidenceStore store((dir / "store.db").string(),
                               store::StoreOptions{.busy_timeout = std::chrono::milliseconds(1), .vfs = {}});
    const auto old_key = Ed25519PrivateKey::generate();
    const auto next = std::make_shared<const Ed25519PrivateKey>(Ed25519PrivateKey::generate());
    Sealer sealer(old_key, "gw", store.chain_head());
    FixedClock clock;
    std::mutex m;
    std::uint64_t last = 0;
    StoreWorker worker(store, sealer, clock, 64,
                       [&](std::uint64_t seq, std::vector<forwarder::CommittedRecord>) {
                         std::lock_guard lock(m);
                         last = seq;
                       });
    worker.set_commit_retry_backoff(10ms, 10ms);

    // The store is locked by someone else: every commit fails until it is released.
    sqlite3* other = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "store.db").c_str(), &other), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    std::optional<SealedRecord> rotation;
    worker.submit(audit(1));
    worker.submit_key_rotation(
        make_key_rotation_fact(old_key.public_key(), next->public_key(), 1795700000000), next,
        [&](const SealedRecord& r) {
          std::lock_guard lock(m);
          rotation = r;
        });
    worker.submit(audit(2));
    ASSERT_TRUE(eventually([&] { return worker.commit_failures() >= 3; }));
    sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(other);
    ASSERT_TRUE(eventually([&] {
      std::lock_guard lock(m);
      return last >= 3;
    }));
    worker.drain_and_stop();

    ASSERT_TRUE(rotation);
    EXPECT_EQ(rotation->seq, 2u);
    EXPECT_EQ(rotation->type, "key_rotation");
    const std::string old_kid = old_key.public_key().kid();
    const std::string new_kid = next->public_key().kid();
    EXPECT_EQ(kid_of(store.record(1)->jws), old_kid);
    EXPECT_EQ(kid_of(store.record(2)->jws), old_kid);
    EXPECT_EQ(kid_of(store.record(3)->jws), new_kid);
    EXPECT_EQ(sealer.kid(), new_kid);
    ChainVerifier v(old_key.public_key());
    v.expect_from_start(true);
    for (std::uint64_t s = 1; s <= 3; ++s) {
      const auto r = v.feed(store.record(s)->jws);
      EXPECT_TRUE(r.ok) << s << ": " << r.reason;
    }
    EXPECT_EQ(v.rotations(), 1u);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cpd::app
