// Unit tests of the content-addressed media store in a temporary directory.
#include "daemon/media/media_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace cpd::media {
namespace {

namespace fs = std::filesystem;

class MediaStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-media-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    root_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(root_, fs::perms::owner_all, ec);
    fs::remove_all(root_, ec);
  }
  fs::path root_;
};

TEST_F(MediaStoreTest, CreatesTheDirectoryWithMode0750) {
  const fs::path dir = root_ / "a" / "media";
  MediaStore store(dir.string());
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750U);
}

TEST_F(MediaStoreTest, PutStoresTheBytesUnderTheirSha256) {
  MediaStore store((root_ / "m").string());
  StoredMedia out;
  const Status s = store.put("abc", out);
  ASSERT_TRUE(s.is_ok()) << s.message();
  // SHA-256("abc"), FIPS 180-2 appendix B.1.
  EXPECT_EQ(out.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(out.bytes, 3);
  EXPECT_FALSE(out.already_present);
  EXPECT_TRUE(store.exists(out.sha256));
  EXPECT_EQ(store.path_of(out.sha256), (root_ / "m" / out.sha256).string());
  EXPECT_EQ(store.read(out.sha256), std::optional<std::string>("abc"));
  // No temp file is left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(root_ / "m")) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST_F(MediaStoreTest, IdenticalBytesAreAlreadyPresent) {
  MediaStore store((root_ / "m").string());
  std::string jpeg(100000, '\0');
  for (std::size_t i = 0; i < jpeg.size(); ++i) {
    jpeg[i] = static_cast<char>(i * 7);
  }
  StoredMedia first;
  ASSERT_TRUE(store.put(jpeg, first).is_ok());
  StoredMedia second;
  ASSERT_TRUE(store.put(jpeg, second).is_ok());
  EXPECT_TRUE(second.already_present);
  EXPECT_EQ(second.sha256, first.sha256);
  EXPECT_EQ(second.bytes, 100000);
  EXPECT_EQ(store.read(first.sha256), jpeg);
}

TEST_F(MediaStoreTest, EmptyBytesAreStoredToo) {
  MediaStore store((root_ / "m").string());
  StoredMedia out;
  ASSERT_TRUE(store.put("", out).is_ok());
  EXPECT_EQ(out.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(store.read(out.sha256), std::optional<std::string>(""));
}

TEST_F(MediaStoreTest, ReadAndExistsRejectNamesThatAreNotHashes) {
  MediaStore store((root_ / "m").string());
  EXPECT_FALSE(store.exists("../etc/passwd"));
  EXPECT_EQ(store.read("../etc/passwd"), std::nullopt);
  EXPECT_EQ(store.read(std::string(64, 'a')), std::nullopt);
}

TEST_F(MediaStoreTest, AFailedWriteIsAValueNamingThePath) {
  const fs::path dir = root_ / "m";
  MediaStore store(dir.string());
  // Removing the directory under the store makes mkstemp fail (ENOENT): a permanent failure.
  fs::remove_all(dir);
  StoredMedia out;
  const Status s = store.put("abc", out);
  EXPECT_EQ(s.kind(), Status::Kind::kFail);
  EXPECT_NE(s.message().find(dir.string()), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("No such file"), std::string::npos) << s.message();
}

TEST_F(MediaStoreTest, AMissingParentThatCannotBeCreatedThrows) {
  const fs::path file = root_ / "plain-file";
  { std::ofstream(file) << "x"; }
  EXPECT_THROW(MediaStore((file / "media").string()), std::runtime_error);
}

}  // namespace
}  // namespace cpd::media
