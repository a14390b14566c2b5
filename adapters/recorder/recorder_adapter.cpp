// The recorder-dock adapter: a Boost.Beast HTTP/1.1 client on the adapter's own strand around the pure
// dock protocol. Polls /status and /files, streams files to a partial file chunk by chunk (write, digest,
// fsync and adopt on the blocking pool), resumes with Range, and acks only after the record is committed.
#include "adapters/recorder/recorder_adapter.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "adapters/adapter_handle.h"
#include "adapters/common/http_exchange.h"
#include "adapters/common/offset_clock.h"
#include "adapters/reconnect_backoff.h"
#include "adapters/recorder/dock_protocol.h"
#include "daemon/core/digest.h"
#include "daemon/log/log.h"

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Strand = asio::strand<asio::io_context::executor_type>;

constexpr std::string_view kComponent = "recorder";
constexpr std::string_view kKind = "recorder_dock";
// One download's body buffer: a chunk is written and digested before the next is read, so memory per
// download stays at this much however large the file.
constexpr std::size_t kChunkBytes = 512 * 1024;
constexpr std::size_t kRawPieceBytes = 256 * 1024;  // one socket read completion in raw body mode
constexpr std::size_t kRehashBytes = 1024 * 1024;   // reads when hashing a partial file left by a crash
// A file the station lists but answers 404 for: asked again with backoff this many times, then a fault
// record (reason not_found) closes it, so such files cannot hold the pending bound for ever.
constexpr int kMaxNotFound = 3;
constexpr auto kCongestionRecheck = std::chrono::milliseconds(20);

std::string str(beast::string_view s) {
  return std::string(s.data(), s.size());
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string file_key(const std::string& unique_id, const std::string& md5) {
  return unique_id + "\n" + md5;
}

Status errno_status(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EIO || err == EDQUOT) {
    return Status::retry(std::move(msg));
  }
  return Status::fail(std::move(msg));
}

// "bytes <from>-<to>/<total>" as numbers; nullopt when it is anything else.
struct ContentRange {
  std::int64_t from = 0;
  std::int64_t to = 0;
  std::int64_t total = 0;
};
std::optional<ContentRange> parse_content_range(std::string_view s) {
  constexpr std::string_view kUnit = "bytes ";
  if (s.substr(0, kUnit.size()) != kUnit) {
    return std::nullopt;
  }
  s.remove_prefix(kUnit.size());
  auto number = [&s](char stop, std::int64_t& out) {
    std::size_t i = 0;
    out = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i < 18) {
      out = out * 10 + (s[i] - '0');
      ++i;
    }
    if (i == 0 || (stop != '\0' ? (i >= s.size() || s[i] != stop) : i != s.size())) {
      return false;
    }
    s.remove_prefix(stop != '\0' ? i + 1 : i);
    return true;
  };
  ContentRange r;
  if (!number('-', r.from) || !number('/', r.to) || !number('\0', r.total)) {
    return std::nullopt;
  }
  return r;
}

// A partial download on disk with the digest of the bytes in it. Touched only on the blocking pool, by one
// job at a time (the strand hands it over and waits for the result).
class PartialFile {
 public:
  explicit PartialFile(std::string path) : path_(std::move(path)) {}
  ~PartialFile() { close_fd(); }
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;

  const std::string& path() const { return path_; }
  std::int64_t bytes() const { return bytes_; }
  bool is_open() const { return fd_ >= 0; }

  // Opens (or creates) the file; bytes already in it (0 < k <= length) are hashed so the download resumes
  // after them. A file longer than `length` cannot be a prefix of it and starts again.
  Status open(std::int64_t length) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0) {
      return errno_status("cannot open", path_, errno);
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      return errno_status("cannot stat", path_, errno);
    }
    if (st.st_size > length) {
      return truncate_all();
    }
    std::vector<char> buf(kRehashBytes);
    std::int64_t done = 0;
    while (done < st.st_size) {
      const ssize_t n = ::pread(fd_, buf.data(), buf.size(), done);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        return truncate_all();  // unreadable: fetch it all again
      }
      digest_.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
      done += n;
    }
    bytes_ = done;
    return Status::ok();
  }

  Status truncate_all() {
    digest_.reset();
    bytes_ = 0;
    if (::ftruncate(fd_, 0) != 0) {
      return errno_status("cannot truncate", path_, errno);
    }
    return Status::ok();
  }

  // Writes at the end and digests what was written; on failure the file is cut back to the digested bytes.
  Status append(const char* data, std::size_t size) {
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, bytes_ + static_cast<std::int64_t>(done));
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        const int err = n < 0 ? errno : ENOSPC;
        [[maybe_unused]] const int ignored = ::ftruncate(fd_, bytes_);
        return errno_status("cannot write", path_, err);
      }
      done += static_cast<std::size_t>(n);
    }
    digest_.update(std::string_view(data, size));
    bytes_ += static_cast<std::int64_t>(size);
    return Status::ok();
  }

  // fsync and both digests; the file is closed (adopt() or remove() follow).
  Status finish(FileDigest::Result& out) {
    if (::fsync(fd_) != 0) {
      return errno_status("cannot fsync", path_, errno);
    }
    out = digest_.finish();
    close_fd();
    return Status::ok();
  }

  void remove() {
    close_fd();
    ::unlink(path_.c_str());
    bytes_ = 0;
  }

 private:
  void close_fd() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  std::string path_;
  int fd_ = -1;
  std::int64_t bytes_ = 0;
  FileDigest digest_;
};

class RecorderAdapterImpl : public std::enable_shared_from_this<RecorderAdapterImpl> {
 public:
  RecorderAdapterImpl(const RecorderDockConfig& config, AdapterContext& ctx)
      : config_(config),
        ctx_(ctx),
        strand_(asio::make_strand(ctx.io)),
        poll_timer_(strand_),
        ack_timer_(strand_),
        pump_timer_(strand_),
        exchanges_(strand_, [&clock = ctx.clock] { return clock.now_ms(); }),
        rng_(std::random_device{}()) {
    const bool v6 = config_.host.find(':') != std::string::npos;
    host_header_ = (v6 ? "[" + config_.host + "]" : config_.host) +
                   (config_.port == 80 ? std::string() : ":" + std::to_string(config_.port));
  }

  const std::string& device_id() const { return config_.id; }

  void start() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      if (self->running_) {
        return;
      }
      if (self->ctx_.dock_ledger == nullptr || self->ctx_.media == nullptr ||
          self->ctx_.blocking == nullptr) {
        log::error(kComponent, self->config_.id, "no dock ledger, media store or blocking pool: not started");
        self->set_state("fault");
        self->emit_status("fault", "gateway misconfigured: no dock ledger or media store");
        return;
      }
      self->running_ = true;
      ++self->gen_;
      self->reset_work();
      self->set_state("loading");
      self->load_ledger();
    });
  }

  void stop() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      if (!self->running_) {
        return;
      }
      self->running_ = false;
      ++self->gen_;
      self->poll_timer_.cancel();
      self->ack_timer_.cancel();
      self->pump_timer_.cancel();
      self->exchanges_.abort_all();
      for (auto& d : self->downloads_) {
        d->abort();
      }
      self->downloads_.clear();
      for (auto& [key, f] : self->files_) {
        if (f.wait_timer) {
          f.wait_timer->cancel();
        }
      }
      // Partial files stay on disk (closed once the last blocking job lets go): a restart resumes them.
      self->reset_work();
      self->set_state("stopped");
    });
  }

  nlohmann::json status() const {
    std::lock_guard lock(mutex_);
    nlohmann::json errors = nlohmann::json::object();
    for (const auto& [k, v] : snap_.errors) {
      errors[k] = v;
    }
    nlohmann::json offset = nullptr;
    if (snap_.station_clock_offset_ms) {
      offset = *snap_.station_clock_offset_ms;
    }
    return {
        {"kind", kKind},
        {"id", config_.id},
        {"url", config_.url},
        {"state", snap_.state},
        {"station_id", snap_.station_id},
        {"firmware", snap_.firmware},
        {"files_listed", snap_.files_listed},
        {"collected", snap_.collected},
        {"bytes_collected", snap_.bytes_collected},
        {"md5_mismatches", snap_.md5_mismatches},
        {"resumes", snap_.resumes},
        {"acks", snap_.acks},
        {"ack_conflicts", snap_.ack_conflicts},
        {"faults", snap_.faults},
        {"queued", snap_.queued},
        {"downloading", snap_.downloading},
        {"pending", snap_.pending},
        {"pending_bytes", snap_.pending_bytes},
        {"max_pending_files", config_.max_pending_files},
        {"max_pending_entry_bytes", config_.max_pending_entry_bytes},
        {"pending_limit_reached", snap_.pending_limit_reached},
        {"listings_held", snap_.listings_held},
        {"entries_refused", snap_.entries_refused},
        {"repeated", snap_.repeated},
        {"errors", errors},
        {"reconnects", snap_.reconnects},
        {"station_clock_offset_ms", offset},
        {"last_error", snap_.last_error},
    };
  }

 private:
  enum class Phase {
    kQueued,   // waits in download_queue_
    kWaiting,  // waits for its retry timer (broken transfer, disk trouble)
    kDownloading,
    kCommitting,  // RecordingCollected / DockFileFault emitted, waiting for the record's commit
    kAckQueued,   // waits in ack_queue_ (or for the ack retry timer)
    kAcking,
  };

  struct FileEntry {
    DockFile file;
    Phase phase = Phase::kQueued;
    UnixMs listed_ms = 0;  // gateway time of the listing that first showed it (or of the ledger load)
    int md5_failures = 0;  // whole downloads whose bytes did not match (md5 or size)
    int not_found = 0;     // consecutive 404 answers to its download
    int resumes = 0;       // requests sent with Range
    int breaks = 0;        // consecutive failed attempts (backoff)
    std::string sha256;    // once downloaded (or from the ledger)
    std::shared_ptr<PartialFile> partial;  // open between attempts of this run
    std::shared_ptr<asio::steady_timer> wait_timer;
  };

  struct Snapshot {
    std::string state = "stopped";
    std::string station_id;
    std::string firmware;
    std::uint64_t files_listed = 0;
    std::uint64_t collected = 0;
    std::uint64_t bytes_collected = 0;
    std::uint64_t md5_mismatches = 0;
    std::uint64_t resumes = 0;
    std::uint64_t acks = 0;
    std::uint64_t ack_conflicts = 0;
    std::uint64_t faults = 0;
    std::uint64_t queued = 0;
    std::uint64_t downloading = 0;
    std::uint64_t pending = 0;        // files_ (taken, not yet acknowledged or closed by a fault)
    std::uint64_t pending_bytes = 0;  // their listing entries
    bool pending_limit_reached = false;
    std::uint64_t listings_held = 0;  // listings not made, or cut, because the pending bound was reached
    std::uint64_t entries_refused = 0;
    std::uint64_t repeated = 0;
    std::map<std::string, std::uint64_t> errors;
    std::uint64_t reconnects = 0;
    std::optional<std::int64_t> station_clock_offset_ms;
    std::string last_error;
  };

  // One attempt at one file, on its own connection.
  struct Download {
    Download(Strand& s, std::string k) : key(std::move(k)), resolver(s), socket(s), timer(s) {}
    void abort() {
      finished = true;
      error_code ignored;
      resolver.cancel();
      socket.close(ignored);
      timer.cancel();
    }
    std::string key;
    std::uint64_t gen = 0;  // the run it belongs to
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;
    std::uint64_t timer_seq = 0;
    bool timed_out = false;
    beast::flat_buffer buffer;
    http::request<http::empty_body> req;
    std::optional<http::response_parser<http::buffer_body>> parser;
    std::vector<char> chunk;
    std::size_t filled = 0;  // bytes in chunk not yet written
    // Content-Length bodies are read straight from the socket, a chunk at a time (Beast's parser would
    // complete once per socket read: thousands of handler round trips per second for a fast station).
    bool raw = false;
    std::int64_t body_left = 0;  // raw: bytes of this response's body still to read
    std::int64_t received = 0;   // bytes of the file on disk plus in chunk
    std::int64_t length = 0;
    std::shared_ptr<PartialFile> partial;
    bool got_bytes = false;
    bool finished = false;
  };
  using DownloadPtr = std::shared_ptr<Download>;

  // ---- start-up: the ledger ----

  void reset_work() {
    files_.clear();
    download_queue_.clear();
    ack_queue_.clear();
    acking_ = false;
    ack_waiting_ = false;
    polling_ = false;
    auth_blocked_ = false;
    pump_armed_ = false;
    sync_queue_counters();
  }

  void load_ledger() {
    const std::uint64_t gen = gen_;
    std::weak_ptr<RecorderAdapterImpl> weak = weak_from_this();
    ctx_.dock_ledger->load(config_.id, [weak, gen](Status s, DockLedgerState state) {
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self, gen, s = std::move(s), state = std::move(state)]() mutable {
          if (gen == self->gen_ && self->running_) {
            self->on_loaded(s, std::move(state));
          }
        });
      }
    });
  }

  void on_loaded(const Status& s, DockLedgerState state) {
    if (!s.is_ok()) {
      count_error("ledger");
      note_error("dock ledger load failed: " + s.message());
      log::error(kComponent, config_.id, "dock ledger load failed: " + s.message() + "; trying again");
      poll_timer_.expires_after(std::chrono::milliseconds(backoff_ms()));
      poll_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
        if (!ec && self->running_) {
          self->load_ledger();
        }
      });
      return;
    }
    cursor_ = std::move(state.cursor);
    // The listing that first showed these files is gone with the last run: the load's time stands in.
    const UnixMs load_ms = ctx_.clock.now_ms();
    std::size_t pending = 0;
    std::size_t recorded = 0;
    for (auto& lf : state.open) {
      if (lf.state == DockFileState::kPending) {
        auto parsed = parse_dock_file(lf.entry_json);
        if (!parsed) {
          count_error("bad_entry");
          log::error(kComponent, config_.id,
                     "ledger entry " + lf.unique_id + " unreadable: " + parsed.error.detail +
                         "; reported as a fault");
          DockFile f;
          f.unique_id = lf.unique_id;
          f.md5 = lf.md5;
          f.raw_json = lf.entry_json;
          emit_fault_for_unreadable(std::move(f), parsed.error.detail);
          continue;
        }
        const std::string key = file_key(lf.unique_id, lf.md5);
        if (files_.contains(key)) {
          continue;
        }
        FileEntry e;
        e.file = std::move(*parsed.value);
        e.listed_ms = load_ms;
        e.phase = Phase::kQueued;
        files_.emplace(key, std::move(e));
        download_queue_.push_back(key);
        ++pending;
      } else if (lf.state == DockFileState::kRecorded) {
        if (lf.sha256.empty()) {
          count_error("ledger_entry");
          log::warn(kComponent, config_.id,
                    "ledger says " + lf.unique_id + " is recorded but names no SHA-256");
          continue;
        }
        const std::string key = file_key(lf.unique_id, lf.md5);
        if (files_.contains(key)) {
          continue;
        }
        FileEntry e;
        e.file.unique_id = lf.unique_id;
        e.file.md5 = lf.md5;
        e.file.raw_json = lf.entry_json;
        if (auto parsed = parse_dock_file(lf.entry_json)) {
          e.file = std::move(*parsed.value);
        }
        e.sha256 = lf.sha256;
        e.phase = Phase::kAckQueued;
        e.listed_ms = load_ms;
        files_.emplace(key, std::move(e));
        ack_queue_.push_back(key);
        ++recorded;
      }
    }
    if (pending + recorded > 0) {
      log::info(kComponent, config_.id,
                "ledger: " + std::to_string(pending) + " file(s) to download, " + std::to_string(recorded) +
                    " to acknowledge");
    }
    sync_queue_counters();
    set_state("connecting");
    poll();
    pump_downloads();
    pump_acks();
  }

  // ---- HTTP plumbing for short requests ----

  void exchange(http::verb verb, std::string target, std::string body, std::function<void(HttpResult)> done) {
    HttpExchanges::Request req{verb, target, 11};
    req.set(http::field::host, host_header_);
    req.set(http::field::user_agent, "checkpointd/" CPD_VERSION);
    req.set(http::field::authorization, "Bearer " + config_.token);
    if (verb == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = std::move(body);
      req.prepare_payload();
    }
    exchanges_.start(config_.host, config_.port, std::move(req), kDockMaxJsonBytes,
                     std::chrono::seconds(config_.request_timeout_s),
                     [self = shared_from_this(), done = std::move(done)](HttpResult r) {
                       if (self->running_) {
                         done(std::move(r));
                       }
                     });
  }

  // ---- the poll loop: status, then listings ----

  void poll() {
    if (!running_ || auth_blocked_ || polling_) {
      return;
    }
    polling_ = true;
    exchange(http::verb::get, dock_status_target(config_.base_path), {},
             [self = shared_from_this()](HttpResult r) { self->on_status(std::move(r)); });
  }

  void on_status(HttpResult r) {
    if (auth_blocked_) {
      return;  // a request of another part failed authentication meanwhile: its backoff restarts polling
    }
    if (r.ec == http::error::body_limit) {
      // The station answered, with far too much: a bad answer, not a lost link.
      link_up();
      count_error("bounds");
      warn("station status larger than " + std::to_string(kDockMaxJsonBytes) + " bytes");
      list(false);
      return;
    }
    if (r.ec) {
      link_failed(r.what);
      return;
    }
    if (r.status == 401) {
      auth_failed();
      return;
    }
    link_up();
    if (r.status == 200) {
      auto parsed = parse_dock_status(r.body);
      if (parsed) {
        on_station_status(*parsed.value, r);
      } else {
        count_error(parsed.error.reason);
        warn("station status unreadable: " + parsed.error.detail);
      }
    } else {
      count_error("http_" + std::to_string(r.status));
      warn("station status answered HTTP " + std::to_string(r.status));
    }
    list(false);
  }

  void on_station_status(const DockStatus& st, const HttpResult& r) {
    const std::int64_t resolution = st.time_has_fraction ? 1 : 1000;
    const auto outcome = clock_.add(st.time_ms, resolution, r.sent_ms, r.received_ms);
    if (outcome == OffsetClockEstimator::Outcome::kRejected) {
      count_error("bad_time");
    } else if (outcome == OffsetClockEstimator::Outcome::kRestarted) {
      log::warn(kComponent, config_.id,
                "station clock no longer agrees with earlier measurements: estimate restarted");
    }
    if (station_id_ != st.station_id && !station_id_.empty()) {
      log::warn(kComponent, config_.id, "station id changed from " + station_id_ + " to " + st.station_id);
    }
    station_id_ = st.station_id;
    firmware_ = st.firmware;
    const auto e = clock_.estimate();
    std::lock_guard lock(mutex_);
    snap_.station_id = st.station_id;
    snap_.firmware = st.firmware;
    if (e) {
      snap_.station_clock_offset_ms = e->offset_ms;
    }
  }

  // Room for new files under the pending bounds (max_pending_files, max_pending_entry_bytes). With nothing
  // pending one entry of any size fits, so no single entry can stall the station.
  DockListingBudget room() const {
    const auto max_files = static_cast<std::size_t>(config_.max_pending_files);
    const auto max_bytes = static_cast<std::size_t>(config_.max_pending_entry_bytes);
    const std::size_t bytes = pending_bytes();
    DockListingBudget b;
    b.files = files_.size() >= max_files ? 0 : max_files - files_.size();
    b.bytes = files_.empty() ? SIZE_MAX : (bytes >= max_bytes ? 0 : max_bytes - bytes);
    return b;
  }

  std::size_t pending_bytes() const {
    std::size_t bytes = 0;
    for (const auto& [key, f] : files_) {
      bytes += f.file.raw_json.size();
    }
    return bytes;
  }

  // A listing not made (or cut short) at the pending bound: the files wait on the station, the cursor
  // stays before them. Logged once until the pending files fall to half the bound (sync_queue_counters).
  void hold_listings() {
    {
      std::lock_guard lock(mutex_);
      ++snap_.listings_held;
    }
    if (!pending_limit_reached_) {
      pending_limit_reached_ = true;
      log::warn(kComponent, config_.id,
                std::to_string(files_.size()) + " files (" + std::to_string(pending_bytes()) +
                    " bytes of listing) pending, at the bound (max_pending_files " +
                    std::to_string(config_.max_pending_files) + ", max_pending_entry_bytes " +
                    std::to_string(config_.max_pending_entry_bytes) +
                    "): further files stay on the station until there is room");
      sync_queue_counters();
    }
  }

  // after_bad_cursor: this listing restarts from the beginning after a 400 (no second restart in a row).
  void list(bool after_bad_cursor) {
    if (!running_ || auth_blocked_) {
      polling_ = false;
      return;
    }
    const DockListingBudget budget = room();
    if (budget.files == 0 || budget.bytes == 0) {
      hold_listings();
      schedule_poll(config_.poll_interval_ms);
      return;
    }
    // Never ask for more than there is room for; a station that sends more anyway is cut in the ledger.
    const int limit =
        static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(config_.list_limit), budget.files));
    exchange(http::verb::get, dock_files_target(config_.base_path, cursor_, limit), {},
             [self = shared_from_this(), after_bad_cursor, limit](HttpResult r) {
               self->on_listing(std::move(r), after_bad_cursor, limit);
             });
  }

  void on_listing(HttpResult r, bool after_bad_cursor, int limit) {
    if (auth_blocked_) {
      return;
    }
    if (r.ec == http::error::body_limit) {
      link_up();
      count_error("bounds");
      warn("file listing larger than " + std::to_string(kDockMaxJsonBytes) + " bytes");
      schedule_poll(config_.poll_interval_ms);
      return;
    }
    if (r.ec) {
      link_failed(r.what);
      return;
    }
    if (r.status == 401) {
      auth_failed();
      return;
    }
    link_up();
    if (r.status == 400 && !cursor_.empty() && !after_bad_cursor) {
      // The station lost its cursor state (restart): list from the start; the ledger recognises the
      // files already known, so nothing is fetched twice.
      count_error("bad_cursor");
      const std::string text = dock_error_text(r.body);
      warn("station rejected the listing cursor (" + (text.empty() ? std::string("HTTP 400") : text) +
           "): listing from the start");
      cursor_.clear();
      list(true);
      return;
    }
    if (r.status != 200) {
      count_error("http_" + std::to_string(r.status));
      const std::string text = dock_error_text(r.body);
      warn("file listing answered HTTP " + std::to_string(r.status) + (text.empty() ? "" : ": " + text));
      schedule_poll(config_.poll_interval_ms);
      return;
    }
    auto parsed = parse_dock_listing(r.body);
    if (!parsed) {
      // The cursor stays where it is: the unreadable page is asked for again next time.
      count_error(parsed.error.reason);
      warn("file listing unreadable: " + parsed.error.detail);
      schedule_poll(config_.poll_interval_ms);
      return;
    }
    DockListing listing = std::move(*parsed.value);
    const std::size_t entries = listing.files.size() + listing.refused.size();
    const bool full = entries >= static_cast<std::size_t>(limit);
    // Files first, then the refused entries: each is taken (persisted as pending) within the room left, a
    // refused one to be closed at once by its fault record.
    std::vector<DockLedgerFile> ledger_files;
    ledger_files.reserve(entries);
    for (const auto& f : listing.files) {
      DockLedgerFile lf;
      lf.unique_id = f.unique_id;
      lf.md5 = f.md5;
      lf.entry_json = f.raw_json;
      ledger_files.push_back(std::move(lf));
    }
    for (const auto& refused : listing.refused) {
      DockLedgerFile lf;
      lf.unique_id = refused.unique_id;
      lf.md5 = refused.md5;
      lf.entry_json = refused.raw;
      ledger_files.push_back(std::move(lf));
    }
    auto shared = std::make_shared<DockListing>(std::move(listing));
    const std::uint64_t gen = gen_;
    const UnixMs listed_ms = r.received_ms;
    std::weak_ptr<RecorderAdapterImpl> weak = weak_from_this();
    ctx_.dock_ledger->save_listing(
        config_.id, std::move(ledger_files), shared->next, room(),
        [weak, gen, shared, listed_ms, full](Status s, std::vector<DockLedgerFile> states) {
          if (auto self = weak.lock()) {
            asio::post(self->strand_, [self, gen, shared, listed_ms, full, s = std::move(s),
                                       states = std::move(states)]() mutable {
              if (gen == self->gen_ && self->running_) {
                self->on_listing_saved(s, std::move(*shared), std::move(states), listed_ms, full);
              }
            });
          }
        });
  }

  void on_listing_saved(const Status& s, DockListing listing, std::vector<DockLedgerFile> states,
                        UnixMs listed_ms, bool full) {
    if (!s.is_ok()) {
      count_error("ledger");
      log::error(kComponent, config_.id, "dock ledger did not save the listing: " + s.message());
      note_error("dock ledger: " + s.message());
      schedule_poll(config_.poll_interval_ms);
      return;
    }
    const std::size_t entries = listing.files.size() + listing.refused.size();
    if (states.size() > entries) {
      count_error("ledger");
      log::error(kComponent, config_.id,
                 "dock ledger answered " + std::to_string(states.size()) + " states for " +
                     std::to_string(entries) + " files");
    }
    // A cut pass leaves the cursor where it was: the files not taken are listed again once there is room.
    const bool complete = states.size() >= entries;
    if (complete) {
      cursor_ = listing.next;
    }
    std::uint64_t repeated = 0;
    const std::size_t n = std::min(states.size(), entries);
    for (std::size_t i = 0; i < n; ++i) {
      const DockLedgerFile& st = states[i];
      if (i >= listing.files.size()) {
        DockRefusedEntry& refused = listing.refused[i - listing.files.size()];
        if (st.state == DockFileState::kPending) {
          refuse_entry(std::move(refused), listed_ms);
        } else {
          ++repeated;  // its fault record (or an earlier reading of it) already covers it
        }
        continue;
      }
      DockFile& f = listing.files[i];
      const std::string key = file_key(f.unique_id, f.md5);
      switch (st.state) {
        case DockFileState::kPending:
          if (!files_.contains(key)) {
            FileEntry e;
            e.file = std::move(f);
            e.listed_ms = listed_ms;
            files_.emplace(key, std::move(e));
            download_queue_.push_back(key);
          }
          break;
        case DockFileState::kRecorded:
          if (!files_.contains(key) && !st.sha256.empty()) {
            FileEntry e;
            e.file = std::move(f);
            e.listed_ms = listed_ms;
            e.sha256 = st.sha256;
            e.phase = Phase::kAckQueued;
            files_.emplace(key, std::move(e));
            ack_queue_.push_back(key);
          }
          break;
        case DockFileState::kAcked:
        case DockFileState::kFaulted:
          ++repeated;
          break;
      }
    }
    {
      std::lock_guard lock(mutex_);
      snap_.files_listed += listing.files.size();
      snap_.repeated += repeated;
    }
    if (!complete) {
      hold_listings();
    }
    sync_queue_counters();
    clear_warning();
    pump_downloads();
    pump_acks();
    // A full page means more are waiting (shift change): list on at once while there is room.
    if (complete && full && room().files > 0) {
      list(false);
      return;
    }
    schedule_poll(config_.poll_interval_ms);
  }

  // A listing entry that cannot be read: persisted (pending) with the listing, then closed by its own
  // recording_fault record; the station keeps the file. Counted by reason; the record names the field.
  void refuse_entry(DockRefusedEntry refused, UnixMs listed_ms) {
    const std::string key = file_key(refused.unique_id, refused.md5);
    if (files_.contains(key)) {
      return;
    }
    count_error(refused.error.reason);
    {
      std::lock_guard lock(mutex_);
      ++snap_.entries_refused;
    }
    log::warn(kComponent, config_.id,
              "listing entry refused (" + refused.error.reason + "): " + refused.error.detail +
                  "; recorded as a fault, the other entries are collected");
    FileEntry e;
    e.file.unique_id = refused.unique_id;
    e.file.md5 = refused.md5;
    e.file.raw_json = std::move(refused.raw);
    e.phase = Phase::kCommitting;
    e.listed_ms = listed_ms;
    files_.emplace(key, std::move(e));
    emit_fault(key, "bad_entry", "refused (" + refused.error.reason + "): " + refused.error.detail, {}, 0);
  }

  void schedule_poll(std::int64_t delay_ms) {
    polling_ = false;
    if (!running_ || auth_blocked_) {
      return;
    }
    poll_timer_.expires_after(std::chrono::milliseconds(std::max<std::int64_t>(delay_ms, 0)));
    poll_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec && self->running_) {
        self->poll();
      }
    });
  }

  // ---- link state ----

  void link_up() {
    attempt_ = 0;
    if (reported_ != Reported::kUp) {
      set_state("connected");
      emit_status("connected", "station answers at " + config_.url);
      reported_ = Reported::kUp;
    }
  }

  void link_failed(const std::string& reason) {
    note_error(reason);
    {
      std::lock_guard lock(mutex_);
      ++snap_.reconnects;
    }
    if (reported_ != Reported::kDown) {
      log::warn(kComponent, config_.id, "station unreachable: " + reason);
      set_state("disconnected");
      emit_status("disconnected", reason);
      reported_ = Reported::kDown;
    }
    const std::int64_t delay = backoff_ms();
    ++attempt_;
    schedule_poll(delay);
  }

  void auth_failed() {
    if (auth_blocked_ || !running_) {
      return;
    }
    auth_blocked_ = true;
    polling_ = false;
    const std::string text = "station refused the token from " + config_.token_file +
                             " (HTTP 401); next try in " + std::to_string(config_.auth_backoff_s) + " s";
    count_error("unauthorized");
    note_error(text);
    log::error(kComponent, config_.id, text);
    set_state("auth_failed");
    reported_ = Reported::kFault;
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = std::string(kKind);
    ev.state = "fault";
    ev.code = 401;
    ev.text = text;
    ev.time_ms = ctx_.clock.now_ms();
    ctx_.sink.emit(std::move(ev));
    poll_timer_.expires_after(std::chrono::seconds(config_.auth_backoff_s));
    poll_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || !self->running_) {
        return;
      }
      self->auth_blocked_ = false;
      self->poll();
      self->pump_downloads();
      self->pump_acks();
    });
  }

  std::int64_t backoff_ms() {
    return reconnect_backoff_ms(attempt_, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_);
  }

  // ---- downloads ----

  void pump_downloads() {
    if (!running_ || auth_blocked_) {
      return;
    }
    while (active_downloads() < static_cast<std::size_t>(config_.max_parallel_downloads) &&
           !download_queue_.empty()) {
      if (ctx_.sink.congested()) {
        // The core is behind: no new file until it catches up (downloads under way finish).
        arm_pump_timer();
        return;
      }
      const std::string key = download_queue_.front();
      download_queue_.pop_front();
      auto it = files_.find(key);
      if (it == files_.end() || it->second.phase != Phase::kQueued) {
        continue;
      }
      start_download(key, it->second);
    }
    sync_queue_counters();
  }

  void arm_pump_timer() {
    if (pump_armed_) {
      return;
    }
    pump_armed_ = true;
    pump_timer_.expires_after(kCongestionRecheck);
    pump_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      self->pump_armed_ = false;
      if (!ec && self->running_) {
        self->pump_downloads();
      }
    });
  }

  std::size_t active_downloads() const { return downloads_.size(); }

  std::string partial_path(const std::string& unique_id, const std::string& md5) const {
    return ctx_.media->partial_dir() + "/" + config_.id + "-" + unique_id + "-" + md5 + ".part";
  }

  void start_download(const std::string& key, FileEntry& e) {
    e.phase = Phase::kDownloading;
    auto d = std::make_shared<Download>(strand_, key);
    d->gen = gen_;
    d->length = e.file.length;
    downloads_.push_back(d);
    sync_queue_counters();
    if (e.partial && e.partial->is_open()) {
      d->partial = e.partial;
      on_partial_ready(d, Status::ok());
      return;
    }
    // Opening may hash a partial file left by a crash, and partial_dir() may create the directory: both
    // on the blocking pool.
    const std::int64_t length = e.file.length;
    asio::post(*ctx_.blocking,
               [self = shared_from_this(), d, uid = e.file.unique_id, md5 = e.file.md5, length] {
                 auto p = std::make_shared<PartialFile>(self->partial_path(uid, md5));
                 Status s = p->open(length);
                 asio::post(self->strand_, [self, d, p, s = std::move(s)] {
                   d->partial = p;
                   self->on_partial_ready(d, s);
                 });
               });
  }

  bool live(const DownloadPtr& d) const { return running_ && !d->finished && d->gen == gen_; }

  FileEntry* entry_of(const DownloadPtr& d) {
    auto it = files_.find(d->key);
    return it == files_.end() ? nullptr : &it->second;
  }

  void on_partial_ready(const DownloadPtr& d, const Status& s) {
    if (!live(d)) {
      return;
    }
    FileEntry* e = entry_of(d);
    if (e == nullptr) {
      end_download(d);
      return;
    }
    if (!s.is_ok()) {
      disk_trouble(d, s);
      return;
    }
    e->partial = d->partial;
    d->received = d->partial->bytes();
    if (d->received == d->length) {
      finish_file(d);  // everything arrived before (a crash after the last byte)
      return;
    }
    connect_download(d);
  }

  void arm_download_timer(const DownloadPtr& d, std::chrono::seconds after) {
    const std::uint64_t seq = ++d->timer_seq;
    d->timer.expires_after(after);
    d->timer.async_wait([d, seq](const error_code& ec) {
      if (ec || seq != d->timer_seq || d->finished) {
        return;
      }
      d->timed_out = true;
      error_code ignored;
      d->resolver.cancel();
      d->socket.close(ignored);
    });
  }

  void disarm_download_timer(const DownloadPtr& d) {
    ++d->timer_seq;
    d->timer.cancel();
  }

  void connect_download(const DownloadPtr& d) {
    FileEntry* e = entry_of(d);
    d->req = http::request<http::empty_body>{http::verb::get,
                                             dock_content_target(config_.base_path, e->file.unique_id), 11};
    d->req.set(http::field::host, host_header_);
    d->req.set(http::field::user_agent, "checkpointd/" CPD_VERSION);
    d->req.set(http::field::authorization, "Bearer " + config_.token);
    d->req.keep_alive(false);
    const std::int64_t from = d->partial->bytes();
    if (from > 0) {
      d->req.set(http::field::range, "bytes=" + std::to_string(from) + "-");
      ++e->resumes;
      std::lock_guard lock(mutex_);
      ++snap_.resumes;
    }
    arm_download_timer(d, std::chrono::seconds(config_.request_timeout_s));
    auto self = shared_from_this();
    d->resolver.async_resolve(
        config_.host, std::to_string(config_.port),
        [self, d](const error_code& ec, const tcp::resolver::results_type& results) {
          if (!self->live(d)) {
            return;
          }
          if (ec) {
            self->broken(d, "resolve failed: " + ec.message());
            return;
          }
          asio::async_connect(d->socket, results, [self, d](const error_code& ce, const tcp::endpoint&) {
            if (!self->live(d)) {
              return;
            }
            if (ce) {
              self->broken(d, "connect failed: " + ce.message());
              return;
            }
            http::async_write(d->socket, d->req, [self, d](const error_code& we, std::size_t) {
              if (!self->live(d)) {
                return;
              }
              if (we) {
                self->broken(d, "write failed: " + we.message());
                return;
              }
              d->parser.emplace();
              d->parser->body_limit(std::numeric_limits<std::uint64_t>::max());  // files of 4 GB and more
              d->raw = false;
              http::async_read_header(
                  d->socket, d->buffer, *d->parser,
                  [self, d](const error_code& re, std::size_t) { self->on_download_header(d, re); });
            });
          });
        });
  }

  void on_download_header(const DownloadPtr& d, const error_code& ec) {
    if (!live(d)) {
      return;
    }
    if (ec) {
      broken(d, d->timed_out ? "no answer within " + std::to_string(config_.request_timeout_s) + " s"
                             : "read failed: " + ec.message());
      return;
    }
    FileEntry* e = entry_of(d);
    const auto& res = d->parser->get();
    const unsigned status = res.result_int();
    const std::int64_t from = d->partial->bytes();
    const auto content_length = d->parser->content_length();
    if (status == 401) {
      d->abort();
      end_download(d);
      requeue_front(d->key);
      auth_failed();
      return;
    }
    if (status == 404) {
      // Listed but not offered: asked again with backoff, then closed by a fault record. It keeps its
      // place under the pending bound meanwhile, so such files cannot fill the ledger behind our back.
      count_error("download_404");
      ++e->not_found;
      log::warn(kComponent, config_.id,
                e->file.unique_id + ": station answers HTTP 404 for a file it listed (" +
                    std::to_string(e->not_found) + " of " + std::to_string(kMaxNotFound) + ")");
      d->abort();
      if (e->not_found >= kMaxNotFound) {
        end_download(d);
        e->partial.reset();
        asio::post(*ctx_.blocking, [p = d->partial] { p->remove(); });  // an empty file from open()
        emit_fault(
            d->key, "not_found",
            "station answered HTTP 404 to " + std::to_string(e->not_found) + " downloads of a file it listed",
            {}, e->not_found);
        pump_downloads();
        return;
      }
      retry_later(d, false);
      return;
    }
    e->not_found = 0;
    if (status == 206 && from > 0) {
      const auto range = parse_content_range(str(res[http::field::content_range]));
      const bool range_ok =
          range && range->from == from && range->to == d->length - 1 && range->total == d->length;
      const bool length_ok =
          !content_length || static_cast<std::int64_t>(*content_length) == d->length - from;
      if (!range_ok || !length_ok) {
        count_error("bad_content_range");
        log::warn(kComponent, config_.id,
                  e->file.unique_id + ": station answered Range with '" +
                      str(res[http::field::content_range]) + "': fetching the whole file again");
        restart_whole(d);
        return;
      }
      read_body(d);
      return;
    }
    if (status == 200) {
      if (content_length && static_cast<std::int64_t>(*content_length) != d->length) {
        corrupt(d, "station sends " + std::to_string(*content_length) + " bytes for a file listed with " +
                       std::to_string(d->length));
        return;
      }
      if (from > 0) {
        // The station ignored the Range: start the file over.
        truncate_then_read(d);
        return;
      }
      read_body(d);
      return;
    }
    count_error("http_" + std::to_string(status));
    broken(d, "download answered HTTP " + std::to_string(status));
  }

  // The partial file is cut to nothing (blocking) and the body read from the first byte.
  void truncate_then_read(const DownloadPtr& d) {
    disarm_download_timer(d);
    asio::post(*ctx_.blocking, [self = shared_from_this(), d] {
      Status s = d->partial->truncate_all();
      asio::post(self->strand_, [self, d, s = std::move(s)] {
        if (!self->live(d)) {
          return;
        }
        if (!s.is_ok()) {
          self->disk_trouble(d, s);
          return;
        }
        d->received = 0;
        self->read_body(d);
      });
    });
  }

  // A Range answer that does not fit: drop what is on disk and try again without Range.
  void restart_whole(const DownloadPtr& d) {
    d->abort();
    asio::post(*ctx_.blocking, [self = shared_from_this(), d] {
      Status s = d->partial->truncate_all();
      asio::post(self->strand_, [self, d, s = std::move(s)] {
        if (!self->running_ || d->gen != self->gen_) {
          return;
        }
        if (!s.is_ok()) {
          self->disk_trouble_after(d, s);
          return;
        }
        self->retry_later(d, false);
      });
    });
  }

  void read_body(const DownloadPtr& d) {
    if (d->chunk.empty()) {
      d->chunk.resize(kChunkBytes);
    }
    if (!d->raw && d->parser->content_length() && !d->parser->chunked()) {
      d->raw = true;
      d->body_left = static_cast<std::int64_t>(*d->parser->content_length());
    }
    if (d->raw) {
      read_raw(d);
      return;
    }
    auto& body = d->parser->get().body();
    body.data = d->chunk.data() + d->filled;
    body.size = d->chunk.size() - d->filled;
    body.more = true;
    arm_download_timer(d, std::chrono::seconds(config_.download_idle_timeout_s));
    http::async_read_some(
        d->socket, d->buffer, *d->parser,
        [self = shared_from_this(), d](error_code ec, std::size_t) { self->on_body(d, ec); });
  }

  // Raw body: first what Beast buffered behind the header, then whole pieces of the chunk from the socket.
  void read_raw(const DownloadPtr& d) {
    const std::size_t room = d->chunk.size() - d->filled;
    const std::size_t left = static_cast<std::size_t>(d->body_left);
    if (d->buffer.size() > 0) {
      const std::size_t n = std::min({d->buffer.size(), room, left});
      asio::buffer_copy(asio::buffer(d->chunk.data() + d->filled, n), d->buffer.data());
      d->buffer.consume(n);
      on_raw(d, {}, n);
      return;
    }
    // A piece of at most kRawPieceBytes must arrive within the idle timeout (>= 4 KB/s at the defaults).
    const std::size_t want = std::min({room, left, kRawPieceBytes});
    arm_download_timer(d, std::chrono::seconds(config_.download_idle_timeout_s));
    asio::async_read(
        d->socket, asio::buffer(d->chunk.data() + d->filled, want),
        [self = shared_from_this(), d](error_code ec, std::size_t n) { self->on_raw(d, ec, n); });
  }

  void on_raw(const DownloadPtr& d, error_code ec, std::size_t n) {
    if (!live(d)) {
      return;
    }
    d->filled += n;
    d->received += static_cast<std::int64_t>(n);
    d->body_left -= static_cast<std::int64_t>(n);
    if (n > 0) {
      d->got_bytes = true;
    }
    if (d->received > d->length) {
      corrupt(d, "station sent more than the listed " + std::to_string(d->length) + " bytes");
      return;
    }
    if (ec) {
      body_failed(d, ec);
      return;
    }
    if (d->body_left == 0) {
      body_done(d);
      return;
    }
    if (d->filled == d->chunk.size()) {
      flush(d, [self = shared_from_this(), d] { self->read_body(d); });
      return;
    }
    read_body(d);
  }

  void body_failed(const DownloadPtr& d, error_code ec) {
    const std::string why = d->timed_out
                                ? "no bytes for " + std::to_string(config_.download_idle_timeout_s) + " s"
                                : (ec == http::error::partial_message || ec == asio::error::eof ||
                                           ec == http::error::end_of_stream
                                       ? std::string("connection closed early")
                                       : "read failed: " + ec.message());
    flush(d, [self = shared_from_this(), d, why] { self->broken(d, why); });
  }

  void body_done(const DownloadPtr& d) {
    flush(d, [self = shared_from_this(), d] {
      if (d->partial->bytes() != d->length) {
        self->corrupt(d, "transfer ended after " + std::to_string(d->partial->bytes()) + " of " +
                             std::to_string(d->length) + " bytes");
        return;
      }
      error_code ignored;
      d->socket.close(ignored);
      self->finish_file(d);
    });
  }

  void on_body(const DownloadPtr& d, error_code ec) {
    if (!live(d)) {
      return;
    }
    const std::size_t asked = d->chunk.size() - d->filled;
    const std::size_t n = asked - d->parser->get().body().size;
    d->filled += n;
    d->received += static_cast<std::int64_t>(n);
    if (n > 0) {
      d->got_bytes = true;
    }
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (d->received > d->length) {
      corrupt(d, "station sent more than the listed " + std::to_string(d->length) + " bytes");
      return;
    }
    if (ec) {
      body_failed(d, ec);
      return;
    }
    if (d->parser->is_done()) {
      body_done(d);
      return;
    }
    if (d->filled == d->chunk.size()) {
      flush(d, [self = shared_from_this(), d] { self->read_body(d); });
      return;
    }
    read_body(d);
  }

  // Writes and digests the filled chunk on the blocking pool; `next` runs on the strand after it.
  void flush(const DownloadPtr& d, std::function<void()> next) {
    disarm_download_timer(d);
    if (d->filled == 0) {
      next();
      return;
    }
    asio::post(*ctx_.blocking, [self = shared_from_this(), d, next = std::move(next)]() mutable {
      // The media reserve keeps the disk's last space for evidence records: a recording waits for room.
      Status s = self->ctx_.media->check_space(d->filled);
      if (s.is_ok()) {
        s = d->partial->append(d->chunk.data(), d->filled);
      }
      asio::post(self->strand_, [self, d, s = std::move(s), next = std::move(next)] {
        if (!self->live(d)) {
          return;
        }
        d->filled = 0;
        if (!s.is_ok()) {
          d->received = d->partial->bytes();
          self->disk_trouble(d, s);
          return;
        }
        next();
      });
    });
  }

  void finish_file(const DownloadPtr& d) {
    disarm_download_timer(d);
    asio::post(*ctx_.blocking, [self = shared_from_this(), d] {
      FileDigest::Result digest;
      Status s = d->partial->finish(digest);
      asio::post(self->strand_, [self, d, s = std::move(s), digest = std::move(digest)] {
        if (!self->live(d)) {
          return;
        }
        self->on_file_finished(d, s, digest);
      });
    });
  }

  void on_file_finished(const DownloadPtr& d, const Status& s, const FileDigest::Result& digest) {
    FileEntry* e = entry_of(d);
    if (e == nullptr) {
      end_download(d);
      return;
    }
    e->partial.reset();  // closed: a later attempt reopens (and rehashes) what is on disk
    if (!s.is_ok()) {
      disk_trouble(d, s);
      return;
    }
    if (lower(digest.md5) != lower(e->file.md5)) {
      on_mismatch(d, "md5_mismatch", "expected md5 " + lower(e->file.md5) + ", got " + digest.md5,
                  digest.sha256);
      return;
    }
    asio::post(*ctx_.blocking, [self = shared_from_this(), d, sha = digest.sha256] {
      StoredFile stored;
      Status as = self->ctx_.media->adopt(d->partial->path(), sha, d->length, stored);
      asio::post(self->strand_, [self, d, sha, as = std::move(as)] {
        if (!self->live(d)) {
          return;
        }
        if (!as.is_ok()) {
          self->disk_trouble(d, as);
          return;
        }
        self->on_collected(d, sha);
      });
    });
  }

  // Bytes that cannot be the listed file (too many, wrong length): retried like an MD5 mismatch, reported
  // as size_mismatch.
  void corrupt(const DownloadPtr& d, const std::string& why) {
    d->abort();
    FileEntry* e = entry_of(d);
    if (e != nullptr) {
      e->partial.reset();
    }
    log::warn(kComponent, config_.id, (e != nullptr ? e->file.unique_id : d->key) + ": " + why);
    on_mismatch(d, "size_mismatch", why, {});
  }

  // reason: md5_mismatch or size_mismatch (counted, and the fault's reason after the last attempt).
  void on_mismatch(const DownloadPtr& d, const std::string& reason, const std::string& why,
                   const std::string& sha256) {
    d->finished = true;
    disarm_download_timer(d);
    // The station's copy is the one to fetch again: nothing of this download is kept. The next attempt
    // starts only once the file is gone (it would otherwise open the old one).
    asio::post(*ctx_.blocking, [self = shared_from_this(), d, reason, why, sha256] {
      d->partial->remove();
      asio::post(self->strand_, [self, d, reason, why, sha256] {
        if (self->running_ && d->gen == self->gen_) {
          self->after_mismatch(d, reason, why, sha256);
        }
      });
    });
  }

  void after_mismatch(const DownloadPtr& d, const std::string& reason, const std::string& why,
                      const std::string& sha256) {
    end_download(d);
    FileEntry* e = entry_of(d);
    if (e == nullptr) {
      pump_downloads();
      return;
    }
    e->partial.reset();
    ++e->md5_failures;
    if (reason == "md5_mismatch") {
      std::lock_guard lock(mutex_);
      ++snap_.md5_mismatches;
    }
    count_error(reason);
    const std::string detail = why + " (attempt " + std::to_string(e->md5_failures) + " of " +
                               std::to_string(config_.max_md5_attempts) + ")";
    log::warn(kComponent, config_.id, e->file.unique_id + ": " + detail);
    if (e->md5_failures >= config_.max_md5_attempts) {
      emit_fault(d->key, reason, detail, sha256, e->md5_failures);
    } else {
      e->phase = Phase::kQueued;
      download_queue_.push_front(d->key);
    }
    pump_downloads();
  }

  void on_collected(const DownloadPtr& d, const std::string& sha256) {
    FileEntry* e = entry_of(d);
    end_download(d);
    if (e == nullptr) {
      return;
    }
    e->sha256 = sha256;
    e->phase = Phase::kCommitting;
    e->breaks = 0;
    const UnixMs now = ctx_.clock.now_ms();
    RecordingCollected rc;
    rc.device_id = config_.id;
    rc.station_id = station_id_;
    rc.firmware = firmware_;
    rc.file = e->file;
    rc.sha256 = sha256;
    rc.media_path = ctx_.media->path_of(sha256);
    std::int64_t station_offset = 0;
    if (const auto est = clock_.estimate()) {
      rc.station_clock = StationClock{est->offset_ms, est->uncertainty_ms, est->measured_ms};
      station_offset = est->offset_ms;
    }
    // The recorder is provably ahead when it collected "after" the station's clock at the listing, or
    // ended a recording after collecting it; a recorder that is behind cannot be seen from here.
    const std::int64_t beyond_station = e->file.collect_ms - (e->listed_ms + station_offset);
    const std::int64_t beyond_collect = e->file.end_ms - e->file.collect_ms;
    const std::int64_t ahead = std::max(beyond_station, beyond_collect);
    if (ahead > std::int64_t{config_.recorder_clock_tolerance_s} * 1000) {
      rc.recorder_offset_ms = ahead;
      rc.recorder_clock_off = true;
    }
    rc.start_ms = e->file.start_ms - rc.recorder_offset_ms - station_offset;
    rc.end_ms = e->file.end_ms - rc.recorder_offset_ms - station_offset;
    rc.collected_ms = now;
    rc.download_attempts = e->md5_failures + 1;
    rc.resumes = e->resumes;
    rc.on_committed = committed_callback(d->key);
    {
      std::lock_guard lock(mutex_);
      ++snap_.collected;
      snap_.bytes_collected += static_cast<std::uint64_t>(e->file.length);
    }
    log::info(
        kComponent, config_.id,
        "collected " + e->file.unique_id + " (" + std::to_string(e->file.length) + " bytes, sha256 " +
            sha256 +
            (rc.recorder_clock_off ? ", recorder clock " + std::to_string(rc.recorder_offset_ms) + " ms ahead"
                                   : std::string()) +
            ")");
    ctx_.sink.emit(std::move(rc));
    pump_downloads();
  }

  // A broken transfer: what arrived stays in the partial file; the next attempt resumes with Range.
  void broken(const DownloadPtr& d, const std::string& why) {
    d->abort();
    count_error("download_broken");
    FileEntry* e = entry_of(d);
    log::warn(kComponent, config_.id,
              (e != nullptr ? e->file.unique_id : d->key) + ": " + why + " after " +
                  std::to_string(d->partial ? d->partial->bytes() : 0) + " bytes; resuming");
    retry_later(d, d->got_bytes);
  }

  void disk_trouble(const DownloadPtr& d, const Status& s) {
    d->abort();
    disk_trouble_after(d, s);
  }

  // Disk full or failing: the partial stays, nothing is acked, the file is tried again later.
  void disk_trouble_after(const DownloadPtr& d, const Status& s) {
    count_error("disk");
    FileEntry* e = entry_of(d);
    if (e != nullptr) {
      e->partial.reset();  // reopened from disk next time, so the digest matches what is really there
    }
    log::error(kComponent, config_.id,
               (e != nullptr ? e->file.unique_id : d->key) + ": cannot store the download: " + s.message());
    warn("cannot store downloads: " + s.message());
    retry_later(d, false);
  }

  void retry_later(const DownloadPtr& d, bool made_progress) {
    end_download(d);
    auto it = files_.find(d->key);
    if (it == files_.end() || !running_) {
      return;
    }
    FileEntry& e = it->second;
    e.breaks = made_progress ? 0 : e.breaks + 1;
    const std::int64_t delay =
        reconnect_backoff_ms(e.breaks, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_);
    e.phase = Phase::kWaiting;
    if (!e.wait_timer) {
      e.wait_timer = std::make_shared<asio::steady_timer>(strand_);
    }
    e.wait_timer->expires_after(std::chrono::milliseconds(delay));
    const std::uint64_t gen = gen_;
    e.wait_timer->async_wait([self = shared_from_this(), key = d->key, gen](const error_code& ec) {
      if (ec || gen != self->gen_ || !self->running_) {
        return;
      }
      auto f = self->files_.find(key);
      if (f == self->files_.end() || f->second.phase != Phase::kWaiting) {
        return;
      }
      f->second.phase = Phase::kQueued;
      self->download_queue_.push_front(key);
      self->pump_downloads();
    });
    sync_queue_counters();
    pump_downloads();
  }

  void requeue_front(const std::string& key) {
    auto it = files_.find(key);
    if (it != files_.end()) {
      it->second.phase = Phase::kQueued;
      download_queue_.push_front(key);
    }
    sync_queue_counters();
  }

  void end_download(const DownloadPtr& d) {
    d->finished = true;
    disarm_download_timer(d);
    std::erase(downloads_, d);
    sync_queue_counters();
  }

  void drop_file(const std::string& key) {
    auto it = files_.find(key);
    if (it == files_.end()) {
      return;
    }
    if (it->second.wait_timer) {
      it->second.wait_timer->cancel();
    }
    files_.erase(it);
    sync_queue_counters();
  }

  // ---- committed records and acks ----

  std::function<void(const std::string&)> committed_callback(const std::string& key) {
    std::weak_ptr<RecorderAdapterImpl> weak = weak_from_this();
    const std::uint64_t gen = gen_;
    // Runs on the store worker thread: hand over to the strand, never block there.
    return [weak, gen, key](const std::string& record_id) {
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self, gen, key, record_id] {
          if (gen == self->gen_ && self->running_) {
            self->on_committed(key, record_id);
          }
        });
      }
    };
  }

  void on_committed(const std::string& key, const std::string& record_id) {
    auto it = files_.find(key);
    if (it == files_.end() || it->second.phase != Phase::kCommitting) {
      return;
    }
    FileEntry& e = it->second;
    if (e.sha256.empty()) {
      // A fault record: its commit marked the file kFaulted; the station keeps its copy.
      log::info(kComponent, config_.id, e.file.unique_id + ": fault recorded as " + record_id);
      drop_file(key);
      return;
    }
    e.phase = Phase::kAckQueued;
    ack_queue_.push_back(key);
    pump_acks();
  }

  void pump_acks() {
    if (!running_ || auth_blocked_ || acking_ || ack_waiting_) {
      return;
    }
    while (!ack_queue_.empty()) {
      const std::string key = ack_queue_.front();
      ack_queue_.pop_front();
      auto it = files_.find(key);
      if (it == files_.end() || it->second.phase != Phase::kAckQueued) {
        continue;
      }
      it->second.phase = Phase::kAcking;
      acking_ = true;
      exchange(http::verb::post, dock_ack_target(config_.base_path, it->second.file.unique_id),
               dock_ack_body(it->second.sha256),
               [self = shared_from_this(), key](HttpResult r) { self->on_ack(key, std::move(r)); });
      return;
    }
  }

  void on_ack(const std::string& key, HttpResult r) {
    acking_ = false;
    auto it = files_.find(key);
    if (it == files_.end()) {
      pump_acks();
      return;
    }
    FileEntry& e = it->second;
    if (r.ec || (r.status != 200 && r.status != 404 && r.status != 409)) {
      if (!r.ec && r.status == 401) {
        e.phase = Phase::kAckQueued;
        ack_queue_.push_front(key);
        auth_failed();
        return;
      }
      // The file stays kRecorded in the ledger: after a restart it is acked too.
      count_error(r.ec ? "ack_request" : "ack_http_" + std::to_string(r.status));
      log::warn(kComponent, config_.id,
                e.file.unique_id + ": ack failed (" + (r.ec ? r.what : "HTTP " + std::to_string(r.status)) +
                    "); trying again");
      e.phase = Phase::kAckQueued;
      ack_queue_.push_front(key);
      ack_waiting_ = true;
      ack_timer_.expires_after(std::chrono::milliseconds(reconnect_backoff_ms(
          ack_attempt_++, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_)));
      ack_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
        self->ack_waiting_ = false;
        if (!ec && self->running_) {
          self->pump_acks();
        }
      });
      return;
    }
    ack_attempt_ = 0;
    if (r.status == 409) {
      // The station's copy differs from what was stored: a fault record, and the station keeps the file.
      {
        std::lock_guard lock(mutex_);
        ++snap_.ack_conflicts;
      }
      const std::string text = dock_error_text(r.body);
      const std::string detail = "station refused the ack of sha256 " + e.sha256 + " (HTTP 409" +
                                 (text.empty() ? "" : ": " + text) + ")";
      log::error(kComponent, config_.id, e.file.unique_id + ": " + detail);
      const std::string sha = e.sha256;
      e.sha256.clear();  // the fault's commit ends this file here: no ack
      emit_fault(key, "ack_conflict", detail, sha, e.md5_failures + 1);
      pump_acks();
      return;
    }
    if (r.status == 404) {
      count_error("ack_unknown");
      // Per file: logged and counted, not a device status (one record per file would follow).
      log::warn(kComponent, config_.id,
                e.file.unique_id + ": station no longer has it (HTTP 404 on ack): taken as acknowledged");
    } else {
      std::lock_guard lock(mutex_);
      ++snap_.acks;
    }
    mark_acked(key, e.file.unique_id, e.file.md5);
    pump_acks();
  }

  void mark_acked(const std::string& key, const std::string& unique_id, const std::string& md5) {
    const std::uint64_t gen = gen_;
    std::weak_ptr<RecorderAdapterImpl> weak = weak_from_this();
    ctx_.dock_ledger->mark_acked(config_.id, unique_id, md5, [weak, gen, key](Status s) {
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self, gen, key, s = std::move(s)] {
          if (gen != self->gen_ || !self->running_) {
            return;
          }
          if (!s.is_ok()) {
            // Still kRecorded in the ledger: the next run acks it again (200 or 404 both settle it).
            self->count_error("ledger");
            log::error(kComponent, self->config_.id, "dock ledger did not mark the ack: " + s.message());
          }
          self->drop_file(key);
        });
      }
    });
  }

  // ---- output ----

  void emit_fault(const std::string& key, const std::string& reason, const std::string& detail,
                  const std::string& sha256, int attempts) {
    auto it = files_.find(key);
    if (it == files_.end()) {
      return;
    }
    FileEntry& e = it->second;
    e.phase = Phase::kCommitting;
    e.sha256.clear();
    DockFileFault f;
    f.device_id = config_.id;
    f.station_id = station_id_;
    f.file = e.file;
    f.reason = reason;
    f.detail = detail;
    f.attempts = attempts;
    f.sha256 = sha256;
    f.time_ms = ctx_.clock.now_ms();
    f.on_committed = committed_callback(key);
    {
      std::lock_guard lock(mutex_);
      ++snap_.faults;
    }
    sync_queue_counters();
    ctx_.sink.emit(std::move(f));
  }

  void emit_fault_for_unreadable(DockFile file, const std::string& detail) {
    const std::string key = file_key(file.unique_id, file.md5);
    FileEntry e;
    e.file = std::move(file);
    e.phase = Phase::kCommitting;
    files_.emplace(key, std::move(e));
    emit_fault(key, "bad_entry", "ledger entry unreadable: " + detail, {}, 0);
  }

  void emit_status(const std::string& state, const std::string& text) {
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = std::string(kKind);
    ev.state = state;
    ev.text = text;
    ev.time_ms = ctx_.clock.now_ms();
    ctx_.sink.emit(std::move(ev));
  }

  // A warning goes out once per distinct text while it lasts; a clean listing clears it ("ok").
  void warn(const std::string& text) {
    note_error(text);
    log::warn(kComponent, config_.id, text);
    if (warning_active_ && last_warning_ == text) {
      return;
    }
    last_warning_ = text;
    warning_active_ = true;
    set_state("warning");
    emit_status("warning", text);
  }

  void clear_warning() {
    if (!warning_active_) {
      return;
    }
    last_warning_.clear();
    warning_active_ = false;
    set_state("connected");
    emit_status("ok", "station listing read and saved");
  }

  void note_error(const std::string& text) {
    std::lock_guard lock(mutex_);
    snap_.last_error = text;
  }

  void set_state(const std::string& s) {
    std::lock_guard lock(mutex_);
    snap_.state = s;
  }

  void count_error(const std::string& reason) {
    std::lock_guard lock(mutex_);
    ++snap_.errors[reason];
  }

  void sync_queue_counters() {
    std::uint64_t queued = 0;
    std::size_t bytes = 0;
    for (const auto& [key, f] : files_) {
      if (f.phase == Phase::kQueued || f.phase == Phase::kWaiting) {
        ++queued;
      }
      bytes += f.file.raw_json.size();
    }
    // Hysteresis: "room again" once half the bound is free, so a station at the bound logs once per
    // episode, not once per file.
    if (pending_limit_reached_ && files_.size() <= static_cast<std::size_t>(config_.max_pending_files) / 2 &&
        bytes <= static_cast<std::size_t>(config_.max_pending_entry_bytes) / 2) {
      pending_limit_reached_ = false;
      log::info(kComponent, config_.id,
                "pending files down to " + std::to_string(files_.size()) + ": listing new files again");
    }
    std::lock_guard lock(mutex_);
    snap_.queued = queued;
    snap_.downloading = downloads_.size();
    snap_.pending = files_.size();
    snap_.pending_bytes = bytes;
    snap_.pending_limit_reached = pending_limit_reached_;
  }

  enum class Reported { kNone, kUp, kDown, kFault };

  const RecorderDockConfig config_;
  AdapterContext& ctx_;
  Strand strand_;
  std::string host_header_;

  asio::steady_timer poll_timer_;  // polls, backoff after failures, auth backoff, ledger load retries
  asio::steady_timer ack_timer_;
  asio::steady_timer pump_timer_;  // re-checks congestion
  HttpExchanges exchanges_;        // short requests: status, listing, ack
  std::vector<DownloadPtr> downloads_;

  std::map<std::string, FileEntry> files_;  // every file this run works on, by (uniqueId, md5)
  std::deque<std::string> download_queue_;
  std::deque<std::string> ack_queue_;
  std::string cursor_;

  OffsetClockEstimator clock_;
  std::string station_id_;
  std::string firmware_;

  std::minstd_rand rng_;
  bool running_ = false;
  std::uint64_t gen_ = 0;  // +1 on start and stop: callbacks of an earlier run are ignored
  bool polling_ = false;
  bool auth_blocked_ = false;
  bool acking_ = false;
  bool ack_waiting_ = false;
  bool pump_armed_ = false;
  int attempt_ = 0;
  int ack_attempt_ = 0;
  Reported reported_ = Reported::kNone;
  bool warning_active_ = false;         // a "warning" status went out and no clean listing followed yet
  bool pending_limit_reached_ = false;  // see hold_listings()
  std::string last_warning_;

  mutable std::mutex mutex_;  // guards snap_ only; everything else lives on the strand
  Snapshot snap_;
};

}  // namespace

std::unique_ptr<Adapter> make_recorder_adapter(const RecorderDockConfig& config, AdapterContext& ctx) {
  return std::make_unique<AdapterHandle<RecorderAdapterImpl>>(config, ctx);
}

}  // namespace cpd::adapters
