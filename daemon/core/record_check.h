// One evidence record checked on its own (no chain state): JWS form, protected header, EdDSA signature,
// canonical body, integers only, common members. Shared by the ChainVerifier (checkpointctl, tests) and
// checkpoint-central, which keeps the chain state in PostgreSQL instead of memory.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/ed25519.h"

namespace cpd {

struct RecordCheck {
  bool ok = false;
  // The signature was not checked because no key is known for the kid (central quarantines such records);
  // `kid` says which.
  bool unknown_key = false;
  std::string kid;
  std::uint64_t seq = 0;
  std::string id;
  std::string gateway;
  std::string prev;
  std::string type;
  std::string reason;          // why it failed, for the operator
  nlohmann::json body;         // the decoded body once the signature verified
  std::string canonical_body;  // ok only: the body's exact signed bytes (canonical JSON, RFC 8785)
};

// The key for a kid, or nullopt when none is trusted for it.
using KeyForKid = std::function<std::optional<Ed25519PublicKey>(const std::string& kid)>;

// `typ` is the protected header's expected typ ("evidence+jws" for records).
RecordCheck check_record(std::string_view jws, const KeyForKid& key_for_kid,
                         std::string_view typ = "evidence+jws");

// The parts of a JWS Compact Serialization once its header is decoded and signature checked against
// `key_for_kid`; the payload is returned as bytes (not parsed). Used for custody messages, whose bodies
// have their own members. Fails with a reason like check_record.
struct SignedPayload {
  bool ok = false;
  bool unknown_key = false;
  std::string kid;
  std::string payload;
  std::string reason;
};
SignedPayload check_signed(std::string_view jws, const KeyForKid& key_for_kid, std::string_view typ);

// Part `part` (0 header, 1 payload) of a JWS Compact Serialization decoded as a JSON object, the signature
// NOT checked: for a JWS already verified (a stored record, a kept fork) or only inspected. nullopt when the
// part is missing, not base64url or not a JSON object.
std::optional<nlohmann::json> unverified_jws_part(std::string_view jws, std::size_t part);

// Signs `payload_json` (canonicalised here) as a JWS with header {alg: EdDSA, kid, typ}.
std::string sign_compact(const Ed25519PrivateKey& key, std::string_view typ,
                         const nlohmann::json& payload_json);

}  // namespace cpd
