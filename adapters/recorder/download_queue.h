// The dock files one run of the recorder adapter works on, and where each stands: which file to download
// next, which to acknowledge next, each file's retry bookkeeping, the pending bounds, and the counters the
// status shows, all derived here. Pure: no Asio, no sockets, no files, no clock (times come in as arguments).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "adapters/events.h"

namespace cpd::adapters {

// A file is known by (uniqueId, md5): a station that lists the same uniqueId with other bytes offers
// another file.
std::string dock_file_key(const std::string& unique_id, const std::string& md5);

enum class DockFilePhase {
  kQueued,        // waits in the download order
  kWaiting,       // waits for its retry (broken transfer, disk trouble)
  kDownloading,   // an attempt is under way
  kCommitting,    // RecordingCollected / DockFileFault emitted, waiting for the record's commit
  kAckQueued,     // waits in the ack order (or for the ack retry)
  kAcking,        // its ack request is under way
  kMarkingAcked,  // the station took the ack; the ledger is marking it
};
inline constexpr std::size_t kDockFilePhases = 7;

struct DockFileWork {
  DockFile file;
  DockFilePhase phase = DockFilePhase::kQueued;
  UnixMs listed_ms = 0;  // gateway time of the listing that first showed it (or of the ledger load)
  int md5_failures = 0;  // whole downloads whose bytes did not match (md5 or size)
  int not_found = 0;     // consecutive 404 answers to its download
  int resumes = 0;       // requests sent with Range
  int breaks = 0;        // consecutive failed attempts (backoff)
  std::string sha256;    // once downloaded (or from the ledger); empty while a fault record closes it
};

// What the status shows of the queue.
struct DownloadQueueCounters {
  std::size_t queued = 0;  // to download: queued or waiting for a retry
  std::size_t downloading = 0;
  std::size_t pending = 0;        // every file taken, not yet acknowledged or closed by a fault
  std::size_t pending_bytes = 0;  // their listing entries
  bool limit_reached = false;     // listings held at the pending bound (see hold_listings)
};

// Room for new files under the pending bounds.
struct PendingRoom {
  std::size_t files = 0;
  std::size_t bytes = 0;
};

class DownloadQueue {
 public:
  struct Bounds {
    std::size_t max_files = 0;        // max_pending_files
    std::size_t max_entry_bytes = 0;  // max_pending_entry_bytes
  };
  // Called after every change, with the counters and whether the pending bound was just left (the
  // listings held at it may go on).
  using Observer = std::function<void(const DownloadQueueCounters&, bool room_regained)>;

  DownloadQueue(Bounds bounds, Observer observer);

  // ---- taking files (each false when the key is already known) ----
  // A pending file, to download after those queued before it.
  bool add_pending(const std::string& key, DockFile file, UnixMs listed_ms);
  // A file whose record is committed, to acknowledge after those queued before it.
  bool add_recorded(const std::string& key, DockFile file, UnixMs listed_ms, std::string sha256);
  // A file closed at once by a fault record (a refused or unreadable entry): kCommitting.
  bool add_closing(const std::string& key, DockFile file, UnixMs listed_ms);
  // The file is done with (its fault record committed, its ack marked in the ledger).
  void remove(const std::string& key);
  void clear();

  bool contains(const std::string& key) const { return files_.contains(key); }
  // nullptr when the key is not known. Phases and counts change only through the calls here.
  const DockFileWork* find(const std::string& key) const;

  // ---- downloads ----
  bool has_queued() const { return !download_order_.empty(); }
  // The next file to download (now kDownloading), or nullopt when none is queued.
  std::optional<std::string> start_next_download();
  // Back to the front of the download order (the station refused the token, the bytes did not match).
  void requeue_front(const std::string& key);
  // A failed attempt: the file waits for its retry. Returns the backoff attempt (consecutive attempts
  // without progress); false made_progress counts one more.
  int wait_for_retry(const std::string& key, bool made_progress);
  // The retry is due: a waiting file goes to the front of the order. False when it no longer waits.
  bool retry_due(const std::string& key);
  // The file's bytes are stored: its record is emitted and awaits its commit.
  void collected(const std::string& key, std::string sha256);
  // A fault record closes the file: kCommitting with no SHA-256 to acknowledge.
  void closing(const std::string& key);

  // ---- counted on the file ----
  // An attempt asks with Range (resumes after the bytes on disk).
  void note_resume(const std::string& key);
  // The station answered 404 for the file: the consecutive count, 1 for the first.
  int note_not_found(const std::string& key);
  // The station answered with the file (any other status): the 404 count starts again.
  void note_found(const std::string& key);
  // A whole download whose bytes did not match (md5 or size): the count of them, 1 for the first.
  int note_mismatch(const std::string& key);

  // ---- committed records and acks ----
  enum class Committed {
    kIgnored,        // not a file waiting for its commit (an earlier run's, or already past it)
    kClosed,         // a fault record: nothing to acknowledge, the file is done with (remove())
    kToAcknowledge,  // queued for its ack, after those queued before it
  };
  Committed committed(const std::string& key);
  bool acking() const { return phase_count(DockFilePhase::kAcking) > 0; }
  // The next file to acknowledge (now kAcking), or nullopt when none is queued.
  std::optional<std::string> start_next_ack();
  // The ack did not go through: back to the front of the ack order.
  void ack_again(const std::string& key);
  // The station took (or no longer knows) the file: the ledger marks it, then remove().
  void acknowledged(const std::string& key);
  // Ack retry bookkeeping, shared by all files (one ack at a time): the backoff attempt of this failure.
  int ack_failed() { return ack_failures_++; }
  void ack_succeeded() { ack_failures_ = 0; }

  // ---- pending bounds ----
  // Room for new files. With nothing pending one entry of any size fits, so no entry can stall a station.
  PendingRoom room() const;
  // A listing not made (or cut short) at the bound. The bound counts as left again once half of it is
  // free (hysteresis, so a station at the bound is reported once per episode, not once per file).
  void hold_listings();
  bool limit_reached() const { return limit_reached_; }

  const DownloadQueueCounters& counters() const { return counters_; }

 private:
  bool add(const std::string& key, DockFile file, UnixMs listed_ms, DockFilePhase phase,
           std::string sha256 = {});
  DockFileWork* find_mutable(const std::string& key);
  // The download order for kQueued, the ack order for kAckQueued, nullptr for the other phases.
  std::deque<std::string>* order_of(DockFilePhase phase);
  // The phase and its count, nothing else.
  void recount(DockFileWork& work, DockFilePhase phase);
  // Moves the file to `phase`: out of the order of the phase it leaves, into the order of the phase it
  // enters (at the front or the back), and the observer told.
  void move_to(const std::string& key, DockFileWork& work, DockFilePhase phase, bool front = false);
  void move_key(const std::string& key, DockFilePhase phase, bool front);
  // The first file of the `queued` phase's order, moved to `next`.
  std::optional<std::string> take_front(DockFilePhase queued, DockFilePhase next);
  std::size_t phase_count(DockFilePhase phase) const {
    return phase_counts_[static_cast<std::size_t>(phase)];
  }
  void changed();

  Bounds bounds_;
  Observer observer_;
  std::map<std::string, DockFileWork> files_;
  // Keys in kQueued phase, in download order, and in kAckQueued phase, in ack order: a key is in an
  // order exactly while its file is in that phase.
  std::deque<std::string> download_order_;
  std::deque<std::string> ack_order_;
  std::array<std::size_t, kDockFilePhases> phase_counts_{};
  std::size_t pending_bytes_ = 0;
  bool limit_reached_ = false;
  int ack_failures_ = 0;
  DownloadQueueCounters counters_;
};

}  // namespace cpd::adapters
