#include "daemon/core/durable_fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace cpd {

std::optional<DirSyncFailure> fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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

}  // namespace cpd
