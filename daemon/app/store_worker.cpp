#include "daemon/app/store_worker.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "daemon/core/encoding.h"
#include "daemon/core/record_check.h"
#include "daemon/log/log.h"

namespace cpd::app {

namespace {

// At shutdown a failing commit is retried this many times in a row (with the default backoff, 50 ms
// doubling to 5 s, about 75 s) before the worker gives up on what is not committed.
constexpr std::uint64_t kMaxFailuresAtShutdown = 20;

}  // namespace

StoreWorker::StoreWorker(store::EvidenceStore& store, Sealer& sealer, const WallClock& clock,
                         std::size_t max_batch, CommittedHandler on_committed, media::MediaStore* media,
                         int media_retention_days, pipeline::LinkRule link_rule, int important_retention_days)
    : store_(store),
      sealer_(sealer),
      clock_(clock),
      max_batch_(max_batch == 0 ? 1 : max_batch),
      on_committed_(std::move(on_committed)),
      outbox_stats_(store.outbox_stats()),
      media_(media),
      media_retention_days_(media_retention_days),
      link_rule_(std::move(link_rule)),
      important_retention_days_(important_retention_days),
      max_span_end_(store.max_span_end()),
      thread_([this] { run(); }) {}

StoreWorker::~StoreWorker() {
  drain_and_stop();
}

void StoreWorker::set_commit_observer(CommitObserver observer) {
  std::lock_guard lock(mutex_);
  commit_observer_ = std::move(observer);
}

void StoreWorker::set_commit_linger(std::chrono::milliseconds linger) {
  {
    std::lock_guard lock(mutex_);
    commit_linger_ = std::max(linger, std::chrono::milliseconds(0));
  }
  wake_.notify_one();
}

void StoreWorker::set_commit_retry_backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max) {
  std::lock_guard lock(mutex_);
  backoff_initial_ = initial;
  backoff_max_ = std::max(initial, max);
}

void StoreWorker::submit(Fact fact, RecordHandler on_committed) {
  enqueue(Item{std::move(fact), {}, std::move(on_committed), {}, nullptr});
}

void StoreWorker::submit(Fact fact, std::chrono::steady_clock::time_point ready_at) {
  enqueue(Item{std::move(fact), {}, nullptr, ready_at, nullptr});
}

void StoreWorker::submit(pipeline::DockFileFact fact, std::chrono::steady_clock::time_point ready_at) {
  RecordHandler ack;
  if (fact.on_committed) {
    ack = [ack = std::move(fact.on_committed)](const SealedRecord& record) { ack(record.id); };
  }
  enqueue(Item{std::move(fact.fact), std::move(fact.effects), std::move(ack), ready_at, nullptr});
}

void StoreWorker::submit_key_rotation(Fact fact, std::shared_ptr<const Ed25519PrivateKey> next_key,
                                      RecordHandler on_committed) {
  enqueue(Item{std::move(fact), {}, std::move(on_committed), {}, std::move(next_key)});
}

void StoreWorker::enqueue(Item item) {
  item.queued_at = std::chrono::steady_clock::now();
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    // The worker is woken for the first fact (it then waits out the linger) and for a full batch; the facts
    // between join the batch without waking it.
    wake = facts_.empty() || facts_.size() + 1 >= max_batch_ || commit_linger_.count() == 0;
    facts_.push_back(std::move(item));
  }
  if (wake) {
    wake_.notify_one();
  }
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
                              std::function<void(std::optional<std::vector<store::OutboxEntry>>)> done) {
  {
    std::lock_guard lock(mutex_);
    fetches_.push_back(Fetch{after_seq, limit, std::move(done)});
  }
  wake_.notify_one();
}

void StoreWorker::run_on_worker(std::function<void(store::EvidenceStore&)> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
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

std::uint64_t StoreWorker::salvaged_facts() const {
  std::lock_guard lock(mutex_);
  return salvaged_;
}

bool StoreWorker::commit_pending_retry() const {
  std::lock_guard lock(mutex_);
  return !retrying_.empty();
}

store::OutboxStats StoreWorker::outbox_stats() const {
  std::lock_guard lock(mutex_);
  return outbox_stats_;
}

bool StoreWorker::seal_into(const Fact& fact, UnixMs now, std::vector<store::StoredRecord>& sealed) {
  try {
    sealed.push_back({sealer_.seal_or_salvage(fact, now), {}});
  } catch (const std::exception& e) {
    // Not the fact's content (seal_or_salvage seals any content): signing itself failed. Keep the evidence
    // visible rather than stop the chain.
    log::error("store", "", std::string("cannot seal a ") + fact.type + " fact: " + e.what());
    Fact broken;
    broken.type = "fault";
    broken.time_ms = fact.time_ms;
    broken.fields = {{"fault", "unsealable_fact"}, {"fact_type", fact.type}, {"reason", e.what()}};
    sealed.push_back({sealer_.seal_or_salvage(broken, now), {}});
    return false;
  }
  const SealedRecord& r = sealed.back().record;
  if (!r.salvage_reason.empty()) {
    // A fact built wrongly somewhere in the gateway: sealed with what could be kept, and said loudly.
    std::string left_out;
    for (const auto& path : r.unsealable) {
      left_out += (left_out.empty() ? "" : ", ") + path;
    }
    log::error("store", "",
               "sealed " + r.id + " (" + fact.type + ") salvaged: " + r.salvage_reason +
                   (left_out.empty() ? std::string("; nothing left out") : "; left out: " + left_out));
    std::lock_guard lock(mutex_);
    ++salvaged_;
  }
  return true;
}

// Seals the batch in order and commits it in one transaction. Links are decided here, where seq order is
// known: a recording lists the linkable records already sealed in its span (committed ones from the store,
// earlier ones of this batch) and each such pair gets a `link` record right after it; a linkable record
// sealed after a recording whose span contains it gets a `link` record too (records are never edited).
// A batch is sealed (the link rule adds its links), appended in one transaction, then reported. A failed
// append puts the sealer back (head and key): the same facts are sealed again, in order, on the retry.
bool StoreWorker::commit_batch(std::vector<Item>& batch) {
  const ChainHead before = sealer_.head();
  const Ed25519PrivateKey key_before = sealer_.key();  // a key_rotation in the batch switches it
  SealedBatch sealed = seal_batch(batch, clock_.now_ms());
  if (!append_sealed(sealed.records)) {
    sealer_.reset(before);
    sealer_.use_key(key_before);
    return false;
  }
  max_span_end_ = sealed.max_span_end;
  report_committed(batch, sealed);
  return true;
}

StoreWorker::SealedBatch StoreWorker::seal_batch(std::vector<Item>& batch, UnixMs now) {
  SealedBatch out;
  out.records.reserve(batch.size());
  out.origin.reserve(batch.size());
  out.max_span_end = max_span_end_;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    std::vector<store::LinkTarget> targets;
    store::RecordEffects effects = batch[i].effects;  // the item stays as it is for a retry
    const std::optional<Fact> adjusted = completed(batch[i].fact, effects, now, out, targets);
    const Fact& fact = adjusted ? *adjusted : batch[i].fact;
    const bool own = seal_into(fact, now, out.records);
    out.origin.push_back(i);
    const SealedRecord& sealed = out.records.back().record;
    // A recording's span draws links when the recording itself was sealed (not a stand-in for it).
    const std::optional<store::LinkSpan> span =
        own && sealed.type == fact.type ? effects.link_span : std::nullopt;
    if (own) {
      out.records.back().effects = std::move(effects);
    }
    if (batch[i].next_key && sealed.type == fact.type && sealed.salvage_reason.empty()) {
      // The key_rotation record is sealed under the old key: everything after it, in this batch too, is
      // signed with the key it names (committed in the same transaction, or not at all).
      sealer_.use_key(*batch[i].next_key);
    }
    seal_links(i, span, targets, now, out);
  }
  return out;
}

std::optional<Fact> StoreWorker::completed(const Fact& fact, store::RecordEffects& effects, UnixMs now,
                                           const SealedBatch& batch,
                                           std::vector<store::LinkTarget>& targets) {
  for (auto& kept : effects.kept_media) {
    const int days =
        kept.important ? std::max(important_retention_days_, media_retention_days_) : media_retention_days_;
    kept.hold_until_ms = now + std::int64_t{days} * 24 * 3600 * 1000;
  }
  if (!effects.link_span) {
    return std::nullopt;  // sealed as it is: no copy
  }
  targets = store_.records_in_span(link_rule_.types, *effects.link_span);
  for (const auto& t : batch.targets) {
    if (effects.link_span->contains(t.time_ms)) {
      targets.push_back(t);
    }
  }
  nlohmann::json ids = nlohmann::json::array();
  for (const auto& t : targets) {
    ids.push_back(t.id);
  }
  Fact adjusted = fact;
  adjusted.fields["links"] = std::move(ids);
  return adjusted;
}

void StoreWorker::seal_links(std::size_t item, const std::optional<store::LinkSpan>& span,
                             const std::vector<store::LinkTarget>& targets, UnixMs now, SealedBatch& out) {
  const std::string id = out.records.back().record.id;
  const std::string type = out.records.back().record.type;
  const UnixMs time_ms = out.records.back().record.time_ms;
  // A link of a `speeding` record says whether GA/T 832's "one panorama plus video" is met, from the two
  // records' bodies: in this batch, or read from the store one record at a time (never every record of a
  // span at once). The recording's body is read once per recording; anything unreadable omits the verdict.
  std::map<std::string, nlohmann::json> recording_bodies;
  const auto body_of = [this](const std::string& record_id, const std::string& jws) {
    std::string bytes = jws;
    if (bytes.empty()) {
      const auto colon = record_id.rfind(':');
      const auto seq =
          colon == std::string::npos ? 0 : std::strtoull(record_id.c_str() + colon + 1, nullptr, 10);
      if (const auto stored = store_.record(seq); stored && stored->id == record_id) {
        bytes = stored->jws;
      }
    }
    return unverified_jws_part(bytes, 1).value_or(nlohmann::json());
  };
  const auto with_video = [&](const std::string& recording_id, const std::string& recording_jws,
                              const store::LinkTarget& target) -> std::optional<nlohmann::json> {
    if (target.type != "speeding") {
      return std::nullopt;
    }
    try {
      auto [it, fresh] = recording_bodies.try_emplace(recording_id);
      if (fresh) {
        it->second = body_of(recording_id, recording_jws);
      }
      return pipeline::panoramas_with_video(body_of(target.id, target.jws), it->second);
    } catch (const std::exception& e) {
      log::warn(
          "store", "",
          "link " + recording_id + " -> " + target.id + ": GA/T 832 video check not decided: " + e.what());
      return std::nullopt;
    }
  };
  const auto seal_link = [&](const std::string& recording_id, const std::string& recording_jws,
                             const store::LinkTarget& target, const store::LinkSpan& link_span) {
    seal_into(pipeline::make_link_fact(recording_id, target.id, target.type, target.time_ms, link_span,
                                       with_video(recording_id, recording_jws, target)),
              now, out.records);
    out.origin.push_back(item);
  };
  if (span) {
    // A recording: linked to the records in its span, stored or sealed before it in this batch.
    out.spans.push_back({id, *span, out.records.back().record.jws});
    out.max_span_end = std::max(out.max_span_end.value_or(span->hi_ms), span->hi_ms);
    const std::string recording_jws = out.records.back().record.jws;  // seal_link appends to out.records
    for (const auto& t : targets) {
      seal_link(id, recording_jws, t, *span);
    }
  }
  if (link_rule_.linkable(type)) {
    // A vehicle record: linked to the recordings whose span holds it, stored or sealed in this batch.
    const store::LinkTarget self{id, type, time_ms, type == "speeding" ? out.records.back().record.jws : ""};
    out.targets.push_back(self);
    std::vector<store::StoredSpan> spans;
    if (max_span_end_ && time_ms <= *max_span_end_) {
      spans = store_.spans_containing(time_ms);
    }
    for (const auto& stored : out.spans) {
      if (stored.span.contains(time_ms)) {
        spans.push_back(stored);
      }
    }
    for (const auto& stored : spans) {
      seal_link(stored.recording_id, stored.recording_jws, self, stored.span);
    }
  }
}

bool StoreWorker::append_sealed(const std::vector<store::StoredRecord>& records) {
  const auto started = std::chrono::steady_clock::now();
  const Status st = store_.append(records);
  if (!st.is_ok()) {
    log::error("store", "",
               "commit of " + std::to_string(records.size()) + " records failed (" +
                   (st.kind() == Status::Kind::kRetry ? "will retry" : "will retry; permanent") +
                   "): " + st.message());
    return false;
  }
  CommitObserver observer;
  {
    std::lock_guard lock(mutex_);
    observer = commit_observer_;
  }
  if (observer) {
    observer(std::chrono::steady_clock::now() - started, records.size());
  }
  return true;
}

void StoreWorker::report_committed(std::vector<Item>& batch, SealedBatch& sealed) {
  for (std::size_t k = 0; k < sealed.records.size(); ++k) {
    const bool own = k == 0 || sealed.origin[k] != sealed.origin[k - 1];  // the item's own record comes first
    if (!own) {
      continue;
    }
    Item& item = batch[sealed.origin[k]];
    if (item.on_committed) {
      item.on_committed(sealed.records[k].record);
    }
  }
  if (on_committed_) {
    const std::uint64_t last = sealed.records.back().record.seq;
    std::vector<forwarder::CommittedRecord> records;
    records.reserve(sealed.records.size());
    for (std::size_t k = 0; k < sealed.records.size(); ++k) {
      SealedRecord& r = sealed.records[k].record;
      records.push_back(
          {r.seq, batch[sealed.origin[k]].ready_at, std::move(r.jws), !r.media.empty(), r.type});
    }
    on_committed_(last, std::move(records));
  }
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
        log::error("store", "",
                   "record seq " + std::to_string(e.seq) + " names media but no media store is set");
      } else if (auto content = media_->read(sha); !content) {
        log::error("media", "",
                   "media " + sha + " named by record seq " + std::to_string(e.seq) + " is missing from " +
                       media_->dir());
      } else if (sha256_hex(*content) != sha) {
        log::error("media", "",
                   "media file " + media_->path_of(sha) + " no longer matches its SHA-256 (record seq " +
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
  // Files written before this (the real clock, as the file system's times are) are old enough.
  const UnixMs cutoff_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(
          (std::chrono::system_clock::now() - std::chrono::hours(24) * media_retention_days_)
              .time_since_epoch())
          .count();
  // A file older than this store that none of its records names is not this store's (a previous store's,
  // moved aside or lost, whose records central may never have confirmed): kept, for an operator.
  const UnixMs since_ms = store_.media_since_ms();
  std::error_code ec;
  std::size_t removed = 0;
  std::size_t foreign = 0;
  // A write's temporary file (MediaStore::put's .tmp-XXXXXX) a crash left behind: no record names it, and a
  // write in progress is seconds old. Left, they would eat into store.reserve_mb for ever.
  const auto stale_tmp = fs::file_time_type::clock::now() - std::chrono::hours(24);
  for (const auto& entry : fs::directory_iterator(media_->dir(), ec)) {
    const std::string name = entry.path().filename().string();
    std::error_code tmp_ec;
    if (name.size() == 11 && name.rfind(".tmp-", 0) == 0 && entry.is_regular_file(ec) &&
        entry.last_write_time(tmp_ec) < stale_tmp && !tmp_ec) {
      if (fs::remove(entry.path(), ec)) {
        ++removed;
      }
      continue;
    }
    if (name.size() != 64 || !entry.is_regular_file(ec)) {
      continue;
    }
    // The file's time, or nothing removed: a failed stat is no age.
    struct stat st {};
    if (::stat(entry.path().c_str(), &st) != 0) {
      continue;
    }
    const UnixMs mtime_ms = static_cast<UnixMs>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
    if (mtime_ms > cutoff_ms) {
      continue;
    }
    if (store_.media_pending(name) || store_.media_held(name, clock_.now_ms())) {
      continue;
    }
    if (mtime_ms < since_ms) {
      const std::optional<bool> named = store_.media_named(name);
      if (!named) {
        continue;  // a read error: unknown now, kept
      }
      if (!*named) {
        ++foreign;
        continue;
      }
    }
    if (fs::remove(entry.path(), ec)) {
      ++removed;
    }
  }
  if (removed > 0) {
    log::info("media", "",
              "retention: removed " + std::to_string(removed) + " files older than " +
                  std::to_string(media_retention_days_) + " days");
  }
  if (foreign != foreign_media_logged_) {
    foreign_media_logged_ = foreign;
    if (foreign > 0) {
      log::warn(
          "media", "",
          std::to_string(foreign) + " files in " + media_->dir() +
              " are older than this store and named by none of its records (a previous store's?): kept; "
              "check that central holds them (checkpoint-central), then move them away");
    }
  }
}

StoreWorker::Work StoreWorker::wait_for_work() {
  Work work;
  std::unique_lock lock(mutex_);
  for (;;) {
    // Facts wait at most commit_linger_ for others to share their commit (one fsync); anything else is served
    // at once and takes them along.
    const auto now = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> due;
    if (!facts_.empty()) {
      due = facts_.size() >= max_batch_ ? now : facts_.front().queued_at + commit_linger_;
    }
    if (stopping_ || !retrying_.empty() || !fetches_.empty() || !tasks_.empty() || !forwarded_.empty() ||
        (due && *due <= now)) {
      break;
    }
    if (due) {
      wake_.wait_until(lock, *due);
    } else {
      wake_.wait(lock);
    }
  }
  work.stopping = stopping_;
  if (!retrying_.empty()) {
    work.batch.swap(retrying_);
  }
  while (!facts_.empty() && work.batch.size() < max_batch_) {
    work.batch.push_back(std::move(facts_.front()));
    facts_.pop_front();
  }
  work.fetches.swap(fetches_);
  work.forwarded.swap(forwarded_);
  work.tasks.swap(tasks_);
  return work;
}

bool StoreWorker::commit_or_keep(std::vector<Item>& batch) {
  if (commit_batch(batch)) {
    std::lock_guard lock(mutex_);
    committed_ += batch.size();
    return true;
  }
  std::lock_guard lock(mutex_);
  ++failures_;
  retrying_ = std::move(batch);
  return false;
}

void StoreWorker::serve_requests(Work& work) {
  if (!work.forwarded.empty()) {
    if (Status st = store_.mark_forwarded(work.forwarded); !st.is_ok()) {
      // Not fatal: the records stay in the outbox and are sent again (consumers drop the copies).
      log::warn("store", "", "could not remove forwarded records from the outbox: " + st.message());
    }
  }
  for (auto& task : work.tasks) {
    task(store_);
  }
  for (auto& f : work.fetches) {
    auto entries = store_.outbox_after(f.after_seq, f.limit);
    if (entries) {
      load_media(*entries);
    }
    f.done(std::move(entries));
  }
}

void StoreWorker::periodic_upkeep() {
  if (const auto now = std::chrono::steady_clock::now();
      media_ != nullptr &&
      (last_sweep_ == std::chrono::steady_clock::time_point{} || now - last_sweep_ > std::chrono::hours(1))) {
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
}

bool StoreWorker::wait_before_retry(std::chrono::milliseconds& backoff, std::uint64_t consecutive_failures,
                                    bool stopping) {
  {
    std::lock_guard lock(mutex_);
    backoff = backoff.count() == 0 ? backoff_initial_ : std::min(backoff * 2, backoff_max_);
  }
  std::this_thread::sleep_for(backoff);
  if (stopping) {
    // Keep trying while stopping, but not forever: what is not committed was never accepted.
    std::lock_guard lock(mutex_);
    if (consecutive_failures > kMaxFailuresAtShutdown) {
      log::error("store", "",
                 "giving up at shutdown: " + std::to_string(retrying_.size() + facts_.size()) +
                     " facts were not committed");
      return false;
    }
  }
  return true;
}

void StoreWorker::run() {
  std::chrono::milliseconds backoff{0};  // 0: the next failure waits the initial backoff
  // Failed commits since the last one that succeeded: an earlier outage the store recovered from does not
  // shorten the retries at shutdown.
  std::uint64_t consecutive_failures = 0;
  for (;;) {
    Work work = wait_for_work();
    bool failed = false;
    if (!work.batch.empty()) {
      if (commit_or_keep(work.batch)) {
        backoff = std::chrono::milliseconds(0);
        consecutive_failures = 0;
      } else {
        failed = true;
        ++consecutive_failures;
      }
    }
    serve_requests(work);
    periodic_upkeep();
    if (failed) {
      if (!wait_before_retry(backoff, consecutive_failures, work.stopping)) {
        return;
      }
      continue;
    }
    std::lock_guard lock(mutex_);
    if (stopping_ && facts_.empty() && retrying_.empty() && fetches_.empty() && forwarded_.empty() &&
        tasks_.empty()) {
      return;
    }
  }
}

}  // namespace cpd::app
