// libFuzzer target: RFC 8785 canonicalisation of parsed JSON. Besides not crashing, canonical text must
// be a fixed point: parsing it and canonicalising again gives the same bytes (a verifier relies on it).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "daemon/core/jcs.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
  if (value.is_discarded()) {
    return 0;
  }
  std::string canonical;
  try {
    canonical = cpd::canonical_json(value);
  } catch (const cpd::JcsError&) {
    return 0;  // NaN, inexact integers, invalid UTF-8: refused by design
  }
  const nlohmann::json again = nlohmann::json::parse(canonical, nullptr, false);
  if (again.is_discarded()) {
    std::abort();  // canonical text that is not JSON
  }
  std::string twice;
  try {
    twice = cpd::canonical_json(again);
  } catch (const cpd::JcsError&) {
    std::abort();  // accepted once, refused the second time
  }
  if (twice != canonical) {
    std::abort();  // not a fixed point
  }
  return 0;
}
