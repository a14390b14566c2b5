// plan_reload: which devices and sections a reload adds, removes, changes or refuses.
#include "daemon/app/reload_plan.h"

#include <gtest/gtest.h>

namespace cpd::app {
namespace {

using Ids = std::vector<std::string>;

const std::string kBase = R"(gateway:
  id: gw-1
  site: {name: "Test site", road: G60, direction: N, lat: 30.0, lon: 120.0, utc_offset: "+08:00"}
  key: /tmp/gw.key
store:
  path: /tmp/store.db
mqtt:
  uri: tcp://127.0.0.1:1883
devices:
  - id: radar-1
    kind: radar
    tcp: {host: 192.0.2.10, port: 4001}
    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-1, valid_until: 2027-06-30}
  - id: radar-2
    kind: radar
    tcp: {host: 192.0.2.11, port: 4001}
    lanes: [{lane: 2, x_min: 0.0, x_max: 3.75}]
    calibration: {certificate: C-2, valid_until: 2027-06-30}
)";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "test bug: " << from;
  return text.replace(pos, from.size(), to);
}

ReloadPlan plan(const std::string& running, const std::string& next) {
  return plan_reload(config::parse_config(running, "old.yaml"), config::parse_config(next, "new.yaml"));
}

TEST(ReloadPlan, TheSameFileChangesNothing) {
  const auto p = plan(kBase, kBase);
  EXPECT_FALSE(p.changes_anything());
  EXPECT_TRUE(p.applicable());
  EXPECT_EQ(p.unchanged, (Ids{"radar-1", "radar-2"}));
  EXPECT_EQ(p.summary(), "no change");
}

TEST(ReloadPlan, CommentsAndOrderDoNotCount) {
  const std::string reordered = replaced(kBase, "  - id: radar-1", "# renewed\n  - id: radar-1");
  const auto p = plan(kBase, reordered);
  EXPECT_FALSE(p.changes_anything());
}

TEST(ReloadPlan, AddedRemovedAndChangedDevicesAreNamed) {
  std::string next = replaced(kBase, "id: radar-2", "id: radar-3");  // radar-2 goes, radar-3 comes
  next = replaced(next, "certificate: C-1, valid_until: 2027-06-30",
                  "certificate: C-1b, valid_until: 2028-06-30");
  const auto p = plan(kBase, next);
  EXPECT_EQ(p.added, (Ids{"radar-3"}));
  EXPECT_EQ(p.removed, (Ids{"radar-2"}));
  EXPECT_EQ(p.changed, (Ids{"radar-1"}));
  EXPECT_TRUE(p.unchanged.empty());
  EXPECT_TRUE(p.applicable());
  EXPECT_EQ(p.summary(), "devices +radar-3 -radar-2 ~radar-1");
  const auto j = p.to_json();
  EXPECT_EQ(j["devices_added"], nlohmann::json::array({"radar-3"}));
  EXPECT_EQ(j["devices_removed"], nlohmann::json::array({"radar-2"}));
  EXPECT_EQ(j["devices_changed"], nlohmann::json::array({"radar-1"}));
  EXPECT_FALSE(j.contains("sections_needing_restart"));
}

TEST(ReloadPlan, OneChangedLaneChangesOnlyThatRadar) {
  const auto p = plan(
      kBase, replaced(kBase, "{lane: 2, x_min: 0.0, x_max: 3.75}", "{lane: 2, x_min: 0.5, x_max: 3.75}"));
  EXPECT_EQ(p.changed, (Ids{"radar-2"}));
  EXPECT_EQ(p.unchanged, (Ids{"radar-1"}));
}

TEST(ReloadPlan, CorrelationAndValidityApplyLive) {
  const auto p =
      plan(kBase, kBase + "correlation:\n  window_ms: 300\nvalidity:\n  min_pictures_speeding: 1\n");
  EXPECT_EQ(p.live_sections, (Ids{"correlation", "validity"}));
  EXPECT_TRUE(p.applicable());
  EXPECT_TRUE(p.changes_anything());
}

// A changed code table is applied live and named (it used to be applied but logged as "no change").
TEST(ReloadPlan, ACodesChangeAppliesLiveAndIsNamed) {
  const auto p = plan(kBase, kBase +
                                 "codes:\n  plate_types:\n    - {plate_type: 92TypeCivil, plate_color: blue, "
                                 "code: \"02\", name: small}\n");
  EXPECT_EQ(p.live_sections, (Ids{"codes"}));
  EXPECT_TRUE(p.applicable());
  EXPECT_TRUE(p.changes_anything());
}

TEST(ReloadPlan, SectionsFixedAtStartAreRefused) {
  std::string next = replaced(kBase, "tcp://127.0.0.1:1883", "tcp://127.0.0.1:1884");
  next = replaced(next, "path: /tmp/store.db", "path: /tmp/other.db");
  next += "links:\n  margin_before_s: 10\nmetrics:\n  port: 9500\n";
  const auto p = plan(kBase, next);
  EXPECT_FALSE(p.applicable());
  EXPECT_EQ(p.restart_sections, (Ids{"store", "mqtt", "links", "metrics"}));
  EXPECT_EQ(p.to_json()["sections_needing_restart"].size(), 4u);
  EXPECT_NE(p.summary().find("needing a restart store mqtt links metrics"), std::string::npos) << p.summary();
}

}  // namespace
}  // namespace cpd::app
