// MediaStore: content-addressed files written temp -> fsync -> rename -> fsync(dir), so a picture a record
// refers to is on disk before the record exists. Disk trouble is a value (Status), never an exception.
#include "daemon/media/media_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "daemon/core/durable_fs.h"
#include "daemon/core/encoding.h"

namespace cpd::media {
namespace {

// A full disk or a failing one may recover (space freed, retention runs): the caller retries later.
// Everything else (permissions, a missing directory) needs a human.
Status io_error(const std::string& what, const std::string& path, int err) {
  std::string message = what + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EIO || err == EDQUOT) {
    return Status::retry(std::move(message));
  }
  return Status::fail(std::move(message));
}

// Closes the descriptor on every path out of put().
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() { close_now(); }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int close_now() {
    int rc = 0;
    if (fd_ >= 0) {
      rc = ::close(fd_);
      fd_ = -1;
    }
    return rc;
  }

 private:
  int fd_;
};

}  // namespace

MediaStore::MediaStore(std::string dir) : dir_(std::move(dir)) {
  if (dir_.empty()) {
    throw std::runtime_error("media store: empty directory path");
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir_, ec)) {
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
      throw std::runtime_error("media store: cannot create " + dir_ + ": " + ec.message());
    }
    // Pictures are evidence of people's movements: no access for others.
    std::filesystem::permissions(dir_, std::filesystem::perms(0750), ec);
    if (ec) {
      throw std::runtime_error("media store: cannot set mode 0750 on " + dir_ + ": " + ec.message());
    }
  }
  if (::access(dir_.c_str(), W_OK | X_OK) != 0) {
    throw std::runtime_error("media store: " + dir_ + " is not writable: " + std::strerror(errno));
  }
}

std::string MediaStore::path_of(const std::string& sha256) const {
  return dir_ + "/" + sha256;
}

bool MediaStore::exists(const std::string& sha256) const {
  if (!is_sha256_hex(sha256)) {
    return false;
  }
  struct stat st {};
  return ::stat(path_of(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::optional<std::string> MediaStore::read(const std::string& sha256, std::size_t max_bytes) const {
  if (!is_sha256_hex(sha256)) {
    return std::nullopt;
  }
  std::ifstream in(path_of(sha256), std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  if (size < 0 || static_cast<std::uint64_t>(size) > max_bytes) {
    return std::nullopt;
  }
  in.seekg(0, std::ios::beg);
  // A read that ends early (EIO) is no copy: the caller sees "cannot read", not bytes that are not its name
  // (which would read as "not held").
  std::string out(static_cast<std::size_t>(size), '\0');
  if (!in.read(out.data(), static_cast<std::streamsize>(size)) || in.gcount() != size) {
    return std::nullopt;
  }
  return out;
}

SpaceReading read_space(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    return {};
  }
  return {static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize,
          static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize, true};
}

Status MediaStore::check_space(std::uint64_t incoming) {
  const std::uint64_t reserve = reserve_.load();
  if (reserve == 0) {
    return Status::ok();
  }
  const SpaceReading space = read_space(dir_);
  if (!space.ok || space.free_bytes >= reserve + incoming) {
    return Status::ok();
  }
  refused_.fetch_add(1);
  constexpr double kMiB = 1024.0 * 1024.0;
  char text[160];
  std::snprintf(text, sizeof text, "%.1f MiB free, below the %.1f MiB kept for evidence records",
                static_cast<double>(space.free_bytes) / kMiB, static_cast<double>(reserve) / kMiB);
  return Status::retry("media store " + dir_ + ": " + text);
}

std::string MediaStore::partial_dir() const {
  const std::string path = dir_ + "/partial";
  std::error_code ec;
  if (std::filesystem::create_directory(path, ec)) {
    std::filesystem::permissions(path, std::filesystem::perms(0750), ec);
  }
  return path;
}

Status MediaStore::adopt(const std::string& file_path, const std::string& sha256, std::int64_t bytes,
                         StoredMedia& out) {
  out = StoredMedia{};
  if (!is_sha256_hex(sha256)) {
    return Status::fail("media store: not a SHA-256 name: " + sha256);
  }
  out.sha256 = sha256;
  out.bytes = bytes;
  const std::string final_path = path_of(sha256);
  if (exists(sha256)) {
    out.already_present = true;
    ::unlink(file_path.c_str());
    return Status::ok();
  }
  ::chmod(file_path.c_str(), 0640);
  if (::rename(file_path.c_str(), final_path.c_str()) != 0) {
    return io_error("cannot rename into", final_path, errno);
  }
  if (const auto failed = fsync_directory(dir_)) {
    return io_error(std::string("cannot ") + failed->step, dir_, failed->err);
  }
  return Status::ok();
}

Status MediaStore::put(std::string_view bytes, StoredMedia& out) {
  out = StoredMedia{};
  out.sha256 = sha256_hex(bytes);
  out.bytes = static_cast<std::int64_t>(bytes.size());
  const std::string final_path = path_of(out.sha256);
  if (exists(out.sha256)) {
    // Same name means same bytes; the earlier put() already made it durable.
    out.already_present = true;
    return Status::ok();
  }
  if (Status space = check_space(bytes.size()); !space.is_ok()) {
    return space;
  }

  std::string tmp_path = dir_ + "/.tmp-XXXXXX";
  const int raw_fd = ::mkstemp(tmp_path.data());
  if (raw_fd < 0) {
    return io_error("cannot create a temporary file in", dir_, errno);
  }
  FdGuard fd(raw_fd);
  auto fail_and_unlink = [&](const std::string& what, int err) {
    fd.close_now();
    ::unlink(tmp_path.c_str());
    return io_error(what, tmp_path, err);
  };
  if (::fchmod(fd.get(), 0640) != 0) {
    return fail_and_unlink("cannot set the mode of", errno);
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fail_and_unlink("cannot write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    return fail_and_unlink("cannot fsync", errno);
  }
  if (fd.close_now() != 0) {
    const int err = errno;
    ::unlink(tmp_path.c_str());
    return io_error("cannot close", tmp_path, err);
  }
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_path.c_str());
    return io_error("cannot rename into", final_path, err);
  }
  // The rename is durable only once the directory entry is.
  if (const auto failed = fsync_directory(dir_)) {
    return io_error(std::string("cannot ") + failed->step, dir_, failed->err);
  }
  return Status::ok();
}

}  // namespace cpd::media
