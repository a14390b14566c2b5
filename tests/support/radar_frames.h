// Builders for radar protocol frames (detect 02, status 09) and deliberately broken variants.
// Shared by the unit tests, fuzz seeds and the radar simulator; independent of the adapter's parser.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace cpd::test {

// Typed detect fields in the protocol's own resolution (no floating point, so frames are exact).
struct DetectFields {
  std::int64_t time_cs = 0;        // radar clock, centiseconds (formatted DDDDD.DD, wrapped at 100000 s)
  int target = 1;                  // DD
  int targets = 1;                 // DD
  char dir = 'A';                  // A, R, X, Y
  std::int32_t speed_tenths = 0;   // DDD.D in `units`
  char units = 'K';                // K or M
  std::int32_t range_dm = 0;       // DDD.D metres
  std::int32_t x_tenths = 0;       // +DD.D / -DD.D (metres for C, degrees for P)
  char coord = 'C';                // C or P
  std::int32_t amplitude_ddb = 0;  // DDD.D dB
};

struct StatusFields {
  std::int64_t time_cs = 0;
  int code = 0;
  std::string text = "OK";
};

// The protocol's checksum: XOR of every body byte.
std::uint8_t radar_body_checksum(std::string_view body);

// "DDDDD.DD" for a radar time (taken modulo the 100000 s wrap).
std::string radar_time_field(std::int64_t time_cs);

std::string detect_body(const DetectFields& f);
std::string status_body(const StatusFields& f);

// STX body '*' CS ETX. With `checksum` set, that byte is written instead of the correct one.
std::string radar_frame(std::string_view body, std::optional<std::uint8_t> checksum = std::nullopt);

std::string detect_frame(const DetectFields& f);
std::string status_frame(const StatusFields& f);
std::string status_frame(std::int64_t time_cs, int code, std::string_view text);

// The same frame with a checksum that does not match (the correct one XOR a non-zero mask).
std::string with_wrong_checksum(std::string_view frame, std::uint8_t mask = 0x5A);
// A well-formed checksum over a body with `extra` filler bytes, longer than 128 bytes in total.
std::string overlong_frame(std::size_t total_bytes = 140);
// `n` noise bytes that contain no STX (so they never start a frame).
std::string noise_bytes(std::size_t n, std::mt19937_64& rng);
// The standard status text for a documented code ("OK", "HIGH TEMPERATURE", ...).
std::string radar_status_text(int code);

}  // namespace cpd::test
