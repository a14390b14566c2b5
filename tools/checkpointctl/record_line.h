// One readable line per evidence record, shared by `verify --print` and `tail`.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace cpd::ctl {

// UTC ISO 8601 with milliseconds, e.g. 2026-03-01T08:15:02.123Z.
std::string iso8601_utc(std::int64_t ms);

// `ms` as "YYYY-MM-DD<separator>HH:MM:SS.mmm<zone>" on the UTC calendar (add an offset first for local time).
std::string calendar_text(std::int64_t ms, char separator, const std::string& zone);

// seq, type, UTC time and up to five short fields an operator looks for first (plate, speed, device, lane;
// for recordings the officer and file). Control characters from devices are replaced by '?'.
std::string record_line(std::uint64_t seq, const nlohmann::json& body);

}  // namespace cpd::ctl
