// The radar simulator: generates vehicles in lanes and serves them as protocol frames to one TCP
// client at a time, with optional drift, wraps, reboots, self-tests, noise and corrupt checksums, and
// hostile modes: a flood (garbage bytes between frames, K times the vehicle rate), a stream flood (valid
// frames as fast as the client reads, on a radar clock that follows real time) and a clock that steps
// back on every frame.
// Vehicle parameters come from a seeded generator so a run is reproducible; --ground-truth records them.
#include "tools/sim/radar_sim.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numbers>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/support/radar_frames.h"
#include "tools/sim/listen.h"
#include "tools/sim/sim_common.h"

namespace cpd::sim {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kIdleStatusMs = 10'000;
constexpr std::int64_t kRebootOutageMs = 5'000;
constexpr std::size_t kMaxQueuedFrames = 20'000;         // a client that stops reading loses frames
constexpr std::size_t kMaxQueuedGarbageBytes = 4 << 20;  // garbage waits for a slow client up to this
// A track number is not reused this soon after its target left (traffic time): a receiver tells vehicles
// apart only by number and gap, so an instant reuse would merge two vehicles. Only a flood ever gets here.
constexpr std::int64_t kTargetReuseMs = 500;

struct Options {
  std::uint16_t port = 0;
  std::string host = "127.0.0.1";
  std::uint64_t seed = 1;
  std::uint64_t vehicles = 0;
  double rate = 1.0;
  int lanes = 2;
  double lane_width = 3.75;
  double speed_min = 40.0;
  double speed_max = 130.0;
  char units = 'K';
  char coord = 'C';
  int frames_per_track = 8;
  int frame_interval_ms = 50;
  bool start_on_connect = true;
  double clock_start_s = 0.0;
  double drift_ppm = 0.0;
  double reboot_every_s = 0.0;
  double selftest_every_s = 0.0;
  double noise_rate = 0.0;
  double corrupt_rate = 0.0;
  double garbage_bps = 0.0;  // random bytes per second of traffic, between frames (STX/ETX included)
  int flood_factor = 1;      // vehicle rate and vehicles per lane multiplied by this
  int status_code = 0;
  bool stream_flood = false;       // no vehicles: valid detect frames as fast as the client reads
  double clock_step_back_s = 0.0;  // every frame is stamped this long before the previous one (0 = off)
  std::string ground_truth;
  bool poll_only = false;
  bool exit_when_done = false;
};

struct Vehicle {
  std::uint64_t id = 0;  // 1.. for vehicles; test targets use 0
  int target = 0;
  int lane = 0;
  char dir = 'A';
  bool test = false;
  int frames = 0;
  int next_frame = 0;  // frames generated so far
  int peak_index = 0;
  std::int32_t peak_dkmh = 0;              // what the receiver should compute for the peak, 0.1 km/h
  std::vector<std::int32_t> speed_tenths;  // per frame, in the sim's units
  double x_m = 0.0;
  double range_start_m = 0.0;
  double speed_mps = 0.0;
  std::mt19937_64 rng;  // per-vehicle noise (lateral wobble, amplitude)
  std::string first_radar_time;
  int queued = 0;                         // frames handed to a client
  int written = 0;                        // frames the client's socket accepted
  std::int64_t last_written_unix_ms = 0;  // wall clock when the socket accepted the last frame
  int corrupted = 0;
  bool peak_corrupted = false;  // the peak frame's checksum was broken: a receiver cannot see the peak
  bool lost = false;            // a frame was not delivered (no client, dropped, link failed)
  bool finished = false;        // all frames generated (or aborted)
};

struct OutFrame {
  std::string bytes;
  std::uint64_t vehicle = 0;  // 0: not part of a vehicle (status, test target)
};

class RadarSim {
 public:
  RadarSim(asio::io_context& io, Options opt)
      : io_(io),
        opt_(std::move(opt)),
        acceptor_(io),
        tick_timer_(io),
        reboot_timer_(io),
        signals_(io, SIGINT, SIGTERM),
        traffic_rng_(opt_.seed),
        noise_rng_(opt_.seed ^ 0x9E3779B97F4A7C15ULL),
        garbage_rng_(opt_.seed ^ 0xC2B2AE3D27D4EB4FULL),
        clock_base_cs_(static_cast<std::int64_t>(std::llround(opt_.clock_start_s * 100.0))) {}

  bool open(std::uint16_t port) {
    if (!open_listener(acceptor_, opt_.host, port, "radar-sim")) {
      return false;
    }
    port_ = acceptor_.local_endpoint().port();
    return true;
  }

  int run() {
    if (!open(opt_.port)) {
      return 1;
    }
    if (!opt_.ground_truth.empty()) {
      truth_.open(opt_.ground_truth, std::ios::out | std::ios::trunc);
      if (!truth_) {
        std::cerr << "radar-sim: cannot write " << opt_.ground_truth << "\n";
        return 1;
      }
    }
    std::cout << "listening " << port_ << std::endl;  // first line, flushed: harnesses wait for it
    signals_.async_wait([this](const error_code& ec, int) {
      if (!ec) {
        shutdown();
      }
    });
    accept();
    if (!opt_.start_on_connect) {
      start_traffic();
    }
    io_.run();
    return 0;
  }

 private:
  // ---- connection ----

  void accept() {
    if (client_ || stopping_ || rebooting_) {
      return;  // one client at a time: later connects wait in the listen backlog
    }
    acceptor_.async_accept([this](const error_code& ec, tcp::socket s) {
      if (ec) {
        return;  // acceptor closed (reboot or shutdown)
      }
      if (stopping_ || rebooting_) {
        return;
      }
      client_ = std::make_unique<tcp::socket>(std::move(s));
      error_code ignored;
      client_->set_option(tcp::no_delay(true), ignored);
      poll_buffer_.clear();
      // Power-up status (after a reboot) or the current status for a newcomer.
      enqueue({status_frame(), 0});
      read_client();
      if (opt_.stream_flood) {
        flood_batch();
        write_more();
        return;
      }
      if (!traffic_started_) {
        start_traffic();
      } else if (opt_.rate <= 0.0) {
        schedule_fast_tick();
      }
      write_more();
    });
  }

  void read_client() {
    client_->async_read_some(
        asio::buffer(read_buf_), [this, c = client_.get()](const error_code& ec, std::size_t n) {
          if (c != client_.get()) {
            return;
          }
          if (ec) {
            drop_client();
            return;
          }
          poll_buffer_.append(read_buf_.data(), n);
          std::size_t pos = 0;
          while ((pos = poll_buffer_.find("*P\r")) != std::string::npos) {
            poll_buffer_.erase(0, pos + 3);
            answer_poll();
          }
          if (poll_buffer_.size() > 64) {
            poll_buffer_.erase(0, poll_buffer_.size() - 2);  // keep a possible partial "*P"
          }
          read_client();
        });
  }

  void drop_client() {
    if (!client_) {
      return;
    }
    error_code ignored;
    client_->close(ignored);
    client_.reset();
    writing_ = false;
    // Whatever was queued or in flight did not reach the client.
    for (auto& f : queue_) {
      mark_lost(f.vehicle);
    }
    queue_.clear();
    queued_bytes_ = 0;
    in_flight_ = 0;
    finalize_vehicles();
    accept();
  }

  void enqueue(OutFrame f) {
    if (!client_ || queue_.size() >= kMaxQueuedFrames) {
      mark_lost(f.vehicle);
      return;
    }
    if (auto* v = find(f.vehicle)) {
      ++v->queued;
    }
    queued_bytes_ += f.bytes.size();
    queue_.push_back(std::move(f));
  }

  void write_more() {
    if (!client_ || writing_ || queue_.empty()) {
      return;
    }
    writing_ = true;
    in_flight_ = std::min<std::size_t>(queue_.size(), 256);
    buffers_.clear();
    for (std::size_t i = 0; i < in_flight_; ++i) {
      buffers_.push_back(asio::buffer(queue_[i].bytes));
    }
    asio::async_write(*client_, buffers_, [this, c = client_.get()](const error_code& ec, std::size_t) {
      if (c != client_.get()) {
        return;
      }
      writing_ = false;
      if (ec) {
        drop_client();
        return;
      }
      const std::int64_t now_unix_ms = unix_ms();
      for (std::size_t i = 0; i < in_flight_; ++i) {
        if (auto* v = find(queue_.front().vehicle)) {
          ++v->written;
          v->last_written_unix_ms = now_unix_ms;
        }
        queued_bytes_ -= queue_.front().bytes.size();
        queue_.pop_front();
      }
      in_flight_ = 0;
      finalize_vehicles();
      if (queue_.empty() && opt_.stream_flood) {
        flood_batch();
      } else if (queue_.empty() && opt_.rate <= 0.0) {
        schedule_fast_tick();
      }
      write_more();
    });
  }

  // ---- traffic ----

  void start_traffic() {
    traffic_started_ = true;
    epoch_start_ = Clock::now();
    power_on_ms_ = 0;
    next_arrival_ms_ = opt_.rate > 0.0 ? interarrival_ms() : 0.0;
    next_reboot_ms_ = opt_.reboot_every_s > 0 ? static_cast<std::int64_t>(opt_.reboot_every_s * 1000) : -1;
    next_selftest_ms_ =
        opt_.selftest_every_s > 0 ? static_cast<std::int64_t>(opt_.selftest_every_s * 1000) : -1;
    if (opt_.rate > 0.0) {
      schedule_timed_tick();
    } else {
      schedule_fast_tick();
    }
  }

  // Real-time mode: ticks at absolute times, so the traffic clock does not drift with handler latency.
  void schedule_timed_tick() {
    tick_timer_.expires_at(epoch_start_ + std::chrono::milliseconds(tick_ * opt_.frame_interval_ms));
    tick_timer_.async_wait([this](const error_code& ec) {
      if (ec || stopping_) {
        return;
      }
      tick();
      ++tick_;
      schedule_timed_tick();
    });
  }

  // --rate 0: the next batch is generated when the client has taken the previous one.
  void schedule_fast_tick() {
    if (fast_tick_pending_ || stopping_ || !client_ || rebooting_) {
      return;
    }
    fast_tick_pending_ = true;
    asio::post(io_, [this] {
      fast_tick_pending_ = false;
      if (stopping_ || !client_ || rebooting_ || !queue_.empty()) {
        return;
      }
      tick();
      ++tick_;
      write_more();
      if (queue_.empty()) {
        // Nothing to send (all vehicles done): idle at the frame interval instead of spinning.
        tick_timer_.expires_after(std::chrono::milliseconds(opt_.frame_interval_ms));
        tick_timer_.async_wait([this](const error_code& ec) {
          if (!ec) {
            schedule_fast_tick();
          }
        });
      }
    });
  }

  std::int64_t traffic_ms() const { return tick_ * opt_.frame_interval_ms; }

  // The time field of the next frame: the radar clock, or with --clock-step-back the previous frame's
  // time minus the step (a clock that jumps back on every frame).
  std::int64_t frame_time_cs() {
    if (opt_.clock_step_back_s <= 0.0) {
      return radar_cs();
    }
    const auto step = static_cast<std::int64_t>(std::llround(opt_.clock_step_back_s * 100.0));
    stepped_cs_ =
        stepped_cs_ ? ((*stepped_cs_ - step) % kRadarWrapCs + kRadarWrapCs) % kRadarWrapCs : radar_cs();
    return *stepped_cs_;
  }

  // Stream flood: one batch of valid detect frames, one target per lane driving on for ever, stamped with
  // a radar clock that follows real time (steady clock since the first connect, with --drift-ppm), so
  // every frame is good evidence and only the rate is hostile.
  void flood_batch() {
    if (!client_ || stopping_) {
      return;
    }
    if (!stream_started_) {
      stream_start_ = Clock::now();
      stream_started_ = true;
    }
    constexpr int kBatch = 256;
    for (int i = 0; i < kBatch; ++i) {
      test::DetectFields f;
      if (opt_.clock_step_back_s > 0.0) {
        f.time_cs = frame_time_cs();
      } else {
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - stream_start_).count();
        const auto cs =
            clock_base_cs_ + static_cast<std::int64_t>(std::floor(ms * (1.0 + opt_.drift_ppm * 1e-6) / 10.0));
        f.time_cs = ((cs % kRadarWrapCs) + kRadarWrapCs) % kRadarWrapCs;
      }
      const int lane = static_cast<int>(stream_frames_ % static_cast<std::uint64_t>(opt_.lanes)) + 1;
      f.target = lane;
      f.targets = opt_.lanes;
      f.dir = 'A';
      f.speed_tenths = 800 + lane;
      f.units = opt_.units;
      f.range_dm = 300;
      f.coord = 'C';
      f.x_tenths = static_cast<std::int32_t>(std::lround((lane - 0.5) * opt_.lane_width * 10.0));
      f.amplitude_ddb = 600;
      enqueue({test::detect_frame(f), 0});
      ++stream_frames_;
    }
  }

  std::int64_t radar_cs() const {
    const double since_power_ms = static_cast<double>(traffic_ms() - power_on_ms_);
    const auto cs = clock_base_cs_ + static_cast<std::int64_t>(
                                         std::floor(since_power_ms * (1.0 + opt_.drift_ppm * 1e-6) / 10.0));
    return ((cs % kRadarWrapCs) + kRadarWrapCs) % kRadarWrapCs;
  }

  double interarrival_ms() {
    return -std::log(1.0 - uniform01(traffic_rng_)) / (opt_.rate * opt_.flood_factor) * 1000.0;
  }

  static std::int64_t unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // Flood mode: the bytes a hostile or broken device puts on the line between frames. Uniform random
  // bytes, STX and ETX included, so the receiver sees noise as well as false frame starts that end as
  // checksum, syntax, overlong and truncated discards. A real frame always follows on its own STX.
  void enqueue_garbage() {
    if (opt_.garbage_bps <= 0.0) {
      return;
    }
    garbage_due_ += opt_.garbage_bps * opt_.frame_interval_ms / 1000.0;
    const auto n = static_cast<std::size_t>(garbage_due_);
    if (n == 0) {
      return;
    }
    garbage_due_ -= static_cast<double>(n);
    if (queued_bytes_ + n > kMaxQueuedGarbageBytes) {
      return;  // the client is not reading: garbage is not worth holding (frames still queue as before)
    }
    std::string bytes(n, '\0');
    for (auto& b : bytes) {
      b = static_cast<char>(garbage_rng_() & 0xFF);
    }
    enqueue({std::move(bytes), 0});
  }

  bool more_vehicles() const { return opt_.vehicles == 0 || spawned_ < opt_.vehicles; }

  void tick() {
    const std::int64_t now = traffic_ms();
    if (rebooting_) {
      return;
    }
    if (next_reboot_ms_ >= 0 && now >= next_reboot_ms_) {
      reboot();
      return;
    }
    if (next_selftest_ms_ >= 0 && now >= next_selftest_ms_) {
      spawn_test_targets();
      next_selftest_ms_ += static_cast<std::int64_t>(opt_.selftest_every_s * 1000);
    }
    enqueue_garbage();
    if (opt_.rate > 0.0) {
      while (more_vehicles() && now >= next_arrival_ms_ && spawn_vehicle()) {
        next_arrival_ms_ += interarrival_ms();
      }
    } else if (more_vehicles() && client_) {
      spawn_vehicle();  // at most one per tick, so vehicles in different lanes are staggered
    }
    // One frame per active target.
    int active = 0;
    for (auto& [id, v] : active_) {
      active += v.finished ? 0 : 1;
    }
    for (auto& [id, v] : active_) {
      if (v.finished) {
        continue;
      }
      if (!opt_.poll_only) {
        send_detect(v, v.next_frame, active);
      }
      if (++v.next_frame >= v.frames) {
        v.finished = true;
        released_ms_[v.target] = now;
      }
    }
    std::erase_if(test_targets_, [](const auto& kv) { return kv.second.finished; });
    finalize_vehicles();
    if (active == 0 && now - last_status_ms_ >= kIdleStatusMs) {
      enqueue({status_frame(), 0});
      last_status_ms_ = now;
    }
    write_more();
    maybe_exit();
  }

  bool spawn_vehicle() {
    // A lane holds one vehicle at a time (flood_factor at a time in flood mode, side by side as distinct
    // targets); the number of targets is bounded by the protocol's two-digit track numbers.
    std::map<int, int> busy;
    for (const auto& [id, v] : active_) {
      if (!v.finished && !v.test) {
        ++busy[v.lane];
      }
    }
    std::vector<int> free;
    for (int l = 1; l <= opt_.lanes; ++l) {
      if (busy[l] < opt_.flood_factor) {
        free.push_back(l);
      }
    }
    if (free.empty()) {
      return false;  // every lane occupied: the arrival waits for the next tick
    }
    const int target = allocate_target();
    if (target == 0) {
      return false;  // all 99 track numbers in use (flood): the arrival waits as well
    }
    Vehicle v;
    v.id = ++spawned_;
    v.lane = free[static_cast<std::size_t>(uniform01(traffic_rng_) * static_cast<double>(free.size()))];
    v.target = target;
    v.frames = std::max(1, opt_.frames_per_track);
    v.peak_index = v.frames / 2;
    const auto peak_dkmh = static_cast<std::int32_t>(
        std::lround((opt_.speed_min + uniform01(traffic_rng_) * (opt_.speed_max - opt_.speed_min)) * 10.0));
    v.rng.seed(traffic_rng_());
    v.x_m = (v.lane - 0.5) * opt_.lane_width + (uniform01(traffic_rng_) - 0.5) * 0.3 * opt_.lane_width;
    v.speed_mps = peak_dkmh / 36.0;
    const double end_range = std::max(15.0, 2.5 * std::abs(v.x_m));
    v.range_start_m = end_range + v.speed_mps * v.frames * opt_.frame_interval_ms / 1000.0;
    for (int i = 0; i < v.frames; ++i) {
      const std::int32_t dkmh = std::max(0, peak_dkmh - kProfileStepDkmh * std::abs(i - v.peak_index));
      v.speed_tenths.push_back(opt_.units == 'M' ? static_cast<std::int32_t>(std::lround(dkmh / 1.609344))
                                                 : dkmh);
    }
    const std::int32_t peak_tenths = v.speed_tenths[static_cast<std::size_t>(v.peak_index)];
    // What the receiver computes from the reported peak (spec rule for mph).
    v.peak_dkmh =
        opt_.units == 'M' ? static_cast<std::int32_t>(std::lround(peak_tenths * 1.609344)) : peak_tenths;
    if (!client_) {
      v.lost = true;
    }
    active_.emplace(v.id, std::move(v));
    return true;
  }

  void spawn_test_targets() {
    for (char dir : {'X', 'Y'}) {
      Vehicle v;
      v.test = true;
      v.dir = dir;
      v.target = allocate_target();
      if (v.target == 0) {
        continue;  // no number free for a self-test target in a flood: skip this one
      }
      v.frames = 3;
      v.speed_tenths.assign(3, dir == 'X' ? 1000 : 500);
      v.x_m = 0.0;
      v.range_start_m = 30.0;
      v.rng.seed(traffic_rng_());
      test_targets_.emplace(v.target, std::move(v));
    }
    for (auto& [t, v] : test_targets_) {
      for (int i = 0; i < v.frames; ++i) {
        send_detect(v, i, static_cast<int>(test_targets_.size()));
      }
      v.finished = true;
    }
  }

  int allocate_target() {
    std::set<int> busy;
    for (const auto& [id, v] : active_) {
      busy.insert(v.target);
    }
    for (const auto& [t, v] : test_targets_) {
      busy.insert(t);
    }
    // Only in flood mode: default runs cycle through all 99 numbers long before a reuse could matter, and
    // keep their exact historical sequences.
    const std::int64_t now = traffic_ms();
    const auto recently_released = [&](int t) {
      const auto it = released_ms_.find(t);
      return opt_.flood_factor > 1 && it != released_ms_.end() && now - it->second < kTargetReuseMs;
    };
    for (int i = 0; i < 99; ++i) {
      next_target_ = next_target_ % 99 + 1;
      if (!busy.contains(next_target_) && !recently_released(next_target_)) {
        return next_target_;
      }
    }
    return opt_.flood_factor > 1 ? 0 : next_target_;
  }

  test::DetectFields detect_fields(Vehicle& v, int frame, int targets) {
    test::DetectFields f;
    f.time_cs = frame_time_cs();
    f.target = v.target;
    f.targets = std::min(targets, 99);
    f.dir = v.dir;
    f.speed_tenths = std::min(v.speed_tenths[static_cast<std::size_t>(frame)], 9999);
    f.units = opt_.units;
    const double range =
        std::clamp(v.range_start_m - v.speed_mps * frame * opt_.frame_interval_ms / 1000.0, 0.0, 999.9);
    const double x = v.x_m + (uniform01(v.rng) - 0.5) * 0.2;  // a little lateral wobble per frame
    f.range_dm = static_cast<std::int32_t>(std::lround(range * 10.0));
    f.coord = opt_.coord;
    if (opt_.coord == 'P') {
      const double az = std::asin(std::clamp(x / std::max(range, 0.1), -1.0, 1.0)) * 180.0 / std::numbers::pi;
      f.x_tenths = static_cast<std::int32_t>(std::lround(az * 10.0));
    } else {
      f.x_tenths = static_cast<std::int32_t>(std::lround(std::clamp(x, -99.9, 99.9) * 10.0));
    }
    f.amplitude_ddb = 400 + static_cast<std::int32_t>(uniform01(v.rng) * 400.0);
    return f;
  }

  void send_detect(Vehicle& v, int frame, int targets) {
    auto f = detect_fields(v, frame, targets);
    if (frame == 0) {
      v.first_radar_time = test::radar_time_field(f.time_cs);
    }
    std::string bytes;
    if (opt_.noise_rate > 0.0 && uniform01(noise_rng_) < opt_.noise_rate) {
      bytes += test::noise_bytes(1 + noise_rng_() % 8, noise_rng_);
    }
    std::string frame_bytes = test::detect_frame(f);
    if (opt_.corrupt_rate > 0.0 && uniform01(noise_rng_) < opt_.corrupt_rate) {
      frame_bytes = test::with_wrong_checksum(frame_bytes, static_cast<std::uint8_t>(1 + noise_rng_() % 255));
      ++v.corrupted;
      v.peak_corrupted = v.peak_corrupted || (!v.test && frame == v.peak_index);
    }
    bytes += frame_bytes;
    enqueue({std::move(bytes), v.test ? 0 : v.id});
  }

  void answer_poll() {
    int active = 0;
    for (const auto& [id, v] : active_) {
      active += v.finished ? 0 : 1;
    }
    if (active == 0) {
      enqueue({status_frame(), 0});
    } else {
      for (auto& [id, v] : active_) {
        if (!v.finished) {
          const int frame = std::clamp(v.next_frame, 0, v.frames - 1);
          if (opt_.poll_only && v.queued == 0) {
            v.first_radar_time = test::radar_time_field(radar_cs());
          }
          auto f = detect_fields(v, frame, active);
          enqueue({test::detect_frame(f), opt_.poll_only ? v.id : 0});
        }
      }
    }
    write_more();
  }

  std::string status_frame() {
    last_status_ms_ = traffic_started_ ? traffic_ms() : 0;
    return test::status_frame(frame_time_cs(), opt_.status_code, test::radar_status_text(opt_.status_code));
  }

  // ---- reboot ----

  void reboot() {
    rebooting_ = true;
    for (auto& [id, v] : active_) {
      if (!v.finished) {
        v.finished = true;
        v.lost = true;  // the vehicle's remaining frames never go out
      }
    }
    test_targets_.clear();
    drop_client();
    error_code ignored;
    acceptor_.close(ignored);
    reboot_timer_.expires_after(std::chrono::milliseconds(kRebootOutageMs));
    reboot_timer_.async_wait([this](const error_code& ec) {
      if (ec || stopping_) {
        return;
      }
      rebooting_ = false;
      clock_base_cs_ = 0;
      power_on_ms_ = traffic_ms();
      // The next reboot counts from this power-up, not from the last one.
      next_reboot_ms_ = power_on_ms_ + static_cast<std::int64_t>(opt_.reboot_every_s * 1000);
      if (!open(port_)) {
        shutdown();
        return;
      }
      accept();
    });
  }

  // ---- ground truth ----

  Vehicle* find(std::uint64_t id) {
    if (id == 0) {
      return nullptr;
    }
    auto it = active_.find(id);
    return it == active_.end() ? nullptr : &it->second;
  }

  void mark_lost(std::uint64_t id) {
    if (auto* v = find(id)) {
      v->lost = true;
    }
  }

  void finalize_vehicles() {
    for (auto it = active_.begin(); it != active_.end();) {
      Vehicle& v = it->second;
      if (v.finished && v.written == v.queued) {
        write_truth(v);
        it = active_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void write_truth(const Vehicle& v) {
    const bool sent = !v.lost && v.queued > 0 && (opt_.poll_only || v.written == v.frames);
    sent ? ++sent_ : ++unsent_;
    if (!truth_.is_open()) {
      return;
    }
    nlohmann::json j = {
        {"vehicle", v.id},
        {"target", v.target},
        {"lane", v.lane},
        {"dir", std::string(1, v.dir)},
        {"peak_dkmh", v.peak_dkmh},
        {"units", std::string(1, opt_.units)},
        {"first_radar_time", v.first_radar_time},
        {"frames", opt_.poll_only ? v.written : v.frames},
        {"corrupted_frames", v.corrupted},
        {"peak_corrupted", v.peak_corrupted},
        {"sent", sent},
        {"last_frame_unix_ms", v.last_written_unix_ms},
    };
    truth_ << j.dump() << '\n';
    truth_.flush();
  }

  void maybe_exit() {
    if (opt_.exit_when_done && !more_vehicles() && active_.empty() && queue_.empty()) {
      shutdown();
    }
  }

  void shutdown() {
    if (stopping_) {
      return;
    }
    stopping_ = true;
    error_code ignored;
    // Vehicles cut short by the shutdown are recorded as not sent, so the ground truth is complete.
    for (auto& [id, v] : active_) {
      v.finished = true;
      if (v.written != v.frames) {
        v.lost = true;
      }
      write_truth(v);
    }
    active_.clear();
    if (client_) {
      client_->close(ignored);
      client_.reset();
    }
    acceptor_.close(ignored);
    tick_timer_.cancel();
    reboot_timer_.cancel();
    signals_.cancel();
    io_.stop();
  }

  asio::io_context& io_;
  Options opt_;
  tcp::acceptor acceptor_;
  asio::steady_timer tick_timer_;
  asio::steady_timer reboot_timer_;
  asio::signal_set signals_;
  std::uint16_t port_ = 0;
  std::unique_ptr<tcp::socket> client_;
  std::array<char, 256> read_buf_{};
  std::string poll_buffer_;
  std::deque<OutFrame> queue_;
  std::size_t queued_bytes_ = 0;
  std::vector<asio::const_buffer> buffers_;
  std::size_t in_flight_ = 0;
  bool writing_ = false;
  bool fast_tick_pending_ = false;
  bool traffic_started_ = false;
  bool rebooting_ = false;
  bool stopping_ = false;
  Clock::time_point epoch_start_;
  std::int64_t tick_ = 0;
  std::int64_t power_on_ms_ = 0;
  double next_arrival_ms_ = 0.0;
  std::int64_t next_reboot_ms_ = -1;
  std::int64_t next_selftest_ms_ = -1;
  std::int64_t last_status_ms_ = 0;
  std::mt19937_64 traffic_rng_;
  std::mt19937_64 noise_rng_;
  std::mt19937_64 garbage_rng_;  // its own stream, so flood options leave the traffic sequence unchanged
  double garbage_due_ = 0.0;     // garbage bytes owed to the line (fractions carried between ticks)
  std::int64_t clock_base_cs_;
  std::optional<std::int64_t> stepped_cs_;  // --clock-step-back: the last frame's time
  bool stream_started_ = false;
  Clock::time_point stream_start_;
  std::uint64_t stream_frames_ = 0;
  std::map<std::uint64_t, Vehicle> active_;  // vehicles generating or awaiting delivery
  std::map<int, Vehicle> test_targets_;
  std::uint64_t spawned_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t unsent_ = 0;
  int next_target_ = 0;
  std::map<int, std::int64_t> released_ms_;  // track number -> traffic ms its last vehicle finished
  std::ofstream truth_;
};

// The server, the traffic and the radar clock.
void add_radar_traffic_options(CLI::App& app, Options& opt, std::string& units, std::string& coord) {
  app.add_option("--port", opt.port, "TCP port (0 = any; printed as 'listening <port>')");
  app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
  app.add_option("--seed", opt.seed, "seed for vehicles, noise and corruption")->capture_default_str();
  app.add_option("--vehicles", opt.vehicles, "vehicles in total (0 = endless)")->capture_default_str();
  app.add_option("--rate", opt.rate, "vehicles per second (0 = as fast as the client reads)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--lanes", opt.lanes, "lanes, numbered 1.. from x = 0 to the right")
      ->check(CLI::Range(1, 20))
      ->capture_default_str();
  app.add_option("--lane-width", opt.lane_width, "lane width, metres")
      ->check(CLI::Range(0.5, 10.0))
      ->capture_default_str();
  app.add_option("--speed-min", opt.speed_min, "lowest peak speed, km/h")
      ->check(CLI::Range(0.0, 999.0))
      ->capture_default_str();
  app.add_option("--speed-max", opt.speed_max, "highest peak speed, km/h")
      ->check(CLI::Range(0.0, 999.0))
      ->capture_default_str();
  app.add_option("--units", units, "K (km/h) or M (mph)")
      ->check(CLI::IsMember({"K", "M"}))
      ->capture_default_str();
  app.add_option("--coord", coord, "C (lateral metres) or P (azimuth degrees)")
      ->check(CLI::IsMember({"C", "P"}))
      ->capture_default_str();
  app.add_option("--frames-per-track", opt.frames_per_track, "detect frames per vehicle")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--frame-interval-ms", opt.frame_interval_ms, "ms between a target's frames")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_flag("--start-on-connect,!--no-start-on-connect", opt.start_on_connect,
               "traffic clock starts when the first client connects")
      ->capture_default_str();
  app.add_option("--clock-start", opt.clock_start_s, "radar clock at start, seconds")
      ->check(CLI::Range(0.0, 99999.99))
      ->capture_default_str();
  app.add_option("--drift-ppm", opt.drift_ppm, "radar clock drift against real time, ppm")
      ->capture_default_str();
}

// Reboots, self-tests, faults and the hostile modes; the ground truth.
void add_radar_fault_options(CLI::App& app, Options& opt) {
  app.add_option("--reboot-every", opt.reboot_every_s, "reboot every S seconds of traffic (0 = never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--selftest-every", opt.selftest_every_s,
                 "X/Y self-test targets every S seconds (0 = never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--noise-rate", opt.noise_rate, "probability of noise bytes before a frame")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--corrupt-rate", opt.corrupt_rate, "probability of a frame's checksum being wrong")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--garbage-bps", opt.garbage_bps,
                 "flood: random bytes per second (STX/ETX included) between frames (0 = none)")
      ->check(CLI::Range(0.0, 1.0e9))
      ->capture_default_str();
  app.add_option("--flood-factor", opt.flood_factor,
                 "flood: K times --rate, and up to K vehicles side by side per lane")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_flag("--stream-flood", opt.stream_flood,
               "hostile: no vehicles, valid detect frames (one target per lane) as fast as the client reads, "
               "on a radar clock that follows real time");
  app.add_option("--clock-step-back", opt.clock_step_back_s,
                 "hostile: stamp every frame this many seconds before the previous one (0 = off)")
      ->check(CLI::Range(0.0, 50000.0))
      ->capture_default_str();
  app.add_option("--status-code", opt.status_code, "status code the radar reports (00, 1x, 2x)")
      ->check(CLI::Range(0, 99))
      ->capture_default_str();
  app.add_option("--ground-truth", opt.ground_truth, "write one JSON line per vehicle to this file");
  app.add_flag("--poll-only", opt.poll_only, "do not stream: detect frames only in answers to *P polls");
  app.add_flag("--exit-when-done", opt.exit_when_done, "exit once --vehicles vehicles are done");
}

}  // namespace

int run_radar_sim(int argc, char** argv) {
  Options opt;
  CLI::App app{"Traffic radar simulator: serves the radar protocol (specs/radar.md) on TCP", "radar"};
  std::string units = "K";
  std::string coord = "C";
  add_radar_traffic_options(app, opt, units, coord);
  add_radar_fault_options(app, opt);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  opt.units = units[0];
  opt.coord = coord[0];
  if (opt.speed_max < opt.speed_min) {
    std::cerr << "radar: --speed-max must be >= --speed-min\n";
    return 2;
  }
  if (opt.lanes * opt.lane_width >= 99.0) {
    std::cerr << "radar: lanes * lane width must stay below 99 m (the x field is +DD.D)\n";
    return 2;
  }
  asio::io_context io;
  RadarSim sim(io, std::move(opt));
  return sim.run();
}

}  // namespace cpd::sim
