// libFuzzer target: the camera's ISAPI XML documents and time formats (alert, DeviceInfo, Time).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "adapters/camera/isapi_xml.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)cpd::adapters::parse_alert(text);
  (void)cpd::adapters::parse_device_info(text);
  (void)cpd::adapters::parse_time(text);
  // The time parsers are reached from the documents too, but short inputs explore them directly.
  if (size < 64) {
    (void)cpd::adapters::parse_iso8601(text);
    const int offset = size > 0 ? (data[0] - 128) * 10 : 0;
    (void)cpd::adapters::parse_abs_time(text, offset);
  }
  return 0;
}
