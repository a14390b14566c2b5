// RecordingUploader: the gateway's half of "Recordings to central" (docs/custody.md). Body-worn recordings
// the store keeps (uploads table) go to central one file at a time, as an `init`, segments at their byte
// offsets (each with its SHA-256 in the topic) and a `fin` (daemon/core/file_transfer.h): at most kWindow
// segments unacknowledged, under a token-bucket bandwidth cap, resumed after any break from the last byte
// PUBACKed in order (kept in the store across restarts). Central answers with a signed file receipt (checked
// against the configured central keys, then recorded: it is what lets retention delete the file), or a `want`
// for byte ranges it lacks, which is served before new files. A file it cannot send any more is answered with
// `abort`. Files go by policy: all, important only, or only those central asks for.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/file_transfer.h"
#include "daemon/core/record.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/side_channel.h"
#include "daemon/store/evidence_store.h"

namespace cpd::app {

struct UploaderHost {
  // Runs the task on the store's thread.
  std::function<void(std::function<void(store::EvidenceStore&)>)> run_on_store;
  // Runs blocking file work (reading a segment) off the io thread.
  std::function<void(std::function<void()>)> run_blocking;
  // Where the media store keeps a file.
  std::function<std::string(const std::string& sha256)> media_path;
  // Seals a fact into the chain; the handler runs once its record is committed (on the store's thread).
  std::function<void(Fact, std::function<void(const SealedRecord&)>)> submit;
};

class RecordingUploader {
 public:
  static constexpr int kWindow = 4;             // segments published and not yet PUBACKed
  static constexpr std::size_t kMaxWants = 16;  // files with wanted ranges waiting; beyond: dropped, counted
  static constexpr std::size_t kMaxAborts = 64;
  static constexpr int kMaxInputsWaiting = 64;  // messages from central not yet handled; beyond: dropped
  static constexpr int kMaxLookups = 8;         // whole-file wants being looked up in the store
  // How often a file being sent looks for more urgent work (also at once when a want arrives).
  static constexpr std::chrono::milliseconds kPreemptCheck{2000};

  RecordingUploader(boost::asio::io_context& io, const config::Config& cfg, forwarder::SideChannel& channel,
                    UploaderHost host, const WallClock& clock);
  ~RecordingUploader();
  RecordingUploader(const RecordingUploader&) = delete;
  RecordingUploader& operator=(const RecordingUploader&) = delete;

  // The topics it listens on (file receipts and wants); messages on them go to on_message (any thread).
  std::vector<std::string> topics() const;
  void on_message(forwarder::InboundMessage message);
  void start();
  void stop();
  nlohmann::json status() const;

 private:
  // One piece of work: a file's init, the segments covering `ranges` (segment-aligned), then its fin.
  struct Job {
    store::UploadRow row;
    std::string path;
    std::uint64_t segment = 0;
    filex::Ranges ranges;      // what to send
    std::size_t range = 0;     // the range being sent
    std::uint64_t cursor = 0;  // next offset to send in ranges[range]
    std::set<std::uint64_t> inflight;
    bool init_done = false;
    bool init_inflight = false;
    bool fin_inflight = false;
    bool progress = false;  // sending the file from sent_to: its progress is kept in the store
    std::uint64_t persisted = 0;
    int rank = 0;  // progress jobs: 0 central asked for it, 1 important, 2 the rest
    bool pausing =
        false;  // stepping aside for more urgent work: no new segment, stops once none is in flight
  };

  void on_receipt(const std::string& jws);
  void took_receipt(const filex::FileReceipt& r);
  void on_want(const std::string& payload);
  // Central refused a file's init: `later` defers it (kRefusedLaterMs), else it is not sent again by this
  // process. A job sending it stops.
  void on_refused(const std::string& payload);
  void poll();
  // Looks up the first file central wants bytes of; take_want then sends them (or refuses the want).
  void serve_next_want();
  void take_want(const std::string& sha, const store::EvidenceStore::UploadLookup& found,
                 filex::Ranges ranges);
  // A want the store could not be read for: counted and logged, not answered (central asks again).
  void want_unanswered(const std::string& sha);
  // A whole-file want for a file not held: sent again from byte 0 as an ordinary upload, at rank 0.
  void resend_whole(const std::string& sha);
  // The job sending `sha`, if any, is dropped (its completions ignored).
  void drop_job_of(const std::string& sha);
  // Files not to be taken now (unreadable, refused, deferred): left out of the store's pages.
  std::set<std::string> not_sent_now() const;
  // The same for a file already sent whole, once its bytes here still hash to its SHA-256 (read on the
  // blocking pool); a damaged or unreadable copy is answered with abort instead, and not sent again.
  void verify_then_resend(const store::UploadRow& row);
  // Starts the first pending file (its own upload, or its fin again); with none due, polls again later.
  void take_pending(const std::vector<store::UploadRow>& pending, const store::UploadStats& stats);
  // While a file is being sent (a progress job below rank 0): whether more urgent work waits (a want for
  // another file, or a file ranked above it); if so the job pauses.
  void check_preempt();
  void pause(const std::string& why);
  void complete_pause();
  // Whether the row's own upload (from sent_to) is still to come under the policy.
  bool sends_later(const store::UploadRow& row) const;
  // The wanted ranges minus what the row's own upload is still to send.
  filex::Ranges left_to_send(const store::UploadRow& row, filex::Ranges ranges) const;
  // The byte ranges a job has not yet published (from its cursor on).
  static filex::Ranges still_to_send(const Job& job);
  void schedule_poll(std::chrono::milliseconds after);
  void begin(Job job);
  void pump();
  void send_segment(std::uint64_t offset, std::uint64_t length);
  void segment_done(std::uint64_t generation, std::uint64_t offset, std::uint64_t length, bool ok);
  void fail(const std::string& why);
  void finish_job();
  void publish_abort(const std::string& sha256, const std::string& reason);
  std::uint64_t acked_to() const;  // progress jobs: every byte below this was PUBACKed
  bool take_tokens(std::uint64_t bytes);

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  std::string gateway_;
  std::string base_;  // <prefix>/<gateway>/
  config::CustodySection cfg_;
  forwarder::SideChannel& channel_;
  UploaderHost host_;
  const WallClock& clock_;
  std::map<std::string, Ed25519PublicKey> central_keys_;
  boost::asio::steady_timer poll_timer_;
  boost::asio::steady_timer wait_timer_;  // bandwidth and backoff waits

  // Strand state.
  std::atomic<int> inputs_waiting_{0};  // any thread
  bool stopped_ = false;
  bool polling_ = false;
  int lookups_ = 0;
  std::optional<Job> job_;
  std::uint64_t generation_ = 0;  // completions of an abandoned attempt are ignored
  std::map<std::string, filex::Ranges> wants_;
  std::set<std::string> aborts_;
  std::map<std::string, std::pair<UnixMs, std::int64_t>>
      fin_next_;                      // sha -> (when to send fin again, backoff)
  std::int64_t fin_cursor_ = 0;       // the seq after which the next page of files sent whole is read
  std::set<std::string> sealing_;     // files whose recording_custody record is being sealed (one at a time)
  std::set<std::string> unreadable_;  // unreadable or damaged here: aborted once, not sent again
  std::set<std::string> refused_;     // refused for good by central: not sent until it asks (a want)
  std::map<std::string, UnixMs> deferred_;  // files central refused "later": not before this time
  std::int64_t backoff_ms_ = 0;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point refilled_{};

  mutable std::mutex snapshot_mutex_;
  nlohmann::json counters_ = nlohmann::json::object();
  store::UploadStats stats_;
  std::string current_;  // sha256 of the file being sent ("" idle)
  std::string last_refusal_;
};

}  // namespace cpd::app
