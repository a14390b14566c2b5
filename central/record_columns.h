// What central decodes from a verified record body for the back office's columns (the JWS itself stays
// the evidence), and which pictures the record names. Pure.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cpd::central {

// The longest `type` or `plate` copied to its indexed column. A B-tree index entry holds at most ~2.7 kB
// (PostgreSQL's "index row size exceeds btree maximum"): a signed record with a longer value (a camera
// sending 8 kB as a plate) would be refused by PostgreSQL on every resend, and custody would stop there.
// Such a value is left out of its column (`type` ''; `plate` NULL); the body and the JWS hold it.
inline constexpr std::size_t kMaxIndexedText = 256;

struct RecordColumns {
  std::string type;
  long long time_ms = 0;
  long long created_ms = 0;
  std::optional<std::string> site;  // the `site` object as JSON text
  std::optional<std::string> plate;
  std::optional<std::string> plate_color;
  std::optional<long long> lane;
  std::optional<long long> speed_dkmh;
  std::optional<long long> limit_kmh;
  std::optional<bool> enforceable;
  std::optional<std::string> reasons;  // JSON array text
  std::vector<std::string> pictures;   // SHA-256 of each picture named (published media)
};

// Never throws: a member of an unexpected type is simply left out of the columns.
RecordColumns record_columns(const nlohmann::json& body);

}  // namespace cpd::central
