// The custody protocol's messages (docs/custody.md), built and checked without I/O: the custody receipt
// central signs, the head announcement a gateway signs, and the resend request and reply.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/ed25519.h"
#include "daemon/core/record_check.h"
#include "daemon/core/time.h"

namespace cpd::custody {

inline constexpr std::string_view kReceiptTyp = "custody+jws";
inline constexpr std::string_view kHeadTyp = "head+jws";

// Central durably holds and has verified every record of `gateway` through `through_seq`, whose JWS hashes
// to `head`, and every picture those records name.
struct Receipt {
  std::string central;
  std::string gateway;
  std::uint64_t through_seq = 0;
  std::string head;  // lower-case hex SHA-256 of record through_seq's JWS bytes
  UnixMs issued_ms = 0;
  // Within 1..through_seq, what central does not hold because the gateway reported it no longer holds it
  // and an operator accepted the loss (checkpoint-central accept-loss): seq ranges, and pictures (SHA-256)
  // named by records through through_seq. Members left out of the body when empty. At most kMaxLosses each.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> lost_seqs;
  std::vector<std::string> lost_pictures;
  bool operator==(const Receipt&) const = default;
};
inline constexpr std::size_t kMaxLosses = 1000;

std::string seal_receipt(const Ed25519PrivateKey& central_key, const Receipt& receipt);

struct ReceiptCheck {
  bool ok = false;
  std::string reason;  // why it was refused
  std::string kid;     // the signing key's kid, when the header named one
  Receipt receipt;
};
// Signature by one of the trusted central keys, well-formed members, names `gateway`. The head hash is
// compared with the gateway's own record by the caller (the store holds it).
ReceiptCheck check_receipt(std::string_view jws, const KeyForKid& central_keys, const std::string& gateway);

// The gateway's chain head: announced (retained) so central sees a lost tail, not only holes.
struct Head {
  std::string gateway;
  std::uint64_t seq = 0;
  std::string head;  // SHA-256 of record seq's JWS (64 zeros for seq 0)
  UnixMs time_ms = 0;
  bool operator==(const Head&) const = default;
};

std::string seal_head(const Ed25519PrivateKey& gateway_key, const Head& head);

struct HeadCheck {
  bool ok = false;
  bool unknown_key = false;
  std::string reason;
  std::string kid;
  Head head;
};
HeadCheck check_head(std::string_view jws, const KeyForKid& gateway_keys, const std::string& gateway);

// The details of the `audit` record `store_replaced` (docs/custody.md, "A replaced store"): a gateway that
// started on an empty store continues its chain after `receipt` (checked, signed by the key `kid`,
// `receipt_jws` as received); `why` says why the store was empty as far as the gateway can tell.
nlohmann::json store_replaced_details(const Receipt& receipt, const std::string& kid,
                                      const std::string& receipt_jws, const std::string& why);

// Central asks a gateway to publish again records [from_seq, to_seq] and/or media files by SHA-256.
struct ResendRequest {
  std::uint64_t from_seq = 0;  // 0 with to_seq 0: no records asked
  std::uint64_t to_seq = 0;
  std::vector<std::string> media;
};
inline constexpr std::uint64_t kMaxResendRange = 100000;  // records one request may ask for
// No seq reaches 2^53 (the feed's integers are exact doubles): a request beyond it is refused, not walked.
inline constexpr std::uint64_t kMaxSeq = std::uint64_t{1} << 53;
// An empty store continues its chain after a receipt through N (docs/custody.md, "A replaced store"): N + 1
// and every seq after it must stay below kMaxSeq, so such a receipt is taken only for N below 2^52. One
// through 2^53 (signed by a faulty central) made the first seal after it fail, and the start abort, for good.
inline constexpr std::uint64_t kMaxOriginSeq = std::uint64_t{1} << 52;
inline constexpr std::size_t kMaxResendMedia = 1000;  // media files one request may ask for
// A picture on the media topic is at most this (central refuses a larger payload); a resend reads no file
// larger than this, and only files the store names as published pictures (never a body-worn recording).
inline constexpr std::size_t kMaxPictureBytes = std::size_t{64} << 20;
inline constexpr std::size_t kMaxRequestBytes = 128 * 1024;

// Parses a request payload; refuses (with a reason) anything malformed or beyond the bounds above.
struct ResendParse {
  std::optional<ResendRequest> request;
  std::string reason;
};
ResendParse parse_resend_request(std::string_view payload);
std::string resend_request_json(const ResendRequest& request);

// What the gateway did with a request.
struct ResendReply {
  std::uint64_t from_seq = 0;
  std::uint64_t to_seq = 0;
  std::uint64_t sent = 0;                                         // records published again
  std::vector<std::pair<std::uint64_t, std::uint64_t>> not_held;  // seq ranges it no longer (or never) held
  std::vector<std::string> media_sent;
  std::vector<std::string> media_not_held;
  std::string error;  // non-empty: the request was refused, and why
};
std::string resend_reply_json(const ResendReply& reply);
std::optional<ResendReply> parse_resend_reply(std::string_view payload);

}  // namespace cpd::custody
