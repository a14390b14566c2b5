// MediaStore: content-addressed files (named by their SHA-256), written to a temp file, fsynced, renamed
// and the directory fsynced, so a picture that is referenced by a record is on disk before it counts.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "adapters/media_sink.h"
#include "daemon/core/status.h"

namespace cpd::media {

using StoredMedia = adapters::StoredFile;

// Free space on a file system, from statvfs (what an unprivileged writer may use).
struct SpaceReading {
  std::uint64_t free_bytes = 0;
  std::uint64_t total_bytes = 0;
  bool ok = false;  // false: statvfs failed (then nothing is refused for lack of space)
};
SpaceReading read_space(const std::string& path);

// The adapters see it only as their MediaSink (adapters/media_sink.h).
class MediaStore final : public adapters::MediaSink {
 public:
  // Creates the directory if missing (mode 0750). Throws std::runtime_error naming the path on failure.
  explicit MediaStore(std::string dir);

  // Durably stores the bytes (blocking: call it off the I/O threads). Status::retry on ENOSPC/EIO.
  Status put(std::string_view bytes, StoredMedia& out) override;
  // Moves a complete file (already written and fsynced by the caller, e.g. a streamed download) into the
  // store under its SHA-256, which the caller computed while writing: rename, then fsync the directory.
  // When identical bytes are already stored the file is removed instead. The file must be on the store's
  // filesystem (use partial_dir()). Status::retry on ENOSPC/EIO.
  Status adopt(const std::string& file_path, const std::string& sha256, std::int64_t bytes,
               StoredMedia& out) override;
  // <dir>/partial: where downloads in progress live (created on first call, mode 0750); never swept.
  std::string partial_dir() const override;
  std::string path_of(const std::string& sha256) const override;
  bool exists(const std::string& sha256) const;
  // Reads a stored file; nullopt if missing, unreadable, or larger than `max_bytes` (checked before reading).
  std::optional<std::string> read(const std::string& sha256,
                                  std::size_t max_bytes = std::numeric_limits<std::size_t>::max()) const;
  const std::string& dir() const { return dir_; }

  // Space kept free for the evidence store on the same disk: a write that would leave less is refused
  // with Status::retry (nothing already stored is ever deleted to make room). 0 = no reserve.
  void set_reserve(std::uint64_t bytes) { reserve_.store(bytes); }
  std::uint64_t reserve() const { return reserve_.load(); }
  // Status::retry naming the space when writing `incoming` more bytes would cut into the reserve; counts
  // the refusal. Thread-safe.
  Status check_space(std::uint64_t incoming) override;
  // Writes refused for lack of space since start.
  std::uint64_t refused_writes() const { return refused_.load(); }

 private:
  std::string dir_;
  std::atomic<std::uint64_t> reserve_{0};
  std::atomic<std::uint64_t> refused_{0};
};

}  // namespace cpd::media
