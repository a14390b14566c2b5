// Sealer: turns facts into signed, hash-chained records (JCS body, JWS Compact, EdDSA). Pure: no I/O.
#pragma once

#include <string>

#include "daemon/core/ed25519.h"
#include "daemon/core/record.h"

namespace cpd {

class Sealer {
 public:
  Sealer(const Ed25519PrivateKey& key, std::string gateway_id, ChainHead head);

  // Assigns seq = head.seq + 1 and prev = head.jws_sha256, builds the body
  // {v, gateway, seq, prev, id, type, time_ms, created_ms, ...fact.fields}, signs it, and advances the head.
  // Throws std::invalid_argument if fact.fields uses a reserved member name or holds a non-integer number.
  SealedRecord seal(const Fact& fact, UnixMs created_ms);

  const ChainHead& head() const { return head_; }
  // Rewinds to a committed head (after a failed commit of sealed-but-unstored records).
  void reset(ChainHead head) { head_ = std::move(head); }
  const std::string& kid() const { return kid_; }

 private:
  const Ed25519PrivateKey& key_;
  std::string gateway_id_;
  ChainHead head_;
  std::string kid_;
  std::string header_b64_;   // base64url of the canonical protected header, computed once
};

}  // namespace cpd
