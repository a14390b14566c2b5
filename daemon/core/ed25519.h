// Ed25519 keys over the OpenSSL 3 EVP API: load once, sign many.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

typedef struct evp_pkey_st EVP_PKEY;

namespace cpd {

class KeyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Ed25519PublicKey {
 public:
  static Ed25519PublicKey from_pem(std::string_view pem);    // throws KeyError
  static Ed25519PublicKey from_raw(std::string_view raw32);  // throws KeyError
  std::string raw() const;                                   // 32 bytes
  std::string pem() const;                                   // SubjectPublicKeyInfo PEM
  std::string kid() const;                                   // first 16 lower-case hex digits of SHA-256(raw)
  bool verify(std::string_view data, std::string_view signature) const;

 private:
  explicit Ed25519PublicKey(std::shared_ptr<EVP_PKEY> key) : key_(std::move(key)) {}
  std::shared_ptr<EVP_PKEY> key_;
  friend class Ed25519PrivateKey;
};

class Ed25519PrivateKey {
 public:
  static Ed25519PrivateKey generate();
  // Loads a PKCS#8 PEM private key. Refuses (KeyError, naming the file and the mode) a file that is
  // readable or writable by group or others, unless check_mode is false.
  static Ed25519PrivateKey load_pem_file(const std::string& path, bool check_mode = true);
  // Writes PKCS#8 PEM with mode 0600; refuses to overwrite an existing file.
  void save_pem_file(const std::string& path) const;
  Ed25519PublicKey public_key() const;
  std::string sign(std::string_view data) const;  // 64-byte signature

 private:
  explicit Ed25519PrivateKey(std::shared_ptr<EVP_PKEY> key) : key_(std::move(key)) {}
  std::shared_ptr<EVP_PKEY> key_;
};

}  // namespace cpd
