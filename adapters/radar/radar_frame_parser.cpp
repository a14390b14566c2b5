// Streaming parser for the radar protocol: framing, checksum and the exact field forms of messages 02/09.
// Every rejected frame is counted by reason; the parser resynchronises on the next STX.
#include "adapters/radar/radar_frame_parser.h"

#include <optional>

namespace cpd::adapters {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Reads the digits at `pos`..`pos+n` of `s` as a decimal number; nullopt if any is not a digit.
std::optional<std::int64_t> digits(std::string_view s, std::size_t pos, std::size_t n) {
  std::int64_t v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!is_digit(s[i])) {
      return std::nullopt;
    }
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// A fixed-point field "D...D.D...D" with `int_digits` and `frac_digits`, read as an integer of the
// smallest unit (e.g. DDD.D -> tenths).
std::optional<std::int64_t> fixed(std::string_view s, std::size_t int_digits, std::size_t frac_digits) {
  if (s.size() != int_digits + 1 + frac_digits || s[int_digits] != '.') {
    return std::nullopt;
  }
  auto whole = digits(s, 0, int_digits);
  auto frac = digits(s, int_digits + 1, frac_digits);
  if (!whole || !frac) {
    return std::nullopt;
  }
  std::int64_t scale = 1;
  for (std::size_t i = 0; i < frac_digits; ++i) {
    scale *= 10;
  }
  return *whole * scale + *frac;
}

// "+DD.D" / "-DD.D" in tenths.
std::optional<std::int64_t> signed_tenths(std::string_view s) {
  if (s.size() != 5 || (s[0] != '+' && s[0] != '-')) {
    return std::nullopt;
  }
  auto v = fixed(s.substr(1), 2, 1);
  if (!v) {
    return std::nullopt;
  }
  return s[0] == '-' ? -*v : *v;
}

std::optional<int> two_digits(std::string_view s) {
  if (s.size() != 2) {
    return std::nullopt;
  }
  auto v = digits(s, 0, 2);
  if (!v) {
    return std::nullopt;
  }
  return static_cast<int>(*v);
}

std::optional<char> one_of(std::string_view s, std::string_view allowed) {
  if (s.size() != 1 || allowed.find(s[0]) == std::string_view::npos) {
    return std::nullopt;
  }
  return s[0];
}

std::vector<std::string_view> split_fields(std::string_view body) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  while (true) {
    auto comma = body.find(',', start);
    if (comma == std::string_view::npos) {
      fields.push_back(body.substr(start));
      return fields;
    }
    fields.push_back(body.substr(start, comma - start));
    start = comma + 1;
  }
}

std::optional<int> hex_digit(char c) {
  // The protocol says upper-case hex: a lower-case digit is a malformed checksum.
  if (is_digit(c)) {
    return c - '0';
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return std::nullopt;
}

RadarFrameResult parse_detect(const std::vector<std::string_view>& f, std::string_view raw) {
  if (f.size() != 11) {
    return FrameError::kFieldCount;
  }
  auto time = fixed(f[1], 5, 2);
  auto target = two_digits(f[2]);
  auto targets = two_digits(f[3]);
  auto dir = one_of(f[4], "ARXY");
  auto speed = fixed(f[5], 3, 1);
  auto units = one_of(f[6], "KM");
  auto range = fixed(f[7], 3, 1);
  auto x = signed_tenths(f[8]);
  auto coord = one_of(f[9], "CP");
  auto amplitude = fixed(f[10], 3, 1);
  if (!time || !target || *target < 1 || !targets || !dir || !speed || !units || !range || !x || !coord ||
      !amplitude) {
    return FrameError::kFieldSyntax;
  }
  RadarDetect d;
  d.time_cs = *time;
  d.target = *target;
  d.targets = *targets;
  d.dir = *dir;
  d.speed_tenths = static_cast<std::int32_t>(*speed);
  d.units = *units;
  d.range_dm = static_cast<std::int32_t>(*range);
  d.x_tenths = static_cast<std::int32_t>(*x);
  d.coord = *coord;
  d.amplitude_ddb = static_cast<std::int32_t>(*amplitude);
  return RadarFrame{d, std::string(raw)};
}

RadarFrameResult parse_status(const std::vector<std::string_view>& f, std::string_view raw) {
  if (f.size() != 4) {
    return FrameError::kFieldCount;
  }
  auto time = fixed(f[1], 5, 2);
  auto code = two_digits(f[2]);
  if (!time || !code || f[3].size() > 40) {
    return FrameError::kFieldSyntax;
  }
  for (char c : f[3]) {
    // ',' cannot occur (it splits fields); '*' cannot either (it would break the checksum
    // delimiter); control and non-ASCII bytes are not "free ASCII" text.
    if (c < 0x20 || c > 0x7e || c == '*') {
      return FrameError::kFieldSyntax;
    }
  }
  RadarStatus s;
  s.time_cs = *time;
  s.code = *code;
  s.text = std::string(f[3]);
  return RadarFrame{s, std::string(raw)};
}

}  // namespace

std::string_view frame_error_name(FrameError error) {
  switch (error) {
    case FrameError::kChecksum:
      return "checksum";
    case FrameError::kTooLong:
      return "too_long";
    case FrameError::kFieldCount:
      return "field_count";
    case FrameError::kFieldSyntax:
      return "field_syntax";
    case FrameError::kUnknownType:
      return "unknown_type";
    case FrameError::kTruncated:
      return "truncated";
  }
  return "unknown";
}

std::uint8_t radar_checksum(std::string_view body) {
  std::uint8_t cs = 0;
  for (char c : body) {
    cs = static_cast<std::uint8_t>(cs ^ static_cast<std::uint8_t>(c));
  }
  return cs;
}

RadarFrameResult parse_radar_frame(std::string_view raw) {
  if (raw.size() > kRadarMaxFrameBytes) {
    return FrameError::kTooLong;
  }
  if (raw.size() < 2 || raw.front() != kRadarStx || raw.back() != kRadarEtx) {
    return FrameError::kTruncated;
  }
  // Smallest shape with a checksum: STX '*' H H ETX.
  if (raw.size() < 5) {
    return FrameError::kChecksum;
  }
  std::string_view inner = raw.substr(1, raw.size() - 2);  // body '*' H H
  if (inner[inner.size() - 3] != '*') {
    return FrameError::kChecksum;
  }
  auto hi = hex_digit(inner[inner.size() - 2]);
  auto lo = hex_digit(inner[inner.size() - 1]);
  std::string_view body = inner.substr(0, inner.size() - 3);
  if (!hi || !lo || radar_checksum(body) != (*hi << 4 | *lo)) {
    return FrameError::kChecksum;
  }
  auto fields = split_fields(body);
  if (fields[0] == "02") {
    return parse_detect(fields, raw);
  }
  if (fields[0] == "09") {
    return parse_status(fields, raw);
  }
  return FrameError::kUnknownType;
}

std::uint64_t RadarFrameParser::Counters::total_errors() const {
  std::uint64_t n = 0;
  for (auto e : errors) {
    n += e;
  }
  return n;
}

void RadarFrameParser::discard(FrameError e) {
  ++counters_.errors[static_cast<std::size_t>(e)];
  last_error_ = e;
}

void RadarFrameParser::feed(std::string_view bytes, std::vector<RadarFrame>& out) {
  for (char c : bytes) {
    if (c == kRadarStx) {
      if (state_ == State::kInFrame) {
        // A new frame began before the old one ended: the old one is lost, resync on this STX.
        discard(FrameError::kTruncated);
      }
      partial_.assign(1, c);
      state_ = State::kInFrame;
      continue;
    }
    switch (state_) {
      case State::kIdle:
        ++counters_.noise_bytes;
        break;
      case State::kSkipOverlong:
        // The rest of an overlong frame is part of that (already counted) discard, not noise.
        if (c == kRadarEtx) {
          state_ = State::kIdle;
        }
        break;
      case State::kInFrame:
        partial_.push_back(c);
        if (c == kRadarEtx) {
          auto result = parse_radar_frame(partial_);
          if (auto* frame = std::get_if<RadarFrame>(&result)) {
            ++counters_.frames;
            out.push_back(std::move(*frame));
          } else {
            discard(std::get<FrameError>(result));
          }
          partial_.clear();
          state_ = State::kIdle;
        } else if (partial_.size() >= kRadarMaxFrameBytes) {
          // 128 bytes without ETX: the frame would exceed the limit whatever comes next.
          discard(FrameError::kTooLong);
          partial_.clear();
          state_ = State::kSkipOverlong;
        }
        break;
    }
  }
}

std::vector<RadarFrame> RadarFrameParser::feed(std::string_view bytes) {
  std::vector<RadarFrame> out;
  feed(bytes, out);
  return out;
}

void RadarFrameParser::reset() {
  if (state_ == State::kInFrame) {
    discard(FrameError::kTruncated);
  }
  partial_.clear();
  state_ = State::kIdle;
}

}  // namespace cpd::adapters
