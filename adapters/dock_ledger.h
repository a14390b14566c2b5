// DockLedger: what a recorder-dock adapter persists about its station (the listing cursor and every file
// listed), kept by the core in the evidence store so a crash never skips or repeats a file. The adapter
// sees only this narrow interface; the daemon serves it from the store worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "daemon/core/status.h"

namespace cpd::adapters {

// Where a listed file stands. A file is identified by (device, uniqueId, md5): a station that lists the
// same uniqueId with other bytes offers another file.
enum class DockFileState {
  kPending,   // listed and persisted, not yet a record
  kRecorded,  // its recording (or recording_fault) record is committed; not yet acknowledged
  kAcked,     // the station confirmed the acknowledgement (404 on ack: it no longer has it)
  kFaulted,   // a recording_fault record covers it (MD5 mismatches, ack refused): never acknowledged,
              // the station keeps its copy for the technicians
};

struct DockLedgerFile {
  std::string unique_id;
  std::string md5;
  std::string entry_json;  // the listing entry as received (DockFile::raw_json)
  DockFileState state = DockFileState::kPending;
  std::string sha256;     // kRecorded/kAcked: the stored file's SHA-256 (empty for a fault record)
  std::string record_id;  // kRecorded/kAcked: the record that covers it
};

// How many new files (and bytes of their listing entries) one listing may add to the open set.
struct DockListingBudget {
  std::size_t files = SIZE_MAX;
  std::size_t bytes = SIZE_MAX;
};

struct DockLedgerState {
  std::string cursor;                // empty: never listed (omit `after`)
  std::vector<DockLedgerFile> open;  // kPending and kRecorded files, in listing order
};

class DockLedger {
 public:
  virtual ~DockLedger() = default;
  // Callbacks run on the store worker thread and must not block: post them to the adapter's strand.

  // The persisted cursor and the files not yet acknowledged.
  virtual void load(const std::string& device_id, std::function<void(Status, DockLedgerState)> done) = 0;

  // One transaction, in listing order: a file already known keeps its state (so a repeated listing is
  // recognised) and costs nothing; a file not known yet is stored as kPending if it fits in `budget` (its
  // entry_json counts against `budget.bytes`), and the first one that does not fit ends the pass. Only a
  // complete pass moves the cursor to `next_cursor`: files not taken stay behind it, on the station. `done`
  // gets the states of the files passed, parallel to the first states.size() of `files`.
  virtual void save_listing(const std::string& device_id, std::vector<DockLedgerFile> files,
                            std::string next_cursor, DockListingBudget budget,
                            std::function<void(Status, std::vector<DockLedgerFile>)> done) = 0;

  // The station acknowledged: the file leaves the open set. (kRecorded and kFaulted are set by the record's
  // commit itself: the dock fact's RecordEffects::dock_update, same transaction.)
  virtual void mark_acked(const std::string& device_id, const std::string& unique_id, const std::string& md5,
                          std::function<void(Status)> done) = 0;
};

}  // namespace cpd::adapters
