// FaultyVfs: a shim in front of the default VFS. Each file is the real VFS's file placed after a small
// header; every method is forwarded, xSync and xWrite consult the counters first.
#include "tests/support/faulty_vfs.h"

#include <sqlite3.h>

#include <atomic>
#include <mutex>
#include <stdexcept>

namespace cpd::testing {

namespace {

struct Countdown {
  std::atomic<int> until_first{0};  // calls left before the first failure; 0: disarmed
  std::atomic<int> failures_left{0};
  std::atomic<int> failed{0};

  void arm(int nth, int count) {
    failures_left = nth > 0 ? count : 0;
    until_first = nth > 0 ? nth : 0;
  }
  // True when this call fails.
  bool take() {
    if (failures_left.load() <= 0) {
      return false;
    }
    if (until_first.load() > 1) {
      --until_first;
      return false;
    }
    --failures_left;
    ++failed;
    return true;
  }
};

Countdown g_syncs;
Countdown g_writes;
sqlite3_vfs* g_real = nullptr;
sqlite3_vfs g_vfs;

struct ShimFile {
  sqlite3_file base;
  sqlite3_file* real;  // the real VFS's file, right after this struct
};

sqlite3_file* real(sqlite3_file* f) {
  return reinterpret_cast<ShimFile*>(f)->real;
}

int shim_close(sqlite3_file* f) {
  return real(f)->pMethods->xClose(real(f));
}
int shim_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
  return real(f)->pMethods->xRead(real(f), buf, n, off);
}
int shim_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  if (g_writes.take()) {
    return SQLITE_IOERR_WRITE;
  }
  return real(f)->pMethods->xWrite(real(f), buf, n, off);
}
int shim_truncate(sqlite3_file* f, sqlite3_int64 size) {
  return real(f)->pMethods->xTruncate(real(f), size);
}
int shim_sync(sqlite3_file* f, int flags) {
  if (g_syncs.take()) {
    return SQLITE_IOERR_FSYNC;
  }
  return real(f)->pMethods->xSync(real(f), flags);
}
int shim_file_size(sqlite3_file* f, sqlite3_int64* size) {
  return real(f)->pMethods->xFileSize(real(f), size);
}
int shim_lock(sqlite3_file* f, int level) {
  return real(f)->pMethods->xLock(real(f), level);
}
int shim_unlock(sqlite3_file* f, int level) {
  return real(f)->pMethods->xUnlock(real(f), level);
}
int shim_check_reserved(sqlite3_file* f, int* out) {
  return real(f)->pMethods->xCheckReservedLock(real(f), out);
}
int shim_file_control(sqlite3_file* f, int op, void* arg) {
  return real(f)->pMethods->xFileControl(real(f), op, arg);
}
int shim_sector_size(sqlite3_file* f) {
  return real(f)->pMethods->xSectorSize(real(f));
}
int shim_device_characteristics(sqlite3_file* f) {
  return real(f)->pMethods->xDeviceCharacteristics(real(f));
}
int shim_shm_map(sqlite3_file* f, int page, int size, int extend, void volatile** out) {
  return real(f)->pMethods->xShmMap(real(f), page, size, extend, out);
}
int shim_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  return real(f)->pMethods->xShmLock(real(f), offset, n, flags);
}
void shim_shm_barrier(sqlite3_file* f) {
  real(f)->pMethods->xShmBarrier(real(f));
}
int shim_shm_unmap(sqlite3_file* f, int delete_flag) {
  return real(f)->pMethods->xShmUnmap(real(f), delete_flag);
}
int shim_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
  return real(f)->pMethods->xFetch(real(f), off, n, out);
}
int shim_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  return real(f)->pMethods->xUnfetch(real(f), off, p);
}

const sqlite3_io_methods kMethods = {3,
                                     shim_close,
                                     shim_read,
                                     shim_write,
                                     shim_truncate,
                                     shim_sync,
                                     shim_file_size,
                                     shim_lock,
                                     shim_unlock,
                                     shim_check_reserved,
                                     shim_file_control,
                                     shim_sector_size,
                                     shim_device_characteristics,
                                     shim_shm_map,
                                     shim_shm_lock,
                                     shim_shm_barrier,
                                     shim_shm_unmap,
                                     shim_fetch,
                                     shim_unfetch};

int shim_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  auto* shim = reinterpret_cast<ShimFile*>(f);
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  const int rc = g_real->xOpen(g_real, name, shim->real, flags, out_flags);
  // A file the real VFS did not open has no methods; then neither has the shim (SQLite will not close it).
  shim->base.pMethods = shim->real->pMethods != nullptr ? &kMethods : nullptr;
  return rc;
}

}  // namespace

FaultyVfs& FaultyVfs::instance() {
  static FaultyVfs vfs;
  static std::once_flag once;
  std::call_once(once, [] {
    g_real = sqlite3_vfs_find(nullptr);
    if (g_real == nullptr || g_real->iVersion < 2) {
      throw std::runtime_error("FaultyVfs: no default SQLite VFS to wrap");
    }
    g_vfs = *g_real;  // the other methods only use the fields copied with it
    g_vfs.szOsFile = static_cast<int>(sizeof(ShimFile)) + g_real->szOsFile;
    g_vfs.zName = kName;
    g_vfs.pNext = nullptr;
    g_vfs.xOpen = shim_open;
    if (sqlite3_vfs_register(&g_vfs, 0) != SQLITE_OK) {
      throw std::runtime_error("FaultyVfs: sqlite3_vfs_register failed");
    }
  });
  return vfs;
}

void FaultyVfs::fail_syncs(int nth, int count) {
  g_syncs.arm(nth, count);
}
void FaultyVfs::fail_writes(int nth, int count) {
  g_writes.arm(nth, count);
}
int FaultyVfs::failed_syncs() const {
  return g_syncs.failed.load();
}
int FaultyVfs::failed_writes() const {
  return g_writes.failed.load();
}

}  // namespace cpd::testing
