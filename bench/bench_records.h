// The record the benches seal by the thousand: the radar part of a speed_measurement with 20 raw frames
// (~2.7 kB as a JWS), the i-th one 50 ms after the one before.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/core/record.h"

namespace cpd::bench {

inline Fact speed_measurement_fact(std::size_t i) {
  Fact f;
  f.type = "speed_measurement";
  f.time_ms = 1767225600000 + static_cast<UnixMs>(i) * 50;
  nlohmann::json frames = nlohmann::json::array();
  for (int j = 0; j < 20; ++j) {
    frames.push_back("AA55" + std::string(60, static_cast<char>('0' + j % 10)));
  }
  f.fields = {{"lane", 1 + static_cast<int>(i % 2)},
              {"speed_dkmh", 900 + static_cast<int>(i % 400)},
              {"raw_frames", frames},
              {"site", {{"name", "K1234+500"}, {"road", "G60"}}},
              {"valid", true},
              {"invalid_reasons", nlohmann::json::array()}};
  return f;
}

}  // namespace cpd::bench
