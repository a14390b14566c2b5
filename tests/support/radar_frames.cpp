// Radar frame builders: exact field formatting from the protocol table, with correct or broken checksums.
#include "tests/support/radar_frames.h"

#include <cstdio>
#include <cstdlib>

namespace cpd::test {
namespace {

constexpr std::int64_t kWrapCs = 10'000'000;

// Formats a non-negative fixed-point value (in units of 10^-frac) with `int_digits` zero-padded
// integer digits. Out-of-range values come out wider, which tests use to build bad fields.
std::string fixed(std::int64_t v, int int_digits, int frac_digits) {
  std::int64_t scale = 1;
  for (int i = 0; i < frac_digits; ++i) {
    scale *= 10;
  }
  const std::int64_t a = std::llabs(v);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s%0*lld.%0*lld", v < 0 ? "-" : "", int_digits,
                static_cast<long long>(a / scale), frac_digits, static_cast<long long>(a % scale));
  return buf;
}

std::string two(int v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02d", v);
  return buf;
}

}  // namespace

std::uint8_t radar_body_checksum(std::string_view body) {
  std::uint8_t cs = 0;
  for (unsigned char c : body) {
    cs ^= c;
  }
  return cs;
}

std::string radar_time_field(std::int64_t time_cs) {
  return fixed(((time_cs % kWrapCs) + kWrapCs) % kWrapCs, 5, 2);
}

std::string detect_body(const DetectFields& f) {
  std::string x = (f.x_tenths < 0 ? "-" : "+") + fixed(std::llabs(f.x_tenths), 2, 1);
  return "02," + radar_time_field(f.time_cs) + "," + two(f.target) + "," + two(f.targets) + "," +
         std::string(1, f.dir) + "," + fixed(f.speed_tenths, 3, 1) + "," + std::string(1, f.units) + "," +
         fixed(f.range_dm, 3, 1) + "," + x + "," + std::string(1, f.coord) + "," +
         fixed(f.amplitude_ddb, 3, 1);
}

std::string status_body(const StatusFields& f) {
  return "09," + radar_time_field(f.time_cs) + "," + two(f.code) + "," + f.text;
}

std::string radar_frame(std::string_view body, std::optional<std::uint8_t> checksum) {
  const std::uint8_t cs = checksum.value_or(radar_body_checksum(body));
  char hex[3];
  std::snprintf(hex, sizeof hex, "%02X", static_cast<unsigned>(cs));
  std::string out;
  out.reserve(body.size() + 5);
  out.push_back('\x02');
  out.append(body);
  out.push_back('*');
  out.append(hex, 2);
  out.push_back('\x03');
  return out;
}

std::string detect_frame(const DetectFields& f) {
  return radar_frame(detect_body(f));
}

std::string status_frame(const StatusFields& f) {
  return radar_frame(status_body(f));
}

std::string status_frame(std::int64_t time_cs, int code, std::string_view text) {
  return status_frame(StatusFields{time_cs, code, std::string(text)});
}

std::string with_wrong_checksum(std::string_view frame, std::uint8_t mask) {
  // frame = STX body '*' H H ETX
  std::string_view body = frame.substr(1, frame.size() - 5);
  return radar_frame(body, static_cast<std::uint8_t>(radar_body_checksum(body) ^ (mask ? mask : 1)));
}

std::string overlong_frame(std::size_t total_bytes) {
  std::string body = "09,00000.00,00,";
  while (body.size() + 5 < total_bytes) {
    body.push_back('A');
  }
  return radar_frame(body);
}

std::string noise_bytes(std::size_t n, std::mt19937_64& rng) {
  std::string out;
  out.reserve(n);
  while (out.size() < n) {
    const auto b = static_cast<char>(rng() & 0xFF);
    if (b != '\x02') {
      out.push_back(b);
    }
  }
  return out;
}

std::string radar_status_text(int code) {
  switch (code) {
    case 0:
      return "OK";
    case 10:
      return "HIGH TEMPERATURE";
    case 11:
      return "LOW SUPPLY VOLTAGE";
    case 20:
      return "ANTENNA FAULT";
    case 21:
      return "SELF-TEST FAILED";
    case 22:
      return "CALIBRATION LOST";
    default:
      return "STATUS " + two(code);
  }
}

}  // namespace cpd::test
