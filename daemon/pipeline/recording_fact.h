// Recording facts: a collected dock file becomes a `recording` fact (with the span its links are drawn
// from), a file that cannot be collected a `recording_fault` fact. Pure: no I/O, no clock.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "adapters/events.h"
#include "daemon/core/record.h"
#include "daemon/store/record_effects.h"

namespace cpd::pipeline {

// Which sealed records a recording is linked to: those of `types` whose time_ms falls within the
// recording's corrected [start - margin_before, end + margin_after].
struct LinkRule {
  std::vector<std::string> types{"speeding", "passage", "speed_measurement", "plate_read"};
  std::int64_t margin_before_ms = 60000;
  std::int64_t margin_after_ms = 60000;
  bool linkable(const std::string& type) const;
  store::LinkSpan span(UnixMs start_ms, UnixMs end_ms) const;
  nlohmann::json to_json() const;  // written into each recording record ("link_rule")
};

// A dock file's fact (`recording` or `recording_fault`) and what committing its record brings besides the
// record: the store's rows (the kept file, the link span, the ledger change) and the adapter's
// acknowledgement of the file, run on the store worker once the record is committed (must not block).
struct DockFileFact {
  Fact fact;
  store::RecordEffects effects;
  std::function<void(const std::string& record_id)> on_committed;
};

// The `recording` fact: fields per docs/records.md; time_ms = the corrected start. Effects: the file kept
// (important flag), the link span, the ledger entry recorded; the event's on_committed carried over.
DockFileFact make_recording_fact(const adapters::RecordingCollected& event, const LinkRule& rule);
// The `recording_fault` fact for a file that could not be collected or acknowledged; its ledger entry is
// closed with it.
DockFileFact make_dock_fault_fact(const adapters::DockFileFault& event);
// The dock file fact of a dock event (RecordingCollected, DockFileFault); nullopt for any other event,
// which goes to the correlator. Recordings are not correlated when they arrive: their links are drawn when
// they are sealed (the store worker, LinkRule).
std::optional<DockFileFact> dock_file_fact(const adapters::DeviceEvent& event, const LinkRule& rule);
// GA/T 832 accepts a speeding case with at least two panoramas taken at different times, or one panorama
// plus video. What a link between a `speeding` record and a recording says of the second (docs/records.md,
// "Links"), from the two records' sealed bodies: the record's usable panoramas (checks.panoramas.count), and
// whether the recording is a video whose corrected span, measured on a reliable clock, holds the record's
// time. nullopt when `record_body` is not a `speeding` record's.
std::optional<nlohmann::json> panoramas_with_video(const nlohmann::json& record_body,
                                                   const nlohmann::json& recording_body);
// The `link` fact sealed when an enforcement record falls within an earlier recording's span; with
// `with_video` (panoramas_with_video) when the record is a `speeding` record.
Fact make_link_fact(const std::string& recording_id, const std::string& record_id,
                    const std::string& record_type, UnixMs record_time_ms, const store::LinkSpan& span,
                    const std::optional<nlohmann::json>& with_video = std::nullopt);

}  // namespace cpd::pipeline
