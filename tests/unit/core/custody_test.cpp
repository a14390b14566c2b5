// Unit tests of the custody messages: receipts and head announcements verify only under the right key,
// for the right gateway, with well-formed members; resend requests are bounded; replies round-trip.
#include "daemon/core/custody.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"

namespace cpd::custody {
namespace {

using ::testing::HasSubstr;

class CustodyTest : public ::testing::Test {
 protected:
  KeyForKid keys_of(const Ed25519PrivateKey& key) {
    const auto pub = key.public_key();
    return [pub](const std::string& kid) -> std::optional<Ed25519PublicKey> {
      if (kid == pub.kid()) {
        return pub;
      }
      return std::nullopt;
    };
  }
  Ed25519PrivateKey central_ = Ed25519PrivateKey::generate();
  Ed25519PrivateKey other_ = Ed25519PrivateKey::generate();
  Receipt receipt_{"central-1", "gw-1", 42, std::string(64, 'a'), 1767225600000, {}, {}};
};

TEST_F(CustodyTest, AReceiptVerifiesUnderTheCentralKeyAndRoundTrips) {
  const std::string jws = seal_receipt(central_, receipt_);
  const ReceiptCheck c = check_receipt(jws, keys_of(central_), "gw-1");
  ASSERT_TRUE(c.ok) << c.reason;
  EXPECT_EQ(c.receipt, receipt_);
  EXPECT_EQ(c.kid, central_.public_key().kid());
  // The header is the evidence header's shape with its own typ.
  const auto header = base64url_decode(jws.substr(0, jws.find('.')));
  EXPECT_EQ(*header, R"({"alg":"EdDSA","kid":")" + central_.public_key().kid() + R"(","typ":"custody+jws"})");
}

TEST_F(CustodyTest, AReceiptUnderAnotherKeyOrForAnotherGatewayIsRefused) {
  const std::string forged = seal_receipt(other_, receipt_);
  const ReceiptCheck wrong_key = check_receipt(forged, keys_of(central_), "gw-1");
  EXPECT_FALSE(wrong_key.ok);
  EXPECT_THAT(wrong_key.reason, HasSubstr("not a configured central key"));

  const ReceiptCheck wrong_gateway =
      check_receipt(seal_receipt(central_, receipt_), keys_of(central_), "gw-2");
  EXPECT_FALSE(wrong_gateway.ok);
  EXPECT_THAT(wrong_gateway.reason, HasSubstr("names gateway \"gw-1\", not this gateway \"gw-2\""));
}

TEST_F(CustodyTest, ATamperedReceiptFailsItsSignature) {
  std::string jws = seal_receipt(central_, receipt_);
  const auto dot1 = jws.find('.');
  const auto dot2 = jws.find('.', dot1 + 1);
  Receipt more = receipt_;
  more.through_seq = 4242;
  const std::string other_payload = seal_receipt(central_, more);
  const auto o1 = other_payload.find('.');
  const auto o2 = other_payload.find('.', o1 + 1);
  jws = jws.substr(0, dot1 + 1) + other_payload.substr(o1 + 1, o2 - o1 - 1) + jws.substr(dot2);
  const ReceiptCheck c = check_receipt(jws, keys_of(central_), "gw-1");
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.reason, "signature does not verify");
}

TEST_F(CustodyTest, AReceiptWithBadMembersIsRefusedWithTheMember) {
  const auto signed_body = [&](const nlohmann::json& body) {
    return sign_compact(central_, kReceiptTyp, body);
  };
  nlohmann::json body = {
      {"v", 1},           {"type", "custody_receipt"},    {"central", "c"}, {"gateway", "gw-1"},
      {"through_seq", 0}, {"head", std::string(64, 'a')}, {"issued_ms", 1}};
  EXPECT_THAT(check_receipt(signed_body(body), keys_of(central_), "gw-1").reason, HasSubstr("through_seq"));
  body["through_seq"] = 3;
  body["head"] = "ABC";
  EXPECT_THAT(check_receipt(signed_body(body), keys_of(central_), "gw-1").reason, HasSubstr("head"));
  body["head"] = std::string(64, 'a');
  body["v"] = 2;
  EXPECT_THAT(check_receipt(signed_body(body), keys_of(central_), "gw-1").reason,
              HasSubstr("\"v\" is not 1"));
  // An evidence record is not a receipt, whatever it says.
  body["v"] = 1;
  EXPECT_THAT(check_receipt(sign_compact(central_, "evidence+jws", body), keys_of(central_), "gw-1").reason,
              HasSubstr("typ"));
  // Protocol integers are 0 .. 2^53 (docs/custody.md): a negative time, or a seq no record can have.
  EXPECT_TRUE(check_receipt(signed_body(body), keys_of(central_), "gw-1").ok);
  body["issued_ms"] = -1;
  EXPECT_THAT(check_receipt(signed_body(body), keys_of(central_), "gw-1").reason, HasSubstr("issued_ms"));
  body["issued_ms"] = (1ULL << 53) + 2;  // JCS prints only integers a double holds exactly
  EXPECT_THAT(check_receipt(signed_body(body), keys_of(central_), "gw-1").reason, HasSubstr("issued_ms"));
  body["issued_ms"] = 1;
  body["through_seq"] = (1ULL << 53) + 2;
  EXPECT_THAT(check_receipt(signed_body(body), keys_of(central_), "gw-1").reason, HasSubstr("through_seq"));
}

TEST_F(CustodyTest, AReceiptNamesAcceptedLossesAndRefusesMisshapenOnes) {
  // Without losses the body has no lost_* members (receipts read as before).
  Receipt plain{"central-1", "gw-1", 9, std::string(64, 'a'), 1767225605000, {}, {}};
  const std::string jws = seal_receipt(central_, plain);
  EXPECT_EQ(
      base64url_decode(jws.substr(jws.find('.') + 1, jws.rfind('.') - jws.find('.') - 1))->find("lost_"),
      std::string::npos);

  Receipt with = plain;
  with.lost_seqs = {{2, 3}, {5, 8}};
  with.lost_pictures = {std::string(64, 'c')};
  const ReceiptCheck ok = check_receipt(seal_receipt(central_, with), keys_of(central_), "gw-1");
  ASSERT_TRUE(ok.ok) << ok.reason;
  EXPECT_EQ(ok.receipt, with);

  const auto reason_for = [&](const char* member, const nlohmann::json& value) {
    nlohmann::json body = {
        {"v", 1},           {"type", "custody_receipt"},    {"central", "c"}, {"gateway", "gw-1"},
        {"through_seq", 9}, {"head", std::string(64, 'a')}, {"issued_ms", 1}, {member, value}};
    return check_receipt(sign_compact(central_, kReceiptTyp, body), keys_of(central_), "gw-1").reason;
  };
  for (const nlohmann::json& bad :
       {nlohmann::json::array(), nlohmann::json::array({nlohmann::json::array({3, 2})}),
        nlohmann::json::array({nlohmann::json::array({0, 2})}),
        nlohmann::json::array({nlohmann::json::array({4, 9})}),  // through_seq is held
        nlohmann::json::array({nlohmann::json::array({4})}), nlohmann::json("1-3")}) {
    EXPECT_THAT(reason_for("lost_seqs", bad), HasSubstr("lost_seqs")) << bad.dump();
  }
  for (const nlohmann::json& bad :
       {nlohmann::json::array({"ABC"}), nlohmann::json::array({1}), nlohmann::json(7)}) {
    EXPECT_THAT(reason_for("lost_pictures", bad), HasSubstr("lost_pictures")) << bad.dump();
  }
}

TEST_F(CustodyTest, AHeadAnnouncementVerifiesForItsGatewayOnly) {
  const Head head{"gw-1", 7, std::string(64, 'b'), 1767225600000};
  const std::string jws = seal_head(central_, head);
  const HeadCheck ok = check_head(jws, keys_of(central_), "gw-1");
  ASSERT_TRUE(ok.ok) << ok.reason;
  EXPECT_EQ(ok.head, head);
  EXPECT_FALSE(check_head(jws, keys_of(central_), "gw-2").ok);
  const HeadCheck unknown = check_head(jws, keys_of(other_), "gw-1");
  EXPECT_FALSE(unknown.ok);
  EXPECT_TRUE(unknown.unknown_key);
}

TEST(ResendRequestTest, ParsesRangesAndMediaWithinTheBounds) {
  const auto ok =
      parse_resend_request(R"({"v":1,"from_seq":5,"to_seq":9,"media":[")" + std::string(64, 'c') + R"("]})");
  ASSERT_TRUE(ok.request) << ok.reason;
  EXPECT_EQ(ok.request->from_seq, 5u);
  EXPECT_EQ(ok.request->to_seq, 9u);
  ASSERT_EQ(ok.request->media.size(), 1u);
  EXPECT_TRUE(parse_resend_request(resend_request_json(*ok.request)).request);

  EXPECT_THAT(parse_resend_request(R"({"v":1,"from_seq":9,"to_seq":5})").reason,
              HasSubstr("from_seq <= to_seq"));
  EXPECT_THAT(parse_resend_request(R"({"v":1,"from_seq":1,"to_seq":1000000})").reason,
              HasSubstr("more than"));
  // At the top of the u64 range a walk in chunks would wrap around and republish the whole store.
  EXPECT_THAT(
      parse_resend_request(R"({"v":1,"from_seq":18446744073709551600,"to_seq":18446744073709551615})").reason,
      HasSubstr("<= 2^53"));
  EXPECT_THAT(parse_resend_request(R"({"v":1,"from_seq":9007199254740993,"to_seq":9007199254740993})").reason,
              HasSubstr("<= 2^53"));
  EXPECT_TRUE(
      parse_resend_request(R"({"v":1,"from_seq":9007199254740990,"to_seq":9007199254740992})").request);
  EXPECT_THAT(parse_resend_request(R"({"v":1,"from_seq":1})").reason, HasSubstr("go together"));
  EXPECT_THAT(parse_resend_request(R"({"v":1,"media":["../etc/passwd"]})").reason, HasSubstr("hex"));
  EXPECT_THAT(parse_resend_request(R"({"v":1})").reason, HasSubstr("asks for nothing"));
  EXPECT_THAT(parse_resend_request("\xff\xfe").reason, HasSubstr("not a JSON object"));
  EXPECT_THAT(parse_resend_request(std::string(kMaxRequestBytes + 1, ' ')).reason, HasSubstr("bytes"));
}

TEST(ResendReplyTest, RoundTrips) {
  ResendReply r;
  r.from_seq = 3;
  r.to_seq = 20;
  r.sent = 10;
  r.not_held = {{3, 5}, {9, 11}};
  r.media_sent = {std::string(64, 'd')};
  r.media_not_held = {std::string(64, 'e')};
  const auto back = parse_resend_reply(resend_reply_json(r));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->sent, 10u);
  EXPECT_EQ(back->not_held, r.not_held);
  EXPECT_EQ(back->media_sent, r.media_sent);
  EXPECT_EQ(back->media_not_held, r.media_not_held);
}

// A reply of another version, or none, is not read as version 1 (an independent gateway's `"v":2` reply, or
// one with `not_held` alone, used to mark seqs unrecoverable).
TEST(ResendReplyTest, OnlyVersionOneIsRead) {
  EXPECT_TRUE(parse_resend_reply(R"({"v":1,"not_held":[[2,2]]})"));
  EXPECT_TRUE(parse_resend_reply(R"({"v":1,"error":"busy"})"));
  for (const char* other : {R"({"not_held":[[2,2]]})", R"({"v":2,"not_held":[[2,2]]})",
                            R"({"v":"1","not_held":[[2,2]]})", R"({"v":1.5,"not_held":[[2,2]]})"}) {
    EXPECT_FALSE(parse_resend_reply(other)) << other;
  }
}

}  // namespace
}  // namespace cpd::custody
