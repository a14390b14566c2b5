// RFC 8785 (JCS) serialisation of nlohmann::json values: the exact bytes that are signed, so every
// consumer in any language re-derives them from the parsed record.
#include "daemon/core/jcs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "daemon/core/encoding.h"

namespace cpd {

namespace {

constexpr std::int64_t kMaxExactInteger = std::int64_t{1} << 53;  // IEEE-754 doubles are exact up to 2^53
// Records are shallow; the limit only keeps hostile input from exhausting the stack.
constexpr int kMaxDepth = 256;

// Member names compare by UTF-16 code units (RFC 8785 §3.2.3), which differs from UTF-8 byte order
// for characters above U+FFFF versus U+E000..U+FFFF.
std::u16string utf16_key(const std::string& key) {
  std::u16string out;
  out.reserve(key.size());
  std::size_t i = 0;
  while (i < key.size()) {
    const std::int32_t cp = decode_utf8(key, i);
    if (cp < 0) {
      throw JcsError("member name is not valid UTF-8");
    }
    if (cp >= 0x10000) {
      const auto v = static_cast<std::uint32_t>(cp) - 0x10000u;
      out.push_back(static_cast<char16_t>(0xd800u + (v >> 10)));
      out.push_back(static_cast<char16_t>(0xdc00u + (v & 0x3ffu)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return out;
}

void write_string(std::string& out, const std::string& s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t i = 0;
  while (i < s.size()) {
    // Printable ASCII other than '"' and '\\' is copied as it is, a run at a time (most of a record).
    std::size_t run = i;
    while (run < s.size()) {
      const auto c = static_cast<unsigned char>(s[run]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') {
        break;
      }
      ++run;
    }
    out.append(s, i, run - i);
    i = run;
    if (i == s.size()) {
      break;
    }
    const std::size_t start = i;
    const std::int32_t cp = decode_utf8(s, i);
    if (cp < 0) {
      throw JcsError("string is not valid UTF-8");
    }
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (cp < 0x20) {
          out += "\\u00";
          out.push_back(kHex[cp >> 4]);
          out.push_back(kHex[cp & 0xf]);
        } else {
          out.append(s, start, i - start);
        }
    }
  }
  out.push_back('"');
}

// ECMAScript Number::toString (ECMA-262 §7.1.12.1 / Number.prototype.toString) for a finite double.
void write_double(std::string& out, double d) {
  if (!std::isfinite(d)) {
    throw JcsError("NaN and Infinity have no JSON form");
  }
  if (d == 0) {  // also -0, which ECMAScript prints as "0"
    out.push_back('0');
    return;
  }
  if (d < 0) {
    out.push_back('-');
    d = -d;
  }
  // Shortest round-trip digits (the same digit choice ECMAScript requires), in "d.ddde±x" form.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  if (res.ec != std::errc{}) {
    throw JcsError("number formatting failed");
  }
  const std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
  const std::size_t e_pos = sci.find('e');
  std::string digits;
  for (const char c : sci.substr(0, e_pos)) {
    if (c != '.') {
      digits.push_back(c);
    }
  }
  int exp10 = 0;
  std::string_view exp_text = sci.substr(e_pos + 1);
  if (!exp_text.empty() && exp_text.front() == '+') {
    exp_text.remove_prefix(1);
  }
  std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exp10);
  // ECMAScript terms: value = 0.digits * 10^n, k = number of digits.
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<std::size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out.append(digits, 0, static_cast<std::size_t>(n));
    out.push_back('.');
    out.append(digits, static_cast<std::size_t>(n), std::string::npos);
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-n), '0');
    out += digits;
  } else {
    out.push_back(digits[0]);
    if (k > 1) {
      out.push_back('.');
      out.append(digits, 1, std::string::npos);
    }
    out.push_back('e');
    out.push_back(n - 1 < 0 ? '-' : '+');
    out += std::to_string(std::abs(n - 1));
  }
}

// RFC 8785 reads every number as an IEEE-754 double. Within ±2^53 an integer is one exactly. Beyond it, an
// integer is accepted only if it is already the canonical text of the double nearest to it (as
// 90071992547333330 is, the canonical form of 9.007199254733333e16): canonicalising it again then gives the
// same bytes. Any other large integer (9007199254740993) would silently change value and is refused.
void write_integer(std::string& out, const std::string& decimal, double nearest, bool exact) {
  if (exact) {
    out += decimal;
    return;
  }
  std::string as_double;
  write_double(as_double, nearest);
  if (as_double != decimal) {
    throw JcsError("integer " + decimal + " is beyond ±2^53 and not exactly a double (it would read as " +
                   as_double + ")");
  }
  out += as_double;
}

void write_value(std::string& out, const nlohmann::json& v, int depth);

void write_array(std::string& out, const nlohmann::json& v, int depth) {
  out.push_back('[');
  bool first = true;
  for (const auto& element : v) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    write_value(out, element, depth + 1);
  }
  out.push_back(']');
}

// Members in the UTF-16 code-unit order of their keys (RFC 8785 section 3.2.3).
void write_object(std::string& out, const nlohmann::json& v, int depth) {
  const auto& object = v.get_ref<const nlohmann::json::object_t&>();
  // The map already holds keys in UTF-8 byte order, which is code-point order. UTF-16 order differs only
  // where a key has a character beyond the BMP (4-byte UTF-8), so only then sort again.
  const bool beyond_bmp = std::any_of(object.begin(), object.end(), [](const auto& member) {
    return std::any_of(member.first.begin(), member.first.end(),
                       [](char c) { return static_cast<unsigned char>(c) >= 0xf0; });
  });
  out.push_back('{');
  bool first = true;
  auto write_member = [&](const nlohmann::json::object_t::value_type& member) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    write_string(out, member.first);
    out.push_back(':');
    write_value(out, member.second, depth + 1);
  };
  if (!beyond_bmp) {
    for (const auto& member : object) {
      write_member(member);
    }
  } else {
    std::vector<std::pair<std::u16string, const nlohmann::json::object_t::value_type*>> members;
    members.reserve(object.size());
    for (const auto& member : object) {
      members.emplace_back(utf16_key(member.first), &member);
    }
    std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& entry : members) {
      write_member(*entry.second);
    }
  }
  out.push_back('}');
}

void write_value(std::string& out, const nlohmann::json& v, int depth) {
  if (depth > kMaxDepth) {
    throw JcsError("value nested too deeply");
  }
  switch (v.type()) {
    case nlohmann::json::value_t::null:
      out += "null";
      return;
    case nlohmann::json::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case nlohmann::json::value_t::number_integer: {
      const auto n = v.get<std::int64_t>();
      write_integer(out, std::to_string(n), static_cast<double>(n),
                    n <= kMaxExactInteger && n >= -kMaxExactInteger);
      return;
    }
    case nlohmann::json::value_t::number_unsigned: {
      const auto n = v.get<std::uint64_t>();
      write_integer(out, std::to_string(n), static_cast<double>(n),
                    n <= static_cast<std::uint64_t>(kMaxExactInteger));
      return;
    }
    case nlohmann::json::value_t::number_float:
      write_double(out, v.get<double>());
      return;
    case nlohmann::json::value_t::string:
      write_string(out, v.get_ref<const std::string&>());
      return;
    case nlohmann::json::value_t::array:
      write_array(out, v, depth);
      return;
    case nlohmann::json::value_t::object:
      write_object(out, v, depth);
      return;
    case nlohmann::json::value_t::binary:
      throw JcsError("binary values have no JSON form");
    case nlohmann::json::value_t::discarded:
      throw JcsError("discarded value has no JSON form");
  }
  throw JcsError("unknown JSON value type");
}

}  // namespace

std::string canonical_json(const nlohmann::json& value) {
  std::string out;
  write_value(out, value, 0);
  return out;
}

}  // namespace cpd
