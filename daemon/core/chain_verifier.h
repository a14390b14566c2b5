// ChainVerifier: what a central consumer checks, record by record: signature, seq continuity, prev chain.
#pragma once

#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "daemon/core/ed25519.h"

namespace cpd {

struct VerifyResult {
  bool ok = false;
  bool duplicate = false;  // identical bytes with an id already seen (QoS 1 redelivery): skip it
  std::uint64_t seq = 0;
  std::string id;
  std::string reason;   // why it failed, for the operator
  nlohmann::json body;  // the decoded record body when the signature verified
};

class ChainVerifier {
 public:
  explicit ChainVerifier(Ed25519PublicKey key);
  // Checks one JWS: header (alg EdDSA, typ evidence+jws, kid of the key in force), signature, body fields,
  // seq = previous seq + 1 (the first record seen may start anywhere unless expect_from_start),
  // prev = SHA-256 of the previous JWS bytes. A verified key_rotation record switches the key in force to
  // the one it names (docs/records.md); a malformed one fails.
  VerifyResult feed(std::string_view jws);
  void expect_from_start(bool on) { from_start_ = on; }
  std::uint64_t verified() const { return verified_; }
  std::uint64_t duplicates() const { return duplicates_; }
  // The first and last seq accepted so far (nullopt before the first verified record).
  std::optional<std::uint64_t> first_seq() const { return first_seq_; }
  std::optional<std::uint64_t> last_seq() const { return last_seq_; }
  // The kid of the key in force: the one given, or the last one a verified key_rotation record named.
  const std::string& kid() const { return kid_; }
  // key_rotation records followed so far.
  std::uint64_t rotations() const { return rotations_; }
  // The gateway id of the chain, fixed by the first verified record (empty before).
  const std::string& gateway() const { return gateway_; }

  // How many recent records are remembered to recognise redeliveries.
  static constexpr std::size_t kRecentLimit = 10000;

 private:
  Ed25519PublicKey key_;
  std::string kid_;
  bool from_start_ = false;
  std::optional<std::uint64_t> last_seq_;
  std::string last_jws_sha256_;
  std::string last_id_;
  std::uint64_t verified_ = 0;
  std::uint64_t duplicates_ = 0;
  std::uint64_t rotations_ = 0;
  std::optional<std::uint64_t> first_seq_;
  std::string gateway_;
  // Bounded memory of recent records: seq -> SHA-256 of its JWS, and the reverse to spot redeliveries.
  std::unordered_map<std::uint64_t, std::string> recent_by_seq_;
  std::unordered_map<std::string, std::uint64_t> recent_by_hash_;
  std::deque<std::uint64_t> recent_order_;

  VerifyResult check(std::string_view jws, const std::string& jws_sha256);
  void remember(std::uint64_t seq, const std::string& jws_sha256);
};

}  // namespace cpd
