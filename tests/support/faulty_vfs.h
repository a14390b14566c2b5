// A SQLite VFS over the default one that fails on demand, for tests of what the store and the store worker
// do when the disk fails: from a chosen sync (or write) on, a number of them return SQLITE_IOERR_FSYNC
// (SQLITE_IOERR_WRITE). A store opens it by name (store::StoreOptions::vfs = FaultyVfs::kName); the counts
// are process-wide, over every file opened through it.
#pragma once

namespace cpd::testing {

class FaultyVfs {
 public:
  static constexpr const char* kName = "cpd-faulty";

  // Registers the VFS (once; not as the default) and returns it.
  static FaultyVfs& instance();

  // The `nth` sync from now (1: the next one) and the `count` - 1 after it fail; fail_syncs(0, 0) fails none.
  void fail_syncs(int nth, int count);
  void fail_writes(int nth, int count);
  int failed_syncs() const;   // syncs failed so far
  int failed_writes() const;  // writes failed so far
};

}  // namespace cpd::testing
