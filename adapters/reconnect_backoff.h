// Reconnect delay shared by every adapter: exponential backoff with "equal jitter", kept within
// [initial_ms, max_ms], so many gateways restarting together do not hammer one device in lockstep.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace cpd::adapters {

template <class Rng>
std::int64_t reconnect_backoff_ms(int attempt, int initial_ms, int max_ms, Rng& rng) {
  const std::int64_t initial = std::max(1, initial_ms);
  const std::int64_t cap = std::max<std::int64_t>(initial, max_ms);
  std::int64_t d = initial;
  for (int i = 0; i < attempt && d < cap; ++i) {
    d *= 2;
  }
  d = std::min(d, cap);
  std::uniform_int_distribution<std::int64_t> jitter(d / 2, d);
  return std::clamp(jitter(rng), initial, cap);
}

}  // namespace cpd::adapters
