// Unit tests for RFC 8785 canonical JSON: the RFC's own examples (§3.2.2, §3.2.3, Appendix B) plus
// the cases the evidence feed depends on (CJK and non-BMP keys, integer range, invalid UTF-8).
#include "daemon/core/jcs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace cpd {
namespace {

using nlohmann::json;

double from_bits(std::uint64_t bits) {
  double d = 0;
  std::memcpy(&d, &bits, sizeof(d));
  return d;
}

TEST(Jcs, Rfc8785Section322Sample) {
  const char* input = R"json({
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
})json";
  const char* expected =
      R"({"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],)"
      "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
  EXPECT_EQ(canonical_json(json::parse(input)), expected);
}

TEST(Jcs, Rfc8785Section323KeySorting) {
  const char* input = R"json({
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
})json";
  const std::string expected =
      "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\","
      "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro Sign\","
      "\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\",\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}";
  EXPECT_EQ(canonical_json(json::parse(input)), expected);
}

TEST(Jcs, KeysSortByUtf16NotUtf8) {
  // U+1F600 (surrogates D83D DE00) sorts before U+FF5E in UTF-16, after it in UTF-8 byte order.
  json v = json::object();
  v["\xef\xbd\x9e"] = 4;      // U+FF5E FULLWIDTH TILDE
  v["\xf0\x9f\x98\x80"] = 3;  // U+1F600
  v["\xe6\xb5\x99"] = 2;      // U+6D59 浙
  v["a"] = 1;
  v["B"] = 0;
  EXPECT_EQ(canonical_json(v),
            "{\"B\":0,\"a\":1,\"\xe6\xb5\x99\":2,\"\xf0\x9f\x98\x80\":3,\"\xef\xbd\x9e\":4}");
}

TEST(Jcs, Rfc8785AppendixBNumbers) {
  const std::vector<std::pair<std::uint64_t, const char*>> table = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},
  };
  for (const auto& [bits, text] : table) {
    EXPECT_EQ(canonical_json(json(from_bits(bits))), text) << std::hex << bits;
  }
}

TEST(Jcs, NumberFormThresholds) {
  EXPECT_EQ(canonical_json(json(1e21)), "1e+21");
  EXPECT_EQ(canonical_json(json(1e20)), "100000000000000000000");
  EXPECT_EQ(canonical_json(json(1e-7)), "1e-7");
  EXPECT_EQ(canonical_json(json(1.5e-7)), "1.5e-7");
  EXPECT_EQ(canonical_json(json(1e-6)), "0.000001");
  EXPECT_EQ(canonical_json(json(0.1)), "0.1");
  EXPECT_EQ(canonical_json(json(-1.5)), "-1.5");
  EXPECT_EQ(canonical_json(json(100.0)), "100");
  EXPECT_EQ(canonical_json(json(123.456)), "123.456");
  EXPECT_EQ(canonical_json(json(-0.0)), "0");
}

TEST(Jcs, NonFiniteNumbersAreErrors) {
  EXPECT_THROW(canonical_json(json(std::numeric_limits<double>::quiet_NaN())), JcsError);
  EXPECT_THROW(canonical_json(json(std::numeric_limits<double>::infinity())), JcsError);
  EXPECT_THROW(canonical_json(json(-std::numeric_limits<double>::infinity())), JcsError);
}

TEST(Jcs, IntegersMustBeExactDoubles) {
  constexpr std::int64_t k2p53 = std::int64_t{1} << 53;
  EXPECT_EQ(canonical_json(json(k2p53)), "9007199254740992");
  EXPECT_EQ(canonical_json(json(-k2p53)), "-9007199254740992");
  EXPECT_EQ(canonical_json(json(std::uint64_t{1700000000000})), "1700000000000");
  EXPECT_EQ(canonical_json(json(std::int64_t{-42})), "-42");
  EXPECT_THROW(canonical_json(json(k2p53 + 1)), JcsError);
  EXPECT_THROW(canonical_json(json(-k2p53 - 1)), JcsError);
  EXPECT_THROW(canonical_json(json(std::numeric_limits<std::uint64_t>::max())), JcsError);
  EXPECT_THROW(canonical_json(json::array({1, json(std::numeric_limits<std::int64_t>::min())})), JcsError);
}

// Found by fuzz_jcs: a float beyond 2^53 canonicalises to integer text ("90071992547333330"), which a
// parser reads back as an integer. Canonicalising that again must give the same bytes, not an error.
TEST(Jcs, LargeFloatsCanonicaliseToAFixedPoint) {
  const std::string first = canonical_json(json::parse("[90071992547333333.33333329, 1e20, -4.5e17]"));
  EXPECT_EQ(first, "[90071992547333330,100000000000000000000,-450000000000000000]");
  EXPECT_EQ(canonical_json(json::parse(first)), first);
  // A large integer that is not the canonical text of its double would change value: refused.
  EXPECT_THROW(canonical_json(json::parse("90071992547333333")), JcsError);
  EXPECT_THROW(canonical_json(json::parse("18446744073709551615")), JcsError);
}

TEST(Jcs, StringEscapes) {
  EXPECT_EQ(canonical_json(json("\b\t\n\f\r\"\\")), R"("\b\t\n\f\r\"\\")");
  EXPECT_EQ(canonical_json(json(std::string("\x00\x01\x1f", 3))), R"("\u0000\u0001\u001f")");
  // DEL, '/', U+2028 and CJK stay literal.
  EXPECT_EQ(canonical_json(json("\x7f/\xe2\x80\xa8\xe6\xb5\x99"
                                "A12345")),
            "\"\x7f/\xe2\x80\xa8\xe6\xb5\x99"
            "A12345\"");
}

TEST(Jcs, AsciiRunsAroundEscapesAndMultiByteCharacters) {
  // Plain ASCII is copied a run at a time: runs that end at an escape, at a multi-byte character, at the
  // end of the string, and a string that is one run.
  EXPECT_EQ(canonical_json(json("abc\"def\\ghi\nj")), R"("abc\"def\\ghi\nj")");
  EXPECT_EQ(canonical_json(json("K1234+500 \xe4\xb8\x8a\xe8\xa1\x8c end")),
            "\"K1234+500 \xe4\xb8\x8a\xe8\xa1\x8c end\"");
  EXPECT_EQ(canonical_json(json("only ascii")), "\"only ascii\"");
  EXPECT_EQ(canonical_json(json("")), "\"\"");
  EXPECT_THROW(canonical_json(json("valid prefix \xff")), JcsError);
}

TEST(Jcs, InvalidUtf8IsRejected) {
  for (const std::string& bad :
       {std::string("\xff"), std::string("\xc0\xaf"), std::string("\xed\xa0\x80"), std::string("\xe6\xb5"),
        std::string("\xf4\x90\x80\x80"), std::string("\x80"), std::string("\xe0\x80\x80")}) {
    EXPECT_THROW(canonical_json(json(bad)), JcsError);
    json obj = json::object();
    obj[bad] = 1;
    EXPECT_THROW(canonical_json(obj), JcsError);
  }
}

TEST(Jcs, StructureHasNoWhitespace) {
  const json v = json::parse(R"( { "b" : [ 1 , { "d" : true , "c" : null } ] , "a" : "" } )");
  EXPECT_EQ(canonical_json(v), R"({"a":"","b":[1,{"c":null,"d":true}]})");
  EXPECT_EQ(canonical_json(json::object()), "{}");
  EXPECT_EQ(canonical_json(json::array()), "[]");
}

TEST(Jcs, DeepNestingIsAnErrorNotACrash) {
  std::string text;
  for (int i = 0; i < 5000; ++i) {
    text += "[";
  }
  for (int i = 0; i < 5000; ++i) {
    text += "]";
  }
  EXPECT_THROW(canonical_json(json::parse(text)), JcsError);
}

}  // namespace
}  // namespace cpd
