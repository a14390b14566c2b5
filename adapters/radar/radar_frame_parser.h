// Streaming parser for the radar's framed ASCII protocol (STX body '*' CS ETX): pure, no I/O, fuzzable.
// It turns arbitrary byte chunks into typed detect (02) and status (09) frames and counts every discard.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace cpd::adapters {

inline constexpr char kRadarStx = '\x02';
inline constexpr char kRadarEtx = '\x03';
inline constexpr std::size_t kRadarMaxFrameBytes = 128;        // STX..ETX inclusive
inline constexpr std::int64_t kRadarClockWrapCs = 10'000'000;  // the clock wraps at 100000 s

// Why a frame was discarded. The names (frame_error_name) are metric labels.
enum class FrameError : std::uint8_t {
  kChecksum,     // checksum missing, malformed or not matching
  kTooLong,      // more than 128 bytes from STX to ETX
  kFieldCount,   // wrong number of fields for the message type
  kFieldSyntax,  // a field does not have its documented form
  kUnknownType,  // message type other than 02 and 09
  kTruncated,    // cut by a new STX or by the link going down
};
inline constexpr std::size_t kFrameErrorCount = 6;

std::string_view frame_error_name(FrameError error);

// Message 02, fields kept exact as integers (tenths / hundredths), units as sent.
struct RadarDetect {
  std::int64_t time_cs = 0;        // radar clock, 0..9999999 centiseconds
  int target = 0;                  // 1..99
  int targets = 0;                 // 0..99
  char dir = 'A';                  // A, R, X or Y
  std::int32_t speed_tenths = 0;   // in `units`
  char units = 'K';                // K or M
  std::int32_t range_dm = 0;       // metres * 10
  std::int32_t x_tenths = 0;       // metres * 10 (coord C) or degrees * 10 (coord P)
  char coord = 'C';                // C or P
  std::int32_t amplitude_ddb = 0;  // dB * 10
};

// Message 09.
struct RadarStatus {
  std::int64_t time_cs = 0;
  int code = 0;      // 00..99
  std::string text;  // <= 40 printable chars, no ',' or '*'
};

struct RadarFrame {
  std::variant<RadarDetect, RadarStatus> message;
  std::string raw;  // STX..ETX inclusive, as received
};

// Either a frame or the reason it was rejected.
using RadarFrameResult = std::variant<RadarFrame, FrameError>;

// Parses one complete frame (STX..ETX inclusive); used by the streaming parser and by fuzz targets.
RadarFrameResult parse_radar_frame(std::string_view raw);

// XOR of the body bytes: the protocol's checksum.
std::uint8_t radar_checksum(std::string_view body);

class RadarFrameParser {
 public:
  struct Counters {
    std::uint64_t frames = 0;                              // frames accepted
    std::uint64_t noise_bytes = 0;                         // bytes outside any frame
    std::array<std::uint64_t, kFrameErrorCount> errors{};  // indexed by FrameError

    std::uint64_t error(FrameError e) const { return errors[static_cast<std::size_t>(e)]; }
    std::uint64_t total_errors() const;
  };

  // Consumes a chunk; appends every complete valid frame to `out`. Never throws on bad input.
  void feed(std::string_view bytes, std::vector<RadarFrame>& out);
  std::vector<RadarFrame> feed(std::string_view bytes);

  // The link went down: a partial frame cannot be completed (counted as truncated).
  void reset();

  const Counters& counters() const { return counters_; }
  // The rejection reason of the most recent discard (for logs); meaningless before the first one.
  FrameError last_error() const { return last_error_; }

 private:
  enum class State : std::uint8_t { kIdle, kInFrame, kSkipOverlong };

  void discard(FrameError e);

  State state_ = State::kIdle;
  std::string partial_;
  Counters counters_;
  FrameError last_error_ = FrameError::kTruncated;
};

}  // namespace cpd::adapters
