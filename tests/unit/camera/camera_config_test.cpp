// Unit tests of the camera device section: URL, credentials file (existence, mode, never echoed),
// auth kinds and ranges, with the place of each mistake.
#include "adapters/camera/camera_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/config/schema.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::adapters {
namespace {

namespace fs = std::filesystem;
using config::ConfigError;
using config::testing::error_of;
using config::testing::place_in;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kCameraFile = "dev.yaml";
constexpr const char* kSecret = "s3cr3t-Pa55";

class CameraConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-camcfg-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    password_file_ = (dir_ / "cam.pass").string();
    write_password(std::string(kSecret) + "\n", 0600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_password(const std::string& text, mode_t mode) {
    std::ofstream(password_file_, std::ios::trunc) << text;
    ASSERT_EQ(::chmod(password_file_.c_str(), mode), 0);
  }

  std::string device(const std::string& extra = "") const {
    return "id: cam-1\nkind: camera\nurl: http://192.0.2.64:8080\nusername: admin\npassword_file: " +
           password_file_ + "\nradar: radar-1\n" + extra;
  }

  static CameraConfig parse(const std::string& text) {
    auto context = std::make_shared<config::LoadContext>();
    context->file = kCameraFile;
    config::Section s = config::Section::root(YAML::Load(text), context);
    s.required<std::string>("id");
    s.required<std::string>("kind");
    return parse_camera_config(s);
  }

  fs::path dir_;
  std::string password_file_;
};

TEST_F(CameraConfigTest, ReadsAValidSectionWithDefaults) {
  const CameraConfig c = parse(device());
  EXPECT_EQ(c.id, "cam-1");
  EXPECT_EQ(c.url, "http://192.0.2.64:8080");
  EXPECT_EQ(c.host, "192.0.2.64");
  EXPECT_EQ(c.port, 8080);
  EXPECT_EQ(c.username, "admin");
  EXPECT_EQ(c.password, kSecret);  // without the trailing newline
  EXPECT_EQ(c.auth, "digest");
  EXPECT_EQ(c.radar, "radar-1");
  EXPECT_EQ(c.time_poll_s, 60);
  EXPECT_EQ(c.stream_idle_timeout_s, 30);
  EXPECT_EQ(c.picture_wait_ms, 3000);
  EXPECT_EQ(c.auth_backoff_s, 300);
}

TEST_F(CameraConfigTest, DefaultPortAndHostName) {
  std::string text = device();
  text.replace(text.find("http://192.0.2.64:8080"), 22, "http://cam-1.local/");
  const CameraConfig c = parse(text);
  EXPECT_EQ(c.host, "cam-1.local");
  EXPECT_EQ(c.port, 80);
}

TEST_F(CameraConfigTest, HttpsIsRefusedForNow) {
  std::string text = device();
  text.replace(text.find("http://"), 7, "https://");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "url");
  EXPECT_THAT(e.detail(), HasSubstr("https is not supported yet"));
  EXPECT_EQ(std::string(e.what()).rfind(place_in(kCameraFile, text, "https://"), 0), 0U) << e.what();
}

TEST_F(CameraConfigTest, BadUrls) {
  for (const char* url :
       {"192.0.2.64", "http://192.0.2.64:99999", "http://u:p@host", "http://host/ISAPI", "ftp://host"}) {
    std::string text = device();
    text.replace(text.find("http://192.0.2.64:8080"), 22, url);
    const ConfigError e = error_of([&] { parse(text); });
    EXPECT_EQ(e.key(), "url") << url;
  }
}

TEST_F(CameraConfigTest, MissingPasswordFileNamesTheFile) {
  fs::remove(password_file_);
  const std::string text = device();
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "password_file");
  EXPECT_THAT(e.detail(), HasSubstr(password_file_));
  EXPECT_THAT(e.detail(), HasSubstr("No such file"));
  EXPECT_EQ(std::string(e.what()).rfind(place_in(kCameraFile, text, password_file_), 0), 0U) << e.what();
}

TEST_F(CameraConfigTest, GroupOrWorldReadablePasswordFileIsRefusedWithoutShowingIt) {
  for (const mode_t mode : {0640, 0604, 0660}) {
    write_password(kSecret, mode);
    const ConfigError e = error_of([&] { parse(device()); });
    EXPECT_EQ(e.key(), "password_file");
    EXPECT_THAT(e.detail(), HasSubstr(password_file_));
    EXPECT_THAT(e.detail(), HasSubstr("0" + std::to_string(mode / 64) + std::to_string(mode / 8 % 8) +
                                      std::to_string(mode % 8)));
    EXPECT_THAT(std::string(e.what()), Not(HasSubstr(kSecret)));
  }
  write_password(kSecret, 0400);
  EXPECT_EQ(parse(device()).password, kSecret);
}

TEST_F(CameraConfigTest, EmptyPasswordFile) {
  write_password("\n", 0600);
  EXPECT_THAT(error_of([&] { parse(device()); }).detail(), HasSubstr("is empty"));
}

TEST_F(CameraConfigTest, AuthKinds) {
  EXPECT_EQ(parse(device("auth: basic\n")).auth, "basic");
  const ConfigError e = error_of([&] { parse(device("auth: ntlm\n")); });
  EXPECT_EQ(e.key(), "auth");
  EXPECT_THAT(e.detail(), HasSubstr("digest"));
}

TEST_F(CameraConfigTest, RangesAndCrossKeyRules) {
  EXPECT_EQ(error_of([&] { parse(device("stream_idle_timeout_s: 10\n")); }).key(), "stream_idle_timeout_s");
  EXPECT_EQ(error_of([&] { parse(device("picture_wait_ms: 0\n")); }).key(), "picture_wait_ms");
  EXPECT_EQ(error_of([&] { parse(device("auth_backoff_s: 5\n")); }).key(), "auth_backoff_s");
  EXPECT_EQ(error_of([&] { parse(device("time_poll_s: 0\n")); }).key(), "time_poll_s");
  EXPECT_EQ(error_of([&] { parse(device("reconnect_initial_ms: 1000\nreconnect_max_ms: 500\n")); }).key(),
            "reconnect_max_ms");
  const CameraConfig c = parse(device("time_poll_s: 30\npicture_wait_ms: 500\nauth_backoff_s: 600\n"));
  EXPECT_EQ(c.time_poll_s, 30);
  EXPECT_EQ(c.picture_wait_ms, 500);
  EXPECT_EQ(c.auth_backoff_s, 600);
}

TEST_F(CameraConfigTest, RequiredKeysAndUnknownKeys) {
  std::string text = device();
  text.replace(text.find("radar: radar-1\n"), 15, "");
  EXPECT_EQ(error_of([&] { parse(text); }).key(), "radar");
  const ConfigError e = error_of([&] { parse(device("pasword: x\n")); });
  EXPECT_THAT(std::string(e.what()), HasSubstr("unknown key 'pasword'"));
}

}  // namespace
}  // namespace cpd::adapters
