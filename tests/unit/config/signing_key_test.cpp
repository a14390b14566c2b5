// The signing key check check-config and the daemon share (config::load_signing_key): every key the daemon
// would refuse at start is an error at gateway.key's place, and a good key loads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "daemon/config/config.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::config {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using ::testing::HasSubstr;
using testing::place_in;

constexpr const char* kKeyFile = "gw.yaml";

std::string config_text(const std::string& key_path) {
  return "gateway:\n"
         "  id: gw-1\n"
         "  site: {name: \"Test site\", road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
         "  key: " +
         key_path +
         "\n"
         "store:\n"
         "  path: /tmp/store.db\n"
         "mqtt:\n"
         "  uri: tcp://127.0.0.1:1883\n"
         "devices:\n"
         "  - id: radar-1\n"
         "    kind: radar\n"
         "    tcp: {host: 192.0.2.10, port: 4001}\n"
         "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]\n"
         "    calibration: {certificate: C-1, valid_until: 2027-06-30}\n";
}

class SigningKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cpd-key-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, ec);
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& name, const std::string& text, fs::perms mode) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    fs::permissions(path, mode);
    return path;
  }

  // The error load_signing_key gives for a config naming `key_path`, checked to sit at the key's value.
  ConfigError refused(const std::string& key_path) {
    const std::string text = config_text(key_path);
    const Config cfg = parse_config(text, kKeyFile);  // the file itself is fine
    const ConfigError e = error_of([&] { load_signing_key(cfg); });
    EXPECT_EQ(e.file(), kKeyFile);
    EXPECT_EQ(e.key(), "gateway.key");
    EXPECT_THAT(std::string(e.what()),
                ::testing::StartsWith(place_in(kKeyFile, text, key_path) + ": gateway.key: "));
    return e;
  }

  fs::path dir_;
};

constexpr fs::perms kOwnerRw = fs::perms::owner_read | fs::perms::owner_write;

TEST_F(SigningKeyTest, AGoodKeyLoads) {
  const std::string path = (dir_ / "gw.key").string();
  const auto key = Ed25519PrivateKey::generate();
  key.save_pem_file(path);
  const Config cfg = parse_config(config_text(path), kKeyFile);
  EXPECT_EQ(load_signing_key(cfg).public_key().raw(), key.public_key().raw());
}

TEST_F(SigningKeyTest, AKeyReadableByTheGroupIsRefused) {
  const std::string path = (dir_ / "gw.key").string();
  Ed25519PrivateKey::generate().save_pem_file(path);
  fs::permissions(path, kOwnerRw | fs::perms::group_read);  // 0640
  EXPECT_THAT(refused(path).detail(), HasSubstr("has mode 0640; it must be 0600 or stricter"));
}

TEST_F(SigningKeyTest, AnEmptyFileIsRefused) {
  const std::string path = write("empty.key", "", kOwnerRw);
  EXPECT_THAT(refused(path).detail(), HasSubstr("does not hold an unencrypted PEM private key"));
}

TEST_F(SigningKeyTest, ADirectoryIsRefused) {
  fs::create_directory(dir_ / "keydir");
  fs::permissions(dir_ / "keydir", fs::perms::owner_all);
  EXPECT_THAT(refused((dir_ / "keydir").string()).detail(), HasSubstr("is not a regular file"));
}

TEST_F(SigningKeyTest, ADeviceIsRefusedWithoutReadingIt) {
  // /dev/zero would never end: refused by its type before any read.
  EXPECT_THAT(refused("/dev/zero").detail(), HasSubstr("is not a regular file"));
}

TEST_F(SigningKeyTest, AMissingOrUnreadableKeyIsRefused) {
  EXPECT_THAT(refused((dir_ / "absent.key").string()).detail(), HasSubstr("does not exist"));
  if (::geteuid() != 0) {  // root reads a 0000 file anyway
    const std::string path = (dir_ / "locked.key").string();
    Ed25519PrivateKey::generate().save_pem_file(path);
    fs::permissions(path, fs::perms::none);
    EXPECT_THAT(refused(path).detail(), HasSubstr("Permission denied"));
  }
}

TEST_F(SigningKeyTest, AnOversizedFileIsRefused) {
  const std::string path = write("big.key", std::string(65 * 1024, 'A'), kOwnerRw);
  EXPECT_THAT(refused(path).detail(), HasSubstr("too large"));
}

TEST_F(SigningKeyTest, AKeyOfAnotherTypeIsRefused) {
  // RFC 8410 section 10.3: an X25519 private key, a valid PEM of the wrong algorithm.
  const std::string path = write("x25519.key",
                                 "-----BEGIN PRIVATE KEY-----\n"
                                 "MC4CAQAwBQYDK2VuBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n"
                                 "-----END PRIVATE KEY-----\n",
                                 kOwnerRw);
  EXPECT_THAT(refused(path).detail(), HasSubstr("not Ed25519"));
}

}  // namespace
}  // namespace cpd::config
