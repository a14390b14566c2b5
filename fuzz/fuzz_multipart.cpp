// libFuzzer target: the camera's multipart/mixed alert stream. The first line is the Content-Type
// header value (so the boundary is fuzzed too), the rest the body, fed in input-chosen chunk sizes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/camera/multipart_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t chunk = static_cast<std::size_t>(data[0] % 128) + 1;
  const std::string_view rest = all.substr(1);
  const std::size_t eol = rest.find('\n');
  if (eol == std::string_view::npos) {
    (void)cpd::adapters::multipart_boundary(rest);
    return 0;
  }
  const auto boundary = cpd::adapters::multipart_boundary(rest.substr(0, eol));
  if (!boundary) {
    return 0;
  }
  const std::string_view stream = rest.substr(eol + 1);
  // Small bounds, so the fuzzer reaches the over-long header and part paths with short inputs.
  cpd::adapters::MultipartParser::Limits limits;
  limits.max_header_bytes = 512;
  limits.max_part_bytes = 4096;
  cpd::adapters::MultipartParser parser(*boundary, limits);
  std::vector<cpd::adapters::MultipartPart> parts;
  for (std::size_t at = 0; at < stream.size(); at += chunk) {
    parser.feed(stream.substr(at, chunk), parts);
  }
  parser.reset();
  for (const auto& p : parts) {
    if (p.body.size() > limits.max_part_bytes) {
      std::abort();  // a part above the bound must have been rejected
    }
  }
  if (parser.counters().parts != parts.size()) {
    std::abort();
  }
  return 0;
}
