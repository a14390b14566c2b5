// The partial download file: POSIX file calls with EINTR handled and errors as Status values.
#include "adapters/recorder/partial_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

namespace cpd::adapters {
namespace {

constexpr std::size_t kRehashBytes = 1024 * 1024;  // reads when hashing a partial file left by a crash

}  // namespace

Status errno_status(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EIO || err == EDQUOT) {
    return Status::retry(std::move(msg));
  }
  return Status::fail(std::move(msg));
}

PartialFile::~PartialFile() {
  close_fd();
}

Status PartialFile::open(std::int64_t length) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    return errno_status("cannot open", path_, errno);
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    return errno_status("cannot stat", path_, errno);
  }
  if (st.st_size > length) {
    return truncate_all();
  }
  std::vector<char> buf(kRehashBytes);
  std::int64_t done = 0;
  while (done < st.st_size) {
    const ssize_t n = ::pread(fd_, buf.data(), buf.size(), done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return truncate_all();  // unreadable: fetch it all again
    }
    digest_.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    done += n;
  }
  bytes_ = done;
  return Status::ok();
}

Status PartialFile::truncate_all() {
  digest_.reset();
  bytes_ = 0;
  if (::ftruncate(fd_, 0) != 0) {
    return errno_status("cannot truncate", path_, errno);
  }
  return Status::ok();
}

Status PartialFile::append(const char* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd_, data + done, size - done, bytes_ + static_cast<std::int64_t>(done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      [[maybe_unused]] const int ignored = ::ftruncate(fd_, bytes_);
      return errno_status("cannot write", path_, err);
    }
    done += static_cast<std::size_t>(n);
  }
  digest_.update(std::string_view(data, size));
  bytes_ += static_cast<std::int64_t>(size);
  return Status::ok();
}

Status PartialFile::finish(FileDigest::Result& out) {
  if (::fsync(fd_) != 0) {
    return errno_status("cannot fsync", path_, errno);
  }
  out = digest_.finish();
  close_fd();
  return Status::ok();
}

void PartialFile::remove() {
  close_fd();
  ::unlink(path_.c_str());
  bytes_ = 0;
}

void PartialFile::close_fd() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace cpd::adapters
