// Helpers shared by the config tests: where a piece of text sits in a document, and catching ConfigError.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "daemon/config/schema.h"

namespace cpd::config::testing {

// "file:line:column" (1-based) of the nth occurrence of `needle` in `text`; the test fails if absent.
inline std::string place_in(const std::string& file, std::string_view text, std::string_view needle,
                            int nth = 0) {
  std::size_t pos = text.find(needle);
  for (int i = 0; i < nth && pos != std::string_view::npos; ++i) {
    pos = text.find(needle, pos + 1);
  }
  if (pos == std::string_view::npos) {
    ADD_FAILURE() << "test bug: '" << needle << "' not in the document";
    return file + ":?:?";
  }
  int line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < pos; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return file + ":" + std::to_string(line) + ":" + std::to_string(pos - line_start + 1);
}

// Runs `f`, which must throw ConfigError, and returns it; records a failure if it does not throw.
template <typename F>
ConfigError error_of(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a ConfigError";
  return ConfigError("", 0, 0, "", "(none thrown)");
}

}  // namespace cpd::config::testing
