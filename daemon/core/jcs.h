// RFC 8785 JSON Canonicalization Scheme over nlohmann::json values.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace cpd {

class JcsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Canonical UTF-8 text: keys sorted by UTF-16 code units, ECMAScript number form, minimal escaping.
// Throws JcsError for NaN/Infinity, integers beyond IEEE-754 exactness, or invalid UTF-8.
std::string canonical_json(const nlohmann::json& value);

}  // namespace cpd
