// The simulator's JPEGs: real baseline files that decode, at exactly the requested size, unique per comment.
#include "tools/sim/jpeg.h"

#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <vector>

namespace cpd::sim {
namespace {

struct Decoded {
  bool ok = false;
  int width = 0;
  int height = 0;
};

Decoded decode(const std::string& jpeg) {
  Decoded d;
  tjhandle tj = tjInitDecompress();
  int subsamp = 0;
  int colorspace = 0;
  auto* data = reinterpret_cast<const unsigned char*>(jpeg.data());
  if (tjDecompressHeader3(tj, data, jpeg.size(), &d.width, &d.height, &subsamp, &colorspace) == 0) {
    std::vector<unsigned char> px(static_cast<std::size_t>(d.width) * static_cast<std::size_t>(d.height) * 3);
    d.ok = tjDecompress2(tj, data, jpeg.size(), px.data(), d.width, 0, d.height, TJPF_RGB, 0) == 0;
  }
  tjDestroy(tj);
  return d;
}

bool is_baseline(const std::string& jpeg) {
  // SOF0 present, SOF2 (progressive) absent.
  return jpeg.find("\xFF\xC0", 0, 2) != std::string::npos && jpeg.find("\xFF\xC2", 0, 2) == std::string::npos;
}

TEST(JpegTest, SceneDecodesAtItsDimensions) {
  const std::string j = encode_scene_jpeg({640, 360, 85, 7});
  ASSERT_GT(j.size(), 1000U);
  EXPECT_EQ(static_cast<unsigned char>(j[0]), 0xFF);
  EXPECT_EQ(static_cast<unsigned char>(j[1]), 0xD8);
  const Decoded d = decode(j);
  EXPECT_TRUE(d.ok);
  EXPECT_EQ(d.width, 640);
  EXPECT_EQ(d.height, 360);
  EXPECT_TRUE(is_baseline(j));
}

TEST(JpegTest, FactoryHitsExactSizesAcrossTheSpecRange) {
  JpegFactory f;
  for (const std::size_t target : {50U * 1024U, 200U * 1024U + 3U, 777'777U, 1'500U * 1024U}) {
    const std::string j = f.make(target, target, "uuid=abc");
    EXPECT_EQ(j.size(), target);
    EXPECT_TRUE(decode(j).ok) << target;
    EXPECT_TRUE(is_baseline(j));
    EXPECT_NE(j.find("uuid=abc"), std::string::npos);
  }
}

// A camera's panoramas keep their resolution whatever their compressed size; only plate crops are small.
TEST(JpegTest, PanoramasAreNeverBelow1280x720) {
  JpegFactory f;
  for (const std::size_t target : {50U * 1024U, 150U * 1024U, 600U * 1024U}) {
    const Decoded d = decode(f.make(target, 7, "uuid=p", true));
    ASSERT_TRUE(d.ok) << target;
    EXPECT_GE(d.width, 1280) << target;
    EXPECT_GE(d.height, 720) << target;
  }
  EXPECT_LT(decode(f.make(50U * 1024U, 7, "uuid=c")).width, 1280) << "a plate crop stays small";
}

TEST(JpegTest, SameSizeDifferentCommentsGiveDifferentBytes) {
  JpegFactory f;
  const std::string a = f.make(120'000, 1, "uuid=1");
  const std::string b = f.make(120'000, 1, "uuid=2");
  EXPECT_EQ(a.size(), b.size());
  EXPECT_NE(a, b);
  EXPECT_TRUE(decode(b).ok);
}

TEST(JpegTest, PaddingLeavesNoRemainderSegmentTooSmall) {
  // Every remainder modulo the segment size must still produce a parseable file of the exact size.
  const std::string base = encode_scene_jpeg({64, 64, 80, 3});
  for (std::size_t extra = 0; extra < 12; ++extra) {
    const std::size_t target = base.size() + 65'537 + extra;
    const std::string j = pad_jpeg(base, target, "c");
    EXPECT_EQ(j.size(), target) << extra;
    EXPECT_TRUE(decode(j).ok) << extra;
  }
}

}  // namespace
}  // namespace cpd::sim
