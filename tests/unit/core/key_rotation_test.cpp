// Unit tests for key rotation in the chain: the key_rotation record (built, read back, malformed ones
// refused), the Sealer switching keys, and the ChainVerifier following a rotation and refusing the old key
// after it.
#include "daemon/core/key_rotation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"
#include "daemon/core/sealer.h"
#include "tests/unit/core/core_test_support.h"

namespace cpd {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

Fact audit(int i) {
  Fact f;
  f.type = "audit";
  f.time_ms = 1700000000000 + i;
  f.fields = {{"event", "test"}, {"i", i}};
  return f;
}

json body_of(const std::string& jws) {
  return json::parse(test::payload_of(jws));
}

class KeyRotationTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
  Ed25519PrivateKey old_ = test::rfc8032_key(dir_);
  Ed25519PrivateKey new_ = Ed25519PrivateKey::generate();
  Sealer sealer_{old_, "gw-1", ChainHead{}};

  // Seals 3 records, the rotation (seq 4), then 3 more under the new key.
  std::vector<std::string> rotated_chain() {
    std::vector<std::string> out;
    for (int i = 0; i < 3; ++i) {
      out.push_back(sealer_.seal(audit(i), 1700000001000 + i).jws);
    }
    out.push_back(
        sealer_
            .seal(make_key_rotation_fact(old_.public_key(), new_.public_key(), 1700000002000), 1700000002000)
            .jws);
    sealer_.use_key(new_);
    for (int i = 3; i < 6; ++i) {
      out.push_back(sealer_.seal(audit(i), 1700000003000 + i).jws);
    }
    return out;
  }
};

TEST_F(KeyRotationTest, FactNamesTheNewKeyAndParsesBack) {
  const Fact f = make_key_rotation_fact(old_.public_key(), new_.public_key(), 5);
  EXPECT_EQ(f.type, "key_rotation");
  EXPECT_EQ(f.fields["old_kid"], test::kRfc8032Kid);
  EXPECT_EQ(f.fields["new_kid"], new_.public_key().kid());
  EXPECT_EQ(f.fields["new_public_key"]["kty"], "OKP");
  EXPECT_EQ(f.fields["new_public_key"]["crv"], "Ed25519");
  EXPECT_EQ(*base64url_decode(f.fields["new_public_key"]["x"].get<std::string>()), new_.public_key().raw());
  EXPECT_EQ(f.fields["new_public_key_pem"], new_.public_key().pem());

  const auto jws = sealer_.seal(f, 6).jws;
  std::string error;
  const auto r = parse_key_rotation(body_of(jws), old_.public_key().kid(), &error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->old_kid, old_.public_key().kid());
  EXPECT_EQ(r->new_kid, new_.public_key().kid());
  EXPECT_EQ(r->new_key.raw(), new_.public_key().raw());
}

TEST_F(KeyRotationTest, MalformedRotationsAreRefusedWithTheReason) {
  const json good = make_key_rotation_fact(old_.public_key(), new_.public_key(), 5).fields;
  const auto with_type = [](json b) {
    b["type"] = "key_rotation";
    return b;
  };
  std::string error;
  EXPECT_FALSE(parse_key_rotation(good, "", &error));  // no type: not a key_rotation
  EXPECT_THAT(error, HasSubstr("not a key_rotation"));
  EXPECT_TRUE(parse_key_rotation(with_type(good), ""));

  json b = with_type(good);
  b["new_kid"] = "0000000000000000";
  EXPECT_FALSE(parse_key_rotation(b, "", &error));
  EXPECT_THAT(error, HasSubstr("is not the kid of new_public_key"));

  b = with_type(good);
  b["new_public_key"]["x"] = base64url_encode(std::string(31, 'a'));
  EXPECT_FALSE(parse_key_rotation(b, "", &error));
  EXPECT_THAT(error, HasSubstr("32 bytes"));

  b = with_type(good);
  b["new_public_key"]["crv"] = "X25519";
  EXPECT_FALSE(parse_key_rotation(b, "", &error));
  EXPECT_THAT(error, HasSubstr("not an Ed25519 JWK"));

  b = with_type(good);
  b["new_public_key_pem"] = old_.public_key().pem();
  EXPECT_FALSE(parse_key_rotation(b, "", &error));
  EXPECT_THAT(error, HasSubstr("new_public_key_pem is not the key"));

  b = with_type(good);
  b.erase("old_kid");
  EXPECT_FALSE(parse_key_rotation(b, "", &error));

  // Signed by a key other than the one it says it rotates from.
  EXPECT_FALSE(parse_key_rotation(with_type(good), "1111111111111111", &error));
  EXPECT_THAT(error, HasSubstr("is not the kid that signed it"));

  // A rotation to the same key.
  const json same = with_type(make_key_rotation_fact(old_.public_key(), old_.public_key(), 5).fields);
  EXPECT_FALSE(parse_key_rotation(same, "", &error));
  EXPECT_THAT(error, HasSubstr("equals old_kid"));
}

TEST_F(KeyRotationTest, SealerSignsWithTheNewKeyAfterUseKey) {
  const auto records = rotated_chain();
  EXPECT_THAT(test::header_of(records[3]), HasSubstr(old_.public_key().kid()));
  EXPECT_THAT(test::header_of(records[4]), HasSubstr(new_.public_key().kid()));
  EXPECT_EQ(sealer_.kid(), new_.public_key().kid());
  EXPECT_EQ(body_of(records[4])["seq"], 5);
}

TEST_F(KeyRotationTest, VerifierFollowsTheRotationFromTheOldKey) {
  const auto records = rotated_chain();
  ChainVerifier v(old_.public_key());
  v.expect_from_start(true);
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto r = v.feed(records[i]);
    ASSERT_TRUE(r.ok) << i << ": " << r.reason;
  }
  EXPECT_EQ(v.verified(), 6u + 1u);
  EXPECT_EQ(v.rotations(), 1u);
  EXPECT_EQ(v.kid(), new_.public_key().kid());
  // A redelivered rotation record is a duplicate, not a second rotation.
  EXPECT_TRUE(v.feed(records[3]).duplicate);
  EXPECT_EQ(v.rotations(), 1u);
}

TEST_F(KeyRotationTest, VerifierWithoutTheRotationRefusesTheNewKey) {
  const auto records = rotated_chain();
  ChainVerifier v(old_.public_key());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(v.feed(records[i]).ok);
  }
  // The rotation record skipped: seq 5 is a gap anyway, but first its key is unknown.
  const auto r = v.feed(records[4]);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.reason, HasSubstr("is not the key's kid"));
}

TEST_F(KeyRotationTest, OldKeyIsRefusedAfterTheRotation) {
  auto records = rotated_chain();
  // Seq 5 again, but signed by the old key (what a stolen old key could make).
  json forged = body_of(records[4]);
  const std::string header =
      R"({"alg":"EdDSA","kid":")" + old_.public_key().kid() + R"(","typ":"evidence+jws"})";
  const std::string forged_jws = test::sign_raw(old_, header, canonical_json(forged));
  ChainVerifier v(old_.public_key());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(v.feed(records[i]).ok);
  }
  const auto r = v.feed(forged_jws);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.reason, HasSubstr("is not the key's kid " + new_.public_key().kid()));
  EXPECT_TRUE(v.feed(records[4]).ok);
}

TEST_F(KeyRotationTest, MalformedRotationInTheChainFailsVerification) {
  // A key_rotation whose new_kid does not match its key, sealed by the right key: the verifier stops.
  Fact bad = make_key_rotation_fact(old_.public_key(), new_.public_key(), 5);
  bad.fields["new_kid"] = "0123456789abcdef";
  const auto jws = sealer_.seal(bad, 6).jws;
  ChainVerifier v(old_.public_key());
  const auto r = v.feed(jws);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.reason, HasSubstr("key_rotation record"));
  EXPECT_EQ(v.kid(), old_.public_key().kid());
}

}  // namespace
}  // namespace cpd
