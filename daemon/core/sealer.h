// Sealer: turns facts into signed, hash-chained records (JCS body, JWS Compact, EdDSA). Pure: no I/O.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

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

  // As seal(), but a fact is never refused for its content (no fact may be lost to a bug in whoever built
  // it): if seal() refuses it, the record is sealed with every member that can be, text that is not UTF-8
  // escaped (escape_text_not_utf8), and names each member left out in `unsealable_fields`; its
  // `enforceable`/`valid` becomes false (docs/records.md, "Facts the sealer refused"). The returned
  // record's salvage_reason and unsealable say so, for the log and the count.
  SealedRecord seal_or_salvage(const Fact& fact, UnixMs created_ms);

  const ChainHead& head() const { return head_; }
  // Rewinds to a committed head (after a failed commit of sealed-but-unstored records).
  void reset(ChainHead head) { head_ = std::move(head); }
  const std::string& kid() const { return kid_; }
  // The `site` member every record carries (docs/records.md, "Common members"): added to a fact's body
  // when the fact has none of its own. Null (the default): nothing is added.
  void set_site(nlohmann::json site) { site_ = std::move(site); }
  // Signs every later record with `key` (a key rotation, after its key_rotation record was sealed and
  // committed under the current key; docs/custody.md, "Key rotation"). The key is shared, not copied.
  void use_key(const Ed25519PrivateKey& key);
  const Ed25519PrivateKey& key() const { return key_; }

 private:
  Ed25519PrivateKey key_;  // a handle: shares the caller's OpenSSL key
  std::string gateway_id_;
  ChainHead head_;
  std::string kid_;
  std::string header_b64_;  // base64url of the canonical protected header, computed once
  nlohmann::json site_;     // added to every body without a site (null: nothing added)
};

// Makes every string in `fields` that is not valid UTF-8 sealable without losing a byte (docs/records.md,
// "Text that is not UTF-8"): the string becomes escape_invalid_utf8 of its bytes; beside it, member
// "<name>_raw_b64" holds the exact bytes in base64 (for elements of an array member "<name>", an object
// from each such element's index to its base64); the top-level "text_not_utf8" lists the path of each
// string escaped ("plate", "camera_event.raw_xml", "missing_pictures[1]"). Returns the paths escaped now
// (empty: `fields` is unchanged). Member names are not changed (they are the gateway's, not a device's).
std::vector<std::string> escape_text_not_utf8(nlohmann::json& fields);

}  // namespace cpd
