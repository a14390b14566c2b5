// Interop with the stock `openssl` CLI, as central teams will check the feed: our JWS signatures verify
// with `openssl pkeyutl -verify -rawin`, our kid matches one computed from openssl's DER output, and a
// key file we write is usable by openssl (and vice versa).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"
#include "daemon/core/sealer.h"
#include "tests/unit/core/core_test_support.h"

namespace cpd {
namespace {

int run_shell(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
}

class OpenSslInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (run_shell("command -v openssl >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "openssl CLI not installed";
    }
    key_path_ = dir_.file("gw.key");
    pub_path_ = dir_.file("gw.pub.pem");
    key_.save_pem_file(key_path_);
    test::write_file(pub_path_, key_.public_key().pem(), 0644);
  }

  // Writes "<header>.<payload>" and the decoded signature of a JWS, and asks openssl to verify them.
  int openssl_verify(const std::string& jws) {
    const auto dot2 = jws.rfind('.');
    test::write_file(dir_.file("data"), jws.substr(0, dot2));
    test::write_file(dir_.file("sig"), base64url_decode(std::string_view(jws).substr(dot2 + 1)).value());
    return run_shell("openssl pkeyutl -verify -pubin -inkey '" + pub_path_ + "' -rawin -in '" +
                     dir_.file("data") + "' -sigfile '" + dir_.file("sig") + "' >/dev/null 2>&1");
  }

  test::TempDir dir_;
  Ed25519PrivateKey key_ = Ed25519PrivateKey::generate();
  std::string key_path_;
  std::string pub_path_;
};

TEST_F(OpenSslInteropTest, OpensslVerifiesOurJwsAndRejectsTampering) {
  Sealer sealer(key_, "zj-hz-g60-k1234-n", ChainHead{});
  Fact f;
  f.type = "speeding";
  f.time_ms = 1700000000000;
  f.fields = {{"plate",
               "\xe6\xb5\x99"
               "A12345"},
              {"speed", 1234},
              {"limit", 1000}};
  const std::string jws = sealer.seal(f, 1700000000100).jws;
  EXPECT_EQ(openssl_verify(jws), 0);

  // Same signature, payload altered by one field: openssl must refuse it.
  nlohmann::json body = nlohmann::json::parse(test::payload_of(jws));
  body["speed"] = 999;
  const auto dot1 = jws.find('.');
  const auto dot2 = jws.rfind('.');
  const std::string tampered =
      jws.substr(0, dot1 + 1) + base64url_encode(canonical_json(body)) + jws.substr(dot2);
  EXPECT_NE(openssl_verify(tampered), 0);
}

TEST_F(OpenSslInteropTest, KidMatchesOpensslDerivedValue) {
  // The raw key is the last 32 bytes of the SubjectPublicKeyInfo DER.
  const std::string out = dir_.file("kid");
  ASSERT_EQ(run_shell("openssl pkey -pubin -in '" + pub_path_ +
                      "' -outform DER | tail -c 32 | "
                      "openssl dgst -sha256 -r | cut -c1-16 > '" +
                      out + "'"),
            0);
  EXPECT_EQ(test::read_file(out), key_.public_key().kid() + "\n");
}

TEST_F(OpenSslInteropTest, OpensslSignsWithOurKeyFileAndWeVerify) {
  const std::string data = dir_.file("msg");
  test::write_file(data, "eyJhbGciOiJFZERTQSJ9.eyJ2IjoxfQ");
  ASSERT_EQ(run_shell("openssl pkeyutl -sign -inkey '" + key_path_ + "' -rawin -in '" + data + "' -out '" +
                      dir_.file("osig") + "'"),
            0);
  const std::string sig = test::read_file(dir_.file("osig"));
  EXPECT_EQ(sig, key_.sign("eyJhbGciOiJFZERTQSJ9.eyJ2IjoxfQ"));  // Ed25519 is deterministic
  EXPECT_TRUE(key_.public_key().verify("eyJhbGciOiJFZERTQSJ9.eyJ2IjoxfQ", sig));
}

TEST_F(OpenSslInteropTest, WeLoadAKeyGeneratedByOpenssl) {
  const std::string path = dir_.file("openssl.key");
  ASSERT_EQ(run_shell("umask 077 && openssl genpkey -algorithm ed25519 -out '" + path + "'"), 0);
  const auto key = Ed25519PrivateKey::load_pem_file(path);
  ASSERT_EQ(run_shell("openssl pkey -in '" + path + "' -pubout -out '" + dir_.file("o.pub") + "'"), 0);
  EXPECT_EQ(Ed25519PublicKey::from_pem(test::read_file(dir_.file("o.pub"))).raw(), key.public_key().raw());
}

}  // namespace
}  // namespace cpd
