// libFuzzer target: the recorder dock's JSON answers (status, listing, one ledger entry, 4xx errors).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "adapters/recorder/dock_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto listing = cpd::adapters::parse_dock_listing(text);
  if (listing && listing.value->files.size() > cpd::adapters::kDockMaxFiles) {
    std::abort();  // the bound is part of the contract
  }
  if (!listing && listing.error.reason.empty()) {
    std::abort();  // a rejection always names its counted reason
  }
  (void)cpd::adapters::parse_dock_status(text);
  (void)cpd::adapters::parse_dock_file(text);
  (void)cpd::adapters::dock_error_text(text);
  return 0;
}
