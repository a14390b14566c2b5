// The radar adapter: a thin Asio shell (TCP client or serial port, polling, expiry timer) around the
// pure parser and track builder. All I/O runs on the adapter's own strand; status() is thread-safe.
#include "adapters/radar/radar_adapter.h"

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/serial_port.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "adapters/adapter_handle.h"
#include "adapters/radar/radar_frame_parser.h"
#include "adapters/radar/radar_tracks.h"
#include "adapters/reconnect_backoff.h"
#include "adapters/record_bound.h"
#include "daemon/log/log.h"

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr auto kExpiryTick = std::chrono::milliseconds(100);
constexpr std::string_view kPollCommand = "*P\r";
constexpr std::string_view kComponent = "radar";

std::string radar_state_for(int code) {
  if (code == 0) {
    return "ok";
  }
  if (code >= 20 && code <= 29) {
    return "fault";
  }
  // 1x are warnings; codes the documentation does not list are not "ok" either.
  return "warning";
}

class RadarAdapterImpl : public std::enable_shared_from_this<RadarAdapterImpl> {
 public:
  RadarAdapterImpl(const RadarConfig& config, AdapterContext& ctx)
      : config_(config),
        ctx_(ctx),
        strand_(asio::make_strand(ctx.io)),
        resolver_(strand_),
        socket_(strand_),
        serial_(strand_),
        reconnect_timer_(strand_),
        poll_timer_(strand_),
        expiry_timer_(strand_),
        backpressure_timer_(strand_),
        builder_(config),
        record_bound_(config.max_records_per_s, RecordBound::default_burst(config.max_records_per_s)),
        rng_(std::random_device{}()) {
    if (const auto* t = std::get_if<TcpLink>(&config_.link)) {
      link_text_ = "tcp " + t->host + ":" + std::to_string(t->port);
    } else {
      const auto& s = std::get<SerialLink>(config_.link);
      link_text_ = "serial " + s.device + "@" + std::to_string(s.baud);
    }
  }

  const std::string& device_id() const { return config_.id; }

  void start() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      if (self->running_) {
        return;
      }
      self->running_ = true;
      self->set_state("connecting");
      self->connect();
    });
  }

  void stop() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      // Vehicles still being tracked were measured: they go out as (shorter) tracks, not into the void.
      if (self->running_) {
        self->queue_tracks(self->builder_.on_disconnect());
        self->flush();
      }
      self->running_ = false;
      error_code ignored;
      self->backpressure_timer_.cancel();
      self->resolver_.cancel();
      self->reconnect_timer_.cancel();
      self->poll_timer_.cancel();
      self->expiry_timer_.cancel();
      self->expiry_armed_ = false;
      self->socket_.close(ignored);
      self->serial_.close(ignored);
      self->set_state("stopped");
    });
  }

  nlohmann::json status() const {
    std::lock_guard lock(mutex_);
    nlohmann::json errors = nlohmann::json::object();
    for (std::size_t i = 0; i < kFrameErrorCount; ++i) {
      errors[std::string(frame_error_name(static_cast<FrameError>(i)))] = snap_.parser.errors[i];
    }
    // Among the errors so that every consumer of them (metrics, checkpointctl status) shows it.
    errors["records_suppressed"] = snap_.records_suppressed;
    const auto& c = snap_.clock;
    return {
        {"kind", "radar"},
        {"id", config_.id},
        {"state", snap_.state},
        {"link", link_text_},
        {"frames", snap_.parser.frames},
        {"tracks", snap_.tracks.tracks},
        {"open_tracks", snap_.open_tracks},
        {"test_targets", snap_.tracks.test_targets},
        {"dropped_frames", snap_.tracks.dropped_frames},
        {"errors", errors},
        {"noise_bytes", snap_.parser.noise_bytes},
        {"reconnects", snap_.reconnects},
        {"status_code", snap_.radar_status.code},
        {"status_text", snap_.radar_status.text},
        {"clock",
         {{"offset_ms", c.offset_ms},
          {"samples", c.samples},
          {"window_ms", c.window_ms},
          {"epoch", c.epoch},
          {"wraps", c.wraps},
          {"unstable", c.unstable},
          {"steps", snap_.tracks.clock_steps},
          {"buckets", snap_.clock_buckets}}},
        {"records",
         {{"max_per_s", record_bound_.per_s()},
          {"burst", record_bound_.burst()},
          {"suppressed", snap_.records_suppressed},
          {"suppressing", snap_.suppressing}}},
        {"last_frame_ms", snap_.last_frame_ms},
        {"last_error", snap_.last_error},
    };
  }

 private:
  struct Snapshot {
    std::string state = "stopped";
    RadarFrameParser::Counters parser;
    RadarTrackBuilder::Counters tracks;
    std::size_t open_tracks = 0;
    std::uint64_t reconnects = 0;
    RadarStatusSnapshot radar_status;
    RadarClockEstimate clock;
    std::size_t clock_buckets = 0;
    std::uint64_t records_suppressed = 0;
    bool suppressing = false;
    UnixMs last_frame_ms = 0;
    std::string last_error;
  };

  // ---- link ----

  void connect() {
    if (!running_) {
      return;
    }
    set_state("connecting");
    if (const auto* t = std::get_if<TcpLink>(&config_.link)) {
      resolver_.async_resolve(
          t->host, std::to_string(t->port),
          [self = shared_from_this()](const error_code& ec, const tcp::resolver::results_type& r) {
            self->on_resolved(ec, r);
          });
    } else {
      open_serial();
    }
  }

  void on_resolved(const error_code& ec, const tcp::resolver::results_type& results) {
    if (!running_ || ec == asio::error::operation_aborted) {
      return;
    }
    if (ec) {
      link_failed("resolve failed: " + ec.message());
      return;
    }
    asio::async_connect(
        socket_, results,
        [self = shared_from_this()](const error_code& e, const tcp::endpoint&) { self->on_connected(e); });
  }

  void on_connected(const error_code& ec) {
    if (!running_ || ec == asio::error::operation_aborted) {
      return;
    }
    if (ec) {
      error_code ignored;
      socket_.close(ignored);
      link_failed("connect failed: " + ec.message());
      return;
    }
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    link_up();
  }

  void open_serial() {
    const auto& s = std::get<SerialLink>(config_.link);
    error_code ec;
    serial_.open(s.device, ec);
    if (!ec) {
      serial_.set_option(asio::serial_port::baud_rate(s.baud), ec);
    }
    if (!ec) {
      serial_.set_option(asio::serial_port::character_size(8), ec);
    }
    if (!ec) {
      serial_.set_option(asio::serial_port::parity(asio::serial_port::parity::none), ec);
    }
    if (!ec) {
      serial_.set_option(asio::serial_port::stop_bits(asio::serial_port::stop_bits::one), ec);
    }
    if (!ec) {
      serial_.set_option(asio::serial_port::flow_control(asio::serial_port::flow_control::none), ec);
    }
    if (ec) {
      error_code ignored;
      serial_.close(ignored);
      link_failed("open failed: " + ec.message());
      return;
    }
    link_up();
  }

  bool is_tcp() const { return std::holds_alternative<TcpLink>(config_.link); }

  void link_up() {
    connected_ = true;
    good_connection_ = false;
    set_state("connected");
    emit_link("connected", link_text_);
    read();
    if (config_.poll_interval_ms > 0) {
      send_poll();
    }
  }

  // A connect/open attempt failed or an established link broke: report once, retry with backoff.
  void link_failed(const std::string& reason) {
    ++link_gen_;  // a read of the old link completing late (its bytes already taken) is dropped, not parsed
    if (connected_) {
      connected_ = false;
      error_code ignored;
      socket_.close(ignored);
      serial_.close(ignored);
      poll_timer_.cancel();
      parser_.reset();
      queue_tracks(builder_.on_disconnect());
      flush();
    }
    if (good_connection_) {
      attempt_ = 0;  // a connection that carried frames resets the backoff
      good_connection_ = false;
    }
    {
      std::lock_guard lock(mutex_);
      snap_.last_error = reason;
    }
    if (reported_ != Reported::kDown) {
      emit_link("disconnected", reason);
    }
    set_state("disconnected");
    schedule_reconnect();
  }

  void schedule_reconnect() {
    if (!running_) {
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
        self->connect();
      }
    });
  }

  std::int64_t backoff_ms() {
    return reconnect_backoff_ms(attempt_, config_.reconnect_initial_ms, config_.reconnect_max_ms, rng_);
  }

  // ---- reading ----

  void read() {
    auto handler = [self = shared_from_this(), gen = link_gen_](const error_code& ec, std::size_t n) {
      if (gen == self->link_gen_) {
        self->on_read(ec, n);
      }
    };
    if (is_tcp()) {
      socket_.async_read_some(asio::buffer(buffer_), handler);
    } else {
      serial_.async_read_some(asio::buffer(buffer_), handler);
    }
  }

  void on_read(const error_code& ec, std::size_t n) {
    if (!running_ || ec == asio::error::operation_aborted) {
      return;
    }
    const UnixMs now = ctx_.clock.now_ms();
    if (n > 0) {
      frames_.clear();
      parser_.feed(std::string_view(buffer_.data(), n), frames_);
      for (const auto& f : frames_) {
        handle_frame(f, now);
      }
      if (!frames_.empty()) {
        good_connection_ = true;
        std::lock_guard lock(mutex_);
        snap_.last_frame_ms = now;
      }
      flush();
    }
    if (ec) {
      link_failed(ec == asio::error::eof ? std::string("closed by radar") : "read failed: " + ec.message());
      return;
    }
    read_when_ready();
  }

  // While the core is behind, stop reading for a moment: TCP (or the serial line) pushes back on the
  // radar instead of frames piling up in memory.
  void read_when_ready() {
    if (!ctx_.sink.congested()) {
      read();
      return;
    }
    backpressure_timer_.expires_after(std::chrono::milliseconds(10));
    backpressure_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec && self->running_) {
        self->read_when_ready();
      }
    });
  }

  void handle_frame(const RadarFrame& frame, UnixMs now) {
    auto outcome = builder_.on_frame(frame, now);
    queue_tracks(std::move(outcome.closed));
    if (outcome.clock_change != RadarClockMapper::Change::kNone) {
      report_clock_change(outcome.clock_change, frame, now);
    }
    if (outcome.status_change) {
      DeviceStatusEvent ev;
      ev.device_id = config_.id;
      ev.kind = "radar";
      ev.state = radar_state_for(outcome.status_change->code);
      ev.code = outcome.status_change->code;
      ev.text = outcome.status_change->text;
      ev.time_ms = now;
      ev.raw_frame = frame.raw;
      pending_.push_back({std::move(ev), true});
    }
  }

  // The gateway's own finding about the radar clock: once per change (the mapper's hysteresis bounds how
  // often), so it is not subject to the record bound.
  void report_clock_change(RadarClockMapper::Change change, const RadarFrame& frame, UnixMs now) {
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = "radar";
    ev.code = -1;
    ev.time_ms = now;
    ev.raw_frame = frame.raw;
    const std::string stable_s = std::to_string(RadarClockMapper::kStableMs / 1000);
    if (change == RadarClockMapper::Change::kBecameUnstable) {
      ev.state = "clock_fault";
      ev.text = "radar clock stepped " + std::to_string(RadarClockMapper::kUnstableSteps) + " times within " +
                std::to_string(RadarClockMapper::kUnstableWindowMs / 1000) +
                " s while the link stayed up: tracks are timed by the gateway's receive time and marked "
                "radar_clock.unstable until the clock holds for " +
                stable_s + " s";
      log::warn(kComponent, config_.id, ev.text);
    } else {
      ev.state = "clock_ok";
      ev.text = "radar clock held for " + stable_s + " s after " +
                std::to_string(builder_.counters().clock_steps) +
                " steps in all: tracks are timed by the radar clock again";
      log::notice(kComponent, config_.id, ev.text);
    }
    pending_.push_back({std::move(ev), false});
  }

  // ---- timers ----

  void send_poll() {
    if (!running_ || !connected_) {
      return;
    }
    if (!writing_) {
      writing_ = true;
      auto done = [self = shared_from_this(), gen = link_gen_](const error_code& ec, std::size_t) {
        self->writing_ = false;
        if (ec && ec != asio::error::operation_aborted && self->running_ && self->connected_ &&
            gen == self->link_gen_) {
          self->link_failed("write failed: " + ec.message());
        }
      };
      if (is_tcp()) {
        asio::async_write(socket_, asio::buffer(kPollCommand), done);
      } else {
        asio::async_write(serial_, asio::buffer(kPollCommand), done);
      }
    }
    poll_timer_.expires_after(std::chrono::milliseconds(config_.poll_interval_ms));
    poll_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec) {
        self->send_poll();
      }
    });
  }

  // Every kExpiryTick while a track is open (its target may have gone: track_timeout_ms) or records are being
  // suppressed (the episode ends after a quiet time): tracks are closed and the episode's end reported. With
  // neither, the timer sleeps and the next frame arms it (flush): an empty road costs no wakeups.
  void arm_expiry_if_needed() {
    if (expiry_armed_ || !running_ || (builder_.open_tracks() == 0 && !record_bound_.suppressing())) {
      return;
    }
    expiry_armed_ = true;
    expiry_timer_.expires_after(kExpiryTick);
    expiry_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (ec || !self->running_) {
        return;
      }
      self->expiry_armed_ = false;
      self->queue_tracks(self->builder_.expire(self->ctx_.clock.now_ms()));
      self->flush();
    });
  }

  // ---- output ----

  void queue_tracks(std::vector<RadarTrack> tracks) {
    for (auto& t : tracks) {
      pending_.push_back({std::move(t), true});
    }
  }

  // Every record the radar causes passes the record bound; what it suppresses is counted, and each
  // episode is reported when it starts and when it ends (a device_status record and a log line each).
  // The snapshot is brought up to date before the events go out, so a consumer reacting to an
  // event never sees counters older than it.
  void flush() {
    const UnixMs now = ctx_.clock.now_ms();
    std::vector<DeviceEvent> out;
    for (auto& p : pending_) {
      bool started = false;
      if (!p.bounded || record_bound_.admit(now, &started)) {
        out.push_back(std::move(p.event));
      } else if (started) {
        out.push_back(suppression_notice(
            "records_suppressed",
            "more than " + std::to_string(record_bound_.per_s()) + " records/s (bursts of " +
                std::to_string(record_bound_.burst()) +
                "): further records of this radar (tracks, status and link changes) are counted, "
                "not recorded, until none is suppressed for " +
                std::to_string(RecordBound::kQuietMs / 1000) + " s",
            now));
      }
    }
    pending_.clear();
    if (const auto ended = record_bound_.take_ended(now)) {
      out.push_back(suppression_notice("records_resumed",
                                       std::to_string(ended->count) + " records suppressed from " +
                                           std::to_string(ended->first_ms) + " to " +
                                           std::to_string(ended->last_ms) + " (unix ms) by the bound of " +
                                           std::to_string(record_bound_.per_s()) + " records/s",
                                       now));
    }
    sync_snapshot();
    for (auto& e : out) {
      ctx_.sink.emit(std::move(e));
    }
    arm_expiry_if_needed();
  }

  DeviceStatusEvent suppression_notice(const std::string& state, const std::string& text, UnixMs now) {
    if (state == "records_suppressed") {
      log::warn(kComponent, config_.id, text);
    } else {
      log::notice(kComponent, config_.id, text);
    }
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = "radar";
    ev.state = state;
    ev.code = -1;
    ev.text = text;
    ev.time_ms = now;
    return ev;
  }

  void emit_link(const std::string& state, const std::string& text) {
    reported_ = state == "connected" ? Reported::kUp : Reported::kDown;
    DeviceStatusEvent ev;
    ev.device_id = config_.id;
    ev.kind = "radar";
    ev.state = state;
    ev.text = text;
    ev.time_ms = ctx_.clock.now_ms();
    pending_.push_back({std::move(ev), true});
    flush();
  }

  void set_state(const std::string& s) {
    std::lock_guard lock(mutex_);
    snap_.state = s;
  }

  void sync_snapshot() {
    std::lock_guard lock(mutex_);
    snap_.parser = parser_.counters();
    snap_.tracks = builder_.counters();
    snap_.open_tracks = builder_.open_tracks();
    snap_.radar_status = builder_.status();
    snap_.clock = builder_.clock_estimate();
    snap_.clock_buckets = builder_.clock().buckets();
    snap_.records_suppressed = record_bound_.suppressed();
    snap_.suppressing = record_bound_.suppressing();
  }

  enum class Reported { kNone, kUp, kDown };

  const RadarConfig config_;
  AdapterContext& ctx_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  tcp::socket socket_;
  asio::serial_port serial_;
  asio::steady_timer reconnect_timer_;
  asio::steady_timer poll_timer_;
  asio::steady_timer expiry_timer_;
  asio::steady_timer backpressure_timer_;
  std::array<char, 4096> buffer_{};
  std::uint64_t link_gen_ = 0;
  std::vector<RadarFrame> frames_;
  struct Pending {
    DeviceEvent event;
    bool bounded = true;  // counts against the record bound (everything but the gateway's own findings)
  };
  std::vector<Pending> pending_;  // events of the current handler, emitted by flush()
  RadarFrameParser parser_;
  RadarTrackBuilder builder_;
  RecordBound record_bound_;  // strand only; its counters reach status() through the snapshot
  std::minstd_rand rng_;
  std::string link_text_;
  bool running_ = false;
  bool expiry_armed_ = false;  // the expiry timer waits (arm_expiry_if_needed)
  bool connected_ = false;
  bool good_connection_ = false;
  bool writing_ = false;
  int attempt_ = 0;
  Reported reported_ = Reported::kNone;

  mutable std::mutex mutex_;  // guards snap_ only; everything else lives on the strand
  Snapshot snap_;
};

}  // namespace

std::unique_ptr<Adapter> make_radar_adapter(const RadarConfig& config, AdapterContext& ctx) {
  return std::make_unique<AdapterHandle<RadarAdapterImpl>>(config, ctx);
}

}  // namespace cpd::adapters
