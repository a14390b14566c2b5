// ASCII text helpers of the camera protocol parsers (HTTP header names, multipart and Digest parameters are
// case-insensitive ASCII; the locale plays no part).
#pragma once

#include <algorithm>
#include <cctype>
#include <string_view>

namespace cpd::adapters {

// a == b ignoring ASCII case.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace cpd::adapters
