// Facts (what the correlator concluded) and sealed records (signed, chained, ready to store and send).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/core/time.h"

namespace cpd {

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
  std::string id;    // <gateway>:<seq>
  std::string type;
  UnixMs time_ms = 0;
  UnixMs created_ms = 0;
  std::string jws;   // JWS Compact Serialization, ASCII
  std::vector<std::string> media;  // SHA-256 of the media files the record names
};

}  // namespace cpd
