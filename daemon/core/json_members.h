// Typed reads of one member of a JSON object received from a peer (custody and file transfer messages): the
// member must exist and have exactly the type asked for; nothing is converted.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace cpd::json_members {

inline bool get_u64(const nlohmann::json& body, const char* name, std::uint64_t& out) {
  const auto it = body.find(name);
  if (it == body.end() || !it->is_number_unsigned()) {
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
