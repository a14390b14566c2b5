// Unit tests of the recorder_dock device section: URL with base path, token file (existence, mode,
// content, never echoed), ranges and cross-key rules, each mistake reported with its place and key.
#include "adapters/recorder/recorder_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

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

constexpr const char* kDockFile = "dock.yaml";
constexpr const char* kToken = "tok-3f9a2c71e0b84d55";
constexpr const char* kUrl = "http://192.0.2.80:8080";

class RecorderConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-dockcfg-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    token_file_ = (dir_ / "dock.token").string();
    write_token(std::string(kToken) + "\n", 0600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_token(const std::string& text, mode_t mode) {
    std::ofstream(token_file_, std::ios::trunc | std::ios::binary) << text;
    ASSERT_EQ(::chmod(token_file_.c_str(), mode), 0);
  }

  std::string device(const std::string& extra = "", const std::string& url = kUrl) const {
    return "id: dock-1\nkind: recorder_dock\nurl: " + url + "\ntoken_file: " + token_file_ + "\n" + extra;
  }

  static RecorderDockConfig parse(const std::string& text, const std::string& file = kDockFile) {
    auto context = std::make_shared<config::LoadContext>();
    context->file = file;
    config::Section s = config::Section::root(YAML::Load(text), context);
    s.required<std::string>("id");
    s.required<std::string>("kind");
    return parse_recorder_dock_config(s);
  }

  fs::path dir_;
  std::string token_file_;
};

TEST_F(RecorderConfigTest, ReadsAValidSectionWithDefaults) {
  const RecorderDockConfig c = parse(device());
  EXPECT_EQ(c.id, "dock-1");
  EXPECT_EQ(c.url, kUrl);
  EXPECT_EQ(c.host, "192.0.2.80");
  EXPECT_EQ(c.port, 8080);
  EXPECT_EQ(c.base_path, "");
  EXPECT_EQ(c.token_file, token_file_);
  EXPECT_EQ(c.token, kToken);  // without the trailing newline
  EXPECT_EQ(c.poll_interval_ms, 5000);
  EXPECT_EQ(c.list_limit, 100);
  EXPECT_EQ(c.max_parallel_downloads, 2);
  EXPECT_EQ(c.request_timeout_s, 30);
  EXPECT_EQ(c.download_idle_timeout_s, 60);
  EXPECT_EQ(c.max_md5_attempts, 3);
  EXPECT_EQ(c.reconnect_initial_ms, 500);
  EXPECT_EQ(c.reconnect_max_ms, 30000);
  EXPECT_EQ(c.auth_backoff_s, 60);
  EXPECT_EQ(c.recorder_clock_tolerance_s, 5);
}

TEST_F(RecorderConfigTest, HostPortAndBasePath) {
  struct Case {
    std::string url;
    std::string host;
    int port;
    std::string base_path;
  };
  const std::vector<Case> cases = {
      {"http://dock.local", "dock.local", 80, ""},
      {"http://dock.local/", "dock.local", 80, ""},
      {"http://dock.local/station1", "dock.local", 80, "/station1"},
      {"http://dock.local:81/station1/", "dock.local", 81, "/station1"},
      {"http://10.0.0.7/a/b-c/d_e.f~", "10.0.0.7", 80, "/a/b-c/d_e.f~"},
      {"http://[fe80::1]:8080/dock", "fe80::1", 8080, "/dock"},
  };
  for (const auto& c : cases) {
    const RecorderDockConfig cfg = parse(device("", c.url));
    EXPECT_EQ(cfg.host, c.host) << c.url;
    EXPECT_EQ(cfg.port, c.port) << c.url;
    EXPECT_EQ(cfg.base_path, c.base_path) << c.url;
  }
}

TEST_F(RecorderConfigTest, HttpsIsRefusedForNow) {
  const std::string text = device("", "https://dock.local");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "url");
  EXPECT_THAT(e.detail(), HasSubstr("https is not supported yet"));
  EXPECT_EQ(std::string(e.what()).rfind(place_in(kDockFile, text, "https://"), 0), 0U) << e.what();
}

TEST_F(RecorderConfigTest, BadUrls) {
  for (const char* url :
       {"dock.local", "http://dock.local:99999", "http://dock.local:0", "http://u:p@dock.local",
        "http://dock.local/a?x=1", "http://dock.local/a#f", "ftp://dock.local", "http://dock.local/../x",
        "http://dock.local/a/./b", "http://dock.local/a/..", "http://dock.local/%41", "http://dock.local//a",
        "http://"}) {
    const std::string text = device("", url);
    const ConfigError e = error_of([&] { parse(text); });
    EXPECT_EQ(e.key(), "url") << url;
    EXPECT_EQ(std::string(e.what()).rfind(place_in(kDockFile, text, url), 0), 0U) << e.what();
  }
}

TEST_F(RecorderConfigTest, MissingTokenFileNamesTheFile) {
  fs::remove(token_file_);
  const std::string text = device();
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "token_file");
  EXPECT_THAT(e.detail(), HasSubstr(token_file_));
  EXPECT_THAT(e.detail(), HasSubstr("No such file"));
  EXPECT_EQ(std::string(e.what()).rfind(place_in(kDockFile, text, token_file_), 0), 0U) << e.what();
}

TEST_F(RecorderConfigTest, TokenFileThatIsADirectory) {
  fs::remove(token_file_);
  fs::create_directory(token_file_);
  EXPECT_THAT(error_of([&] { parse(device()); }).detail(), HasSubstr("not a regular file"));
}

TEST_F(RecorderConfigTest, GroupOrWorldReadableTokenFileIsRefusedWithoutShowingIt) {
  for (const mode_t mode : {0640, 0604, 0660, 0601, 0610}) {
    write_token(kToken, mode);
    const ConfigError e = error_of([&] { parse(device()); });
    EXPECT_EQ(e.key(), "token_file");
    EXPECT_THAT(e.detail(), HasSubstr(token_file_));
    EXPECT_THAT(e.detail(), HasSubstr("0" + std::to_string(mode / 64) + std::to_string(mode / 8 % 8) +
                                      std::to_string(mode % 8)));
    EXPECT_THAT(std::string(e.what()), Not(HasSubstr(kToken)));
  }
  write_token(kToken, 0400);
  EXPECT_EQ(parse(device()).token, kToken);
}

TEST_F(RecorderConfigTest, EmptyTokenIsRefused) {
  for (const char* text : {"", "\n", "\r\n", "\n\n"}) {
    write_token(text, 0600);
    const ConfigError e = error_of([&] { parse(device()); });
    EXPECT_EQ(e.key(), "token_file");
    EXPECT_THAT(e.detail(), HasSubstr("is empty"));
  }
}

TEST_F(RecorderConfigTest, TokenMustBeOneHeaderSafeLine) {
  for (const std::string& text : {std::string(kToken) + "\nsecond", std::string(kToken) + " x",
                                  std::string(kToken) + "\tx", std::string("a\r\nInjected: 1")}) {
    write_token(text, 0600);
    const ConfigError e = error_of([&] { parse(device()); });
    EXPECT_EQ(e.key(), "token_file");
    EXPECT_THAT(e.detail(), HasSubstr("single line"));
    EXPECT_THAT(std::string(e.what()), Not(HasSubstr(kToken)));
  }
  write_token(std::string(kToken) + "\r\n", 0600);
  EXPECT_EQ(parse(device()).token, kToken);
}

TEST_F(RecorderConfigTest, RelativeTokenFileIsResolvedAgainstTheConfigFile) {
  const std::string text =
      "id: dock-1\nkind: recorder_dock\nurl: http://dock.local\ntoken_file: dock.token\n";
  const RecorderDockConfig c = parse(text, (dir_ / "checkpointd.yaml").string());
  EXPECT_EQ(c.token_file, "dock.token");  // as written
  EXPECT_EQ(c.token, kToken);
}

TEST_F(RecorderConfigTest, Ranges) {
  struct Range {
    std::string key;
    long min;
    long max;
  };
  const std::vector<Range> ranges = {
      {"poll_interval_ms", 200, 3600000},      {"list_limit", 1, 500},
      {"max_parallel_downloads", 1, 16},       {"request_timeout_s", 1, 3600},
      {"download_idle_timeout_s", 1, 3600},    {"max_md5_attempts", 1, 10},
      {"recorder_clock_tolerance_s", 0, 3600}, {"auth_backoff_s", 1, 86400},
      {"reconnect_initial_ms", 10, 600000},
  };
  for (const auto& r : ranges) {
    for (const long bad : {r.min - 1, r.max + 1}) {
      const std::string value = std::to_string(bad);
      const std::string text = device(r.key + ": " + value + "\n");
      const ConfigError e = error_of([&] { parse(text); });
      EXPECT_EQ(e.key(), r.key) << bad;
      // The place is the value's: line 5, just after "key: ".
      EXPECT_EQ(e.line(), 5) << r.key;
      EXPECT_EQ(e.column(), static_cast<int>(r.key.size()) + 3) << r.key;
      EXPECT_THAT(e.detail(), HasSubstr(std::to_string(bad < r.min ? r.min : r.max))) << e.what();
    }
  }
  std::string extra;
  for (const auto& r : ranges) {
    if (r.key != "reconnect_initial_ms") {
      extra += r.key + ": " + std::to_string(r.max) + "\n";
    }
  }
  extra += "reconnect_initial_ms: 600000\nreconnect_max_ms: 3600000\n";
  const RecorderDockConfig hi = parse(device(extra));
  EXPECT_EQ(hi.poll_interval_ms, 3600000);
  EXPECT_EQ(hi.list_limit, 500);
  EXPECT_EQ(hi.max_parallel_downloads, 16);
  EXPECT_EQ(hi.request_timeout_s, 3600);
  EXPECT_EQ(hi.download_idle_timeout_s, 3600);
  EXPECT_EQ(hi.max_md5_attempts, 10);
  EXPECT_EQ(hi.recorder_clock_tolerance_s, 3600);
  EXPECT_EQ(hi.auth_backoff_s, 86400);
  const RecorderDockConfig lo =
      parse(device("poll_interval_ms: 200\nlist_limit: 1\nrecorder_clock_tolerance_s: 0\n"));
  EXPECT_EQ(lo.poll_interval_ms, 200);
  EXPECT_EQ(lo.list_limit, 1);
  EXPECT_EQ(lo.recorder_clock_tolerance_s, 0);
}

TEST_F(RecorderConfigTest, ErrorNamesFileLineColumnAndKey) {
  const std::string text = device("list_limit: 501\n");
  const ConfigError e = error_of([&] { parse(text); });
  EXPECT_EQ(e.key(), "list_limit");
  EXPECT_EQ(e.file(), kDockFile);
  EXPECT_EQ(e.line(), 5);
  EXPECT_EQ(e.column(), 13);
  EXPECT_EQ(std::string(e.what()).rfind(place_in(kDockFile, text, "501"), 0), 0U) << e.what();
  EXPECT_THAT(e.detail(), HasSubstr("500"));
}

TEST_F(RecorderConfigTest, ReconnectMaxMustNotBeBelowInitial) {
  const ConfigError e =
      error_of([&] { parse(device("reconnect_initial_ms: 1000\nreconnect_max_ms: 500\n")); });
  EXPECT_EQ(e.key(), "reconnect_max_ms");
  EXPECT_THAT(e.detail(), HasSubstr("1000"));
}

TEST_F(RecorderConfigTest, RequiredKeysAndUnknownKeys) {
  std::string no_url = device();
  no_url.replace(no_url.find("url: "), std::string("url: ").size() + std::string(kUrl).size() + 1, "");
  EXPECT_EQ(error_of([&] { parse(no_url); }).key(), "url");
  std::string no_token = device();
  no_token.replace(no_token.find("token_file: "), std::string("token_file: ").size() + token_file_.size() + 1,
                   "");
  EXPECT_EQ(error_of([&] { parse(no_token); }).key(), "token_file");
  const ConfigError e = error_of([&] { parse(device("pol_interval_ms: 1000\n")); });
  EXPECT_THAT(std::string(e.what()), HasSubstr("unknown key 'pol_interval_ms'"));
  EXPECT_THAT(std::string(e.what()), HasSubstr("poll_interval_ms"));
}

}  // namespace
}  // namespace cpd::adapters
