// Unit tests of the docking station protocol core: the spec's examples parse into the right values, every
// rejection names its field, bounds hold, and damaged input (truncated, mutated, deeply nested) never
// crashes.
#include "adapters/recorder/dock_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "daemon/core/encoding.h"
#include "tests/support/dock_messages.h"

namespace cpd::adapters {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// specs/recorder-dock.md, "Station status" and "Listing new files", verbatim (tests/support/dock_messages).
const char* const kStatus = cpd::test::kDockSpecStatus;
const std::string kListing = cpd::test::dock_spec_listing();

// 王伟 as UTF-8 bytes, written out so the check does not depend on the source file's encoding.
const std::string kWangWei = "\xE7\x8E\x8B\xE4\xBC\x9F";

json sample_entry() {
  return json::parse(kListing)["files"][0];
}

std::string listing_of(const std::vector<json>& entries, const std::string& next = "c-1") {
  return json{{"files", entries}, {"next", next}}.dump();
}

// One entry in a listing: the file, or the entry's refusal as the error (the listing itself must parse).
DockParsed<DockFile> parse_with(const json& entry) {
  const auto listing = parse_dock_listing(listing_of({entry}));
  DockParsed<DockFile> out;
  if (!listing) {
    out.error = {"listing: " + listing.error.reason, listing.error.detail};
  } else if (!listing.value->files.empty()) {
    out.value = listing.value->files[0];
  } else {
    out.error = listing.value->refused.at(0).error;
  }
  return out;
}

TEST(DockStatusTest, SpecExample) {
  const auto r = parse_dock_status(kStatus);
  ASSERT_TRUE(r) << r.error.detail;
  const DockStatus& s = *r.value;
  EXPECT_EQ(s.station_id, "DS-2011-0042");
  EXPECT_EQ(s.firmware, "3.4.1");
  EXPECT_EQ(s.time, "2026-11-27T11:38:54+08:00");
  EXPECT_EQ(s.time_ms, 1795750734000);
  EXPECT_FALSE(s.time_has_fraction);
  EXPECT_EQ(s.slots, 8);
  EXPECT_EQ(s.docked, (std::vector<std::string>{"BWC-00917", "BWC-00921"}));
  EXPECT_EQ(s.free_bytes, 512000000000);
}

TEST(DockStatusTest, FractionAndZulu) {
  const auto r = parse_dock_status(R"({"stationId":"S","firmware":"1","time":"2026-11-27T03:38:54.25Z"})");
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_EQ(r.value->time_ms, 1795750734250);
  EXPECT_TRUE(r.value->time_has_fraction);
  EXPECT_TRUE(r.value->docked.empty());  // informational members may be left out
}

TEST(DockStatusTest, Rejections) {
  struct Case {
    std::string body;
    std::string reason;
    std::string detail_prefix;
  };
  const std::vector<Case> cases = {
      {"", "json", "not valid JSON"},
      {"[1,2]", "schema", "status: expected an object"},
      {R"({"firmware":"1","time":"2026-11-27T11:38:54+08:00"})", "schema", "stationId: missing"},
      {R"({"stationId":7,"firmware":"1","time":"2026-11-27T11:38:54+08:00"})", "schema",
       "stationId: expected a string"},
      {R"({"stationId":"S","firmware":"1","time":"2026-11-27T11:38:54"})", "schema",
       "time: expected an ISO 8601 time with offset"},
      {R"({"stationId":"S","firmware":"1","time":"2026-11-27T11:38:54Z","slots":"8"})", "schema",
       "slots: expected an integer"},
      {R"({"stationId":"S","firmware":"1","time":"2026-11-27T11:38:54Z","docked":["a",3]})", "schema",
       "docked[1]: expected a string"},
      {R"({"stationId":"S","firmware":"1","time":"2026-11-27T11:38:54Z","freeBytes":-1})", "schema",
       "freeBytes: must be at least 0"},
  };
  for (const auto& c : cases) {
    const auto r = parse_dock_status(c.body);
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error.reason, c.reason) << c.body;
    EXPECT_THAT(r.error.detail, StartsWith(c.detail_prefix)) << c.body;
  }
}

TEST(DockListingTest, SpecExample) {
  const auto r = parse_dock_listing(kListing);
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_EQ(r.value->next, "<cursor>");
  ASSERT_EQ(r.value->files.size(), 1U);
  const DockFile& f = r.value->files[0];
  EXPECT_EQ(f.unique_id, "BWC-00917-20261127-000153");
  EXPECT_EQ(f.recorder_id, "BWC-00917");
  EXPECT_EQ(f.officer_id, "330102198801010011");
  EXPECT_EQ(f.officer_name, kWangWei);
  EXPECT_EQ(f.case_code, "");
  EXPECT_EQ(f.file_name, "20261127_113712_000153.mp4");
  EXPECT_EQ(f.file_type, "video");
  EXPECT_EQ(f.format, "mp4");
  EXPECT_EQ(f.length, 48213377);
  EXPECT_EQ(f.md5, "9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6b");
  EXPECT_EQ(f.start_time, "2026-11-27T11:37:12+08:00");
  EXPECT_EQ(f.end_time, "2026-11-27T11:39:40+08:00");
  EXPECT_EQ(f.collect_time, "2026-11-27T12:05:03+08:00");
  EXPECT_EQ(f.start_ms, 1795750632000);
  EXPECT_EQ(f.end_ms, 1795750780000);
  EXPECT_EQ(f.collect_ms, 1795752303000);
  EXPECT_TRUE(f.important);
  ASSERT_EQ(f.gps.size(), 1U);
  EXPECT_EQ(f.gps[0].t, "2026-11-27T11:37:12+08:00");
  EXPECT_EQ(f.gps[0].t_ms, 1795750632000);
  EXPECT_EQ(f.gps[0].lat_e7, 302740850);
  EXPECT_EQ(f.gps[0].lon_e7, 1201550700);
  // raw_json: compact, the same entry, UTF-8 kept as is (not \u-escaped).
  EXPECT_EQ(json::parse(f.raw_json), sample_entry());
  EXPECT_THAT(f.raw_json, HasSubstr("\"officerName\":\"" + kWangWei + "\""));
  EXPECT_EQ(f.raw_json.find('\n'), std::string::npos);
  EXPECT_EQ(f.raw_json.find(": "), std::string::npos);
}

TEST(DockListingTest, EmptyListingAndOptionalGps) {
  const auto empty = parse_dock_listing(R"({"files":[],"next":"c-9"})");
  ASSERT_TRUE(empty) << empty.error.detail;
  EXPECT_TRUE(empty.value->files.empty());
  EXPECT_EQ(empty.value->next, "c-9");

  json e = sample_entry();
  e.erase("gps");
  const auto r = parse_with(e);
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_TRUE(r.value->gps.empty());
}

TEST(DockListingTest, Md5IsStoredLowerCase) {
  json e = sample_entry();
  e["md5"] = "9B2D0A0C3F1E4E1A8F6B1C2D3E4F5A6B";
  const auto r = parse_with(e);
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_EQ(r.value->md5, "9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6b");
}

TEST(DockListingTest, UnknownMembersAreIgnored) {
  json e = sample_entry();
  e["thumbnail"] = {{"w", 160}, {"h", 90}};
  e["gps"][0]["alt"] = 12.5;
  const std::string body = json{{"files", {e}}, {"next", "n"}, {"total", 1}, {"station", "x"}}.dump();
  const auto r = parse_dock_listing(body);
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_EQ(r.value->files[0].unique_id, "BWC-00917-20261127-000153");
  EXPECT_THAT(r.value->files[0].raw_json, HasSubstr("thumbnail"));  // kept for traceability
}

TEST(DockListingTest, GpsBoundsAndRounding) {
  json e = sample_entry();
  e["gps"] = json::array({{{"t", "2026-11-27T03:37:12Z"}, {"lat", -90}, {"lon", 180}},
                          {{"t", "2026-11-27T03:37:13Z"}, {"lat", 90.0}, {"lon", -180.0}},
                          {{"t", "2026-11-27T03:37:14Z"}, {"lat", -0.00000005}, {"lon", 0.00000015}}});
  const auto r = parse_with(e);
  ASSERT_TRUE(r) << r.error.detail;
  const auto& g = r.value->gps;
  ASSERT_EQ(g.size(), 3U);
  EXPECT_EQ(g[0].lat_e7, -900000000);
  EXPECT_EQ(g[0].lon_e7, 1800000000);
  EXPECT_EQ(g[1].lat_e7, 900000000);
  EXPECT_EQ(g[1].lon_e7, -1800000000);
  EXPECT_EQ(g[2].lat_e7, -1);  // llround: half away from zero
  EXPECT_EQ(g[2].lon_e7, 2);
  EXPECT_EQ(g[2].t_ms, 1795750634000);
}

TEST(DockListingTest, ABadEntryIsRefusedAloneNamingTheEntryAndField) {
  std::vector<json> entries(5, sample_entry());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    entries[i]["uniqueId"] = "F-" + std::to_string(i);
  }
  entries[3]["md5"] = "xyz";
  const std::string body = listing_of(entries);
  const auto r = parse_dock_listing(body);
  ASSERT_TRUE(r) << r.error.detail;
  ASSERT_EQ(r.value->files.size(), 4U);
  EXPECT_EQ(r.value->files[3].unique_id, "F-4");  // listed after the bad one, still read
  EXPECT_EQ(r.value->next, "c-1");
  ASSERT_EQ(r.value->refused.size(), 1U);
  const DockRefusedEntry& bad = r.value->refused[0];
  EXPECT_EQ(bad.index, 3U);
  EXPECT_EQ(bad.error.reason, "schema");
  EXPECT_EQ(bad.error.detail, "files[3].md5: expected 32 hex digits, got \"xyz\"");
  EXPECT_EQ(json::parse(bad.raw), entries[3]);  // the entry's bytes as sent
  // The md5 is not one: the ledger key is made from the bytes, and can never be a station's key.
  EXPECT_EQ(bad.unique_id, "refused-" + sha256_hex(bad.raw).substr(0, 32));
  EXPECT_EQ(bad.md5, "");
}

TEST(DockListingTest, TheIssuesEntriesAreRefusedAlone) {
  // Issue 12, defect 2: a start time 0000-00-00, a uniqueId with ../ or with a NUL each blocked every file
  // listed with or after it. Now each is refused alone, naming the field; the file after it is read.
  struct Case {
    std::string key;
    json value;
    std::string detail_prefix;
    bool keyed_by_id;  // the ledger key is the listed (uniqueId, md5)
  };
  const std::vector<Case> cases = {
      {"startTime", json("0000-00-00"), "files[0].startTime: expected an ISO 8601 time with offset", true},
      {"uniqueId", json("../../etc/passwd"), "files[0].uniqueId: expected 1 to 128", false},
      {"uniqueId", json(std::string("BWC\0x", 5)), "files[0].uniqueId: expected 1 to 128", false},
  };
  for (const auto& c : cases) {
    json bad = sample_entry();
    bad[c.key] = c.value;
    json good = sample_entry();
    good["uniqueId"] = "AFTER";
    const auto r = parse_dock_listing(listing_of({bad, good}));
    ASSERT_TRUE(r) << c.key << ": " << r.error.detail;
    ASSERT_EQ(r.value->files.size(), 1U) << c.key;
    EXPECT_EQ(r.value->files[0].unique_id, "AFTER");
    ASSERT_EQ(r.value->refused.size(), 1U);
    EXPECT_EQ(r.value->refused[0].error.reason, "schema");
    EXPECT_THAT(r.value->refused[0].error.detail, StartsWith(c.detail_prefix)) << c.key;
    if (c.keyed_by_id) {
      EXPECT_EQ(r.value->refused[0].unique_id, "BWC-00917-20261127-000153");
      EXPECT_EQ(r.value->refused[0].md5, "9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6b");
    } else {
      EXPECT_THAT(r.value->refused[0].unique_id, StartsWith("refused-"));
    }
  }
}

TEST(DockListingTest, TextThatIsNotUtf8IsRefusedPerEntryNamingTheField) {
  // GBK in one officer's name: that entry is refused (not_utf8, the field and byte named), its exact bytes
  // kept; the listing and the other entries are read as usual.
  json bad = sample_entry();
  bad["officerName"] = "@@NAME@@";
  json good = sample_entry();
  good["uniqueId"] = "AFTER";
  std::string body = listing_of({bad, good});
  const std::string gbk = "\xCD\xF5\xCE\xB0";  // 王伟 in GBK
  body.replace(body.find("@@NAME@@"), 8, gbk);
  const auto r = parse_dock_listing(body);
  ASSERT_TRUE(r) << r.error.detail;
  ASSERT_EQ(r.value->files.size(), 1U);
  EXPECT_EQ(r.value->files[0].unique_id, "AFTER");
  ASSERT_EQ(r.value->refused.size(), 1U);
  const DockRefusedEntry& e = r.value->refused[0];
  EXPECT_EQ(e.error.reason, "not_utf8");
  EXPECT_THAT(e.error.detail, StartsWith("files[0].officerName: not valid UTF-8 (byte 0xCD at offset "));
  EXPECT_NE(e.raw.find(gbk), std::string::npos);
  EXPECT_EQ(e.unique_id, "BWC-00917-20261127-000153");  // read from members that are UTF-8

  // A member name that is not UTF-8, and an entry that is a bare string.
  std::string body2 = listing_of({json{{"@@K@@", 1}}, json("@@S@@")});
  body2.replace(body2.find("@@K@@"), 5, "\xFF");
  body2.replace(body2.find("@@S@@"), 5, "\xC3");
  const auto r2 = parse_dock_listing(body2);
  ASSERT_TRUE(r2) << r2.error.detail;
  ASSERT_EQ(r2.value->refused.size(), 2U);
  EXPECT_THAT(r2.value->refused[0].error.detail, StartsWith("files[0].? (the member name): not valid UTF-8"));
  EXPECT_THAT(r2.value->refused[1].error.detail, StartsWith("files[1]: not valid UTF-8 (byte 0xC3"));
}

TEST(DockListingTest, ACursorThatIsNotUtf8IsKeptAsBytes) {
  std::string body = listing_of({sample_entry()}, "@@C@@");
  body.replace(body.find("@@C@@"), 5, "c\xFF\\u00e9-\xFE");
  const auto r = parse_dock_listing(body);
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_EQ(r.value->next, "c\xFF\xC3\xA9-\xFE");  // escapes decoded, other bytes as sent
  EXPECT_EQ(url_encode_query(r.value->next), "c%FF%C3%A9-%FE");
}

TEST(DockListingTest, MembersNamedTwiceAreRefused) {
  // nlohmann keeps the last of two members silently: a station could list one md5 and mean another.
  const std::string entry = sample_entry().dump();
  const std::string twice =
      entry.substr(0, entry.size() - 1) + R"(,"md5":"00000000000000000000000000000000"})";
  const auto r = parse_dock_listing(R"({"files":[)" + twice + "," + entry + R"(],"next":"n"})");
  ASSERT_TRUE(r) << r.error.detail;
  ASSERT_EQ(r.value->files.size(), 1U);
  ASSERT_EQ(r.value->refused.size(), 1U);
  EXPECT_EQ(r.value->refused[0].error.reason, "duplicate_key");
  EXPECT_THAT(r.value->refused[0].error.detail, StartsWith("files[0].md5: member named twice"));

  // Deeper inside an entry, and in the envelope (the whole listing), and in a ledger entry.
  json gps_twice = sample_entry();
  std::string g = gps_twice.dump();
  g.replace(g.find(R"("lat":)"), 6, R"("lat":1,"lat":)");
  const auto r2 = parse_dock_listing(R"({"files":[)" + g + R"(],"next":"n"})");
  ASSERT_TRUE(r2) << r2.error.detail;
  ASSERT_EQ(r2.value->refused.size(), 1U);
  EXPECT_THAT(r2.value->refused[0].error.detail, StartsWith("files[0].gps[0].lat: member named twice"));
  const auto top = parse_dock_listing(R"({"files":[],"next":"a","next":"b"})");
  ASSERT_FALSE(top);
  EXPECT_EQ(top.error.reason, "duplicate_key");
  EXPECT_THAT(top.error.detail, StartsWith("next: member named twice"));
  const auto ledger = parse_dock_file(twice);
  ASSERT_FALSE(ledger);
  EXPECT_EQ(ledger.error.reason, "duplicate_key");
  EXPECT_THAT(ledger.error.detail, StartsWith("md5: member named twice"));
  const auto status =
      parse_dock_status(R"({"stationId":"S","stationId":"T","firmware":"1","time":"2026-11-27T11:38:54Z"})");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error.reason, "duplicate_key");
  EXPECT_THAT(status.error.detail, StartsWith("stationId: member named twice"));
}

TEST(DockListingTest, ADeepEntryIsRefusedAlone) {
  json deep = sample_entry();
  std::string d = deep.dump();
  d.insert(d.size() - 1, R"(,"x":)" + std::string(100, '[') + std::string(100, ']'));
  const auto r = parse_dock_listing(R"({"files":[)" + d + "," + sample_entry().dump() + R"(],"next":"n"})");
  ASSERT_TRUE(r) << r.error.detail;
  ASSERT_EQ(r.value->files.size(), 1U);
  ASSERT_EQ(r.value->refused.size(), 1U);
  EXPECT_EQ(r.value->refused[0].error.reason, "bounds");
  EXPECT_THAT(r.value->refused[0].error.detail, HasSubstr("nested deeper than"));
}

TEST(DockListingTest, RefusedEntriesReadBackFromTheLedgerTheSameWay) {
  // A refused entry is persisted with its bytes; reading them back (a restart) refuses it again.
  std::string body = listing_of({sample_entry()});
  body.replace(body.find(kWangWei), kWangWei.size(), "\xCD\xF5");
  const auto r = parse_dock_listing(body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r.value->refused.size(), 1U);
  const auto again = parse_dock_file(r.value->refused[0].raw);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error.reason, "not_utf8");
  EXPECT_THAT(again.error.detail, StartsWith("officerName: not valid UTF-8"));
}

// One bad entry member: the mutation, the expected reason and the start of the detail.
struct Mutation {
  std::string key;
  std::optional<json> value;  // nullopt: the member is removed
  std::string reason;
  std::string detail_prefix;
};

TEST(DockListingTest, EveryEntryRejection) {
  const std::vector<Mutation> cases = {
      {"uniqueId", json(""), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json("."), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json(".."), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json("a/b"), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json("a b"), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json("a%2Fb"), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json(kWangWei), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json(std::string(129, 'a')), "schema", "files[0].uniqueId: expected 1 to 128"},
      {"uniqueId", json(123), "schema", "files[0].uniqueId: expected a string, got a number"},
      {"uniqueId", std::nullopt, "schema", "files[0].uniqueId: missing"},
      {"deviceId", json(nullptr), "schema", "files[0].deviceId: expected a string, got null"},
      {"deviceId", std::nullopt, "schema", "files[0].deviceId: missing"},
      {"officerId", json::array(), "schema", "files[0].officerId: expected a string, got an array"},
      {"officerName", json::object(), "schema", "files[0].officerName: expected a string, got an object"},
      {"caseCode", std::nullopt, "schema", "files[0].caseCode: missing"},
      {"fileName", json(true), "schema", "files[0].fileName: expected a string, got a boolean"},
      {"fileType", json("document"), "schema",
       "files[0].fileType: expected one of video, audio, photo, got \"document\""},
      {"fileType", json("Video"), "schema", "files[0].fileType: expected one of"},
      {"format", json("avi"), "schema", "files[0].format: expected one of mp4, wav, jpg, got \"avi\""},
      {"length", json(-1), "schema", "files[0].length: must be at least 0, got -1"},
      {"length", json(1.5), "schema", "files[0].length: expected an integer, got a fractional number"},
      {"length", json("48213377"), "schema", "files[0].length: expected an integer, got \"48213377\""},
      {"length", json(kDockMaxFileBytes + 1), "bounds", "files[0].length: must be at most"},
      {"length", json(std::uint64_t{18446744073709551615U}), "bounds", "files[0].length: integer"},
      {"length", std::nullopt, "schema", "files[0].length: missing"},
      {"md5", json("9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6"), "schema", "files[0].md5: expected 32 hex digits"},
      {"md5", json("9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6b0"), "schema", "files[0].md5: expected 32 hex digits"},
      {"md5", json(std::string(32, 'g')), "schema", "files[0].md5: expected 32 hex digits"},
      {"md5", json(" 9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6"), "schema", "files[0].md5: expected 32 hex digits"},
      {"startTime", json("2026-11-27T11:37:12"), "schema",
       "files[0].startTime: expected an ISO 8601 time with offset, got \"2026-11-27T11:37:12\""},
      {"endTime", json("2026-11-27 11:39:40+08:00"), "schema", "files[0].endTime: expected an ISO 8601"},
      {"collectTime", json(1795752303000), "schema", "files[0].collectTime: expected a string"},
      {"collectTime", json("2026-02-30T12:05:03+08:00"), "schema",
       "files[0].collectTime: expected an ISO 8601"},
      {"important", json("true"), "schema", "files[0].important: expected true or false"},
      {"important", json(1), "schema", "files[0].important: expected true or false"},
      {"important", std::nullopt, "schema", "files[0].important: missing"},
      {"gps", json("30.27,120.15"), "schema", "files[0].gps: expected an array"},
      {"gps", json::array({1}), "schema", "files[0].gps[0]: expected an object, got a number"},
      {"gps", json::array({{{"t", "2026-11-27T03:37:12Z"}, {"lat", 90.0000001}, {"lon", 0}}}), "schema",
       "files[0].gps[0].lat: must be within [-90, 90]"},
      {"gps", json::array({{{"t", "2026-11-27T03:37:12Z"}, {"lat", 0}, {"lon", -180.5}}}), "schema",
       "files[0].gps[0].lon: must be within [-180, 180]"},
      {"gps", json::array({{{"t", "2026-11-27T03:37:12Z"}, {"lat", "30.2"}, {"lon", 0}}}), "schema",
       "files[0].gps[0].lat: expected a number"},
      {"gps", json::array({{{"t", "2026-11-27T03:37:12Z"}, {"lon", 0}}}), "schema",
       "files[0].gps[0].lat: missing"},
      {"gps", json::array({{{"t", "yesterday"}, {"lat", 0}, {"lon", 0}}}), "schema",
       "files[0].gps[0].t: expected an ISO 8601"},
      {"officerName", json(std::string(kDockMaxText + 1, 'x')), "bounds",
       "files[0].officerName: string of 1025 bytes"},
  };
  for (const auto& c : cases) {
    json e = sample_entry();
    if (c.value) {
      e[c.key] = *c.value;
    } else {
      e.erase(c.key);
    }
    const auto r = parse_with(e);
    ASSERT_FALSE(r) << c.key << " = " << (c.value ? c.value->dump() : "(removed)");
    EXPECT_EQ(r.error.reason, c.reason) << r.error.detail;
    EXPECT_THAT(r.error.detail, StartsWith(c.detail_prefix)) << c.key;
    EXPECT_FALSE(r.value.has_value());
  }
}

TEST(DockListingTest, EntryThatIsNotAnObject) {
  const auto r = parse_dock_listing(R"({"files":["x"],"next":"n"})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r.value->refused.size(), 1U);
  EXPECT_EQ(r.value->refused[0].error.detail, "files[0]: expected an object, got \"x\"");
}

TEST(DockListingTest, TopLevelRejections) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"null", "listing: expected an object, got null"},
      {R"({"next":"n"})", "files: missing"},
      {R"({"files":[]})", "next: missing"},
      {R"({"files":{},"next":"n"})", "files: expected an array, got an object"},
      {R"({"files":[],"next":5})", "next: expected a string, got a number"},
  };
  for (const auto& [body, detail] : cases) {
    const auto r = parse_dock_listing(body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error.reason, "schema") << body;
    EXPECT_EQ(r.error.detail, detail) << body;
  }
}

TEST(DockListingTest, FileCountBound) {
  std::vector<json> entries(kDockMaxFiles, sample_entry());
  const auto full = parse_dock_listing(listing_of(entries));
  ASSERT_TRUE(full) << full.error.detail;
  EXPECT_EQ(full.value->files.size(), kDockMaxFiles);

  entries.push_back(sample_entry());  // 501
  const auto over = parse_dock_listing(listing_of(entries));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error.reason, "bounds");
  EXPECT_EQ(over.error.detail, "files: 501 entries exceed the limit of 500");
}

TEST(DockListingTest, StringBounds) {
  json e = sample_entry();
  e["fileName"] = std::string(kDockMaxText, 'f');  // exactly at the bound: fine
  ASSERT_TRUE(parse_with(e));
  const auto long_cursor = parse_dock_listing(listing_of({}, std::string(kDockMaxText + 1, 'c')));
  ASSERT_FALSE(long_cursor);
  EXPECT_EQ(long_cursor.error.reason, "bounds");
  EXPECT_THAT(long_cursor.error.detail, StartsWith("next: string of 1025 bytes"));
}

TEST(DockListingTest, HugeBodyIsRefusedBeforeParsing) {
  std::string body = R"({"files":[],"next":")" + std::string(kDockMaxJsonBytes, 'x') + "\"}";
  const auto r = parse_dock_listing(body);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error.reason, "bounds");
  EXPECT_THAT(r.error.detail, HasSubstr("exceeds"));
}

TEST(DockListingTest, DeepNestingIsRefusedWithoutRecursion) {
  // An unknown member nested 100000 deep would otherwise reach the recursive dump() of raw_json.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string body = R"({"files":[],"next":"n","x":)" + deep + "}";
  const auto r = parse_dock_listing(body);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error.reason, "bounds");
  EXPECT_THAT(r.error.detail, HasSubstr("nested deeper"));
}

TEST(DockListingTest, InvalidUtf8IsRefusedWithTheEntry) {
  std::string body = kListing;
  body.replace(body.find(kWangWei), 3, "\xE7\x8E");  // a cut sequence
  const auto r = parse_dock_listing(body);
  ASSERT_TRUE(r) << r.error.detail;
  EXPECT_TRUE(r.value->files.empty());
  ASSERT_EQ(r.value->refused.size(), 1U);
  EXPECT_EQ(r.value->refused[0].error.reason, "not_utf8");
  EXPECT_THAT(r.value->refused[0].error.detail,
              StartsWith("files[0].officerName: not valid UTF-8 (byte 0xE7"));
}

TEST(DockListingTest, EveryTruncationFailsCleanly) {
  const std::string body = kListing;
  for (std::size_t n = 0; n < body.size(); ++n) {
    const auto r = parse_dock_listing(std::string_view(body).substr(0, n));
    ASSERT_FALSE(r) << "prefix of " << n << " bytes";
    EXPECT_EQ(r.error.reason, "json") << n;
    EXPECT_FALSE(r.error.detail.empty());
  }
  EXPECT_TRUE(parse_dock_listing(body));
}

TEST(DockListingTest, ByteMutationsNeverCrash) {
  // Every position overwritten by bytes that break structure, strings, numbers and UTF-8 in turn: each
  // result is either a listing or an error with a reason, never a crash or an exception.
  const std::string body = kListing;
  const char replacements[] = {'"', '{', ']', ',', '\\', '\0', '9', '-', 'e', '\xC3', '\xFF', ' '};
  int accepted = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    for (const char c : replacements) {
      std::string mutated = body;
      mutated[i] = c;
      const auto r = parse_dock_listing(mutated);
      if (r) {
        ++accepted;
        EXPECT_EQ(r.value->files.size() + r.value->refused.size(), 1U);
        for (const auto& refused : r.value->refused) {
          EXPECT_FALSE(refused.error.reason.empty());
          EXPECT_THAT(refused.error.detail, StartsWith("files[0]"));
        }
      } else {
        EXPECT_FALSE(r.error.reason.empty());
        EXPECT_FALSE(r.error.detail.empty());
      }
    }
  }
  EXPECT_GT(accepted, 0);  // e.g. digits inside strings: some mutations are still valid listings
}

TEST(DockFileTest, RawJsonRoundTrips) {
  const auto listing = parse_dock_listing(kListing);
  ASSERT_TRUE(listing);
  const DockFile& original = listing.value->files[0];
  const auto again = parse_dock_file(original.raw_json);
  ASSERT_TRUE(again) << again.error.detail;
  EXPECT_EQ(again.value->unique_id, original.unique_id);
  EXPECT_EQ(again.value->officer_name, kWangWei);
  EXPECT_EQ(again.value->md5, original.md5);
  EXPECT_EQ(again.value->start_ms, original.start_ms);
  EXPECT_EQ(again.value->gps[0].lon_e7, original.gps[0].lon_e7);
  EXPECT_EQ(again.value->raw_json, original.raw_json);
}

TEST(DockFileTest, ErrorsHaveNoListingPrefix) {
  json e = sample_entry();
  e["md5"] = "xyz";
  const auto r = parse_dock_file(e.dump());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error.detail, "md5: expected 32 hex digits, got \"xyz\"");
  const auto not_object = parse_dock_file("[]");
  ASSERT_FALSE(not_object);
  EXPECT_EQ(not_object.error.detail, "entry: expected an object, got an array");
  EXPECT_EQ(parse_dock_file("{").error.reason, "json");
}

TEST(DockErrorTextTest, ReadsTheErrorMember) {
  EXPECT_EQ(dock_error_text(R"({"error":"unauthorized"})"), "unauthorized");
  EXPECT_EQ(dock_error_text(R"({"error":"bad cursor"})"), "bad cursor");
  EXPECT_EQ(dock_error_text(R"({"error":"checksum mismatch","x":1})"), "checksum mismatch");
  EXPECT_EQ(dock_error_text(R"({"error":5})"), "");
  EXPECT_EQ(dock_error_text(R"({"acked":true})"), "");
  EXPECT_EQ(dock_error_text("<html>401</html>"), "");
  EXPECT_EQ(dock_error_text(""), "");
}

TEST(DockTargetsTest, SpecPaths) {
  EXPECT_EQ(dock_status_target(""), "/api/v1/status");
  EXPECT_EQ(dock_status_target("/dock"), "/dock/api/v1/status");
  EXPECT_EQ(dock_files_target("", "", 50), "/api/v1/files?limit=50");
  EXPECT_EQ(dock_files_target("/dock", "c-17", 100), "/dock/api/v1/files?after=c-17&limit=100");
  EXPECT_EQ(dock_files_target("", "a/b+c=d&e f~", 500),
            "/api/v1/files?after=a%2Fb%2Bc%3Dd%26e%20f~&limit=500");
  EXPECT_EQ(dock_content_target("", "BWC-00917-20261127-000153"),
            "/api/v1/files/BWC-00917-20261127-000153/content");
  EXPECT_EQ(dock_ack_target("/p", "BWC-00917-20261127-000153"),
            "/p/api/v1/files/BWC-00917-20261127-000153/ack");
}

TEST(DockTargetsTest, IdsAreEncodedDefensively) {
  EXPECT_EQ(dock_content_target("", "../x"), "/api/v1/files/..%2Fx/content");
  EXPECT_EQ(dock_content_target("", ".."), "/api/v1/files/%2E%2E/content");
  EXPECT_EQ(dock_ack_target("", "."), "/api/v1/files/%2E/ack");
  EXPECT_EQ(dock_ack_target("", "a?b#c"), "/api/v1/files/a%3Fb%23c/ack");
}

TEST(DockTargetsTest, UrlEncodeQuery) {
  EXPECT_EQ(url_encode_query("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(url_encode_query(""), "");
  EXPECT_EQ(url_encode_query(" !*'();:@&=+$,/?#[]%"),
            "%20%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C%2F%3F%23%5B%5D%25");
  EXPECT_EQ(url_encode_query(kWangWei), "%E7%8E%8B%E4%BC%9F");
  EXPECT_EQ(url_encode_query(std::string("a\0b", 3)), "a%00b");
}

TEST(DockTargetsTest, AckBody) {
  const std::string sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  EXPECT_EQ(dock_ack_body(sha), "{\"sha256\":\"" + sha + "\"}");
}

TEST(DockContentRangeTest, ReadsTheThreeNumbers) {
  const auto r = parse_content_range("bytes 100-1999/2000");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->from, 100);
  EXPECT_EQ(r->to, 1999);
  EXPECT_EQ(r->total, 2000);
  const auto big = parse_content_range("bytes 0-68719476735/68719476736");  // 64 GiB
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->total, std::int64_t{68719476736});
}

TEST(DockContentRangeTest, RefusesAnythingElse) {
  for (const char* bad :
       {"", "bytes", "bytes ", "items 0-1/2", "bytes */2000", "bytes 0-1/*", "bytes 0-1", "bytes -1/2",
        "bytes 0-/2", "bytes 0-1/2 ", "bytes 0-1/2x", "Bytes 0-1/2", "bytes 1234567890123456789-1/2"}) {
    EXPECT_FALSE(parse_content_range(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace cpd::adapters
