// Unit tests for the ChainVerifier: a good chain passes; tampering, gaps, reordering, a wrong key,
// forks and non-canonical bodies fail with a clear reason; QoS 1 redeliveries are dropped, not failed.
#include "daemon/core/chain_verifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"
#include "daemon/core/record_check.h"
#include "daemon/core/sealer.h"
#include "tests/unit/core/core_test_support.h"

namespace cpd {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

Fact passage(int i) {
  Fact f;
  f.type = "passage";
  f.time_ms = 1700000000000 + i;
  f.fields = {{"plate",
               "\xe6\xb5\x99"
               "A0000" +
                   std::to_string(i)},
              {"lane", i % 3}};
  return f;
}

std::vector<std::string> chain(Sealer& sealer, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(sealer.seal(passage(i), 1700000001000 + i).jws);
  }
  return out;
}

class ChainVerifierTest : public ::testing::Test {
 protected:
  std::string header() const {
    return R"({"alg":"EdDSA","kid":")" + key_.public_key().kid() + R"(","typ":"evidence+jws"})";
  }
  json body(std::uint64_t seq, const std::string& prev) const {
    return {{"v", 1},
            {"gateway", "gw-1"},
            {"seq", seq},
            {"prev", prev},
            {"id", "gw-1:" + std::to_string(seq)},
            {"type", "audit"},
            {"time_ms", 5},
            {"created_ms", 6}};
  }

  test::TempDir dir_;
  Ed25519PrivateKey key_ = test::rfc8032_key(dir_);
  Sealer sealer_{key_, "gw-1", ChainHead{}};
  ChainVerifier verifier_{key_.public_key()};
};

TEST_F(ChainVerifierTest, GoodChainVerifies) {
  const auto records = chain(sealer_, 20);
  verifier_.expect_from_start(true);
  for (std::size_t i = 0; i < records.size(); ++i) {
    const VerifyResult r = verifier_.feed(records[i]);
    ASSERT_TRUE(r.ok) << i << ": " << r.reason;
    EXPECT_FALSE(r.duplicate);
    EXPECT_EQ(r.seq, i + 1);
    EXPECT_EQ(r.id, "gw-1:" + std::to_string(i + 1));
    EXPECT_EQ(r.body["type"], "passage");
    EXPECT_EQ(r.body["lane"], static_cast<int>(i % 3));
  }
  EXPECT_EQ(verifier_.verified(), 20u);
  EXPECT_EQ(verifier_.duplicates(), 0u);
  EXPECT_EQ(verifier_.first_seq(), 1u);
  EXPECT_EQ(verifier_.last_seq(), 20u);
  EXPECT_EQ(verifier_.gateway(), "gw-1");
}

TEST_F(ChainVerifierTest, MayStartMidChainUnlessFromStart) {
  const auto records = chain(sealer_, 5);
  ChainVerifier mid(key_.public_key());
  EXPECT_TRUE(mid.feed(records[2]).ok);
  EXPECT_TRUE(mid.feed(records[3]).ok);

  ChainVerifier strict(key_.public_key());
  strict.expect_from_start(true);
  const VerifyResult r = strict.feed(records[2]);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "first record is seq 3, expected seq 1");
}

TEST_F(ChainVerifierTest, TamperedPayloadFailsSignature) {
  const auto records = chain(sealer_, 2);
  ASSERT_TRUE(verifier_.feed(records[0]).ok);
  json b = json::parse(test::payload_of(records[1]));
  b["lane"] = 7;
  const std::string& jws = records[1];
  const auto dot1 = jws.find('.');
  const auto dot2 = jws.rfind('.');
  const std::string forged = jws.substr(0, dot1 + 1) + base64url_encode(canonical_json(b)) + jws.substr(dot2);
  const VerifyResult r = verifier_.feed(forged);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "signature does not verify");
  EXPECT_EQ(verifier_.verified(), 1u);
  EXPECT_TRUE(verifier_.feed(records[1]).ok);  // a failure does not move the chain
}

TEST_F(ChainVerifierTest, RemovedRecordsAreCounted) {
  const auto records = chain(sealer_, 6);
  ASSERT_TRUE(verifier_.feed(records[0]).ok);
  ASSERT_TRUE(verifier_.feed(records[1]).ok);
  VerifyResult r = verifier_.feed(records[3]);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "seq 4 follows 2: 1 record missing");
  EXPECT_EQ(r.id, "gw-1:4");
  r = verifier_.feed(records[5]);
  EXPECT_EQ(r.reason, "seq 6 follows 2: 3 records missing");
}

TEST_F(ChainVerifierTest, ReorderedRecordsFail) {
  const auto records = chain(sealer_, 4);
  ASSERT_TRUE(verifier_.feed(records[0]).ok);
  ASSERT_TRUE(verifier_.feed(records[1]).ok);
  ASSERT_TRUE(verifier_.feed(records[2]).ok);
  // An older record with bytes not seen before (e.g. from before this verifier started).
  ChainVerifier late(key_.public_key());
  ASSERT_TRUE(late.feed(records[2]).ok);
  const VerifyResult r = late.feed(records[1]);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "seq 2 arrives after seq 3 (out of order)");
  // Swapped neighbours.
  ChainVerifier swapped(key_.public_key());
  ASSERT_TRUE(swapped.feed(records[0]).ok);
  EXPECT_EQ(swapped.feed(records[2]).reason, "seq 3 follows 1: 1 record missing");
}

TEST_F(ChainVerifierTest, ForkedRecordBreaksPrev) {
  const auto a = chain(sealer_, 2);
  Sealer other(key_, "gw-1", ChainHead{});
  other.seal(passage(99), 1);  // a different seq 1
  const std::string b2 = other.seal(passage(1), 2).jws;
  ASSERT_TRUE(verifier_.feed(a[0]).ok);
  const VerifyResult r = verifier_.feed(b2);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "prev of seq 2 does not match SHA-256 of seq 1");

  // The same id with different bytes after the chain moved on.
  ASSERT_TRUE(verifier_.feed(a[1]).ok);
  const VerifyResult again = verifier_.feed(b2);
  EXPECT_FALSE(again.ok);
  EXPECT_THAT(again.reason, HasSubstr("seq 2 was already received with different bytes"));
}

TEST_F(ChainVerifierTest, WrongKeyIsNamed) {
  const auto records = chain(sealer_, 1);
  const auto other = Ed25519PrivateKey::generate();
  ChainVerifier wrong(other.public_key());
  const VerifyResult r = wrong.feed(records[0]);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "kid " + key_.public_key().kid() + " is not the key's kid " + other.public_key().kid());

  // A record that claims our kid but was signed by another key.
  const std::string forged = test::sign_raw(other, header(), canonical_json(body(1, std::string(64, '0'))));
  EXPECT_EQ(verifier_.feed(forged).reason, "signature does not verify");
}

TEST_F(ChainVerifierTest, DuplicateRedeliveryIsDropped) {
  const auto records = chain(sealer_, 3);
  ASSERT_TRUE(verifier_.feed(records[0]).ok);
  ASSERT_TRUE(verifier_.feed(records[1]).ok);
  VerifyResult dup = verifier_.feed(records[1]);
  EXPECT_TRUE(dup.ok);
  EXPECT_TRUE(dup.duplicate);
  EXPECT_EQ(dup.id, "gw-1:2");
  dup = verifier_.feed(records[0]);
  EXPECT_TRUE(dup.duplicate);
  const VerifyResult r = verifier_.feed(records[2]);
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_FALSE(r.duplicate);
  EXPECT_EQ(verifier_.verified(), 3u);
  EXPECT_EQ(verifier_.duplicates(), 2u);
}

TEST_F(ChainVerifierTest, NonCanonicalBodyFails) {
  const json b = body(1, std::string(64, '0'));
  // Validly signed, but pretty-printed / with a non-canonical number spelling.
  for (const std::string& text :
       {b.dump(2), canonical_json(b) + " ",
        std::string(R"({"created_ms":6,"gateway":"gw-1","id":"gw-1:1",)"
                    R"("prev":")") +
            std::string(64, '0') + R"(","seq":1,"time_ms":5e0,"type":"audit","v":1})"}) {
    ChainVerifier v(key_.public_key());
    const VerifyResult r = v.feed(test::sign_raw(key_, header(), text));
    EXPECT_FALSE(r.ok) << text;
    EXPECT_EQ(r.reason, "body is not canonical JSON") << text;
  }
  // The canonical form of the same body passes.
  EXPECT_TRUE(verifier_.feed(test::sign_raw(key_, header(), canonical_json(b))).ok);
}

TEST_F(ChainVerifierTest, CheckRecordGivesTheSignedBodyBytesAndNoBodyWhenNotAnObject) {
  // Central stores `canonical_body` as the record's body column: exactly the bytes that were signed.
  const auto lookup = [&](const std::string& kid) -> std::optional<Ed25519PublicKey> {
    return kid == key_.public_key().kid() ? std::optional(key_.public_key()) : std::nullopt;
  };
  const std::string canonical = canonical_json(body(1, std::string(64, '0')));
  const RecordCheck good = check_record(test::sign_raw(key_, header(), canonical), lookup);
  ASSERT_TRUE(good.ok) << good.reason;
  EXPECT_EQ(good.canonical_body, canonical);
  EXPECT_EQ(good.body["id"], "gw-1:1");

  for (const auto& [text, reason] : std::vector<std::pair<std::string, std::string>>{
           {"[1,2]", "body is not a JSON object"}, {"{\"v\":", "body is not JSON"}}) {
    const RecordCheck bad = check_record(test::sign_raw(key_, header(), text), lookup);
    EXPECT_FALSE(bad.ok);
    EXPECT_EQ(bad.reason, reason);
    EXPECT_TRUE(bad.body.is_null()) << text;
    EXPECT_TRUE(bad.canonical_body.empty());
  }
  // A failure later than the body's form keeps the decoded body (ChainVerifier reports it).
  json b = body(1, std::string(64, '0'));
  b["v"] = 2;
  const RecordCheck late = check_record(test::sign_raw(key_, header(), canonical_json(b)), lookup);
  EXPECT_FALSE(late.ok);
  EXPECT_EQ(late.body["v"], 2);
  EXPECT_TRUE(late.canonical_body.empty());
}

TEST_F(ChainVerifierTest, CommonFieldsAreChecked) {
  const std::string zeros(64, '0');
  const auto reason_for = [&](const json& b) {
    ChainVerifier v(key_.public_key());
    return v.feed(test::sign_raw(key_, header(), canonical_json(b))).reason;
  };
  json b = body(1, zeros);
  b.erase("type");
  EXPECT_EQ(reason_for(b), "body has no \"type\" field");
  b = body(1, zeros);
  b["v"] = 2;
  EXPECT_EQ(reason_for(b), "field \"v\" is not 1");
  b = body(1, zeros);
  b["seq"] = "1";
  EXPECT_EQ(reason_for(b), "field \"seq\" is not a positive integer");
  b = body(1, zeros);
  b["id"] = "gw-2:1";
  EXPECT_THAT(reason_for(b), HasSubstr("is not <gateway>:<seq>"));
  b = body(1, std::string(64, 'A'));
  EXPECT_EQ(reason_for(b), "field \"prev\" is not 64 lower-case hex digits");
  b = body(1, std::string(64, 'a'));
  EXPECT_EQ(reason_for(b), "prev of seq 1 is not 64 zeros");
  b = body(1, zeros);
  b["time_ms"] = "5";
  EXPECT_EQ(reason_for(b), "field \"time_ms\" is not an integer");
  b = body(1, zeros);
  b["speed"] = 12.5;
  EXPECT_EQ(reason_for(b), "body field speed is not an integer");
  b = body(1, zeros);
  b["a\nFAKE log line"] = 0.5;  // the sender's member name is escaped in the reason (it reaches logs)
  EXPECT_EQ(reason_for(b), "body field a\\x0aFAKE log line is not an integer");
  // A picture is named by its SHA-256 in lower-case hex, or the record is refused (a receipt would cover a
  // picture nobody can hold).
  b = body(1, zeros);
  b["pictures"] = json::array({{{"sha256", std::string(64, 'a')}, {"bytes", 10}}});
  EXPECT_EQ(reason_for(b), "");
  b["pictures"].push_back({{"sha256", std::string(64, 'A')}});
  EXPECT_EQ(reason_for(b), "pictures[1].sha256 is not 64 lower-case hex digits");
  b["pictures"] = json::array({{{"bytes", 10}}});
  EXPECT_EQ(reason_for(b), "pictures[0].sha256 is not 64 lower-case hex digits");
  b["pictures"] = "a picture";
  EXPECT_EQ(reason_for(b), "field \"pictures\" is not an array");
}

TEST_F(ChainVerifierTest, GatewayChangeFails) {
  const auto records = chain(sealer_, 1);
  Sealer impostor(key_, "gw-2", sealer_.head());
  const std::string next = impostor.seal(passage(1), 1).jws;
  ASSERT_TRUE(verifier_.feed(records[0]).ok);
  EXPECT_EQ(verifier_.feed(next).reason, "gateway changes from gw-1 to gw-2");
}

TEST_F(ChainVerifierTest, HeaderIsChecked) {
  const std::string payload = canonical_json(body(1, std::string(64, '0')));
  const std::string kid = key_.public_key().kid();
  const auto reason_for = [&](const std::string& h) {
    ChainVerifier v(key_.public_key());
    return v.feed(test::sign_raw(key_, h, payload)).reason;
  };
  EXPECT_EQ(reason_for(R"({"alg":"none","kid":")" + kid + R"(","typ":"evidence+jws"})"),
            "protected header alg is not \"EdDSA\"");
  EXPECT_EQ(reason_for(R"({"alg":"EdDSA","kid":")" + kid + R"(","typ":"JWT"})"),
            "protected header typ is not \"evidence+jws\"");
  EXPECT_EQ(reason_for(R"({"alg":"EdDSA","crit":["x"],"kid":")" + kid + R"(","typ":"evidence+jws"})"),
            "protected header has unexpected member \"crit\"");
  EXPECT_EQ(reason_for(R"({"typ":"evidence+jws","alg":"EdDSA","kid":")" + kid + R"("})"),
            "protected header is not canonical JSON");
  EXPECT_EQ(reason_for(header()), "");
}

TEST_F(ChainVerifierTest, GarbageNeverCrashes) {
  const auto records = chain(sealer_, 1);
  const std::string good = records[0];
  std::vector<std::string> inputs = {"",
                                     ".",
                                     "..",
                                     "...",
                                     "a.b",
                                     "a.b.c",
                                     "a.b.c.d",
                                     "\xff\xfe.\x00.x",
                                     good.substr(0, good.size() / 2),
                                     good + ".",
                                     good + "A"};
  inputs.push_back(base64url_encode("[1,2]") + "." + base64url_encode("{}") + ".");
  inputs.push_back(base64url_encode("{\"alg\":") + "." + base64url_encode("{}") + ".AA");
  for (std::size_t i = 0; i < good.size(); i += 7) {  // every single-character corruption fails
    std::string bad = good;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    inputs.push_back(bad);
  }
  for (const auto& in : inputs) {
    ChainVerifier v(key_.public_key());
    const VerifyResult r = v.feed(in);
    EXPECT_FALSE(r.ok) << in;
    EXPECT_FALSE(r.reason.empty()) << in;
  }
}

}  // namespace
}  // namespace cpd
