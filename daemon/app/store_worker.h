// StoreWorker: the one thread that seals and commits. Facts queue up, each loop seals a batch (seq/prev in
// commit order), commits it in one transaction (one fsync) and only then reports the records accepted.
// It also serves the outbox pump's reads and PUBACK deletions, so SQLite is never touched on I/O threads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "daemon/core/record.h"
#include "daemon/core/sealer.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/outbox_source.h"
#include "daemon/media/media_store.h"
#include "daemon/pipeline/recording_fact.h"
#include "daemon/store/evidence_store.h"

namespace cpd::app {

class StoreWorker final : public forwarder::OutboxSource {
 public:
  // Called on the worker thread after each commit with the last committed seq; must not block.
  using CommittedHandler =
      std::function<void(std::uint64_t last_seq, std::vector<forwarder::CommittedRecord> records)>;

  // Media retention: a file goes once no unacknowledged record names it and it is older than
  // `media_retention_days`; a kept recording is held at least that long after its record, an important one
  // `important_retention_days`.
  StoreWorker(store::EvidenceStore& store, Sealer& sealer, const WallClock& clock, std::size_t max_batch,
              CommittedHandler on_committed, media::MediaStore* media = nullptr,
              int media_retention_days = 30, pipeline::LinkRule link_rule = {},
              int important_retention_days = 365);
  ~StoreWorker() override;

  // Thread-safe; never blocks on I/O. The fact is accepted once the CommittedHandler reports its batch;
  // `on_committed` (if any) runs on the worker thread once the record is committed (e.g. to know the seq
  // of a shutdown audit record). Must not block.
  using RecordHandler = std::function<void(const SealedRecord&)>;
  void submit(Fact fact, RecordHandler on_committed = nullptr);
  // A fact of the pipeline; `ready_at` (when it became ready to seal) gives the ready-to-PUBACK latency.
  void submit(Fact fact, std::chrono::steady_clock::time_point ready_at);
  // A dock file's fact: its effects (kept file, link span, ledger change) are committed in the same
  // transaction as its record, then its acknowledgement runs.
  void submit(pipeline::DockFileFact fact, std::chrono::steady_clock::time_point ready_at = {});
  // A key rotation (docs/custody.md): `fact` (a key_rotation record) is sealed under the current key, and
  // every record sealed after it (in its batch too) under `next_key`; if that batch fails to commit, the
  // sealer goes back to the old key and the batch is sealed again the same way. `on_committed` as above.
  void submit_key_rotation(Fact fact, std::shared_ptr<const Ed25519PrivateKey> next_key,
                           RecordHandler on_committed);
  // Commits everything submitted so far, then stops the thread.
  void drain_and_stop();

  // Runs `task` on the worker thread between commits, with the store (dock ledger reads and writes). The
  // task must not block on anything but the store.
  void run_on_worker(std::function<void(store::EvidenceStore&)> task);

  // OutboxSource: run on the worker thread; `done` is called there too (post it where it belongs).
  void fetch_after(std::uint64_t after_seq, std::size_t limit,
                   std::function<void(std::optional<std::vector<store::OutboxEntry>>)> done) override;
  void forwarded(std::vector<std::uint64_t> seqs) override;

  // Called on the worker thread after each successful commit with how long the transaction took (its
  // fsync included) and how many records it held: the fsync latency metric.
  using CommitObserver = std::function<void(std::chrono::steady_clock::duration, std::size_t records)>;
  void set_commit_observer(CommitObserver observer);

  // A fact waits at most `linger` (default 0) for others to share its transaction (one fsync for all):
  // fewer commits and wake-ups at low rates, acceptance (and delivery) at most `linger` later. A full batch,
  // a retry, an outbox request or a stop ends the wait at once.
  void set_commit_linger(std::chrono::milliseconds linger);

  // The wait after a failed commit starts at `initial` and doubles up to `max` (default 50 ms to 5 s); tests
  // shorten it.
  void set_commit_retry_backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max);

  std::uint64_t queued() const;
  std::uint64_t committed_records() const;
  std::uint64_t commit_failures() const;
  // Facts the sealer refused and that were sealed salvaged (Sealer::seal_or_salvage): a gateway bug, logged.
  std::uint64_t salvaged_facts() const;
  // A batch failed to commit and waits to be tried again (disk full, I/O error).
  bool commit_pending_retry() const;
  store::OutboxStats outbox_stats() const;  // cached after each loop; thread-safe

 private:
  struct Fetch {
    std::uint64_t after_seq;
    std::size_t limit;
    std::function<void(std::optional<std::vector<store::OutboxEntry>>)> done;
  };

  store::EvidenceStore& store_;
  Sealer& sealer_;
  const WallClock& clock_;
  const std::size_t max_batch_;
  CommittedHandler on_committed_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  struct Item {
    Fact fact;
    store::RecordEffects effects;  // committed with the fact's record
    RecordHandler on_committed;
    std::chrono::steady_clock::time_point ready_at{};   // for the latency figures; not part of the record
    std::shared_ptr<const Ed25519PrivateKey> next_key;  // a key rotation: the key for the records after it
    std::chrono::steady_clock::time_point queued_at{};  // when submitted (the commit linger)
  };
  // One batch sealed, not committed yet: its records, the batch item each came from, and what the link
  // rule needs of the records sealed so far in it.
  struct SealedBatch {
    std::vector<store::StoredRecord> records;
    std::vector<std::size_t> origin;
    std::vector<store::LinkTarget> targets;  // linkable records sealed in this batch
    std::vector<store::StoredSpan> spans;    // recordings sealed in this batch
    std::optional<UnixMs> max_span_end;
  };
  // What one round of the worker takes from the queues, all at once under the lock.
  struct Work {
    std::vector<Item> batch;  // a failed batch first, then new facts up to max_batch_
    std::deque<Fetch> fetches;
    std::vector<std::uint64_t> forwarded;
    std::deque<std::function<void(store::EvidenceStore&)>> tasks;
    bool stopping = false;
  };
  void run();
  Work wait_for_work();
  // Commits the batch and counts it; a failed one is counted and kept in retrying_. False: it failed.
  bool commit_or_keep(std::vector<Item>& batch);
  // Outbox removals, store tasks and outbox fetches taken this round.
  void serve_requests(Work& work);
  // The hourly media sweep and the cached outbox figures.
  void periodic_upkeep();
  // Sleeps the next backoff after a failed commit; false when stopping and the retries at shutdown are spent.
  bool wait_before_retry(std::chrono::milliseconds& backoff, std::uint64_t consecutive_failures,
                         bool stopping);
  bool commit_batch(std::vector<Item>& batch);
  SealedBatch seal_batch(std::vector<Item>& batch, UnixMs now);
  // The fact as it is sealed when the worker completes it (a recording's links, whose records go to
  // `targets`; nullopt: sealed as it is) and its effects (retention holds on kept files).
  std::optional<Fact> completed(const Fact& fact, store::RecordEffects& effects, UnixMs now,
                                const SealedBatch& batch, std::vector<store::LinkTarget>& targets);
  // The link records the batch's last sealed record (item `item`'s, with `span` if a recording) brings
  // (pipeline::LinkRule).
  void seal_links(std::size_t item, const std::optional<store::LinkSpan>& span,
                  const std::vector<store::LinkTarget>& targets, UnixMs now, SealedBatch& out);
  bool append_sealed(const std::vector<store::StoredRecord>& records);
  void report_committed(std::vector<Item>& batch, SealedBatch& sealed);
  void load_media(std::vector<store::OutboxEntry>& entries);
  void sweep_media();
  // Seals the fact into `sealed`; false when signing failed and a `fault` record stands in for it.
  bool seal_into(const Fact& fact, UnixMs now, std::vector<store::StoredRecord>& sealed);
  void enqueue(Item item);

  CommitObserver commit_observer_;
  std::chrono::milliseconds commit_linger_{0};
  std::chrono::milliseconds backoff_initial_{50};
  std::chrono::milliseconds backoff_max_{5000};
  std::deque<Item> facts_;
  std::vector<Item> retrying_;  // a batch whose commit failed: sealed again, in order, before anything new
  std::deque<Fetch> fetches_;
  std::vector<std::uint64_t> forwarded_;
  std::deque<std::function<void(store::EvidenceStore&)>> tasks_;
  bool stopping_ = false;
  std::uint64_t committed_ = 0;
  std::uint64_t failures_ = 0;  // failed commits over the worker's life (the metric)
  std::uint64_t salvaged_ = 0;
  store::OutboxStats outbox_stats_;
  std::chrono::steady_clock::time_point last_stats_{};
  media::MediaStore* media_;
  int media_retention_days_;
  std::size_t foreign_media_logged_ = 0;  // files older than the store and named by none (last logged)
  pipeline::LinkRule link_rule_;
  int important_retention_days_;
  std::optional<UnixMs> max_span_end_;  // worker thread only: skip span queries for later records
  std::chrono::steady_clock::time_point last_sweep_{};
  std::thread thread_;
};

}  // namespace cpd::app
