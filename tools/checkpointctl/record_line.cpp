// One readable line per evidence record (verify --print, tail): the fields an operator looks for first.
#include "tools/checkpointctl/record_line.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>
#include <utility>
#include <vector>

namespace cpd::ctl {

namespace {

bool is_envelope(const std::string& key) {
  for (const char* name : {"v", "gateway", "seq", "prev", "id", "type", "time_ms", "created_ms"}) {
    if (key == name) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string calendar_text(std::int64_t ms, char separator, const std::string& zone) {
  std::int64_t secs = ms / 1000;
  std::int64_t frac = ms % 1000;
  if (frac < 0) {
    frac += 1000;
    --secs;
  }
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) {
    return std::to_string(ms) + " ms";
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d%c%02d:%02d:%02d.%03d", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, separator, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(frac));
  return buf + zone;
}

std::string iso8601_utc(std::int64_t ms) {
  return calendar_text(ms, 'T', "Z");
}

// One readable line per record: seq, type, time, and up to four short scalar fields, the ones an
// operator looks for first (plate, speed, device, lane) ahead of the rest.
std::string record_line(std::uint64_t seq, const nlohmann::json& body) {
  std::string line = "seq " + std::to_string(seq) + "  " + body.value("type", std::string("?"));
  if (body.contains("time_ms") && body["time_ms"].is_number_integer()) {
    line += "  " + iso8601_utc(body["time_ms"].get<std::int64_t>());
  }
  // Rank 0..3 for the fields an operator looks for first, 4 for the rest (then by name).
  const auto rank = [](const std::string& key) {
    int r = 0;
    for (const char* word : {"plate", "speed", "device", "lane"}) {
      if (key.find(word) != std::string::npos) {
        return r;
      }
      ++r;
    }
    return r;
  };
  std::vector<std::pair<int, std::string>> ranked;
  for (const auto& [key, value] : body.items()) {
    if (is_envelope(key) || !value.is_primitive() || value.is_null()) {
      continue;
    }
    if (value.is_string() && value.get_ref<const std::string&>().size() > 64) {
      continue;
    }
    ranked.emplace_back(rank(key), key);
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> preferred;
  // Recordings and links: what a supervisor looks for (who, which file, which enforcement records).
  const std::string type = body.value("type", std::string());
  if (type == "recording") {
    preferred = {"officer_name", "recorder_id", "file_name", "important", "links"};
  } else if (type == "link") {
    preferred = {"recording", "record", "record_type"};
  } else if (type == "recording_fault") {
    preferred = {"device", "reason", "unique_id", "attempts"};
  }
  for (auto& entry : ranked) {
    preferred.push_back(std::move(entry.second));
  }
  std::size_t shown = 0;
  std::set<std::string> done;
  for (const auto& key : preferred) {
    if (!body.contains(key) || !done.insert(key).second) {
      continue;
    }
    if (shown++ == 5) {
      break;
    }
    const auto& value = body[key];
    std::string text = value.is_string() ? value.get<std::string>() : value.dump();
    // Record text comes from devices: keep terminal control sequences out of the operator's screen.
    for (char& c : text) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        c = '?';
      }
    }
    line += "  " + key + "=" + text;
  }
  return line;
}

}  // namespace cpd::ctl
