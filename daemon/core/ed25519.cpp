// Ed25519 keys over the OpenSSL 3 EVP API (RFC 8032 pure EdDSA: no pre-hash, so a NULL digest), and
// the key-file rules: private keys are PKCS#8 PEM readable by the owner only.
#include "daemon/core/ed25519.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "daemon/core/durable_fs.h"
#include "daemon/core/encoding.h"
#include "daemon/core/openssl_handles.h"

namespace cpd {

namespace {

using ossl::BioPtr;
using ossl::MdCtxPtr;

std::shared_ptr<EVP_PKEY> own(EVP_PKEY* key) {
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

// The most recent libcrypto error as text, and the error queue cleared so it does not leak into
// unrelated later calls.
std::string openssl_error() {
  const unsigned long code = ERR_peek_last_error();
  std::string text = "unknown OpenSSL error";
  if (code != 0) {
    std::array<char, 256> buf{};
    ERR_error_string_n(code, buf.data(), buf.size());
    text = buf.data();
  }
  ERR_clear_error();
  return text;
}

// Never prompt on the terminal for a passphrase: an encrypted key is simply unusable for a daemon.
int no_passphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) {
  return -1;
}

std::string mode_octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

// Reads the whole file through an already-open descriptor (the one whose mode was checked).
std::string read_all(int fd, const std::string& path) {
  std::string out;
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw KeyError("cannot read key file " + path + ": " + std::strerror(errno));
    }
    if (n == 0) {
      break;
    }
    out.append(buf.data(), static_cast<std::size_t>(n));
    if (out.size() > 64 * 1024) {
      throw KeyError("key file " + path + " is too large to be an Ed25519 PEM key");
    }
  }
  return out;
}

void write_all(int fd, const std::string& data, const std::string& path) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw KeyError("cannot write key file " + path + ": " + std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
}

bool is_ed25519(const EVP_PKEY* key) {
  return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519;
}

}  // namespace

// ---- public key ----

Ed25519PublicKey Ed25519PublicKey::from_pem(std::string_view pem) {
  if (pem.size() > 64 * 1024) {
    throw KeyError("public key PEM is too large to be an Ed25519 key");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    throw KeyError("out of memory reading public key");
  }
  EVP_PKEY* raw_key = PEM_read_bio_PUBKEY(bio.get(), nullptr, no_passphrase, nullptr);
  if (raw_key == nullptr) {
    throw KeyError("not a PEM public key (SubjectPublicKeyInfo): " + openssl_error());
  }
  auto key = own(raw_key);
  if (!is_ed25519(key.get())) {
    throw KeyError("public key is not an Ed25519 key");
  }
  return Ed25519PublicKey(std::move(key));
}

Ed25519PublicKey Ed25519PublicKey::from_raw(std::string_view raw32) {
  if (raw32.size() != 32) {
    throw KeyError("an Ed25519 public key is 32 bytes, got " + std::to_string(raw32.size()));
  }
  EVP_PKEY* raw_key = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw32.data()), raw32.size());
  if (raw_key == nullptr) {
    throw KeyError("invalid Ed25519 public key: " + openssl_error());
  }
  return Ed25519PublicKey(own(raw_key));
}

std::string Ed25519PublicKey::raw() const {
  std::array<unsigned char, 32> buf{};
  std::size_t len = buf.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), buf.data(), &len) != 1 || len != 32) {
    throw KeyError("cannot export Ed25519 public key: " + openssl_error());
  }
  return std::string(reinterpret_cast<const char*>(buf.data()), len);
}

std::string Ed25519PublicKey::pem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) {
    throw KeyError("cannot write public key PEM: " + openssl_error());
  }
  return bio_contents(bio.get());
}

std::string Ed25519PublicKey::kid() const {
  return sha256_hex(raw()).substr(0, 16);
}

bool Ed25519PublicKey::verify(std::string_view data, std::string_view signature) const {
  if (signature.size() != 64) {
    return false;
  }
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    ERR_clear_error();
    return false;
  }
  const int rc =
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();  // a bad signature leaves an entry in the queue; it is an answer, not an error
  return rc == 1;
}

// ---- private key ----

Ed25519PrivateKey Ed25519PrivateKey::generate() {
  EVP_PKEY* raw_key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (raw_key == nullptr) {
    throw KeyError("Ed25519 key generation failed: " + openssl_error());
  }
  return Ed25519PrivateKey(own(raw_key));
}

Ed25519PrivateKey Ed25519PrivateKey::load_pem_file(const std::string& path, bool check_mode) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      throw KeyError("key file " + path + " does not exist");
    }
    throw KeyError("cannot open key file " + path + ": " + std::strerror(err));
  }
  std::string text;
  try {
    // fstat on the open descriptor: the mode checked is that of the file actually read.
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      throw KeyError("cannot stat key file " + path + ": " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      throw KeyError("key file " + path + " is not a regular file");
    }
    if (check_mode && (st.st_mode & 077) != 0) {
      throw KeyError("key file " + path + " has mode " + mode_octal(st.st_mode) +
                     "; it must be 0600 or stricter (chmod 600 " + path + ")");
    }
    text = read_all(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);

  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  EVP_PKEY* raw_key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr) : nullptr;
  OPENSSL_cleanse(text.data(), text.size());
  if (raw_key == nullptr) {
    throw KeyError("key file " + path + " does not hold an unencrypted PEM private key: " + openssl_error());
  }
  auto key = own(raw_key);
  if (!is_ed25519(key.get())) {
    throw KeyError("key file " + path + " holds a private key that is not Ed25519");
  }
  return Ed25519PrivateKey(std::move(key));
}

void Ed25519PrivateKey::save_pem_file(const std::string& path) const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PKCS8PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    throw KeyError("cannot encode private key: " + openssl_error());
  }
  std::string text = bio_contents(bio.get());

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    OPENSSL_cleanse(text.data(), text.size());
    if (err == EEXIST) {
      throw KeyError("key file " + path + " already exists; refusing to overwrite it");
    }
    throw KeyError("cannot create key file " + path + ": " + std::strerror(err));
  }
  try {
    write_all(fd, text, path);
    // A key that vanishes on power loss after records were signed with it would orphan the chain.
    if (::fsync(fd) != 0) {
      throw KeyError("cannot fsync key file " + path + ": " + std::strerror(errno));
    }
  } catch (...) {
    OPENSSL_cleanse(text.data(), text.size());
    ::close(fd);
    ::unlink(path.c_str());
    throw;
  }
  OPENSSL_cleanse(text.data(), text.size());
  if (::close(fd) != 0) {
    throw KeyError("cannot close key file " + path + ": " + std::strerror(errno));
  }
  // Make the new directory entry durable too.
  const auto parent = std::filesystem::path(path).parent_path();
  fsync_directory(parent.empty() ? std::filesystem::path(".") : parent);
}

Ed25519PublicKey Ed25519PrivateKey::public_key() const {
  // A fresh public-only EVP_PKEY, so a public key object can never be used to reach the secret.
  std::array<unsigned char, 32> buf{};
  std::size_t len = buf.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), buf.data(), &len) != 1 || len != 32) {
    throw KeyError("cannot derive Ed25519 public key: " + openssl_error());
  }
  return Ed25519PublicKey::from_raw(std::string_view(reinterpret_cast<const char*>(buf.data()), len));
}

std::string Ed25519PrivateKey::sign(std::string_view data) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    throw KeyError("cannot start Ed25519 signing: " + openssl_error());
  }
  std::array<unsigned char, 64> sig{};
  std::size_t sig_len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &sig_len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1 ||
      sig_len != 64) {
    throw KeyError("Ed25519 signing failed: " + openssl_error());
  }
  return std::string(reinterpret_cast<const char*>(sig.data()), sig_len);
}

}  // namespace cpd
