// libFuzzer target: the YAML config loader on text. ConfigError is its designed answer to bad input;
// any other exception escaping (or a crash) is a bug, so it is left to reach libFuzzer.
#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/config/config.h"
#include "daemon/config/schema.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)cpd::config::parse_config(text, "fuzz.yaml");
  } catch (const cpd::config::ConfigError&) {
    // Rejected with a place and a reason: the designed outcome.
  }
  return 0;
}
