// Prometheus text format writer. Families are kept apart so callers can loop over devices once and add to
// several families per device; the format requires each family's lines to be contiguous.
#include "daemon/metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <cstdint>

namespace cpd::metrics {
namespace {

bool name_char(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
  return alpha || (!first && c >= '0' && c <= '9');
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// {a="x",b="y"} or "" for no labels; `extra` (the histogram's le) goes last.
std::string label_text(const Labels& labels, const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && extra == nullptr) {
    return {};
  }
  std::string out = "{";
  bool first = true;
  auto put = [&](const std::string& k, const std::string& v) {
    if (!first) {
      out += ',';
    }
    first = false;
    out += k;
    out += "=\"";
    out += escape_label_value(v);
    out += '"';
  };
  for (const auto& [k, v] : labels) {
    put(k, v);
  }
  if (extra != nullptr) {
    put(extra->first, extra->second);
  }
  out += '}';
  return out;
}

const char* type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) {
    return "NaN";
  }
  if (std::isinf(value)) {
    return value > 0 ? "+Inf" : "-Inf";
  }
  if (value == 0.0) {
    return "0";  // also for -0.0, which some parsers print oddly
  }
  char buf[64];
  // Whole numbers (counters, bytes, timestamps in ms) as integers: shortest round-trip would write 6e+06.
  if (std::fabs(value) < 1e15 && std::trunc(value) == value) {
    const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(value));
    return std::string(buf, r.ptr);
  }
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, r.ptr);
}

bool valid_metric_name(std::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, true)) {
      return false;
    }
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.starts_with("__") || name == "le") {
    return false;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, false)) {
      return false;
    }
  }
  return true;
}

Exposition::Family* Exposition::family(std::string_view name, std::string_view help, MetricType type,
                                       const Labels& labels) {
  if (!valid_metric_name(name)) {
    return nullptr;
  }
  for (const auto& [k, v] : labels) {
    if (!valid_label_name(k)) {
      return nullptr;
    }
  }
  for (auto& f : families_) {
    if (f.name == name) {
      return f.type == type && f.help == help ? &f : nullptr;
    }
  }
  // A histogram's series names must not collide with another family's name either way round.
  for (const auto& f : families_) {
    for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
      if ((f.type == MetricType::kHistogram && name == f.name + std::string(suffix)) ||
          (type == MetricType::kHistogram && f.name == std::string(name) + std::string(suffix))) {
        return nullptr;
      }
    }
  }
  families_.push_back(Family{std::string(name), std::string(help), type, {}});
  return &families_.back();
}

bool Exposition::add_counter(std::string_view name, std::string_view help, const Labels& labels,
                             double value) {
  if (!ends_with(name, "_total")) {
    return false;
  }
  Family* f = family(name, help, MetricType::kCounter, labels);
  if (f == nullptr) {
    return false;
  }
  f->lines.push_back(f->name + label_text(labels) + ' ' + format_value(value));
  return true;
}

bool Exposition::add_gauge(std::string_view name, std::string_view help, const Labels& labels, double value) {
  Family* f = family(name, help, MetricType::kGauge, labels);
  if (f == nullptr) {
    return false;
  }
  f->lines.push_back(f->name + label_text(labels) + ' ' + format_value(value));
  return true;
}

bool Exposition::add_histogram(std::string_view name, std::string_view help, const Labels& labels,
                               const HistogramSnapshot& h) {
  if (ends_with(name, "_bucket") || ends_with(name, "_sum") || ends_with(name, "_count") ||
      h.counts.size() != h.bounds.size() + 1) {
    return false;
  }
  std::uint64_t total = 0;
  for (auto c : h.counts) {
    total += c;
  }
  if (total != h.count) {
    return false;
  }
  for (std::size_t i = 0; i < h.bounds.size(); ++i) {
    if (!std::isfinite(h.bounds[i]) || (i > 0 && h.bounds[i] <= h.bounds[i - 1])) {
      return false;
    }
  }
  Family* f = family(name, help, MetricType::kHistogram, labels);
  if (f == nullptr) {
    return false;
  }
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    const std::pair<std::string, std::string> le{"le", format_value(h.bounds[i])};
    f->lines.push_back(f->name + "_bucket" + label_text(labels, &le) + ' ' +
                       format_value(static_cast<double>(cumulative)));
  }
  // The +Inf bucket is the count by definition, so the two can never disagree in a scrape.
  const std::pair<std::string, std::string> inf{"le", "+Inf"};
  f->lines.push_back(f->name + "_bucket" + label_text(labels, &inf) + ' ' +
                     format_value(static_cast<double>(h.count)));
  f->lines.push_back(f->name + "_sum" + label_text(labels) + ' ' + format_value(h.sum));
  f->lines.push_back(f->name + "_count" + label_text(labels) + ' ' +
                     format_value(static_cast<double>(h.count)));
  return true;
}

std::string Exposition::text() const {
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP " + f.name + ' ' + escape_help(f.help) + '\n';
    out += "# TYPE " + f.name + ' ' + type_name(f.type) + '\n';
    for (const auto& line : f.lines) {
      out += line;
      out += '\n';
    }
  }
  return out;
}

}  // namespace cpd::metrics
