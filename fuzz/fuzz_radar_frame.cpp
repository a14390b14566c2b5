// libFuzzer target: the radar's framed ASCII protocol, both the one-frame parser and the streaming
// parser fed in chunks whose sizes the input chooses (a frame may be cut anywhere on a TCP link).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "adapters/radar/radar_frame_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  // The first byte picks the chunk size, so the fuzzer explores every way a frame can be split.
  const std::size_t chunk = static_cast<std::size_t>(data[0] % 64) + 1;
  const std::string_view stream = all.substr(1);

  const auto one = cpd::adapters::parse_radar_frame(stream);
  if (const auto* frame = std::get_if<cpd::adapters::RadarFrame>(&one)) {
    if (frame->raw.size() > cpd::adapters::kRadarMaxFrameBytes) {
      std::abort();  // an accepted frame above the protocol bound is a parser bug
    }
  }

  cpd::adapters::RadarFrameParser parser;
  std::vector<cpd::adapters::RadarFrame> frames;
  for (std::size_t at = 0; at < stream.size(); at += chunk) {
    parser.feed(stream.substr(at, chunk), frames);
  }
  parser.reset();
  for (const auto& f : frames) {
    if (f.raw.size() > cpd::adapters::kRadarMaxFrameBytes || f.raw.front() != cpd::adapters::kRadarStx ||
        f.raw.back() != cpd::adapters::kRadarEtx) {
      std::abort();
    }
  }
  if (parser.counters().frames != frames.size()) {
    std::abort();  // every emitted frame is counted, and only those
  }
  return 0;
}
