// ChainVerifier: the consumer-side checks of the evidence feed (header, EdDSA signature, canonical body,
// common fields, seq continuity, prev chain), with QoS 1 redeliveries recognised by their exact bytes.
#include "daemon/core/chain_verifier.h"

#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/key_rotation.h"
#include "daemon/core/record_check.h"

namespace cpd {

namespace {

VerifyResult failure(VerifyResult r, std::string reason) {
  r.ok = false;
  r.reason = std::move(reason);
  return r;
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
  RecordCheck c = check_record(jws, [this](const std::string& kid) -> std::optional<Ed25519PublicKey> {
    if (kid == kid_) {
      return key_;
    }
    return std::nullopt;
  });
  r.seq = c.seq;
  r.id = c.id;
  r.body = std::move(c.body);
  if (c.unknown_key) {
    return failure(std::move(r), "kid " + c.kid + " is not the key's kid " + kid_);
  }
  if (!c.ok) {
    return failure(std::move(r), std::move(c.reason));
  }
  const std::uint64_t seq = c.seq;
  const std::string& gateway = c.gateway;
  const std::string& prev = c.prev;

  // --- chain ---
  if (!gateway_.empty() && gateway != gateway_) {
    return failure(std::move(r), "gateway changes from " + gateway_ + " to " + gateway);
  }
  if (!last_seq_) {
    if (from_start_ && seq != 1) {
      return failure(std::move(r), "first record is seq " + std::to_string(seq) + ", expected seq 1");
    }
  } else {
    const std::uint64_t last = *last_seq_;
    if (seq == last + 1) {
      if (prev != last_jws_sha256_) {
        return failure(std::move(r), "prev of seq " + std::to_string(seq) +
                                         " does not match SHA-256 of seq " + std::to_string(last));
      }
    } else if (seq > last + 1) {
      return failure(std::move(r), "seq " + std::to_string(seq) + " follows " + std::to_string(last) + ": " +
                                       plural(seq - last - 1, "record", "records") + " missing");
    } else if (recent_by_seq_.count(seq) != 0) {
      return failure(std::move(r),
                     "seq " + std::to_string(seq) +
                         " was already received with different bytes (a second record with id " + r.id + ")");
    } else {
      return failure(std::move(r), "seq " + std::to_string(seq) + " arrives after seq " +
                                       std::to_string(last) + " (out of order)");
    }
  }
  // A key_rotation in its place in the chain, signed by the key in force, hands the chain to the key it
  // names: every later record must be signed by that key, and the old one is no longer accepted.
  if (r.body.value("type", std::string()) == "key_rotation") {
    std::string why;
    auto rotation = parse_key_rotation(r.body, c.kid, &why);
    if (!rotation) {
      return failure(std::move(r), std::move(why));
    }
    key_ = std::move(rotation->new_key);
    kid_ = rotation->new_kid;
    ++rotations_;
  }
  if (gateway_.empty()) {
    gateway_ = gateway;
  }
  r.ok = true;
  return r;
}

}  // namespace cpd
