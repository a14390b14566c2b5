// What the simulators share: their random numbers, the wall clock, and the radar's motion model that
// `checkpoint-sim radar` and scenarios both follow.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace cpd::sim {

inline constexpr std::int64_t kRadarWrapCs = 10'000'000;  // the radar clock (centiseconds) wraps at 100 000 s
inline constexpr std::int32_t kProfileStepDkmh = 5;       // speed falls off this much per frame from the peak

// Uniform in [0, 1). Our own mapping (not std::uniform_real_distribution) so sequences match across standard
// libraries.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11U) * 0x1.0p-53;
}

inline std::int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace cpd::sim
