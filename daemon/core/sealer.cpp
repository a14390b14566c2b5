// Sealer: builds the canonical record body, signs "<header>.<payload>" (JWS Compact, EdDSA) and chains
// each record to the SHA-256 of the previous JWS bytes. Pure: key, head and times come in from outside.
#include "daemon/core/sealer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/jcs.h"

namespace cpd {

namespace {

constexpr std::array<std::string_view, 8> kReservedMembers = {"v",  "gateway", "seq",     "prev",
                                                              "id", "type",    "time_ms", "created_ms"};
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

std::string child_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

std::string index_path(const std::string& parent, std::size_t i) {
  return parent + "[" + std::to_string(i) + "]";
}

// Escapes a string that is not UTF-8 in place; true if it was one.
bool escape_if_not_utf8(nlohmann::json& v) {
  if (!v.is_string()) {
    return false;
  }
  auto& s = v.get_ref<std::string&>();
  if (is_valid_utf8(s)) {
    return false;
  }
  s = escape_invalid_utf8(s);
  return true;
}

void escape_under(nlohmann::json& v, const std::string& path, std::vector<std::string>& paths) {
  if (v.is_object()) {
    std::vector<std::pair<std::string, nlohmann::json>> raw;  // siblings to add after the walk
    for (auto& [key, member] : v.get_ref<nlohmann::json::object_t&>()) {
      const std::string p = child_path(path, key);
      if (member.is_string()) {
        const std::string bytes = member.get<std::string>();
        if (escape_if_not_utf8(member)) {
          raw.emplace_back(key + "_raw_b64", base64_encode(bytes));
          paths.push_back(p);
        }
      } else if (member.is_array()) {
        nlohmann::json by_index = nlohmann::json::object();
        for (std::size_t i = 0; i < member.size(); ++i) {
          auto& element = member[i];
          if (element.is_string()) {
            const std::string bytes = element.get<std::string>();
            if (escape_if_not_utf8(element)) {
              by_index[std::to_string(i)] = base64_encode(bytes);
              paths.push_back(index_path(p, i));
            }
          } else {
            escape_under(element, index_path(p, i), paths);
          }
        }
        if (!by_index.empty()) {
          raw.emplace_back(key + "_raw_b64", std::move(by_index));
        }
      } else {
        escape_under(member, p, paths);
      }
    }
    for (auto& [name, value] : raw) {
      // Never replace a member: the escaped text alone is lossless too.
      if (!v.contains(name)) {
        v[name] = std::move(value);
      }
    }
  } else if (v.is_array()) {
    // An array inside an array has no member name to put the raw bytes beside: the escape (lossless) only.
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (escape_if_not_utf8(v[i])) {
        paths.push_back(index_path(path, i));
      } else {
        escape_under(v[i], index_path(path, i), paths);
      }
    }
  }
}

// Records are shallow; a fact nested deeper than this is a bug, and JCS refuses 256 levels.
constexpr int kMaxSalvageDepth = 64;

struct Dropped {
  std::string path;
  std::string reason;
  std::optional<std::string> text;  // the value's JSON text, where it has one
};

std::string json_text(const nlohmann::json& v) {
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A copy of `v` (an object or array) without what cannot be sealed, each left-out member named.
nlohmann::json prune(const nlohmann::json& v, const std::string& path, int depth,
                     std::vector<Dropped>& dropped) {
  auto keep = [&](const nlohmann::json& member, const std::string& p) -> std::optional<nlohmann::json> {
    if (member.is_binary() || member.is_discarded()) {
      dropped.push_back({p, "binary or discarded value has no JSON form", std::nullopt});
      return std::nullopt;
    }
    if (member.is_number()) {
      if (auto bad = first_non_integer(member); !bad.empty()) {
        dropped.push_back({p, "value" + bad, json_text(member)});
        return std::nullopt;
      }
      return member;
    }
    if (member.is_object() || member.is_array()) {
      if (depth + 1 >= kMaxSalvageDepth) {
        dropped.push_back({p, "nested too deeply", std::nullopt});
        return std::nullopt;
      }
      return prune(member, p, depth + 1, dropped);
    }
    return member;
  };
  if (v.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (std::size_t i = 0; i < v.size(); ++i) {
      // An element left out would shift the indexes after it: it stays, as null, and is named.
      auto kept = keep(v[i], index_path(path, i));
      out.push_back(kept ? std::move(*kept) : nlohmann::json());
    }
    return out;
  }
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, member] : v.get_ref<const nlohmann::json::object_t&>()) {
    if (!is_valid_utf8(key)) {
      dropped.push_back(
          {child_path(path, escape_invalid_utf8(key)), "member name is not valid UTF-8", json_text(member)});
      continue;
    }
    const std::string p = child_path(path, key);
    if (path.empty() &&
        std::find(kReservedMembers.begin(), kReservedMembers.end(), key) != kReservedMembers.end()) {
      dropped.push_back({p, "name reserved for the record envelope", json_text(member)});
      continue;
    }
    if (auto kept = keep(member, p)) {
      out[key] = std::move(*kept);
    }
  }
  return out;
}

// A fact's validity flag and reasons, where it has them: a record with members left out is not evidence
// to enforce on, whatever its checks said.
void mark_incomplete(nlohmann::json& fields) {
  for (const auto& [flag, reasons] :
       {std::pair{"enforceable", "reasons"}, std::pair{"valid", "invalid_reasons"}}) {
    if (fields.contains(flag) && fields[flag].is_boolean()) {
      fields[flag] = false;
      if (!fields.contains(reasons) || !fields[reasons].is_array()) {
        fields[reasons] = nlohmann::json::array();
      }
      fields[reasons].push_back("unsealable_fields");
    }
  }
}

}  // namespace

std::vector<std::string> escape_text_not_utf8(nlohmann::json& fields) {
  std::vector<std::string> paths;
  escape_under(fields, "", paths);
  if (paths.empty() || !fields.is_object()) {
    return paths;
  }
  auto& listed = fields["text_not_utf8"];
  if (!listed.is_array()) {
    listed = nlohmann::json::array();
  }
  std::vector<std::string> all = paths;
  for (const auto& p : listed) {
    if (p.is_string()) {
      all.push_back(p.get<std::string>());
    }
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  listed = all;
  std::sort(paths.begin(), paths.end());
  return paths;
}

Sealer::Sealer(const Ed25519PrivateKey& key, std::string gateway_id, ChainHead head)
    : key_(key), gateway_id_(std::move(gateway_id)), head_(std::move(head)) {
  if (gateway_id_.empty()) {
    throw std::invalid_argument("gateway id must not be empty");
  }
  use_key(key);
}

void Sealer::use_key(const Ed25519PrivateKey& key) {
  key_ = key;
  kid_ = key.public_key().kid();
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
  if (!site_.is_null() && !body.contains("site")) {
    body["site"] = site_;
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
  head_ = ChainHead{seq, sha256_hex(jws)};
  record.jws = std::move(jws);
  return record;
}

SealedRecord Sealer::seal_or_salvage(const Fact& fact, UnixMs created_ms) {
  std::string refused;
  try {
    return seal(fact, created_ms);
  } catch (const std::invalid_argument& e) {
    refused = e.what();
  }
  Fact salvaged;
  salvaged.type = fact.type;
  salvaged.time_ms = fact.time_ms;
  salvaged.media = fact.media;
  std::vector<Dropped> dropped;
  if (salvaged.type.empty()) {
    salvaged.type = "fault";
    dropped.push_back({"type", "empty fact type", std::nullopt});
  }
  if (!is_valid_utf8(salvaged.type)) {
    dropped.push_back({"type", "fact type is not valid UTF-8", escape_invalid_utf8(salvaged.type)});
    salvaged.type = "fault";
  }
  if (!first_non_integer(nlohmann::json(salvaged.time_ms)).empty()) {
    dropped.push_back(
        {"time_ms", "beyond ±2^53 (the record has created_ms instead)", std::to_string(fact.time_ms)});
    salvaged.time_ms = created_ms;
  }
  nlohmann::json fields = fact.fields;
  if (fields.is_null()) {
    fields = nlohmann::json::object();
  } else if (!fields.is_object()) {
    dropped.push_back({"fields", "fact fields are not a JSON object", json_text(fields)});
    fields = nlohmann::json::object();
  }
  escape_text_not_utf8(fields);
  fields = prune(fields, "", 0, dropped);
  // Whatever else nobody foresaw: a member that still cannot be canonicalised on its own is left out too,
  // so the body, whose members each canonicalise, always does.
  for (auto it = fields.begin(); it != fields.end();) {
    try {
      canonical_json(nlohmann::json{{it.key(), it.value()}});
      ++it;
    } catch (const JcsError& e) {
      dropped.push_back({it.key(), e.what(), std::nullopt});
      it = fields.erase(it);
    }
  }
  salvaged.fields = std::move(fields);
  if (!dropped.empty()) {
    nlohmann::json named = nlohmann::json::array();
    for (const auto& d : dropped) {
      nlohmann::json entry = {{"path", d.path}, {"reason", d.reason}};
      if (d.text) {
        entry["text"] = is_valid_utf8(*d.text) ? *d.text : escape_invalid_utf8(*d.text);
      }
      named.push_back(std::move(entry));
    }
    salvaged.fields["unsealable_fields"] = std::move(named);
    mark_incomplete(salvaged.fields);
  }
  SealedRecord record = seal(salvaged, created_ms);
  record.salvage_reason = std::move(refused);
  for (const auto& d : dropped) {
    record.unsealable.push_back(d.path);
  }
  return record;
}

}  // namespace cpd
