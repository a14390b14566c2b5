// render_daemon_metrics on a status snapshot shaped like the daemon's (keys as the adapters, forwarder and
// storage guard write them), and the /proc/self/stat parser.
#include "daemon/metrics/daemon_metrics.h"

#include <gtest/gtest.h>

#include <ctime>
#include <map>
#include <sstream>
#include <string>

namespace cpd::metrics {
namespace {

using nlohmann::json;

json sample_status() {
  return json::parse(R"({
    "backlog": 3, "backlog_oldest_ms": 1700000000000, "time_ms": 1700000004500,
    "records_by_type": {"passage": 12, "speed_measurement": 5, "audit": 1},
    "devices": {
      "radar-1": {"kind": "radar", "id": "radar-1", "state": "connected", "link": "tcp 127.0.0.1:1",
                  "frames": 1234, "tracks": 17, "open_tracks": 1, "test_targets": 2, "dropped_frames": 4,
                  "errors": {"checksum": 3, "too_long": 0, "field_count": 1, "field_syntax": 0,
                             "unknown_type": 0, "truncated": 0},
                  "noise_bytes": 77, "reconnects": 2, "status_code": 11, "status_text": "warm-up",
                  "clock": {"offset_ms": 1699990000000, "samples": 40, "window_ms": 60000, "epoch": 0,
                            "wraps": 0},
                  "last_frame_ms": 1700000004000, "last_error": ""},
      "cam-1": {"kind": "camera", "id": "cam-1", "state": "disconnected", "url": "http://x", "radar": "radar-1",
                "device": null, "events": 9, "heartbeats": 30, "other_events": 1, "duplicates": 2,
                "pictures": 16, "missing_pictures": 2, "parts": 60,
                "errors": {"http_401": 1, "truncated_part": 2, "noise_bytes": 500},
                "clock_offset_ms": -250, "clock_offset_uncertainty_ms": 12, "clock_offset_rtt_ms": 24,
                "clock_offset_measured_ms": 1700000000000, "clock_offset_samples": 3,
                "clock_offset_restarts": 0, "time_mode": "offset", "last_event_ms": 0,
                "last_heartbeat_ms": 1700000000000, "reconnects": 5, "last_error": "refused"},
      "dock-1": {"kind": "recorder_dock", "id": "dock-1", "url": "http://y", "state": "warning", "station_id": "s",
                 "firmware": "1", "files_listed": 8, "collected": 6, "bytes_collected": 6000000,
                 "md5_mismatches": 1, "resumes": 2, "acks": 6, "ack_conflicts": 0, "faults": 0, "queued": 2,
                 "downloading": 1, "repeated": 0, "errors": {}, "reconnects": 0,
                 "station_clock_offset_ms": null, "last_error": ""}
    },
    "broker": {"uri": "tcp://127.0.0.1:1883", "connected": true, "tls": null, "last_error": null,
               "published": 40, "failed": 2, "connects": 1, "disconnects": 0, "acked_seq": 40,
               "latency": {"count": 40, "p50_ms": 3.0, "p99_ms": 9.0, "max_ms": 10.0}},
    "storage": {"state": "warning", "text": "...", "store_free_bytes": 1000, "media_free_bytes": 2000,
                "reserve_bytes": 268435456, "refused_media_writes": 3, "commit_failures": 0,
                "salvaged_facts": 2}
  })");
}

bool has_line(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (l == line) {
      return true;
    }
  }
  return false;
}

std::size_t count_prefix(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::size_t n = 0;
  for (std::string l; std::getline(in, l);) {
    n += l.starts_with(prefix) ? 1 : 0;
  }
  return n;
}

ProcessStats sample_process() {
  ProcessStats p;
  p.resident_memory_bytes = 12345678;
  p.open_fds = 21;
  p.max_fds = 1024;
  p.cpu_seconds = 1.5;
  p.start_time_seconds = 1700000000.25;
  return p;
}

class DaemonMetrics : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.publish_latency.observe(0.003);
    h_.publish_latency.observe(0.0004);
    h_.publish_latency.observe(40);
    h_.fsync_latency.observe(0.002);
    text_ = render_daemon_metrics(sample_status(), h_, sample_process());
  }
  Histograms h_;
  std::string text_;
};

TEST_F(DaemonMetrics, DeviceCounters) {
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_frames_total{device="radar-1",kind="radar"} 1234)"))
      << text_;
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_frames_total{device="cam-1",kind="camera"} 60)"));
  EXPECT_TRUE(
      has_line(text_, R"(checkpointd_device_events_total{device="radar-1",kind="radar",event="track"} 17)"));
  EXPECT_TRUE(
      has_line(text_, R"(checkpointd_device_events_total{device="cam-1",kind="camera",event="anpr"} 9)"));
  EXPECT_TRUE(has_line(
      text_,
      R"(checkpointd_device_events_total{device="dock-1",kind="recorder_dock",event="recording_collected"} 6)"));
  EXPECT_TRUE(has_line(
      text_, R"(checkpointd_device_errors_total{device="radar-1",kind="radar",reason="checksum"} 3)"));
  EXPECT_TRUE(has_line(
      text_, R"(checkpointd_device_errors_total{device="radar-1",kind="radar",reason="truncated"} 0)"));
  EXPECT_TRUE(has_line(
      text_, R"(checkpointd_device_errors_total{device="cam-1",kind="camera",reason="http_401"} 1)"));
  // The camera's noise byte count is not an error count.
  EXPECT_EQ(text_.find(R"(reason="noise_bytes")"), std::string::npos);
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_noise_bytes_total{device="cam-1",kind="camera"} 500)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_noise_bytes_total{device="radar-1",kind="radar"} 77)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_reconnects_total{device="cam-1",kind="camera"} 5)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_radar_dropped_frames_total{device="radar-1"} 4)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_recorder_collected_bytes_total{device="dock-1"} 6000000)"));
}

TEST_F(DaemonMetrics, DeviceGauges) {
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_up{device="radar-1",kind="radar"} 1)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_up{device="cam-1",kind="camera"} 0)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_device_up{device="dock-1",kind="recorder_dock"} 1)"));
  EXPECT_TRUE(
      has_line(text_, R"(checkpointd_device_clock_offset_seconds{device="cam-1",kind="camera"} -0.25)"));
  EXPECT_TRUE(has_line(
      text_, R"(checkpointd_device_clock_offset_uncertainty_seconds{device="cam-1",kind="camera"} 0.012)"));
  // The radar's mapping offset is not a clock error; the dock has not measured one yet.
  EXPECT_EQ(count_prefix(text_, "checkpointd_device_clock_offset_seconds{"), 1u);
  EXPECT_TRUE(has_line(
      text_, R"(checkpointd_device_last_event_timestamp_seconds{device="radar-1",kind="radar"} 1700000004)"));
  EXPECT_EQ(text_.find(R"(checkpointd_device_last_event_timestamp_seconds{device="cam-1")"),
            std::string::npos)
      << "0 means never";
  EXPECT_TRUE(has_line(text_, R"(checkpointd_radar_status_code{device="radar-1"} 11)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_recorder_queued_recordings{device="dock-1"} 2)"));
}

TEST_F(DaemonMetrics, RecordsBacklogBrokerStorage) {
  EXPECT_TRUE(has_line(text_, R"(checkpointd_records_total{type="passage"} 12)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_records_total{type="audit"} 1)"));
  EXPECT_TRUE(has_line(text_, "checkpointd_outbox_records 3"));
  EXPECT_TRUE(has_line(text_, "checkpointd_outbox_oldest_age_seconds 4.5"));
  EXPECT_TRUE(has_line(text_, "checkpointd_broker_up 1"));
  EXPECT_TRUE(has_line(text_, "checkpointd_records_published_total 40"));
  EXPECT_TRUE(has_line(text_, "checkpointd_records_publish_failed_total 2"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_storage_free_bytes{volume="media"} 2000)"));
  EXPECT_TRUE(has_line(text_, "checkpointd_storage_state 1"));
  EXPECT_TRUE(has_line(text_, "checkpointd_storage_refused_media_writes_total 3"));
  EXPECT_TRUE(has_line(text_, "checkpointd_storage_salvaged_facts_total 2"));
}

// Issue 12: a broker refusing publishes (PUBACK 135 from an ACL) shows in the metrics by reason.
TEST(DaemonMetricsBroker, RefusedPublishesByReasonAndTheRefusingGauge) {
  nlohmann::json status = sample_status();
  status["broker"]["refused"] = 7;
  status["broker"]["refusals"] = {{{"reason_code", 135}, {"reason", "Not authorized"}, {"count", 5}},
                                  {{"reason_code", 151}, {"reason", "Quota exceeded"}, {"count", 2}}};
  status["broker"]["refusing"] = {{"seq", 41},     {"reason_code", 135}, {"reason", "Not authorized"},
                                  {"since_ms", 1}, {"attempts", 5},      {"retry_at_ms", 2}};
  Histograms h;
  const std::string text = render_daemon_metrics(status, h, sample_process());
  EXPECT_TRUE(
      has_line(text, R"(checkpointd_broker_publish_refusals_total{code="135",reason="Not authorized"} 5)"))
      << text;
  EXPECT_TRUE(
      has_line(text, R"(checkpointd_broker_publish_refusals_total{code="151",reason="Quota exceeded"} 2)"));
  EXPECT_TRUE(has_line(text, "checkpointd_broker_refusing_publishes 1"));
  status["broker"]["refusing"] = nullptr;
  EXPECT_TRUE(has_line(render_daemon_metrics(status, h, sample_process()),
                       "checkpointd_broker_refusing_publishes 0"));
}

TEST_F(DaemonMetrics, HistogramsAndProcess) {
  EXPECT_TRUE(has_line(text_, R"(checkpointd_publish_latency_seconds_bucket{le="0.001"} 1)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_publish_latency_seconds_bucket{le="0.005"} 2)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_publish_latency_seconds_bucket{le="30"} 2)"));
  EXPECT_TRUE(has_line(text_, R"(checkpointd_publish_latency_seconds_bucket{le="+Inf"} 3)"));
  EXPECT_TRUE(has_line(text_, "checkpointd_publish_latency_seconds_count 3"));
  EXPECT_TRUE(has_line(text_, "checkpointd_store_fsync_duration_seconds_count 1"));
  EXPECT_TRUE(has_line(text_, "process_resident_memory_bytes 12345678"));
  EXPECT_TRUE(has_line(text_, "process_open_fds 21"));
  EXPECT_TRUE(has_line(text_, "process_cpu_seconds_total 1.5"));
  EXPECT_TRUE(has_line(text_, "process_start_time_seconds 1700000000.25"));
  EXPECT_EQ(text_.find("process_virtual_memory_bytes"), std::string::npos) << "unread: omitted";
  EXPECT_TRUE(has_line(text_, R"(checkpointd_build_info{version=")" CPD_VERSION R"("} 1)"));
}

TEST_F(DaemonMetrics, EveryFamilyHasHelpAndTypeOnceAndCountersEndInTotal) {
  std::istringstream in(text_);
  std::map<std::string, int> types;
  for (std::string l; std::getline(in, l);) {
    if (l.starts_with("# TYPE ")) {
      std::istringstream f(l.substr(7));
      std::string name, type;
      f >> name >> type;
      ++types[name];
      if (type == "counter") {
        EXPECT_TRUE(name.ends_with("_total")) << name;
      }
      EXPECT_NE(text_.find("# HELP " + name + " "), std::string::npos) << name;
    }
  }
  EXPECT_GT(types.size(), 30u);
  for (const auto& [name, n] : types) {
    EXPECT_EQ(n, 1) << name;
  }
}

TEST(DaemonMetricsShape, ToleratesMissingAndMistypedKeys) {
  Histograms h;
  const ProcessStats none;
  for (const char* snapshot :
       {"{}", "null", "[]", R"({"devices": 5, "broker": "x", "storage": [], "backlog": "many"})",
        R"({"devices": {"r": {"kind": "radar", "frames": "lots", "errors": [1]}}, "records_by_type": [1]})",
        R"({"devices": {"r": null, "c": {"kind": "camera", "errors": {"x": "y"}}}})"}) {
    const auto text = render_daemon_metrics(json::parse(snapshot), h, none);
    EXPECT_TRUE(has_line(text, "checkpointd_publish_latency_seconds_count 0")) << snapshot;
    EXPECT_EQ(text.find("checkpointd_device_frames_total{"), std::string::npos) << snapshot;
  }
  // No backlog entry: no oldest-age line; an empty outbox has age 0 even if a stale oldest time is passed.
  const auto empty =
      render_daemon_metrics(json{{"backlog", 0}, {"backlog_oldest_ms", 5}, {"time_ms", 9000}}, h, none);
  EXPECT_TRUE(has_line(empty, "checkpointd_outbox_oldest_age_seconds 0")) << empty;
  EXPECT_EQ(render_daemon_metrics(json::object(), h, none).find("checkpointd_records_total"),
            std::string::npos);
}

TEST(ProcStat, ParsesFieldsAfterACommandNameWithParentheses) {
  // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
  // cstime priority nice threads itrealvalue starttime vsize rss ...
  const std::string line =
      "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 104857600 300 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
  const auto p = parse_proc_stat(line, 100, 4096, 1700000000);
  ASSERT_TRUE(p.cpu_seconds);
  EXPECT_DOUBLE_EQ(*p.cpu_seconds, 3.0);
  ASSERT_TRUE(p.start_time_seconds);
  EXPECT_DOUBLE_EQ(*p.start_time_seconds, 1700000010.0);
  EXPECT_EQ(p.virtual_memory_bytes, 104857600.0);
  EXPECT_EQ(p.resident_memory_bytes, 300.0 * 4096);

  EXPECT_FALSE(parse_proc_stat("garbage", 100, 4096, 1).cpu_seconds);
  EXPECT_FALSE(parse_proc_stat("1 (x) S 1 2", 100, 4096, 1).resident_memory_bytes);
  EXPECT_FALSE(parse_proc_stat(line, 100, 4096, std::nullopt).start_time_seconds);
}

TEST(ProcStat, ReadsThisProcess) {
  const auto p = read_process_stats();
  ASSERT_TRUE(p.resident_memory_bytes);
  EXPECT_GT(*p.resident_memory_bytes, 100000.0);
  ASSERT_TRUE(p.open_fds);
  EXPECT_GE(*p.open_fds, 3.0);
  ASSERT_TRUE(p.cpu_seconds);
  EXPECT_GE(*p.cpu_seconds, 0.0);
  ASSERT_TRUE(p.start_time_seconds);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(*p.start_time_seconds, now + 2);
  EXPECT_GT(*p.start_time_seconds, now - 3600) << "this test process started recently";
}

}  // namespace
}  // namespace cpd::metrics
