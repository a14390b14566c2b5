// Unit tests of Digest and Basic authorization: the RFC 2617 "Mufasa" example exactly, nc counting,
// nonce reuse, stale challenges and challenge parsing.
#include "adapters/camera/http_auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace cpd::adapters {
namespace {

using ::testing::HasSubstr;

// RFC 2617 section 3.5.
const std::string kMufasaChallenge =
    "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", "
    "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

TEST(Md5Test, KnownValue) {
  EXPECT_EQ(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
}

TEST(DigestChallengeTest, ParsesTheRfcExample) {
  const auto c = parse_digest_challenge(kMufasaChallenge);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->realm, "testrealm@host.com");
  EXPECT_EQ(c->nonce, "dcd98b7102dd2f0e8b11d0f600bfb0c093");
  EXPECT_EQ(c->opaque, "5ccc069c403ebaf9f0171e9517f40e41");
  EXPECT_TRUE(c->qop_auth);
  EXPECT_FALSE(c->stale);
}

TEST(DigestChallengeTest, StaleUnquotedAndRejections) {
  const auto c =
      parse_digest_challenge("digest realm=r,nonce=\"n\\\"1\", qop=auth, stale=TRUE, algorithm=MD5");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->realm, "r");
  EXPECT_EQ(c->nonce, "n\"1");
  EXPECT_TRUE(c->stale);
  EXPECT_EQ(parse_digest_challenge("Basic realm=\"x\""), std::nullopt);
  EXPECT_EQ(parse_digest_challenge("Digest realm=\"x\""), std::nullopt);  // no nonce
  EXPECT_EQ(parse_digest_challenge("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""), std::nullopt);
  EXPECT_EQ(parse_digest_challenge("Digest realm=\"x\", nonce=\"n\", algorithm=SHA-256"), std::nullopt);
  EXPECT_EQ(parse_digest_challenge("Digest realm=\"x, nonce=\"n\""), std::nullopt);  // open quote
}

TEST(DigestAuthenticatorTest, MufasaExampleExactly) {
  DigestAuthenticator auth("Mufasa", "Circle Of Life", [] { return std::string("0a4f113b"); });
  ASSERT_TRUE(auth.take_challenge({kMufasaChallenge}));
  EXPECT_EQ(auth.response("GET", "/dir/index.html", "00000001", "0a4f113b"),
            "6629fae49393a05397450978507c4ef1");
  const std::string header = auth.authorization("GET", "/dir/index.html");
  EXPECT_EQ(header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", "
            "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, nc=00000001, "
            "cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", "
            "opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"");
  EXPECT_THAT(header, ::testing::Not(HasSubstr("Circle")));
}

TEST(DigestAuthenticatorTest, NonceIsReusedWithACountingNcUntilANewChallenge) {
  int n = 0;
  DigestAuthenticator auth("u", "p", [&n] { return "c" + std::to_string(++n); });
  EXPECT_FALSE(auth.has_challenge());
  ASSERT_TRUE(auth.take_challenge({"Basic realm=\"x\"", kMufasaChallenge}));
  EXPECT_THAT(auth.authorization("GET", "/a"), HasSubstr("nc=00000001, cnonce=\"c1\""));
  EXPECT_THAT(auth.authorization("GET", "/a"), HasSubstr("nc=00000002, cnonce=\"c2\""));
  for (int i = 0; i < 13; ++i) {
    auth.authorization("GET", "/a");
  }
  EXPECT_THAT(auth.authorization("GET", "/a"), HasSubstr("nc=00000010"));
  ASSERT_TRUE(auth.take_challenge({"Digest realm=\"r\", nonce=\"fresh\", qop=\"auth\", stale=true"}));
  EXPECT_TRUE(auth.challenge()->stale);
  const std::string h = auth.authorization("GET", "/a");
  EXPECT_THAT(h, HasSubstr("nonce=\"fresh\""));
  EXPECT_THAT(h, HasSubstr("nc=00000001"));
  EXPECT_FALSE(auth.take_challenge({"Basic realm=\"x\""}));
}

TEST(DigestAuthenticatorTest, RandomCnoncesDiffer) {
  DigestAuthenticator auth("u", "p");
  ASSERT_TRUE(auth.take_challenge({kMufasaChallenge}));
  const std::string a = auth.authorization("GET", "/a");
  const std::string b = auth.authorization("GET", "/a");
  const auto cnonce = [](const std::string& h) {
    const auto p = h.find("cnonce=\"") + 8;
    return h.substr(p, h.find('"', p) - p);
  };
  EXPECT_EQ(cnonce(a).size(), 32U);
  EXPECT_NE(cnonce(a), cnonce(b));
}

TEST(DigestAuthenticatorTest, Rfc2069WithoutQop) {
  DigestAuthenticator auth("Mufasa", "CircleOfLife");
  ASSERT_TRUE(auth.take_challenge(
      {"Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\""}));
  // RFC 2069 section 2.4's example response for these inputs.
  EXPECT_EQ(auth.response("GET", "/dir/index.html", "", ""), "1949323746fe6a43ef61f9606e7febea");
  EXPECT_THAT(auth.authorization("GET", "/dir/index.html"), ::testing::Not(HasSubstr("nc=")));
}

TEST(BasicAuthTest, Rfc7617Example) {
  EXPECT_EQ(basic_authorization("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
  EXPECT_EQ(basic_authorization("a", "b"), "Basic YTpi");
  EXPECT_EQ(basic_authorization("ab", "c"), "Basic YWI6Yw==");
}

}  // namespace
}  // namespace cpd::adapters
