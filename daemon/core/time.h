// Time as the core sees it: Unix milliseconds (UTC), from an injectable clock so tests fix it.
#pragma once

#include <cstdint>

namespace cpd {

using UnixMs = std::int64_t;

class WallClock {
 public:
  virtual ~WallClock() = default;
  virtual UnixMs now_ms() const = 0;
};

// The real clock (CLOCK_REALTIME); the only place the core's users read the system time.
class SystemWallClock final : public WallClock {
 public:
  UnixMs now_ms() const override;
};

}  // namespace cpd
