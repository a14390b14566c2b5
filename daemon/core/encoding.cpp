// Byte encodings of the evidence format: lower-case hex, strict base64url (RFC 4648 §5, no padding),
// base64 (§4) for device bytes, SHA-256 through the OpenSSL EVP interface, and the one UTF-8 decoder (JCS
// and the device-text escape agree on what is well-formed).
#include "daemon/core/encoding.h"

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>

namespace cpd {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";
constexpr char kB64UrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// 0..63 for an alphabet character, -1 otherwise (including '=', '+', '/', whitespace).
constexpr std::array<std::int8_t, 256> make_b64url_table() {
  std::array<std::int8_t, 256> table{};
  for (auto& v : table) {
    v = -1;
  }
  for (int i = 0; i < 64; ++i) {
    table[static_cast<unsigned char>(kB64UrlAlphabet[i])] = static_cast<std::int8_t>(i);
  }
  return table;
}

constexpr std::array<std::int8_t, 256> kB64UrlTable = make_b64url_table();

}  // namespace

bool is_sha256_hex(std::string_view text) {
  if (text.size() != 64) {
    return false;
  }
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string hex_lower(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 0x0f]);
  }
  return out;
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                            (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                            static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out.push_back(kB64UrlAlphabet[(n >> 18) & 63]);
    out.push_back(kB64UrlAlphabet[(n >> 12) & 63]);
    out.push_back(kB64UrlAlphabet[(n >> 6) & 63]);
    out.push_back(kB64UrlAlphabet[n & 63]);
  }
  const std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    const std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    out.push_back(kB64UrlAlphabet[(n >> 18) & 63]);
    out.push_back(kB64UrlAlphabet[(n >> 12) & 63]);
  } else if (rest == 2) {
    const std::uint32_t n = (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                            (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8);
    out.push_back(kB64UrlAlphabet[(n >> 18) & 63]);
    out.push_back(kB64UrlAlphabet[(n >> 12) & 63]);
    out.push_back(kB64UrlAlphabet[(n >> 6) & 63]);
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  std::string out = base64url_encode(bytes);
  for (char& c : out) {
    if (c == '-') {
      c = '+';
    } else if (c == '_') {
      c = '/';
    }
  }
  out.append((4 - out.size() % 4) % 4, '=');
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  // A length of 1 mod 4 cannot come from any byte string.
  if (text.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out(text.size() * 3 / 4, '\0');  // exactly the decoded length when the length is not 1 mod 4
  std::size_t n = 0;
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : text) {
    const std::int8_t v = kB64UrlTable[static_cast<unsigned char>(c)];
    if (v < 0) {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = static_cast<char>((acc >> bits) & 0xff);
    }
  }
  out.resize(n);
  // Strict: the unused low bits of the last character must be zero, so each byte string has exactly one
  // accepted encoding (otherwise a signature part could be varied without changing the decoded bytes).
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return std::nullopt;
  }
  return out;
}

std::string sha256_raw(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md.data(), &len, EVP_sha256(), nullptr) != 1 || len != 32) {
    // Only fails if libcrypto itself is broken: a broken invariant, not bad input.
    throw std::runtime_error("SHA-256 failed in libcrypto");
  }
  return std::string(reinterpret_cast<const char*>(md.data()), len);
}

std::string sha256_hex(std::string_view bytes) {
  return hex_lower(sha256_raw(bytes));
}

std::int32_t decode_utf8(std::string_view text, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int len = 0;
  std::uint32_t cp = 0;
  std::uint32_t min = 0;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
    cp = b0 & 0x1fu;
    min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    cp = b0 & 0x0fu;
    min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    cp = b0 & 0x07u;
    min = 0x10000;
  } else {
    return -1;
  }
  if (i + static_cast<std::size_t>(len) > text.size()) {
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + static_cast<std::size_t>(k)]);
    if ((b & 0xc0u) != 0x80u) {
      return -1;
    }
    cp = (cp << 6) | (b & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return -1;
  }
  i += static_cast<std::size_t>(len);
  return static_cast<std::int32_t>(cp);
}

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    if (decode_utf8(text, i) < 0) {
      return false;
    }
  }
  return true;
}

std::string escape_invalid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + bytes.size() / 2);
  std::size_t i = 0;
  while (i < bytes.size()) {
    const std::size_t start = i;
    const std::int32_t cp = decode_utf8(bytes, i);
    if (cp == '\\') {
      out += "\\\\";
    } else if (cp >= 0) {
      out.append(bytes, start, i - start);
    } else {
      // One byte at a time: the next byte may start a well-formed sequence again.
      const auto b = static_cast<unsigned char>(bytes[i]);
      out += "\\x";
      out.push_back(kHexDigits[b >> 4]);
      out.push_back(kHexDigits[b & 0x0f]);
      ++i;
    }
  }
  return out;
}

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (text.size() > max) {
    out += "...";
  }
  return out;
}

}  // namespace cpd
