// Streaming SHA-256 + MD5 over OpenSSL 3 EVP: a dock file is hashed as it streams to disk, so neither
// digest needs the file in memory. MD5 only checks the station's checksum; SHA-256 names the evidence.
#include "daemon/core/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "daemon/core/encoding.h"
#include "daemon/core/openssl_handles.h"

namespace cpd {

namespace {

using ossl::MdCtxPtr;

// Failures here mean libcrypto itself is broken (allocation, a missing default provider): a broken
// invariant, not bad input, so they throw like sha256_raw() does.
[[noreturn]] void fail(const char* what) {
  throw std::runtime_error(std::string("digest: ") + what + " failed in libcrypto");
}

MdCtxPtr new_ctx(const EVP_MD* md, const char* name) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || md == nullptr || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) {
    fail(name);
  }
  return ctx;
}

std::string final_hex(EVP_MD_CTX* ctx, const char* name) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, md.data(), &len) != 1) {
    fail(name);
  }
  return hex_lower(std::string_view(reinterpret_cast<const char*>(md.data()), len));
}

}  // namespace

struct FileDigest::Impl {
  MdCtxPtr sha256;
  MdCtxPtr md5;
  bool finished = false;

  void init() {
    sha256 = new_ctx(EVP_sha256(), "SHA-256");
    md5 = new_ctx(EVP_md5(), "MD5");
    finished = false;
  }
};

FileDigest::FileDigest() : impl_(std::make_unique<Impl>()) {
  impl_->init();
}

FileDigest::~FileDigest() = default;
FileDigest::FileDigest(FileDigest&&) noexcept = default;
FileDigest& FileDigest::operator=(FileDigest&&) noexcept = default;

void FileDigest::update(std::string_view bytes) {
  if (impl_->finished) {
    throw std::logic_error("FileDigest::update after finish (call reset first)");
  }
  if (bytes.empty()) {
    return;
  }
  if (EVP_DigestUpdate(impl_->sha256.get(), bytes.data(), bytes.size()) != 1) {
    fail("SHA-256");
  }
  if (EVP_DigestUpdate(impl_->md5.get(), bytes.data(), bytes.size()) != 1) {
    fail("MD5");
  }
}

FileDigest::Result FileDigest::finish() {
  if (impl_->finished) {
    throw std::logic_error("FileDigest::finish called twice (call reset first)");
  }
  impl_->finished = true;
  Result r;
  r.sha256 = final_hex(impl_->sha256.get(), "SHA-256");
  r.md5 = final_hex(impl_->md5.get(), "MD5");
  return r;
}

void FileDigest::reset() {
  // A moved-from digest has no state; reset makes it usable again.
  if (!impl_) {
    impl_ = std::make_unique<Impl>();
  }
  impl_->init();
}

std::optional<FileSha256> sha256_file(const std::string& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  MdCtxPtr ctx = new_ctx(EVP_sha256(), "SHA-256");
  std::vector<char> buf(std::size_t{1} << 20);
  FileSha256 out;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      error = "cannot read " + path + ": " + std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) {
      break;
    }
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n)) != 1) {
      ::close(fd);
      fail("SHA-256");
    }
    out.bytes += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  out.sha256 = final_hex(ctx.get(), "SHA-256");
  return out;
}

}  // namespace cpd
