// Unit tests of the multipart stream parser: splits at every offset, lengths that hide the boundary,
// parts without a length, bounds, bad lengths and a stream cut mid-part.
#include "adapters/camera/multipart_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cpd::adapters {
namespace {

constexpr const char* kBoundary = "boundary";

std::string xml_part(const std::string& xml) {
  return "--boundary\r\nContent-Type: application/xml; charset=\"UTF-8\"\r\nContent-Length: " +
         std::to_string(xml.size()) + "\r\n\r\n" + xml + "\r\n";
}

std::string jpeg_part(const std::string& name, const std::string& bytes) {
  return "--boundary\r\nContent-Type: image/jpeg\r\nContent-Length: " + std::to_string(bytes.size()) +
         "\r\nContent-Disposition: attachment; filename=\"" + name + "\"\r\n\r\n" + bytes + "\r\n";
}

// JPEG-ish bytes that contain the boundary line itself, CRLFs and NULs.
std::string nasty_jpeg() {
  std::string j = "\xff\xd8\xff\xe0";
  const char nul_then_part[] = "\0\r\n--boundary\r\nContent-Type: text/plain\r\n\r\n";
  j += std::string(nul_then_part, sizeof(nul_then_part) - 1);
  j += "\r\n--boundary--\r\n";
  for (int i = 0; i < 300; ++i) {
    j += static_cast<char>(i * 31);
  }
  j += "\xff\xd9";
  return j;
}

std::vector<MultipartPart> feed_all(MultipartParser& p, const std::string& bytes) {
  std::vector<MultipartPart> out;
  p.feed(bytes, out);
  return out;
}

std::uint64_t errors(const MultipartParser& p, MultipartError e) {
  return p.counters().errors[static_cast<std::size_t>(e)];
}

TEST(MultipartBoundaryTest, FromContentType) {
  EXPECT_EQ(multipart_boundary("multipart/mixed; boundary=boundary"), "boundary");
  EXPECT_EQ(multipart_boundary("Multipart/Mixed;boundary=\"a b;c\""), "a b;c");
  EXPECT_EQ(multipart_boundary("multipart/mixed; charset=x; BOUNDARY=MIME_boundary ; x=y"), "MIME_boundary");
  EXPECT_EQ(multipart_boundary("application/xml; boundary=x"), std::nullopt);
  EXPECT_EQ(multipart_boundary("multipart/mixed"), std::nullopt);
  EXPECT_EQ(multipart_boundary("multipart/mixed; boundary="), std::nullopt);
}

TEST(MultipartParserTest, SeveralPartsInOneFeed) {
  const std::string jpeg = nasty_jpeg();
  const std::string stream = xml_part("<a/>") + jpeg_part("detectionPicture.jpg", jpeg) + xml_part("<b/>");
  MultipartParser p(kBoundary);
  const auto parts = feed_all(p, stream);
  ASSERT_EQ(parts.size(), 3U);
  EXPECT_EQ(parts[0].body, "<a/>");
  EXPECT_EQ(parts[0].content_type, "application/xml; charset=\"UTF-8\"");
  EXPECT_EQ(parts[1].body, jpeg);
  EXPECT_EQ(parts[1].content_type, "image/jpeg");
  EXPECT_EQ(parts[1].file_name, "detectionPicture.jpg");
  EXPECT_EQ(parts[2].body, "<b/>");
  EXPECT_EQ(p.counters().parts, 3U);
  EXPECT_EQ(p.counters().noise_bytes, 0U);
  for (std::size_t i = 0; i < kMultipartErrorCount; ++i) {
    EXPECT_EQ(p.counters().errors[i], 0U) << multipart_error_name(static_cast<MultipartError>(i));
  }
}

TEST(MultipartParserTest, SplitAtEveryByteOffsetGivesTheSameParts) {
  const std::string jpeg = nasty_jpeg();
  const std::string stream = xml_part("<EventNotificationAlert/>") + jpeg_part("a.jpg", jpeg) +
                             "--boundary\r\nContent-Type: application/xml\r\n\r\n<noLength/>\r\n" +
                             xml_part("<c/>");
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    MultipartParser p(kBoundary);
    std::vector<MultipartPart> parts;
    p.feed(std::string_view(stream).substr(0, cut), parts);
    p.feed(std::string_view(stream).substr(cut), parts);
    ASSERT_EQ(parts.size(), 4U) << "cut at " << cut;
    EXPECT_EQ(parts[0].body, "<EventNotificationAlert/>") << cut;
    EXPECT_EQ(parts[1].body, jpeg) << cut;
    EXPECT_EQ(parts[1].file_name, "a.jpg") << cut;
    EXPECT_EQ(parts[2].body, "<noLength/>") << cut;
    EXPECT_EQ(parts[3].body, "<c/>") << cut;
    EXPECT_EQ(p.counters().noise_bytes, 0U) << cut;
  }
}

TEST(MultipartParserTest, ByteByByte) {
  const std::string jpeg = nasty_jpeg();
  const std::string stream = xml_part("<x/>") + jpeg_part("b.jpg", jpeg);
  MultipartParser p(kBoundary);
  std::vector<MultipartPart> parts;
  for (const char c : stream) {
    p.feed(std::string_view(&c, 1), parts);
  }
  ASSERT_EQ(parts.size(), 2U);
  EXPECT_EQ(parts[1].body, jpeg);
}

TEST(MultipartParserTest, APartWithoutLengthEndsAtTheNextBoundary) {
  MultipartParser p(kBoundary);
  const auto parts =
      feed_all(p,
               "--boundary\r\nContent-Type: application/xml\r\n\r\n<a>\r\nline2</a>\r\n--boundary\r\n"
               "Content-Type: application/xml\r\n\r\n<b/>\r\n--boundary\r\n");
  ASSERT_EQ(parts.size(), 2U);
  EXPECT_EQ(parts[0].body, "<a>\r\nline2</a>");
  EXPECT_EQ(parts[1].body, "<b/>");
}

TEST(MultipartParserTest, NoiseBeforeTheFirstBoundaryIsSkipped) {
  MultipartParser p(kBoundary);
  const auto parts = feed_all(p, "garbage\r\n\r\n" + xml_part("<a/>"));
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(p.counters().noise_bytes, 9U);
}

TEST(MultipartParserTest, OversizePartIsCountedAndTheStreamResyncs) {
  MultipartParser p(kBoundary, {.max_header_bytes = 8 * 1024, .max_part_bytes = 100});
  const std::string big(101, 'x');
  const auto parts = feed_all(p, jpeg_part("big.jpg", big) + xml_part("<after/>"));
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(parts[0].body, "<after/>");
  EXPECT_EQ(errors(p, MultipartError::kPartTooLarge), 1U);
}

TEST(MultipartParserTest, DefaultBoundsAre8KbHeadersAnd8MbParts) {
  MultipartParser p(kBoundary);
  auto parts = feed_all(p, "--boundary\r\nContent-Length: 8388609\r\n\r\n");
  EXPECT_EQ(errors(p, MultipartError::kPartTooLarge), 1U);
  const std::string long_header = "--boundary\r\nX-Pad: " + std::string(9000, 'a') + "\r\n\r\nbody\r\n";
  parts = feed_all(p, long_header + xml_part("<ok/>"));
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(parts[0].body, "<ok/>");
  EXPECT_EQ(errors(p, MultipartError::kHeaderTooLarge), 1U);
}

TEST(MultipartParserTest, OversizePartWithoutLengthIsCounted) {
  MultipartParser p(kBoundary, {.max_header_bytes = 8 * 1024, .max_part_bytes = 100});
  const auto parts = feed_all(p, "--boundary\r\nContent-Type: image/jpeg\r\n\r\n" + std::string(500, 'y') +
                                     "\r\n" + xml_part("<z/>"));
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(parts[0].body, "<z/>");
  EXPECT_EQ(errors(p, MultipartError::kPartTooLarge), 1U);
}

TEST(MultipartParserTest, BadContentLengthIsCounted) {
  MultipartParser p(kBoundary);
  const auto parts = feed_all(p, "--boundary\r\nContent-Length: 12x\r\n\r\n<a/>\r\n" + xml_part("<b/>"));
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(parts[0].body, "<b/>");
  EXPECT_EQ(errors(p, MultipartError::kBadContentLength), 1U);
}

TEST(MultipartParserTest, AWrongLengthShowsAsABadDelimiter) {
  MultipartParser p(kBoundary);
  // Says 3 bytes, sends 6: the rest is not CRLF + boundary.
  const auto parts = feed_all(p, "--boundary\r\nContent-Length: 3\r\n\r\n<a/>xx\r\n" + xml_part("<b/>"));
  ASSERT_EQ(parts.size(), 2U);
  EXPECT_EQ(parts[0].body, "<a/");
  EXPECT_EQ(parts[1].body, "<b/>");
  EXPECT_EQ(errors(p, MultipartError::kBadDelimiter), 1U);
}

TEST(MultipartParserTest, HeaderLineWithoutColonIsCountedAndIgnored) {
  MultipartParser p(kBoundary);
  const auto parts = feed_all(p, "--boundary\r\nContent-Length: 4\r\nnonsense\r\n\r\n<a/>\r\n");
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(parts[0].body, "<a/>");
  EXPECT_EQ(errors(p, MultipartError::kBadHeader), 1U);
}

TEST(MultipartParserTest, TruncatedStreamIsCountedAndResetStartsAfresh) {
  const std::string jpeg = nasty_jpeg();
  const std::string part = jpeg_part("a.jpg", jpeg);
  MultipartParser p(kBoundary);
  auto parts = feed_all(p, part.substr(0, part.size() / 2));
  EXPECT_TRUE(parts.empty());
  p.reset();
  EXPECT_EQ(errors(p, MultipartError::kTruncated), 1U);
  parts = feed_all(p, part);
  ASSERT_EQ(parts.size(), 1U);
  EXPECT_EQ(parts[0].body, jpeg);
  // A reset between parts is not a truncation.
  p.reset();
  EXPECT_EQ(errors(p, MultipartError::kTruncated), 1U);
}

TEST(MultipartParserTest, CloseDelimiterAndPaddingAreAccepted) {
  MultipartParser p(kBoundary);
  const auto parts =
      feed_all(p, "--boundary  \r\nContent-Length: 1\r\n\r\nA\r\n--boundary--\r\n" + xml_part("B"));
  ASSERT_EQ(parts.size(), 2U);
  EXPECT_EQ(parts[0].body, "A");
  EXPECT_EQ(parts[1].body, "B");
}

TEST(MultipartParserTest, AnEmptyPartWithLengthZero) {
  MultipartParser p(kBoundary);
  const auto parts = feed_all(p, "--boundary\r\nContent-Length: 0\r\n\r\n\r\n" + xml_part("B"));
  ASSERT_EQ(parts.size(), 2U);
  EXPECT_EQ(parts[0].body, "");
  EXPECT_EQ(parts[1].body, "B");
}

TEST(MultipartParserTest, ArbitraryBytesNeverCrash) {
  std::string junk;
  std::uint32_t x = 12345;
  for (int i = 0; i < 200000; ++i) {
    x = x * 1103515245U + 12345U;
    const char pick = static_cast<char>(x >> 16);
    junk += pick;
    if ((x >> 8) % 97 == 0) {
      junk += "\r\n--boundary\r\nContent-Length: " + std::to_string((x >> 4) % 300) + "\r\n\r\n";
    }
  }
  MultipartParser p(kBoundary);
  std::vector<MultipartPart> parts;
  for (std::size_t i = 0; i < junk.size(); i += 777) {
    p.feed(std::string_view(junk).substr(i, 777), parts);
  }
  EXPECT_GT(p.counters().parts, 0U);
}

}  // namespace
}  // namespace cpd::adapters
