// MediaStore: content-addressed files (named by their SHA-256), written to a temp file, fsynced, renamed
// and the directory fsynced, so a picture that is referenced by a record is on disk before it counts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/status.h"

namespace cpd::media {

struct StoredMedia {
  std::string sha256;
  std::int64_t bytes = 0;
  bool already_present = false;   // identical bytes were stored before
};

class MediaStore {
 public:
  // Creates the directory if missing (mode 0750). Throws std::runtime_error naming the path on failure.
  explicit MediaStore(std::string dir);

  // Durably stores the bytes (blocking: call it off the I/O threads). Status::retry on ENOSPC/EIO.
  Status put(std::string_view bytes, StoredMedia& out);
  std::string path_of(const std::string& sha256) const;
  bool exists(const std::string& sha256) const;
  // Reads a stored file; nullopt if missing.
  std::optional<std::string> read(const std::string& sha256) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace cpd::media
