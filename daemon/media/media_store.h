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
  // Moves a complete file (already written and fsynced by the caller, e.g. a streamed download) into the
  // store under its SHA-256, which the caller computed while writing: rename, then fsync the directory.
  // When identical bytes are already stored the file is removed instead. The file must be on the store's
  // filesystem (use partial_dir()). Status::retry on ENOSPC/EIO.
  Status adopt(const std::string& file_path, const std::string& sha256, std::int64_t bytes, StoredMedia& out);
  // <dir>/partial: where downloads in progress live (created on first call, mode 0750); never swept.
  std::string partial_dir() const;
  std::string path_of(const std::string& sha256) const;
  bool exists(const std::string& sha256) const;
  // Reads a stored file; nullopt if missing.
  std::optional<std::string> read(const std::string& sha256) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace cpd::media
