// Typed reads of one member of a JSON object received from a peer (custody and file transfer messages): the
// member must exist and have exactly the type asked for; nothing is converted.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace cpd::json_members {

// Every integer of these protocols is 0 .. 2^53 (docs/custody.md, "Standards used"): a larger one is no
// exact JSON number for a peer reading numbers as doubles, so it is refused like a wrong type.
inline constexpr std::uint64_t kMaxInt = std::uint64_t{1} << 53;

// Whether a JSON value is an integer from 0 to 2^53 (e.g. an element of an array of integers).
inline bool is_int(const nlohmann::json& value) {
  return value.is_number_unsigned() && value.get<std::uint64_t>() <= kMaxInt;
}

// An integer member from 0 to 2^53.
inline bool get_int(const nlohmann::json& body, const char* name, std::uint64_t& out) {
  const auto it = body.find(name);
  if (it == body.end() || !is_int(*it)) {
    return false;
  }
  out = it->get<std::uint64_t>();
  return true;
}

inline bool get_string(const nlohmann::json& body, const char* name, std::string& out) {
  const auto it = body.find(name);
  if (it == body.end() || !it->is_string()) {
    return false;
  }
  out = it->get<std::string>();
  return true;
}

}  // namespace cpd::json_members
