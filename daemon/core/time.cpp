#include "daemon/core/time.h"

#include <chrono>

namespace cpd {

UnixMs SystemWallClock::now_ms() const {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace cpd
