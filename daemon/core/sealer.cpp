// Sealer: builds the canonical record body, signs "<header>.<payload>" (JWS Compact, EdDSA) and chains
// each record to the SHA-256 of the previous JWS bytes. Pure: key, head and times come in from outside.
#include "daemon/core/sealer.h"

#include <array>
#include <cmath>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"

namespace cpd {

namespace {

constexpr std::array<std::string_view, 8> kReservedMembers = {"v",    "gateway", "seq",     "prev",
                                                              "id",   "type",    "time_ms", "created_ms"};
constexpr double kMaxExact = 9007199254740992.0;  // 2^53

// The feed carries integers only (contract): a fraction here is a producer bug, not data to round.
// Returns the path of the first offending value ("" when all is well); paths are built only on failure.
std::string first_non_integer(const nlohmann::json& v) {
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::trunc(d) != d || std::fabs(d) > kMaxExact) {
      return " is not an integer within ±2^53";
    }
  } else if (v.is_number_integer()) {
    const bool in_range = v.is_number_unsigned()
                              ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(kMaxExact)
                              : (v.get<std::int64_t>() <= static_cast<std::int64_t>(kMaxExact) &&
                                 v.get<std::int64_t>() >= -static_cast<std::int64_t>(kMaxExact));
    if (!in_range) {
      return " is an integer outside ±2^53";
    }
  } else if (v.is_object()) {
    for (const auto& [key, member] : v.get_ref<const nlohmann::json::object_t&>()) {
      if (auto bad = first_non_integer(member); !bad.empty()) {
        return "." + key + bad;
      }
    }
  } else if (v.is_array()) {
    std::size_t i = 0;
    for (const auto& element : v) {
      if (auto bad = first_non_integer(element); !bad.empty()) {
        return "[" + std::to_string(i) + "]" + bad;
      }
      ++i;
    }
  } else if (v.is_binary()) {
    return " holds binary data";
  }
  return {};
}

void check_integers_only(const nlohmann::json& v, const std::string& where) {
  if (auto bad = first_non_integer(v); !bad.empty()) {
    throw std::invalid_argument("field " + where + bad);
  }
}

}  // namespace

Sealer::Sealer(const Ed25519PrivateKey& key, std::string gateway_id, ChainHead head)
    : key_(key), gateway_id_(std::move(gateway_id)), head_(std::move(head)), kid_(key.public_key().kid()) {
  if (gateway_id_.empty()) {
    throw std::invalid_argument("gateway id must not be empty");
  }
  const nlohmann::json header = {{"alg", "EdDSA"}, {"kid", kid_}, {"typ", "evidence+jws"}};
  header_b64_ = base64url_encode(canonical_json(header));
}

SealedRecord Sealer::seal(const Fact& fact, UnixMs created_ms) {
  if (fact.type.empty()) {
    throw std::invalid_argument("fact type must not be empty");
  }
  if (!fact.fields.is_object() && !fact.fields.is_null()) {
    throw std::invalid_argument("fact fields must be a JSON object");
  }
  const std::uint64_t seq = head_.seq + 1;
  nlohmann::json body = {
      {"v", 1},
      {"gateway", gateway_id_},
      {"seq", seq},
      {"prev", head_.jws_sha256},
      {"id", gateway_id_ + ":" + std::to_string(seq)},
      {"type", fact.type},
      {"time_ms", fact.time_ms},
      {"created_ms", created_ms},
  };
  if (fact.fields.is_object()) {
    for (const auto& [key, value] : fact.fields.items()) {
      for (const auto reserved : kReservedMembers) {
        if (key == reserved) {
          throw std::invalid_argument("field name \"" + key + "\" is reserved for the record envelope");
        }
      }
      check_integers_only(value, key);
      body[key] = value;
    }
  }

  std::string payload;
  try {
    payload = canonical_json(body);  // also rejects out-of-range times/seq and invalid UTF-8
  } catch (const JcsError& e) {
    throw std::invalid_argument(std::string("record body cannot be canonicalised: ") + e.what());
  }
  std::string jws = header_b64_;
  jws.push_back('.');
  jws += base64url_encode(payload);
  const std::string signature = key_.sign(jws);
  jws.push_back('.');
  jws += base64url_encode(signature);

  SealedRecord record;
  record.seq = seq;
  record.id = gateway_id_ + ":" + std::to_string(seq);
  record.type = fact.type;
  record.time_ms = fact.time_ms;
  record.created_ms = created_ms;
  record.media = fact.media;
  record.kept_media = fact.kept_media;
  record.link_span = fact.link_span;
  record.dock_update = fact.dock_update;
  head_ = ChainHead{seq, sha256_hex(jws)};
  record.jws = std::move(jws);
  return record;
}

}  // namespace cpd
