// libFuzzer target: a JPEG header read with libjpeg behind our error trap. Any input must give either a
// header of a real size or a short printable reason, and never reach libjpeg's exit() or stderr.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "adapters/common/jpeg_header.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto r = cpd::adapters::read_jpeg_header(bytes);
  if (r.header.has_value() == !r.error.empty()) {
    std::abort();  // exactly one of header and reason
  }
  if (r.header && (r.header->width <= 0 || r.header->height <= 0 || r.header->components <= 0)) {
    std::abort();  // a nonsense size must be refused, not returned
  }
  if (r.error.size() > 200) {
    std::abort();
  }
  for (const char c : r.error) {
    if (c < 0x20 || c > 0x7E) {
      std::abort();  // the reason goes into logs and records: printable ASCII only
    }
  }
  return 0;
}
