// RecordingUploader's resume after a broken link (docs/custody.md, "Recordings to central", "Resuming"): the
// side channel is scripted, so the test decides which publish is PUBACKed and which fails. A real SQLite
// store holds the `recording` record whose kept file is sent; the io_context runs on the test's thread.
#include "daemon/app/recording_uploader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>

#include "daemon/core/encoding.h"
#include "daemon/core/sealer.h"
#include "tests/unit/app/app_test_support.h"

namespace cpd::app {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Keeps every side publish with its completion, for the test to answer.
class ScriptedChannel final : public forwarder::SideChannel {
 public:
  struct Sent {
    std::string topic;
    std::function<void(bool ok)> done;
    std::string payload;
  };
  void set_subscriptions(std::vector<std::string> /*topics*/, Handler /*handler*/) override {}
  void publish_side(forwarder::OutboundMessage message, std::function<void(bool ok)> done) override {
    sent.push_back({message.topic, std::move(done), message.payload});
  }
  std::vector<Sent> sent;
};

class RecordingUploaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_test_dir("cpd-uploader");
    store_ = std::make_unique<store::EvidenceStore>((dir_ / "store.db").string());
    test::custody_settings(cfg_, central_);
    cfg_.custody.recordings_policy = "all";
    cfg_.custody.recordings_segment_kib = 4;
    cfg_.custody.recordings_rate_kib_s = 1 << 20;  // no bandwidth wait in the test
    make_uploader();
  }
  // (Again) with cfg_ as it is now.
  void make_uploader() {
    UploaderHost host;
    host.run_on_store = [this](std::function<void(store::EvidenceStore&)> task) { task(*store_); };
    host.run_blocking = [](std::function<void()> task) { task(); };
    host.media_path = [this](const std::string& sha256) { return (dir_ / sha256).string(); };
    host.submit = [](Fact, std::function<void(const SealedRecord&)>) {};
    uploader_ = std::make_unique<RecordingUploader>(io_, cfg_, channel_, std::move(host), clock_);
  }
  void TearDown() override {
    uploader_->stop();
    run(50ms);
    uploader_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void run(std::chrono::milliseconds for_) {
    io_.restart();
    io_.run_for(for_);
  }
  // A `recording` record whose file (`length` bytes) the store keeps: what the uploader sends.
  void add_recording(std::size_t length) {
    std::string bytes(length, '\0');
    for (std::size_t i = 0; i < length; ++i) {
      bytes[i] = static_cast<char>(i * 7 + 3);
    }
    sha256_ = sha256_hex(bytes);
    std::ofstream(dir_ / sha256_, std::ios::binary) << bytes;
    Sealer sealer(gateway_key_, "gw-1", ChainHead{});
    Fact fact;
    fact.type = "recording";
    fact.time_ms = clock_.now_ms();
    fact.fields = {
        {"file_sha256", sha256_}, {"length", length}, {"file_name", "r.mp4"}, {"important", false}};
    store::StoredRecord stored{sealer.seal(fact, clock_.now_ms()), {}};
    stored.effects.kept_media = {store::KeptMedia{sha256_, false, 0}};
    ASSERT_TRUE(store_->append(std::vector<store::StoredRecord>{stored}).is_ok());
  }
  // What was published, in order: "init", "segment <offset>", "fin" or the topic itself.
  std::vector<std::string> sent() const {
    std::vector<std::string> out;
    const std::string base = "checkpoint/gw-1/";
    for (const auto& s : channel_.sent) {
      const auto t = filex::parse_file_topic(std::string_view(s.topic).substr(base.size()));
      if (!t.topic) {
        out.push_back(s.topic);
      } else if (t.topic->kind == filex::FileTopic::Kind::init) {
        out.push_back("init");
      } else if (t.topic->kind == filex::FileTopic::Kind::segment) {
        out.push_back("segment " + std::to_string(t.topic->offset));
      } else if (t.topic->kind == filex::FileTopic::Kind::fin) {
        out.push_back("fin");
      } else {
        out.push_back("abort");
      }
    }
    return out;
  }
  void answer(std::size_t i, bool ok) { channel_.sent.at(i).done(ok); }
  // PUBACKs every publish not yet answered, letting each completion run.
  void answer_all() {
    for (std::size_t i = 0; i < channel_.sent.size(); ++i) {
      if (channel_.sent[i].done) {
        std::exchange(channel_.sent[i].done, nullptr)(true);
      }
      run(50ms);
    }
  }
  void want_whole_file() {
    uploader_->on_message(forwarder::InboundMessage{
        "checkpoint/gw-1/files/want", filex::want_json(filex::Want{sha256_, {}}), "", "", false});
    run(300ms);
  }

  fs::path dir_;
  boost::asio::io_context io_;
  config::Config cfg_;
  Ed25519PrivateKey gateway_key_ = Ed25519PrivateKey::generate();
  Ed25519PrivateKey central_ = Ed25519PrivateKey::generate();
  ScriptedChannel channel_;
  test::FixedClock clock_{1'767'225'600'000};
  std::unique_ptr<store::EvidenceStore> store_;
  std::unique_ptr<RecordingUploader> uploader_;
  std::string sha256_;
};

// The last segment is in flight alone when the link breaks (its publish fails): the file resumes at it, init
// first, and only then the fin. It used to count as passed once handed out, so the resumed job sent init and
// fin without it, and central had to find the hole and ask.
TEST_F(RecordingUploaderTest, ALostLastSegmentIsSentAgainBeforeTheFin) {
  add_recording(2 * 4096 + 1000);  // segments at 0, 4096 and 8192 (1000 bytes)
  uploader_->start();
  run(800ms);  // the first poll comes after 500 ms
  ASSERT_EQ(sent(), (std::vector<std::string>{"init"}));
  answer(0, true);
  run(100ms);
  ASSERT_EQ(sent(), (std::vector<std::string>{"init", "segment 0", "segment 4096", "segment 8192"}));
  answer(1, true);
  answer(2, true);
  answer(3, false);  // the link broke under the last segment
  run(1500ms);       // the first backoff: 1 s
  ASSERT_EQ(sent().size(), 5U);
  EXPECT_EQ(sent()[4], "init") << "a resumed file starts with its init (the broker may have lost it)";
  answer(4, true);
  run(100ms);
  ASSERT_EQ(sent().size(), 6U);
  EXPECT_EQ(sent()[5], "segment 8192") << "the segment never PUBACKed goes again";
  answer(5, true);
  run(100ms);
  ASSERT_EQ(sent().size(), 7U);
  EXPECT_EQ(sent()[6], "fin");
}

// A break while earlier segments are in flight too: everything from the first one not PUBACKed is sent again.
TEST_F(RecordingUploaderTest, ABreakResumesAtTheFirstSegmentNotPubacked) {
  add_recording(3 * 4096);  // segments at 0, 4096, 8192
  uploader_->start();
  run(800ms);
  answer(0, true);
  run(100ms);
  ASSERT_EQ(sent(), (std::vector<std::string>{"init", "segment 0", "segment 4096", "segment 8192"}));
  answer(1, true);
  answer(3, true);
  answer(2, false);  // 4096 fails; 8192 was PUBACKed after it
  run(1500ms);
  ASSERT_EQ(sent().size(), 5U);
  answer(4, true);
  run(100ms);
  ASSERT_EQ(sent().size(), 7U);
  EXPECT_EQ(sent()[5], "segment 4096");
  EXPECT_EQ(sent()[6], "segment 8192");
  answer(5, true);
  answer(6, true);
  run(100ms);
  EXPECT_EQ(sent().back(), "fin");
}

// A file sent whole waits receipt_wait_ms for its receipt, then init and fin go again, the wait doubling each
// time: after w, then 2w, then 4w. The first retry used to wait w again (the doubling came one round late).
TEST_F(RecordingUploaderTest, AFileWithoutItsReceiptIsSentAgainWithTheWaitDoublingEachTime) {
  cfg_.custody.recordings_receipt_wait_ms = 100;
  make_uploader();  // never started: replaced as it is
  add_recording(1000);
  uploader_->start();
  run(800ms);
  answer_all();
  ASSERT_EQ(sent(), (std::vector<std::string>{"init", "segment 0", "fin"}));
  const auto fins = [&] {
    const std::vector<std::string> all = sent();
    return std::count(all.begin(), all.end(), std::string("fin"));
  };
  // The clock moves by `ms`; the fins sent by then.
  const auto fins_after = [&](UnixMs ms) {
    clock_.advance(ms);
    run(300ms);
    answer_all();
    return fins();
  };
  EXPECT_EQ(fins_after(0), 1) << "the clock has not moved";
  EXPECT_EQ(fins_after(100), 2) << "w after the upload: init and fin again";
  EXPECT_EQ(fins_after(150), 2) << "1.5 w after the first retry: the second wait is twice the first";
  EXPECT_EQ(fins_after(50), 3) << "2 w after the first retry";
  EXPECT_EQ(fins_after(350), 3) << "3.5 w after the second retry: still waiting (4 w)";
  EXPECT_EQ(fins_after(50), 4);
}

// Central asks for a whole recording (a want without ranges) before the gateway's idle poll has made the
// file's upload row: the gateway finds the recording record naming it and sends it. It used to answer abort
// ("keeps no recording with this SHA-256"), and central marked the file not held for good.
TEST_F(RecordingUploaderTest, AWantForARecordingWhoseRowIsNotMadeYetIsServed) {
  cfg_.custody.recordings_policy = "on_request";
  make_uploader();
  add_recording(1000);
  uploader_->start();
  uploader_->on_message(forwarder::InboundMessage{"checkpoint/gw-1/files/want",
                                                  filex::want_json(filex::Want{sha256_, {}}), "", "", false});
  run(300ms);  // before the first poll (500 ms)
  const std::vector<std::string> out = sent();
  EXPECT_EQ(std::count(out.begin(), out.end(), std::string("abort")), 0);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.front(), "init");
}

// Central asks again for the whole of a file the gateway sent whole: its whole-file hash failed. The gateway
// reads its copy first. Intact, it is sent again; damaged (a bit flipped on flash after collection: each
// segment's checksum is taken from what is read, so only the whole file shows it), it is answered with abort,
// counted, and not sent again. It used to be sent again unchecked, fail again, and be asked for for ever.
TEST_F(RecordingUploaderTest, AWholeFileWantForAFileSentWholeSendsItAgainOnlyIfItsBytesStillMatch) {
  add_recording(1000);
  uploader_->start();
  run(800ms);
  answer_all();
  ASSERT_EQ(sent(), (std::vector<std::string>{"init", "segment 0", "fin"}));

  want_whole_file();  // intact: sent again from byte 0
  answer_all();
  EXPECT_EQ(sent(), (std::vector<std::string>{"init", "segment 0", "fin", "init", "segment 0", "fin"}));

  {
    std::fstream f(dir_ / sha256_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(500);
    f.put('\x5a');  // was 500 * 7 + 3 = 0xaf (mod 256)
  }
  const std::size_t before = channel_.sent.size();
  want_whole_file();
  answer_all();
  const std::vector<std::string> all = sent();
  const std::vector<std::string> after(all.begin() + static_cast<std::ptrdiff_t>(before), all.end());
  ASSERT_EQ(after, (std::vector<std::string>{"abort"}));
  EXPECT_NE(channel_.sent.back().payload.find("damaged: the file here hashes to"), std::string::npos)
      << channel_.sent.back().payload;
  EXPECT_EQ(uploader_->status()["files_damaged"], 1);

  clock_.advance(3'600'000);  // long past any receipt wait: no init or fin again either
  run(2500ms);
  answer_all();
  EXPECT_EQ(channel_.sent.size(), before + 1);
}

// Central refuses a file's init (files/refused). "never" (over its size bound): the file being sent stops at
// once and is not sent again, not even its fin after the receipt wait, until central asks for it. "later"
// (too many transfers open there): it stops and steps aside for a minute, then starts again, init first.
// Before, the gateway never heard of a refusal: it sent every segment anyway (dropped by central) and
// repeated init and fin for ever.
TEST_F(RecordingUploaderTest, AFileCentralRefusesStopsForGoodOrForAWhile) {
  add_recording(3 * 4096);
  uploader_->start();
  run(800ms);
  ASSERT_EQ(sent(), (std::vector<std::string>{"init"}));
  const auto refuse = [&](bool later) {
    uploader_->on_message(forwarder::InboundMessage{
        "checkpoint/gw-1/files/refused",
        filex::refused_json(filex::Refusal{sha256_, later ? "4 transfers already open" : "too large", later}),
        "", "", false});
    run(100ms);
  };
  refuse(true);
  answer_all();  // the init's PUBACK comes after the refusal: nothing more is sent
  EXPECT_EQ(sent(), (std::vector<std::string>{"init"}));
  EXPECT_EQ(uploader_->status()["refused_by_central"], 1);
  clock_.advance(59'000);
  run(2500ms);
  EXPECT_EQ(sent().size(), 1U) << "deferred for a minute";
  clock_.advance(2'000);
  run(2500ms);
  ASSERT_EQ(sent().size(), 2U);
  EXPECT_EQ(sent()[1], "init") << "started again after the minute";

  refuse(false);
  answer_all();
  const std::size_t before = channel_.sent.size();
  clock_.advance(3'600'000);
  run(2500ms);
  answer_all();
  EXPECT_EQ(channel_.sent.size(), before) << "refused for good: no init, segment or fin";
  EXPECT_NE(uploader_->status()["last_refusal"].get<std::string>().find("too large"), std::string::npos);

  want_whole_file();  // central asks for it after all: sent
  answer_all();
  const std::vector<std::string> all = sent();
  EXPECT_EQ(std::count(all.begin(), all.end(), std::string("fin")), 1) << ::testing::PrintToString(all);
}

// files/refused is unsigned: anyone the broker lets publish there can send refusals naming any SHA-256, as
// fast as it likes. What the gateway keeps of them is bounded (256 refused for good, 256 deferred); beyond,
// a refusal is dropped and counted in inputs_dropped.
TEST_F(RecordingUploaderTest, AFloodOfRefusalsKeepsABoundedSet) {
  uploader_->start();
  for (int i = 0; i < 600; ++i) {
    const bool later = i % 2 == 1;
    uploader_->on_message(forwarder::InboundMessage{
        "checkpoint/gw-1/files/refused",
        filex::refused_json(filex::Refusal{sha256_hex("file " + std::to_string(i)), "flood", later}), "", "",
        false});
    if (i % 50 == 49) {
      run(20ms);  // the hand-off (64 waiting) is not what bounds them here
    }
  }
  run(50ms);
  EXPECT_EQ(uploader_->status()["inputs_dropped"], 2 * (300 - 256));
  EXPECT_EQ(uploader_->status()["refused_by_central"], 2 * 256)
      << "a dropped refusal is not counted as taken";
}

}  // namespace
}  // namespace cpd::app
