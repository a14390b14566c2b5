// CustodyAgent::await_origin (docs/custody.md, "A replaced store"): while an empty store waits, a receipt
// passing the signature/body/gateway checks is handed to the daemon instead of being matched against the
// store; a refused receipt or none within the wait gives nullopt and the reason. A real SQLite store, a fake
// side channel (no broker), the agent's own io_context.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>

#include "daemon/app/custody_agent.h"
#include "daemon/core/custody.h"
#include "daemon/core/encoding.h"
#include "tests/unit/app/app_test_support.h"

namespace cpd::app {
namespace {

using test::FixedClock;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Decision {
  int calls = 0;
  std::optional<store::CustodyState> receipt;
  std::string why;
};

class CustodyAgentOrigin : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_test_dir("cpd-agent-origin");
    store_ = std::make_unique<store::EvidenceStore>((dir_ / "store.db").string());
    test::custody_settings(cfg_, central_);
    CustodyHost host;
    host.run_on_store = [this](std::function<void(store::EvidenceStore&)> task) { task(*store_); };
    host.submit = [this](Fact fact, std::function<void(const SealedRecord&)> /*handler*/) {
      submitted_.push_back(fact.type);
    };
    host.read_media = [](const std::string&) { return std::optional<std::string>(); };
    host.remove_media = [](const std::string&) {};
    host.chain_head = [this] { return store_->chain_head(); };
    agent_ = std::make_unique<CustodyAgent>(io_, cfg_, gateway_key_, channel_, std::move(host), clock_);
  }
  void TearDown() override {
    agent_->stop();
    io_.run_for(50ms);
    agent_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void await(std::chrono::milliseconds wait) {
    agent_->await_origin(wait, [this](std::optional<store::CustodyState> r, std::string why) {
      ++decision_.calls;
      decision_.receipt = std::move(r);
      decision_.why = std::move(why);
    });
    agent_->start();
    io_.run_for(20ms);
  }
  std::string receipt(const std::string& gateway, std::uint64_t through) {
    return custody::seal_receipt(
        central_,
        custody::Receipt{"central-1", gateway, through, std::string(64, 'b'), 1'767'225'599'000, {}, {}});
  }

  fs::path dir_;
  boost::asio::io_context io_;
  config::Config cfg_;
  Ed25519PrivateKey gateway_key_ = Ed25519PrivateKey::generate();
  Ed25519PrivateKey central_ = Ed25519PrivateKey::generate();
  test::FakeChannel channel_{/*retained=*/true};
  FixedClock clock_{1'767'225'600'000};
  std::unique_ptr<store::EvidenceStore> store_;
  std::unique_ptr<CustodyAgent> agent_;
  std::vector<std::string> submitted_;
  Decision decision_;
};

TEST_F(CustodyAgentOrigin, AValidReceiptIsHandedOverWithoutAStoreRecordAndNotSealedAgain) {
  await(5s);
  const std::string jws = receipt("gw-1", 42);
  channel_.deliver("checkpoint/gw-1/custody", jws);
  io_.run_for(50ms);
  ASSERT_EQ(decision_.calls, 1);
  ASSERT_TRUE(decision_.receipt) << decision_.why;
  EXPECT_EQ(decision_.receipt->through_seq, 42U);
  EXPECT_EQ(decision_.receipt->head, std::string(64, 'b'));
  EXPECT_EQ(decision_.receipt->central, "central-1");
  EXPECT_EQ(decision_.receipt->kid, central_.public_key().kid());
  EXPECT_EQ(decision_.receipt->receipt, jws);
  EXPECT_TRUE(submitted_.empty());  // no custody record: the daemon seals store_replaced instead
  // The store takes it as the origin (as the daemon does); the same receipt again changes nothing.
  ASSERT_TRUE(store_->continue_chain(*decision_.receipt).is_ok());
  agent_->origin_committed(*decision_.receipt);
  channel_.deliver("checkpoint/gw-1/custody", jws);
  io_.run_for(50ms);
  EXPECT_EQ(decision_.calls, 1);
  EXPECT_TRUE(submitted_.empty());
  const auto status = agent_->status();
  EXPECT_EQ(status["through_seq"].get<std::uint64_t>(), 42U) << status.dump();
  EXPECT_EQ(status["receipts_refused"].get<std::uint64_t>(), 0U);
}

TEST_F(CustodyAgentOrigin, AReceiptForAnotherGatewayIsRefusedAndEndsTheWait) {
  await(5s);
  channel_.deliver("checkpoint/gw-1/custody", receipt("gw-2", 42));
  io_.run_for(50ms);
  ASSERT_EQ(decision_.calls, 1);
  EXPECT_FALSE(decision_.receipt);
  EXPECT_NE(decision_.why.find("the retained custody receipt was refused"), std::string::npos)
      << decision_.why;
  EXPECT_EQ(agent_->status()["receipts_refused"].get<std::uint64_t>(), 1U);
}

// The chain continues after the receipt's seq: a receipt through 2^53 (within the receipt's own bound, from a
// faulty central) left no seq to seal after it, and the start aborted on every try. Refused: a new chain.
TEST_F(CustodyAgentOrigin, AReceiptLeavingNoRoomForTheChainAfterItIsRefused) {
  await(5s);
  channel_.deliver("checkpoint/gw-1/custody", receipt("gw-1", custody::kMaxOriginSeq));
  io_.run_for(50ms);
  ASSERT_EQ(decision_.calls, 1);
  EXPECT_FALSE(decision_.receipt);
  EXPECT_NE(decision_.why.find("leaves no room for this empty store's chain"), std::string::npos)
      << decision_.why;
  EXPECT_EQ(agent_->status()["receipts_refused"].get<std::uint64_t>(), 1U);
}

TEST_F(CustodyAgentOrigin, TheLastReceiptLeavingRoomIsTaken) {
  await(5s);
  channel_.deliver("checkpoint/gw-1/custody", receipt("gw-1", custody::kMaxOriginSeq - 1));
  io_.run_for(50ms);
  ASSERT_EQ(decision_.calls, 1);
  ASSERT_TRUE(decision_.receipt) << decision_.why;
  EXPECT_EQ(decision_.receipt->through_seq, custody::kMaxOriginSeq - 1);
}

// Anyone who may publish on the custody topic can send junk while an empty store waits for its retained
// receipt. A live (not retained) message refused is counted and the wait goes on: the retained receipt that
// follows continues the chain. It used to end the wait, and the gateway started a new chain at seq 1.
TEST_F(CustodyAgentOrigin, ALiveMessageRefusedDuringTheWaitDoesNotEndIt) {
  await(5s);
  channel_.set_retained(false);
  channel_.deliver("checkpoint/gw-1/custody", "not a receipt");
  channel_.deliver("checkpoint/gw-1/custody", receipt("gw-2", 42));
  io_.run_for(50ms);
  EXPECT_EQ(decision_.calls, 0) << decision_.why;
  EXPECT_EQ(agent_->status()["receipts_refused"].get<std::uint64_t>(), 2U);
  channel_.set_retained(true);
  channel_.deliver("checkpoint/gw-1/custody", receipt("gw-1", 42));
  io_.run_for(50ms);
  ASSERT_EQ(decision_.calls, 1);
  ASSERT_TRUE(decision_.receipt) << decision_.why;
  EXPECT_EQ(decision_.receipt->through_seq, 42U);
}

TEST_F(CustodyAgentOrigin, NoReceiptWithinTheWaitGivesANewChainOnce) {
  await(100ms);
  io_.run_for(300ms);
  ASSERT_EQ(decision_.calls, 1);
  EXPECT_FALSE(decision_.receipt);
  EXPECT_EQ(decision_.why, "no custody receipt within 100 ms (custody.empty_store_wait_ms)");
  // A receipt after the wait is an ordinary receipt: checked against the (empty) store, refused.
  channel_.deliver("checkpoint/gw-1/custody", receipt("gw-1", 42));
  io_.run_for(50ms);
  EXPECT_EQ(decision_.calls, 1);
  EXPECT_EQ(agent_->status()["receipts_refused"].get<std::uint64_t>(), 1U);
}

TEST(StoreReplacedDetails, NameTheReceiptAndWhatIsNotKnown) {
  const auto d = custody::store_replaced_details(
      custody::Receipt{"central-1", "gw-1", 120, std::string(64, 'c'), 1, {}, {}}, "0123456789abcdef",
      "h.b.s", "why");
  EXPECT_EQ(d["continued_from_seq"], 120);
  EXPECT_EQ(d["lost_after_seq"], 120);
  EXPECT_EQ(d["continued_from_head"], std::string(64, 'c'));
  EXPECT_EQ(d["central"], "central-1");
  EXPECT_EQ(d["central_kid"], "0123456789abcdef");
  EXPECT_EQ(d["receipt"], "h.b.s");
  EXPECT_EQ(d["receipt_sha256"], sha256_hex("h.b.s"));
  EXPECT_EQ(d["reason"], "why");
}

}  // namespace
}  // namespace cpd::app
