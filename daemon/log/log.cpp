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
// Errors have a budget of their own, so a flood of warnings never hides an error, yet a device failing
// in a loop cannot flood the journal with errors either.
constexpr int kBurst = 20;
constexpr auto kWindow = std::chrono::seconds(10);

struct RateState {
  std::chrono::steady_clock::time_point window_start;
  int lines = 0;
  int suppressed = 0;
};

std::mutex g_mutex;
std::FILE* g_out = nullptr;  // nullptr: stderr
std::unordered_map<std::string, RateState> g_rates;

}  // namespace

void set_min_level(Level level) {
  g_min_level = static_cast<int>(level);
}

void set_output(std::FILE* out) {
  std::lock_guard lock(g_mutex);
  g_out = out;
  g_rates.clear();
}

void write(Level level, std::string_view component, std::string_view device, std::string_view message) {
  if (static_cast<int>(level) > g_min_level.load()) {
    return;
  }
  std::string key(component);
  key += '/';
  key += device;
  if (level == Level::kError) {
    key += "/error";
  }
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(g_mutex);
  std::FILE* out = g_out == nullptr ? stderr : g_out;
  auto& st = g_rates[key];
  if (now - st.window_start > kWindow) {
    if (st.suppressed > 0) {
      std::fprintf(out, "<4>%.*s%s%.*s: %d similar lines suppressed\n", static_cast<int>(component.size()),
                   component.data(), device.empty() ? "" : " ", static_cast<int>(device.size()),
                   device.data(), st.suppressed);
    }
    st = RateState{now, 0, 0};
  }
  if (++st.lines > kBurst) {
    if (st.suppressed++ == 0) {
      std::fprintf(out, "<4>%.*s%s%.*s: more than %d lines in %d s; holding back similar lines for now\n",
                   static_cast<int>(component.size()), component.data(), device.empty() ? "" : " ",
                   static_cast<int>(device.size()), device.data(), kBurst,
                   static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(kWindow).count()));
      std::fflush(out);
    }
    return;
  }
  std::fprintf(out, "<%d>%.*s%s%.*s: %.*s\n", static_cast<int>(level), static_cast<int>(component.size()),
               component.data(), device.empty() ? "" : " ", static_cast<int>(device.size()), device.data(),
               static_cast<int>(message.size()), message.data());
  std::fflush(out);
}

}  // namespace cpd::log
