// The key_rotation record: built by the gateway, read back by every verifier of the chain.
#include "daemon/core/key_rotation.h"

#include "daemon/core/encoding.h"

namespace cpd {

namespace {

std::optional<KeyRotation> refuse(std::string* error, std::string why) {
  if (error != nullptr) {
    *error = "key_rotation record: " + std::move(why);
  }
  return std::nullopt;
}

const std::string* string_member(const nlohmann::json& obj, const char* name) {
  const auto it = obj.find(name);
  if (it == obj.end() || !it->is_string()) {
    return nullptr;
  }
  return &it->get_ref<const std::string&>();
}

}  // namespace

Fact make_key_rotation_fact(const Ed25519PublicKey& old_key, const Ed25519PublicKey& new_key,
                            UnixMs time_ms) {
  Fact f;
  f.type = "key_rotation";
  f.time_ms = time_ms;
  f.fields = {
      {"old_kid", old_key.kid()},
      {"new_kid", new_key.kid()},
      {"new_public_key", {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", base64url_encode(new_key.raw())}}},
      {"new_public_key_pem", new_key.pem()}};
  return f;
}

std::optional<KeyRotation> parse_key_rotation(const nlohmann::json& body, const std::string& signing_kid,
                                              std::string* error) {
  if (!body.is_object() || body.value("type", std::string()) != "key_rotation") {
    return refuse(error, "not a key_rotation record");
  }
  const std::string* old_kid = string_member(body, "old_kid");
  const std::string* new_kid = string_member(body, "new_kid");
  if (old_kid == nullptr || new_kid == nullptr) {
    return refuse(error, "old_kid and new_kid must be strings");
  }
  const auto jwk = body.find("new_public_key");
  if (jwk == body.end() || !jwk->is_object()) {
    return refuse(error, "new_public_key must be a JWK object");
  }
  const std::string* kty = string_member(*jwk, "kty");
  const std::string* crv = string_member(*jwk, "crv");
  const std::string* x = string_member(*jwk, "x");
  if (kty == nullptr || *kty != "OKP" || crv == nullptr || *crv != "Ed25519" || x == nullptr) {
    return refuse(error, "new_public_key is not an Ed25519 JWK (kty OKP, crv Ed25519, x)");
  }
  const auto raw = base64url_decode(*x);
  if (!raw || raw->size() != 32) {
    return refuse(error, "new_public_key.x is not base64url of 32 bytes");
  }
  std::optional<Ed25519PublicKey> key;
  try {
    key = Ed25519PublicKey::from_raw(*raw);
  } catch (const KeyError& e) {
    return refuse(error, std::string("new_public_key: ") + e.what());
  }
  if (key->kid() != *new_kid) {
    return refuse(error, "new_kid " + printable(*new_kid, 80) + " is not the kid of new_public_key (" +
                             key->kid() + ")");
  }
  if (const std::string* pem = string_member(body, "new_public_key_pem"); pem != nullptr) {
    try {
      if (Ed25519PublicKey::from_pem(*pem).raw() != *raw) {
        return refuse(error, "new_public_key_pem is not the key of new_public_key");
      }
    } catch (const KeyError& e) {
      return refuse(error, std::string("new_public_key_pem: ") + e.what());
    }
  }
  if (*old_kid == *new_kid) {
    return refuse(error, "new_kid equals old_kid");
  }
  if (!signing_kid.empty() && *old_kid != signing_kid) {
    return refuse(error, "old_kid " + *old_kid + " is not the kid that signed it (" + signing_kid + ")");
  }
  return KeyRotation{*old_kid, *new_kid, std::move(*key)};
}

}  // namespace cpd
