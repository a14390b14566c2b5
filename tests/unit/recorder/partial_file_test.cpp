// Unit tests of the partial download file on a real temporary directory: appends are digested, a reopened
// file resumes after its bytes with the same digest, a file longer than the listing starts again, remove()
// deletes it, and errors are Status values (a full disk is worth a retry).
#include "adapters/recorder/partial_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

namespace cpd::adapters {
namespace {

namespace fs = std::filesystem;

FileDigest::Result digest_of(const std::string& bytes) {
  FileDigest d;
  d.update(bytes);
  return d.finish();
}

class PartialFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("partial_file_test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string contents(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  fs::path dir_;
};

TEST_F(PartialFileTest, AppendsAndDigestsWhatItWrote) {
  PartialFile p(path("a.part"));
  ASSERT_TRUE(p.open(10).is_ok());
  EXPECT_TRUE(p.is_open());
  EXPECT_EQ(p.bytes(), 0);
  ASSERT_TRUE(p.append("hello", 5).is_ok());
  ASSERT_TRUE(p.append("world", 5).is_ok());
  EXPECT_EQ(p.bytes(), 10);
  FileDigest::Result r;
  ASSERT_TRUE(p.finish(r).is_ok());
  EXPECT_FALSE(p.is_open());
  EXPECT_EQ(r.sha256, digest_of("helloworld").sha256);
  EXPECT_EQ(r.md5, digest_of("helloworld").md5);
  EXPECT_EQ(contents(p.path()), "helloworld");
}

TEST_F(PartialFileTest, ReopenedFileResumesAfterItsBytes) {
  {
    PartialFile first(path("b.part"));
    ASSERT_TRUE(first.open(10).is_ok());
    ASSERT_TRUE(first.append("hello", 5).is_ok());
  }  // a crash: closed without finish()
  PartialFile again(path("b.part"));
  ASSERT_TRUE(again.open(10).is_ok());
  EXPECT_EQ(again.bytes(), 5);
  ASSERT_TRUE(again.append("world", 5).is_ok());
  FileDigest::Result r;
  ASSERT_TRUE(again.finish(r).is_ok());
  EXPECT_EQ(r.md5, digest_of("helloworld").md5) << "the bytes from before are in the digest";
}

TEST_F(PartialFileTest, FileLongerThanTheListingStartsAgain) {
  {
    std::ofstream out(path("c.part"), std::ios::binary);
    out << "far too many bytes";
  }
  PartialFile p(path("c.part"));
  ASSERT_TRUE(p.open(4).is_ok());
  EXPECT_EQ(p.bytes(), 0);
  EXPECT_EQ(fs::file_size(p.path()), 0u);
  ASSERT_TRUE(p.append("abcd", 4).is_ok());
  FileDigest::Result r;
  ASSERT_TRUE(p.finish(r).is_ok());
  EXPECT_EQ(r.md5, digest_of("abcd").md5);
}

TEST_F(PartialFileTest, TruncateAllStartsTheDigestAgain) {
  PartialFile p(path("d.part"));
  ASSERT_TRUE(p.open(8).is_ok());
  ASSERT_TRUE(p.append("wrong", 5).is_ok());
  ASSERT_TRUE(p.truncate_all().is_ok());
  EXPECT_EQ(p.bytes(), 0);
  ASSERT_TRUE(p.append("right", 5).is_ok());
  FileDigest::Result r;
  ASSERT_TRUE(p.finish(r).is_ok());
  EXPECT_EQ(r.md5, digest_of("right").md5);
  EXPECT_EQ(contents(p.path()), "right");
}

TEST_F(PartialFileTest, RemoveDeletesTheFile) {
  PartialFile p(path("e.part"));
  ASSERT_TRUE(p.open(8).is_ok());
  ASSERT_TRUE(p.append("abc", 3).is_ok());
  p.remove();
  EXPECT_FALSE(p.is_open());
  EXPECT_EQ(p.bytes(), 0);
  EXPECT_FALSE(fs::exists(p.path()));
}

TEST_F(PartialFileTest, OpenFailureIsAStatusNamingThePath) {
  PartialFile p(path("no-such-dir/f.part"));
  const Status s = p.open(8);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.kind(), Status::Kind::kFail);
  EXPECT_NE(s.message().find("cannot open " + p.path()), std::string::npos) << s.message();
}

TEST(ErrnoStatusTest, FullOrFailingDiskIsWorthARetry) {
  EXPECT_EQ(errno_status("cannot write", "/x", ENOSPC).kind(), Status::Kind::kRetry);
  EXPECT_EQ(errno_status("cannot write", "/x", EIO).kind(), Status::Kind::kRetry);
  EXPECT_EQ(errno_status("cannot write", "/x", EDQUOT).kind(), Status::Kind::kRetry);
  EXPECT_EQ(errno_status("cannot open", "/x", EACCES).kind(), Status::Kind::kFail);
  EXPECT_EQ(errno_status("cannot open", "/x", EACCES).message().rfind("cannot open /x: ", 0), 0u);
}

}  // namespace
}  // namespace cpd::adapters
