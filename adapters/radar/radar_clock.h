// Maps the radar's own clock (centiseconds since power-up, wrapping at 100000 s) to UTC milliseconds.
// Pure: receive times come in as arguments, so tests drive drift, wraps, jitter, reboots and floods.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

#include "adapters/events.h"
#include "daemon/core/time.h"

namespace cpd::adapters {

class RadarClockMapper {
 public:
  // The window is kept as the minimum offset per bucket of receive time, so its memory is bounded by
  // window / bucket whatever the frame rate. The estimate is the minimum over the buckets that touch the
  // window: the exact window plus at most one bucket at its old end. On normal traffic that is the exact
  // window's estimate at nearly every frame, at most one radar tick (10 ms) from it for under a second
  // when a minimum leaves, and no less accurate (radar_clock_test: AsTheExactWindowOnNormalInput).
  static constexpr std::int64_t kBucketMs = 1000;
  // A step that is not a reboot after a link loss counts; this many within kUnstableWindowMs and the
  // radar's clock is unstable (a device fault, reported once) until it holds for kStableMs.
  static constexpr int kUnstableSteps = 3;
  static constexpr std::int64_t kUnstableWindowMs = 60'000;
  static constexpr std::int64_t kStableMs = 60'000;

  enum class Change {
    kNone,
    kBecameUnstable,  // this sample made the clock unstable
    kBecameStable,    // the clock held for kStableMs: mapping by radar time resumes in a new epoch
  };

  struct Mapping {
    std::int64_t radar_time_cs = 0;  // unwrapped within the current epoch
    UnixMs utc_ms = 0;               // with the estimate after this sample; the receive time while unstable
    bool new_epoch = false;          // this sample started a new epoch: tracks of the old one are finished
    bool step = false;               // the radar clock stepped here (reboot or fault), counted in steps()
    bool unstable = false;           // the clock is unstable: radar time cannot be mapped, use utc_ms
    Change change = Change::kNone;
  };

  // window_s: sliding window of the minimum-offset filter. reboot_threshold_ms: an offset change
  // beyond this that delay cannot explain means the radar clock restarted (or the wall clock stepped).
  explicit RadarClockMapper(int window_s, int reboot_threshold_ms = 5000);

  // One radar timestamp (0..9999999 cs as sent) observed at `received_ms` (UTC).
  Mapping observe(std::int64_t raw_cs, UnixMs received_ms);

  // UTC for an unwrapped radar time of the current epoch.
  UnixMs to_utc(std::int64_t radar_time_cs) const { return radar_time_cs * 10 + offset_ms(); }

  // The link went down: the radar may reboot before the next sample, so the next one is checked
  // against the estimate in both directions.
  void on_disconnect() { disconnected_ = true; }

  bool has_estimate() const { return !buckets_.empty(); }
  RadarClockEstimate estimate() const;
  bool unstable() const { return unstable_; }
  std::uint64_t steps() const { return steps_total_; }
  std::size_t buckets() const { return buckets_.size(); }  // what the window holds in memory

 private:
  struct Bucket {
    UnixMs start_ms;
    std::int64_t min_offset_ms;
    std::int64_t samples;
  };

  std::int64_t offset_ms() const { return mins_.empty() ? 0 : mins_.front().min_offset_ms; }
  void start_epoch(std::int64_t raw_cs, bool count_epoch);
  void clear_window();
  void push(UnixMs received_ms, std::int64_t offset);
  // A step while the link stayed up: true when it makes the clock unstable.
  bool count_step(UnixMs received_ms);

  std::int64_t window_ms_;
  std::int64_t reboot_threshold_ms_;
  std::deque<Bucket> buckets_;  // receive-time order, one per kBucketMs with a sample
  // Monotonic deque over the buckets: minima increase front to back, so front() is the window minimum.
  // Delay only ever adds to (receive - radar), so the minimum is the best estimate of the true offset.
  std::deque<Bucket> mins_;
  std::int64_t window_samples_ = 0;
  std::optional<std::int64_t> last_raw_cs_;
  std::int32_t epoch_ = 0;
  std::int32_t wraps_ = 0;
  bool disconnected_ = false;
  std::deque<UnixMs> recent_steps_;  // receive times of the last kUnstableSteps steps
  std::uint64_t steps_total_ = 0;
  bool unstable_ = false;
  UnixMs last_step_ms_ = 0;
};

}  // namespace cpd::adapters
