// checkpoint-central without a database or a broker: its config (places in errors), the columns it decodes
// from a record body, and how it reads a gateway's topics.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "central/central_config.h"
#include "central/central_service.h"
#include "central/record_columns.h"
#include "daemon/config/schema.h"

namespace cpd::central {
namespace {

using ::testing::HasSubstr;

constexpr const char* kConfig = R"(central:
  id: zj-central
  key: /etc/checkpoint-central/central.key
postgres:
  conninfo: "host=/run/postgresql dbname=checkpoint"
mqtt:
  uri: tcp://127.0.0.1:1883
feed:
  media_dir: /var/lib/checkpoint-central/media
)";

TEST(CentralConfigTest, DefaultsAndRequiredKeys) {
  const CentralConfig c = parse_central_config(kConfig, "central.yaml");
  EXPECT_EQ(c.central.id, "zj-central");
  EXPECT_THAT(c.mqtt.client_id, ::testing::StartsWith("central-zj-central-"));
  EXPECT_EQ(c.feed.share_group, "central");
  EXPECT_EQ(c.receipts.every_records, 1000);
  EXPECT_EQ(c.gaps.resend_after_ms, 10000);
  EXPECT_EQ(c.mqtt.topic_prefix, "checkpoint");
  EXPECT_EQ(c.feed.batch_max, 500);
  EXPECT_EQ(c.feed.batch_linger_ms, 20);
  EXPECT_EQ(c.feed.unnamed_max_age_days, 30);
  EXPECT_EQ(
      parse_central_config(std::string(kConfig) + "  batch_linger_ms: 0\n", "c.yaml").feed.batch_linger_ms,
      0);
}

TEST(CentralConfigTest, MistakesNameTheirPlace) {
  try {
    parse_central_config(std::string(kConfig) + "gaps:\n  retry_min_ms: 5000\n  retry_max_ms: 10\n",
                         "c.yaml");
    FAIL() << "accepted retry_max_ms < retry_min_ms";
  } catch (const config::ConfigError& e) {
    EXPECT_EQ(e.line(), 12);
    EXPECT_EQ(e.key(), "gaps.retry_max_ms");
  }
  try {
    parse_central_config(std::string(kConfig) + "  batch_linger_ms: 1001\n", "c.yaml");
    FAIL() << "accepted a linger over a second";
  } catch (const config::ConfigError& e) {
    EXPECT_EQ(e.key(), "feed.batch_linger_ms");
    EXPECT_EQ(e.line(), 10);
  }
  try {
    parse_central_config(std::string(kConfig) + "feed2: {}\n", "c.yaml");
    FAIL() << "accepted an unknown key";
  } catch (const config::ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown key 'feed2'"));
  }
  try {
    std::string bad = kConfig;
    bad.replace(bad.find("zj-central"), 10, "ZJ Central");
    parse_central_config(bad, "c.yaml");
    FAIL() << "accepted a bad central id";
  } catch (const config::ConfigError& e) {
    EXPECT_EQ(e.key(), "central.id");
    EXPECT_EQ(e.line(), 2);
  }
}

TEST(CentralConfigTest, GatewayIdsAreTheGatewaysOwnRule) {
  for (const std::string& ok :
       {std::string("gw"), std::string("0"), std::string("gw-1"), std::string("a-"), std::string(63, 'z')}) {
    EXPECT_TRUE(is_gateway_id(ok)) << ok;
  }
  for (const std::string& bad : {std::string(), std::string("-gw"), std::string("GW"), std::string("gw/x"),
                                 std::string("gw+"), std::string("#"), std::string("gw.1"),
                                 std::string(64, 'z'), std::string("g\0w", 3), std::string("\xe6\xb5\x99")}) {
    EXPECT_FALSE(is_gateway_id(bad)) << bad;
  }
}

TEST(RecordColumnsTest, DecodesSpeedingMembersAndPictures) {
  const auto body = nlohmann::json::parse(R"({"type":"speeding","time_ms":5,"created_ms":6,
    "site":{"name":"K12"},"plate":"浙A12345","plate_color":"blue","lane":2,"speed_dkmh":1502,"limit_kmh":120,
    "enforceable":false,"reasons":["camera_clock"],
    "pictures":[{"sha256":")" + std::string(64, 'a') +
                                          R"("},{"sha256":"not-a-hash"},{"bytes":3}]})");
  const RecordColumns c = record_columns(body);
  EXPECT_EQ(c.type, "speeding");
  EXPECT_EQ(c.plate, "浙A12345");
  EXPECT_EQ(c.lane, 2);
  EXPECT_EQ(c.speed_dkmh, 1502);
  EXPECT_EQ(c.limit_kmh, 120);
  EXPECT_EQ(c.enforceable, false);
  EXPECT_EQ(c.reasons, R"(["camera_clock"])");
  EXPECT_EQ(c.site, R"({"name":"K12"})");
  ASSERT_EQ(c.pictures.size(), 1u);  // only well-formed hashes name media
}

TEST(RecordColumnsTest, OddlyTypedMembersStayNull) {
  const RecordColumns c = record_columns(nlohmann::json::parse(R"({"type":"audit","plate":7,"lane":"x",
    "pictures":"none","enforceable":"yes"})"));
  EXPECT_FALSE(c.plate);
  EXPECT_FALSE(c.lane);
  EXPECT_FALSE(c.enforceable);
  EXPECT_TRUE(c.pictures.empty());
}

// A type or plate longer than an index entry may hold is left out of its column (the body keeps it).
TEST(RecordColumnsTest, OverlongTypeAndPlateStayOutOfTheirColumns) {
  const std::string longest(kMaxIndexedText, 'x');
  const std::string longer(kMaxIndexedText + 1, 'x');
  RecordColumns c = record_columns(nlohmann::json{{"type", longest}, {"plate", longest}});
  EXPECT_EQ(c.type, longest);
  EXPECT_EQ(c.plate, longest);
  c = record_columns(nlohmann::json{{"type", longer}, {"plate", longer}});
  EXPECT_EQ(c.type, "");
  EXPECT_FALSE(c.plate);
}

TEST(FeedTopicTest, SplitsGatewayAndRest) {
  const auto t = parse_feed_topic("checkpoint", "checkpoint/gw-1/media/abc");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->gateway, "gw-1");
  EXPECT_EQ(t->rest, "media/abc");
  EXPECT_FALSE(parse_feed_topic("checkpoint", "checkpointx/gw-1/evidence"));
  EXPECT_FALSE(parse_feed_topic("checkpoint", "checkpoint/gw-1"));
  EXPECT_FALSE(parse_feed_topic("checkpoint", "checkpoint//evidence"));
}

}  // namespace
}  // namespace cpd::central
