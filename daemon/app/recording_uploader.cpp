// RecordingUploader (see the header). All state is on the strand; the store is used on its own thread and
// segments are read (and hashed) on the blocking pool. A generation count tells the completions of the
// current attempt from those of an attempt already given up (a failed publish restarts from what was
// PUBACKed in order).
#include "daemon/app/recording_uploader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>

#include "daemon/core/digest.h"
#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::app {

namespace asio = boost::asio;

namespace {

// The order files go in (EvidenceStore::uploads_pending's): 0 central asked for it, 1 important, 2 the rest.
int rank_of(const store::UploadRow& row) {
  return row.requested ? 0 : row.important ? 1 : 2;
}

constexpr std::size_t kPendingPage = 20;
constexpr std::size_t kDiscoverPage = 100;
constexpr std::chrono::milliseconds kIdlePoll{2000};
constexpr std::int64_t kMaxBackoffMs = 30000;
constexpr std::int64_t kMaxFinBackoffMs = 600000;
constexpr std::uint64_t kPersistEvery = 8;       // segments between progress writes to the store
constexpr std::int64_t kRefusedLaterMs = 60000;  // a file central refused "later" waits this long
constexpr std::size_t kMaxRefusals = 256;        // files refused (for good, or for now) kept in memory

// Reads `length` bytes at `offset`; nullopt with `error` set when the file cannot give them.
std::optional<std::string> read_at(const std::string& path, std::uint64_t offset, std::uint64_t length,
                                   std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string out(length, '\0');
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      error = n == 0 ? path + " is shorter than its record says"
                     : "cannot read " + path + ": " + std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return out;
}

void bump(std::mutex& m, nlohmann::json& counters, const char* name, std::uint64_t n = 1) {
  std::lock_guard lock(m);
  counters[name] = counters[name].get<std::uint64_t>() + n;
}

}  // namespace

RecordingUploader::RecordingUploader(asio::io_context& io, const config::Config& cfg,
                                     forwarder::SideChannel& channel, UploaderHost host,
                                     const WallClock& clock)
    : io_(io),
      strand_(asio::make_strand(io)),
      gateway_(cfg.gateway.id),
      base_(cfg.mqtt.topic_prefix + "/" + cfg.gateway.id + "/"),
      cfg_(cfg.custody),
      channel_(channel),
      host_(std::move(host)),
      clock_(clock),
      poll_timer_(strand_),
      wait_timer_(strand_) {
  for (const std::string& pem : cfg_.central_keys_pem) {
    const auto key = Ed25519PublicKey::from_pem(pem);
    central_keys_.emplace(key.kid(), key);
  }
  for (const char* name :
       {"files_sent", "segments_sent", "bytes_sent", "receipts_accepted", "receipts_refused",
        "receipts_unmatched", "wants", "wants_refused", "wants_dropped", "aborts_sent", "link_failures",
        "inputs_dropped", "pauses", "files_damaged", "refused_by_central"}) {
    counters_[name] = 0;
  }
  tokens_ = static_cast<double>(cfg_.recordings_rate_kib_s) * 1024.0;
  refilled_ = std::chrono::steady_clock::now();
}

RecordingUploader::~RecordingUploader() = default;

std::vector<std::string> RecordingUploader::topics() const {
  return {base_ + "files/receipt", base_ + "files/want", base_ + "files/refused"};
}

void RecordingUploader::on_message(forwarder::InboundMessage message) {
  // Bounded hop: a peer flooding these topics holds at most kMaxInputsWaiting messages here (each at most the
  // broker's packet size); beyond, a message is dropped and counted (central asks again, sends receipts
  // again).
  if (inputs_waiting_.fetch_add(1) >= kMaxInputsWaiting) {
    inputs_waiting_.fetch_sub(1);
    bump(snapshot_mutex_, counters_, "inputs_dropped");
    return;
  }
  asio::post(strand_, [this, m = std::move(message)] {
    inputs_waiting_.fetch_sub(1);
    if (stopped_) {
      return;
    }
    if (m.topic == base_ + "files/receipt") {
      on_receipt(m.payload);
    } else if (m.topic == base_ + "files/want") {
      on_want(m.payload);
    } else if (m.topic == base_ + "files/refused") {
      on_refused(m.payload);
    }
  });
}

void RecordingUploader::start() {
  log::notice("files", "",
              "recordings to central: policy " + cfg_.recordings_policy + ", at most " +
                  std::to_string(cfg_.recordings_rate_kib_s) + " KiB/s in segments of " +
                  std::to_string(cfg_.recordings_segment_kib) + " KiB");
  asio::post(strand_, [this] { schedule_poll(std::chrono::milliseconds(500)); });
}

void RecordingUploader::stop() {
  asio::post(strand_, [this] {
    stopped_ = true;
    ++generation_;
    poll_timer_.cancel();
    wait_timer_.cancel();
  });
}

nlohmann::json RecordingUploader::status() const {
  std::lock_guard lock(snapshot_mutex_);
  nlohmann::json s = counters_;
  s["policy"] = cfg_.recordings_policy;
  s["rate_kib_s"] = cfg_.recordings_rate_kib_s;
  s["pending"] = stats_.pending;
  s["pending_bytes"] = stats_.pending_bytes;
  s["held"] = stats_.held;
  s["sending"] = current_.empty() ? nlohmann::json(nullptr) : nlohmann::json(current_);
  s["last_refusal"] = last_refusal_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_refusal_);
  return s;
}

// --- from central ---

void RecordingUploader::on_receipt(const std::string& jws) {
  const KeyForKid lookup = [this](const std::string& kid) -> std::optional<Ed25519PublicKey> {
    const auto it = central_keys_.find(kid);
    return it == central_keys_.end() ? std::nullopt : std::optional<Ed25519PublicKey>(it->second);
  };
  const filex::FileReceiptCheck c = filex::check_file_receipt(jws, lookup, gateway_);
  if (!c.ok) {
    bump(snapshot_mutex_, counters_, "receipts_refused");
    {
      std::lock_guard lock(snapshot_mutex_);
      last_refusal_ = c.reason;
    }
    log::warn("files", "", "file receipt refused: " + c.reason);
    return;
  }
  // Sealed first, then the upload marked held once the record is committed (as with custody receipts): the
  // chain shows when central took the file, and a crash in between only seals it again at the next receipt.
  host_.run_on_store([this, r = c.receipt, jws, kid = c.kid](store::EvidenceStore& store) {
    const auto row = store.upload(r.sha256);
    const bool waiting = row && !row->held_ms && row->length == r.size;
    const std::uint64_t recording_seq = row ? row->seq : 0;
    asio::post(strand_, [this, r, jws, kid, waiting, recording_seq] {
      if (!waiting || !sealing_.insert(r.sha256).second) {
        // A repeat of a receipt already taken (or being taken), or a file this store does not wait for.
        bump(snapshot_mutex_, counters_, "receipts_unmatched");
        return;
      }
      Fact fact;
      fact.type = "recording_custody";
      fact.time_ms = clock_.now_ms();
      fact.fields = {{"central", r.central},
                     {"central_kid", kid},
                     {"sha256", r.sha256},
                     {"size", r.size},
                     {"recording_seq", recording_seq},
                     {"issued_ms", r.issued_ms},
                     {"receipt_sha256", sha256_hex(jws)},
                     {"receipt", jws}};
      host_.submit(std::move(fact), [this, r, jws](const SealedRecord& sealed) {
        if (sealed.type != "recording_custody") {
          // Signing failed and a fault record took its place: the chain shows no receipt, so none is taken
          // (the gateway sends the fin again, and central answers with its receipt again).
          log::error("files", "",
                     "file receipt for recording " + r.sha256 + " not taken: its recording_custody record " +
                         "could not be sealed (seq " + std::to_string(sealed.seq) + " is a " + sealed.type +
                         " record)");
          asio::post(strand_, [this, sha = r.sha256] { sealing_.erase(sha); });
          return;
        }
        host_.run_on_store([this, r, jws](store::EvidenceStore& s) {
          const bool held = s.upload_held(r.sha256, r.size, r.central, jws, clock_.now_ms());
          const store::UploadStats stats = s.upload_stats();
          {
            std::lock_guard lock(snapshot_mutex_);
            stats_ = stats;
          }
          asio::post(strand_, [this, held, r] {
            sealing_.erase(r.sha256);
            if (held) {
              took_receipt(r);
            }
          });
        });
      });
    });
  });
}

void RecordingUploader::took_receipt(const filex::FileReceipt& r) {
  bump(snapshot_mutex_, counters_, "receipts_accepted");
  fin_next_.erase(r.sha256);
  wants_.erase(r.sha256);
  if (job_ && job_->row.sha256 == r.sha256) {
    // Central holds it already (e.g. the same bytes from another gateway, answered at the init): the rest
    // need not be sent.
    ++generation_;
    job_.reset();
    wait_timer_.cancel();
    {
      std::lock_guard lock(snapshot_mutex_);
      current_.clear();
    }
    asio::post(strand_, [this] { poll(); });
  }
  log::notice("files", "",
              "recording " + r.sha256 + " (" + std::to_string(r.size) + " bytes) in custody of " +
                  printable(r.central, 64));
}

void RecordingUploader::on_want(const std::string& payload) {
  filex::WantParse w = filex::parse_want(payload);
  if (!w.want) {
    bump(snapshot_mutex_, counters_, "wants_refused");
    log::warn("files", "", "file want refused: " + w.reason);
    return;
  }
  bump(snapshot_mutex_, counters_, "wants");
  const std::string sha = w.want->sha256;
  refused_.erase(sha);  // central asks for it now: whatever it refused before no longer stands
  deferred_.erase(sha);
  if (w.want->ranges.empty()) {
    if (lookups_ >= kMaxLookups) {
      bump(snapshot_mutex_, counters_, "wants_dropped");  // central asks again
      return;
    }
    ++lookups_;
    // The whole file: sent again from byte 0 as an ordinary upload (and so also under the on_request policy).
    host_.run_on_store([this, sha](store::EvidenceStore& store) {
      auto found = store.find_upload(sha);
      if (!found.row && !found.unreadable && store.uploads_discover(1, sha) > 0) {
        found = store.find_upload(sha);  // a recording whose row the idle poll had not made yet: held here
      }
      const auto& row = found.row;
      if (row && !row->held_ms && row->sent_to < row->length) {
        (void)store.upload_request(sha);  // sent whole: only once its copy is checked (verify_then_resend)
      }
      asio::post(strand_, [this, sha, row, unreadable = found.unreadable] {
        --lookups_;
        if (unreadable) {
          // Whether it is held cannot be told now: no answer (an abort would end central's asking for it).
          want_unanswered(sha);
        } else if (!row) {
          if (aborts_.size() < kMaxAborts) {
            aborts_.insert(sha);
          } else {
            bump(snapshot_mutex_, counters_, "wants_dropped");  // central asks again; answered then
          }
        } else if (row->held_ms) {
          if (wants_.size() >= kMaxWants && wants_.find(sha) == wants_.end()) {
            bump(snapshot_mutex_, counters_, "wants_dropped");  // central asks again after its stall time
          } else {
            wants_[sha] = filex::Ranges{{0, row->length}};
          }
        } else if (row->length > 0 && row->sent_to >= row->length) {
          // Sent whole, and central asks for all of it again: its whole-file hash failed (or it lost the
          // transfer). Sent again unchecked, a copy damaged here would fail there for ever.
          verify_then_resend(*row);
          return;
        } else {
          resend_whole(sha);
        }
        poll();
      });
    });
    return;
  }
  if (wants_.size() >= kMaxWants && wants_.find(sha) == wants_.end()) {
    bump(snapshot_mutex_, counters_, "wants_dropped");  // central asks again after its stall time
    return;
  }
  filex::Ranges wanted = std::move(w.want->ranges);
  if (job_ && job_->row.sha256 == sha) {
    // Being sent now: what the job has still to send is not sent again after it.
    wanted = filex::ranges_minus(wanted, still_to_send(*job_));
    if (wanted.empty()) {
      return;
    }
  }
  filex::Ranges& ranges = wants_[sha];
  ranges.insert(ranges.end(), wanted.begin(), wanted.end());
  std::sort(ranges.begin(), ranges.end());
  filex::Ranges merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else if (merged.size() < filex::kMaxWantRanges) {
      merged.push_back(r);
    }
  }
  ranges = std::move(merged);
  poll();
}

void RecordingUploader::on_refused(const std::string& payload) {
  const filex::RefusalParse p = filex::parse_refused(payload);
  if (!p.refusal) {
    bump(snapshot_mutex_, counters_, "wants_refused");  // malformed input from central's topics
    log::warn("files", "", "file refusal from central refused: " + p.reason);
    return;
  }
  const filex::Refusal& r = *p.refusal;
  const UnixMs now = clock_.now_ms();
  // Unsigned, and anyone the broker lets publish on the topic can send them: what is kept is bounded. One
  // beyond the bound is counted as dropped input only (not as a refusal taken).
  if ((r.later ? deferred_.size() : refused_.size()) >= kMaxRefusals && !deferred_.count(r.sha256) &&
      !refused_.count(r.sha256)) {
    bump(snapshot_mutex_, counters_, "inputs_dropped");
    return;
  }
  bump(snapshot_mutex_, counters_, "refused_by_central");
  {
    std::lock_guard lock(snapshot_mutex_);
    last_refusal_ = "central refused recording " + r.sha256 + ": " + r.reason;
  }
  if (r.later) {
    // Central cannot open the transfer now (too many open): this file steps aside for a while, so wants
    // (which complete the open transfers) and other files go first.
    deferred_[r.sha256] = now + kRefusedLaterMs;
    log::warn("files", "",
              "recording " + r.sha256 + ": central refused it for now (" + r.reason + "); again in " +
                  std::to_string(kRefusedLaterMs / 1000) + " s");
  } else {
    refused_.insert(r.sha256);
    log::error("files", "",
               "recording " + r.sha256 + ": central will not take it (" + r.reason +
                   "); not sent again until checkpointd restarts; the record and the file are kept");
  }
  if (job_ && job_->row.sha256 == r.sha256) {
    drop_job_of(r.sha256);  // its progress (sent_to) is where a later attempt resumes, init first
    poll();
  }
}

std::set<std::string> RecordingUploader::not_sent_now() const {
  std::set<std::string> out = unreadable_;
  out.insert(refused_.begin(), refused_.end());
  const UnixMs now = clock_.now_ms();
  for (const auto& [sha, until] : deferred_) {
    if (until > now) {
      out.insert(sha);
    }
  }
  return out;
}

void RecordingUploader::drop_job_of(const std::string& sha) {
  if (job_ && job_->row.sha256 == sha) {
    ++generation_;  // its completions are ignored from now on
    job_.reset();
    wait_timer_.cancel();
    std::lock_guard lock(snapshot_mutex_);
    current_.clear();
  }
}

void RecordingUploader::resend_whole(const std::string& sha) {
  fin_next_.erase(sha);
  drop_job_of(sha);  // the next poll starts it again from byte 0
  // Again, now that no job of this file can write its progress any more: a progress write queued before
  // this point (its upload's, or a pause's) may have run after the first request.
  host_.run_on_store([sha](store::EvidenceStore& s) { (void)s.upload_request(sha); });
}

void RecordingUploader::verify_then_resend(const store::UploadRow& row) {
  ++lookups_;  // bounded with the lookups: at most kMaxLookups files are read at once
  host_.run_blocking([this, sha = row.sha256, length = row.length, path = host_.media_path(row.sha256)] {
    std::string error;
    const auto hashed = sha256_file(path, error);
    asio::post(strand_, [this, sha, length, hashed, error] {
      --lookups_;
      if (stopped_) {
        return;
      }
      if (hashed && hashed->sha256 == sha && hashed->bytes == length) {
        resend_whole(sha);
      } else {
        const std::string why = hashed ? "damaged: the file here hashes to " + hashed->sha256 + " (" +
                                             std::to_string(hashed->bytes) + " bytes), not its SHA-256"
                                       : "not held: " + error;
        log::error("files", "",
                   "recording " + sha + " cannot be sent: " + why +
                       " (central is told: abort; the record and the file are kept)");
        bump(snapshot_mutex_, counters_, "files_damaged");
        unreadable_.insert(sha);
        fin_next_.erase(sha);
        drop_job_of(sha);
        publish_abort(sha, why);
      }
      poll();
    });
  });
}

// --- choosing work ---

void RecordingUploader::schedule_poll(std::chrono::milliseconds after) {
  if (stopped_) {
    return;
  }
  poll_timer_.expires_after(after);
  poll_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      poll();
    }
  });
}

filex::Ranges RecordingUploader::still_to_send(const Job& job) {
  filex::Ranges out;
  for (std::size_t i = job.range; i < job.ranges.size(); ++i) {
    const auto [lo, hi] = job.ranges[i];
    const std::uint64_t from = i == job.range ? std::max(lo, job.cursor) : lo;
    if (from < hi) {
      out.emplace_back(from, hi);
    }
  }
  return out;
}

filex::Ranges RecordingUploader::left_to_send(const store::UploadRow& row, filex::Ranges ranges) const {
  if (!sends_later(row)) {
    return ranges;
  }
  // Its own upload resumes at the segment holding sent_to and sends the rest: a want covering the tail
  // (central asks for everything missing after a stall) would send the tail twice.
  const std::uint64_t segment = static_cast<std::uint64_t>(cfg_.recordings_segment_kib) * 1024;
  return filex::ranges_minus(ranges, {{row.sent_to - row.sent_to % segment, row.length}});
}

bool RecordingUploader::sends_later(const store::UploadRow& row) const {
  // The rule of EvidenceStore::uploads_pending: not held and within the policy.
  return !row.held_ms && row.sent_to < row.length &&
         (cfg_.recordings_policy == "all" || row.requested ||
          (cfg_.recordings_policy == "important" && row.important));
}

void RecordingUploader::poll() {
  if (stopped_ || polling_) {
    return;
  }
  if (job_) {
    check_preempt();
    return;
  }
  if (!aborts_.empty()) {
    const std::string sha = *aborts_.begin();
    aborts_.erase(aborts_.begin());
    publish_abort(sha, "not held: this gateway keeps no recording with this SHA-256");
    asio::post(strand_, [this] { poll(); });
    return;
  }
  polling_ = true;
  if (!wants_.empty()) {
    serve_next_want();
    return;
  }
  const bool all = cfg_.recordings_policy == "all";
  const bool important = cfg_.recordings_policy == "important";
  host_.run_on_store(
      [this, all, important, after = fin_cursor_, skip = not_sent_now()](store::EvidenceStore& store) {
        store.uploads_discover(kDiscoverPage);
        auto pending = store.uploads_pending(all, important, kPendingPage, false, skip);
        // Files not yet sent whole, apart: more than a page of files waiting for their receipts must not hide
        // them (nor files this process does not send now).
        for (store::UploadRow& row : store.uploads_pending(all, important, kPendingPage, true, skip)) {
          pending.push_back(std::move(row));
        }
        // And a page of those waiting for their receipts, walked through by seq: files that never get one
        // (over central's size bound) must not keep the fins of all later files from being sent again.
        auto waiting = store.uploads_sent_whole(all, important, after, kPendingPage);
        const std::int64_t next_cursor =
            waiting.size() < kPendingPage ? 0 : static_cast<std::int64_t>(waiting.back().seq);
        for (store::UploadRow& row : waiting) {
          pending.push_back(std::move(row));
        }
        const store::UploadStats stats = store.upload_stats();
        asio::post(strand_, [this, pending = std::move(pending), stats, next_cursor] {
          fin_cursor_ = next_cursor;
          take_pending(pending, stats);
        });
      });
}

void RecordingUploader::serve_next_want() {
  auto it = wants_.begin();
  const std::string sha = it->first;
  filex::Ranges ranges = std::move(it->second);
  wants_.erase(it);
  host_.run_on_store([this, sha, ranges = std::move(ranges)](store::EvidenceStore& store) mutable {
    auto found = store.find_upload(sha);
    asio::post(strand_, [this, sha, found = std::move(found), ranges = std::move(ranges)]() mutable {
      take_want(sha, found, std::move(ranges));
    });
  });
}

void RecordingUploader::want_unanswered(const std::string& sha) {
  bump(snapshot_mutex_, counters_, "wants_dropped");  // central asks again after its stall time
  log::warn("files", "",
            "want for recording " + sha +
                " not answered: the store could not be read (central asks again; no abort is sent)");
}

void RecordingUploader::take_want(const std::string& sha, const store::EvidenceStore::UploadLookup& found,
                                  filex::Ranges ranges) {
  polling_ = false;
  if (stopped_) {
    return;
  }
  if (found.unreadable) {
    want_unanswered(sha);
    poll();
    return;
  }
  const std::optional<store::UploadRow>& row = found.row;
  if (!row || unreadable_.count(sha)) {
    publish_abort(sha, row ? "not held: this gateway's copy is damaged or cannot be read (logged when found)"
                           : "not held: this gateway keeps no recording with this SHA-256");
    poll();
    return;
  }
  ranges = left_to_send(*row, std::move(ranges));
  if (ranges.empty() && sends_later(*row)) {
    poll();
    return;
  }
  if (!ranges.empty()) {
    log::info("files", "",
              "recording " + sha + ": sending " + std::to_string(filex::ranges_bytes(ranges)) +
                  " bytes central asked for, from byte " + std::to_string(ranges.front().first));
  }
  Job job;
  job.row = *row;
  job.ranges = std::move(ranges);
  begin(std::move(job));
}

void RecordingUploader::take_pending(const std::vector<store::UploadRow>& pending,
                                     const store::UploadStats& stats) {
  polling_ = false;
  {
    std::lock_guard lock(snapshot_mutex_);
    stats_ = stats;
  }
  if (stopped_ || job_) {
    return;
  }
  const UnixMs now = clock_.now_ms();
  UnixMs next_fin = now + kIdlePoll.count();
  for (const store::UploadRow& row : pending) {
    if (unreadable_.count(row.sha256) || refused_.count(row.sha256)) {
      continue;
    }
    if (const auto d = deferred_.find(row.sha256); d != deferred_.end()) {
      if (d->second > now) {
        next_fin = std::min(next_fin, d->second);
        continue;
      }
      deferred_.erase(d);
    }
    if (row.sent_to < row.length) {
      Job job;
      job.row = row;
      job.progress = true;
      job.rank = rank_of(row);
      begin(std::move(job));
      return;
    }
    // Sent whole: its fin again when no receipt came in time (or at once after a restart).
    auto [it, fresh] = fin_next_.try_emplace(row.sha256, now, cfg_.recordings_receipt_wait_ms);
    if (it->second.first <= now) {
      it->second.first = now + it->second.second;
      it->second.second = std::min<std::int64_t>(it->second.second * 2, kMaxFinBackoffMs);
      Job job;
      job.row = row;  // no ranges: init and fin only
      begin(std::move(job));
      return;
    }
    next_fin = std::min(next_fin, it->second.first);
  }
  schedule_poll(std::chrono::milliseconds(std::max<UnixMs>(100, next_fin - now)));
}

// --- stepping aside for more urgent work ---

void RecordingUploader::check_preempt() {
  if (!job_->progress || job_->pausing || job_->rank == 0) {
    return;  // a want's bytes, a fin, or a file central asked for: never paused
  }
  std::vector<std::string> wanted;  // other files central wants bytes of
  for (const auto& [sha, ranges] : wants_) {
    if (sha != job_->row.sha256) {
      wanted.push_back(sha);
    }
  }
  polling_ = true;
  const bool all = cfg_.recordings_policy == "all";
  const bool important = cfg_.recordings_policy == "important";
  host_.run_on_store([this, all, important, wanted, skip = not_sent_now()](store::EvidenceStore& store) {
    std::map<std::string, std::optional<store::UploadRow>> rows;
    for (const std::string& sha : wanted) {
      rows[sha] = store.upload(sha);
    }
    store.uploads_discover(kDiscoverPage);  // an important recording collected meanwhile
    auto unsent = store.uploads_pending(all, important, kPendingPage, true, skip);
    asio::post(strand_, [this, rows = std::move(rows), unsent = std::move(unsent)] {
      polling_ = false;
      if (stopped_) {
        return;
      }
      if (!job_) {
        poll();  // the job ended meanwhile, and its poll found this check running
        return;
      }
      if (!job_->progress || job_->pausing) {
        return;
      }
      bool unseen_want = false;  // arrived during the check: checked again at once
      for (const auto& [sha, ranges] : wants_) {
        if (sha == job_->row.sha256) {
          continue;
        }
        const auto row = rows.find(sha);
        if (row == rows.end()) {
          unseen_want = true;
          continue;
        }
        // Only a want that leaves something to send (an abort, or bytes the file's own upload will not
        // send) is worth a pause: its tail, which the file's own upload sends anyway, is not.
        if (!row->second || unreadable_.count(sha) || !left_to_send(*row->second, ranges).empty()) {
          pause("central wants bytes of recording " + sha);
          return;
        }
      }
      for (const store::UploadRow& row : unsent) {
        if (row.sha256 == job_->row.sha256 || unreadable_.count(row.sha256) || refused_.count(row.sha256) ||
            deferred_.count(row.sha256)) {
          continue;
        }
        const int rank = rank_of(row);
        if (rank < job_->rank) {
          pause(std::string(rank == 0 ? "central asked for" : "the officer flagged important") +
                " recording " + row.sha256);
          return;
        }
        break;  // ranked no higher: the rest rank no higher either
      }
      if (unseen_want) {
        asio::post(strand_, [this] { poll(); });
      } else {
        schedule_poll(kPreemptCheck);
      }
    });
  });
}

void RecordingUploader::pause(const std::string& why) {
  if (still_to_send(*job_).empty()) {
    return;  // every segment is out: its fin follows, and the file is done
  }
  job_->pausing = true;
  bump(snapshot_mutex_, counters_, "pauses");
  log::info("files", "",
            "recording " + job_->row.sha256 + ": paused at byte " + std::to_string(acked_to()) + ", " + why +
                " goes first");
  pump();  // completes the pause at once when nothing is in flight
}

void RecordingUploader::complete_pause() {
  Job job = std::move(*job_);
  job_.reset();
  ++generation_;
  wait_timer_.cancel();
  {
    std::lock_guard lock(snapshot_mutex_);
    current_.clear();
  }
  // Every byte below the cursor was PUBACKed (nothing is in flight): the upload resumes there, after the
  // more urgent work (the poll takes rows in rank order).
  const std::uint64_t from = std::min(job.cursor, job.row.length);
  host_.run_on_store([sha = job.row.sha256, from](store::EvidenceStore& store) {
    (void)store.upload_progress(sha, from);  // lost: resumes from the last progress written, sends more
  });
  asio::post(strand_, [this] { poll(); });
}

// --- sending ---

void RecordingUploader::begin(Job job) {
  job.path = host_.media_path(job.row.sha256);
  job.segment = static_cast<std::uint64_t>(cfg_.recordings_segment_kib) * 1024;
  if (job.progress) {
    const std::uint64_t from = job.row.sent_to - job.row.sent_to % job.segment;
    job.ranges = {{from, job.row.length}};
    job.persisted = from;
    if (from == 0 && job.row.length > 0) {
      log::info("files", "",
                "sending recording " + job.row.sha256 + " (" + std::to_string(job.row.length) + " bytes)");
    } else if (from > 0) {
      log::info("files", "", "resuming recording " + job.row.sha256 + " at byte " + std::to_string(from));
    }
  }
  // Wanted ranges widened to whole segments within the file.
  for (auto& [lo, hi] : job.ranges) {
    lo -= lo % job.segment;
    hi = std::min(hi, job.row.length);
  }
  job.ranges.erase(
      std::remove_if(job.ranges.begin(), job.ranges.end(), [](const auto& r) { return r.first >= r.second; }),
      job.ranges.end());
  job.cursor = job.ranges.empty() ? 0 : job.ranges.front().first;
  job_ = std::move(job);
  {
    std::lock_guard lock(snapshot_mutex_);
    current_ = job_->row.sha256;
  }
  ++generation_;
  if (job_->progress && job_->rank > 0) {
    schedule_poll(kPreemptCheck);  // looks for more urgent work while it is sent
  }
  pump();
}

bool RecordingUploader::take_tokens(std::uint64_t bytes) {
  const double rate = static_cast<double>(cfg_.recordings_rate_kib_s) * 1024.0;
  const double cap = std::max(rate, static_cast<double>(bytes));
  const auto now = std::chrono::steady_clock::now();
  tokens_ = std::min(cap, tokens_ + std::chrono::duration<double>(now - refilled_).count() * rate);
  refilled_ = now;
  if (tokens_ >= static_cast<double>(bytes)) {
    tokens_ -= static_cast<double>(bytes);
    return true;
  }
  const auto wait = std::chrono::duration<double>((static_cast<double>(bytes) - tokens_) / rate);
  wait_timer_.expires_after(std::chrono::duration_cast<std::chrono::milliseconds>(wait) +
                            std::chrono::milliseconds(1));
  wait_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      pump();
    }
  });
  return false;
}

void RecordingUploader::pump() {
  if (!job_ || stopped_) {
    return;
  }
  Job& job = *job_;
  const std::uint64_t gen = generation_;
  if (job.pausing) {
    if (job.inflight.empty() && !job.init_inflight && !job.fin_inflight) {
      complete_pause();
    }
    return;
  }
  if (!job.init_done) {
    if (!job.init_inflight) {
      job.init_inflight = true;
      const filex::FileInit init{job.row.sha256, job.row.length, job.segment, job.row.name, job.row.seq};
      channel_.publish_side(forwarder::OutboundMessage{filex::init_topic(base_, job.row.sha256),
                                                       filex::init_json(init), false, std::nullopt},
                            [this, gen](bool ok) {
                              asio::post(strand_, [this, gen, ok] {
                                if (gen != generation_ || !job_) {
                                  return;
                                }
                                job_->init_inflight = false;
                                if (!ok) {
                                  fail("its init was not PUBACKed");
                                  return;
                                }
                                job_->init_done = true;
                                pump();
                              });
                            });
    }
    return;
  }
  while (static_cast<int>(job.inflight.size()) < kWindow && job.range < job.ranges.size()) {
    const auto [lo, hi] = job.ranges[job.range];
    job.cursor = std::max(job.cursor, lo);
    if (job.cursor >= hi) {
      ++job.range;
      continue;
    }
    const std::uint64_t length = std::min(job.segment, job.row.length - job.cursor);
    if (!take_tokens(length)) {
      return;  // the wait timer pumps again
    }
    send_segment(job.cursor, length);
    job.cursor += job.segment;
  }
  if (job.range >= job.ranges.size() && job.inflight.empty() && !job.fin_inflight) {
    job.fin_inflight = true;
    channel_.publish_side(forwarder::OutboundMessage{filex::fin_topic(base_, job.row.sha256, job.row.length),
                                                     "", false, std::nullopt},
                          [this, gen](bool ok) {
                            asio::post(strand_, [this, gen, ok] {
                              if (gen != generation_ || !job_) {
                                return;
                              }
                              job_->fin_inflight = false;
                              if (!ok) {
                                fail("its fin was not PUBACKed");
                                return;
                              }
                              finish_job();
                            });
                          });
  }
}

void RecordingUploader::send_segment(std::uint64_t offset, std::uint64_t length) {
  Job& job = *job_;
  job.inflight.insert(offset);
  const std::uint64_t gen = generation_;
  host_.run_blocking([this, gen, offset, length, path = job.path, sha = job.row.sha256] {
    std::string error;
    auto bytes = read_at(path, offset, length, error);
    const std::string checksum = bytes ? sha256_hex(*bytes) : std::string();
    asio::post(
        strand_, [this, gen, offset, length, sha, error, checksum, bytes = std::move(bytes)]() mutable {
          if (gen != generation_ || !job_) {
            return;
          }
          if (!bytes) {
            log::error("files", "",
                       "recording " + sha + " cannot be sent: " + error + " (central is told: abort)");
            unreadable_.insert(sha);
            publish_abort(sha, "not held: " + error);
            ++generation_;
            job_.reset();
            {
              std::lock_guard lock(snapshot_mutex_);
              current_.clear();
            }
            asio::post(strand_, [this] { poll(); });
            return;
          }
          channel_.publish_side(forwarder::OutboundMessage{filex::segment_topic(base_, sha, offset, checksum),
                                                           std::move(*bytes), false, std::nullopt},
                                [this, gen, offset, length](bool ok) {
                                  asio::post(strand_, [this, gen, offset, length, ok] {
                                    segment_done(gen, offset, length, ok);
                                  });
                                });
        });
  });
}

std::uint64_t RecordingUploader::acked_to() const {
  const Job& job = *job_;
  if (!job.inflight.empty()) {
    return *job.inflight.begin();
  }
  if (job.range >= job.ranges.size()) {
    return job.row.length;
  }
  return std::min(job.cursor, job.row.length);
}

void RecordingUploader::segment_done(std::uint64_t generation, std::uint64_t offset, std::uint64_t length,
                                     bool ok) {
  if (generation != generation_ || !job_) {
    return;
  }
  if (!ok) {
    fail("a segment was not PUBACKed");
    return;
  }
  job_->inflight.erase(offset);
  backoff_ms_ = 0;
  bump(snapshot_mutex_, counters_, "segments_sent");
  bump(snapshot_mutex_, counters_, "bytes_sent", length);
  if (job_->progress) {
    const std::uint64_t acked = acked_to();
    if (acked >= job_->persisted + kPersistEvery * job_->segment) {
      job_->persisted = acked;
      host_.run_on_store([sha = job_->row.sha256, acked](store::EvidenceStore& store) {
        (void)store.upload_progress(sha, acked);  // a lost write resends a little more after a restart
      });
    }
  }
  pump();
}

void RecordingUploader::fail(const std::string& why) {
  if (!job_) {
    return;
  }
  bump(snapshot_mutex_, counters_, "link_failures");
  Job& job = *job_;
  // Start again from the first byte not PUBACKed, with the init first (the broker may have lost it).
  std::uint64_t from = job.cursor;
  if (!job.inflight.empty()) {
    from = std::min(from, *job.inflight.begin());
  }
  job.cursor = from;
  // Back to the range holding it: the window may span ranges, and a range counts as passed as soon as its
  // last segment is handed out, PUBACKed or not (without this a lost last segment was never sent again, and
  // fin went out without it).
  job.range = 0;
  while (job.range < job.ranges.size() && job.ranges[job.range].second <= from) {
    ++job.range;
  }
  if (job.pausing) {
    job.inflight.clear();
    job.init_inflight = false;
    job.fin_inflight = false;
    complete_pause();  // resumes from `from` after the more urgent work, init first
    return;
  }
  job.ranges = still_to_send(job);
  job.range = 0;
  job.cursor = job.ranges.empty() ? 0 : job.ranges.front().first;
  job.inflight.clear();
  job.init_done = false;
  job.init_inflight = false;
  job.fin_inflight = false;
  ++generation_;
  backoff_ms_ = std::clamp<std::int64_t>(backoff_ms_ * 2, 1000, kMaxBackoffMs);
  log::warn("files", "",
            "recording " + job.row.sha256 + ": " + why + "; resuming at byte " +
                std::to_string(job.ranges.empty() ? job.row.length : job.ranges.front().first) + " in " +
                std::to_string(backoff_ms_) + " ms");
  wait_timer_.expires_after(std::chrono::milliseconds(backoff_ms_));
  wait_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      pump();
    }
  });
}

void RecordingUploader::finish_job() {
  Job job = std::move(*job_);
  job_.reset();
  ++generation_;
  {
    std::lock_guard lock(snapshot_mutex_);
    current_.clear();
  }
  if (job.progress) {
    bump(snapshot_mutex_, counters_, "files_sent");
    // The receipt is awaited for the wait w; after that init and fin go again, then after 2w, 4w, ...
    fin_next_[job.row.sha256] = {
        clock_.now_ms() + cfg_.recordings_receipt_wait_ms,
        std::min<std::int64_t>(std::int64_t{cfg_.recordings_receipt_wait_ms} * 2, kMaxFinBackoffMs)};
    host_.run_on_store([sha = job.row.sha256, length = job.row.length](store::EvidenceStore& store) {
      (void)store.upload_progress(sha, length);
    });
  }
  asio::post(strand_, [this] { poll(); });
}

void RecordingUploader::publish_abort(const std::string& sha256, const std::string& reason) {
  bump(snapshot_mutex_, counters_, "aborts_sent");
  log::warn("files", "", "recording " + sha256 + ": told central it cannot be sent (" + reason + ")");
  channel_.publish_side(forwarder::OutboundMessage{filex::abort_topic(base_, sha256),
                                                   filex::abort_json(reason), false, std::nullopt},
                        [](bool) {});
}

}  // namespace cpd::app
