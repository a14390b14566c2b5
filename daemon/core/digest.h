// Streaming SHA-256 and MD5 over the same bytes (OpenSSL EVP), for files too large to hold in memory.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace cpd {

class FileDigest {
 public:
  FileDigest();
  ~FileDigest();
  FileDigest(FileDigest&&) noexcept;
  FileDigest& operator=(FileDigest&&) noexcept;
  FileDigest(const FileDigest&) = delete;
  FileDigest& operator=(const FileDigest&) = delete;

  void update(std::string_view bytes);
  // Both digests of everything updated so far, lower-case hex. Further updates are not allowed after.
  struct Result {
    std::string sha256;
    std::string md5;
  };
  Result finish();
  // Starts again from no bytes.
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cpd
