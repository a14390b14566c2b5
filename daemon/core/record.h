// Facts (what the correlator concluded) and sealed records (signed, chained, ready to store and send).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/time.h"

namespace cpd {

// The span (UTC ms, margins included) of a recording: enforcement records whose time_ms falls in
// [lo_ms, hi_ms] are linked to it (docs/records.md, "Links").
struct LinkSpan {
  UnixMs lo_ms = 0;
  UnixMs hi_ms = 0;
  bool contains(UnixMs t) const { return lo_ms <= t && t <= hi_ms; }
};

// A media file kept in the gateway's store but not published (a recording): retained while its record is
// unacknowledged and for the retention period (the longer one when important).
struct KeptMedia {
  std::string sha256;
  bool important = false;
  UnixMs hold_until_ms = 0;  // set by the store worker: kept at least until then (retention period)
};

// The dock-ledger change committed in the same transaction as the record that covers the file.
struct DockFileUpdate {
  std::string device_id;
  std::string unique_id;
  std::string md5;
  std::string sha256;  // empty for a fault record
};

// A fact before sealing. `fields` holds the type-specific members of the record body; the sealer adds the
// common members (v, gateway, seq, prev, id, type, time_ms, created_ms), which `fields` must not contain.
// Numbers in `fields` are integers only (evidence-feed contract).
struct Fact {
  std::string type;
  UnixMs time_ms = 0;
  nlohmann::json fields = nlohmann::json::object();
  // When the fact became ready to seal (e.g. the radar track closed); not part of the record. Used to
  // measure ready-to-PUBACK latency.
  std::chrono::steady_clock::time_point ready_at{};
  // SHA-256 of each media file (picture, recording) the record names: published before the record and kept
  // in the media store while the record is unacknowledged.
  std::vector<std::string> media;
  // Media kept, not published (recordings).
  std::vector<KeptMedia> kept_media;
  // Recording facts: the span to link. The store worker adds `links` (ids of linkable records already
  // sealed in the span) to `fields` when it seals the fact, and seals a `link` record for each linkable
  // record sealed later whose time falls in a stored span.
  std::optional<LinkSpan> link_span;
  std::optional<DockFileUpdate> dock_update;
  // Runs on the store worker thread once the record is committed (must not block), e.g. to ack a dock
  // file. Not part of the record.
  std::function<void(const std::string& record_id)> on_committed;
};

// The position of the chain: the last sealed seq and the SHA-256 (lower-case hex) of its JWS bytes.
// An empty chain is seq 0 with 64 zeros.
struct ChainHead {
  std::uint64_t seq = 0;
  std::string jws_sha256 = std::string(64, '0');
  bool operator==(const ChainHead&) const = default;
};

struct SealedRecord {
  std::uint64_t seq = 0;
  std::string id;  // <gateway>:<seq>
  std::string type;
  UnixMs time_ms = 0;
  UnixMs created_ms = 0;
  std::string jws;                            // JWS Compact Serialization, ASCII
  std::vector<std::string> media;             // SHA-256 of the media files the record names (published)
  std::vector<KeptMedia> kept_media;          // kept on the gateway, not published
  std::optional<LinkSpan> link_span;          // stored for later `link` records
  std::optional<DockFileUpdate> dock_update;  // committed with the record
  // Set by Sealer::seal_or_salvage when seal() refused the fact: why, and the paths of the members the
  // record had to leave out (also named in the record's `unsealable_fields`).
  std::string salvage_reason;
  std::vector<std::string> unsealable;
};

}  // namespace cpd
