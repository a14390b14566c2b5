// Unit tests of the key files across a rotation (daemon/app/signing_key_files.h) on real files: the next
// key written durably and exclusively, installed with the old key kept, and a rotation a crash interrupted
// finished or abandoned at start according to the chain's head record.
#include "daemon/app/signing_key_files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "daemon/core/key_rotation.h"
#include "daemon/core/sealer.h"

namespace cpd::app {
namespace {

namespace fs = std::filesystem;

class SigningKeyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-keyfiles-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    key_path_ = (dir_ / "gateway.key").string();
    Ed25519PrivateKey::generate().save_pem_file(key_path_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string kid_of(const std::string& path) {
    return Ed25519PrivateKey::load_pem_file(path).public_key().kid();
  }

  fs::path dir_;
  std::string key_path_;
};

TEST_F(SigningKeyFiles, NextKeyIsWrittenOnceWithMode0600) {
  const auto next = write_next_key(key_path_);
  const std::string path = next_key_path(key_path_);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(kid_of(path), next.public_key().kid());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // An unfinished rotation on disk refuses another one.
  EXPECT_THROW(write_next_key(key_path_), KeyError);
  EXPECT_EQ(kid_of(path), next.public_key().kid());
}

TEST_F(SigningKeyFiles, InstallKeepsTheOldKeyAndIsIdempotent) {
  const std::string old_kid = kid_of(key_path_);
  const auto next = write_next_key(key_path_);
  install_next_key(key_path_, old_kid);
  EXPECT_EQ(kid_of(key_path_), next.public_key().kid());
  EXPECT_EQ(kid_of(retired_key_path(key_path_, old_kid)), old_kid);
  EXPECT_FALSE(fs::exists(next_key_path(key_path_)));
  install_next_key(key_path_, old_kid);  // done already: nothing changes
  EXPECT_EQ(kid_of(key_path_), next.public_key().kid());
}

TEST_F(SigningKeyFiles, InterruptedRotationIsResolvedFromTheChainHead) {
  const auto old_key = Ed25519PrivateKey::load_pem_file(key_path_);
  const std::string old_kid = old_key.public_key().kid();
  Sealer sealer(old_key, "gw", ChainHead{});
  Fact plain;
  plain.type = "audit";
  plain.fields = {{"event", "start"}};
  const std::string before = sealer.seal(plain, 1).jws;

  // Nothing pending: nothing to do.
  std::string note;
  bool error = false;
  EXPECT_FALSE(resolve_unfinished_rotation(key_path_, old_kid, before, note, error));
  EXPECT_TRUE(note.empty());

  // A crash after the next key was written but before its record committed: the key is thrown away.
  std::ofstream(next_key_path(key_path_) + ".tmp") << "partial";
  auto next = write_next_key(key_path_);
  std::ofstream(next_key_path(key_path_) + ".tmp") << "partial";
  EXPECT_FALSE(resolve_unfinished_rotation(key_path_, old_kid, before, note, error));
  EXPECT_NE(note.find("abandoned"), std::string::npos) << note;
  EXPECT_FALSE(fs::exists(next_key_path(key_path_)));
  EXPECT_FALSE(fs::exists(next_key_path(key_path_) + ".tmp"));
  EXPECT_EQ(kid_of(key_path_), old_kid);
  // An empty store (a new one after a lost store) cannot tell whether its chain took the rotation: the key
  // is set aside, never deleted, and the daemon signs on with the old one, reporting an error.
  next = write_next_key(key_path_);
  EXPECT_FALSE(resolve_unfinished_rotation(key_path_, old_kid, "", note, error));
  EXPECT_TRUE(error);
  EXPECT_NE(note.find("cannot be resolved"), std::string::npos) << note;
  EXPECT_FALSE(fs::exists(next_key_path(key_path_)));
  EXPECT_EQ(kid_of(key_path_ + ".unresolved-" + next.public_key().kid()), next.public_key().kid());
  EXPECT_EQ(kid_of(key_path_), old_kid);

  // A crash after the key_rotation record committed (it is the head): the installation is finished.
  next = write_next_key(key_path_);
  const std::string rotation =
      sealer.seal(make_key_rotation_fact(old_key.public_key(), next.public_key(), 2), 2).jws;
  auto resolved = resolve_unfinished_rotation(key_path_, old_kid, rotation, note, error);
  ASSERT_TRUE(resolved);
  EXPECT_FALSE(error);
  EXPECT_EQ(resolved->public_key().kid(), next.public_key().kid());
  EXPECT_NE(note.find("finished"), std::string::npos) << note;
  EXPECT_EQ(kid_of(key_path_), next.public_key().kid());
  EXPECT_EQ(kid_of(retired_key_path(key_path_, old_kid)), old_kid);

  // The head signed by the next key (records after the rotation committed) also means finished.
  const std::string mid_kid = next.public_key().kid();
  auto third = write_next_key(key_path_);
  Sealer after(third, "gw", ChainHead{});
  const std::string signed_by_third = after.seal(plain, 3).jws;
  EXPECT_TRUE(chain_took_rotation(signed_by_third, third.public_key().kid()));
  resolved = resolve_unfinished_rotation(key_path_, mid_kid, signed_by_third, note, error);
  ASSERT_TRUE(resolved);
  EXPECT_EQ(kid_of(key_path_), third.public_key().kid());
  EXPECT_EQ(kid_of(retired_key_path(key_path_, mid_kid)), mid_kid);
}

// The chain took a rotation whose installation cannot be finished at start (here the old key's path cannot be
// hard-linked: a directory stands in for it): the daemon signs with the new key from <key>.next and reports
// an error, rather than exiting (and being restarted into the same failure, sealing nothing).
TEST_F(SigningKeyFiles, AnInstallationThatFailsAtStartStillSignsWithTheKeyTheChainNames) {
  const fs::path odd = fs::path(key_path_).parent_path() / "odd";
  fs::create_directories(odd / "inside");
  const auto old_key = Ed25519PrivateKey::generate();
  const auto next = write_next_key(odd.string());
  Sealer sealer(old_key, "gw", ChainHead{});
  const std::string rotation =
      sealer.seal(make_key_rotation_fact(old_key.public_key(), next.public_key(), 2), 2).jws;
  std::string note;
  bool error = false;
  const auto resolved =
      resolve_unfinished_rotation(odd.string(), old_key.public_key().kid(), rotation, note, error);
  ASSERT_TRUE(resolved);
  EXPECT_EQ(resolved->public_key().kid(), next.public_key().kid());
  EXPECT_TRUE(error);
  EXPECT_NE(note.find("could not be installed"), std::string::npos) << note;
  EXPECT_TRUE(fs::exists(next_key_path(odd.string()))) << "kept for the next start";
}

TEST_F(SigningKeyFiles, ChainTookRotationReadsOnlyWhatTheHeadSays) {
  EXPECT_FALSE(chain_took_rotation("", "0123456789abcdef"));
  EXPECT_FALSE(chain_took_rotation("not.a.jws", "0123456789abcdef"));
  const auto key = Ed25519PrivateKey::load_pem_file(key_path_);
  const auto other = Ed25519PrivateKey::generate();
  Sealer sealer(key, "gw", ChainHead{});
  // A rotation to another key does not take the chain to this one.
  const std::string rotation =
      sealer.seal(make_key_rotation_fact(key.public_key(), other.public_key(), 1), 1).jws;
  EXPECT_TRUE(chain_took_rotation(rotation, other.public_key().kid()));
  EXPECT_FALSE(chain_took_rotation(rotation, Ed25519PrivateKey::generate().public_key().kid()));
}

}  // namespace
}  // namespace cpd::app
