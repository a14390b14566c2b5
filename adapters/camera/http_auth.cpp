// Digest and Basic authorization values. The secret only ever flows into MD5 and base64, never to text
// that is logged or returned other than the Authorization header itself.
#include "adapters/camera/http_auth.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <stdexcept>

#include "adapters/camera/ascii.h"

namespace cpd::adapters {
namespace {

std::string to_hex(const unsigned char* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 0x0f];
  }
  return out;
}

void skip_space(std::string_view s, std::size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == ',')) {
    ++i;
  }
}

// Quotes a value for an auth-param: backslash before '"' and '\'.
std::string quoted(std::string_view v) {
  std::string out = "\"";
  for (const char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  out += '"';
  return out;
}

std::string random_cnonce() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");  // a broken RNG is a broken invariant
  }
  return to_hex(bytes.data(), bytes.size());
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) | static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const unsigned v =
        (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

}  // namespace

std::string md5_hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md.data(), &len, EVP_md5(), nullptr) != 1) {
    throw std::runtime_error("MD5 unavailable");
  }
  return to_hex(md.data(), len);
}

namespace {

// A parameter's value at v[i] (i just past '=' and any spaces): a quoted-string with its escapes, or a
// token up to the next ',' without trailing spaces. i ends past it. Nullopt: a quote never closed.
std::optional<std::string> read_param_value(std::string_view v, std::size_t& i) {
  std::string value;
  if (i < v.size() && v[i] == '"') {
    ++i;
    for (; i < v.size(); ++i) {
      if (v[i] == '\\' && i + 1 < v.size()) {
        value += v[++i];
      } else if (v[i] == '"') {
        ++i;
        return value;
      } else {
        value += v[i];
      }
    }
    return std::nullopt;
  }
  const std::size_t end = v.find(',', i);
  value = std::string(v.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i));
  while (!value.empty() && value.back() == ' ') {
    value.pop_back();
  }
  i = end == std::string_view::npos ? v.size() : end;
  return value;
}

// qop="auth,auth-int": whether "auth" is among the comma-separated options.
bool offers_qop_auth(const std::string& value) {
  std::size_t s = 0;
  bool auth = false;
  while (s <= value.size()) {
    std::size_t e = value.find(',', s);
    if (e == std::string::npos) {
      e = value.size();
    }
    std::string_view token = std::string_view(value).substr(s, e - s);
    while (!token.empty() && token.front() == ' ') {
      token.remove_prefix(1);
    }
    while (!token.empty() && token.back() == ' ') {
      token.remove_suffix(1);
    }
    auth = auth || iequals(token, "auth");
    s = e + 1;
  }
  return auth;
}

// One challenge parameter into c (unknown parameters are ignored).
void apply_param(DigestChallenge& c, bool& has_nonce, std::string_view key, const std::string& value) {
  if (iequals(key, "realm")) {
    c.realm = value;
  } else if (iequals(key, "nonce")) {
    c.nonce = value;
    has_nonce = true;
  } else if (iequals(key, "opaque")) {
    c.opaque = value;
  } else if (iequals(key, "algorithm")) {
    c.algorithm = value;
  } else if (iequals(key, "stale")) {
    c.stale = iequals(value, "true");
  } else if (iequals(key, "qop")) {
    c.has_qop = true;
    c.qop_auth = c.qop_auth || offers_qop_auth(value);
  }
}

}  // namespace

std::optional<DigestChallenge> parse_digest_challenge(std::string_view v) {
  std::size_t i = 0;
  skip_space(v, i);
  if (v.size() < i + 6 || !iequals(v.substr(i, 6), "Digest") || (v.size() > i + 6 && v[i + 6] != ' ')) {
    return std::nullopt;
  }
  i += 6;
  DigestChallenge c;
  bool has_nonce = false;
  while (true) {
    skip_space(v, i);
    if (i >= v.size()) {
      break;
    }
    const std::size_t eq = v.find('=', i);
    if (eq == std::string_view::npos) {
      return std::nullopt;
    }
    std::string_view key = v.substr(i, eq - i);
    while (!key.empty() && key.back() == ' ') {
      key.remove_suffix(1);
    }
    i = eq + 1;
    while (i < v.size() && v[i] == ' ') {
      ++i;
    }
    const std::optional<std::string> value = read_param_value(v, i);
    if (!value) {
      return std::nullopt;
    }
    apply_param(c, has_nonce, key, *value);
  }
  if (!has_nonce || (c.has_qop && !c.qop_auth) || (!c.algorithm.empty() && !iequals(c.algorithm, "MD5"))) {
    return std::nullopt;
  }
  return c;
}

DigestAuthenticator::DigestAuthenticator(std::string username, std::string password, CnonceSource cnonce)
    : username_(std::move(username)), password_(std::move(password)), cnonce_(std::move(cnonce)) {
  if (!cnonce_) {
    cnonce_ = random_cnonce;
  }
}

bool DigestAuthenticator::take_challenge(const std::vector<std::string>& www_authenticate) {
  for (const auto& v : www_authenticate) {
    if (auto c = parse_digest_challenge(v)) {
      challenge_ = std::move(*c);
      nc_ = 0;
      return true;
    }
  }
  return false;
}

std::string DigestAuthenticator::response(std::string_view method, std::string_view uri, std::string_view nc,
                                          std::string_view cnonce) const {
  const auto& c = *challenge_;
  const std::string ha1 = md5_hex(username_ + ":" + c.realm + ":" + password_);
  const std::string ha2 = md5_hex(std::string(method) + ":" + std::string(uri));
  if (!c.has_qop) {
    return md5_hex(ha1 + ":" + c.nonce + ":" + ha2);
  }
  return md5_hex(ha1 + ":" + c.nonce + ":" + std::string(nc) + ":" + std::string(cnonce) + ":auth:" + ha2);
}

std::string DigestAuthenticator::authorization(std::string_view method, std::string_view uri) {
  const auto& c = *challenge_;
  std::string out = "Digest username=" + quoted(username_) + ", realm=" + quoted(c.realm) +
                    ", nonce=" + quoted(c.nonce) + ", uri=" + quoted(uri);
  if (c.has_qop) {
    ++nc_;
    std::array<char, 9> nc{};
    std::snprintf(nc.data(), nc.size(), "%08x", nc_);
    const std::string cnonce = cnonce_();
    if (!c.algorithm.empty()) {
      out += ", algorithm=" + c.algorithm;
    }
    out += ", qop=auth, nc=" + std::string(nc.data()) + ", cnonce=" + quoted(cnonce) +
           ", response=" + quoted(response(method, uri, nc.data(), cnonce));
  } else {
    out += ", response=" + quoted(response(method, uri, "", ""));
  }
  if (!c.opaque.empty()) {
    out += ", opaque=" + quoted(c.opaque);
  }
  return out;
}

std::string basic_authorization(std::string_view username, std::string_view password) {
  return "Basic " + base64(std::string(username) + ":" + std::string(password));
}

}  // namespace cpd::adapters
