// The recorder adapter's download queue and file state machine (download_queue.h); pure.
#include "adapters/recorder/download_queue.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace cpd::adapters {
namespace {

void erase_key(std::deque<std::string>& order, const std::string& key) {
  const auto it = std::find(order.begin(), order.end(), key);
  if (it != order.end()) {
    order.erase(it);
  }
}

}  // namespace

std::string dock_file_key(const std::string& unique_id, const std::string& md5) {
  return unique_id + "\n" + md5;
}

DownloadQueue::DownloadQueue(Bounds bounds, Observer observer)
    : bounds_(bounds), observer_(std::move(observer)) {}

bool DownloadQueue::add(const std::string& key, DockFile file, UnixMs listed_ms, DockFilePhase phase,
                        std::string sha256) {
  if (files_.contains(key)) {
    return false;
  }
  DockFileWork w;
  w.file = std::move(file);
  w.listed_ms = listed_ms;
  w.phase = phase;
  w.sha256 = std::move(sha256);
  pending_bytes_ += w.file.raw_json.size();
  ++phase_counts_[static_cast<std::size_t>(phase)];
  files_.emplace(key, std::move(w));
  if (auto* order = order_of(phase)) {
    order->push_back(key);
  }
  changed();
  return true;
}

bool DownloadQueue::add_pending(const std::string& key, DockFile file, UnixMs listed_ms) {
  return add(key, std::move(file), listed_ms, DockFilePhase::kQueued);
}

bool DownloadQueue::add_recorded(const std::string& key, DockFile file, UnixMs listed_ms,
                                 std::string sha256) {
  return add(key, std::move(file), listed_ms, DockFilePhase::kAckQueued, std::move(sha256));
}

bool DownloadQueue::add_closing(const std::string& key, DockFile file, UnixMs listed_ms) {
  return add(key, std::move(file), listed_ms, DockFilePhase::kCommitting);
}

void DownloadQueue::remove(const std::string& key) {
  const auto it = files_.find(key);
  if (it == files_.end()) {
    return;
  }
  if (auto* order = order_of(it->second.phase)) {
    erase_key(*order, key);
  }
  --phase_counts_[static_cast<std::size_t>(it->second.phase)];
  pending_bytes_ -= it->second.file.raw_json.size();
  files_.erase(it);
  changed();
}

void DownloadQueue::clear() {
  files_.clear();
  download_order_.clear();
  ack_order_.clear();
  phase_counts_.fill(0);
  pending_bytes_ = 0;
  changed();
}

const DockFileWork* DownloadQueue::find(const std::string& key) const {
  const auto it = files_.find(key);
  return it == files_.end() ? nullptr : &it->second;
}

DockFileWork* DownloadQueue::find_mutable(const std::string& key) {
  const auto it = files_.find(key);
  return it == files_.end() ? nullptr : &it->second;
}

std::deque<std::string>* DownloadQueue::order_of(DockFilePhase phase) {
  if (phase == DockFilePhase::kQueued) {
    return &download_order_;
  }
  if (phase == DockFilePhase::kAckQueued) {
    return &ack_order_;
  }
  return nullptr;
}

void DownloadQueue::recount(DockFileWork& work, DockFilePhase phase) {
  --phase_counts_[static_cast<std::size_t>(work.phase)];
  ++phase_counts_[static_cast<std::size_t>(phase)];
  work.phase = phase;
}

void DownloadQueue::move_to(const std::string& key, DockFileWork& work, DockFilePhase phase, bool front) {
  if (work.phase == phase) {
    return;
  }
  if (auto* order = order_of(work.phase)) {
    erase_key(*order, key);
  }
  recount(work, phase);
  if (auto* order = order_of(phase)) {
    if (front) {
      order->push_front(key);
    } else {
      order->push_back(key);
    }
  }
  changed();
}

std::optional<std::string> DownloadQueue::take_front(DockFilePhase queued, DockFilePhase next) {
  std::deque<std::string>& order = *order_of(queued);
  if (order.empty()) {
    return std::nullopt;
  }
  std::string key = std::move(order.front());
  order.pop_front();
  recount(files_.at(key), next);
  changed();
  return key;
}

std::optional<std::string> DownloadQueue::start_next_download() {
  return take_front(DockFilePhase::kQueued, DockFilePhase::kDownloading);
}

void DownloadQueue::move_key(const std::string& key, DockFilePhase phase, bool front) {
  if (DockFileWork* w = find_mutable(key)) {
    move_to(key, *w, phase, front);
  }
}

void DownloadQueue::requeue_front(const std::string& key) {
  move_key(key, DockFilePhase::kQueued, true);
}

int DownloadQueue::wait_for_retry(const std::string& key, bool made_progress) {
  DockFileWork* w = find_mutable(key);
  if (w == nullptr) {
    return 0;
  }
  w->breaks = made_progress ? 0 : w->breaks + 1;
  move_to(key, *w, DockFilePhase::kWaiting);
  return w->breaks;
}

bool DownloadQueue::retry_due(const std::string& key) {
  DockFileWork* w = find_mutable(key);
  if (w == nullptr || w->phase != DockFilePhase::kWaiting) {
    return false;
  }
  move_to(key, *w, DockFilePhase::kQueued, true);
  return true;
}

void DownloadQueue::collected(const std::string& key, std::string sha256) {
  DockFileWork* w = find_mutable(key);
  if (w == nullptr) {
    return;
  }
  w->sha256 = std::move(sha256);
  w->breaks = 0;
  move_to(key, *w, DockFilePhase::kCommitting);
}

void DownloadQueue::closing(const std::string& key) {
  DockFileWork* w = find_mutable(key);
  if (w == nullptr) {
    return;
  }
  w->sha256.clear();
  move_to(key, *w, DockFilePhase::kCommitting);
}

void DownloadQueue::note_resume(const std::string& key) {
  if (DockFileWork* w = find_mutable(key)) {
    ++w->resumes;
  }
}

int DownloadQueue::note_not_found(const std::string& key) {
  DockFileWork* w = find_mutable(key);
  return w == nullptr ? 0 : ++w->not_found;
}

void DownloadQueue::note_found(const std::string& key) {
  if (DockFileWork* w = find_mutable(key)) {
    w->not_found = 0;
  }
}

int DownloadQueue::note_mismatch(const std::string& key) {
  DockFileWork* w = find_mutable(key);
  return w == nullptr ? 0 : ++w->md5_failures;
}

DownloadQueue::Committed DownloadQueue::committed(const std::string& key) {
  DockFileWork* w = find_mutable(key);
  if (w == nullptr || w->phase != DockFilePhase::kCommitting) {
    return Committed::kIgnored;
  }
  if (w->sha256.empty()) {
    return Committed::kClosed;  // a fault record: its commit marked the file kFaulted in the ledger
  }
  move_to(key, *w, DockFilePhase::kAckQueued);
  return Committed::kToAcknowledge;
}

std::optional<std::string> DownloadQueue::start_next_ack() {
  return take_front(DockFilePhase::kAckQueued, DockFilePhase::kAcking);
}

void DownloadQueue::ack_again(const std::string& key) {
  move_key(key, DockFilePhase::kAckQueued, true);
}

void DownloadQueue::acknowledged(const std::string& key) {
  move_key(key, DockFilePhase::kMarkingAcked, false);
}

PendingRoom DownloadQueue::room() const {
  PendingRoom r;
  r.files = files_.size() >= bounds_.max_files ? 0 : bounds_.max_files - files_.size();
  r.bytes = files_.empty()
                ? SIZE_MAX
                : (pending_bytes_ >= bounds_.max_entry_bytes ? 0 : bounds_.max_entry_bytes - pending_bytes_);
  return r;
}

void DownloadQueue::hold_listings() {
  if (limit_reached_) {
    return;
  }
  limit_reached_ = true;
  changed();
}

void DownloadQueue::changed() {
  bool room_regained = false;
  if (limit_reached_ && files_.size() <= bounds_.max_files / 2 &&
      pending_bytes_ <= bounds_.max_entry_bytes / 2) {
    limit_reached_ = false;
    room_regained = true;
  }
  counters_.queued = phase_count(DockFilePhase::kQueued) + phase_count(DockFilePhase::kWaiting);
  counters_.downloading = phase_count(DockFilePhase::kDownloading);
  counters_.pending = files_.size();
  counters_.pending_bytes = pending_bytes_;
  counters_.limit_reached = limit_reached_;
  if (observer_) {
    observer_(counters_, room_regained);
  }
}

}  // namespace cpd::adapters
