// The daemon's /metrics body: a pure function from its status snapshot, its latency histograms and the
// process's own figures to Prometheus text (docs/metrics.md lists every metric).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/metrics/histogram.h"

namespace cpd::metrics {

// Figures of this process from /proc; a field that could not be read is left empty and its metric omitted.
struct ProcessStats {
  std::optional<double> resident_memory_bytes;
  std::optional<double> virtual_memory_bytes;
  std::optional<double> open_fds;
  std::optional<double> max_fds;
  std::optional<double> cpu_seconds;         // user + system
  std::optional<double> start_time_seconds;  // Unix time
};

// Reads /proc/self/{stat,fd} and /proc/stat (btime). Never throws; a few hundred microseconds.
ProcessStats read_process_stats();

// Parses one /proc/<pid>/stat line (the command name may hold spaces and parentheses). ticks_per_second is
// sysconf(_SC_CLK_TCK), page_size sysconf(_SC_PAGESIZE), boot_time_s /proc/stat's btime (nullopt: no start
// time). Fills cpu, start time, resident and virtual memory; leaves what it cannot parse empty.
ProcessStats parse_proc_stat(const std::string& stat_line, double ticks_per_second, double page_size,
                             std::optional<double> boot_time_s);

// `status` is the daemon's status_snapshot(): {"backlog", "backlog_oldest_ms"?, "devices": {id: adapter
// status}, "broker": forwarder status, "storage": storage guard status, "time_ms", "records_by_type"?: {type:
// count}}. Missing or mistyped keys drop the metrics they feed; nothing here throws on the snapshot's shape.
std::string render_daemon_metrics(const nlohmann::json& status, const Histograms& histograms,
                                  const ProcessStats& process);

}  // namespace cpd::metrics
