// The text exposition writer against the 0.0.4 format rules: escaping, grouping, histogram series.
#include "daemon/metrics/exposition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace cpd::metrics {
namespace {

std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

TEST(Exposition, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(escape_label_value(R"(a\b"c)"
                               "\nd"),
            R"(a\\b\"c\nd)");
  EXPECT_EQ(escape_help("back\\slash \"quoted\"\nnext"), "back\\\\slash \"quoted\"\\nnext");

  Exposition e;
  ASSERT_TRUE(e.add_gauge("x_temp", "Help with \\ and\nnewline", {{"dev", "say \"hi\"\n\\"}}, 1));
  EXPECT_EQ(e.text(),
            "# HELP x_temp Help with \\\\ and\\nnewline\n"
            "# TYPE x_temp gauge\n"
            "x_temp{dev=\"say \\\"hi\\\"\\n\\\\\"} 1\n");
}

TEST(Exposition, FormatsValues) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-0.0), "0");
  EXPECT_EQ(format_value(12), "12");
  EXPECT_EQ(format_value(0.005), "0.005");
  EXPECT_EQ(format_value(-1.5), "-1.5");
  EXPECT_EQ(format_value(1234567890123.0), "1234567890123");
  EXPECT_EQ(format_value(6000000), "6000000");
  EXPECT_EQ(format_value(1700000000.25), "1700000000.25");
  EXPECT_EQ(format_value(1e300), "1e+300");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
}

TEST(Exposition, HelpAndTypeOncePerFamilyWithSamplesGrouped) {
  Exposition e;
  // Interleaved, as a loop over devices adds them.
  ASSERT_TRUE(e.add_counter("app_frames_total", "Frames", {{"device", "a"}}, 1));
  ASSERT_TRUE(e.add_gauge("app_up", "Up", {{"device", "a"}}, 1));
  ASSERT_TRUE(e.add_counter("app_frames_total", "Frames", {{"device", "b"}}, 2));
  ASSERT_TRUE(e.add_gauge("app_up", "Up", {{"device", "b"}}, 0));
  EXPECT_EQ(e.text(),
            "# HELP app_frames_total Frames\n"
            "# TYPE app_frames_total counter\n"
            "app_frames_total{device=\"a\"} 1\n"
            "app_frames_total{device=\"b\"} 2\n"
            "# HELP app_up Up\n"
            "# TYPE app_up gauge\n"
            "app_up{device=\"a\"} 1\n"
            "app_up{device=\"b\"} 0\n");
}

TEST(Exposition, RejectsCallerMistakes) {
  Exposition e;
  EXPECT_FALSE(e.add_counter("app_frames", "no _total suffix", {}, 1));
  EXPECT_FALSE(e.add_gauge("9lives", "bad name", {}, 1));
  EXPECT_FALSE(e.add_gauge("app-x", "bad name", {}, 1));
  EXPECT_FALSE(e.add_gauge("app_x", "bad label", {{"bad-label", "v"}}, 1));
  EXPECT_FALSE(e.add_gauge("app_x", "reserved label", {{"__name__", "v"}}, 1));
  EXPECT_FALSE(e.add_gauge("app_x", "le is the histogram's", {{"le", "1"}}, 1));
  ASSERT_TRUE(e.add_gauge("app_x", "X", {}, 1));
  EXPECT_FALSE(e.add_counter("app_x", "X", {}, 1)) << "same family, other type";
  EXPECT_FALSE(e.add_gauge("app_x", "other help", {}, 1)) << "same family, other help";
  HistogramSnapshot h{{1.0}, {0, 0}, 0, 0};
  EXPECT_FALSE(e.add_histogram("app_h_count", "suffix", {}, h));
  ASSERT_TRUE(e.add_histogram("app_h", "H", {}, h));
  EXPECT_FALSE(e.add_gauge("app_h_sum", "collides with the histogram's series", {}, 1));
  EXPECT_FALSE(e.add_histogram("app_y", "counts size", {}, HistogramSnapshot{{1.0}, {0}, 0, 0}));
  EXPECT_FALSE(e.add_histogram("app_y", "count disagrees", {}, HistogramSnapshot{{1.0}, {1, 1}, 3, 0}));
  EXPECT_FALSE(e.add_histogram("app_y", "unsorted", {}, HistogramSnapshot{{2.0, 1.0}, {0, 0, 0}, 0, 0}));
  // Only the two good families were written.
  EXPECT_EQ(occurrences(e.text(), "# TYPE "), 2u);
  EXPECT_EQ(e.text().find("app_y"), std::string::npos);
}

TEST(Exposition, HistogramBucketsAreCumulativeWithInfEqualToCount) {
  Exposition e;
  // Per-bucket counts: 2 in (..0.01], 0 in (0.01..0.1], 3 in (0.1..1], 1 above 1.
  HistogramSnapshot h{{0.01, 0.1, 1}, {2, 0, 3, 1}, 6, 4.25};
  ASSERT_TRUE(e.add_histogram("app_latency_seconds", "Latency", {{"path", "a"}}, h));
  ASSERT_TRUE(e.add_histogram("app_latency_seconds", "Latency", {{"path", "b"}},
                              HistogramSnapshot{{0.01, 0.1, 1}, {0, 0, 0, 0}, 0, 0}));
  EXPECT_EQ(e.text(),
            "# HELP app_latency_seconds Latency\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{path=\"a\",le=\"0.01\"} 2\n"
            "app_latency_seconds_bucket{path=\"a\",le=\"0.1\"} 2\n"
            "app_latency_seconds_bucket{path=\"a\",le=\"1\"} 5\n"
            "app_latency_seconds_bucket{path=\"a\",le=\"+Inf\"} 6\n"
            "app_latency_seconds_sum{path=\"a\"} 4.25\n"
            "app_latency_seconds_count{path=\"a\"} 6\n"
            "app_latency_seconds_bucket{path=\"b\",le=\"0.01\"} 0\n"
            "app_latency_seconds_bucket{path=\"b\",le=\"0.1\"} 0\n"
            "app_latency_seconds_bucket{path=\"b\",le=\"1\"} 0\n"
            "app_latency_seconds_bucket{path=\"b\",le=\"+Inf\"} 0\n"
            "app_latency_seconds_sum{path=\"b\"} 0\n"
            "app_latency_seconds_count{path=\"b\"} 0\n");
}

TEST(Exposition, EmptyIsEmpty) {
  EXPECT_EQ(Exposition().text(), "");
}

}  // namespace
}  // namespace cpd::metrics
