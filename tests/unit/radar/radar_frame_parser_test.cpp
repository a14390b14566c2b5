// RadarFrameParser: the spec's examples, every discard reason, and arbitrary chunking of the stream.
#include "adapters/radar/radar_frame_parser.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tests/support/radar_frames.h"

namespace cpd::adapters {
namespace {

using test::DetectFields;

const std::string kSpecDetect =
    "\x02"
    "02,01234.56,07,02,A,087.3,K,025.4,+05.2,C,062.0*40\x03";
const std::string kSpecStatus =
    "\x02"
    "09,01234.56,00,OK*38\x03";

DetectFields sample_detect(int target = 7) {
  DetectFields f;
  f.time_cs = 123456;
  f.target = target;
  f.targets = 2;
  f.dir = 'A';
  f.speed_tenths = 873;
  f.units = 'K';
  f.range_dm = 254;
  f.x_tenths = 52;
  f.coord = 'C';
  f.amplitude_ddb = 620;
  return f;
}

std::uint64_t err(const RadarFrameParser& p, FrameError e) {
  return p.counters().error(e);
}

TEST(RadarFrameParser, SpecExamplesParseWithTheirPrintedChecksums) {
  RadarFrameParser p;
  auto frames = p.feed(kSpecDetect + kSpecStatus);
  ASSERT_EQ(frames.size(), 2u);
  const auto& d = std::get<RadarDetect>(frames[0].message);
  EXPECT_EQ(d.time_cs, 123456);
  EXPECT_EQ(d.target, 7);
  EXPECT_EQ(d.targets, 2);
  EXPECT_EQ(d.dir, 'A');
  EXPECT_EQ(d.speed_tenths, 873);
  EXPECT_EQ(d.units, 'K');
  EXPECT_EQ(d.range_dm, 254);
  EXPECT_EQ(d.x_tenths, 52);
  EXPECT_EQ(d.coord, 'C');
  EXPECT_EQ(d.amplitude_ddb, 620);
  EXPECT_EQ(frames[0].raw, kSpecDetect);
  const auto& s = std::get<RadarStatus>(frames[1].message);
  EXPECT_EQ(s.time_cs, 123456);
  EXPECT_EQ(s.code, 0);
  EXPECT_EQ(s.text, "OK");
  EXPECT_EQ(frames[1].raw, kSpecStatus);
  EXPECT_EQ(p.counters().frames, 2u);
  EXPECT_EQ(p.counters().total_errors(), 0u);
}

TEST(RadarFrameParser, BuilderMatchesSpecExampleByteForByte) {
  EXPECT_EQ(test::detect_frame(sample_detect()), kSpecDetect);
  EXPECT_EQ(test::status_frame(123456, 0, "OK"), kSpecStatus);
  EXPECT_EQ(radar_checksum("09,01234.56,00,OK"), 0x38);
}

TEST(RadarFrameParser, NegativeLateralAndPolarAndMph) {
  auto f = sample_detect();
  f.x_tenths = -123;
  f.coord = 'P';
  f.units = 'M';
  f.dir = 'R';
  RadarFrameParser p;
  auto frames = p.feed(test::detect_frame(f));
  ASSERT_EQ(frames.size(), 1u);
  const auto& d = std::get<RadarDetect>(frames[0].message);
  EXPECT_EQ(d.x_tenths, -123);
  EXPECT_EQ(d.coord, 'P');
  EXPECT_EQ(d.units, 'M');
  EXPECT_EQ(d.dir, 'R');
}

TEST(RadarFrameParser, ByteByByteEqualsOneChunk) {
  std::string stream;
  for (int i = 1; i <= 20; ++i) {
    stream += test::detect_frame(sample_detect(i));
    stream += test::status_frame(i * 100, i % 3 == 0 ? 10 : 0, "TEXT");
  }
  RadarFrameParser whole;
  auto all = whole.feed(stream);
  ASSERT_EQ(all.size(), 40u);
  RadarFrameParser bytewise;
  std::vector<RadarFrame> got;
  for (char c : stream) {
    bytewise.feed(std::string_view(&c, 1), got);
  }
  ASSERT_EQ(got.size(), all.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].raw, all[i].raw);
  }
  EXPECT_EQ(bytewise.counters().total_errors(), 0u);
  EXPECT_EQ(bytewise.counters().noise_bytes, 0u);
}

TEST(RadarFrameParser, RandomChunkingWithNoiseIsStable) {
  std::mt19937_64 rng(42);
  std::string stream;
  std::size_t noise = 0;
  for (int i = 1; i <= 50; ++i) {
    auto n = test::noise_bytes(static_cast<std::size_t>(i % 5), rng);
    noise += n.size();
    stream += n + test::detect_frame(sample_detect(i));
  }
  RadarFrameParser p;
  std::vector<RadarFrame> got;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    std::size_t len = 1 + rng() % 37;
    p.feed(std::string_view(stream).substr(pos, len), got);
    pos += len;
  }
  ASSERT_EQ(got.size(), 50u);
  EXPECT_EQ(std::get<RadarDetect>(got[49].message).target, 50);
  EXPECT_EQ(p.counters().noise_bytes, noise);
  EXPECT_EQ(p.counters().total_errors(), 0u);
}

TEST(RadarFrameParser, BadChecksumIsCountedAndNextFrameParses) {
  RadarFrameParser p;
  auto frames = p.feed(test::with_wrong_checksum(kSpecDetect) + kSpecStatus);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<RadarStatus>(frames[0].message));
  EXPECT_EQ(err(p, FrameError::kChecksum), 1u);
}

TEST(RadarFrameParser, LowerCaseOrMissingChecksumIsAChecksumError) {
  RadarFrameParser p;
  EXPECT_TRUE(p.feed("\x02"
                     "09,01234.56,00,OK*3a\x03")
                  .empty());  // 0x3A is wrong anyway; form first
  EXPECT_TRUE(p.feed("\x02"
                     "09,01234.56,00,OK\x03")
                  .empty());
  EXPECT_TRUE(p.feed("\x02\x03").empty());
  EXPECT_EQ(err(p, FrameError::kChecksum), 3u);
  // A lower-case rendering of the right value is still not the documented form.
  std::string body;
  for (char c = 'A'; c <= 'Z'; ++c) {
    body = std::string("09,00000.01,00,") + c;
    if ((radar_checksum(body) & 0x0F) >= 0x0A) {
      break;
    }
  }
  ASSERT_GE(radar_checksum(body) & 0x0F, 0x0A);
  char hex[3];
  std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned>(radar_checksum(body)));
  EXPECT_TRUE(p.feed("\x02" + body + "*" + hex + "\x03").empty());
  EXPECT_EQ(err(p, FrameError::kChecksum), 4u);
  EXPECT_EQ(p.feed(test::radar_frame(body)).size(), 1u);
}

TEST(RadarFrameParser, TooLongFrameIsDiscardedAndResyncs) {
  RadarFrameParser p;
  auto frames = p.feed(test::overlong_frame(140) + kSpecStatus);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(err(p, FrameError::kTooLong), 1u);
  EXPECT_EQ(p.counters().noise_bytes, 0u);  // the tail of the long frame is not noise
  // Exactly 128 bytes is within the limit: it is judged on its fields (text > 40 chars) instead.
  auto exact = test::overlong_frame(128);
  ASSERT_EQ(exact.size(), 128u);
  EXPECT_TRUE(p.feed(exact).empty());
  EXPECT_EQ(err(p, FrameError::kFieldSyntax), 1u);
  EXPECT_EQ(err(p, FrameError::kTooLong), 1u);
  auto over = test::overlong_frame(129);
  ASSERT_EQ(over.size(), 129u);
  EXPECT_TRUE(p.feed(over).empty());
  EXPECT_EQ(err(p, FrameError::kTooLong), 2u);
}

TEST(RadarFrameParser, EndlessGarbageAfterStxIsBounded) {
  RadarFrameParser p;
  std::string junk = "\x02" + std::string(10000, 'Z');
  EXPECT_TRUE(p.feed(junk).empty());
  EXPECT_EQ(err(p, FrameError::kTooLong), 1u);
  EXPECT_EQ(p.feed(kSpecStatus).size(), 1u);
}

TEST(RadarFrameParser, WrongFieldCount) {
  RadarFrameParser p;
  EXPECT_TRUE(p.feed(test::radar_frame("02,01234.56,07,02,A,087.3,K,025.4,+05.2,C")).empty());
  EXPECT_TRUE(p.feed(test::radar_frame("02,01234.56,07,02,A,087.3,K,025.4,+05.2,C,062.0,1")).empty());
  EXPECT_TRUE(p.feed(test::radar_frame("09,01234.56,00,OK,MORE")).empty());
  EXPECT_TRUE(p.feed(test::radar_frame("09,01234.56,00")).empty());
  EXPECT_EQ(err(p, FrameError::kFieldCount), 4u);
}

TEST(RadarFrameParser, WrongFieldSyntaxEachField) {
  const std::vector<std::string> bad_detects = {
      "02,1234.56,07,02,A,087.3,K,025.4,+05.2,C,062.0",    // time too short
      "02,01234.5,07,02,A,087.3,K,025.4,+05.2,C,062.0",    // time decimals
      "02,01234:56,07,02,A,087.3,K,025.4,+05.2,C,062.0",   // time separator
      "02,01234.56,00,02,A,087.3,K,025.4,+05.2,C,062.0",   // target 00
      "02,01234.56,7,02,A,087.3,K,025.4,+05.2,C,062.0",    // target one digit
      "02,01234.56,07,2,A,087.3,K,025.4,+05.2,C,062.0",    // targets one digit
      "02,01234.56,07,02,B,087.3,K,025.4,+05.2,C,062.0",   // dir
      "02,01234.56,07,02,a,087.3,K,025.4,+05.2,C,062.0",   // dir lower case
      "02,01234.56,07,02,A,87.3,K,025.4,+05.2,C,062.0",    // speed short
      "02,01234.56,07,02,A,087.30,K,025.4,+05.2,C,062.0",  // speed decimals
      "02,01234.56,07,02,A,-87.3,K,025.4,+05.2,C,062.0",   // speed signed
      "02,01234.56,07,02,A,087.3,k,025.4,+05.2,C,062.0",   // units
      "02,01234.56,07,02,A,087.3,K,025.4X,+05.2,C,062.0",  // range
      "02,01234.56,07,02,A,087.3,K,025.4,05.2,C,062.0",    // x without sign
      "02,01234.56,07,02,A,087.3,K,025.4,+5.2,C,062.0",    // x short
      "02,01234.56,07,02,A,087.3,K,025.4,+05.2,Q,062.0",   // coord
      "02,01234.56,07,02,A,087.3,K,025.4,+05.2,C,62.0",    // amplitude
      "02,01234.56,07,02,A,087.3,K,025.4,+05.2,C, 62.0",   // embedded space
  };
  RadarFrameParser p;
  for (const auto& body : bad_detects) {
    EXPECT_TRUE(p.feed(test::radar_frame(body)).empty()) << body;
  }
  const std::vector<std::string> bad_status = {
      "09,01234.56,0,OK",           "09,01234.56,000,OK",
      "09,0123456,00,OK",           "09,01234.56,00," + std::string(41, 'T'),
      "09,01234.56,00,BAD\x01TEXT",
  };
  for (const auto& body : bad_status) {
    EXPECT_TRUE(p.feed(test::radar_frame(body)).empty()) << body;
  }
  EXPECT_EQ(err(p, FrameError::kFieldSyntax), bad_detects.size() + bad_status.size());
  // Boundaries that are fine: 40 chars of text, empty text, target 99, x = -99.9.
  EXPECT_EQ(p.feed(test::radar_frame("09,99999.99,22," + std::string(40, 'T'))).size(), 1u);
  EXPECT_EQ(p.feed(test::radar_frame("09,00000.00,00,")).size(), 1u);
  EXPECT_EQ(p.feed(test::radar_frame("02,00000.00,99,00,Y,999.9,M,999.9,-99.9,P,000.0")).size(), 1u);
}

TEST(RadarFrameParser, StarInTextBreaksTheFrame) {
  RadarFrameParser p;
  // The '*' before the real checksum is not followed by two hex digits and ETX: rejected, not parsed.
  EXPECT_TRUE(p.feed(test::radar_frame("09,01234.56,00,A*B")).empty());
  EXPECT_EQ(p.counters().total_errors(), 1u);
}

TEST(RadarFrameParser, UnknownType) {
  RadarFrameParser p;
  EXPECT_TRUE(p.feed(test::radar_frame("05,01234.56,00")).empty());
  EXPECT_TRUE(p.feed(test::radar_frame("2,01234.56,00,OK")).empty());
  EXPECT_TRUE(p.feed(test::radar_frame("")).empty());
  EXPECT_EQ(err(p, FrameError::kUnknownType), 3u);
}

TEST(RadarFrameParser, StxInsideFrameDiscardsPartialAndResyncs) {
  RadarFrameParser p;
  std::string cut = kSpecDetect.substr(0, 20);
  auto frames = p.feed(cut + kSpecStatus);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].raw, kSpecStatus);
  EXPECT_EQ(err(p, FrameError::kTruncated), 1u);
}

TEST(RadarFrameParser, ResetCountsPartialFrameAsTruncated) {
  RadarFrameParser p;
  EXPECT_TRUE(p.feed(kSpecDetect.substr(0, 30)).empty());
  p.reset();
  EXPECT_EQ(err(p, FrameError::kTruncated), 1u);
  // The remainder after a reconnect is noise, then the next frame parses.
  auto frames = p.feed(kSpecDetect.substr(30) + kSpecStatus);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(p.counters().noise_bytes, kSpecDetect.size() - 30);
  p.reset();  // nothing partial: nothing counted
  EXPECT_EQ(err(p, FrameError::kTruncated), 1u);
}

TEST(RadarFrameParser, NoiseOnlyIsCounted) {
  RadarFrameParser p;
  EXPECT_TRUE(p.feed(std::string("\x03\xff\r\nhello", 9)).empty());
  EXPECT_EQ(p.counters().noise_bytes, 9u);
  EXPECT_EQ(p.counters().total_errors(), 0u);
}

TEST(RadarFrameParser, ErrorNamesAreMetricLabels) {
  EXPECT_EQ(frame_error_name(FrameError::kChecksum), "checksum");
  EXPECT_EQ(frame_error_name(FrameError::kTooLong), "too_long");
  EXPECT_EQ(frame_error_name(FrameError::kFieldCount), "field_count");
  EXPECT_EQ(frame_error_name(FrameError::kFieldSyntax), "field_syntax");
  EXPECT_EQ(frame_error_name(FrameError::kUnknownType), "unknown_type");
  EXPECT_EQ(frame_error_name(FrameError::kTruncated), "truncated");
}

TEST(RadarFrameParser, RandomBytesNeverCrash) {
  std::mt19937_64 rng(7);
  RadarFrameParser p;
  std::vector<RadarFrame> out;
  for (int i = 0; i < 2000; ++i) {
    std::string chunk;
    for (int j = 0; j < 64; ++j) {
      // Bias towards protocol bytes so framing paths are exercised.
      const char pick[] = {'\x02', '\x03', '*', ',', '0', '9', 'A', '.'};
      chunk.push_back(rng() % 3 == 0 ? pick[rng() % 8] : static_cast<char>(rng() & 0xFF));
    }
    p.feed(chunk, out);
  }
  for (const auto& f : out) {
    EXPECT_LE(f.raw.size(), kRadarMaxFrameBytes);
  }
  EXPECT_GT(p.counters().total_errors() + p.counters().noise_bytes, 0u);
}

}  // namespace
}  // namespace cpd::adapters
