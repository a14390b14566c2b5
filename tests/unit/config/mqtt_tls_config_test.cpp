// Unit tests of the mqtt section's transport security keys: TLS only with ssl://, required and checked
// files (modes, PEM contents) named with their place, credentials read at load and never quoted.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/config/config.h"
#include "daemon/config/schema.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::config {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::place_in;

constexpr const char* kCert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
constexpr const char* kKey = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
constexpr const char* kPassword = "s3cr3t-Mqtt-pw";

class MqttTlsConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cpd-mqtt-tls-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write("ca.pem", kCert, 0644);
    write("client.pem", kCert, 0644);
    write("client.key", kKey, 0600);
    write("mqtt.pw", std::string(kPassword) + "\n", 0600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& name, const std::string& text, mode_t mode) {
    std::ofstream(dir_ / name) << text;
    ::chmod((dir_ / name).c_str(), mode);
  }

  // The config file sits in dir_, so relative paths in `mqtt` resolve there.
  std::string config_text(const std::string& mqtt) const {
    return "gateway:\n  id: gw-1\n  site: {name: s, road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
           "  key: /tmp/gw.key\nstore:\n  path: /tmp/store.db\nmqtt:\n" +
           mqtt +
           "devices:\n  - id: radar-1\n    kind: radar\n    tcp: {host: 192.0.2.10, port: 4001}\n"
           "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]\n"
           "    calibration: {certificate: C-1, valid_until: 2099-06-30}\n";
  }
  Config load(const std::string& mqtt) {
    write("gw.yaml", config_text(mqtt), 0644);
    return load_config((dir_ / "gw.yaml").string());
  }
  ConfigError error(const std::string& mqtt) {
    return error_of([&] { load(mqtt); });
  }
  std::string file() const { return (dir_ / "gw.yaml").string(); }

  fs::path dir_;
};

TEST_F(MqttTlsConfigTest, PlaintextUriHasNoTlsAndNoCredentials) {
  const Config c = load("  uri: tcp://127.0.0.1:1883\n");
  EXPECT_FALSE(c.mqtt.tls.enabled);
  EXPECT_TRUE(c.mqtt.username.empty());
  EXPECT_TRUE(c.mqtt.password.empty());
}

TEST_F(MqttTlsConfigTest, SslUriWithCaVerifiesHostnameByDefault) {
  const Config c = load("  uri: mqtts://broker.example:8883\n  tls:\n    ca_file: ca.pem\n");
  EXPECT_EQ(c.mqtt.uri, "ssl://broker.example:8883");
  EXPECT_TRUE(c.mqtt.tls.enabled);
  EXPECT_EQ(c.mqtt.tls.ca_file, (dir_ / "ca.pem").string()) << "relative to the config file's directory";
  EXPECT_TRUE(c.mqtt.tls.verify_hostname);
  EXPECT_TRUE(c.mqtt.tls.cert_file.empty());
}

TEST_F(MqttTlsConfigTest, MutualTlsAndCredentials) {
  const Config c = load("  uri: ssl://127.0.0.1:8883\n  tls:\n    ca_file: " + (dir_ / "ca.pem").string() +
                        "\n    cert_file: client.pem\n    key_file: client.key\n    verify_hostname: false\n"
                        "  username: gw-1\n  password_file: mqtt.pw\n");
  EXPECT_EQ(c.mqtt.tls.cert_file, (dir_ / "client.pem").string());
  EXPECT_EQ(c.mqtt.tls.key_file, (dir_ / "client.key").string());
  EXPECT_FALSE(c.mqtt.tls.verify_hostname);
  EXPECT_EQ(c.mqtt.username, "gw-1");
  EXPECT_EQ(c.mqtt.password, kPassword) << "one trailing newline is not part of the secret";
}

TEST_F(MqttTlsConfigTest, SslUriWithoutTlsSectionIsAnError) {
  const std::string mqtt = "  uri: ssl://127.0.0.1:8883\n";
  const auto e = error(mqtt);
  EXPECT_EQ(e.key(), "mqtt.tls");
  EXPECT_THAT(e.detail(), HasSubstr("ca_file"));
}

TEST_F(MqttTlsConfigTest, TlsKeysWithPlaintextUriAreAnErrorNotIgnored) {
  const std::string mqtt = "  uri: tcp://127.0.0.1:1883\n  tls:\n    ca_file: ca.pem\n";
  const auto e = error(mqtt);
  EXPECT_EQ(e.key(), "mqtt.tls");
  EXPECT_THAT(e.what(), HasSubstr(place_in(file(), config_text(mqtt), "ca_file")));
  EXPECT_THAT(e.detail(), HasSubstr("plaintext"));
}

TEST_F(MqttTlsConfigTest, MissingCaFileNamesPathAndPlace) {
  const std::string mqtt = "  uri: ssl://127.0.0.1:8883\n  tls:\n    ca_file: nope.pem\n";
  const auto e = error(mqtt);
  EXPECT_EQ(e.key(), "mqtt.tls.ca_file");
  EXPECT_THAT(e.what(), HasSubstr(place_in(file(), config_text(mqtt), "nope.pem")));
  EXPECT_THAT(e.detail(), HasSubstr((dir_ / "nope.pem").string()));
}

TEST_F(MqttTlsConfigTest, CaFileMustHoldACertificate) {
  const auto e = error("  uri: ssl://127.0.0.1:8883\n  tls:\n    ca_file: client.key\n");
  EXPECT_EQ(e.key(), "mqtt.tls.ca_file");
  EXPECT_THAT(e.detail(), HasSubstr("CERTIFICATE"));
}

TEST_F(MqttTlsConfigTest, CertWithoutKeyIsAnError) {
  const auto e =
      error("  uri: ssl://127.0.0.1:8883\n  tls:\n    ca_file: ca.pem\n    cert_file: client.pem\n");
  EXPECT_EQ(e.key(), "mqtt.tls.cert_file");
  EXPECT_THAT(e.detail(), HasSubstr("both or neither"));
}

TEST_F(MqttTlsConfigTest, KeyReadableByOthersIsRefused) {
  ::chmod((dir_ / "client.key").c_str(), 0640);
  const auto e = error(
      "  uri: ssl://127.0.0.1:8883\n  tls:\n    ca_file: ca.pem\n    cert_file: client.pem\n"
      "    key_file: client.key\n");
  EXPECT_EQ(e.key(), "mqtt.tls.key_file");
  EXPECT_THAT(e.detail(), HasSubstr("0640"));
}

TEST_F(MqttTlsConfigTest, UnknownTlsKeyIsAnError) {
  const auto e = error("  uri: ssl://127.0.0.1:8883\n  tls:\n    ca_file: ca.pem\n    verify_host: false\n");
  EXPECT_THAT(e.detail(), HasSubstr("verify_hostname"));
}

TEST_F(MqttTlsConfigTest, PasswordFileReadableByOthersIsRefusedWithoutQuotingIt) {
  ::chmod((dir_ / "mqtt.pw").c_str(), 0644);
  const auto e = error("  uri: tcp://127.0.0.1:1883\n  username: gw-1\n  password_file: mqtt.pw\n");
  EXPECT_EQ(e.key(), "mqtt.password_file");
  EXPECT_THAT(e.detail(), HasSubstr("0644"));
  EXPECT_THAT(std::string(e.what()), Not(HasSubstr(kPassword)));
}

TEST_F(MqttTlsConfigTest, PasswordOnTwoLinesIsRefusedWithoutQuotingIt) {
  write("mqtt.pw", std::string(kPassword) + "\nsecond-line-secret\n", 0600);
  const auto e = error("  uri: tcp://127.0.0.1:1883\n  username: gw-1\n  password_file: mqtt.pw\n");
  EXPECT_EQ(e.key(), "mqtt.password_file");
  EXPECT_THAT(std::string(e.what()), Not(HasSubstr(kPassword)));
  EXPECT_THAT(std::string(e.what()), Not(HasSubstr("second-line-secret")));
}

TEST_F(MqttTlsConfigTest, PasswordFileNeedsAUsername) {
  const auto e = error("  uri: tcp://127.0.0.1:1883\n  password_file: mqtt.pw\n");
  EXPECT_EQ(e.key(), "mqtt.password_file");
  EXPECT_THAT(e.detail(), HasSubstr("username"));
}

TEST_F(MqttTlsConfigTest, MissingPasswordFileIsAnError) {
  const auto e = error("  uri: tcp://127.0.0.1:1883\n  username: gw-1\n  password_file: gone.pw\n");
  EXPECT_EQ(e.key(), "mqtt.password_file");
  EXPECT_THAT(e.detail(), HasSubstr("gone.pw"));
}

}  // namespace
}  // namespace cpd::config
