// Shared fixtures for the core unit tests: a fixed Ed25519 key (RFC 8032 test 1), temp directories,
// and a way to sign arbitrary header/payload text (to build records the Sealer would never make).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>

#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"

namespace cpd::test {

// RFC 8032 §7.1 TEST 1: secret key 9d61b1..7f60, public key d75a98..511a.
inline constexpr const char* kRfc8032PrivatePem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n";
inline constexpr const char* kRfc8032PublicPem =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    "-----END PUBLIC KEY-----\n";
inline constexpr const char* kRfc8032PublicHex =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
inline constexpr const char* kRfc8032Kid = "21fe31dfa154a261";  // sha256(public)[:16], computed independently

// A fresh directory under TMPDIR (or /tmp), removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr ? base : "/tmp") + "/cpd-core-test-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, std::string_view text, mode_t mode = 0600) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out) {
      throw std::runtime_error("cannot write " + path);
    }
  }
  ::chmod(path.c_str(), mode);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline Ed25519PrivateKey rfc8032_key(const TempDir& dir) {
  const std::string path = dir.file("rfc8032.key");
  write_file(path, kRfc8032PrivatePem, 0600);
  return Ed25519PrivateKey::load_pem_file(path);
}

// A JWS over exactly these header and payload bytes (no canonicalisation, no checks).
inline std::string sign_raw(const Ed25519PrivateKey& key, std::string_view header_text,
                            std::string_view payload_text) {
  std::string input = base64url_encode(header_text) + "." + base64url_encode(payload_text);
  const std::string sig = key.sign(input);
  return input + "." + base64url_encode(sig);
}

// The decoded payload text of a JWS (the middle part).
inline std::string payload_of(const std::string& jws) {
  const auto a = jws.find('.');
  const auto b = jws.find('.', a + 1);
  return base64url_decode(std::string_view(jws).substr(a + 1, b - a - 1)).value();
}

inline std::string header_of(const std::string& jws) {
  return base64url_decode(std::string_view(jws).substr(0, jws.find('.'))).value();
}

}  // namespace cpd::test
