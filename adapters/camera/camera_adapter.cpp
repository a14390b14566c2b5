// The ANPR camera adapter: a Boost.Beast HTTP/1.1 client on the adapter's own strand around the pure
// parts (MultipartParser, ISAPI XML, Digest auth). One long-lived connection carries the alert stream;
// deviceInfo and time use short-lived ones. Pictures are stored on the blocking pool, never the io thread.
#include "adapters/camera/camera_adapter.h"

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "adapters/adapter_handle.h"
#include "adapters/camera/http_auth.h"
#include "adapters/camera/isapi_xml.h"
#include "adapters/camera/multipart_parser.h"
#include "adapters/common/http_exchange.h"
#include "adapters/common/offset_clock.h"
#include "adapters/reconnect_backoff.h"
#include "daemon/core/encoding.h"
#include "daemon/log/log.h"

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kComponent = "camera";
constexpr std::string_view kDeviceInfoPath = "/ISAPI/System/deviceInfo";
constexpr std::string_view kTimePath = "/ISAPI/System/time";
constexpr std::string_view kStreamPath = "/ISAPI/Event/notification/alertStream";
constexpr auto kRequestTimeout = std::chrono::seconds(10);
constexpr std::uint64_t kControlBodyLimit = 1024 * 1024;
constexpr std::size_t kSeenEvents = 4096;  // (UUID, dateTime) pairs remembered for duplicate detection
constexpr int kMaxAuthAttempts = 3;        // per request: unauthenticated, fresh answer, one stale renewal
// Clock offset: a burst of time polls at (re)connect and after the estimate restarts, each timed so the
// camera's next whole second falls in the middle of what is known (camera_clock.h), until the offset is
// known to kClockTargetMs or kBurstPolls polls were made; then every time_poll_s, still so timed.
constexpr int kBurstPolls = 7;
constexpr std::int64_t kBurstGapMs = 150;  // at least this between burst polls
constexpr std::int64_t kClockTargetMs = 20;
// Plate reads wait (at most this long) for a burst still narrowing the offset, so the first reads after
// a (re)connect already carry a precise one.
constexpr auto kClockHoldMax = std::chrono::seconds(6);

struct AuthSent {
  std::string header;  // empty: no Authorization sent
  bool fresh = false;  // the answer was the first one computed from a just-received challenge
};

enum class AuthDecision { kRetry, kFailed };

std::string_view sv(boost::beast::string_view s) {
  return std::string_view(s.data(), s.size());
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) {
    return false;
  }
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) {
      return false;
    }
  }
  return true;
}

class CameraAdapterImpl : public std::enable_shared_from_this<CameraAdapterImpl> {
 public:
  CameraAdapterImpl(const CameraConfig& config, AdapterContext& ctx)
      : config_(config),
        ctx_(ctx),
        strand_(asio::make_strand(ctx.io)),
        stream_resolver_(strand_),
        idle_timer_(strand_),
        reconnect_timer_(strand_),
        time_timer_(strand_),
        picture_timer_(strand_),
        backpressure_timer_(strand_),
        clock_hold_timer_(strand_),
        exchanges_(strand_, [&clock = ctx.clock] { return clock.now_ms(); }),
        digest_(config.username, config.password),
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
      self->running_ = true;
      self->start_cycle();
    });
  }

  void stop() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      if (!self->running_) {
        return;
      }
      self->running_ = false;
      self->burst_left_ = 0;  // nothing waits for the clock any more
      self->close_stream();
      self->reconnect_timer_.cancel();
      self->time_timer_.cancel();
      self->picture_timer_.cancel();
      self->backpressure_timer_.cancel();
      self->clock_hold_timer_.cancel();
      self->exchanges_.abort_all();
      // Plate reads already received go out with what is stored; pictures still being written count as
      // missing (their files may land, but no record will wait for them).
      for (auto& p : self->pending_) {
        p.window_closed = true;
        for (auto& slot : p.slots) {
          if (slot.state != SlotState::kStored) {
            slot.state = SlotState::kMissing;
          }
        }
      }
      self->try_emit();
      self->set_state("stopped");
    });
  }

  nlohmann::json status() const {
    std::lock_guard lock(mutex_);
    nlohmann::json errors = nlohmann::json::object();
    for (const auto& [k, v] : snap_.errors) {
      errors[k] = v;
    }
    nlohmann::json device = nullptr;
    if (snap_.device) {
      device = {{"deviceName", snap_.device->device_name},
                {"deviceID", snap_.device->device_id},
                {"model", snap_.device->model},
                {"serialNumber", snap_.device->serial_number},
                {"firmwareVersion", snap_.device->firmware_version}};
    }
    nlohmann::json offset = nullptr;
    nlohmann::json uncertainty = nullptr;
    nlohmann::json rtt = nullptr;
    if (snap_.clock_offset_ms) {
      offset = *snap_.clock_offset_ms;
      uncertainty = snap_.clock_uncertainty_ms;
      rtt = snap_.clock_rtt_ms;
    }
    return {
        {"kind", "camera"},
        {"id", config_.id},
        {"state", snap_.state},
        {"url", config_.url},
        {"radar", config_.radar},
        {"device", device},
        {"events", snap_.events},
        {"heartbeats", snap_.heartbeats},
        {"other_events", snap_.other_events},
        {"duplicates", snap_.duplicates},
        {"pictures", snap_.pictures},
        {"missing_pictures", snap_.missing_pictures},
        {"parts", snap_.parts},
        {"errors", errors},
        {"clock_offset_ms", offset},
        {"clock_offset_uncertainty_ms", uncertainty},
        {"clock_offset_rtt_ms", rtt},
        {"clock_offset_measured_ms", snap_.clock_offset_measured_ms},
        {"clock_offset_samples", snap_.clock_samples},
        {"clock_offset_restarts", snap_.clock_restarts},
        {"time_mode", snap_.time_mode},
        {"last_event_ms", snap_.last_event_ms},
        {"last_heartbeat_ms", snap_.last_heartbeat_ms},
        {"reconnects", snap_.reconnects},
        {"last_error", snap_.last_error},
    };
  }

 private:
  enum class SlotState { kWaiting, kStoring, kStored, kMissing };
  struct Slot {
    IsapiPictureInfo info;
    SlotState state = SlotState::kWaiting;
    MediaRef ref;
  };
  struct PendingAlert {
    std::uint64_t seq = 0;
    PlateRead read;
    int utc_offset_min = 0;
    std::vector<Slot> slots;
    std::size_t next = 0;        // the first announced picture not yet matched
    bool window_closed = false;  // no more pictures will be matched to this alert
    Clock::time_point deadline;
    std::uint64_t clock_epoch = 0;       // of the clock estimate at the alert; 0: none yet
    Clock::time_point clock_hold_until;  // emission may wait for a burst until then
  };
  struct Snapshot {
    std::string state = "stopped";
    std::optional<IsapiDeviceInfo> device;
    DeviceIdentity identity;  // from `device`, bounded for records (identity_of)
    std::uint64_t events = 0;
    std::uint64_t heartbeats = 0;
    std::uint64_t other_events = 0;
    std::uint64_t duplicates = 0;
    std::uint64_t pictures = 0;
    std::uint64_t missing_pictures = 0;
    std::uint64_t parts = 0;
    std::map<std::string, std::uint64_t> errors;
    std::optional<std::int64_t> clock_offset_ms;
    std::int64_t clock_uncertainty_ms = 0;
    std::int64_t clock_rtt_ms = 0;
    UnixMs clock_offset_measured_ms = 0;
    std::uint64_t clock_samples = 0;
    std::uint64_t clock_restarts = 0;
    std::string time_mode;
    UnixMs last_event_ms = 0;
    UnixMs last_heartbeat_ms = 0;
    std::uint64_t reconnects = 0;
    std::string last_error;
  };

  // ---- HTTP plumbing ----

  template <class Body = http::empty_body>
  http::request<Body> make_request(std::string_view target, const AuthSent& auth) const {
    http::request<Body> req{http::verb::get, std::string(target), 11};
    req.set(http::field::host, host_header_);
    req.set(http::field::user_agent, "checkpointd/" CPD_VERSION);
    if (!auth.header.empty()) {
      req.set(http::field::authorization, auth.header);
    }
    return req;
  }

  AuthSent prepare_auth(std::string_view target) {
    AuthSent a;
    if (config_.auth == "basic") {
      a.header = basic_authorization(config_.username, config_.password);
      a.fresh = true;
    } else if (digest_.has_challenge()) {
      a.header = digest_.authorization("GET", target);
      a.fresh = digest_.nonce_count() == 1;
    }
    return a;
  }

  // A 401: take the challenge and try again, unless this was already a fresh answer (wrong credentials:
  // retrying would walk into the camera's 5-strikes lock).
  AuthDecision on_unauthorized(const AuthSent& sent, const std::vector<std::string>& challenges,
                               int attempt) {
    if (attempt + 1 >= kMaxAuthAttempts) {
      return AuthDecision::kFailed;
    }
    if (config_.auth == "basic") {
      return AuthDecision::kFailed;
    }
    if (!digest_.take_challenge(challenges)) {
      count_error("bad_challenge");
      return AuthDecision::kFailed;
    }
    if (digest_.challenge()->stale || sent.header.empty() || !sent.fresh) {
      return AuthDecision::kRetry;
    }
    return AuthDecision::kFailed;
  }

  void exchange(std::string_view target, const AuthSent& auth, std::function<void(HttpResult)> done) {
    exchanges_.start(config_.host, config_.port, make_request<http::string_body>(target, auth),
                     kControlBodyLimit,
                     std::chrono::duration_cast<std::chrono::milliseconds>(kRequestTimeout),
                     [self = shared_from_this(), done = std::move(done)](HttpResult r) {
                       if (self->running_) {
                         done(std::move(r));
                       }
                     });
  }

  // GET with authentication; done() sees transport failures and non-auth answers. A final 401/403 is
  // handled here (fault, backoff) and done() is not called: the cycle that asked stops there.
  void authed_get(std::string target, std::function<void(HttpResult)> done, int attempt = 0) {
    const AuthSent sent = prepare_auth(target);
    exchange(
        target, sent,
        [self = shared_from_this(), target, sent, attempt, done = std::move(done)](HttpResult r) mutable {
          if (!r.ec && r.status == 403) {
            self->auth_failed("user locked", 403);
            return;
          }
          if (!r.ec && r.status == 401) {
            if (self->auth_blocked_) {
              return;
            }
            if (self->on_unauthorized(sent, r.www_authenticate, attempt) == AuthDecision::kRetry) {
              self->authed_get(std::move(target), std::move(done), attempt + 1);
            } else {
              self->auth_failed("authentication failed", 401);
            }
            return;
          }
          done(std::move(r));
        });
  }

  // ---- the connection cycle: deviceInfo, time, then the stream ----

  void start_cycle() {
    if (!running_ || auth_blocked_) {
      return;
    }
    set_state("connecting");
    // A new connection may be to a rebooted camera: measure its clock closely again.
    burst_left_ = kBurstPolls;
    authed_get(std::string(kDeviceInfoPath), [self = shared_from_this()](HttpResult r) {
      if (r.ec) {
        self->link_failed(r.what);
        return;
      }
      if (r.status == 200) {
        if (auto info = parse_device_info(r.body)) {
          if (info->text_not_utf8) {
            self->text_not_utf8("deviceInfo");
          }
          std::lock_guard lock(self->mutex_);
          self->snap_.identity = identity_of(*info);  // what each record says the camera is
          self->snap_.device = std::move(*info);
        } else {
          self->count_error("bad_device_info");
        }
      } else {
        self->count_error("http_" + std::to_string(r.status));
      }
      self->poll_time([self] { self->open_stream(); });
    });
  }

  void poll_time(std::function<void()> then) {
    authed_get(std::string(kTimePath), [self = shared_from_this(), then = std::move(then)](HttpResult r) {
      bool measured = false;
      if (r.ec) {
        self->count_error("time_request");
      } else if (r.status != 200) {
        self->count_error("http_" + std::to_string(r.status));
      } else if (auto t = parse_time(r.body)) {
        measured = self->on_camera_time(*t, r);
      } else {
        self->count_error("bad_time");
      }
      if (self->burst_left_ > 0) {
        --self->burst_left_;
        // A failing camera is not polled in a burst; a precise enough offset needs no more polls.
        if (!measured || self->clock_precise()) {
          self->burst_left_ = 0;
        }
        if (self->burst_left_ == 0) {
          self->try_emit();  // plate reads waiting for the burst
        }
      }
      self->schedule_time_poll();
      if (then) {
        then();
      }
    });
  }

  // One more interval for the offset estimate (camera clock minus gateway clock); false if unusable.
  bool on_camera_time(const IsapiTime& t, const HttpResult& r) {
    if (t.text_not_utf8) {
      text_not_utf8("System/time");
    }
    const std::int64_t resolution = t.time.has_fraction ? 1 : 1000;
    const auto outcome = clock_.add(t.time.unix_ms, resolution, r.sent_ms, r.received_ms);
    if (outcome == OffsetClockEstimator::Outcome::kRejected) {
      count_error("bad_time");
      return false;
    }
    // The camera reads its clock about half a round trip after the request is sent, and sending
    // begins with a connect: the lead the next poll is started ahead of the instant it aims at.
    const std::int64_t lead = r.sent_ms - r.started_ms + (r.received_ms - r.sent_ms) / 2;
    probe_lead_ms_ = std::clamp<std::int64_t>(lead, 0, 1000);
    if (outcome == OffsetClockEstimator::Outcome::kRestarted) {
      log::warn(kComponent, config_.id,
                "camera clock no longer agrees with earlier measurements (set, or drifting faster than "
                "allowed): offset estimate restarted");
      burst_left_ = kBurstPolls;  // this poll counts as the first of the burst
    }
    const auto e = clock_.estimate();
    std::lock_guard lock(mutex_);
    snap_.clock_offset_ms = e->offset_ms;
    snap_.clock_uncertainty_ms = e->uncertainty_ms;
    snap_.clock_samples = e->samples;
    snap_.clock_rtt_ms = r.received_ms - r.sent_ms;
    snap_.clock_offset_measured_ms = e->measured_ms;
    snap_.time_mode = t.time_mode;
    if (outcome == OffsetClockEstimator::Outcome::kRestarted) {
      ++snap_.clock_restarts;
    }
    return true;
  }

  bool clock_precise() const {
    const auto e = clock_.estimate();
    return e && e->uncertainty_ms <= kClockTargetMs;
  }

  void schedule_time_poll() {
    // Timed so the camera reads its clock when its next whole second splits the offset interval.
    const UnixMs now = ctx_.clock.now_ms();
    const std::int64_t gap = burst_left_ > 0 ? kBurstGapMs : std::int64_t{config_.time_poll_s} * 1000;
    const UnixMs at = clock_.next_probe_ms(now + gap + probe_lead_ms_) - probe_lead_ms_;
    // expires_after cancels a wait already pending, so there is only ever one polling chain.
    time_timer_.expires_after(std::chrono::milliseconds(std::max<std::int64_t>(at - now, 0)));
    time_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || !self->running_) {
        return;
      }
      if (self->auth_blocked_) {
        self->burst_left_ = 0;
        self->schedule_time_poll();
        return;
      }
      self->poll_time({});
    });
  }

  // ---- the alert stream ----

  void open_stream(int attempt = 0) {
    if (!running_ || auth_blocked_) {
      return;
    }
    close_stream();
    const std::uint64_t gen = stream_gen_;
    stream_ = std::make_shared<StreamConnection>(strand_);
    arm_idle(gen);
    auto self = shared_from_this();
    stream_resolver_.async_resolve(
        config_.host, std::to_string(config_.port),
        [self, gen, attempt, conn = stream_](const error_code& ec,
                                             const tcp::resolver::results_type& results) {
          if (gen != self->stream_gen_ || !self->running_) {
            return;
          }
          if (ec) {
            self->link_failed("resolve failed: " + ec.message());
            return;
          }
          asio::async_connect(conn->socket, results,
                              [self, gen, attempt, conn](const error_code& e, const tcp::endpoint&) {
                                if (gen != self->stream_gen_ || !self->running_) {
                                  return;
                                }
                                if (e) {
                                  self->link_failed("connect failed: " + e.message());
                                  return;
                                }
                                self->send_stream_request(gen, attempt);
                              });
        });
  }

  void send_stream_request(std::uint64_t gen, int attempt) {
    const AuthSent sent = prepare_auth(kStreamPath);
    auto conn = stream_;
    conn->req = make_request(kStreamPath, sent);
    http::async_write(
        conn->socket, conn->req,
        [self = shared_from_this(), conn, gen, attempt, sent](const error_code& ec, std::size_t) {
          if (gen != self->stream_gen_ || !self->running_) {
            return;
          }
          if (ec) {
            self->link_failed("write failed: " + ec.message());
            return;
          }
          conn->parser.emplace();
          conn->parser->body_limit(std::numeric_limits<std::uint64_t>::max());
          http::async_read_header(conn->socket, conn->buffer, *conn->parser,
                                  [self, conn, gen, attempt, sent](const error_code& e, std::size_t) {
                                    self->on_stream_header(e, gen, attempt, sent);
                                  });
        });
  }

  void on_stream_header(const error_code& ec, std::uint64_t gen, int attempt, const AuthSent& sent) {
    if (gen != stream_gen_ || !running_) {
      return;
    }
    if (ec) {
      link_failed("read failed: " + ec.message());
      return;
    }
    arm_idle(gen);
    const auto& res = stream_->parser->get();
    const unsigned status = res.result_int();
    if (status == 403) {
      auth_failed("user locked", 403);
      return;
    }
    if (status == 401) {
      const auto challenges = www_authenticate_of(res.base());
      close_stream();
      if (on_unauthorized(sent, challenges, attempt) == AuthDecision::kRetry) {
        open_stream(attempt + 1);
      } else {
        auth_failed("authentication failed", 401);
      }
      return;
    }
    if (status != 200) {
      count_error("http_" + std::to_string(status));
      link_failed("alert stream answered HTTP " + std::to_string(status));
      return;
    }
    const auto boundary = multipart_boundary(sv(res[http::field::content_type]));
    if (!boundary) {
      count_error("bad_content_type");
      // The camera's header goes into the status and a device_status record: UTF-8 only.
      std::string type(sv(res[http::field::content_type]));
      if (!is_valid_utf8(type)) {
        text_not_utf8("alert stream Content-Type");
        type = escape_invalid_utf8(type);
      }
      link_failed("alert stream is not multipart: '" + type + "'");
      return;
    }
    multipart_.emplace(*boundary);
    stream_up_ = true;
    set_state("connected");
    if (reported_ != Reported::kUp) {
      emit_link("connected", "alert stream open at " + config_.url);
    }
    read_stream_body(gen);
  }

  void read_stream_body(std::uint64_t gen) {
    auto conn = stream_;
    auto& body = conn->parser->get().body();
    body.data = conn->chunk.data();
    body.size = conn->chunk.size();
    http::async_read_some(conn->socket, conn->buffer, *conn->parser,
                          [self = shared_from_this(), conn, gen](error_code ec, std::size_t) {
                            self->on_stream_body(ec, gen);
                          });
  }

  void on_stream_body(error_code ec, std::uint64_t gen) {
    if (gen != stream_gen_ || !running_) {
      return;
    }
    const std::size_t n = stream_->chunk.size() - stream_->parser->get().body().size;
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (n > 0) {
      arm_idle(gen);
      good_connection_ = true;
      parts_.clear();
      multipart_->feed(std::string_view(stream_->chunk.data(), n), parts_);
      for (auto& part : parts_) {
        handle_part(part);
      }
      parts_.clear();
      sync_counters();
      if (gen != stream_gen_ || !running_) {
        return;  // a part ended this connection (or the adapter)
      }
    }
    if (ec) {
      link_failed(ec == http::error::end_of_stream || ec == asio::error::eof
                      ? std::string("alert stream closed by the camera")
                      : "read failed: " + ec.message());
      return;
    }
    if (stream_->parser->is_done()) {
      link_failed("alert stream ended");
      return;
    }
    read_when_ready(gen);
  }

  // While the core is behind, stop reading: TCP pushes back on the camera instead of memory filling up.
  void read_when_ready(std::uint64_t gen) {
    if (!ctx_.sink.congested()) {
      read_stream_body(gen);
      return;
    }
    backpressure_timer_.expires_after(std::chrono::milliseconds(10));
    backpressure_timer_.async_wait([self = shared_from_this(), gen](const error_code& ec) {
      if (!ec && self->running_ && gen == self->stream_gen_) {
        self->read_when_ready(gen);
      }
    });
  }

  void arm_idle(std::uint64_t gen) {
    idle_timer_.expires_after(std::chrono::seconds(config_.stream_idle_timeout_s));
    idle_timer_.async_wait([self = shared_from_this(), gen](const error_code& ec) {
      if (ec || !self->running_ || gen != self->stream_gen_) {
        return;
      }
      self->count_error("stream_idle");
      self->link_failed("alert stream silent for " + std::to_string(self->config_.stream_idle_timeout_s) +
                        " s");
    });
  }

  // Ends the current stream connection; handlers of the old one see a stale generation and return.
  void close_stream() {
    ++stream_gen_;
    error_code ignored;
    stream_resolver_.cancel();
    if (stream_) {
      stream_->socket.close(ignored);
      stream_.reset();  // operations still in flight hold their own reference until their handlers run
    }
    idle_timer_.cancel();
    if (multipart_) {
      multipart_->reset();  // a part cut by the close counts as truncated
      add_multipart_totals(multipart_->counters());
      multipart_.reset();
    }
    // Pictures of the last alert cannot arrive on a new connection.
    if (!pending_.empty() && !pending_.back().window_closed) {
      close_window(pending_.back());
      try_emit();
    }
    stream_up_ = false;
  }

  // ---- failures ----

  void link_failed(const std::string& reason) {
    close_stream();
    if (good_connection_) {
      attempt_ = 0;  // a connection that carried data resets the backoff
      good_connection_ = false;
    }
    {
      std::lock_guard lock(mutex_);
      snap_.last_error = reason;
    }
    log::warn(kComponent, config_.id, reason);
    set_state("disconnected");
    if (reported_ != Reported::kDown) {
      emit_link("disconnected", reason);
    }
    schedule_reconnect();
  }

  void auth_failed(const std::string& text, int code) {
    if (auth_blocked_ || !running_) {
      return;
    }
    auth_blocked_ = true;
    close_stream();
    exchanges_.abort_all();
    // Start unauthenticated next time: the first 401 then is a challenge, not a failed attempt.
    digest_.forget();
    count_error(code == 403 ? "user_locked" : "auth_failed");
    {
      std::lock_guard lock(mutex_);
      snap_.last_error = text;
    }
    log::error(kComponent, config_.id,
               text + " (HTTP " + std::to_string(code) + "); next try in " +
                   std::to_string(config_.auth_backoff_s) + " s");
    // The snapshot is brought up to date before the event goes out, so a consumer never sees it older.
    set_state(code == 403 ? "locked" : "auth_failed");
    reported_ = Reported::kFault;
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = "camera";
    ev.state = "fault";
    ev.code = code;
    ev.text = text;
    ev.time_ms = ctx_.clock.now_ms();
    ctx_.sink.emit(std::move(ev));
    reconnect_timer_.expires_after(std::chrono::seconds(config_.auth_backoff_s));
    reconnect_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || !self->running_) {
        return;
      }
      self->auth_blocked_ = false;
      self->start_cycle();
    });
  }

  void schedule_reconnect() {
    if (!running_ || auth_blocked_) {
      return;
    }
    const auto delay = backoff_ms();
    ++attempt_;
    {
      std::lock_guard lock(mutex_);
      ++snap_.reconnects;
    }
    reconnect_timer_.expires_after(std::chrono::milliseconds(delay));
    reconnect_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec) {
        self->start_cycle();
      }
    });
  }

  std::int64_t backoff_ms() {
    return reconnect_backoff_ms(attempt_, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_);
  }

  // ---- parts ----

  void handle_part(MultipartPart& part) {
    if (starts_with_ci(part.content_type, "image/")) {
      handle_picture(part);
    } else if (starts_with_ci(part.content_type, "application/xml") ||
               starts_with_ci(part.content_type, "text/xml") ||
               (part.content_type.empty() && part.file_name.empty())) {
      handle_alert(part.body);
    } else {
      count_error("unknown_part");
    }
  }

  void handle_alert(std::string& xml) {
    auto parsed = parse_alert(xml);
    if (!parsed.alert) {
      count_error(parsed.error);
      return;
    }
    auto& a = *parsed.alert;
    if (a.text_not_utf8) {
      // Kept exact in the plate read: the record escapes it and carries the bytes (docs/records.md).
      text_not_utf8("alert XML");
    }
    const UnixMs now = ctx_.clock.now_ms();
    if (a.kind == IsapiAlert::Kind::kHeartbeat) {
      std::lock_guard lock(mutex_);
      ++snap_.heartbeats;
      snap_.last_heartbeat_ms = now;
      return;
    }
    if (a.kind == IsapiAlert::Kind::kOther) {
      std::lock_guard lock(mutex_);
      ++snap_.other_events;
      return;
    }
    // Pictures follow their alert directly: a new alert ends the previous one's pictures.
    if (!pending_.empty() && !pending_.back().window_closed) {
      close_window(pending_.back());
    }
    discard_files_.clear();
    if (repeated(a)) {
      return;
    }
    {
      std::lock_guard lock(mutex_);
      ++snap_.events;
      snap_.last_event_ms = now;
    }
    pending_.push_back(pending_alert(a, std::move(xml)));
    if (!pending_.back().window_closed) {
      arm_picture_timer();
    }
    try_emit();
  }

  // An alert seen before (same uuid and time: the camera sent it again) is counted and its pictures are
  // dropped as they come. The last kSeenEvents alerts are remembered.
  bool repeated(const IsapiAlert& a) {
    std::string key = a.uuid + "|" + a.date_time;
    if (seen_.contains(key)) {
      discard_files_.reserve(a.pictures.size());
      for (const auto& p : a.pictures) {
        discard_files_.push_back(p.file_name);
      }
      std::lock_guard lock(mutex_);
      ++snap_.duplicates;
      try_emit();
      return true;
    }
    seen_.insert(key);
    seen_order_.push_back(std::move(key));
    if (seen_order_.size() > kSeenEvents) {
      seen_.erase(seen_order_.front());
      seen_order_.pop_front();
    }
    return false;
  }

  // The plate read an alert brings, on the gateway clock, waiting for its pictures.
  PendingAlert pending_alert(IsapiAlert& a, std::string xml) {
    PendingAlert p;
    p.seq = ++alert_seq_;
    p.utc_offset_min = a.time.utc_offset_min;
    PlateRead& r = p.read;
    r.device_id = config_.id;
    r.radar_id = config_.radar;
    r.uuid = a.uuid;
    r.camera_time = a.date_time;
    r.camera_time_ms = a.time.unix_ms;
    if (const auto e = clock_.estimate()) {
      r.clock_offset_ms = e->offset_ms;
      r.clock_offset_uncertainty_ms = e->uncertainty_ms;
      r.clock_offset_measured_ms = e->measured_ms;
      p.clock_epoch = e->epoch;
    }
    r.time_ms = a.time.unix_ms - r.clock_offset_ms.value_or(0);
    p.clock_hold_until = Clock::now() + kClockHoldMax;
    r.lane = a.lane;
    r.direction = a.direction;
    r.plate = a.plate;
    r.plate_color = a.plate_color;
    r.plate_type = a.plate_type;
    r.vehicle_type = a.vehicle_type;
    r.country = a.country;
    r.confidence = a.confidence;
    r.active_post_count = a.active_post_count;
    r.raw_xml = std::move(xml);
    for (auto& info : a.pictures) {
      p.slots.push_back(Slot{std::move(info), SlotState::kWaiting, {}});
    }
    p.window_closed = p.slots.empty();
    p.deadline = Clock::now() + std::chrono::milliseconds(config_.picture_wait_ms);
    return p;
  }

  void handle_picture(MultipartPart& part) {
    if (pending_.empty() || pending_.back().window_closed) {
      const auto dup = std::find(discard_files_.begin(), discard_files_.end(), part.file_name);
      if (dup != discard_files_.end()) {
        discard_files_.erase(dup);  // a picture of a duplicate event: already dropped with it
      } else {
        count_error("unexpected_picture");
      }
      return;
    }
    PendingAlert& p = pending_.back();
    std::size_t idx = p.next;
    if (!part.file_name.empty()) {
      while (idx < p.slots.size() && p.slots[idx].info.file_name != part.file_name) {
        ++idx;
      }
    }
    if (idx >= p.slots.size()) {
      count_error("unexpected_picture");
      return;
    }
    // Announced pictures are sent in order: the ones skipped over were dropped by the camera.
    for (std::size_t k = p.next; k < idx; ++k) {
      p.slots[k].state = SlotState::kMissing;
    }
    p.next = idx + 1;
    if (p.next == p.slots.size()) {
      p.window_closed = true;
    }
    Slot& slot = p.slots[idx];
    if (!is_valid_utf8(part.content_type)) {
      text_not_utf8("picture Content-Type");
    }
    slot.state = SlotState::kStoring;
    slot.ref.content_type = part.content_type;
    slot.ref.kind = slot.info.type;
    slot.ref.file_name = slot.info.file_name;
    slot.ref.capture_ms = capture_ms(slot.info, p);
    store_picture(p.seq, idx, std::move(part.body));
  }

  // absTime is the camera's local time in dateTime's offset, by the camera's clock: corrected like dateTime.
  UnixMs capture_ms(const IsapiPictureInfo& info, const PendingAlert& p) const {
    const auto t = parse_abs_time(info.abs_time, p.utc_offset_min);
    const UnixMs camera_ms = t ? *t : p.read.camera_time_ms;
    return camera_ms - p.read.clock_offset_ms.value_or(0);
  }

  void store_picture(std::uint64_t seq, std::size_t idx, std::string bytes) {
    if (ctx_.media == nullptr || ctx_.blocking == nullptr) {
      count_error("no_media_store");
      on_stored(seq, idx, Status::fail("no media store configured"), {});
      return;
    }
    asio::post(*ctx_.blocking, [self = shared_from_this(), seq, idx, bytes = std::move(bytes)] {
      StoredFile stored;
      Status s = self->ctx_.media->put(bytes, stored);
      // What the picture is, from its own header: the record's picture checks rest on it.
      JpegHeaderResult header = read_jpeg_header(bytes);
      asio::post(self->strand_, [self, seq, idx, s = std::move(s), stored = std::move(stored),
                                 header = std::move(header)]() mutable {
        self->on_stored(seq, idx, s, stored, std::move(header));
      });
    });
  }

  void on_stored(std::uint64_t seq, std::size_t idx, const Status& s, const StoredFile& stored,
                 JpegHeaderResult header = {}) {
    if (!running_) {
      return;
    }
    auto it =
        std::find_if(pending_.begin(), pending_.end(), [seq](const PendingAlert& p) { return p.seq == seq; });
    if (it == pending_.end() || idx >= it->slots.size() || it->slots[idx].state != SlotState::kStoring) {
      return;
    }
    Slot& slot = it->slots[idx];
    if (s.is_ok()) {
      slot.state = SlotState::kStored;
      slot.ref.sha256 = stored.sha256;
      slot.ref.bytes = stored.bytes;
      slot.ref.header = std::move(header.header);
      slot.ref.header_error = std::move(header.error);
      if (!slot.ref.header) {
        count_error("picture_not_jpeg");  // kept and recorded; the record's picture check says why
      }
    } else {
      // The plate read still counts; the picture that could not be made durable is reported missing.
      slot.state = SlotState::kMissing;
      if (ctx_.media != nullptr) {
        count_error("media_store");
        log::error(kComponent, config_.id, "picture " + slot.info.file_name + " not stored: " + s.message());
      }
    }
    try_emit();
  }

  void close_window(PendingAlert& p) {
    p.window_closed = true;
    for (auto& slot : p.slots) {
      if (slot.state == SlotState::kWaiting) {
        slot.state = SlotState::kMissing;
      }
    }
  }

  void arm_picture_timer() {
    picture_timer_.expires_at(pending_.back().deadline);
    picture_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || !self->running_ || self->pending_.empty()) {
        return;
      }
      auto& p = self->pending_.back();
      if (!p.window_closed && Clock::now() >= p.deadline) {
        self->close_window(p);
        self->try_emit();
      }
    });
  }

  // Emits plate reads in stream order once all their pictures are settled (stored or missing) and no
  // burst is still narrowing the clock offset (for at most kClockHoldMax).
  void try_emit() {
    while (!pending_.empty()) {
      PendingAlert& p = pending_.front();
      if (!p.window_closed) {
        return;
      }
      const bool storing = std::any_of(p.slots.begin(), p.slots.end(),
                                       [](const Slot& s) { return s.state == SlotState::kStoring; });
      if (storing) {
        return;
      }
      if (waits_for_clock(p)) {
        arm_clock_hold(p.clock_hold_until);
        return;
      }
      apply_clock(p);
      PlateRead r = std::move(p.read);
      std::uint64_t stored = 0;
      std::uint64_t missing = 0;
      for (auto& slot : p.slots) {
        if (slot.state == SlotState::kStored) {
          r.pictures.push_back(std::move(slot.ref));
          ++stored;
        } else {
          r.missing_pictures.push_back(slot.info.file_name);
          ++missing;
        }
      }
      pending_.pop_front();
      {
        std::lock_guard lock(mutex_);
        r.camera_device = snap_.identity;
        snap_.pictures += stored;
        snap_.missing_pictures += missing;
      }
      sync_counters();
      ctx_.sink.emit(std::move(r));
    }
  }

  // A read stamped before a restart keeps its estimate (below): waiting would not help it.
  bool waits_for_clock(const PendingAlert& p) const {
    if (burst_left_ == 0 || clock_precise() || Clock::now() >= p.clock_hold_until) {
      return false;
    }
    const auto e = clock_.estimate();
    return !e || p.clock_epoch == 0 || p.clock_epoch == e->epoch;
  }

  // The newest estimate is at least as good as the one in force at the alert, unless the estimate was
  // restarted since (the camera clock was set: the alert was stamped by the clock before that).
  void apply_clock(PendingAlert& p) {
    const auto e = clock_.estimate();
    PlateRead& r = p.read;
    if (!e || (p.clock_epoch != 0 && p.clock_epoch != e->epoch)) {
      return;
    }
    const std::int64_t before = r.clock_offset_ms.value_or(0);
    r.clock_offset_ms = e->offset_ms;
    r.clock_offset_uncertainty_ms = e->uncertainty_ms;
    r.clock_offset_measured_ms = e->measured_ms;
    r.time_ms = r.camera_time_ms - e->offset_ms;
    for (auto& slot : p.slots) {
      if (slot.state == SlotState::kStored) {
        slot.ref.capture_ms += before - e->offset_ms;
      }
    }
  }

  void arm_clock_hold(Clock::time_point until) {
    clock_hold_timer_.expires_at(until);
    clock_hold_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec && self->running_) {
        self->try_emit();
      }
    });
  }

  // ---- output and counters ----

  void emit_link(const std::string& state, const std::string& text) {
    reported_ = state == "connected" ? Reported::kUp : Reported::kDown;
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = "camera";
    ev.state = state;
    ev.text = text;
    ev.time_ms = ctx_.clock.now_ms();
    ctx_.sink.emit(std::move(ev));
  }

  void set_state(const std::string& s) {
    std::lock_guard lock(mutex_);
    snap_.state = s;
  }

  void count_error(const std::string& reason) {
    std::lock_guard lock(mutex_);
    ++snap_.errors[reason];
  }

  // Text the camera sent that is not UTF-8 (the spec says UTF-8; some firmware sends GBK): recorded, never
  // refused, counted as errors{text_not_utf8}, and said once in the log so the installer can fix the camera.
  void text_not_utf8(std::string_view where) {
    count_error("text_not_utf8");
    if (!warned_not_utf8_) {
      warned_not_utf8_ = true;
      log::warn(
          kComponent, config_.id,
          std::string(where) +
              " holds text that is not UTF-8 (is the camera set to GBK?): recorded escaped with its exact "
              "bytes in base64, counted in errors{text_not_utf8}");
    }
  }

  void add_multipart_totals(const MultipartParser::Counters& c) {
    multipart_totals_.parts += c.parts;
    multipart_totals_.noise_bytes += c.noise_bytes;
    for (std::size_t i = 0; i < kMultipartErrorCount; ++i) {
      multipart_totals_.errors[i] += c.errors[i];
    }
    sync_counters();
  }

  // Multipart counters live in the parser of the current connection plus the totals of earlier ones.
  void sync_counters() {
    MultipartParser::Counters c = multipart_totals_;
    if (multipart_) {
      const auto& now = multipart_->counters();
      c.parts += now.parts;
      c.noise_bytes += now.noise_bytes;
      for (std::size_t i = 0; i < kMultipartErrorCount; ++i) {
        c.errors[i] += now.errors[i];
      }
    }
    std::lock_guard lock(mutex_);
    snap_.parts = c.parts;
    for (std::size_t i = 0; i < kMultipartErrorCount; ++i) {
      if (c.errors[i] > 0) {
        snap_.errors[std::string(multipart_error_name(static_cast<MultipartError>(i)))] = c.errors[i];
      }
    }
    if (c.noise_bytes > 0) {
      snap_.errors["noise_bytes"] = c.noise_bytes;
    }
  }

  enum class Reported { kNone, kUp, kDown, kFault };

  const CameraConfig config_;
  AdapterContext& ctx_;
  asio::strand<asio::io_context::executor_type> strand_;
  std::string host_header_;

  // One alert-stream connection: everything an asynchronous operation on it references. Each operation's
  // handler holds the connection, so closing it (stop, idle timeout, reconnect) while a read is in flight
  // cannot free the parser or buffer Beast is still parsing into: the stale completion finds a closed,
  // superseded connection and returns.
  struct StreamConnection {
    explicit StreamConnection(const asio::strand<asio::io_context::executor_type>& strand) : socket(strand) {}
    tcp::socket socket;
    beast::flat_buffer buffer;
    http::request<http::empty_body> req;
    std::optional<http::response_parser<http::buffer_body>> parser;
    std::array<char, 64 * 1024> chunk{};
  };

  tcp::resolver stream_resolver_;
  std::shared_ptr<StreamConnection> stream_;
  std::uint64_t stream_gen_ = 0;
  bool stream_up_ = false;
  std::optional<MultipartParser> multipart_;
  MultipartParser::Counters multipart_totals_;
  std::vector<MultipartPart> parts_;

  asio::steady_timer idle_timer_;
  asio::steady_timer reconnect_timer_;
  asio::steady_timer time_timer_;
  asio::steady_timer picture_timer_;
  asio::steady_timer backpressure_timer_;
  asio::steady_timer clock_hold_timer_;
  HttpExchanges exchanges_;  // control requests (deviceInfo, time)

  DigestAuthenticator digest_;
  bool auth_blocked_ = false;

  OffsetClockEstimator clock_;
  int burst_left_ = 0;              // time polls still to make in the current burst
  std::int64_t probe_lead_ms_ = 0;  // from starting a poll to the camera reading its clock (last poll)

  std::deque<PendingAlert> pending_;
  std::uint64_t alert_seq_ = 0;
  std::unordered_set<std::string> seen_;
  std::deque<std::string> seen_order_;
  std::vector<std::string> discard_files_;  // pictures of a dropped duplicate, still to come

  std::minstd_rand rng_;
  bool running_ = false;
  bool good_connection_ = false;
  bool warned_not_utf8_ = false;
  int attempt_ = 0;
  Reported reported_ = Reported::kNone;

  mutable std::mutex mutex_;  // guards snap_ only; everything else lives on the strand
  Snapshot snap_;
};

}  // namespace

std::unique_ptr<Adapter> make_camera_adapter(const CameraConfig& config, AdapterContext& ctx) {
  return std::make_unique<AdapterHandle<CameraAdapterImpl>>(config, ctx);
}

}  // namespace cpd::adapters
