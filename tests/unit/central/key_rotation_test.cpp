// Unit tests of central's pure part of a key rotation: which records enrol a key, and the key cache
// trusting the new key for the rest of a batch.
#include "central/key_rotation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "daemon/core/key_rotation.h"

namespace cpd::central {
namespace {

using ::testing::HasSubstr;

IncomingRecord record_of(const Fact& f, const std::string& signing_kid, std::uint64_t seq) {
  IncomingRecord r;
  r.gateway = "gw-1";
  r.seq = seq;
  r.kid = signing_kid;
  r.body = f.fields;
  r.body["type"] = f.type;
  r.body["seq"] = seq;
  return r;
}

TEST(CentralKeyRotation, RotationRecordEnrolsTheNamedKeyForItsGateway) {
  const auto old_key = Ed25519PrivateKey::generate().public_key();
  const auto new_key = Ed25519PrivateKey::generate().public_key();
  const auto rec = record_of(make_key_rotation_fact(old_key, new_key, 1), old_key.kid(), 42);
  const auto e = rotation_enrolment(rec);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->gateway, "gw-1");
  EXPECT_EQ(e->seq, 42u);
  EXPECT_EQ(e->new_kid, new_key.kid());
  EXPECT_EQ(Ed25519PublicKey::from_pem(e->new_pem).raw(), new_key.raw());
  EXPECT_EQ(e->source, "rotation:42");
}

TEST(CentralKeyRotation, OtherRecordsAndMalformedRotationsEnrolNothing) {
  const auto old_key = Ed25519PrivateKey::generate().public_key();
  const auto new_key = Ed25519PrivateKey::generate().public_key();
  IncomingRecord plain;
  plain.gateway = "gw-1";
  plain.body = {{"type", "passage"}};
  EXPECT_FALSE(rotation_enrolment(plain));

  // Signed by a key that is not the one it says it rotates from.
  std::string error;
  const auto other = Ed25519PrivateKey::generate().public_key();
  auto rec = record_of(make_key_rotation_fact(old_key, new_key, 1), other.kid(), 7);
  EXPECT_FALSE(rotation_enrolment(rec, &error));
  EXPECT_THAT(error, HasSubstr("is not the kid that signed it"));

  rec = record_of(make_key_rotation_fact(old_key, new_key, 1), old_key.kid(), 7);
  rec.body["new_kid"] = other.kid();
  EXPECT_FALSE(rotation_enrolment(rec, &error));
  EXPECT_THAT(error, HasSubstr("is not the kid of new_public_key"));
}

TEST(CentralKeyRotation, KeyCacheTrustsTheNewKeyOnce) {
  const auto old_key = Ed25519PrivateKey::generate().public_key();
  const auto new_key = Ed25519PrivateKey::generate().public_key();
  TrustedKeys keys;
  keys["gw-1"].emplace(old_key.kid(), old_key);
  const auto rec = record_of(make_key_rotation_fact(old_key, new_key, 1), old_key.kid(), 9);
  EXPECT_EQ(trust_rotated_key(keys, rec), new_key.kid());
  ASSERT_EQ(keys["gw-1"].count(new_key.kid()), 1u);
  EXPECT_EQ(keys["gw-1"].at(new_key.kid()).raw(), new_key.raw());
  EXPECT_EQ(keys["gw-1"].count(old_key.kid()), 1u);
  EXPECT_FALSE(trust_rotated_key(keys, rec));  // already there
  EXPECT_EQ(keys.count("gw-2"), 0u);           // only for its own gateway
}

}  // namespace
}  // namespace cpd::central
