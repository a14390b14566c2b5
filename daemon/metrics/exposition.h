// Prometheus text exposition format 0.0.4: families of counters, gauges and histograms collected in any
// order and written grouped, HELP/TYPE once per family. Pure: no I/O, no clock.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/metrics/histogram.h"

namespace cpd::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge, kHistogram };

// Label value escaping of the text format: backslash, double quote and line feed.
std::string escape_label_value(std::string_view value);
// HELP text escaping: backslash and line feed.
std::string escape_help(std::string_view help);
// A sample value as the format writes it: shortest round-trip decimal, +Inf, -Inf, NaN.
std::string format_value(double value);
// [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_metric_name(std::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved), and not "le" (histograms own it)
bool valid_label_name(std::string_view name);

class Exposition {
 public:
  // Each add returns false (and writes nothing) for a mistake in the caller's code rather than in data:
  // an invalid metric or label name, a counter whose name does not end in _total, a histogram name ending
  // in _bucket/_sum/_count, a family reused with another type or help, or a histogram whose counts do not
  // match its bounds or add up to its count. Label values are any bytes (escaped).
  bool add_counter(std::string_view name, std::string_view help, const Labels& labels, double value);
  bool add_gauge(std::string_view name, std::string_view help, const Labels& labels, double value);
  bool add_histogram(std::string_view name, std::string_view help, const Labels& labels,
                     const HistogramSnapshot& histogram);

  // Families in the order first added, samples in the order added; ends with a line feed (or is empty).
  std::string text() const;

 private:
  struct Family {
    std::string name;
    std::string help;
    MetricType type;
    std::vector<std::string> lines;  // complete sample lines without the trailing line feed
  };

  Family* family(std::string_view name, std::string_view help, MetricType type, const Labels& labels);

  std::vector<Family> families_;
};

}  // namespace cpd::metrics
