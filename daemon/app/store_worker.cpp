#include "daemon/app/store_worker.h"

#include <chrono>
#include <filesystem>
#include <string>

#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::app {

StoreWorker::StoreWorker(store::EvidenceStore& store, Sealer& sealer, const WallClock& clock,
                         std::size_t max_batch, CommittedHandler on_committed, media::MediaStore* media,
                         int media_retention_days)
    : store_(store),
      sealer_(sealer),
      clock_(clock),
      max_batch_(max_batch == 0 ? 1 : max_batch),
      on_committed_(std::move(on_committed)),
      outbox_stats_(store.outbox_stats()),
      media_(media),
      media_retention_days_(media_retention_days),
      thread_([this] { run(); }) {}

StoreWorker::~StoreWorker() { drain_and_stop(); }

void StoreWorker::submit(Fact fact) { submit(std::move(fact), nullptr); }

void StoreWorker::submit(Fact fact, RecordHandler on_committed) {
  {
    std::lock_guard lock(mutex_);
    facts_.push_back(Item{std::move(fact), std::move(on_committed)});
  }
  wake_.notify_one();
}

void StoreWorker::drain_and_stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) {
      return;
    }
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void StoreWorker::fetch_after(std::uint64_t after_seq, std::size_t limit,
                              std::function<void(std::vector<store::OutboxEntry>)> done) {
  {
    std::lock_guard lock(mutex_);
    fetches_.push_back(Fetch{after_seq, limit, std::move(done)});
  }
  wake_.notify_one();
}

void StoreWorker::forwarded(std::vector<std::uint64_t> seqs) {
  {
    std::lock_guard lock(mutex_);
    forwarded_.insert(forwarded_.end(), seqs.begin(), seqs.end());
  }
  wake_.notify_one();
}

std::uint64_t StoreWorker::queued() const {
  std::lock_guard lock(mutex_);
  return facts_.size() + retrying_.size();
}

std::uint64_t StoreWorker::committed_records() const {
  std::lock_guard lock(mutex_);
  return committed_;
}

std::uint64_t StoreWorker::commit_failures() const {
  std::lock_guard lock(mutex_);
  return failures_;
}

store::OutboxStats StoreWorker::outbox_stats() const {
  std::lock_guard lock(mutex_);
  return outbox_stats_;
}

bool StoreWorker::commit_batch(std::vector<Item>& batch) {
  const ChainHead before = sealer_.head();
  std::vector<SealedRecord> sealed;
  sealed.reserve(batch.size());
  const UnixMs now = clock_.now_ms();
  for (const auto& item : batch) {
    const Fact& fact = item.fact;
    try {
      sealed.push_back(sealer_.seal(fact, now));
    } catch (const std::exception& e) {
      // A fact the sealer refuses is a bug in the core, not device trouble: keep the evidence visible.
      log::error("store", "", std::string("cannot seal a ") + fact.type + " fact: " + e.what());
      Fact broken;
      broken.type = "fault";
      broken.time_ms = fact.time_ms;
      broken.fields = {{"fault", "unsealable_fact"}, {"fact_type", fact.type}, {"reason", e.what()}};
      sealed.push_back(sealer_.seal(broken, now));
    }
  }
  const Status st = store_.append(sealed);
  if (!st.is_ok()) {
    sealer_.reset(before);
    log::error("store", "", "commit of " + std::to_string(sealed.size()) + " records failed (" +
                                (st.kind() == Status::Kind::kRetry ? "will retry" : "will retry; permanent") +
                                "): " + st.message());
    return false;
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].on_committed) {
      batch[i].on_committed(sealed[i]);
    }
  }
  if (on_committed_) {
    const std::uint64_t last = sealed.back().seq;
    std::vector<forwarder::CommittedRecord> records;
    records.reserve(sealed.size());
    for (std::size_t i = 0; i < sealed.size(); ++i) {
      records.push_back({sealed[i].seq, batch[i].fact.ready_at, std::move(sealed[i].jws), !sealed[i].media.empty()});
    }
    on_committed_(last, std::move(records));
  }
  return true;
}

// Reads the media of a page of outbox records, checking each file still hashes to its name. A page stops
// after ~4 MB of media so the forwarder's memory stays bounded (at least one record always goes).
void StoreWorker::load_media(std::vector<store::OutboxEntry>& entries) {
  constexpr std::size_t kPageBytes = 4u << 20;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto& e = entries[i];
    if (bytes > kPageBytes && i > 0) {
      entries.resize(i);
      return;
    }
    for (const auto& sha : e.media) {
      std::string data;
      if (media_ == nullptr) {
        log::error("store", "", "record seq " + std::to_string(e.seq) + " names media but no media store is set");
      } else if (auto content = media_->read(sha); !content) {
        log::error("media", "", "media " + sha + " named by record seq " + std::to_string(e.seq) +
                                    " is missing from " + media_->dir());
      } else if (sha256_hex(*content) != sha) {
        log::error("media", "", "media file " + media_->path_of(sha) + " no longer matches its SHA-256 (record seq " +
                                    std::to_string(e.seq) + "): not published; kept for inspection");
      } else {
        data = std::move(*content);
      }
      bytes += data.size();
      e.media_bytes.push_back(std::move(data));
    }
  }
}

// Retention: a media file older than the retention period goes only when no record still in the outbox
// names it (an unacknowledged record's pictures are never deleted).
void StoreWorker::sweep_media() {
  namespace fs = std::filesystem;
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(24) * media_retention_days_;
  std::error_code ec;
  std::size_t removed = 0;
  for (const auto& entry : fs::directory_iterator(media_->dir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 64 || !entry.is_regular_file(ec) || entry.last_write_time(ec) > cutoff) {
      continue;
    }
    if (store_.media_pending(name)) {
      continue;
    }
    if (fs::remove(entry.path(), ec)) {
      ++removed;
    }
  }
  if (removed > 0) {
    log::info("media", "", "retention: removed " + std::to_string(removed) + " files older than " +
                               std::to_string(media_retention_days_) + " days");
  }
}

void StoreWorker::run() {
  auto backoff = std::chrono::milliseconds(50);
  for (;;) {
    std::vector<Item> batch;
    std::deque<Fetch> fetches;
    std::vector<std::uint64_t> forwarded;
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || !facts_.empty() || !retrying_.empty() || !fetches_.empty() || !forwarded_.empty();
      });
      stopping = stopping_;
      if (!retrying_.empty()) {
        batch.swap(retrying_);
      }
      while (!facts_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(facts_.front()));
        facts_.pop_front();
      }
      fetches.swap(fetches_);
      forwarded.swap(forwarded_);
    }

    bool failed = false;
    if (!batch.empty()) {
      if (commit_batch(batch)) {
        backoff = std::chrono::milliseconds(50);
        std::lock_guard lock(mutex_);
        committed_ += batch.size();
      } else {
        failed = true;
        std::lock_guard lock(mutex_);
        ++failures_;
        retrying_ = std::move(batch);
      }
    }
    if (!forwarded.empty()) {
      if (Status st = store_.mark_forwarded(forwarded); !st.is_ok()) {
        // Not fatal: the records stay in the outbox and are sent again (consumers drop the copies).
        log::warn("store", "", "could not remove forwarded records from the outbox: " + st.message());
      }
    }
    for (auto& f : fetches) {
      auto entries = store_.outbox_after(f.after_seq, f.limit);
      load_media(entries);
      f.done(std::move(entries));
    }
    if (const auto now = std::chrono::steady_clock::now();
        media_ != nullptr && (last_sweep_ == std::chrono::steady_clock::time_point{} ||
                              now - last_sweep_ > std::chrono::hours(1))) {
      last_sweep_ = now;
      sweep_media();
    }
    // Counting the outbox costs a scan of it: refresh the cached figure at most once a second.
    if (const auto now = std::chrono::steady_clock::now(); now - last_stats_ > std::chrono::seconds(1)) {
      last_stats_ = now;
      auto stats = store_.outbox_stats();
      std::lock_guard lock(mutex_);
      outbox_stats_ = stats;
    }
    if (failed) {
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      if (stopping) {
        // Keep trying while stopping, but not forever: what is not committed was never accepted.
        std::lock_guard lock(mutex_);
        if (failures_ > 20) {
          log::error("store", "", "giving up at shutdown: " + std::to_string(retrying_.size() + facts_.size()) +
                                      " facts were not committed");
          return;
        }
      }
      continue;
    }
    std::lock_guard lock(mutex_);
    if (stopping_ && facts_.empty() && retrying_.empty() && fetches_.empty() && forwarded_.empty()) {
      return;
    }
  }
}

}  // namespace cpd::app
