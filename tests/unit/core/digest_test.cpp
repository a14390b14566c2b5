// Unit tests of FileDigest: the streaming SHA-256 + MD5 against published vectors, and that feeding the
// bytes in odd-sized pieces gives the same digests as one update.
#include "daemon/core/digest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#include "daemon/core/encoding.h"

namespace cpd {
namespace {

// A deterministic 10 MB buffer (not all one byte, so a slice mixed up with another would show).
std::string ten_megabytes() {
  std::string b(10 * 1024 * 1024, '\0');
  for (std::size_t i = 0; i < b.size(); ++i) {
    b[i] = static_cast<char>((i * 131 + 7) % 251);
  }
  return b;
}

TEST(FileDigestTest, EmptyInput) {
  FileDigest d;
  const auto r = d.finish();
  EXPECT_EQ(r.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(r.md5, "d41d8cd98f00b204e9800998ecf8427e");
}

TEST(FileDigestTest, Abc) {
  FileDigest d;
  d.update("abc");
  const auto r = d.finish();
  EXPECT_EQ(r.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2
  EXPECT_EQ(r.md5, "900150983cd24fb0d6963f7d28e17f72");                                     // RFC 1321
}

TEST(FileDigestTest, EmptyUpdatesChangeNothing) {
  FileDigest d;
  d.update("");
  d.update("a");
  d.update("");
  d.update("bc");
  EXPECT_EQ(d.finish().md5, "900150983cd24fb0d6963f7d28e17f72");
}

TEST(FileDigestTest, MillionAs) {
  FileDigest d;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) {
    d.update(chunk);
  }
  const auto r = d.finish();
  EXPECT_EQ(r.sha256, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(r.md5, "7707d6ae4e027c70eea2a935c2296f21");
}

TEST(FileDigestTest, TenMegabytesSplitAtOddOffsetsEqualsOneShot) {
  const std::string data = ten_megabytes();
  FileDigest one;
  one.update(data);
  const auto whole = one.finish();
  // Independently computed (Python hashlib) so a bug shared by both paths would still show.
  EXPECT_EQ(whole.sha256, "a92bc4d66bc729063f634120e11c2d354bd01fedba026ce5220868482b965b5e");
  EXPECT_EQ(whole.md5, "43bf083ac9f60d66d374b657f2493d8f");
  EXPECT_EQ(whole.sha256, sha256_hex(data));

  FileDigest pieces;
  std::size_t pos = 0;
  std::size_t step = 1;
  while (pos < data.size()) {
    const std::size_t n = std::min(step, data.size() - pos);
    pieces.update(std::string_view(data).substr(pos, n));
    pos += n;
    step = step * 7 + 3;  // 1, 10, 73, 514, ... odd sizes crossing every block boundary alignment
    if (step > 1'000'003) {
      step = 13;
    }
  }
  const auto split = pieces.finish();
  EXPECT_EQ(split.sha256, whole.sha256);
  EXPECT_EQ(split.md5, whole.md5);
}

TEST(FileDigestTest, ResetStartsAgain) {
  FileDigest d;
  d.update("garbage that must not count");
  d.reset();
  d.update("abc");
  EXPECT_EQ(d.finish().md5, "900150983cd24fb0d6963f7d28e17f72");
  d.reset();
  EXPECT_EQ(d.finish().md5, "d41d8cd98f00b204e9800998ecf8427e");
}

TEST(FileDigestTest, UpdateAfterFinishIsRefused) {
  FileDigest d;
  d.finish();
  EXPECT_THROW(d.update("x"), std::logic_error);
  EXPECT_THROW(d.finish(), std::logic_error);
}

TEST(FileDigestTest, MoveKeepsState) {
  FileDigest a;
  a.update("ab");
  FileDigest b(std::move(a));
  b.update("c");
  EXPECT_EQ(b.finish().sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  a.reset();  // a moved-from digest is usable again after reset
  a.update("abc");
  EXPECT_EQ(a.finish().md5, "900150983cd24fb0d6963f7d28e17f72");
}

}  // namespace
}  // namespace cpd
