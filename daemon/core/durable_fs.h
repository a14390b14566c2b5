// Making a directory entry durable: after a file is created or renamed, the directory holding it is
// fsync'd, or a power cut can lose the name even though the file's bytes reached the disk.
#pragma once

#include <filesystem>
#include <optional>

namespace cpd {

// Why a directory could not be synced: the step that failed ("open" or "fsync") and its errno.
struct DirSyncFailure {
  const char* step;
  int err;
};

// fsync(2) on the directory; nullopt when it is durable.
std::optional<DirSyncFailure> fsync_directory(const std::filesystem::path& dir);

}  // namespace cpd
