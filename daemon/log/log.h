// Logging: one event per line on stderr in journald form ("<N>" priority prefix), naming component and
// device. A per-key rate limit keeps a flapping device from flooding the journal.
#pragma once

#include <cstdio>
#include <string_view>

namespace cpd::log {

enum class Level { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

void set_min_level(Level level);
// Where lines go (tests); nullptr = stderr. Resets the rate limits.
void set_output(std::FILE* out);
// component: "store", "mqtt", "radar", ...; device: device id or empty.
void write(Level level, std::string_view component, std::string_view device, std::string_view message);

inline void error(std::string_view c, std::string_view d, std::string_view m) {
  write(Level::kError, c, d, m);
}
inline void warn(std::string_view c, std::string_view d, std::string_view m) {
  write(Level::kWarning, c, d, m);
}
inline void notice(std::string_view c, std::string_view d, std::string_view m) {
  write(Level::kNotice, c, d, m);
}
inline void info(std::string_view c, std::string_view d, std::string_view m) {
  write(Level::kInfo, c, d, m);
}
inline void debug(std::string_view c, std::string_view d, std::string_view m) {
  write(Level::kDebug, c, d, m);
}

}  // namespace cpd::log
