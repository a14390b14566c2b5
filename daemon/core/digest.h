// Streaming SHA-256 and MD5 over the same bytes (OpenSSL EVP), for files too large to hold in memory.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
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

// A whole file's SHA-256 (lower-case hex) and length, streamed in 1 MiB reads (a recording may be
// gigabytes). nullopt with `error` set ("cannot open/read PATH: ...") when the file cannot be read.
struct FileSha256 {
  std::string sha256;
  std::uint64_t bytes = 0;
};
std::optional<FileSha256> sha256_file(const std::string& path, std::string& error);

}  // namespace cpd
