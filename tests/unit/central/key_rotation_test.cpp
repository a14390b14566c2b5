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
  keys["gw-1"].emplace(old_key.kid(), TrustedKey{old_key, 1, std::nullopt});
  const auto rec = record_of(make_key_rotation_fact(old_key, new_key, 1), old_key.kid(), 9);
  EXPECT_EQ(trust_rotated_key(keys, rec), new_key.kid());
  ASSERT_EQ(keys["gw-1"].count(new_key.kid()), 1u);
  EXPECT_EQ(keys["gw-1"].at(new_key.kid()).key.raw(), new_key.raw());
  EXPECT_EQ(keys["gw-1"].count(old_key.kid()), 1u);
  // The new key from the next seq on, open-ended; the old one through the rotation's seq only.
  EXPECT_EQ(keys["gw-1"].at(new_key.kid()).from_seq, 10u);
  EXPECT_FALSE(keys["gw-1"].at(new_key.kid()).to_seq);
  EXPECT_EQ(keys["gw-1"].at(old_key.kid()).from_seq, 1u);
  EXPECT_EQ(keys["gw-1"].at(old_key.kid()).to_seq, std::optional<std::uint64_t>(9));
  EXPECT_FALSE(trust_rotated_key(keys, rec));  // already there
  EXPECT_EQ(keys.count("gw-2"), 0u);           // only for its own gateway
}

TEST(CentralKeyRotation, KeyRangeAdmitsItsSeqsAndRefusesARetiredKeysLaterSeqs) {
  EXPECT_EQ(key_range_refusal("aaaa", 1, std::nullopt, 1), "");
  EXPECT_EQ(key_range_refusal("aaaa", 1, std::nullopt, 1000000), "");
  EXPECT_EQ(key_range_refusal("aaaa", 1, 9, 9), "");
  EXPECT_THAT(key_range_refusal("aaaa", 1, 9, 10),
              HasSubstr("seq 10 is signed by kid aaaa, retired at seq 9 by its key_rotation record"));
  EXPECT_THAT(key_range_refusal("aaaa", 1, 9, 10), HasSubstr("forgery"));
  EXPECT_EQ(key_range_refusal("bbbb", 10, std::nullopt, 10), "");
  EXPECT_THAT(key_range_refusal("bbbb", 10, std::nullopt, 9),
              HasSubstr("before kid bbbb's range (trusted from seq 10)"));
}

TEST(CentralKeyRotation, SecondRotationNarrowsTheMiddleKeyAndAReplayedRotationWidensNothing) {
  const auto k1 = Ed25519PrivateKey::generate().public_key();
  const auto k2 = Ed25519PrivateKey::generate().public_key();
  const auto k3 = Ed25519PrivateKey::generate().public_key();
  TrustedKeys keys;
  keys["gw-1"].emplace(k1.kid(), TrustedKey{k1, 1, std::nullopt});
  EXPECT_TRUE(trust_rotated_key(keys, record_of(make_key_rotation_fact(k1, k2, 1), k1.kid(), 20)));
  EXPECT_TRUE(trust_rotated_key(keys, record_of(make_key_rotation_fact(k2, k3, 1), k2.kid(), 50)));
  const auto& mine = keys["gw-1"];
  EXPECT_EQ(mine.at(k2.kid()).from_seq, 21u);
  EXPECT_EQ(mine.at(k2.kid()).to_seq, std::optional<std::uint64_t>(50));
  EXPECT_EQ(mine.at(k3.kid()).from_seq, 51u);
  // The first rotation seen again (a resend): k1 stays retired at 20, k2 keeps its range.
  EXPECT_FALSE(trust_rotated_key(keys, record_of(make_key_rotation_fact(k1, k2, 1), k1.kid(), 20)));
  EXPECT_EQ(mine.at(k1.kid()).to_seq, std::optional<std::uint64_t>(20));
  EXPECT_EQ(mine.at(k2.kid()).from_seq, 21u);
}

}  // namespace
}  // namespace cpd::central
