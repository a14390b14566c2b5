// Unit tests for Ed25519 keys: RFC 8032 vector, sign/verify, PEM round trips, and the key-file rules
// (mode check, no overwrite, clear errors for missing/unparsable/non-Ed25519 keys).
#include "daemon/core/ed25519.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "daemon/core/encoding.h"
#include "tests/unit/core/core_test_support.h"

namespace cpd {
namespace {

using ::testing::HasSubstr;

std::string key_error_of(const std::string& path, bool check_mode = true) {
  try {
    Ed25519PrivateKey::load_pem_file(path, check_mode);
  } catch (const KeyError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Ed25519, Rfc8032Test1Vector) {
  test::TempDir dir;
  const auto key = test::rfc8032_key(dir);
  EXPECT_EQ(hex_lower(key.public_key().raw()), test::kRfc8032PublicHex);
  EXPECT_EQ(key.public_key().kid(), test::kRfc8032Kid);
  EXPECT_EQ(hex_lower(key.sign("")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
            "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
}

TEST(Ed25519, KidIsSha256PrefixOfRawKey) {
  const auto key = Ed25519PrivateKey::generate();
  const auto pub = key.public_key();
  EXPECT_EQ(pub.kid(), sha256_hex(pub.raw()).substr(0, 16));
  EXPECT_EQ(pub.kid().size(), 16u);
}

TEST(Ed25519, SignVerify) {
  const auto key = Ed25519PrivateKey::generate();
  const auto pub = key.public_key();
  const std::string sig = key.sign("eyJhbGciOiJFZERTQSJ9.e30");
  ASSERT_EQ(sig.size(), 64u);
  EXPECT_TRUE(pub.verify("eyJhbGciOiJFZERTQSJ9.e30", sig));
  EXPECT_FALSE(pub.verify("eyJhbGciOiJFZERTQSJ9.e31", sig));
  std::string bad = sig;
  bad[10] = static_cast<char>(bad[10] ^ 0x01);
  EXPECT_FALSE(pub.verify("eyJhbGciOiJFZERTQSJ9.e30", bad));
  EXPECT_FALSE(pub.verify("eyJhbGciOiJFZERTQSJ9.e30", sig.substr(0, 63)));
  EXPECT_FALSE(pub.verify("eyJhbGciOiJFZERTQSJ9.e30", ""));
  const auto other = Ed25519PrivateKey::generate().public_key();
  EXPECT_FALSE(other.verify("eyJhbGciOiJFZERTQSJ9.e30", sig));
}

TEST(Ed25519, PublicKeyPemAndRawRoundTrip) {
  const auto pub = Ed25519PrivateKey::generate().public_key();
  EXPECT_EQ(Ed25519PublicKey::from_pem(pub.pem()).raw(), pub.raw());
  EXPECT_EQ(Ed25519PublicKey::from_raw(pub.raw()).kid(), pub.kid());
  EXPECT_THAT(pub.pem(), HasSubstr("-----BEGIN PUBLIC KEY-----"));
  EXPECT_EQ(hex_lower(Ed25519PublicKey::from_pem(test::kRfc8032PublicPem).raw()), test::kRfc8032PublicHex);
}

TEST(Ed25519, BadPublicKeysAreRefused) {
  EXPECT_THROW(Ed25519PublicKey::from_raw("short"), KeyError);
  EXPECT_THROW(Ed25519PublicKey::from_pem("not a pem"), KeyError);
  EXPECT_THROW(Ed25519PublicKey::from_pem(""), KeyError);
  // An X25519 key: valid PEM, wrong algorithm.
  const char* x25519 =
      "-----BEGIN PUBLIC KEY-----\n"
      "MCowBQYDK2VuAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
      "-----END PUBLIC KEY-----\n";
  EXPECT_THROW(Ed25519PublicKey::from_pem(x25519), KeyError);
}

TEST(Ed25519, SaveWritesMode0600AndLoadsBack) {
  test::TempDir dir;
  const std::string path = dir.file("gw.key");
  const auto key = Ed25519PrivateKey::generate();
  key.save_pem_file(path);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(test::read_file(path), HasSubstr("-----BEGIN PRIVATE KEY-----"));
  const auto loaded = Ed25519PrivateKey::load_pem_file(path);
  EXPECT_EQ(loaded.public_key().raw(), key.public_key().raw());
  EXPECT_TRUE(key.public_key().verify("x", loaded.sign("x")));
}

TEST(Ed25519, SaveRefusesToOverwrite) {
  test::TempDir dir;
  const std::string path = dir.file("gw.key");
  Ed25519PrivateKey::generate().save_pem_file(path);
  const std::string before = test::read_file(path);
  EXPECT_THROW(Ed25519PrivateKey::generate().save_pem_file(path), KeyError);
  EXPECT_EQ(test::read_file(path), before);
}

TEST(Ed25519, LoadRefusesGroupOrOtherPermissions) {
  test::TempDir dir;
  const std::string path = dir.file("gw.key");
  test::write_file(path, test::kRfc8032PrivatePem, 0644);
  EXPECT_EQ(key_error_of(path),
            "key file " + path + " has mode 0644; it must be 0600 or stricter (chmod 600 " + path + ")");
  for (const mode_t mode : {0640, 0604, 0610, 0601, 0660}) {
    ::chmod(path.c_str(), mode);
    EXPECT_THAT(key_error_of(path), HasSubstr("it must be 0600 or stricter")) << std::oct << mode;
  }
  ::chmod(path.c_str(), 0644);
  EXPECT_EQ(key_error_of(path, false), "no error");  // the check can be waived explicitly
  for (const mode_t mode : {0600, 0400}) {
    ::chmod(path.c_str(), mode);
    EXPECT_EQ(key_error_of(path), "no error") << std::oct << mode;
  }
}

TEST(Ed25519, LoadNamesTheProblem) {
  test::TempDir dir;
  EXPECT_THAT(key_error_of(dir.file("missing.key")), HasSubstr("does not exist"));
  EXPECT_THAT(key_error_of(dir.file("missing.key")), HasSubstr(dir.file("missing.key")));

  const std::string garbage = dir.file("garbage.key");
  test::write_file(garbage, "hello\n", 0600);
  EXPECT_THAT(key_error_of(garbage), HasSubstr("does not hold an unencrypted PEM private key"));

  const std::string x25519 = dir.file("x25519.key");
  test::write_file(x25519,
                   "-----BEGIN PRIVATE KEY-----\n"
                   "MC4CAQAwBQYDK2VuBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                   "-----END PRIVATE KEY-----\n",
                   0600);
  EXPECT_THAT(key_error_of(x25519), HasSubstr("not Ed25519"));

  EXPECT_THAT(key_error_of(dir.path()), HasSubstr("not a regular file"));
}

}  // namespace
}  // namespace cpd
