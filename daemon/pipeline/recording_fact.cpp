// Builds `recording`, `recording_fault` and `link` facts from dock events. Pure: every time comes in with
// the event; numbers are integers only (evidence-feed contract), so GPS is degrees x 1e7.
#include "daemon/pipeline/recording_fact.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>

#include "daemon/core/sealer.h"
#include "daemon/pipeline/recorder_clock.h"

namespace cpd::pipeline {

namespace {

using nlohmann::json;

// The file as the station listed it: what each recording and fault record names.
void put_listed_file(json& fields, const adapters::DockFile& file) {
  fields["recorder_id"] = file.recorder_id;
  fields["officer_id"] = file.officer_id;
  fields["officer_name"] = file.officer_name;
  fields["file_name"] = file.file_name;
}

// clock (docs/records.md): both offsets the times were corrected by. The station's when it was measured,
// else "station": "unmeasured" (then S = 0 went into the correction); a reader tells the two apart by the
// presence of station_offset_ms. GPS times are by the recorder's clock like startTime, so they get the same
// correction.
void put_clock_and_gps(json& f, const adapters::RecordingCollected& event,
                       const RecorderClockReading& recorder) {
  std::int64_t station_offset_ms = 0;
  json clock = json::object();
  if (event.station_clock) {
    station_offset_ms = event.station_clock->offset_ms;
    clock["station_offset_ms"] = event.station_clock->offset_ms;
    clock["station_uncertainty_ms"] = event.station_clock->uncertainty_ms;
    clock["station_measured_ms"] = event.station_clock->measured_ms;
  } else {
    clock["station"] = "unmeasured";
  }
  clock["recorder_offset_ms"] = recorder.recorder_offset_ms;
  f["clock"] = std::move(clock);
  f["recorder_clock_off"] = recorder.recorder_clock_off;

  const std::int64_t correction_ms = recorder.recorder_offset_ms + station_offset_ms;
  json gps = json::array();
  for (const auto& p : event.file.gps) {
    gps.push_back({{"t", p.t}, {"t_ms", p.t_ms - correction_ms}, {"lat_e7", p.lat_e7}, {"lon_e7", p.lon_e7}});
  }
  f["gps"] = std::move(gps);
}

}  // namespace

bool LinkRule::linkable(const std::string& type) const {
  return std::find(types.begin(), types.end(), type) != types.end();
}

store::LinkSpan LinkRule::span(UnixMs start_ms, UnixMs end_ms) const {
  return store::LinkSpan{start_ms - margin_before_ms, end_ms + margin_after_ms};
}

json LinkRule::to_json() const {
  return {{"types", types}, {"margin_before_ms", margin_before_ms}, {"margin_after_ms", margin_after_ms}};
}

DockFileFact make_recording_fact(const adapters::RecordingCollected& event, const LinkRule& rule) {
  const adapters::DockFile& file = event.file;
  // Whether the recorder's clock was provably off, and the span on the gateway clock (recorder_clock.h).
  const RecorderClockReading recorder =
      read_recorder_clock(file, event.listed_ms, event.station_clock, event.recorder_clock_tolerance_s);
  DockFileFact out;
  Fact& fact = out.fact;
  fact.type = "recording";
  fact.time_ms = recorder.start_ms;

  json& f = fact.fields;
  f["device"] = event.device_id;
  f["station_id"] = event.station_id;
  f["station_firmware"] = event.firmware;
  // Not in the brief's list: the station's id of the file, so an auditor can match the record to the
  // station's ack without parsing `listing`.
  f["unique_id"] = file.unique_id;
  put_listed_file(f, file);
  f["case_code"] = file.case_code;
  f["file_type"] = file.file_type;
  f["format"] = file.format;
  f["length"] = file.length;
  f["sha256"] = event.sha256;
  f["md5"] = file.md5;
  f["important"] = file.important;
  f["recorder_start"] = file.start_time;
  f["recorder_end"] = file.end_time;
  f["collect_time"] = file.collect_time;
  f["start_ms"] = recorder.start_ms;
  f["end_ms"] = recorder.end_ms;
  f["duration_ms"] = recorder.end_ms - recorder.start_ms;

  put_clock_and_gps(f, event, recorder);

  f["stored"] = {{"path", event.media_path}, {"bytes", file.length}};
  f["download"] = {{"attempts", event.download_attempts},
                   {"resumes", event.resumes},
                   {"collected_ms", event.collected_ms}};
  f["listing"] = file.raw_json;
  f["link_rule"] = rule.to_json();

  json reasons = json::array();
  if (!event.station_clock) {
    reasons.push_back("station_clock_unmeasured");
  }
  if (recorder.recorder_clock_off) {
    reasons.push_back("recorder_clock_corrected");
  }
  f["time_reliable"] = reasons.empty();
  f["reasons"] = std::move(reasons);

  // Recordings are kept on the gateway, never published: media stays empty.
  // The station's text is checked by the adapter; whatever still is not UTF-8 is escaped with its bytes
  // beside it (docs/records.md), so the fact can always be sealed.
  escape_text_not_utf8(f);

  out.effects.kept_media.push_back(store::KeptMedia{event.sha256, file.important});
  out.effects.link_span = rule.span(recorder.start_ms, recorder.end_ms);
  out.effects.dock_update = store::DockFileUpdate{event.device_id, file.unique_id, file.md5, event.sha256};
  out.on_committed = event.on_committed;
  return out;
}

DockFileFact make_dock_fault_fact(const adapters::DockFileFault& event) {
  const adapters::DockFile& file = event.file;
  DockFileFact out;
  Fact& fact = out.fact;
  fact.type = "recording_fault";
  fact.time_ms = event.time_ms;

  json& f = fact.fields;
  f["device"] = event.device_id;
  f["station_id"] = event.station_id;
  f["reason"] = event.reason;
  f["detail"] = event.detail;
  f["attempts"] = event.attempts;
  f["unique_id"] = file.unique_id;
  put_listed_file(f, file);
  f["md5"] = file.md5;
  f["sha256"] = event.sha256;
  // A refused entry's bytes as the station sent them: not UTF-8 is one of the reasons to refuse it, so
  // they are escaped with their bytes beside them (listing_raw_b64, text_not_utf8), never dropped.
  f["listing"] = file.raw_json;
  escape_text_not_utf8(f);

  // The ledger entry is closed with no sha256: the file is accounted for by this fault, not collected.
  out.effects.dock_update = store::DockFileUpdate{event.device_id, file.unique_id, file.md5, ""};
  out.on_committed = event.on_committed;
  return out;
}

std::optional<DockFileFact> dock_file_fact(const adapters::DeviceEvent& event, const LinkRule& rule) {
  if (const auto* recording = std::get_if<adapters::RecordingCollected>(&event)) {
    return make_recording_fact(*recording, rule);
  }
  if (const auto* fault = std::get_if<adapters::DockFileFault>(&event)) {
    return make_dock_fault_fact(*fault);
  }
  return std::nullopt;
}

std::optional<json> panoramas_with_video(const json& record_body, const json& recording_body) {
  if (!record_body.is_object() || !record_body.contains("type") || record_body["type"] != "speeding") {
    return std::nullopt;
  }
  const auto integer = [](const json& body, const json::json_pointer& at) -> std::optional<std::int64_t> {
    return body.is_object() && body.contains(at) && body[at].is_number_integer()
               ? std::optional<std::int64_t>(body[at].get<std::int64_t>())
               : std::nullopt;
  };
  const std::int64_t panoramas = integer(record_body, "/checks/panoramas/count"_json_pointer).value_or(0);
  const bool video = recording_body.is_object() && recording_body.contains("file_type") &&
                     recording_body["file_type"] == "video";
  const auto time_ms = integer(record_body, "/time_ms"_json_pointer);
  const auto start_ms = integer(recording_body, "/start_ms"_json_pointer);
  const auto end_ms = integer(recording_body, "/end_ms"_json_pointer);
  const bool covers = time_ms && start_ms && end_ms && *start_ms <= *time_ms && *time_ms <= *end_ms;
  const bool reliable = recording_body.is_object() && recording_body.contains("time_reliable") &&
                        recording_body["time_reliable"] == true;
  // The record's own checks other than its pictures' (calibration, clocks, device time, radar status): a
  // record timed or measured on a failed check is not made good by a video.
  bool checks_ok = true;
  if (record_body.contains("checks") && record_body["checks"].is_object()) {
    for (const auto& [name, check] : record_body["checks"].items()) {
      if (name != "panoramas" && name != "pictures") {
        checks_ok = checks_ok && check.is_object() && check.contains("ok") && check["ok"] == true;
      }
    }
  }
  return json{
      {"panoramas", panoramas},        {"video", video},
      {"covers_record_time", covers},  {"recording_time_reliable", reliable},
      {"record_checks_ok", checks_ok}, {"met", panoramas >= 1 && video && covers && reliable && checks_ok}};
}

Fact make_link_fact(const std::string& recording_id, const std::string& record_id,
                    const std::string& record_type, UnixMs record_time_ms, const store::LinkSpan& span,
                    const std::optional<json>& with_video) {
  Fact fact;
  fact.type = "link";
  fact.time_ms = record_time_ms;
  fact.fields = {{"recording", recording_id},
                 {"record", record_id},
                 {"record_type", record_type},
                 {"record_time_ms", record_time_ms},
                 {"span", {{"lo_ms", span.lo_ms}, {"hi_ms", span.hi_ms}}}};
  if (with_video) {
    fact.fields["panoramas_with_video"] = *with_video;
  }
  return fact;
}

}  // namespace cpd::pipeline
