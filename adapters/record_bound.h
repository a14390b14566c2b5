// How many records one device may cause: a token bucket of `per_s` records per second with bursts up to
// `burst`, counting what it suppresses in episodes, so a device gone mad costs a bounded rate of store and
// uplink and the gap is reported (start and end of each episode), never silent. Pure: times come in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>

#include "daemon/core/time.h"

namespace cpd::adapters {

class RecordBound {
 public:
  // Nothing suppressed for this long ends an episode: at most two notices per this period.
  static constexpr std::int64_t kQuietMs = 10'000;

  struct Episode {
    UnixMs first_ms = 0;      // first record suppressed
    UnixMs last_ms = 0;       // last record suppressed
    std::uint64_t count = 0;  // records suppressed in between
  };

  // The burst is what one second at the rate could not hold: a disconnect closing every open track at
  // once (up to 99) must pass.
  static int default_burst(int per_s) { return std::max(2 * per_s, 128); }

  RecordBound(int per_s, int burst)
      : per_s_(std::max(per_s, 1)),
        capacity_milli_(std::int64_t{std::max(burst, 1)} * 1000),
        tokens_milli_(capacity_milli_) {}

  // One record the device caused at now_ms: true when it may go out. false: suppressed and counted;
  // `started` then says whether this opened an episode (the caller reports that once).
  bool admit(UnixMs now_ms, bool* started = nullptr) {
    refill(now_ms);
    if (tokens_milli_ >= 1000) {
      tokens_milli_ -= 1000;
      return true;
    }
    if (started != nullptr) {
      *started = !episode_;
    }
    if (!episode_) {
      episode_ = Episode{now_ms, now_ms, 0};
    }
    episode_->last_ms = now_ms;
    ++episode_->count;
    ++suppressed_;
    return false;
  }

  // The episode in progress has ended (nothing suppressed for kQuietMs): returns it, once.
  std::optional<Episode> take_ended(UnixMs now_ms) {
    if (!episode_ || now_ms - episode_->last_ms < kQuietMs) {
      return std::nullopt;
    }
    auto e = episode_;
    episode_.reset();
    return e;
  }

  bool suppressing() const { return episode_.has_value(); }
  std::uint64_t suppressed() const { return suppressed_; }
  int per_s() const { return per_s_; }
  int burst() const { return static_cast<int>(capacity_milli_ / 1000); }

 private:
  void refill(UnixMs now_ms) {
    if (!seen_) {
      seen_ = true;
      last_ms_ = now_ms;
      return;
    }
    // A gateway clock that went back refills nothing until it passes the last time again.
    if (now_ms > last_ms_) {
      // per_s records per 1000 ms is per_s thousandths of a record per ms.
      const std::int64_t add = (now_ms - last_ms_) * per_s_;
      tokens_milli_ =
          add >= capacity_milli_ ? capacity_milli_ : std::min(capacity_milli_, tokens_milli_ + add);
      last_ms_ = now_ms;
    }
  }

  int per_s_;
  std::int64_t capacity_milli_;
  std::int64_t tokens_milli_;
  bool seen_ = false;  // last_ms_ is set
  UnixMs last_ms_ = 0;
  std::optional<Episode> episode_;
  std::uint64_t suppressed_ = 0;
};

}  // namespace cpd::adapters
