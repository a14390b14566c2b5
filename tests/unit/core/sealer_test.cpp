// Unit tests for the Sealer: exact header and body bytes, seq/prev/id chaining, head handling, and the
// refusal of reserved names and non-integer numbers.
#include "daemon/core/sealer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"
#include "tests/unit/core/core_test_support.h"

namespace cpd {
namespace {

using nlohmann::json;

Fact speeding(UnixMs time_ms, int speed) {
  Fact f;
  f.type = "speeding";
  f.time_ms = time_ms;
  f.fields = {{"plate",
               "\xe6\xb5\x99"
               "A12345"},
              {"speed", speed},
              {"lane", 2}};
  return f;
}

class SealerTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
  Ed25519PrivateKey key_ = test::rfc8032_key(dir_);
};

TEST_F(SealerTest, ExactHeaderAndBodyBytes) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  const SealedRecord r = sealer.seal(speeding(1700000000000, 1234), 1700000000500);
  EXPECT_EQ(test::header_of(r.jws), R"({"alg":"EdDSA","kid":"21fe31dfa154a261","typ":"evidence+jws"})");
  EXPECT_EQ(sealer.kid(), "21fe31dfa154a261");
  EXPECT_EQ(test::payload_of(r.jws),
            "{\"created_ms\":1700000000500,\"gateway\":\"gw-1\",\"id\":\"gw-1:1\",\"lane\":2,"
            "\"plate\":\"\xe6\xb5\x99"
            "A12345\",\"prev\":\"" +
                std::string(64, '0') +
                "\",\"seq\":1,\"speed\":1234,\"time_ms\":1700000000000,\"type\":\"speeding\",\"v\":1}");
  EXPECT_EQ(r.seq, 1u);
  EXPECT_EQ(r.id, "gw-1:1");
  EXPECT_EQ(r.type, "speeding");
  EXPECT_EQ(r.time_ms, 1700000000000);
  EXPECT_EQ(r.created_ms, 1700000000500);
}

// Every record carries `site` (docs/records.md): the sealer adds the gateway's when a fact has none.
TEST_F(SealerTest, AddsTheSiteToAFactWithoutOne) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  sealer.set_site({{"gateway", "gw-1"}, {"name", "K12"}, {"utc_offset", "+08:00"}});
  Fact custody;
  custody.type = "custody";
  custody.time_ms = 5;
  const json added = json::parse(test::payload_of(sealer.seal(custody, 6).jws));
  EXPECT_EQ(added["site"], json::parse(R"({"gateway":"gw-1","name":"K12","utc_offset":"+08:00"})"));
  Fact own = speeding(7, 8);
  own.fields["site"] = {{"name", "its own"}};
  const json kept = json::parse(test::payload_of(sealer.seal(own, 9).jws));
  EXPECT_EQ(kept["site"], json::parse(R"({"name":"its own"})"));
}

TEST_F(SealerTest, SignatureCoversHeaderDotPayload) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  const std::string jws = sealer.seal(speeding(1, 2), 3).jws;
  const auto dot2 = jws.rfind('.');
  const auto sig = base64url_decode(std::string_view(jws).substr(dot2 + 1));
  ASSERT_TRUE(sig.has_value());
  EXPECT_TRUE(key_.public_key().verify(std::string_view(jws).substr(0, dot2), *sig));
  // Only the base64url alphabet and two dots: safe as one line and one MQTT payload.
  EXPECT_EQ(jws.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."),
            std::string::npos);
}

TEST_F(SealerTest, ChainsSeqPrevAndId) {
  Sealer sealer(key_, "zj-hz-g60-k1234-n", ChainHead{});
  std::string prev_hash(64, '0');
  for (std::uint64_t i = 1; i <= 5; ++i) {
    const SealedRecord r = sealer.seal(speeding(1000 + static_cast<UnixMs>(i), 500), 2000);
    const json body = json::parse(test::payload_of(r.jws));
    EXPECT_EQ(body["seq"], i);
    EXPECT_EQ(body["id"], "zj-hz-g60-k1234-n:" + std::to_string(i));
    EXPECT_EQ(body["prev"], prev_hash);
    EXPECT_EQ(body["v"], 1);
    EXPECT_EQ(body["gateway"], "zj-hz-g60-k1234-n");
    EXPECT_EQ(canonical_json(body), test::payload_of(r.jws));
    prev_hash = sha256_hex(r.jws);
    EXPECT_EQ(sealer.head(), (ChainHead{i, prev_hash}));
  }
}

TEST_F(SealerTest, ContinuesFromAGivenHeadAndIsDeterministic) {
  const ChainHead head{41, std::string(64, 'a')};
  Sealer sealer(key_, "gw-1", head);
  const SealedRecord r = sealer.seal(speeding(5, 6), 7);
  EXPECT_EQ(r.seq, 42u);
  EXPECT_EQ(json::parse(test::payload_of(r.jws))["prev"], std::string(64, 'a'));
  // After a failed commit the owner rewinds; Ed25519 is deterministic, so the same fact reseals to the
  // same bytes.
  sealer.reset(head);
  EXPECT_EQ(sealer.seal(speeding(5, 6), 7).jws, r.jws);
}

TEST_F(SealerTest, RejectsReservedNames) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  for (const char* name : {"v", "gateway", "seq", "prev", "id", "type", "time_ms", "created_ms"}) {
    Fact f = speeding(1, 2);
    f.fields[name] = 1;
    EXPECT_THROW(sealer.seal(f, 3), std::invalid_argument) << name;
  }
  EXPECT_EQ(sealer.head(), ChainHead{});  // nothing was sealed
  Fact nested = speeding(1, 2);
  nested.fields["vehicle"] = {{"type", "car"}};  // reserved names only matter at the top level
  EXPECT_NO_THROW(sealer.seal(nested, 3));
}

TEST_F(SealerTest, RejectsNonIntegerNumbersAnywhere) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  Fact top = speeding(1, 2);
  top.fields["speed"] = 123.4;
  EXPECT_THROW(sealer.seal(top, 3), std::invalid_argument);
  Fact nested = speeding(1, 2);
  nested.fields["media"] = json::array({{{"size", 10}}, {{"ratio", 0.5}}});
  EXPECT_THROW(sealer.seal(nested, 3), std::invalid_argument);
  Fact huge = speeding(1, 2);
  huge.fields["bytes"] = (std::int64_t{1} << 53) + 1;
  EXPECT_THROW(sealer.seal(huge, 3), std::invalid_argument);
  Fact bad_text = speeding(1, 2);
  bad_text.fields["plate"] = "\xff";
  EXPECT_THROW(sealer.seal(bad_text, 3), std::invalid_argument);
  EXPECT_EQ(sealer.head(), ChainHead{});
  // An integral double serialises as an integer, so it is accepted.
  Fact integral = speeding(1, 2);
  integral.fields["speed"] = 1234.0;
  const SealedRecord r = sealer.seal(integral, 3);
  EXPECT_EQ(json::parse(test::payload_of(r.jws))["speed"], 1234);
}

TEST_F(SealerTest, RejectsEmptyTypeAndGateway) {
  EXPECT_THROW(Sealer(key_, "", ChainHead{}), std::invalid_argument);
  Sealer sealer(key_, "gw-1", ChainHead{});
  Fact f = speeding(1, 2);
  f.type.clear();
  EXPECT_THROW(sealer.seal(f, 3), std::invalid_argument);
}

// Device text that is not UTF-8 keeps its exact bytes beside an escaped, lossless text.
TEST(EscapeTextNotUtf8, EscapesInPlaceWithRawBytesBesideAndListsThePaths) {
  json fields = {{"plate",
                  "\xd5\xe3"
                  "A12345"},
                 {"plate_color", "blue"},
                 {"camera_event", {{"raw_xml", "<a>\xd5\xe3</a>"}, {"uuid", "u"}}},
                 {"pictures", json::array({{{"file_name", "p\xff.jpg"}}, {{"file_name", "ok.jpg"}}})},
                 {"missing_pictures", json::array({"ok.jpg", "m\xfe.jpg"})},
                 {"nested", json::array({json::array({"\xfd"})})}};
  const auto paths = escape_text_not_utf8(fields);
  EXPECT_EQ(paths, (std::vector<std::string>{"camera_event.raw_xml", "missing_pictures[1]", "nested[0][0]",
                                             "pictures[0].file_name", "plate"}));
  EXPECT_EQ(fields["plate"], "\\xd5\\xe3A12345");
  EXPECT_EQ(fields["plate_raw_b64"], "1eNBMTIzNDU=");
  EXPECT_EQ(fields["plate_color"], "blue");
  EXPECT_FALSE(fields.contains("plate_color_raw_b64"));
  EXPECT_EQ(fields["camera_event"]["raw_xml"], "<a>\\xd5\\xe3</a>");
  EXPECT_EQ(fields["camera_event"]["raw_xml_raw_b64"], base64_encode("<a>\xd5\xe3</a>"));
  EXPECT_EQ(fields["pictures"][0]["file_name_raw_b64"], base64_encode("p\xff.jpg"));
  EXPECT_EQ(fields["missing_pictures"], json::array({"ok.jpg", "m\\xfe.jpg"}));
  EXPECT_EQ(fields["missing_pictures_raw_b64"], json({{"1", base64_encode("m\xfe.jpg")}}));
  EXPECT_EQ(fields["nested"][0][0], "\\xfd");
  EXPECT_EQ(fields["text_not_utf8"], json(paths));
  EXPECT_NO_THROW(canonical_json(fields));

  json clean = {{"plate",
                 "\xe6\xb5\x99"
                 "A12345"},
                {"list", json::array({"a"})}};
  const json before = clean;
  EXPECT_TRUE(escape_text_not_utf8(clean).empty());
  EXPECT_EQ(clean, before) << "valid text is recorded unchanged";
}

TEST_F(SealerTest, SealOrSalvageSealsAValidFactExactlyAsSeal) {
  Sealer a(key_, "gw-1", ChainHead{});
  Sealer b(key_, "gw-1", ChainHead{});
  const SealedRecord r = a.seal_or_salvage(speeding(1, 2), 3);
  EXPECT_EQ(r.jws, b.seal(speeding(1, 2), 3).jws);
  EXPECT_TRUE(r.salvage_reason.empty());
  EXPECT_TRUE(r.unsealable.empty());
}

// No fact is reduced to a bare fault: what can be sealed is, and what cannot is named.
TEST_F(SealerTest, SealOrSalvageKeepsEverySealableMemberAndNamesTheOthers) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  Fact f = speeding(1700000000000, 1500);
  f.fields["plate"] =
      "\xd5\xe3"
      "A12345";
  f.fields["ratio"] = 0.5;
  f.fields["id"] = "mine";
  f.fields["pictures"] = json::array({{{"sha256", "aa"}, {"bytes", 1.25}}});
  f.fields["checks"] = {{"deep", {{"nan", std::nan("")}}}};
  f.fields["valid"] = true;
  f.fields["n\xff"] = 1;
  f.media = {std::string(64, 'b')};
  const SealedRecord r = sealer.seal_or_salvage(f, 1700000000500);
  EXPECT_NE(r.salvage_reason, "");
  EXPECT_EQ(r.unsealable,
            (std::vector<std::string>{"checks.deep.nan", "id", "n\\xff", "pictures[0].bytes", "ratio"}));
  EXPECT_EQ(r.media, f.media);
  EXPECT_EQ(r.type, "speeding");
  const json body = json::parse(test::payload_of(r.jws));
  EXPECT_EQ(body["type"], "speeding");
  EXPECT_EQ(body["id"], "gw-1:1");
  EXPECT_EQ(body["speed"], 1500);
  EXPECT_EQ(body["lane"], 2);
  EXPECT_EQ(body["plate"], "\\xd5\\xe3A12345");
  EXPECT_EQ(body["plate_raw_b64"], "1eNBMTIzNDU=");
  EXPECT_EQ(body["text_not_utf8"], json::array({"plate"}));
  EXPECT_EQ(body["pictures"][0]["sha256"], "aa");
  EXPECT_FALSE(body["pictures"][0].contains("bytes"));
  EXPECT_EQ(body["valid"], false);
  EXPECT_EQ(body["invalid_reasons"], json::array({"unsealable_fields"}));
  ASSERT_EQ(body["unsealable_fields"].size(), 5u);
  EXPECT_EQ(body["unsealable_fields"][4],
            json({{"path", "ratio"}, {"reason", "value is not an integer within ±2^53"}, {"text", "0.5"}}));
  EXPECT_EQ(body["unsealable_fields"][1]["text"], "\"mine\"");
  EXPECT_EQ(canonical_json(body), test::payload_of(r.jws));
  EXPECT_EQ(sealer.head().seq, 1u);
}

TEST_F(SealerTest, SealOrSalvageHandlesABrokenEnvelope) {
  Sealer sealer(key_, "gw-1", ChainHead{});
  Fact f;
  f.time_ms = std::numeric_limits<std::int64_t>::max();
  f.fields = json::array({1, 2});
  const SealedRecord r = sealer.seal_or_salvage(f, 1700000000500);
  const json body = json::parse(test::payload_of(r.jws));
  EXPECT_EQ(body["type"], "fault");
  EXPECT_EQ(body["time_ms"], 1700000000500);
  EXPECT_EQ(r.unsealable, (std::vector<std::string>{"type", "time_ms", "fields"}));
  EXPECT_EQ(body["unsealable_fields"][1]["text"], "9223372036854775807");
  EXPECT_EQ(body["unsealable_fields"][2]["text"], "[1,2]");
}

}  // namespace
}  // namespace cpd
