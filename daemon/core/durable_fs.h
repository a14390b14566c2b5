// Making a directory entry durable: after a file is created or renamed, the directory holding it is
// fsync'd, or a power cut can lose the name even though the file's bytes reached the disk.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace cpd {

// Why a directory could not be synced: the step that failed ("open" or "fsync") and its errno.
struct DirSyncFailure {
  const char* step;
  int err;
};

// fsync(2) on the directory; nullopt when it is durable.
std::optional<DirSyncFailure> fsync_directory(const std::filesystem::path& dir);
// fsync(2) on a file's bytes; nullopt when they are durable.
std::optional<DirSyncFailure> fsync_file(const std::filesystem::path& file);
// fsync(2) on a file, then on the directory holding it: its bytes and its name are durable (a file found in
// place, which another writer may have renamed there and not yet synced); nullopt when they are.
std::optional<DirSyncFailure> fsync_file_and_directory(const std::filesystem::path& file);
// "<step> <path>: <strerror>", for an error message.
std::string describe(const DirSyncFailure& failure, const std::filesystem::path& path);

}  // namespace cpd
