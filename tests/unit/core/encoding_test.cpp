// Unit tests for hex, strict base64url and SHA-256 (RFC 4648 and FIPS 180-2 vectors).
#include "daemon/core/encoding.h"

#include <gtest/gtest.h>

#include <string>

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
  EXPECT_FALSE(base64url_decode("Z").has_value());  // impossible length
  EXPECT_FALSE(base64url_decode("Zm9vY").has_value());
  EXPECT_FALSE(base64url_decode("Zh").has_value());   // non-zero unused bits ("Zg" is the only form)
  EXPECT_FALSE(base64url_decode("Zm9").has_value());  // "Zm8" is the only form of "fo"
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

TEST(Encoding, Base64Rfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode("\xfb\xff"), "+/8=");
  // The GBK bytes of the plate 浙A12345 as a camera sent them.
  EXPECT_EQ(base64_encode("\xd5\xe3"
                          "A12345"),
            "1eNBMTIzNDU=");
}

TEST(Encoding, Utf8ValidityFollowsRfc3629) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(
      is_valid_utf8("\xe6\xb5\x99"
                    "A12345"));                        // 浙A12345
  EXPECT_TRUE(is_valid_utf8("\xf0\x9f\x9a\x97"));      // U+1F697
  EXPECT_TRUE(is_valid_utf8(std::string("a\0b", 3)));  // NUL is text (JCS escapes it)
  EXPECT_FALSE(
      is_valid_utf8("\xd5\xe3"
                    "A12345"));                     // GBK
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate U+D800
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // beyond U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xe6\xb5"));          // truncated
  EXPECT_FALSE(is_valid_utf8("\x80"));              // lone continuation byte
}

// Each ill-formed byte becomes \xNN and each backslash doubles, so the text reads back to the exact bytes.
std::string unescape(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out.push_back(text[i]);
    } else if (text[i + 1] == '\\') {
      out.push_back('\\');
      ++i;
    } else {
      out.push_back(static_cast<char>(std::stoi(std::string(text.substr(i + 2, 2)), nullptr, 16)));
      i += 3;
    }
  }
  return out;
}

TEST(Encoding, EscapedDeviceTextIsUtf8AndLossless) {
  EXPECT_EQ(escape_invalid_utf8("\xd5\xe3"
                                "A12345"),
            "\\xd5\\xe3A12345");
  // Well-formed sequences around ill-formed bytes are kept as they are.
  EXPECT_EQ(escape_invalid_utf8("\xe6\xb5\x99\xff"
                                "A"),
            "\xe6\xb5\x99\\xffA");
  EXPECT_EQ(escape_invalid_utf8("a\\b\x80"), "a\\\\b\\x80");
  EXPECT_EQ(escape_invalid_utf8("\xe6\xb5"), "\\xe6\\xb5");  // a cut sequence: byte by byte
  std::string bytes;
  for (int i = 0; i < 2000; ++i) {
    bytes.push_back(static_cast<char>((i * 131 + 7) & 0xff));
    const std::string escaped = escape_invalid_utf8(bytes);
    ASSERT_TRUE(is_valid_utf8(escaped)) << i;
    ASSERT_EQ(unescape(escaped), bytes) << i;
  }
}

}  // namespace
}  // namespace cpd
