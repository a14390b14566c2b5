// One evidence record (or custody message) checked without chain state: JWS form, protected header,
// EdDSA signature over the received bytes, canonical body, integers only, the common members.
#include "daemon/core/record_check.h"

#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"

namespace cpd {

namespace {

template <class R>
R failure(R r, std::string reason) {
  r.ok = false;
  r.reason = std::move(reason);
  return r;
}

// Whether v holds a non-integer number anywhere. The contract allows integers only; after the
// canonical-bytes check a float here can only be a fraction or a huge exponent form.
bool has_float(const nlohmann::json& v) {
  if (v.is_number_float()) {
    return true;
  }
  if (v.is_structured()) {
    for (const auto& member : v) {
      if (has_float(member)) {
        return true;
      }
    }
  }
  return false;
}

// Path of the first non-integer number in v, or empty. Called only for a body that has one (has_float):
// most have none, and building every member's path cost an allocation per member of every record.
std::string find_non_integer(const nlohmann::json& v, const std::string& where) {
  if (v.is_number_float()) {
    return where;
  }
  if (v.is_object()) {
    for (const auto& [key, member] : v.items()) {
      std::string found = find_non_integer(member, where.empty() ? key : where + "." + key);
      if (!found.empty()) {
        return found;
      }
    }
  } else if (v.is_array()) {
    std::size_t i = 0;
    for (const auto& element : v) {
      std::string found = find_non_integer(element, where + "[" + std::to_string(i++) + "]");
      if (!found.empty()) {
        return found;
      }
    }
  }
  return {};
}

}  // namespace

std::optional<nlohmann::json> unverified_jws_part(std::string_view jws, std::size_t part) {
  std::size_t from = 0;
  for (std::size_t i = 0; i < part; ++i) {
    from = jws.find('.', from);
    if (from == std::string_view::npos) {
      return std::nullopt;
    }
    ++from;
  }
  const std::size_t to = jws.find('.', from);
  const auto bytes = base64url_decode(jws.substr(from, to == std::string_view::npos ? to : to - from));
  if (!bytes) {
    return std::nullopt;
  }
  auto value = nlohmann::json::parse(*bytes, nullptr, false);
  if (!value.is_object()) {
    return std::nullopt;
  }
  return value;
}

SignedPayload check_signed(std::string_view jws, const KeyForKid& key_for_kid, std::string_view typ) {
  SignedPayload r;
  if (jws.empty()) {
    return failure(std::move(r), "empty record");
  }
  const std::size_t dot1 = jws.find('.');
  const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : jws.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || jws.find('.', dot2 + 1) != std::string_view::npos) {
    return failure(std::move(r), "not a JWS Compact Serialization (expected 3 dot-separated parts)");
  }
  const std::string_view header_b64 = jws.substr(0, dot1);
  const std::string_view payload_b64 = jws.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view signature_b64 = jws.substr(dot2 + 1);

  // --- protected header ---
  const auto header_text = base64url_decode(header_b64);
  if (!header_text || header_text->empty()) {
    return failure(std::move(r), "protected header is not base64url");
  }
  const nlohmann::json header = nlohmann::json::parse(*header_text, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return failure(std::move(r), "protected header is not a JSON object");
  }
  for (const auto& [name, value] : header.items()) {
    if (name != "alg" && name != "kid" && name != "typ") {
      return failure(std::move(r), "protected header has unexpected member \"" + printable(name, 64) + "\"");
    }
  }
  if (!header.contains("alg") || !header["alg"].is_string() || header["alg"] != "EdDSA") {
    return failure(std::move(r), "protected header alg is not \"EdDSA\"");
  }
  if (!header.contains("typ") || !header["typ"].is_string() || header["typ"] != typ) {
    return failure(std::move(r), "protected header typ is not \"" + std::string(typ) + "\"");
  }
  if (!header.contains("kid") || !header["kid"].is_string()) {
    return failure(std::move(r), "protected header has no kid");
  }
  try {
    if (canonical_json(header) != *header_text) {
      return failure(std::move(r), "protected header is not canonical JSON");
    }
  } catch (const JcsError& e) {
    return failure(std::move(r), std::string("protected header is not canonical JSON: ") + e.what());
  }
  r.kid = header["kid"].get<std::string>();
  const std::optional<Ed25519PublicKey> key = key_for_kid(r.kid);
  if (!key) {
    r.unknown_key = true;
    return failure(std::move(r), "no trusted key has kid " + printable(r.kid, 64));
  }

  // --- signature, over the ASCII bytes "<header>.<payload>" exactly as received ---
  const auto signature = base64url_decode(signature_b64);
  if (!signature) {
    return failure(std::move(r), "signature is not base64url");
  }
  if (signature->size() != 64) {
    return failure(std::move(r), "signature is " + std::to_string(signature->size()) +
                                     " bytes, an Ed25519 signature is 64");
  }
  if (!key->verify(jws.substr(0, dot2), *signature)) {
    return failure(std::move(r), "signature does not verify");
  }
  auto payload = base64url_decode(payload_b64);
  if (!payload) {
    return failure(std::move(r), "payload is not base64url");
  }
  r.payload = std::move(*payload);
  r.ok = true;
  return r;
}

RecordCheck check_record(std::string_view jws, const KeyForKid& key_for_kid, std::string_view typ) {
  RecordCheck r;
  SignedPayload signed_part = check_signed(jws, key_for_kid, typ);
  r.kid = signed_part.kid;
  if (!signed_part.ok) {
    r.unknown_key = signed_part.unknown_key;
    return failure(std::move(r), std::move(signed_part.reason));
  }
  const std::string& payload = signed_part.payload;

  // --- body ---
  // Parsed in place (the body of a large record is not copied); left null when it is not an object.
  r.body = nlohmann::json::parse(payload, nullptr, false);
  if (r.body.is_discarded() || !r.body.is_object()) {
    const bool json = !r.body.is_discarded();
    r.body = nullptr;
    return failure(std::move(r), json ? "body is not a JSON object" : "body is not JSON");
  }
  const nlohmann::json& body = r.body;
  try {
    if (canonical_json(body) != payload) {
      return failure(std::move(r), "body is not canonical JSON");
    }
  } catch (const JcsError& e) {
    return failure(std::move(r), std::string("body is not canonical JSON: ") + e.what());
  }
  if (const std::string where = has_float(body) ? find_non_integer(body, "") : ""; !where.empty()) {
    // The path holds the sender's member names: escaped and cut, as every peer text in a reason.
    return failure(std::move(r), "body field " + printable(where, 200) + " is not an integer");
  }

  // --- common fields ---
  for (const char* name : {"v", "gateway", "seq", "prev", "id", "type", "time_ms", "created_ms"}) {
    if (!body.contains(name)) {
      return failure(std::move(r), std::string("body has no \"") + name + "\" field");
    }
  }
  if (!body["seq"].is_number_unsigned() || body["seq"].get<std::uint64_t>() == 0) {
    return failure(std::move(r), "field \"seq\" is not a positive integer");
  }
  const auto seq = body["seq"].get<std::uint64_t>();
  r.seq = seq;
  if (body["id"].is_string()) {
    r.id = body["id"].get<std::string>();
  }
  if (!body["v"].is_number_unsigned() || body["v"].get<std::uint64_t>() != 1) {
    return failure(std::move(r), "field \"v\" is not 1");
  }
  if (!body["gateway"].is_string() || body["gateway"].get_ref<const std::string&>().empty()) {
    return failure(std::move(r), "field \"gateway\" is not a non-empty string");
  }
  r.gateway = body["gateway"].get<std::string>();
  if (!body["id"].is_string()) {
    return failure(std::move(r), "field \"id\" is not a string");
  }
  if (const std::string expected_id = r.gateway + ":" + std::to_string(seq); r.id != expected_id) {
    std::string why = "id " + printable(r.id, 120) + " is not <gateway>:<seq> (" +
                      printable(expected_id, 120) + ")";  // before r moves
    return failure(std::move(r), std::move(why));
  }
  if (!body["prev"].is_string() || !is_sha256_hex(body["prev"].get_ref<const std::string&>())) {
    return failure(std::move(r), "field \"prev\" is not 64 lower-case hex digits");
  }
  r.prev = body["prev"].get<std::string>();
  if (!body["type"].is_string() || body["type"].get_ref<const std::string&>().empty()) {
    return failure(std::move(r), "field \"type\" is not a non-empty string");
  }
  r.type = body["type"].get<std::string>();
  if (!body["time_ms"].is_number_integer()) {
    return failure(std::move(r), "field \"time_ms\" is not an integer");
  }
  if (!body["created_ms"].is_number_integer()) {
    return failure(std::move(r), "field \"created_ms\" is not an integer");
  }
  if (seq == 1 && r.prev != std::string(64, '0')) {
    return failure(std::move(r), "prev of seq 1 is not 64 zeros");
  }
  // Media are named by their SHA-256 in lower-case hex (evidence-feed.md): a picture named otherwise could
  // never be matched with its bytes, and a custody receipt covering the record would cover a picture nobody
  // holds.
  if (const auto pictures = body.find("pictures"); pictures != body.end()) {
    if (!pictures->is_array()) {
      return failure(std::move(r), "field \"pictures\" is not an array");
    }
    for (std::size_t i = 0; i < pictures->size(); ++i) {
      const nlohmann::json& p = (*pictures)[i];
      if (!p.is_object() || !p.contains("sha256") || !p["sha256"].is_string() ||
          !is_sha256_hex(p["sha256"].get_ref<const std::string&>())) {
        return failure(std::move(r),
                       "pictures[" + std::to_string(i) + "].sha256 is not 64 lower-case hex digits");
      }
    }
  }
  r.ok = true;
  r.canonical_body = std::move(signed_part.payload);
  return r;
}

std::string sign_compact(const Ed25519PrivateKey& key, std::string_view typ,
                         const nlohmann::json& payload_json) {
  const nlohmann::json header = {
      {"alg", "EdDSA"}, {"kid", key.public_key().kid()}, {"typ", std::string(typ)}};
  std::string jws = base64url_encode(canonical_json(header));
  jws.push_back('.');
  jws += base64url_encode(canonical_json(payload_json));
  const std::string signature = key.sign(jws);
  jws.push_back('.');
  jws += base64url_encode(signature);
  return jws;
}

}  // namespace cpd
