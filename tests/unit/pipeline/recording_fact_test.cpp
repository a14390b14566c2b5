// Unit tests of the recording facts: every field of `recording`, `recording_fault` and `link`, the
// store-worker hand-offs (kept media, link span, dock ledger update, commit callback), the LinkRule, and
// that no field anywhere holds a floating-point number.
#include "daemon/pipeline/recording_fact.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"

namespace cpd::pipeline {
namespace {

using nlohmann::json;

const std::string kWangWei = "\xE7\x8E\x8B\xE4\xBC\x9F";
const std::string kSha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const std::string kMd5 = "9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6b";

adapters::DockFile dock_file() {
  adapters::DockFile f;
  f.unique_id = "BWC-00917-20261127-000153";
  f.recorder_id = "BWC-00917";
  f.officer_id = "330102198801010011";
  f.officer_name = kWangWei;
  f.case_code = "";
  f.file_name = "20261127_113712_000153.mp4";
  f.file_type = "video";
  f.format = "mp4";
  f.length = 48213377;
  f.md5 = kMd5;
  f.start_time = "2026-11-27T11:37:12+08:00";
  f.end_time = "2026-11-27T11:39:40+08:00";
  f.collect_time = "2026-11-27T12:05:03+08:00";
  f.start_ms = 1795750632000;
  f.end_ms = 1795750780000;
  f.collect_ms = 1795752303000;
  f.important = true;
  f.gps = {{"2026-11-27T11:37:12+08:00", 1795750632000, 302740850, 1201550700},
           {"2026-11-27T11:38:12+08:00", 1795750692000, -302740851, -1201550701}};
  f.raw_json = R"({"uniqueId":"BWC-00917-20261127-000153","lat":30.274085})";
  return f;
}

// A recorder 7 s ahead and a station 1.2 s ahead of the gateway: corrected = recorder - 7000 - 1200.
adapters::RecordingCollected collected() {
  adapters::RecordingCollected e;
  e.device_id = "dock-1";
  e.station_id = "DS-2011-0042";
  e.firmware = "3.4.1";
  e.file = dock_file();
  e.sha256 = kSha;
  e.media_path = "/var/lib/checkpointd/media/" + kSha;
  e.station_clock = adapters::StationClock{1200, 40, 1795752300000};
  // Listed 8.2 s of gateway time before the recorder's collect time: 7 s beyond the station's 1.2 s.
  e.listed_ms = e.file.collect_ms - 8200;
  e.recorder_clock_tolerance_s = 5;
  e.collected_ms = 1795752400000;
  e.download_attempts = 2;
  e.resumes = 3;
  return e;
}

// Every number in `j`, at any depth, must be an integer.
void expect_no_floats(const json& j, const std::string& path = "fields") {
  if (j.is_number_float()) {
    ADD_FAILURE() << path << " is a floating-point number: " << j.dump();
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      expect_no_floats(it.value(), path + "." + it.key());
    }
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) {
      expect_no_floats(j[i], path + "[" + std::to_string(i) + "]");
    }
  }
}

TEST(NoFloatsCheckTest, CatchesANestedFloat) {
  // The walker itself must be able to fail, or the checks below would prove nothing.
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    expect_no_floats(json{{"a", {{"b", json::array({1, 2.5})}}}});
  }
  EXPECT_EQ(failures.size(), 1);
}

TEST(RecordingFactTest, EveryField) {
  const LinkRule rule;
  const auto e = collected();
  const DockFileFact made = make_recording_fact(e, rule);
  const Fact& fact = made.fact;
  EXPECT_EQ(fact.type, "recording");
  EXPECT_EQ(fact.time_ms, 1795750632000 - 8200);
  const json& f = fact.fields;
  EXPECT_EQ(f["device"], "dock-1");
  EXPECT_EQ(f["station_id"], "DS-2011-0042");
  EXPECT_EQ(f["station_firmware"], "3.4.1");
  EXPECT_EQ(f["unique_id"], "BWC-00917-20261127-000153");
  EXPECT_EQ(f["recorder_id"], "BWC-00917");
  EXPECT_EQ(f["officer_id"], "330102198801010011");
  EXPECT_EQ(f["officer_name"], kWangWei);
  EXPECT_EQ(f["case_code"], "");
  EXPECT_EQ(f["file_name"], "20261127_113712_000153.mp4");
  EXPECT_EQ(f["file_type"], "video");
  EXPECT_EQ(f["format"], "mp4");
  EXPECT_EQ(f["length"], 48213377);
  EXPECT_EQ(f["sha256"], kSha);
  EXPECT_EQ(f["md5"], kMd5);
  EXPECT_EQ(f["important"], true);
  EXPECT_EQ(f["recorder_start"], "2026-11-27T11:37:12+08:00");
  EXPECT_EQ(f["recorder_end"], "2026-11-27T11:39:40+08:00");
  EXPECT_EQ(f["collect_time"], "2026-11-27T12:05:03+08:00");
  EXPECT_EQ(f["start_ms"], 1795750632000 - 8200);
  EXPECT_EQ(f["end_ms"], 1795750780000 - 8200);
  EXPECT_EQ(f["duration_ms"], 148000);
  EXPECT_EQ(f["clock"], (json{{"station_offset_ms", 1200},
                              {"station_uncertainty_ms", 40},
                              {"station_measured_ms", 1795752300000},
                              {"recorder_offset_ms", 7000}}));
  EXPECT_EQ(f["recorder_clock_off"], true);
  ASSERT_EQ(f["gps"].size(), 2U);
  EXPECT_EQ(f["gps"][0], (json{{"t", "2026-11-27T11:37:12+08:00"},
                               {"t_ms", 1795750632000 - 8200},
                               {"lat_e7", 302740850},
                               {"lon_e7", 1201550700}}));
  EXPECT_EQ(f["gps"][1]["t_ms"], 1795750692000 - 8200);
  EXPECT_EQ(f["gps"][1]["lat_e7"], -302740851);
  EXPECT_EQ(f["gps"][1]["lon_e7"], -1201550701);
  EXPECT_EQ(f["stored"], (json{{"path", "/var/lib/checkpointd/media/" + kSha}, {"bytes", 48213377}}));
  EXPECT_EQ(f["download"], (json{{"attempts", 2}, {"resumes", 3}, {"collected_ms", 1795752400000}}));
  // The listing stays a string (exactly as persisted), so its float GPS never becomes a JSON number here.
  ASSERT_TRUE(f["listing"].is_string());
  EXPECT_EQ(f["listing"], e.file.raw_json);
  EXPECT_EQ(f["link_rule"], rule.to_json());
  EXPECT_EQ(f["time_reliable"], false);
  EXPECT_EQ(f["reasons"], json::array({"recorder_clock_corrected"}));
  EXPECT_FALSE(f.contains("links"));  // added by the store worker when it seals
  const std::vector<std::string> keys = {"device",
                                         "station_id",
                                         "station_firmware",
                                         "unique_id",
                                         "recorder_id",
                                         "officer_id",
                                         "officer_name",
                                         "case_code",
                                         "file_name",
                                         "file_type",
                                         "format",
                                         "length",
                                         "sha256",
                                         "md5",
                                         "important",
                                         "recorder_start",
                                         "recorder_end",
                                         "collect_time",
                                         "start_ms",
                                         "end_ms",
                                         "duration_ms",
                                         "clock",
                                         "recorder_clock_off",
                                         "gps",
                                         "stored",
                                         "download",
                                         "listing",
                                         "link_rule",
                                         "time_reliable",
                                         "reasons"};
  EXPECT_EQ(f.size(), keys.size()) << f.dump();
  for (const auto& k : keys) {
    EXPECT_TRUE(f.contains(k)) << k;
  }
  expect_no_floats(f);
}

TEST(RecordingFactTest, HandOffsToTheStoreWorker) {
  LinkRule rule;
  rule.margin_before_ms = 30000;
  rule.margin_after_ms = 45000;
  auto e = collected();
  std::string committed;
  e.on_committed = [&committed](const std::string& id) { committed = id; };
  const DockFileFact made = make_recording_fact(e, rule);
  const Fact& fact = made.fact;
  EXPECT_TRUE(fact.media.empty());  // recordings are never published
  ASSERT_EQ(made.effects.kept_media.size(), 1U);
  EXPECT_EQ(made.effects.kept_media[0].sha256, kSha);
  EXPECT_TRUE(made.effects.kept_media[0].important);
  ASSERT_TRUE(made.effects.link_span);
  EXPECT_EQ(made.effects.link_span->lo_ms,
            e.file.start_ms - 8200 - 30000);  // the corrected span, with margins
  EXPECT_EQ(made.effects.link_span->hi_ms, e.file.end_ms - 8200 + 45000);
  ASSERT_TRUE(made.effects.dock_update);
  EXPECT_EQ(made.effects.dock_update->device_id, "dock-1");
  EXPECT_EQ(made.effects.dock_update->unique_id, "BWC-00917-20261127-000153");
  EXPECT_EQ(made.effects.dock_update->md5, kMd5);
  EXPECT_EQ(made.effects.dock_update->sha256, kSha);
  ASSERT_TRUE(made.on_committed);
  made.on_committed("gw-1:42");
  EXPECT_EQ(committed, "gw-1:42");
  EXPECT_EQ(fact.fields["link_rule"]["margin_before_ms"], 30000);
}

TEST(RecordingFactTest, UnmeasuredStationAndCorrectRecorder) {
  auto e = collected();
  e.station_clock.reset();
  e.listed_ms = e.file.collect_ms;  // the recorder on time; S = 0 when never measured
  e.file.important = false;
  const DockFileFact made = make_recording_fact(e, LinkRule{});
  const Fact& fact = made.fact;
  const json& f = fact.fields;
  EXPECT_EQ(f["clock"], (json{{"station", "unmeasured"}, {"recorder_offset_ms", 0}}));
  EXPECT_EQ(f["recorder_clock_off"], false);
  EXPECT_EQ(f["gps"][0]["t_ms"], 1795750632000);  // uncorrected: nothing to correct by
  EXPECT_EQ(f["time_reliable"], false);
  EXPECT_EQ(f["reasons"], json::array({"station_clock_unmeasured"}));
  EXPECT_FALSE(made.effects.kept_media[0].important);
  EXPECT_EQ(f["important"], false);
  expect_no_floats(f);
}

TEST(RecordingFactTest, ReliableTimeHasNoReasons) {
  auto e = collected();
  e.listed_ms = e.file.collect_ms - 1200;  // the recorder on time with the station's 1.2 s
  const DockFileFact made = make_recording_fact(e, LinkRule{});
  const Fact& fact = made.fact;
  EXPECT_EQ(fact.fields["time_reliable"], true);
  EXPECT_EQ(fact.fields["reasons"], json::array());
  EXPECT_EQ(fact.fields["gps"][1]["t_ms"], 1795750692000 - 1200);
}

TEST(RecordingFactTest, BothReasonsInOrder) {
  auto e = collected();
  e.station_clock.reset();
  e.listed_ms = e.file.collect_ms - 7000;  // the recorder 7 s ahead; no station offset to add
  const DockFileFact made = make_recording_fact(e, LinkRule{});
  const Fact& fact = made.fact;
  EXPECT_EQ(fact.fields["reasons"], json::array({"station_clock_unmeasured", "recorder_clock_corrected"}));
  EXPECT_EQ(fact.fields["gps"][0]["t_ms"], 1795750632000 - 7000);
}

TEST(DockFaultFactTest, EveryField) {
  adapters::DockFileFault e;
  e.device_id = "dock-1";
  e.station_id = "DS-2011-0042";
  e.file = dock_file();
  e.reason = "md5_mismatch";
  e.detail = "expected " + kMd5 + ", got 00000000000000000000000000000000 (3 downloads)";
  e.attempts = 3;
  e.sha256 = kSha;
  e.time_ms = 1795752500000;
  int calls = 0;
  e.on_committed = [&calls](const std::string&) { ++calls; };
  const DockFileFact made = make_dock_fault_fact(e);
  const Fact& fact = made.fact;
  EXPECT_EQ(fact.type, "recording_fault");
  EXPECT_EQ(fact.time_ms, 1795752500000);
  const json& f = fact.fields;
  const json expected = {{"device", "dock-1"},
                         {"station_id", "DS-2011-0042"},
                         {"reason", "md5_mismatch"},
                         {"detail", e.detail},
                         {"attempts", 3},
                         {"unique_id", "BWC-00917-20261127-000153"},
                         {"file_name", "20261127_113712_000153.mp4"},
                         {"recorder_id", "BWC-00917"},
                         {"officer_id", "330102198801010011"},
                         {"officer_name", kWangWei},
                         {"md5", kMd5},
                         {"sha256", kSha},
                         {"listing", e.file.raw_json}};
  EXPECT_EQ(f, expected) << f.dump();
  expect_no_floats(f);
  EXPECT_TRUE(fact.media.empty());
  EXPECT_TRUE(made.effects.kept_media.empty());
  EXPECT_FALSE(made.effects.link_span);
  ASSERT_TRUE(made.effects.dock_update);
  EXPECT_EQ(made.effects.dock_update->device_id, "dock-1");
  EXPECT_EQ(made.effects.dock_update->unique_id, "BWC-00917-20261127-000153");
  EXPECT_EQ(made.effects.dock_update->md5, kMd5);
  EXPECT_EQ(made.effects.dock_update->sha256, "");  // a fault closes the ledger entry without a stored file
  ASSERT_TRUE(made.on_committed);
  made.on_committed("gw-1:7");
  EXPECT_EQ(calls, 1);
}

TEST(DockFaultFactTest, NoDownloadMeansEmptySha) {
  adapters::DockFileFault e;
  e.device_id = "dock-1";
  e.file = dock_file();
  e.reason = "ack_unknown";
  const DockFileFact made = make_dock_fault_fact(e);
  const Fact& fact = made.fact;
  EXPECT_EQ(fact.fields["sha256"], "");
  EXPECT_EQ(fact.fields["station_id"], "");
  EXPECT_FALSE(made.on_committed);
}

TEST(DockFaultFactTest, ARefusedEntryThatIsNotUtf8IsSealableWithItsBytes) {
  // Issue 12: a listing entry refused for text that is not UTF-8 keeps its exact bytes in the record,
  // escaped with the bytes in base64 beside them, so the fault can be sealed (JCS refuses such text).
  adapters::DockFileFault e;
  e.device_id = "dock-1";
  e.file.unique_id = "GBK";
  e.file.md5 = kMd5;
  e.file.raw_json = "{\"uniqueId\":\"GBK\",\"officerName\":\"\xCD\xF5\xFF\"}";
  e.reason = "bad_entry";
  e.detail = "refused (not_utf8): files[4].officerName: not valid UTF-8 (byte 0xCD at offset 34)";
  const DockFileFact made = make_dock_fault_fact(e);
  const Fact& fact = made.fact;
  const json& f = fact.fields;
  EXPECT_EQ(f["listing"], "{\"uniqueId\":\"GBK\",\"officerName\":\"\\xcd\\xf5\\xff\"}");
  EXPECT_EQ(f["listing_raw_b64"], base64_encode(e.file.raw_json));
  EXPECT_EQ(f["text_not_utf8"], json::array({"listing"}));
  EXPECT_NO_THROW(canonical_json(f));
  EXPECT_EQ(made.effects.dock_update->unique_id, "GBK");
}

TEST(DockFileFactTest, DockEventsMakeTheirFactsAndOtherEventsGoToTheCorrelator) {
  const auto recording = dock_file_fact(adapters::DeviceEvent{collected()}, LinkRule{});
  ASSERT_TRUE(recording);
  EXPECT_EQ(recording->fact.type, "recording");
  EXPECT_TRUE(recording->effects.link_span);
  adapters::DockFileFault fault;
  fault.device_id = "dock-1";
  fault.file = dock_file();
  fault.reason = "ack_unknown";
  const auto faulted = dock_file_fact(adapters::DeviceEvent{fault}, LinkRule{});
  ASSERT_TRUE(faulted);
  EXPECT_EQ(faulted->fact.type, "recording_fault");
  ASSERT_TRUE(faulted->effects.dock_update);
  EXPECT_EQ(faulted->effects.dock_update->sha256, "");
  EXPECT_FALSE(dock_file_fact(adapters::DeviceEvent{adapters::RadarTrack{}}, LinkRule{}));
}

TEST(LinkFactTest, EveryField) {
  const Fact fact = make_link_fact("gw-1:40", "gw-1:52", "speeding", 1795750700000,
                                   store::LinkSpan{1795750500000, 1795750900000});
  EXPECT_EQ(fact.type, "link");
  EXPECT_EQ(fact.time_ms, 1795750700000);
  EXPECT_EQ(fact.fields, (json{{"recording", "gw-1:40"},
                               {"record", "gw-1:52"},
                               {"record_type", "speeding"},
                               {"record_time_ms", 1795750700000},
                               {"span", {{"lo_ms", 1795750500000}, {"hi_ms", 1795750900000}}}}));
  expect_no_floats(fact.fields);
  EXPECT_TRUE(fact.media.empty());
}

// GA/T 832's "one panorama plus video": what a link between a speeding record and a recording says of it.
json speeding_body(std::int64_t panoramas, UnixMs time_ms) {
  return json{
      {"type", "speeding"}, {"time_ms", time_ms}, {"checks", {{"panoramas", {{"count", panoramas}}}}}};
}
json recording_body(const std::string& file_type, UnixMs start_ms, UnixMs end_ms, bool reliable) {
  return json{{"type", "recording"},
              {"file_type", file_type},
              {"start_ms", start_ms},
              {"end_ms", end_ms},
              {"time_reliable", reliable}};
}

TEST(PanoramasWithVideoTest, OnePanoramaAndAVideoThatHoldsTheRecordsTimeMeetIt) {
  const auto v = panoramas_with_video(speeding_body(1, 5000), recording_body("video", 1000, 9000, true));
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (json{{"panoramas", 1},
                      {"video", true},
                      {"covers_record_time", true},
                      {"recording_time_reliable", true},
                      {"record_checks_ok", true},
                      {"met", true}}));
  // The span's own ends count.
  EXPECT_TRUE(
      (*panoramas_with_video(speeding_body(1, 1000), recording_body("video", 1000, 9000, true)))["met"]);
  EXPECT_TRUE(
      (*panoramas_with_video(speeding_body(2, 9000), recording_body("video", 1000, 9000, true)))["met"]);
}

TEST(PanoramasWithVideoTest, EachConditionFailsItAlone) {
  const auto met = [](const json& record, const json& recording) {
    const auto v = panoramas_with_video(record, recording);
    return v && (*v)["met"] == true;
  };
  EXPECT_FALSE(met(speeding_body(0, 5000), recording_body("video", 1000, 9000, true)));  // no panorama
  EXPECT_FALSE(met(speeding_body(1, 5000), recording_body("audio", 1000, 9000, true)));  // not a video
  EXPECT_FALSE(met(speeding_body(1, 5000), recording_body("photo", 1000, 9000, true)));
  EXPECT_FALSE(met(speeding_body(1, 999), recording_body("video", 1000, 9000, true)));    // before it
  EXPECT_FALSE(met(speeding_body(1, 9001), recording_body("video", 1000, 9000, true)));   // after it
  EXPECT_FALSE(met(speeding_body(1, 5000), recording_body("video", 1000, 9000, false)));  // clock unsure
  json camera_clock_failed = speeding_body(1, 5000);  // the record's own time failed a check
  camera_clock_failed["checks"]["camera_clock"] = {{"ok", false}};
  EXPECT_FALSE(met(camera_clock_failed, recording_body("video", 1000, 9000, true)));
  json pictures_failed = speeding_body(1, 5000);  // the picture checks are what the video makes good
  pictures_failed["checks"]["pictures"] = {{"ok", false}};
  pictures_failed["checks"]["panoramas"]["ok"] = false;
  EXPECT_TRUE(met(pictures_failed, recording_body("video", 1000, 9000, true)));
  const auto v = panoramas_with_video(speeding_body(1, 9001), recording_body("video", 1000, 9000, true));
  EXPECT_EQ((*v)["covers_record_time"], false);
  EXPECT_EQ((*v)["video"], true);
}

TEST(PanoramasWithVideoTest, OnlySpeedingRecordsAndMalformedBodiesNeverMeetIt) {
  json passage = speeding_body(1, 5000);
  passage["type"] = "passage";
  EXPECT_FALSE(panoramas_with_video(passage, recording_body("video", 1000, 9000, true)));
  EXPECT_FALSE(panoramas_with_video(json(), recording_body("video", 1000, 9000, true)));
  // A speeding record without checks.panoramas (sealed before them): 0 panoramas.
  const auto old = panoramas_with_video(json{{"type", "speeding"}, {"time_ms", 5000}},
                                        recording_body("video", 1000, 9000, true));
  ASSERT_TRUE(old);
  EXPECT_EQ((*old)["panoramas"], 0);
  EXPECT_EQ((*old)["met"], false);
  // A recording body that is not one (or lacks its times) holds nothing.
  EXPECT_EQ((*panoramas_with_video(speeding_body(1, 5000), json()))["met"], false);
  json strings = recording_body("video", 1000, 9000, true);
  strings["start_ms"] = "1000";
  EXPECT_EQ((*panoramas_with_video(speeding_body(1, 5000), strings))["covers_record_time"], false);
}

TEST(LinkFactTest, ASpeedingLinkCarriesPanoramasWithVideo) {
  const json with = {{"panoramas", 1}, {"met", true}};
  const Fact fact = make_link_fact("gw-1:40", "gw-1:52", "speeding", 1795750700000,
                                   store::LinkSpan{1795750500000, 1795750900000}, with);
  EXPECT_EQ(fact.fields["panoramas_with_video"], with);
  expect_no_floats(fact.fields);
}

TEST(LinkRuleTest, LinkableTypes) {
  const LinkRule rule;
  for (const char* t : {"speeding", "passage", "speed_measurement", "plate_read"}) {
    EXPECT_TRUE(rule.linkable(t)) << t;
  }
  for (const char* t : {"recording", "recording_fault", "link", "device_status", ""}) {
    EXPECT_FALSE(rule.linkable(t)) << t;
  }
  LinkRule only;
  only.types = {"speeding"};
  EXPECT_TRUE(only.linkable("speeding"));
  EXPECT_FALSE(only.linkable("passage"));
}

TEST(LinkRuleTest, SpanIncludesMarginsAtBothEnds) {
  LinkRule rule;
  rule.margin_before_ms = 1000;
  rule.margin_after_ms = 2500;
  const store::LinkSpan s = rule.span(10000, 20000);
  EXPECT_EQ(s.lo_ms, 9000);
  EXPECT_EQ(s.hi_ms, 22500);
  EXPECT_TRUE(s.contains(9000));
  EXPECT_TRUE(s.contains(22500));
  EXPECT_FALSE(s.contains(8999));
  EXPECT_FALSE(s.contains(22501));
  const store::LinkSpan d = LinkRule{}.span(10000, 20000);
  EXPECT_EQ(d.lo_ms, 10000 - 60000);
  EXPECT_EQ(d.hi_ms, 20000 + 60000);
}

TEST(LinkRuleTest, ToJson) {
  LinkRule rule;
  rule.types = {"speeding", "passage"};
  rule.margin_before_ms = 5000;
  rule.margin_after_ms = 7000;
  EXPECT_EQ(
      rule.to_json(),
      (json{{"types", {"speeding", "passage"}}, {"margin_before_ms", 5000}, {"margin_after_ms", 7000}}));
  expect_no_floats(LinkRule{}.to_json());
}

}  // namespace
}  // namespace cpd::pipeline
