#include "daemon/log/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>

namespace cpd::log {
namespace {

std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};

// At most kBurst lines per (component, device) in any kWindow; the rest are counted and summarised.
constexpr int kBurst = 20;
constexpr auto kWindow = std::chrono::seconds(10);

struct RateState {
  std::chrono::steady_clock::time_point window_start;
  int lines = 0;
  int suppressed = 0;
};

std::mutex g_mutex;
std::unordered_map<std::string, RateState> g_rates;

}  // namespace

void set_min_level(Level level) { g_min_level = static_cast<int>(level); }

void write(Level level, std::string_view component, std::string_view device, std::string_view message) {
  if (static_cast<int>(level) > g_min_level.load()) {
    return;
  }
  std::string key(component);
  key += '/';
  key += device;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(g_mutex);
  auto& st = g_rates[key];
  if (now - st.window_start > kWindow) {
    if (st.suppressed > 0) {
      std::fprintf(stderr, "<4>%.*s%s%.*s: %d similar lines suppressed\n", static_cast<int>(component.size()),
                   component.data(), device.empty() ? "" : " ", static_cast<int>(device.size()), device.data(),
                   st.suppressed);
    }
    st = RateState{now, 0, 0};
  }
  if (++st.lines > kBurst && level != Level::kError) {
    ++st.suppressed;
    return;
  }
  std::fprintf(stderr, "<%d>%.*s%s%.*s: %.*s\n", static_cast<int>(level), static_cast<int>(component.size()),
               component.data(), device.empty() ? "" : " ", static_cast<int>(device.size()), device.data(),
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}

}  // namespace cpd::log
