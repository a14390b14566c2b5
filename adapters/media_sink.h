// MediaSink: where adapters put the files devices send (camera pictures, body-worn recordings): the narrow
// part of the daemon's content-addressed media store (daemon/media) that adapters may use, as DockLedger is
// of the evidence store. Every call may block on the disk: call it on the blocking pool, never on an I/O
// thread. Errors are values: Status::retry when the disk is full or failing (nothing is deleted to make
// room).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/core/status.h"

namespace cpd::adapters {

struct StoredFile {
  std::string sha256;
  std::int64_t bytes = 0;
  bool already_present = false;  // identical bytes were stored before
};

class MediaSink {
 public:
  virtual ~MediaSink() = default;
  // Durably stores the bytes under their SHA-256 (on disk, fsynced, before it returns ok).
  virtual Status put(std::string_view bytes, StoredFile& out) = 0;
  // Moves a complete file the adapter wrote and fsynced in partial_dir() into the store under `sha256`
  // (which the adapter computed while writing); identical bytes already stored: the file is removed.
  virtual Status adopt(const std::string& file_path, const std::string& sha256, std::int64_t bytes,
                       StoredFile& out) = 0;
  // Where downloads in progress are written (on the store's file system).
  virtual std::string partial_dir() const = 0;
  // Where the store keeps the file named by `sha256`.
  virtual std::string path_of(const std::string& sha256) const = 0;
  // Status::retry when writing `incoming` more bytes would cut into the space kept for evidence records.
  virtual Status check_space(std::uint64_t incoming) = 0;
};

}  // namespace cpd::adapters
