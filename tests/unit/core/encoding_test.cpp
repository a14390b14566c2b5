// Unit tests for hex, strict base64url and SHA-256 (RFC 4648 and FIPS 180-2 vectors).
#include "daemon/core/encoding.h"

#include <string>

#include <gtest/gtest.h>

namespace cpd {
namespace {

TEST(Encoding, HexIsLowerCase) {
  EXPECT_EQ(hex_lower(std::string("\x00\xff\x10\xab", 4)), "00ff10ab");
  EXPECT_EQ(hex_lower(""), "");
}

TEST(Encoding, Base64UrlRfc4648Vectors) {
  EXPECT_EQ(base64url_encode(""), "");
  EXPECT_EQ(base64url_encode("f"), "Zg");
  EXPECT_EQ(base64url_encode("fo"), "Zm8");
  EXPECT_EQ(base64url_encode("foo"), "Zm9v");
  EXPECT_EQ(base64url_encode("foob"), "Zm9vYg");
  EXPECT_EQ(base64url_encode("fooba"), "Zm9vYmE");
  EXPECT_EQ(base64url_encode("foobar"), "Zm9vYmFy");
  // The URL-safe alphabet: 0xfb 0xff is "+/8=" in standard base64.
  EXPECT_EQ(base64url_encode(std::string("\xfb\xff", 2)), "-_8");
  EXPECT_EQ(base64url_decode("-_8"), std::string("\xfb\xff", 2));
  EXPECT_EQ(base64url_decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64url_decode(""), "");
}

TEST(Encoding, Base64UrlRoundTripsAllLengthsAndBytes) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes.push_back(static_cast<char>((i * 37 + 11) & 0xff));
    const auto decoded = base64url_decode(base64url_encode(bytes));
    ASSERT_TRUE(decoded.has_value()) << i;
    ASSERT_EQ(*decoded, bytes) << i;
  }
}

TEST(Encoding, Base64UrlDecoderIsStrict) {
  EXPECT_FALSE(base64url_decode("Zg==").has_value());    // padding
  EXPECT_FALSE(base64url_decode("Zm9v+A").has_value());  // standard alphabet
  EXPECT_FALSE(base64url_decode("Zm9v/A").has_value());
  EXPECT_FALSE(base64url_decode("Z").has_value());       // impossible length
  EXPECT_FALSE(base64url_decode("Zm9vY").has_value());
  EXPECT_FALSE(base64url_decode("Zh").has_value());      // non-zero unused bits ("Zg" is the only form)
  EXPECT_FALSE(base64url_decode("Zm9").has_value());     // "Zm8" is the only form of "fo"
  EXPECT_FALSE(base64url_decode(" Zg").has_value());
  EXPECT_FALSE(base64url_decode("Zg\n").has_value());
  EXPECT_FALSE(base64url_decode(std::string("Z\0", 2)).has_value());
}

TEST(Encoding, Sha256Vectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_raw("abc").size(), 32u);
  EXPECT_EQ(hex_lower(sha256_raw("abc")), sha256_hex("abc"));
}

}  // namespace
}  // namespace cpd
