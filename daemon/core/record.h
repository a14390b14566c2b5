// Facts (what the correlator concluded) and sealed records (signed, chained, ready to store and send).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/core/time.h"

namespace cpd {

// A fact before sealing: what the record will say. `fields` holds the type-specific members of the record
// body; the sealer adds the common members (v, gateway, seq, prev, id, type, time_ms, created_ms), which
// `fields` must not contain. Numbers in `fields` are integers only (evidence-feed contract). What committing
// the record brings besides it (kept media, link spans, the dock ledger: daemon/store/record_effects.h;
// acknowledgements and latency stamps: the store worker) travels beside the fact, not in it.
struct Fact {
  std::string type;
  UnixMs time_ms = 0;
  nlohmann::json fields = nlohmann::json::object();
  // SHA-256 of each media file (picture) the record names: published before the record and kept in the
  // media store while the record is unacknowledged.
  std::vector<std::string> media;
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
  std::string jws;                 // JWS Compact Serialization, ASCII
  std::vector<std::string> media;  // SHA-256 of the media files the record names (published)
  // Set by Sealer::seal_or_salvage when seal() refused the fact: why, and the paths of the members the
  // record had to leave out (also named in the record's `unsealable_fields`).
  std::string salvage_reason;
  std::vector<std::string> unsealable;
};

}  // namespace cpd
