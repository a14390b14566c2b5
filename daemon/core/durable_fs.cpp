#include "daemon/core/durable_fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace cpd {

bool fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  errno = err;
  return rc == 0;
}

}  // namespace cpd
