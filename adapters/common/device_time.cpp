// Fixed-width decimal fields and a proleptic Gregorian calendar: the device time formats of device_time.h.
#include "adapters/common/device_time.h"

#include <cstdint>

namespace cpd::adapters {

namespace {

// Fixed-width decimal field; nullopt on any non-digit.
std::optional<int> digits(std::string_view s, std::size_t at, std::size_t n) {
  if (at + n > s.size()) {
    return std::nullopt;
  }
  int v = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') {
      return std::nullopt;
    }
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// Days since 1970-01-01 (proleptic Gregorian), Howard Hinnant's algorithm.
std::int64_t days_from_civil(std::int64_t y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool valid_date(int y, int mo, int d) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1970 || mo < 1 || mo > 12 || d < 1) {
    return false;
  }
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= kDays[mo - 1] + (mo == 2 && leap ? 1 : 0);
}

std::optional<UnixMs> local_to_unix(int y, int mo, int d, int h, int mi, int s, int ms, int offset_min) {
  if (!valid_date(y, mo, d) || h > 23 || mi > 59 || s > 60 || ms > 999) {
    return std::nullopt;
  }
  const std::int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
  return secs * 1000 + ms - static_cast<std::int64_t>(offset_min) * 60000;
}

}  // namespace

std::optional<IsoTime> parse_iso8601(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS[.f+](Z|±HH:MM)
  const auto y = digits(t, 0, 4);
  const auto mo = digits(t, 5, 2);
  const auto d = digits(t, 8, 2);
  const auto h = digits(t, 11, 2);
  const auto mi = digits(t, 14, 2);
  const auto s = digits(t, 17, 2);
  if (!y || !mo || !d || !h || !mi || !s || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') ||
      t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  std::size_t i = 19;
  IsoTime out;
  int ms = 0;
  if (i < t.size() && t[i] == '.') {
    ++i;
    int n = 0;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
      if (n < 3) {
        ms = ms * 10 + (t[i] - '0');
      }
      ++n;
      ++i;
    }
    if (n == 0 || n > 9) {
      return std::nullopt;
    }
    for (int k = n; k < 3; ++k) {
      ms *= 10;
    }
    out.has_fraction = true;
  }
  if (i >= t.size()) {
    return std::nullopt;  // no offset: not an instant
  }
  int offset = 0;
  if ((t[i] == 'Z' || t[i] == 'z') && i + 1 == t.size()) {
    offset = 0;
  } else if ((t[i] == '+' || t[i] == '-') && i + 6 == t.size() && t[i + 3] == ':') {
    const auto oh = digits(t, i + 1, 2);
    const auto om = digits(t, i + 4, 2);
    if (!oh || !om || *oh > 14 || *om > 59) {
      return std::nullopt;
    }
    offset = (*oh * 60 + *om) * (t[i] == '-' ? -1 : 1);
  } else {
    return std::nullopt;
  }
  const auto ms_total = local_to_unix(*y, *mo, *d, *h, *mi, *s, ms, offset);
  if (!ms_total) {
    return std::nullopt;
  }
  out.unix_ms = *ms_total;
  out.utc_offset_min = offset;
  return out;
}

std::optional<UnixMs> parse_abs_time(std::string_view t, int utc_offset_min) {
  if (t.size() != 17) {
    return std::nullopt;
  }
  const auto y = digits(t, 0, 4);
  const auto mo = digits(t, 4, 2);
  const auto d = digits(t, 6, 2);
  const auto h = digits(t, 8, 2);
  const auto mi = digits(t, 10, 2);
  const auto s = digits(t, 12, 2);
  const auto ms = digits(t, 14, 3);
  if (!y || !mo || !d || !h || !mi || !s || !ms) {
    return std::nullopt;
  }
  return local_to_unix(*y, *mo, *d, *h, *mi, *s, *ms, utc_offset_min);
}

}  // namespace cpd::adapters
