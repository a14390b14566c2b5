// A download's partial file on disk with the digest of the bytes in it: opened (rehashing what a crash left),
// appended to chunk by chunk, fsynced and closed. Plain POSIX calls, run on the blocking pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "daemon/core/digest.h"
#include "daemon/core/status.h"

namespace cpd::adapters {

// "cannot <what> <path>: <strerror>": a full or failing disk (ENOSPC, EIO, EDQUOT) is worth a retry, any
// other error is not.
Status errno_status(const std::string& what, const std::string& path, int err);

// Touched by one job at a time (the adapter's strand hands it to the blocking pool and waits for the
// result), so it has no lock of its own.
class PartialFile {
 public:
  explicit PartialFile(std::string path) : path_(std::move(path)) {}
  ~PartialFile();
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;

  const std::string& path() const { return path_; }
  std::int64_t bytes() const { return bytes_; }
  bool is_open() const { return fd_ >= 0; }

  // Opens (or creates) the file; bytes already in it (0 < k <= length) are hashed so the download resumes
  // after them. A file longer than `length` cannot be a prefix of it and starts again.
  Status open(std::int64_t length);
  // Cuts the file to nothing and starts the digest again.
  Status truncate_all();
  // Writes at the end and digests what was written; on failure the file is cut back to the digested bytes.
  Status append(const char* data, std::size_t size);
  // fsync and both digests; the file is closed (adopt() or remove() follow).
  Status finish(FileDigest::Result& out);
  void remove();

 private:
  void close_fd();

  std::string path_;
  int fd_ = -1;
  std::int64_t bytes_ = 0;
  FileDigest digest_;
};

}  // namespace cpd::adapters
