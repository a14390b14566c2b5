// The `key_rotation` record (docs/records.md): a gateway's chain names the key that signs its next records.
// Pure: building the fact the old key seals, and reading one back (the verifier, central and the daemon's
// start-up all read it the same way).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/core/ed25519.h"
#include "daemon/core/record.h"

namespace cpd {

// The fact of a rotation from `old_key` (which seals it) to `new_key`. Fields: old_kid, new_kid,
// new_public_key (RFC 8037 JWK {"crv":"Ed25519","kty":"OKP","x":base64url(raw 32 bytes)}),
// new_public_key_pem.
Fact make_key_rotation_fact(const Ed25519PublicKey& old_key, const Ed25519PublicKey& new_key, UnixMs time_ms);

struct KeyRotation {
  std::string old_kid;
  std::string new_kid;
  Ed25519PublicKey new_key;
};

// Reads a verified record body of type key_rotation. nullopt (with `error` set when given) when the body
// is not a key_rotation or is malformed: JWK not OKP/Ed25519 with 32 raw bytes, new_kid not the kid of
// that key, new_public_key_pem not the same key, old_kid equal to new_kid, or (when `signing_kid` is not
// empty) old_kid not the kid that signed the record.
std::optional<KeyRotation> parse_key_rotation(const nlohmann::json& body, const std::string& signing_kid,
                                              std::string* error = nullptr);

}  // namespace cpd
