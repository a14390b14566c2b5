// Unit tests of the evidence sheet's content: every case-file element with the unit a person reads, local
// time in the site's offset, codes with their names or "unmapped", a warning first for a record that may not
// be used for enforcement, and bounded text. No PDF: sheet_pdf.cpp only lays this out.
#include "tools/checkpointctl/sheet_content.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace cpd::ctl {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json speeding() {
  return json::parse(R"({
    "v": 1, "gateway": "gw-1", "seq": 42, "id": "gw-1:42", "type": "speeding",
    "time_ms": 1795779534123, "created_ms": 1795779535000,
    "site": {"gateway": "gw-1", "name": "G60 K1234", "road": "G60", "direction": "N", "lat_e7": 302740850,
             "lon_e7": 1201550700, "utc_offset": "+08:00", "area_code": "330106", "road_code": "G60",
             "km_marker": "K1234+500", "km_m": 1234500, "carriageway": "up"},
    "plate": "浙A12345", "plate_color": "blue", "plate_type": "92TypeCivil", "vehicle_type": "vehicle",
    "codes": {"plate_type": {"table": "GA 24.7", "mapped": true, "code": "02", "name": "小型汽车号牌"},
              "vehicle_type": {"table": "GA 24.4", "mapped": false}},
    "lane": 1, "direction": "approaching", "speed_dkmh": 1503, "limit_kmh": 100, "over_dkmh": 503,
    "over_permille": 503, "band": "over_50",
    "radar": "radar-1", "radar_device": {"model": "SR-200", "serial": "SR-1", "firmware": "2.4.1"},
    "calibration": {"certificate": "JJG527-1", "valid_until": "2027-06-30", "valid": true, "radar_serial": "SR-1"},
    "camera": "cam-1", "camera_device": {"model": "iDS", "serial": "DS-9", "firmware": "V5"},
    "config_sha256": "cccc",
    "pictures": [{"sha256": "aa", "role": "panorama", "width": 1920, "height": 1080, "bytes": 412345,
                  "capture_ms": 1795779534000},
                 {"sha256": "bb", "role": "plate_closeup"}],
    "checks": {"calibration": {"ok": true}, "panoramas": {"ok": true, "count": 2, "min": 2},
               "camera_clock": {"ok": true, "offset_ms": 7}},
    "enforceable": true, "reasons": []})");
}

std::string value_of(const SheetContent& c, const std::string& label_start) {
  for (const auto& s : c.sections) {
    for (const auto& r : s.rows) {
      if (r.label.rfind(label_start, 0) == 0) {
        return r.value;
      }
    }
  }
  ADD_FAILURE() << "no row " << label_start;
  return "";
}

TEST(SheetContent, EveryCaseFileElementInTheUnitsAPersonReads) {
  const SheetContent c = sheet_content(speeding(), "0123456789abcdef", std::string(64, 'e'));
  EXPECT_EQ(c.title, "道路交通安全违法行为图像取证记录");
  EXPECT_FALSE(c.not_enforceable);
  EXPECT_EQ(value_of(c, "记录编号"), "gw-1:42");
  EXPECT_EQ(value_of(c, "发生时间"), "2026-11-27 19:38:54.123 (UTC+08:00)");
  EXPECT_EQ(value_of(c, "行政区划代码"), "330106");
  EXPECT_EQ(value_of(c, "道路"), "G60 (G60)");
  EXPECT_EQ(value_of(c, "里程桩号"), "K1234+500");
  EXPECT_EQ(value_of(c, "方向"), "上行 (up)；行驶方向 travel 北 (N)");
  EXPECT_EQ(value_of(c, "坐标"), "30.2740850, 120.1550700 (WGS84)");
  EXPECT_EQ(value_of(c, "号牌号码"), "浙A12345");
  EXPECT_EQ(value_of(c, "号牌种类"), "02 小型汽车号牌 (GA 24.7)；摄像机 camera: 92TypeCivil");
  EXPECT_EQ(value_of(c, "号牌颜色"), "蓝 (blue)");
  EXPECT_EQ(value_of(c, "车辆类型"), "未映射 unmapped；摄像机 camera: vehicle");
  EXPECT_EQ(value_of(c, "实测速度"), "150.3 km/h");
  EXPECT_EQ(value_of(c, "限速"), "100 km/h");
  EXPECT_EQ(value_of(c, "超速"), "50.3%；50.3 km/h；超速 50% 以上 (over_50)");
  EXPECT_EQ(value_of(c, "测速设备"), "radar-1；型号 model SR-200；编号 serial SR-1；固件 firmware 2.4.1");
  EXPECT_THAT(value_of(c, "计量检定"),
              HasSubstr("JJG527-1；有效期至 valid until 2027-06-30；证书所载设备编号"));
  EXPECT_EQ(value_of(c, "配置 SHA-256"), "cccc");
  ASSERT_EQ(c.checks.size(), 3U);
  EXPECT_EQ(c.checks[0].label, "计量检定有效 Calibration");  // checks in the record's (sorted) order
  EXPECT_EQ(c.checks[1].detail, "7 ms");
  EXPECT_EQ(c.checks[2].detail, "2 / 2");
  ASSERT_EQ(c.pictures.size(), 2U);
  EXPECT_EQ(c.pictures[0].caption,
            "全景 panorama；1920 × 1080 px；412345 bytes；2026-11-27 19:38:54.000 (UTC+08:00)");
  EXPECT_EQ(c.pictures[1].caption, "号牌特写 plate close-up");
  EXPECT_EQ(c.qr_text,
            "checkpointd-record v1 id=gw-1:42 kid=0123456789abcdef sha256=" + std::string(64, 'e'));
  EXPECT_THAT(c.verify_commands[4],
              HasSubstr("openssl pkeyutl -verify -pubin -inkey gateway.pub.pem -rawin"));
}

TEST(SheetContent, ANonEnforceableRecordSaysSoWithItsReasons) {
  json b = speeding();
  b["enforceable"] = false;
  b["reasons"] = {"calibration_expired", "too_few_panoramas", "something_new"};
  const SheetContent c = sheet_content(b, "k", "h");
  EXPECT_TRUE(c.not_enforceable);
  EXPECT_EQ(c.reasons,
            (std::vector<std::string>{"计量检定已过期 (calibration_expired)",
                                      "全景图片不足 (GA/T 832) (too_few_panoramas)", "something_new"}));
}

// GA/T 832's "one panorama plus video": a speeding record with one panorama (not enforceable by its own
// check) and the link records naming it. The sheet lists each link and adds the check, met when a link says
// so; the record's own verdict stays at the top as sealed.
TEST(SheetContent, LinkedRecordingsAreListedAndOnePanoramaPlusVideoIsACheck) {
  json b = speeding();
  b["enforceable"] = false;
  b["reasons"] = {"too_few_panoramas"};
  b["checks"]["panoramas"] = {{"ok", false}, {"count", 1}, {"min", 2}};
  const json met = {{"id", "gw-1:45"},
                    {"type", "link"},
                    {"recording", "gw-1:44"},
                    {"record", "gw-1:42"},
                    {"panoramas_with_video",
                     {{"panoramas", 1},
                      {"video", true},
                      {"covers_record_time", true},
                      {"recording_time_reliable", true},
                      {"record_checks_ok", true},
                      {"met", true}}}};
  json audio = met;
  audio["id"] = "gw-1:47";
  audio["recording"] = "gw-1:46";
  audio["panoramas_with_video"]["video"] = false;
  audio["panoramas_with_video"]["met"] = false;

  const SheetContent c = sheet_content(b, "k", "h", {audio, met});
  EXPECT_TRUE(c.not_enforceable);
  EXPECT_THAT(value_of(c, "关联记录 Link gw-1:45"),
              HasSubstr("录像 recording gw-1:44；一张全景+视频 one panorama "
                        "plus video: 符合 met (全景 panoramas 1；视频 video 是 yes"));
  EXPECT_THAT(value_of(c, "关联记录 Link gw-1:47"), HasSubstr("不符合 not met"));
  ASSERT_EQ(c.checks.size(), 4U);
  EXPECT_EQ(c.checks[3].label, "一张全景+视频 One panorama plus video (GA/T 832)");
  EXPECT_TRUE(c.checks[3].ok);
  EXPECT_EQ(c.checks[3].detail, "link gw-1:45 → gw-1:44");

  const SheetContent not_met = sheet_content(b, "k", "h", {audio});
  ASSERT_EQ(not_met.checks.size(), 4U);
  EXPECT_FALSE(not_met.checks[3].ok);
  EXPECT_EQ(not_met.checks[3].detail, "no linked video meets it");
  // No links: no such check (a record alone cannot say it); a passage's links are listed without it; nor
  // for a record whose own panoramas passed; a link sealed before the check was decided says "undecided".
  EXPECT_EQ(sheet_content(b, "k", "h").checks.size(), 3U);
  EXPECT_EQ(sheet_content(speeding(), "k", "h", {met}).checks.size(), 3U);
  json old = met;
  old.erase("panoramas_with_video");
  const SheetContent undecided = sheet_content(b, "k", "h", {old});
  EXPECT_EQ(undecided.checks.size(), 3U);
  EXPECT_THAT(value_of(undecided, "关联记录 Link gw-1:45"), HasSubstr("未判定 undecided"));
  json passage = speeding();
  passage["type"] = "passage";
  EXPECT_EQ(sheet_content(passage, "k", "h", {met}).checks.size(), 3U);
}

TEST(SheetContent, MissingOrOddMembersReadAsADashAndLongTextIsCut) {
  json b = speeding();
  b["site"].erase("area_code");
  b["speed_dkmh"] = "fast";    // not an integer
  b["codes"] = json::array();  // not an object
  b["plate"] = std::string(1000, 'x') + "浙";
  b["checks"]["pictures"] = "odd";  // not an object: shown as failed
  const SheetContent c = sheet_content(b, "k", "h");
  EXPECT_EQ(value_of(c, "行政区划代码"), "—");
  EXPECT_EQ(value_of(c, "实测速度"), "—");
  EXPECT_EQ(value_of(c, "号牌种类"), "未映射 unmapped；摄像机 camera: 92TypeCivil");
  EXPECT_EQ(value_of(c, "号牌号码"), std::string(300, 'x') + "…");
  EXPECT_FALSE(c.checks.back().ok);
}

TEST(SheetContent, APassageIsNotAViolationAndOtherRecordsShowTheirBody) {
  json b = speeding();
  b["type"] = "passage";
  EXPECT_THAT(sheet_content(b, "k", "h").subtitle, HasSubstr("not a violation"));
  const json audit = {{"type", "audit"}, {"id", "gw-1:1"}, {"event", "start"}, {"time_ms", 0}};
  const SheetContent c = sheet_content(audit, "k", "h");
  EXPECT_EQ(c.title, "电子证据记录");
  EXPECT_THAT(value_of(c, "记录内容"), HasSubstr("\"event\": \"start\""));
  EXPECT_EQ(value_of(c, "发生时间"), "1970-01-01 00:00:00.000 (UTC+00:00)") << "no site: UTC";
}

TEST(SheetContent, LocalTimeFollowsTheOffset) {
  EXPECT_EQ(local_time_text(0, "-05:30"), "1969-12-31 18:30:00.000 (UTC-05:30)");
  EXPECT_EQ(local_time_text(-1, "+00:00"), "1969-12-31 23:59:59.999 (UTC+00:00)");
  EXPECT_EQ(local_time_text(0, "garbage"), "1970-01-01 00:00:00.000 (UTC+00:00)");
  EXPECT_EQ(local_time_text(0, "+1/:00"), "1970-01-01 00:00:00.000 (UTC+00:00)");
}

}  // namespace
}  // namespace cpd::ctl
