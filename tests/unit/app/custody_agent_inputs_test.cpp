// CustodyAgent's inputs under hostile traffic (docs/custody.md, "Checks, in order"; docs/faults.md, "Custody
// inputs under a flood"), made deterministic: the store's thread is a queue the test runs when it chooses, so
// two receipts are checked at once; the side channel is fake, so messages arrive faster than the agent takes
// them. A real SQLite store (empty: every receipt names a seq beyond its head).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include "daemon/app/custody_agent.h"
#include "daemon/core/custody.h"
#include "daemon/core/encoding.h"
#include "daemon/core/sealer.h"
#include "tests/unit/app/app_test_support.h"

namespace cpd::app {
namespace {

using test::FixedClock;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class CustodyAgentInputs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_test_dir("cpd-agent-inputs");
    store_ = std::make_unique<store::EvidenceStore>((dir_ / "store.db").string());
    test::custody_settings(cfg_, central_);
    CustodyHost host;
    host.run_on_store = [this](std::function<void(store::EvidenceStore&)> task) {
      store_tasks_.push_back(std::move(task));
    };
    host.submit = [this](Fact, std::function<void(const SealedRecord&)> committed) {
      committing_.push_back(std::move(committed));  // the test says when the custody record commits
    };
    host.read_media = [this](const std::string& sha) {
      reads_.push_back(sha);
      const auto it = held_.find(sha);
      return it == held_.end() ? std::optional<std::string>() : std::optional<std::string>(it->second);
    };
    host.media_absent = [this](const std::string&) { return media_absent_; };
    host.remove_media = [](const std::string&) {};
    host.chain_head = [this] { return store_->chain_head(); };
    agent_ = std::make_unique<CustodyAgent>(io_, cfg_, gateway_key_, channel_, std::move(host), clock_);
    agent_->start();
    run_store();
  }
  void TearDown() override {
    agent_->stop();
    io_.run_for(50ms);
    agent_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  // The store's thread, one round: every task queued so far; then the agent's strand.
  void run_store() {
    io_.run_for(20ms);
    auto tasks = std::move(store_tasks_);
    store_tasks_.clear();
    for (auto& task : tasks) {
      task(*store_);
    }
    io_.restart();
    io_.run_for(20ms);
  }
  std::string receipt(std::uint64_t through) {
    return custody::seal_receipt(
        central_, custody::Receipt{"central-1", "gw-1", through, std::string(64, 'b'), 1, {}, {}});
  }
  std::uint64_t counter(const char* name) { return agent_->status()[name].get<std::uint64_t>(); }
  // Seqs 1..n of the gateway's chain (audit records), committed to the store.
  std::vector<store::StoredRecord> append_audit_records(int n) {
    Sealer sealer(gateway_key_, "gw-1", ChainHead{});
    std::vector<store::StoredRecord> records;
    for (int i = 0; i < n; ++i) {
      Fact f;
      f.type = "audit";
      f.time_ms = clock_.now_ms();
      records.push_back({sealer.seal(f, clock_.now_ms()), {}});
    }
    EXPECT_TRUE(store_->append(records).is_ok());
    return records;
  }

  fs::path dir_;
  boost::asio::io_context io_;
  config::Config cfg_;
  Ed25519PrivateKey gateway_key_ = Ed25519PrivateKey::generate();
  Ed25519PrivateKey central_ = Ed25519PrivateKey::generate();
  test::FakeChannel channel_{/*retained=*/false};
  FixedClock clock_{1'767'225'600'000};
  std::unique_ptr<store::EvidenceStore> store_;
  std::vector<std::function<void(store::EvidenceStore&)>> store_tasks_;
  std::unique_ptr<CustodyAgent> agent_;
  bool media_absent_ = true;                 // what the media directory says of a file read_media cannot read
  std::vector<std::string> reads_;           // every file read_media was asked for
  std::map<std::string, std::string> held_;  // the media files read_media finds (sha256 -> bytes)
  std::vector<std::function<void(const SealedRecord&)>> committing_;  // custody records being committed
};

// Two receipts checked against the store at once, both refused: the agent falls back to what it accepted, so
// a later receipt between the two is checked (and here refused: counted), not ignored as an older one.
TEST_F(CustodyAgentInputs, ARefusedReceiptCheckedBesideAnotherLeavesNoTrace) {
  channel_.deliver("checkpoint/gw-1/custody", receipt(1'000'000'000'001));
  io_.run_for(20ms);
  channel_.deliver("checkpoint/gw-1/custody", receipt(1'000'000'000'002));
  io_.run_for(20ms);
  ASSERT_EQ(store_tasks_.size(), 2U) << "both receipts are being checked at once";
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 2U);
  channel_.deliver("checkpoint/gw-1/custody", receipt(1'000'000'000'001));
  io_.run_for(20ms);
  ASSERT_EQ(store_tasks_.size(), 1U) << "a receipt below a refused one was ignored";
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 3U);
  EXPECT_EQ(counter("receipts_accepted"), 0U);
}

// A receipt with a wrong head for seq 3, then at once a genuine one through 2, arriving while the first is
// still being checked: the genuine one used to be taken for an older receipt and ignored (an independent
// central's test lost 5 of 14 such pairs until its next refresh). It is held back and checked once the first
// is refused. One for the same seq as a receipt being checked is not held back: that check answers for it.
TEST_F(CustodyAgentInputs, AGenuineReceiptBelowOneBeingCheckedIsTakenWhenThatOneIsRefused) {
  const std::vector<store::StoredRecord> records = append_audit_records(3);
  const auto genuine = [&](std::uint64_t n) {
    return custody::seal_receipt(
        central_, custody::Receipt{"central-1", "gw-1", n, sha256_hex(records[n - 1].record.jws), 1, {}, {}});
  };
  channel_.deliver("checkpoint/gw-1/custody", receipt(3));  // head 'b'...: refused by the store check
  io_.run_for(20ms);
  channel_.deliver("checkpoint/gw-1/custody", genuine(2));
  io_.run_for(20ms);
  ASSERT_EQ(store_tasks_.size(), 1U) << "only the first is checked now";
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 1U);
  run_store();  // the held-back receipt's own check
  ASSERT_EQ(committing_.size(), 1U) << "the genuine receipt was ignored";
  SealedRecord sealed;
  sealed.seq = 4;
  sealed.type = "custody";
  committing_[0](sealed);
  run_store();
  ASSERT_TRUE(store_->custody());
  EXPECT_EQ(store_->custody()->through_seq, 2U);
  EXPECT_EQ(counter("receipts_accepted"), 1U);

  // The same seq as the receipt being checked: not held back, not checked.
  clock_.advance(61'000);
  channel_.deliver("checkpoint/gw-1/custody", genuine(3));
  io_.run_for(20ms);
  channel_.deliver("checkpoint/gw-1/custody",
                   custody::seal_receipt(
                       central_, custody::Receipt{"central-1", "gw-1", 3, std::string(64, 'c'), 2, {}, {}}));
  io_.run_for(20ms);
  run_store();
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 1U) << "the same seq while it is checked is not held back";
}

// A receipt naming as lost a picture whose file is there but cannot be read now (EACCES, EIO, too many open
// files) is refused: whether the gateway holds it cannot be told. Before, an unreadable file counted as not
// held, and the receipt let retention delete the only copy. Once the file is really gone, it is taken.
TEST_F(CustodyAgentInputs, APictureNamedLostThatCannotBeReadNowIsNotTakenAsLost) {
  const std::vector<store::StoredRecord> records = append_audit_records(3);
  const std::string lost = custody::seal_receipt(
      central_,
      custody::Receipt{
          "central-1", "gw-1", 2, sha256_hex(records[1].record.jws), 1, {}, {std::string(64, 'e')}});
  media_absent_ = false;
  channel_.deliver("checkpoint/gw-1/custody", lost);
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 1U);
  EXPECT_EQ(counter("receipts_accepted"), 0U);
  EXPECT_NE(agent_->status()["last_refusal"].get<std::string>().find("cannot read its copy"),
            std::string::npos)
      << agent_->status().dump();
  media_absent_ = true;
  channel_.deliver("checkpoint/gw-1/custody", lost);
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 1U)
      << "taken (its custody record submitted): " << agent_->status().dump();
}

// A resend request (from central, or anything that can publish on the gateway's resend topic) naming a kept
// body-worn recording's SHA-256 (public: its record is on the feed) gets it listed as not held, and the file
// is never read: only pictures go out on the media topic. Before, the file was read whole into memory on the
// store's thread (10 at a time, gigabytes each) and published on the media topic, past the recordings policy.
TEST_F(CustodyAgentInputs, AResendRequestNamingARecordingNeverReadsItAndAnswersNotHeld) {
  const std::string recording(64, 'a');
  Sealer sealer(gateway_key_, "gw-1", ChainHead{});
  Fact f;
  f.type = "recording";
  f.time_ms = clock_.now_ms();
  store::StoredRecord rec{sealer.seal(f, clock_.now_ms()), {}};
  rec.effects.kept_media = {store::KeptMedia{recording, false, 0}};
  ASSERT_TRUE(store_->append(std::vector<store::StoredRecord>{rec}).is_ok());
  channel_.ack = true;
  const std::string picture(64, 'c');
  channel_.deliver("checkpoint/gw-1/resend",
                   custody::resend_request_json(custody::ResendRequest{0, 0, {recording, picture}}),
                   "checkpoint/gw-1/resend/response", "corr-1");
  for (int i = 0; i < 5; ++i) {
    run_store();
  }
  EXPECT_EQ(reads_, (std::vector<std::string>{picture})) << "the recording was read";
  ASSERT_FALSE(channel_.published.empty());
  const auto& answer = channel_.published.back();
  EXPECT_EQ(answer.topic, "checkpoint/gw-1/resend/response");
  const auto reply = custody::parse_resend_reply(answer.payload);
  ASSERT_TRUE(reply) << answer.payload;
  EXPECT_EQ(reply->media_not_held, (std::vector<std::string>{recording, picture}));
  EXPECT_TRUE(reply->media_sent.empty());
}

// MQTT v5 allows zero-length Correlation Data (binary data of length 0). A request carrying it gets its reply
// with the same, present and empty; a request without it gets a reply without it. Before, an empty one was
// taken as absent, and an independent central matching replies by it found none.
TEST_F(CustodyAgentInputs, AnEmptyCorrelationDataComesBackPresentAndEmpty) {
  channel_.ack = true;
  const std::string picture(64, 'c');
  const std::string request = custody::resend_request_json(custody::ResendRequest{0, 0, {picture}});
  channel_.deliver("checkpoint/gw-1/resend", request, "checkpoint/gw-1/resend/response", std::string());
  channel_.deliver("checkpoint/gw-1/resend", request, "checkpoint/gw-1/resend/response", std::nullopt);
  channel_.deliver("checkpoint/gw-1/resend", "{}", "checkpoint/gw-1/resend/response", std::string());
  for (int i = 0; i < 5; ++i) {
    run_store();
  }
  std::vector<std::optional<std::string>> correlations;
  for (const auto& m : channel_.published) {
    if (m.topic == "checkpoint/gw-1/resend/response") {
      correlations.push_back(m.correlation_data);
    }
  }
  ASSERT_EQ(correlations.size(), 3U);
  // The refusal of "{}" is answered at once; the two requests after their work, in order.
  EXPECT_EQ(std::count(correlations.begin(), correlations.end(), std::optional<std::string>("")), 2);
  EXPECT_EQ(std::count(correlations.begin(), correlations.end(), std::nullopt), 1);
}

// A second receipt arrives while the first one's custody record is still being committed. Its state is noted
// only once that record is in the chain: it used to be saved at once (the "too soon" path), so a power cut
// before the commit left a custody state, and the retention it allows, that no custody record shows.
TEST_F(CustodyAgentInputs, AReceiptDuringACustodyRecordsCommitIsNotedOnlyAfterIt) {
  const std::vector<store::StoredRecord> records = append_audit_records(3);
  const auto receipt_through = [&](std::uint64_t n) {
    return custody::seal_receipt(
        central_, custody::Receipt{"central-1", "gw-1", n, sha256_hex(records[n - 1].record.jws), 1, {}, {}});
  };
  channel_.deliver("checkpoint/gw-1/custody", receipt_through(2));
  run_store();
  ASSERT_EQ(committing_.size(), 1U) << "a custody record for the first receipt";
  channel_.deliver("checkpoint/gw-1/custody", receipt_through(3));
  run_store();
  EXPECT_EQ(committing_.size(), 1U) << "no second custody record";
  EXPECT_FALSE(store_->custody()) << "a custody state saved before any custody record committed";
  SealedRecord committed;
  committed.seq = 4;
  committed.type = "custody";
  committing_[0](committed);
  run_store();
  ASSERT_TRUE(store_->custody());
  EXPECT_EQ(store_->custody()->through_seq, 3U) << "the later receipt, noted after the record";
  EXPECT_EQ(counter("receipts_accepted"), 2U);
}

// Signing the custody record failed, and the store worker sealed a fault record in its place: the chain
// shows nothing of the receipt, so it is not taken (the custody state stays where it was, and so does
// retention). The receipt coming again gets a custody record of its own at once: the failed one does not
// count for record_min_interval_s. Found by a review: the fault record used to be taken for the custody
// record.
TEST_F(CustodyAgentInputs, AReceiptWhoseCustodyRecordCouldNotBeSealedIsNotTaken) {
  const std::vector<store::StoredRecord> records = append_audit_records(3);
  const auto receipt_through = [&](std::uint64_t n) {
    return custody::seal_receipt(
        central_, custody::Receipt{"central-1", "gw-1", n, sha256_hex(records[n - 1].record.jws), 1, {}, {}});
  };
  const auto commit = [&](std::size_t k, std::uint64_t seq, const std::string& type) {
    SealedRecord sealed;
    sealed.seq = seq;
    sealed.type = type;
    committing_[k](sealed);
    run_store();
  };
  channel_.deliver("checkpoint/gw-1/custody", receipt_through(1));
  run_store();
  ASSERT_EQ(committing_.size(), 1U);
  commit(0, 4, "custody");
  ASSERT_TRUE(store_->custody());
  clock_.advance(61'000);  // past custody.record_min_interval_s (60 s) since that custody record

  channel_.deliver("checkpoint/gw-1/custody", receipt_through(3));
  run_store();
  ASSERT_EQ(committing_.size(), 2U) << "a custody record submitted";
  commit(1, 5, "fault");
  EXPECT_EQ(store_->custody()->through_seq, 1U) << "taken on the word of a fault record";
  EXPECT_EQ(counter("receipts_accepted"), 1U);

  channel_.deliver("checkpoint/gw-1/custody", receipt_through(3));
  run_store();
  ASSERT_EQ(committing_.size(), 3U)
      << "the receipt again: another custody record (not ignored, not noted as too soon)";
  commit(2, 6, "custody");
  EXPECT_EQ(store_->custody()->through_seq, 3U);
  EXPECT_EQ(counter("receipts_accepted"), 2U);
}

// A picture an accepted receipt named lost is not read again while its file is absent; but a camera sending
// the same bytes again brings the file back under the same name, and a later receipt still naming it lost
// must then be refused (else retention deletes the only copy the new record names). Found by a review.
TEST_F(CustodyAgentInputs, APictureNamedLostEarlierIsCheckedAgainOnceItsFileIsBack) {
  const std::vector<store::StoredRecord> records = append_audit_records(4);
  const std::string bytes = "the same picture, sent again";
  const std::string picture = sha256_hex(bytes);
  const auto naming_it_lost = [&](std::uint64_t n) {
    return custody::seal_receipt(
        central_,
        custody::Receipt{"central-1", "gw-1", n, sha256_hex(records[n - 1].record.jws), 1, {}, {picture}});
  };
  channel_.deliver("checkpoint/gw-1/custody", naming_it_lost(2));
  run_store();
  ASSERT_EQ(committing_.size(), 1U) << "taken: " << agent_->status().dump();
  SealedRecord committed;
  committed.seq = 5;
  committed.type = "custody";
  committing_[0](committed);
  run_store();
  ASSERT_EQ(counter("receipts_accepted"), 1U);
  reads_.clear();
  channel_.deliver("checkpoint/gw-1/custody", naming_it_lost(3));
  run_store();
  EXPECT_TRUE(reads_.empty()) << "still absent: not read again";
  EXPECT_EQ(counter("receipts_refused"), 0U);
  EXPECT_EQ(counter("receipts_accepted"), 2U);

  media_absent_ = false;
  held_ = {{picture, bytes}};
  channel_.deliver("checkpoint/gw-1/custody", naming_it_lost(4));
  run_store();
  EXPECT_EQ(counter("receipts_refused"), 1U) << agent_->status().dump();
  EXPECT_NE(agent_->status()["last_refusal"].get<std::string>().find("holds it"), std::string::npos)
      << agent_->status().dump();
}

// Messages arriving faster than the agent takes them wait in a bounded hand-off: 64 messages, or 2 MiB.
TEST_F(CustodyAgentInputs, AFloodWaitsInABoundedHandOffAndTheRestIsDroppedAndCounted) {
  for (int i = 0; i < 100; ++i) {
    channel_.deliver("checkpoint/gw-1/custody", "not a receipt " + std::to_string(i));
  }
  EXPECT_EQ(counter("inputs_dropped"), 36U);
  io_.run_for(50ms);
  EXPECT_EQ(counter("receipts_refused"), 64U);
  // Taken: room again.
  channel_.deliver("checkpoint/gw-1/resend", "{}");
  io_.run_for(20ms);
  EXPECT_EQ(counter("resend_refused"), 1U);
  EXPECT_EQ(counter("inputs_dropped"), 36U);
  // Bytes: one message of 1 MiB waits, the next does not fit beside it.
  for (int i = 0; i < 3; ++i) {
    channel_.deliver("checkpoint/gw-1/resend", std::string(1 << 20, ' '));
  }
  EXPECT_EQ(counter("inputs_dropped"), 38U);
  io_.run_for(20ms);
  EXPECT_EQ(counter("resend_refused"), 2U);
}

// Text the sender chose, quoted in a refusal, is escaped and cut: no line break of its making in the log.
TEST_F(CustodyAgentInputs, TheSendersTextInARefusalIsEscapedAndCut) {
  const auto forger = Ed25519PrivateKey::generate();
  const std::string header = R"({"alg":"EdDSA","kid":"k\n<3>custody: FORGED)" + std::string(30000, 'k') +
                             R"(","typ":"custody+jws"})";
  const std::string input = base64url_encode(header) + "." + base64url_encode("{}");
  channel_.deliver("checkpoint/gw-1/custody", input + "." + base64url_encode(forger.sign(input)));
  io_.run_for(20ms);
  const std::string refusal = agent_->status()["last_refusal"].get<std::string>();
  EXPECT_EQ(refusal.find('\n'), std::string::npos) << refusal;
  EXPECT_NE(refusal.find("signed by kid k\\x0a<3>custody: FORGED"), std::string::npos) << refusal;
  EXPECT_LT(refusal.size(), 200U);
}

}  // namespace
}  // namespace cpd::app
