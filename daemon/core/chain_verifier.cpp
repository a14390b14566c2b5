// ChainVerifier: the consumer-side checks of the evidence feed (header, EdDSA signature, canonical body,
// common fields, seq continuity, prev chain), with QoS 1 redeliveries recognised by their exact bytes.
#include "daemon/core/chain_verifier.h"

#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"

namespace cpd {

namespace {

const std::string kZeroHash(64, '0');

VerifyResult failure(VerifyResult r, std::string reason) {
  r.ok = false;
  r.reason = std::move(reason);
  return r;
}

bool is_lower_hex64(const std::string& s) {
  if (s.size() != 64) {
    return false;
  }
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

// Path of the first non-integer number in v, or empty. The contract allows integers only; after the
// canonical-bytes check a float here can only be a fraction or a huge exponent form.
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

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

ChainVerifier::ChainVerifier(Ed25519PublicKey key) : key_(std::move(key)), kid_(key_.kid()) {}

VerifyResult ChainVerifier::feed(std::string_view jws) {
  const std::string jws_sha256 = sha256_hex(jws);
  // Identical bytes to a record already accepted: a redelivery, verified by construction.
  if (const auto it = recent_by_hash_.find(jws_sha256); it != recent_by_hash_.end()) {
    ++duplicates_;
    VerifyResult r;
    r.ok = true;
    r.duplicate = true;
    r.seq = it->second;
    r.id = gateway_ + ":" + std::to_string(it->second);
    return r;
  }
  VerifyResult r = check(jws, jws_sha256);
  if (r.ok) {
    if (!first_seq_) {
      first_seq_ = r.seq;
    }
    last_seq_ = r.seq;
    last_jws_sha256_ = jws_sha256;
    last_id_ = r.id;
    ++verified_;
    remember(r.seq, jws_sha256);
  }
  return r;
}

void ChainVerifier::remember(std::uint64_t seq, const std::string& jws_sha256) {
  recent_by_seq_[seq] = jws_sha256;
  recent_by_hash_[jws_sha256] = seq;
  recent_order_.push_back(seq);
  while (recent_order_.size() > kRecentLimit) {
    const std::uint64_t old = recent_order_.front();
    recent_order_.pop_front();
    if (const auto it = recent_by_seq_.find(old); it != recent_by_seq_.end()) {
      recent_by_hash_.erase(it->second);
      recent_by_seq_.erase(it);
    }
  }
}

VerifyResult ChainVerifier::check(std::string_view jws, const std::string& /*jws_sha256*/) {
  VerifyResult r;
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
      return failure(std::move(r), "protected header has unexpected member \"" + name + "\"");
    }
  }
  if (!header.contains("alg") || !header["alg"].is_string() || header["alg"] != "EdDSA") {
    return failure(std::move(r), "protected header alg is not \"EdDSA\"");
  }
  if (!header.contains("typ") || !header["typ"].is_string() || header["typ"] != "evidence+jws") {
    return failure(std::move(r), "protected header typ is not \"evidence+jws\"");
  }
  if (!header.contains("kid") || !header["kid"].is_string()) {
    return failure(std::move(r), "protected header has no kid");
  }
  if (const auto& kid = header["kid"].get_ref<const std::string&>(); kid != kid_) {
    return failure(std::move(r), "kid " + kid + " is not the key's kid " + kid_);
  }
  try {
    if (canonical_json(header) != *header_text) {
      return failure(std::move(r), "protected header is not canonical JSON");
    }
  } catch (const JcsError& e) {
    return failure(std::move(r), std::string("protected header is not canonical JSON: ") + e.what());
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
  if (!key_.verify(jws.substr(0, dot2), *signature)) {
    return failure(std::move(r), "signature does not verify");
  }

  // --- body ---
  const auto payload = base64url_decode(payload_b64);
  if (!payload) {
    return failure(std::move(r), "payload is not base64url");
  }
  nlohmann::json body = nlohmann::json::parse(*payload, nullptr, false);
  if (body.is_discarded()) {
    return failure(std::move(r), "body is not JSON");
  }
  if (!body.is_object()) {
    return failure(std::move(r), "body is not a JSON object");
  }
  r.body = body;
  try {
    if (canonical_json(body) != *payload) {
      return failure(std::move(r), "body is not canonical JSON");
    }
  } catch (const JcsError& e) {
    return failure(std::move(r), std::string("body is not canonical JSON: ") + e.what());
  }
  if (const std::string where = find_non_integer(body, ""); !where.empty()) {
    return failure(std::move(r), "body field " + where + " is not an integer");
  }

  // --- common fields ---
  const auto missing = [&](const char* name) { return !body.contains(name); };
  for (const char* name : {"v", "gateway", "seq", "prev", "id", "type", "time_ms", "created_ms"}) {
    if (missing(name)) {
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
  const auto& gateway = body["gateway"].get_ref<const std::string&>();
  if (!body["id"].is_string()) {
    return failure(std::move(r), "field \"id\" is not a string");
  }
  if (const std::string expected_id = gateway + ":" + std::to_string(seq); r.id != expected_id) {
    return failure(std::move(r), "id " + r.id + " is not <gateway>:<seq> (" + expected_id + ")");
  }
  if (!body["prev"].is_string() || !is_lower_hex64(body["prev"].get_ref<const std::string&>())) {
    return failure(std::move(r), "field \"prev\" is not 64 lower-case hex digits");
  }
  const auto& prev = body["prev"].get_ref<const std::string&>();
  if (!body["type"].is_string() || body["type"].get_ref<const std::string&>().empty()) {
    return failure(std::move(r), "field \"type\" is not a non-empty string");
  }
  if (!body["time_ms"].is_number_integer()) {
    return failure(std::move(r), "field \"time_ms\" is not an integer");
  }
  if (!body["created_ms"].is_number_integer()) {
    return failure(std::move(r), "field \"created_ms\" is not an integer");
  }

  // --- chain ---
  if (!gateway_.empty() && gateway != gateway_) {
    return failure(std::move(r), "gateway changes from " + gateway_ + " to " + gateway);
  }
  if (seq == 1 && prev != kZeroHash) {
    return failure(std::move(r), "prev of seq 1 is not 64 zeros");
  }
  if (!last_seq_) {
    if (from_start_ && seq != 1) {
      return failure(std::move(r), "first record is seq " + std::to_string(seq) + ", expected seq 1");
    }
  } else {
    const std::uint64_t last = *last_seq_;
    if (seq == last + 1) {
      if (prev != last_jws_sha256_) {
        return failure(std::move(r), "prev of seq " + std::to_string(seq) + " does not match SHA-256 of seq " +
                                         std::to_string(last));
      }
    } else if (seq > last + 1) {
      return failure(std::move(r), "seq " + std::to_string(seq) + " follows " + std::to_string(last) + ": " +
                                       plural(seq - last - 1, "record", "records") + " missing");
    } else if (recent_by_seq_.count(seq) != 0) {
      return failure(std::move(r), "seq " + std::to_string(seq) +
                                       " was already received with different bytes (a second record with id " +
                                       r.id + ")");
    } else {
      return failure(std::move(r), "seq " + std::to_string(seq) + " arrives after seq " + std::to_string(last) +
                                       " (out of order)");
    }
  }
  if (gateway_.empty()) {
    gateway_ = gateway;
  }
  r.ok = true;
  return r;
}

}  // namespace cpd
