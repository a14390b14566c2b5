// The recorder-dock adapter: the wiring on the adapter's own strand between the pure dock protocol, the
// download queue (download_queue.h: which file next, each file's phase), the download transport
// (dock_download.h), the partial files (partial_file.h) and the DockLedger. Polls /status and /files, and
// acks a file only after its record is committed.
#include "adapters/recorder/recorder_adapter.h"

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <functional>
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
#include "adapters/recorder/dock_download.h"
#include "adapters/recorder/dock_protocol.h"
#include "adapters/recorder/download_queue.h"
#include "adapters/recorder/partial_file.h"
#include "daemon/core/digest.h"
#include "daemon/log/log.h"

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using Strand = asio::strand<asio::io_context::executor_type>;
using EndKind = DockDownloadEnd::Kind;

constexpr std::string_view kComponent = "recorder";
constexpr std::string_view kKind = "recorder_dock";
// A file the station lists but answers 404 for: asked again with backoff this many times, then a fault
// record (reason not_found) closes it, so such files cannot hold the pending bound for ever.
constexpr int kMaxNotFound = 3;
constexpr auto kCongestionRecheck = std::chrono::milliseconds(20);

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The station link as reported: one state rather than a flag per condition.
enum class LinkState {
  kUnknown,      // nothing reported yet
  kUp,           // the station answers
  kDown,         // unreachable: polls back off
  kAuthRefused,  // the token was refused: nothing is sent until the auth backoff ends
  kAuthRetry,    // the auth backoff ended (or the run restarted): reported as a fault until an answer
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
        queue_({static_cast<std::size_t>(config.max_pending_files),
                static_cast<std::size_t>(config.max_pending_entry_bytes)},
               [this](const DownloadQueueCounters& c, bool room_regained) {
                 on_queue_changed(c, room_regained);
               }),
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
      for (auto& a : self->attempts_) {
        a->abort();
      }
      self->attempts_.clear();
      for (auto& [key, io] : self->file_io_) {
        if (io.retry_timer) {
          io.retry_timer->cancel();
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
        {"queued", snap_.queue.queued},
        {"downloading", snap_.queue.downloading},
        {"pending", snap_.queue.pending},
        {"pending_bytes", snap_.queue.pending_bytes},
        {"max_pending_files", config_.max_pending_files},
        {"max_pending_entry_bytes", config_.max_pending_entry_bytes},
        {"pending_limit_reached", snap_.queue.limit_reached},
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
  // What the adapter holds for a file besides its place in the queue: I/O resources of this run.
  struct FileIo {
    std::shared_ptr<PartialFile> partial;  // open between attempts of this run
    std::shared_ptr<asio::steady_timer> retry_timer;
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
    DownloadQueueCounters queue;      // queued, downloading, pending, pending_bytes, limit_reached
    std::uint64_t listings_held = 0;  // listings not made, or cut, because the pending bound was reached
    std::uint64_t entries_refused = 0;
    std::uint64_t repeated = 0;
    std::map<std::string, std::uint64_t> errors;
    std::uint64_t reconnects = 0;
    std::optional<std::int64_t> station_clock_offset_ms;
    std::string last_error;
  };

  // One attempt at one file: the partial file opened for it, then its transfer.
  struct Attempt {
    Attempt(std::string k, std::uint64_t g, std::int64_t len) : key(std::move(k)), gen(g), length(len) {}
    void abort() {
      finished = true;
      if (transfer) {
        transfer->abort();
      }
    }
    std::string key;
    std::uint64_t gen = 0;  // the run it belongs to
    std::int64_t length = 0;
    std::shared_ptr<PartialFile> partial;
    std::shared_ptr<DockDownload> transfer;  // once connecting
    bool finished = false;
  };
  using AttemptPtr = std::shared_ptr<Attempt>;

  // ---- start-up: the ledger ----

  void reset_work() {
    queue_.clear();
    file_io_.clear();
    ack_waiting_ = false;
    polling_ = false;
    if (link_ == LinkState::kAuthRefused) {
      link_ = LinkState::kAuthRetry;
    }
    pump_armed_ = false;
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
        pending += take_loaded_pending(lf, load_ms) ? 1 : 0;
      } else if (lf.state == DockFileState::kRecorded) {
        recorded += take_loaded_recorded(lf, load_ms) ? 1 : 0;
      }
    }
    if (pending + recorded > 0) {
      log::info(kComponent, config_.id,
                "ledger: " + std::to_string(pending) + " file(s) to download, " + std::to_string(recorded) +
                    " to acknowledge");
    }
    set_state("connecting");
    poll();
    pump_downloads();
    pump_acks();
  }

  // A file the ledger holds as pending: downloaded again (resuming its partial file), or closed by a fault
  // when its entry cannot be read any more. True when it was queued.
  bool take_loaded_pending(const DockLedgerFile& lf, UnixMs load_ms) {
    auto parsed = parse_dock_file(lf.entry_json);
    if (!parsed) {
      count_error("bad_entry");
      log::error(
          kComponent, config_.id,
          "ledger entry " + lf.unique_id + " unreadable: " + parsed.error.detail + "; reported as a fault");
      DockFile f;
      f.unique_id = lf.unique_id;
      f.md5 = lf.md5;
      f.raw_json = lf.entry_json;
      emit_fault_for_unreadable(std::move(f), parsed.error.detail);
      return false;
    }
    return queue_.add_pending(dock_file_key(lf.unique_id, lf.md5), std::move(*parsed.value), load_ms);
  }

  // A file the ledger holds as recorded: only its ack is missing. True when it was queued.
  bool take_loaded_recorded(const DockLedgerFile& lf, UnixMs load_ms) {
    if (lf.sha256.empty()) {
      count_error("ledger_entry");
      log::warn(kComponent, config_.id, "ledger says " + lf.unique_id + " is recorded but names no SHA-256");
      return false;
    }
    const std::string key = dock_file_key(lf.unique_id, lf.md5);
    if (queue_.contains(key)) {
      return false;
    }
    DockFile f;
    f.unique_id = lf.unique_id;
    f.md5 = lf.md5;
    f.raw_json = lf.entry_json;
    if (auto parsed = parse_dock_file(lf.entry_json)) {
      f = std::move(*parsed.value);
    }
    return queue_.add_recorded(key, std::move(f), load_ms, lf.sha256);
  }

  // ---- HTTP plumbing for short requests ----

  // Host, User-Agent and the bearer token: every request to the station carries them.
  void set_station_fields(http::fields& fields) const {
    fields.set(http::field::host, host_header_);
    fields.set(http::field::user_agent, "checkpointd/" CPD_VERSION);
    fields.set(http::field::authorization, "Bearer " + config_.token);
  }

  void exchange(http::verb verb, std::string target, std::string body, std::function<void(HttpResult)> done) {
    HttpExchanges::Request req{verb, target, 11};
    set_station_fields(req);
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
    if (!running_ || auth_blocked() || polling_) {
      return;
    }
    polling_ = true;
    exchange(http::verb::get, dock_status_target(config_.base_path), {},
             [self = shared_from_this()](HttpResult r) { self->on_status(std::move(r)); });
  }

  void on_status(HttpResult r) {
    if (auth_blocked()) {
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

  // Room for new files under the pending bounds (max_pending_files, max_pending_entry_bytes), as the
  // ledger takes it.
  DockListingBudget room() const {
    const PendingRoom r = queue_.room();
    DockListingBudget b;
    b.files = r.files;
    b.bytes = r.bytes;
    return b;
  }

  // A listing not made (or cut short) at the pending bound: the files wait on the station, the cursor
  // stays before them. Logged once until the pending files fall to half the bound (on_queue_changed).
  void hold_listings() {
    {
      std::lock_guard lock(mutex_);
      ++snap_.listings_held;
    }
    if (!queue_.limit_reached()) {
      const DownloadQueueCounters& c = queue_.counters();
      log::warn(kComponent, config_.id,
                std::to_string(c.pending) + " files (" + std::to_string(c.pending_bytes) +
                    " bytes of listing) pending, at the bound (max_pending_files " +
                    std::to_string(config_.max_pending_files) + ", max_pending_entry_bytes " +
                    std::to_string(config_.max_pending_entry_bytes) +
                    "): further files stay on the station until there is room");
      queue_.hold_listings();
    }
  }

  // after_bad_cursor: this listing restarts from the beginning after a 400 (no second restart in a row).
  void list(bool after_bad_cursor) {
    if (!running_ || auth_blocked()) {
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
    if (auth_blocked()) {
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
    save_listing(std::move(*parsed.value), r.received_ms, limit);
  }

  // Every entry is persisted (pending) within the room left before any is worked on: files first, then the
  // refused entries, each to be closed at once by its fault record.
  void save_listing(DockListing listing, UnixMs listed_ms, int limit) {
    const std::size_t entries = listing.files.size() + listing.refused.size();
    const bool full = entries >= static_cast<std::size_t>(limit);
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
    const std::uint64_t repeated = take_listed(listing, states, listed_ms);
    {
      std::lock_guard lock(mutex_);
      snap_.files_listed += listing.files.size();
      snap_.repeated += repeated;
    }
    if (!complete) {
      hold_listings();
    }
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

  // Takes the entries the ledger answered for (states[i] is entry i's, files then refused entries); returns
  // how many were known already (acknowledged, faulted, or a refused entry read before).
  std::uint64_t take_listed(DockListing& listing, const std::vector<DockLedgerFile>& states,
                            UnixMs listed_ms) {
    std::uint64_t repeated = 0;
    const std::size_t n = std::min(states.size(), listing.files.size() + listing.refused.size());
    for (std::size_t i = 0; i < n; ++i) {
      const DockLedgerFile& st = states[i];
      if (i >= listing.files.size()) {
        if (st.state == DockFileState::kPending) {
          refuse_entry(std::move(listing.refused[i - listing.files.size()]), listed_ms);
        } else {
          ++repeated;  // its fault record (or an earlier reading of it) already covers it
        }
        continue;
      }
      DockFile& f = listing.files[i];
      const std::string key = dock_file_key(f.unique_id, f.md5);
      switch (st.state) {
        case DockFileState::kPending:
          queue_.add_pending(key, std::move(f), listed_ms);
          break;
        case DockFileState::kRecorded:
          if (!st.sha256.empty()) {
            queue_.add_recorded(key, std::move(f), listed_ms, st.sha256);
          }
          break;
        case DockFileState::kAcked:
        case DockFileState::kFaulted:
          ++repeated;
          break;
      }
    }
    return repeated;
  }

  // A listing entry that cannot be read: persisted (pending) with the listing, then closed by its own
  // recording_fault record; the station keeps the file. Counted by reason; the record names the field.
  void refuse_entry(DockRefusedEntry refused, UnixMs listed_ms) {
    const std::string key = dock_file_key(refused.unique_id, refused.md5);
    if (queue_.contains(key)) {
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
    DockFile f;
    f.unique_id = refused.unique_id;
    f.md5 = refused.md5;
    f.raw_json = std::move(refused.raw);
    queue_.add_closing(key, std::move(f), listed_ms);
    emit_fault(key, "bad_entry", "refused (" + refused.error.reason + "): " + refused.error.detail, {}, 0);
  }

  void schedule_poll(std::int64_t delay_ms) {
    polling_ = false;
    if (!running_ || auth_blocked()) {
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

  bool auth_blocked() const { return link_ == LinkState::kAuthRefused; }

  void link_up() {
    attempt_ = 0;
    if (link_ != LinkState::kUp) {
      set_state("connected");
      emit_status("connected", "station answers at " + config_.url);
      link_ = LinkState::kUp;
    }
  }

  void link_failed(const std::string& reason) {
    note_error(reason);
    {
      std::lock_guard lock(mutex_);
      ++snap_.reconnects;
    }
    if (link_ != LinkState::kDown) {
      log::warn(kComponent, config_.id, "station unreachable: " + reason);
      set_state("disconnected");
      emit_status("disconnected", reason);
      link_ = LinkState::kDown;
    }
    const std::int64_t delay = backoff_ms();
    ++attempt_;
    schedule_poll(delay);
  }

  void auth_failed() {
    if (auth_blocked() || !running_) {
      return;
    }
    link_ = LinkState::kAuthRefused;
    polling_ = false;
    const std::string text = "station refused the token from " + config_.token_file +
                             " (HTTP 401); next try in " + std::to_string(config_.auth_backoff_s) + " s";
    count_error("unauthorized");
    note_error(text);
    log::error(kComponent, config_.id, text);
    set_state("auth_failed");
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
      self->link_ = LinkState::kAuthRetry;
      self->poll();
      self->pump_downloads();
      self->pump_acks();
    });
  }

  std::int64_t backoff_ms() {
    return reconnect_backoff_ms(attempt_, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_);
  }

  // ---- downloads: which file next (the queue), and the partial file each attempt writes to ----

  void pump_downloads() {
    if (!running_ || auth_blocked()) {
      return;
    }
    while (queue_.counters().downloading < static_cast<std::size_t>(config_.max_parallel_downloads) &&
           queue_.has_queued()) {
      if (ctx_.sink.congested()) {
        // The core is behind: no new file until it catches up (downloads under way finish).
        arm_pump_timer();
        return;
      }
      if (const auto key = queue_.start_next_download()) {
        start_download(*key);
      }
    }
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

  std::string partial_path(const std::string& unique_id, const std::string& md5) const {
    return ctx_.media->partial_dir() + "/" + config_.id + "-" + unique_id + "-" + md5 + ".part";
  }

  void start_download(const std::string& key) {
    const DockFileWork& w = *queue_.find(key);
    auto a = std::make_shared<Attempt>(key, gen_, w.file.length);
    attempts_.push_back(a);
    FileIo& io = file_io_[key];
    if (io.partial && io.partial->is_open()) {
      a->partial = io.partial;
      on_partial_ready(a, Status::ok());
      return;
    }
    // Opening may hash a partial file left by a crash, and partial_dir() may create the directory: both
    // on the blocking pool.
    asio::post(*ctx_.blocking,
               [self = shared_from_this(), a, uid = w.file.unique_id, md5 = w.file.md5, length = a->length] {
                 auto p = std::make_shared<PartialFile>(self->partial_path(uid, md5));
                 Status s = p->open(length);
                 asio::post(self->strand_, [self, a, p, s = std::move(s)] {
                   a->partial = p;
                   self->on_partial_ready(a, s);
                 });
               });
  }

  bool live(const AttemptPtr& a) const { return running_ && !a->finished && a->gen == gen_; }

  const DockFileWork* work_of(const AttemptPtr& a) const { return queue_.find(a->key); }

  // Forgets the partial file kept open for the file: a later attempt reopens (and rehashes) what is on disk.
  void close_partial(const std::string& key) {
    if (auto it = file_io_.find(key); it != file_io_.end()) {
      it->second.partial.reset();
    }
  }

  void on_partial_ready(const AttemptPtr& a, const Status& s) {
    if (!live(a)) {
      return;
    }
    const DockFileWork* w = work_of(a);
    if (w == nullptr) {
      end_download(a);
      return;
    }
    if (!s.is_ok()) {
      disk_trouble(a, s);
      return;
    }
    file_io_[a->key].partial = a->partial;
    if (a->partial->bytes() == a->length) {
      finish_file(a);  // everything arrived before (a crash after the last byte)
      return;
    }
    connect_download(a, *w);
  }

  void connect_download(const AttemptPtr& a, const DockFileWork& w) {
    DockDownload::Request req{http::verb::get, dock_content_target(config_.base_path, w.file.unique_id), 11};
    set_station_fields(req);
    req.keep_alive(false);
    const std::int64_t from = a->partial->bytes();
    if (from > 0) {
      req.set(http::field::range, "bytes=" + std::to_string(from) + "-");
      queue_.note_resume(a->key);
      std::lock_guard lock(mutex_);
      ++snap_.resumes;
    }
    a->transfer = std::make_shared<DockDownload>(
        strand_, *ctx_.blocking, *ctx_.media, a->partial, a->length,
        DockDownload::Timeouts{std::chrono::seconds(config_.request_timeout_s),
                               std::chrono::seconds(config_.download_idle_timeout_s)});
    a->transfer->start(config_.host, config_.port, std::move(req),
                       [self = shared_from_this(), a](DockDownloadEnd e) {
                         if (self->live(a)) {
                           self->on_transfer_end(a, std::move(e));
                         }
                       });
  }

  void on_transfer_end(const AttemptPtr& a, DockDownloadEnd e) {
    if (e.status != 0 && e.status != 401 && e.status != 404) {
      queue_.note_found(a->key);
    }
    switch (e.kind) {
      case EndKind::kComplete:
        finish_file(a);
        return;
      case EndKind::kBroken:
        broken(a, e.why, e.got_bytes);
        return;
      case EndKind::kCorrupt:
        corrupt(a, e.why);
        return;
      case EndKind::kDiskTrouble:
        disk_trouble(a, e.disk);
        return;
      case EndKind::kUnauthorized:
        a->abort();
        end_download(a);
        queue_.requeue_front(a->key);
        auth_failed();
        return;
      case EndKind::kNotFound:
        not_found(a);
        return;
      case EndKind::kBadRange: {
        count_error("bad_content_range");
        const DockFileWork* w = work_of(a);
        log::warn(kComponent, config_.id,
                  (w != nullptr ? w->file.unique_id : a->key) + ": station answered Range with '" + e.why +
                      "': fetching the whole file again");
        restart_whole(a);
        return;
      }
      case EndKind::kHttpStatus:
        count_error("http_" + std::to_string(e.status));
        broken(a, e.why, e.got_bytes);
        return;
    }
  }

  // Listed but not offered: asked again with backoff, then closed by a fault record. It keeps its place
  // under the pending bound meanwhile, so such files cannot fill the ledger behind our back.
  void not_found(const AttemptPtr& a) {
    count_error("download_404");
    const int times = queue_.note_not_found(a->key);
    const DockFileWork* w = work_of(a);
    log::warn(kComponent, config_.id,
              (w != nullptr ? w->file.unique_id : a->key) +
                  ": station answers HTTP 404 for a file it listed (" + std::to_string(times) + " of " +
                  std::to_string(kMaxNotFound) + ")");
    a->abort();
    if (times < kMaxNotFound) {
      retry_later(a, false);
      return;
    }
    end_download(a);
    close_partial(a->key);
    asio::post(*ctx_.blocking, [p = a->partial] { p->remove(); });  // an empty file from open()
    emit_fault(a->key, "not_found",
               "station answered HTTP 404 to " + std::to_string(times) + " downloads of a file it listed", {},
               times);
    pump_downloads();
  }

  // A Range answer that does not fit: drop what is on disk and try again without Range.
  void restart_whole(const AttemptPtr& a) {
    a->abort();
    asio::post(*ctx_.blocking, [self = shared_from_this(), a] {
      Status s = a->partial->truncate_all();
      asio::post(self->strand_, [self, a, s = std::move(s)] {
        if (!self->running_ || a->gen != self->gen_) {
          return;
        }
        if (!s.is_ok()) {
          self->disk_trouble_after(a, s);
          return;
        }
        self->retry_later(a, false);
      });
    });
  }

  void finish_file(const AttemptPtr& a) {
    asio::post(*ctx_.blocking, [self = shared_from_this(), a] {
      FileDigest::Result digest;
      Status s = a->partial->finish(digest);
      asio::post(self->strand_, [self, a, s = std::move(s), digest = std::move(digest)] {
        if (!self->live(a)) {
          return;
        }
        self->on_file_finished(a, s, digest);
      });
    });
  }

  void on_file_finished(const AttemptPtr& a, const Status& s, const FileDigest::Result& digest) {
    const DockFileWork* w = work_of(a);
    if (w == nullptr) {
      end_download(a);
      return;
    }
    close_partial(a->key);  // closed: a later attempt reopens (and rehashes) what is on disk
    if (!s.is_ok()) {
      disk_trouble(a, s);
      return;
    }
    if (lower(digest.md5) != lower(w->file.md5)) {
      on_mismatch(a, "md5_mismatch", "expected md5 " + lower(w->file.md5) + ", got " + digest.md5,
                  digest.sha256);
      return;
    }
    asio::post(*ctx_.blocking, [self = shared_from_this(), a, sha = digest.sha256] {
      StoredFile stored;
      Status as = self->ctx_.media->adopt(a->partial->path(), sha, a->length, stored);
      asio::post(self->strand_, [self, a, sha, as = std::move(as)] {
        if (!self->live(a)) {
          return;
        }
        if (!as.is_ok()) {
          self->disk_trouble(a, as);
          return;
        }
        self->on_collected(a, sha);
      });
    });
  }

  // Bytes that cannot be the listed file (too many, wrong length): retried like an MD5 mismatch, reported
  // as size_mismatch.
  void corrupt(const AttemptPtr& a, const std::string& why) {
    a->abort();
    const DockFileWork* w = work_of(a);
    close_partial(a->key);
    log::warn(kComponent, config_.id, (w != nullptr ? w->file.unique_id : a->key) + ": " + why);
    on_mismatch(a, "size_mismatch", why, {});
  }

  // reason: md5_mismatch or size_mismatch (counted, and the fault's reason after the last attempt).
  void on_mismatch(const AttemptPtr& a, const std::string& reason, const std::string& why,
                   const std::string& sha256) {
    a->abort();
    // The station's copy is the one to fetch again: nothing of this download is kept. The next attempt
    // starts only once the file is gone (it would otherwise open the old one).
    asio::post(*ctx_.blocking, [self = shared_from_this(), a, reason, why, sha256] {
      a->partial->remove();
      asio::post(self->strand_, [self, a, reason, why, sha256] {
        if (self->running_ && a->gen == self->gen_) {
          self->after_mismatch(a, reason, why, sha256);
        }
      });
    });
  }

  void after_mismatch(const AttemptPtr& a, const std::string& reason, const std::string& why,
                      const std::string& sha256) {
    end_download(a);
    const DockFileWork* w = work_of(a);
    if (w == nullptr) {
      pump_downloads();
      return;
    }
    close_partial(a->key);
    const int failures = queue_.note_mismatch(a->key);
    if (reason == "md5_mismatch") {
      std::lock_guard lock(mutex_);
      ++snap_.md5_mismatches;
    }
    count_error(reason);
    const std::string detail = why + " (attempt " + std::to_string(failures) + " of " +
                               std::to_string(config_.max_md5_attempts) + ")";
    log::warn(kComponent, config_.id, w->file.unique_id + ": " + detail);
    if (failures >= config_.max_md5_attempts) {
      emit_fault(a->key, reason, detail, sha256, failures);
    } else {
      queue_.requeue_front(a->key);
    }
    pump_downloads();
  }

  void on_collected(const AttemptPtr& a, const std::string& sha256) {
    end_download(a);
    if (!queue_.contains(a->key)) {
      return;
    }
    queue_.collected(a->key, sha256);
    const DockFileWork& w = *queue_.find(a->key);
    RecordingCollected rc;
    rc.device_id = config_.id;
    rc.station_id = station_id_;
    rc.firmware = firmware_;
    rc.file = w.file;
    rc.sha256 = sha256;
    rc.media_path = ctx_.media->path_of(sha256);
    if (const auto est = clock_.estimate()) {
      rc.station_clock = StationClock{est->offset_ms, est->uncertainty_ms, est->measured_ms};
    }
    rc.listed_ms = w.listed_ms;
    rc.recorder_clock_tolerance_s = config_.recorder_clock_tolerance_s;
    rc.collected_ms = ctx_.clock.now_ms();
    rc.download_attempts = w.md5_failures + 1;
    rc.resumes = w.resumes;
    rc.on_committed = committed_callback(a->key);
    {
      std::lock_guard lock(mutex_);
      ++snap_.collected;
      snap_.bytes_collected += static_cast<std::uint64_t>(w.file.length);
    }
    log::info(kComponent, config_.id,
              "collected " + w.file.unique_id + " (" + std::to_string(w.file.length) + " bytes, sha256 " +
                  sha256 + ")");
    ctx_.sink.emit(std::move(rc));
    pump_downloads();
  }

  // A broken transfer: what arrived stays in the partial file; the next attempt resumes with Range.
  void broken(const AttemptPtr& a, const std::string& why, bool got_bytes) {
    a->abort();
    count_error("download_broken");
    const DockFileWork* w = work_of(a);
    log::warn(kComponent, config_.id,
              (w != nullptr ? w->file.unique_id : a->key) + ": " + why + " after " +
                  std::to_string(a->partial ? a->partial->bytes() : 0) + " bytes; resuming");
    retry_later(a, got_bytes);
  }

  void disk_trouble(const AttemptPtr& a, const Status& s) {
    a->abort();
    disk_trouble_after(a, s);
  }

  // Disk full or failing: the partial stays, nothing is acked, the file is tried again later.
  void disk_trouble_after(const AttemptPtr& a, const Status& s) {
    count_error("disk");
    const DockFileWork* w = work_of(a);
    close_partial(a->key);  // reopened from disk next time, so the digest matches what is really there
    log::error(kComponent, config_.id,
               (w != nullptr ? w->file.unique_id : a->key) + ": cannot store the download: " + s.message());
    warn("cannot store downloads: " + s.message());
    retry_later(a, false);
  }

  void retry_later(const AttemptPtr& a, bool made_progress) {
    end_download(a);
    if (!queue_.contains(a->key) || !running_) {
      return;
    }
    const int breaks = queue_.wait_for_retry(a->key, made_progress);
    const std::int64_t delay =
        reconnect_backoff_ms(breaks, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_);
    auto& timer = file_io_[a->key].retry_timer;
    if (!timer) {
      timer = std::make_shared<asio::steady_timer>(strand_);
    }
    timer->expires_after(std::chrono::milliseconds(delay));
    const std::uint64_t gen = gen_;
    timer->async_wait([self = shared_from_this(), key = a->key, gen](const error_code& ec) {
      if (ec || gen != self->gen_ || !self->running_) {
        return;
      }
      if (self->queue_.retry_due(key)) {
        self->pump_downloads();
      }
    });
    pump_downloads();
  }

  void end_download(const AttemptPtr& a) {
    a->abort();
    std::erase(attempts_, a);
  }

  // The file is done with: its fault record is committed, or its ack marked in the ledger.
  void drop_file(const std::string& key) {
    if (auto it = file_io_.find(key); it != file_io_.end()) {
      if (it->second.retry_timer) {
        it->second.retry_timer->cancel();
      }
      file_io_.erase(it);
    }
    queue_.remove(key);
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
    switch (queue_.committed(key)) {
      case DownloadQueue::Committed::kIgnored:
        return;
      case DownloadQueue::Committed::kClosed:
        // A fault record: its commit marked the file kFaulted; the station keeps its copy.
        log::info(kComponent, config_.id,
                  queue_.find(key)->file.unique_id + ": fault recorded as " + record_id);
        drop_file(key);
        return;
      case DownloadQueue::Committed::kToAcknowledge:
        pump_acks();
        return;
    }
  }

  void pump_acks() {
    if (!running_ || auth_blocked() || queue_.acking() || ack_waiting_) {
      return;
    }
    if (const auto key = queue_.start_next_ack()) {
      const DockFileWork& w = *queue_.find(*key);
      exchange(http::verb::post, dock_ack_target(config_.base_path, w.file.unique_id),
               dock_ack_body(w.sha256),
               [self = shared_from_this(), key = *key](HttpResult r) { self->on_ack(key, std::move(r)); });
    }
  }

  void on_ack(const std::string& key, HttpResult r) {
    const DockFileWork* w = queue_.find(key);
    if (w == nullptr) {
      pump_acks();
      return;
    }
    if (r.ec || (r.status != 200 && r.status != 404 && r.status != 409)) {
      ack_failed(key, *w, r);
      return;
    }
    queue_.ack_succeeded();
    if (r.status == 409) {
      ack_conflict(key, *w, r);
      pump_acks();
      return;
    }
    if (r.status == 404) {
      count_error("ack_unknown");
      // Per file: logged and counted, not a device status (one record per file would follow).
      log::warn(kComponent, config_.id,
                w->file.unique_id + ": station no longer has it (HTTP 404 on ack): taken as acknowledged");
    } else {
      std::lock_guard lock(mutex_);
      ++snap_.acks;
    }
    queue_.acknowledged(key);
    mark_acked(key, w->file.unique_id, w->file.md5);
    pump_acks();
  }

  // The ack did not go through: the file stays kRecorded in the ledger (after a restart it is acked too)
  // and is asked again after a backoff, or after the auth backoff on 401.
  void ack_failed(const std::string& key, const DockFileWork& w, const HttpResult& r) {
    queue_.ack_again(key);
    if (!r.ec && r.status == 401) {
      auth_failed();
      return;
    }
    count_error(r.ec ? "ack_request" : "ack_http_" + std::to_string(r.status));
    log::warn(kComponent, config_.id,
              w.file.unique_id + ": ack failed (" + (r.ec ? r.what : "HTTP " + std::to_string(r.status)) +
                  "); trying again");
    ack_waiting_ = true;
    ack_timer_.expires_after(std::chrono::milliseconds(reconnect_backoff_ms(
        queue_.ack_failed(), config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_)));
    ack_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      self->ack_waiting_ = false;
      if (!ec && self->running_) {
        self->pump_acks();
      }
    });
  }

  // The station's copy differs from what was stored: a fault record, and the station keeps the file.
  void ack_conflict(const std::string& key, const DockFileWork& w, const HttpResult& r) {
    {
      std::lock_guard lock(mutex_);
      ++snap_.ack_conflicts;
    }
    const std::string text = dock_error_text(r.body);
    const std::string detail = "station refused the ack of sha256 " + w.sha256 + " (HTTP 409" +
                               (text.empty() ? "" : ": " + text) + ")";
    log::error(kComponent, config_.id, w.file.unique_id + ": " + detail);
    const std::string sha = w.sha256;
    emit_fault(key, "ack_conflict", detail, sha, w.md5_failures + 1);  // its commit ends the file: no ack
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
    const DockFileWork* w = queue_.find(key);
    if (w == nullptr) {
      return;
    }
    queue_.closing(key);
    DockFileFault f;
    f.device_id = config_.id;
    f.station_id = station_id_;
    f.file = w->file;
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
    ctx_.sink.emit(std::move(f));
  }

  void emit_fault_for_unreadable(DockFile file, const std::string& detail) {
    const std::string key = dock_file_key(file.unique_id, file.md5);
    queue_.add_closing(key, std::move(file), 0);
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

  // The queue's counters go to the status snapshot after every change; leaving the pending bound is
  // logged once per episode (hold_listings).
  void on_queue_changed(const DownloadQueueCounters& c, bool room_regained) {
    if (room_regained) {
      log::info(kComponent, config_.id,
                "pending files down to " + std::to_string(c.pending) + ": listing new files again");
    }
    std::lock_guard lock(mutex_);
    snap_.queue = c;
  }

  const RecorderDockConfig config_;
  AdapterContext& ctx_;
  Strand strand_;
  std::string host_header_;

  asio::steady_timer poll_timer_;  // polls, backoff after failures, auth backoff, ledger load retries
  asio::steady_timer ack_timer_;
  asio::steady_timer pump_timer_;  // re-checks congestion
  HttpExchanges exchanges_;        // short requests: status, listing, ack
  std::vector<AttemptPtr> attempts_;

  DownloadQueue queue_;                    // every file this run works on, by (uniqueId, md5)
  std::map<std::string, FileIo> file_io_;  // their partial files and retry timers, by the same key
  std::string cursor_;

  OffsetClockEstimator clock_;
  std::string station_id_;
  std::string firmware_;

  std::minstd_rand rng_;
  bool running_ = false;
  std::uint64_t gen_ = 0;  // +1 on start and stop: callbacks of an earlier run are ignored
  bool polling_ = false;
  bool ack_waiting_ = false;  // the ack retry timer is armed
  bool pump_armed_ = false;   // the congestion re-check timer is armed
  int attempt_ = 0;
  LinkState link_ = LinkState::kUnknown;
  bool warning_active_ = false;  // a "warning" status went out and no clean listing followed yet
  std::string last_warning_;

  mutable std::mutex mutex_;  // guards snap_ only; everything else lives on the strand
  Snapshot snap_;
};

}  // namespace

std::unique_ptr<Adapter> make_recorder_adapter(const RecorderDockConfig& config, AdapterContext& ctx) {
  return std::make_unique<AdapterHandle<RecorderAdapterImpl>>(config, ctx);
}

}  // namespace cpd::adapters
