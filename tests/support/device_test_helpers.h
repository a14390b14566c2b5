// Helpers the device adapters' unit tests share: a gateway clock that stands still, and the events of one
// type among those an adapter emitted.
#pragma once

#include <variant>
#include <vector>

#include "adapters/events.h"
#include "daemon/core/time.h"

namespace cpd::test {

// The gateway's wall clock, stopped at one instant.
class FixedClock final : public WallClock {
 public:
  explicit FixedClock(UnixMs now_ms) : now_ms_(now_ms) {}
  UnixMs now_ms() const override { return now_ms_; }

 private:
  UnixMs now_ms_;
};

// The events of type T, in order.
template <typename T>
std::vector<T> of_type(const std::vector<adapters::DeviceEvent>& events) {
  std::vector<T> out;
  for (const auto& e : events) {
    if (const auto* t = std::get_if<T>(&e)) {
      out.push_back(*t);
    }
  }
  return out;
}

}  // namespace cpd::test
