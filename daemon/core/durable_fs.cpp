#include "daemon/core/durable_fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cpd {

namespace {

std::optional<DirSyncFailure> fsync_opened(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | flags);
  if (fd < 0) {
    return DirSyncFailure{"open", errno};
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return DirSyncFailure{"fsync", err};
  }
  return std::nullopt;
}

}  // namespace

std::optional<DirSyncFailure> fsync_directory(const std::filesystem::path& dir) {
  return fsync_opened(dir, O_DIRECTORY);
}

std::optional<DirSyncFailure> fsync_file(const std::filesystem::path& file) {
  return fsync_opened(file, 0);
}

std::optional<DirSyncFailure> fsync_file_and_directory(const std::filesystem::path& file) {
  if (auto failed = fsync_file(file)) {
    return failed;
  }
  return fsync_directory(file.parent_path());
}

std::string describe(const DirSyncFailure& failure, const std::filesystem::path& path) {
  return std::string(failure.step) + " " + path.string() + ": " + std::strerror(failure.err);
}

}  // namespace cpd
