#include "tests/support/dock_messages.h"

namespace cpd::test {

const char* const kDockSpecStatus =
    R"({"stationId":"DS-2011-0042","firmware":"3.4.1","time":"2026-11-27T11:38:54+08:00",
 "slots":8,"docked":["BWC-00917","BWC-00921"],"freeBytes":512000000000})";

const char* const kDockSpecEntry = R"({
   "uniqueId":"BWC-00917-20261127-000153",
   "deviceId":"BWC-00917",
   "officerId":"330102198801010011",
   "officerName":"王伟",
   "caseCode":"",
   "fileName":"20261127_113712_000153.mp4",
   "fileType":"video",
   "format":"mp4",
   "length":48213377,
   "md5":"9b2d0a0c3f1e4e1a8f6b1c2d3e4f5a6b",
   "startTime":"2026-11-27T11:37:12+08:00",
   "endTime":"2026-11-27T11:39:40+08:00",
   "collectTime":"2026-11-27T12:05:03+08:00",
   "important":true,
   "gps":[{"t":"2026-11-27T11:37:12+08:00","lat":30.274085,"lon":120.155070}]
 })";

std::string dock_spec_listing() {
  return std::string(R"({"files":[)") + kDockSpecEntry + "],\n \"next\":\"<cursor>\"}";
}

nlohmann::ordered_json dock_entry_json(const DockEntry& e) {
  nlohmann::ordered_json gps = nlohmann::ordered_json::array();
  for (const DockGpsFix& fix : e.gps) {
    gps.push_back({{"t", fix.time}, {"lat", fix.lat}, {"lon", fix.lon}});
  }
  return {{"uniqueId", e.unique_id},
          {"deviceId", e.device_id},
          {"officerId", e.officer_id},
          {"officerName", e.officer_name},
          {"caseCode", e.case_code},
          {"fileName", e.file_name},
          {"fileType", e.file_type},
          {"format", e.format},
          {"length", e.length},
          {"md5", e.md5},
          {"startTime", e.start_time},
          {"endTime", e.end_time},
          {"collectTime", e.collect_time},
          {"important", e.important},
          {"gps", gps}};
}

std::string dock_listing_json(const std::vector<std::string>& entries, const std::string& next) {
  std::string body = R"({"files":[)";
  for (std::size_t i = 0; i < entries.size(); ++i) {
    body += (i == 0 ? "" : ",") + entries[i];
  }
  return body + R"(],"next":)" + nlohmann::json(next).dump() + "}";
}

std::string dock_status_json(const DockStatus& s) {
  return nlohmann::ordered_json{
      {"stationId", s.station_id}, {"firmware", s.firmware}, {"time", s.time},
      {"slots", s.slots},          {"docked", s.docked},     {"freeBytes", s.free_bytes}}
      .dump();
}

std::string dock_error_json(const std::string& what) {
  return nlohmann::json{{"error", what}}.dump();
}

std::string dock_acked_json() {
  return R"({"acked":true})";
}

}  // namespace cpd::test
