// Unit tests of the file transfer messages (recordings to central): topics parse back to what built them,
// segment bounds, missing ranges, init/want/abort bounds, and file receipts that verify only under the right
// key for the right gateway.
#include "daemon/core/file_transfer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "daemon/core/encoding.h"

namespace cpd::filex {
namespace {

using ::testing::HasSubstr;

const std::string kSha(64, 'a');
const std::string kSeg(64, 'b');

KeyForKid keys_of(const Ed25519PrivateKey& key) {
  const auto pub = key.public_key();
  return [pub](const std::string& kid) -> std::optional<Ed25519PublicKey> {
    if (kid == pub.kid()) {
      return pub;
    }
    return std::nullopt;
  };
}

std::string rest(const std::string& topic) {
  return topic.substr(std::string("cp/gw/").size());
}

TEST(FileTransferTest, TopicsParseBackToWhatBuiltThem) {
  auto t = parse_file_topic(rest(init_topic("cp/gw/", kSha)));
  ASSERT_TRUE(t.topic) << t.reason;
  EXPECT_EQ(t.topic->kind, FileTopic::Kind::init);
  EXPECT_EQ(t.topic->sha256, kSha);

  t = parse_file_topic(rest(segment_topic("cp/gw/", kSha, 1048576, kSeg)));
  ASSERT_TRUE(t.topic) << t.reason;
  EXPECT_EQ(t.topic->kind, FileTopic::Kind::segment);
  EXPECT_EQ(t.topic->offset, 1048576u);
  EXPECT_EQ(t.topic->checksum, kSeg);

  t = parse_file_topic(rest(fin_topic("cp/gw/", kSha, 1073741824)));
  ASSERT_TRUE(t.topic) << t.reason;
  EXPECT_EQ(t.topic->kind, FileTopic::Kind::fin);
  EXPECT_EQ(t.topic->size, 1073741824u);

  t = parse_file_topic(rest(abort_topic("cp/gw/", kSha)));
  ASSERT_TRUE(t.topic) << t.reason;
  EXPECT_EQ(t.topic->kind, FileTopic::Kind::abort);
}

TEST(FileTransferTest, HostileTopicsAreRefusedWithAReason) {
  for (const std::string& bad : std::vector<std::string>{
           "file/xyz/init", "file/" + kSha, "file/" + kSha + "/01/" + kSeg, "file/" + kSha + "/-1/" + kSeg,
           "file/" + kSha + "/99999999999999999999999/" + kSeg, "file/" + kSha + "/0/nothex",
           "file/" + kSha + "/fin/10/" + kSeg, "file/" + kSha + "/fin/x/" + kSha,
           "file/" + kSha + "/init/more", "file/" + std::string(64, 'A') + "/init", "evidence",
           "file/" + kSha + "/a/b/c/d/e/f/g/h/i"}) {
    const auto t = parse_file_topic(bad);
    EXPECT_FALSE(t.topic) << bad;
    EXPECT_FALSE(t.reason.empty()) << bad;
  }
}

TEST(FileTransferTest, SegmentsMustFitTheFile) {
  EXPECT_EQ(segment_refusal(10000, 4096, 0, 4096), "");
  EXPECT_EQ(segment_refusal(10000, 4096, 8192, 1808), "");
  EXPECT_THAT(segment_refusal(10000, 4096, 100, 4096), HasSubstr("multiple"));
  EXPECT_THAT(segment_refusal(10000, 4096, 12288, 4096), HasSubstr("not below"));
  EXPECT_THAT(segment_refusal(10000, 4096, 4096, 100), HasSubstr("not 4096"));
  EXPECT_THAT(segment_refusal(10000, 4096, 8192, 4096), HasSubstr("not 1808"));
  EXPECT_EQ(segment_count(10000, 4096), 3u);
  EXPECT_EQ(segment_count(8192, 4096), 2u);
  EXPECT_EQ(segment_count(0, 4096), 0u);
}

TEST(FileTransferTest, MissingRangesAreMergedAndBounded) {
  EXPECT_EQ(missing_ranges(10000, 4096, {}), (Ranges{{0, 10000}}));
  EXPECT_EQ(missing_ranges(10000, 4096, {0, 4096, 8192}), Ranges{});
  EXPECT_EQ(missing_ranges(10000, 4096, {4096, 4096, 12345}), (Ranges{{0, 4096}, {8192, 10000}}));
  EXPECT_EQ(missing_ranges(5 * 4096, 4096, {0, 2 * 4096, 4 * 4096}), (Ranges{{4096, 8192}, {12288, 16384}}));
  // Bounded: one range per missing stretch, at most `max`.
  std::vector<std::uint64_t> every_other;
  for (std::uint64_t i = 0; i < 100; i += 2) {
    every_other.push_back(i * 4096);
  }
  EXPECT_EQ(missing_ranges(100 * 4096, 4096, every_other, 10).size(), 10u);
}

TEST(FileTransferTest, RangesMinusCutWhatASenderSendsAnyway) {
  const Ranges wanted{{0, 4096}, {8192, 20000}, {24576, 30000}};
  EXPECT_EQ(ranges_minus(wanted, {{12288, 1 << 20}}), (Ranges{{0, 4096}, {8192, 12288}}));
  EXPECT_EQ(ranges_minus(wanted, {{8192, 1 << 20}}), (Ranges{{0, 4096}}));
  EXPECT_EQ(ranges_minus(wanted, {{0, 1 << 20}}), Ranges{});
  EXPECT_EQ(ranges_minus(wanted, {}), wanted);
  EXPECT_EQ(ranges_minus(wanted, {{1000, 2000}, {10000, 12000}, {19000, 26000}}),
            (Ranges{{0, 1000}, {2000, 4096}, {8192, 10000}, {12000, 19000}, {26000, 30000}}));
  EXPECT_EQ(ranges_minus(wanted, {{4096, 8192}, {20000, 24576}}), wanted);  // touching, not overlapping
  EXPECT_EQ(ranges_minus(Ranges{{5, 5}}, {}), Ranges{});                    // empty ranges dropped
  EXPECT_EQ(ranges_bytes(wanted), 4096u + 11808u + 5424u);
}

TEST(FileTransferTest, InitRoundTripsAndIsBounded) {
  const FileInit init{kSha, 123456789, 1 << 20, "20261205_0001.mp4", 42};
  const InitParse p = parse_init(init_json(init), kSha);
  ASSERT_TRUE(p.init) << p.reason;
  EXPECT_EQ(*p.init, init);
  EXPECT_THAT(parse_init(init_json(init), kSeg).reason, HasSubstr("checksum"));
  FileInit small = init;
  small.segment_size = 100;
  EXPECT_THAT(parse_init(init_json(small), kSha).reason, HasSubstr("segment_size"));
  // A name over 255 bytes is refused...
  nlohmann::json long_name = nlohmann::json::parse(init_json(init));
  long_name["name"] = std::string(kMaxNameBytes + 1, 'n');
  EXPECT_THAT(parse_init(long_name.dump(), kSha).reason, HasSubstr("name"));
  // ...so the gateway never sends one: a dock may list names up to 1024 bytes (the record keeps it whole),
  // and init carries it cut at a character boundary, without NULs.
  FileInit named = init;
  std::string chinese;
  for (int i = 0; i < 100; ++i) {
    chinese += "录";  // 3 bytes each: 300 bytes
  }
  named.name = chinese;
  InitParse cut = parse_init(init_json(named), kSha);
  ASSERT_TRUE(cut.init) << cut.reason;
  EXPECT_EQ(cut.init->name.size(), 255u);
  EXPECT_EQ(cut.init->name, chinese.substr(0, 255));
  named.name = "a";
  named.name += '\0';
  named.name += "b" + std::string(1100, 'x');
  cut = parse_init(init_json(named), kSha);
  ASSERT_TRUE(cut.init) << cut.reason;
  EXPECT_EQ(cut.init->name, "ab" + std::string(253, 'x'));
  EXPECT_EQ(informative_name("ok\xff\xfe.mp4"), "ok.mp4");
  // Not UTF-8: not JSON at all.
  EXPECT_FALSE(parse_init("{\"v\":1,\"name\":\"\xff\"}", kSha).init);
  EXPECT_THAT(parse_init(std::string(kMaxControlBytes + 1, ' '), kSha).reason, HasSubstr("bytes"));
  EXPECT_THAT(parse_init("[1]", kSha).reason, HasSubstr("JSON object"));
}

// Size 0 under another id than the empty file's: no byte would ever come, and central's assembly would count
// three whole-file mismatches and refuse an intact copy for good (an independent gateway's test).
TEST(FileTransferTest, AnEmptyFileHasOnlyTheEmptyId) {
  const std::string empty = sha256_hex("");
  ASSERT_TRUE(parse_init(init_json(FileInit{empty, 0, 1 << 20, "", 1}), empty).init);
  EXPECT_THAT(parse_init(init_json(FileInit{kSha, 0, 1 << 20, "", 1}), kSha).reason,
              HasSubstr("size 0, but the file id is not the SHA-256 of no bytes"));
}

TEST(FileTransferTest, WantsRoundTripAndRefuseOverlapsAndFloods) {
  const Want w{kSha, {{0, 4096}, {8192, 10000}}};
  const WantParse p = parse_want(want_json(w));
  ASSERT_TRUE(p.want) << p.reason;
  EXPECT_EQ(*p.want, w);
  const WantParse whole = parse_want(want_json(Want{kSha, {}}));
  ASSERT_TRUE(whole.want) << whole.reason;
  EXPECT_TRUE(whole.want->ranges.empty());
  EXPECT_FALSE(parse_want(R"({"v":1,"file":")" + kSha + R"(","ranges":[[5,5]]})").want);
  EXPECT_FALSE(parse_want(R"({"v":1,"file":")" + kSha + R"(","ranges":[[0,10],[5,20]]})").want);
  EXPECT_FALSE(parse_want(R"({"v":1,"file":")" + kSha + R"(","ranges":[[0,-1]]})").want);
  EXPECT_FALSE(parse_want(R"({"v":2,"file":")" + kSha + R"("})").want);
  std::string many = R"({"v":1,"file":")" + kSha + R"(","ranges":[)";
  for (std::size_t i = 0; i <= kMaxWantRanges; ++i) {
    many += (i ? "," : "") + std::string("[") + std::to_string(2 * i) + "," + std::to_string(2 * i + 1) + "]";
  }
  many += "]}";
  EXPECT_THAT(parse_want(many).reason, HasSubstr("ranges"));
}

TEST(FileTransferTest, AbortReasonsAreCleaned) {
  EXPECT_EQ(parse_abort(abort_json("not held")), "not held");
  EXPECT_EQ(parse_abort("garbage"), "");
  EXPECT_EQ(parse_abort(abort_json(std::string(300, 'x'))), std::string(200, 'x') + "...");
  EXPECT_EQ(parse_abort(abort_json("bad\x01"
                                   "byte")),
            "bad\\x01byte");
}

// The protocol requires `reason`, not words in it (docs/custody.md): another central or gateway may send "".
TEST(FileTransferTest, AnEmptyReasonStillAbortsOrRefuses) {
  EXPECT_EQ(parse_abort(abort_json("")), "(no reason given)");
  EXPECT_EQ(parse_abort(R"({"v":1})"), "");
  const std::string sha(64, 'a');
  const RefusalParse p = parse_refused(R"({"file":")" + sha + R"(","reason":"","retry":"never","v":1})");
  ASSERT_TRUE(p.refusal) << p.reason;
  EXPECT_EQ(p.refusal->reason, "(no reason given)");
  EXPECT_FALSE(p.refusal->later);
  EXPECT_FALSE(parse_refused(R"({"file":")" + sha + R"(","retry":"never","v":1})").refusal);
}

TEST(FileTransferTest, AFileReceiptVerifiesOnlyUnderTheCentralKeyForThisGateway) {
  const auto central = Ed25519PrivateKey::generate();
  const auto other = Ed25519PrivateKey::generate();
  const FileReceipt r{"central-1", "gw-1", kSha, 1073741824, 1767225600000};
  const std::string jws = seal_file_receipt(central, r);
  const FileReceiptCheck ok = check_file_receipt(jws, keys_of(central), "gw-1");
  ASSERT_TRUE(ok.ok) << ok.reason;
  EXPECT_EQ(ok.receipt, r);
  EXPECT_THAT(check_file_receipt(jws, keys_of(other), "gw-1").reason,
              HasSubstr("not a configured central key"));
  EXPECT_THAT(check_file_receipt(jws, keys_of(central), "gw-2").reason, HasSubstr("this gateway"));
  EXPECT_FALSE(check_file_receipt(seal_file_receipt(other, r), keys_of(central), "gw-1").ok);
  std::string tampered = jws;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(check_file_receipt(tampered, keys_of(central), "gw-1").ok);
}

}  // namespace
}  // namespace cpd::filex
