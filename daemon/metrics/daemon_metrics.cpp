// render_daemon_metrics: maps the keys of each adapter's, the forwarder's and the storage guard's status()
// onto metric families; read_process_stats: the process collector figures Prometheus clients export.
#include "daemon/metrics/daemon_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

#include "daemon/metrics/exposition.h"

#ifndef CPD_VERSION
#define CPD_VERSION "unknown"
#endif

namespace cpd::metrics {
namespace {

using nlohmann::json;

const json* member(const json& obj, const std::string& key) {
  if (!obj.is_object()) {
    return nullptr;
  }
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::optional<double> number(const json& obj, const std::string& key) {
  const json* v = member(obj, key);
  if (v == nullptr || !v->is_number()) {
    return std::nullopt;
  }
  return v->get<double>();
}

std::string text(const json& obj, const std::string& key) {
  const json* v = member(obj, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

// Help texts, one per family, so every add of a family passes the same text.
namespace help {
constexpr std::string_view kBuildInfo = "checkpointd build; the value is always 1";
constexpr std::string_view kDeviceUp = "1 when the gateway has a working link to the device, else 0";
constexpr std::string_view kFrames =
    "Link-level units received from the device and parsed: radar serial frames, camera multipart parts";
constexpr std::string_view kEvents = "Typed events the adapter took from the device, by event";
constexpr std::string_view kErrors =
    "Errors counted by the adapter, by reason (radar: frame parse errors; camera/recorder: parse, HTTP and "
    "link errors)";
constexpr std::string_view kNoise = "Bytes received from the device outside any valid frame or part";
constexpr std::string_view kReconnects = "Times the adapter re-established its link to the device";
constexpr std::string_view kClockOffset =
    "Device clock minus gateway clock as last measured (camera, recorder dock station)";
constexpr std::string_view kClockUncertainty = "Uncertainty of the device clock offset measurement";
constexpr std::string_view kLastEvent = "Unix time of the last frame (radar) or plate read (camera) received";
constexpr std::string_view kRadarStatus = "Status code the radar last reported (0 ok, 1x warning, 2x fault)";
constexpr std::string_view kRadarOpenTracks = "Radar tracks being built (vehicle still in the beam)";
constexpr std::string_view kRadarDropped =
    "Radar frames dropped by the track builder (out of order, implausible)";
constexpr std::string_view kCameraPictures = "Camera pictures stored in the media store";
constexpr std::string_view kCameraMissing = "Camera pictures announced by an event but not stored";
constexpr std::string_view kRecorderBytes = "Bytes of recordings collected from the dock station";
constexpr std::string_view kRecorderMd5 = "Recording downloads whose MD5 did not match the station's";
constexpr std::string_view kRecorderResumes = "Recording downloads resumed with a Range request";
constexpr std::string_view kRecorderFaults = "Recordings given up on and reported as recording_fault";
constexpr std::string_view kRecorderQueued = "Recordings listed by the station and waiting to be downloaded";
constexpr std::string_view kRecorderDownloading = "Recordings being downloaded now";
constexpr std::string_view kRecords = "Evidence records sealed and committed, by record type";
constexpr std::string_view kBacklog = "Committed records not yet acknowledged by the broker (outbox depth)";
constexpr std::string_view kBacklogAge = "Age of the oldest record in the outbox; 0 when it is empty";
constexpr std::string_view kBrokerUp = "1 when the MQTT session to the broker is up, else 0";
constexpr std::string_view kPublished = "Records the broker acknowledged (PUBACK)";
constexpr std::string_view kPublishFailed = "Record publishes that failed and will be retried";
constexpr std::string_view kPublishRefused =
    "Publishes the broker refused with a PUBACK reason code >= 0x80 (e.g. 135 Not authorized), by reason; "
    "the records stay in the outbox";
constexpr std::string_view kBrokerRefusing =
    "1 while the broker refuses publishes (the refused record is retried with backoff), else 0";
constexpr std::string_view kConnects = "MQTT connections established";
constexpr std::string_view kDisconnects = "MQTT connections lost or closed";
constexpr std::string_view kAckedSeq = "Highest record sequence number acknowledged by the broker";
constexpr std::string_view kPublishLatency = "Time from a record being ready to send to its PUBACK";
constexpr std::string_view kFsyncLatency = "Duration of the store's commit fsync";
constexpr std::string_view kStorageFree = "Free bytes on the volume of the store file or the media directory";
constexpr std::string_view kStorageReserve = "Free space kept for evidence records (store.reserve_mb)";
constexpr std::string_view kStorageState =
    "Storage alarm: 0 ok, 1 warning (below reserve), 2 fault (commits fail)";
constexpr std::string_view kStorageRefused =
    "Pictures and recordings not stored because free space was below the reserve";
constexpr std::string_view kStorageCommitFailures = "Store transactions that failed and were retried";
constexpr std::string_view kStorageSalvaged =
    "Facts the sealer refused that were sealed salvaged (a field dropped and named): a gateway bug";
constexpr std::string_view kStart = "Start time of the process since the Unix epoch";
constexpr std::string_view kRss = "Resident memory size";
constexpr std::string_view kVsz = "Virtual memory size";
constexpr std::string_view kFds = "Number of open file descriptors";
constexpr std::string_view kMaxFds = "Maximum number of open file descriptors (RLIMIT_NOFILE)";
constexpr std::string_view kCpu = "User and system CPU time spent";
}  // namespace help

constexpr double kMs = 1000.0;

// The device status's number `key` as a counter (or gauge) with `labels`, when the status has it.
void counter_from(Exposition& out, std::string_view name, std::string_view h, const Labels& labels,
                  const json& dev, const std::string& key) {
  if (const auto v = number(dev, key)) {
    out.add_counter(name, h, labels, *v);
  }
}

void gauge_from(Exposition& out, std::string_view name, std::string_view h, const Labels& labels,
                const json& dev, const std::string& key) {
  if (const auto v = number(dev, key)) {
    out.add_gauge(name, h, labels, *v);
  }
}

// What the device sent: link-level frames and typed events, by kind.
void device_traffic_metrics(Exposition& out, const Labels& base, const std::string& kind, const json& dev) {
  auto event = [&](const std::string& key, const std::string& ev) {
    if (const auto v = number(dev, key)) {
      Labels l = base;
      l.emplace_back("event", ev);
      out.add_counter("checkpointd_device_events_total", help::kEvents, l, *v);
    }
  };

  if (kind == "radar") {
    counter_from(out, "checkpointd_device_frames_total", help::kFrames, base, dev, "frames");
    event("tracks", "track");
    event("test_targets", "test_target");
  } else if (kind == "camera") {
    counter_from(out, "checkpointd_device_frames_total", help::kFrames, base, dev, "parts");
    event("events", "anpr");
    event("heartbeats", "heartbeat");
    event("other_events", "other");
    event("duplicates", "duplicate");
  } else if (kind == "recorder_dock") {
    event("files_listed", "file_listed");
    event("collected", "recording_collected");
    event("acks", "ack");
  }
}

// Errors by reason, and the noise bytes outside any valid frame.
void device_error_metrics(Exposition& out, const Labels& base, const json& dev) {
  std::optional<double> noise = number(dev, "noise_bytes");
  if (const json* errors = member(dev, "errors"); errors != nullptr && errors->is_object()) {
    for (const auto& [reason, count] : errors->items()) {
      if (!count.is_number()) {
        continue;
      }
      // The camera keeps its multipart noise byte count among its errors; it is bytes, not a count of errors.
      if (reason == "noise_bytes") {
        noise = count.get<double>();
        continue;
      }
      Labels l = base;
      l.emplace_back("reason", reason);
      out.add_counter("checkpointd_device_errors_total", help::kErrors, l, count.get<double>());
    }
  }
  if (noise) {
    out.add_counter("checkpointd_device_noise_bytes_total", help::kNoise, base, *noise);
  }
}

// The device clock's offset and its uncertainty, and when the device last sent an event.
void device_clock_metrics(Exposition& out, const Labels& base, const std::string& kind, const json& dev) {
  // Radar time is a counter since power-up mapped onto UTC, not a wall clock, so it has no offset to show.
  std::optional<double> offset_ms =
      kind == "recorder_dock" ? number(dev, "station_clock_offset_ms") : number(dev, "clock_offset_ms");
  if (offset_ms) {
    out.add_gauge("checkpointd_device_clock_offset_seconds", help::kClockOffset, base, *offset_ms / kMs);
  }
  if (const auto u = number(dev, "clock_offset_uncertainty_ms")) {
    out.add_gauge("checkpointd_device_clock_offset_uncertainty_seconds", help::kClockUncertainty, base,
                  *u / kMs);
  }
  const auto last = kind == "radar" ? number(dev, "last_frame_ms") : number(dev, "last_event_ms");
  if (last && *last > 0) {
    out.add_gauge("checkpointd_device_last_event_timestamp_seconds", help::kLastEvent, base, *last / kMs);
  }
}

// The families only one kind of device has, labelled by device alone.
void device_kind_metrics(Exposition& out, const std::string& id, const std::string& kind, const json& dev) {
  const Labels dev_only{{"device", id}};
  auto kind_counter = [&](std::string_view name, std::string_view h, const std::string& key) {
    counter_from(out, name, h, dev_only, dev, key);
  };
  auto kind_gauge = [&](std::string_view name, std::string_view h, const std::string& key) {
    gauge_from(out, name, h, dev_only, dev, key);
  };
  if (kind == "radar") {
    kind_gauge("checkpointd_radar_status_code", help::kRadarStatus, "status_code");
    kind_gauge("checkpointd_radar_open_tracks", help::kRadarOpenTracks, "open_tracks");
    kind_counter("checkpointd_radar_dropped_frames_total", help::kRadarDropped, "dropped_frames");
  } else if (kind == "camera") {
    kind_counter("checkpointd_camera_pictures_total", help::kCameraPictures, "pictures");
    kind_counter("checkpointd_camera_missing_pictures_total", help::kCameraMissing, "missing_pictures");
  } else if (kind == "recorder_dock") {
    kind_counter("checkpointd_recorder_collected_bytes_total", help::kRecorderBytes, "bytes_collected");
    kind_counter("checkpointd_recorder_md5_mismatches_total", help::kRecorderMd5, "md5_mismatches");
    kind_counter("checkpointd_recorder_resumes_total", help::kRecorderResumes, "resumes");
    kind_counter("checkpointd_recorder_faults_total", help::kRecorderFaults, "faults");
    kind_gauge("checkpointd_recorder_queued_recordings", help::kRecorderQueued, "queued");
    kind_gauge("checkpointd_recorder_downloading_recordings", help::kRecorderDownloading, "downloading");
  }
}

void device_metrics(Exposition& out, const std::string& id, const json& dev) {
  const std::string kind = text(dev, "kind");
  const Labels base{{"device", id}, {"kind", kind}};
  const std::string state = text(dev, "state");
  // A recorder in "warning" still talks to its station (a listing problem), so it counts as up.
  out.add_gauge("checkpointd_device_up", help::kDeviceUp, base,
                state == "connected" || state == "warning" ? 1 : 0);
  device_traffic_metrics(out, base, kind, dev);
  device_error_metrics(out, base, dev);
  counter_from(out, "checkpointd_device_reconnects_total", help::kReconnects, base, dev, "reconnects");
  device_clock_metrics(out, base, kind, dev);
  device_kind_metrics(out, id, kind, dev);
}

void broker_metrics(Exposition& out, const json& broker) {
  if (!broker.is_object()) {
    return;
  }
  const json* connected = member(broker, "connected");
  if (connected != nullptr && connected->is_boolean()) {
    out.add_gauge("checkpointd_broker_up", help::kBrokerUp, {}, connected->get<bool>() ? 1 : 0);
  }
  auto counter = [&](std::string_view name, std::string_view h, const std::string& key) {
    if (const auto v = number(broker, key)) {
      out.add_counter(name, h, {}, *v);
    }
  };
  counter("checkpointd_records_published_total", help::kPublished, "published");
  counter("checkpointd_records_publish_failed_total", help::kPublishFailed, "failed");
  counter("checkpointd_broker_connects_total", help::kConnects, "connects");
  counter("checkpointd_broker_disconnects_total", help::kDisconnects, "disconnects");
  if (const json* refusals = member(broker, "refusals"); refusals != nullptr && refusals->is_array()) {
    for (const auto& r : *refusals) {
      const auto code = number(r, "reason_code");
      const auto count = number(r, "count");
      if (code && count) {
        out.add_counter("checkpointd_broker_publish_refusals_total", help::kPublishRefused,
                        {{"code", std::to_string(static_cast<int>(*code))}, {"reason", text(r, "reason")}},
                        *count);
      }
    }
  }
  if (const json* refusing = member(broker, "refusing")) {
    out.add_gauge("checkpointd_broker_refusing_publishes", help::kBrokerRefusing, {},
                  refusing->is_object() ? 1 : 0);
  }
  if (const auto v = number(broker, "acked_seq")) {
    out.add_gauge("checkpointd_records_acked_seq", help::kAckedSeq, {}, *v);
  }
}

void storage_metrics(Exposition& out, const json& storage) {
  if (!storage.is_object() || storage.empty()) {
    return;
  }
  if (const auto v = number(storage, "store_free_bytes")) {
    out.add_gauge("checkpointd_storage_free_bytes", help::kStorageFree, {{"volume", "store"}}, *v);
  }
  if (const auto v = number(storage, "media_free_bytes")) {
    out.add_gauge("checkpointd_storage_free_bytes", help::kStorageFree, {{"volume", "media"}}, *v);
  }
  if (const auto v = number(storage, "reserve_bytes")) {
    out.add_gauge("checkpointd_storage_reserve_bytes", help::kStorageReserve, {}, *v);
  }
  const std::string state = text(storage, "state");
  if (state == "ok" || state == "warning" || state == "fault") {
    out.add_gauge("checkpointd_storage_state", help::kStorageState, {},
                  state == "ok" ? 0 : (state == "warning" ? 1 : 2));
  }
  if (const auto v = number(storage, "refused_media_writes")) {
    out.add_counter("checkpointd_storage_refused_media_writes_total", help::kStorageRefused, {}, *v);
  }
  if (const auto v = number(storage, "commit_failures")) {
    out.add_counter("checkpointd_storage_commit_failures_total", help::kStorageCommitFailures, {}, *v);
  }
  if (const auto v = number(storage, "salvaged_facts")) {
    out.add_counter("checkpointd_storage_salvaged_facts_total", help::kStorageSalvaged, {}, *v);
  }
}

void process_metrics(Exposition& out, const ProcessStats& p) {
  // The standard process-collector names (no checkpointd_ prefix), so stock dashboards and alerts apply.
  if (p.start_time_seconds) {
    out.add_gauge("process_start_time_seconds", help::kStart, {}, *p.start_time_seconds);
  }
  if (p.resident_memory_bytes) {
    out.add_gauge("process_resident_memory_bytes", help::kRss, {}, *p.resident_memory_bytes);
  }
  if (p.virtual_memory_bytes) {
    out.add_gauge("process_virtual_memory_bytes", help::kVsz, {}, *p.virtual_memory_bytes);
  }
  if (p.open_fds) {
    out.add_gauge("process_open_fds", help::kFds, {}, *p.open_fds);
  }
  if (p.max_fds) {
    out.add_gauge("process_max_fds", help::kMaxFds, {}, *p.max_fds);
  }
  if (p.cpu_seconds) {
    out.add_counter("process_cpu_seconds_total", help::kCpu, {}, *p.cpu_seconds);
  }
}

std::optional<double> read_boot_time() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) {
      try {
        return std::stod(line.substr(6));
      } catch (const std::exception&) {
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

ProcessStats parse_proc_stat(const std::string& stat_line, double ticks_per_second, double page_size,
                             std::optional<double> boot_time_s) {
  ProcessStats p;
  // comm is in parentheses and may itself contain ") ", so the fields start after the last ')'.
  const auto close = stat_line.rfind(')');
  if (close == std::string::npos || ticks_per_second <= 0) {
    return p;
  }
  std::istringstream in(stat_line.substr(close + 1));
  std::vector<std::string> fields;  // fields[0] is field 3 (state) of proc(5)
  for (std::string f; in >> f;) {
    fields.push_back(std::move(f));
  }
  auto field = [&](std::size_t proc_index) -> std::optional<double> {
    const std::size_t i = proc_index - 3;
    if (i >= fields.size()) {
      return std::nullopt;
    }
    char* end = nullptr;
    const double v = std::strtod(fields[i].c_str(), &end);
    if (end == fields[i].c_str() || *end != '\0' || !std::isfinite(v)) {
      return std::nullopt;
    }
    return v;
  };
  const auto utime = field(14);
  const auto stime = field(15);
  if (utime && stime) {
    p.cpu_seconds = (*utime + *stime) / ticks_per_second;
  }
  if (const auto start = field(22); start && boot_time_s) {
    p.start_time_seconds = *boot_time_s + *start / ticks_per_second;
  }
  if (const auto vsize = field(23)) {
    p.virtual_memory_bytes = *vsize;
  }
  if (const auto rss = field(24)) {
    p.resident_memory_bytes = *rss * page_size;
  }
  return p;
}

ProcessStats read_process_stats() {
  std::string line;
  {
    std::ifstream in("/proc/self/stat");
    std::getline(in, line);
  }
  ProcessStats p = parse_proc_stat(line, static_cast<double>(::sysconf(_SC_CLK_TCK)),
                                   static_cast<double>(::sysconf(_SC_PAGESIZE)), read_boot_time());
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/self/fd", ec);
  if (!ec) {
    double n = 0;
    for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
      if (ec) {
        break;
      }
      ++n;
    }
    if (!ec) {
      p.open_fds = n;
    }
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    p.max_fds = static_cast<double>(lim.rlim_cur);
  }
  return p;
}

namespace {

// Custody (docs/custody.md): how far central holds the chain, how old the oldest record outside it is.
void custody_metrics(Exposition& out, const json& custody, std::optional<double> now_ms) {
  if (const auto through = number(custody, "through_seq")) {
    out.add_gauge("checkpointd_custody_through_seq",
                  "Records 1..N that central holds (last accepted receipt).", {}, *through);
  }
  double age = 0;
  if (const auto oldest = number(custody, "oldest_not_in_custody_ms"); oldest && now_ms) {
    age = std::max(0.0, (*now_ms - *oldest) / kMs);
  }
  out.add_gauge("checkpointd_custody_oldest_outside_age_seconds",
                "Age of the oldest record central does not hold yet (0: none).", {}, age);
  if (const auto receipt = number(custody, "receipt_ms")) {
    out.add_gauge("checkpointd_custody_last_receipt_timestamp_seconds", "When the last receipt was accepted.",
                  {}, *receipt / kMs);
  }
  const std::pair<const char*, const char*> counters[] = {
      {"receipts_accepted", "checkpointd_custody_receipts_accepted_total"},
      {"receipts_refused", "checkpointd_custody_receipts_refused_total"},
      {"resend_requests", "checkpointd_custody_resend_requests_total"},
      {"resend_refused", "checkpointd_custody_resend_refused_total"},
      {"inputs_dropped", "checkpointd_custody_inputs_dropped_total"},
      {"resent_records", "checkpointd_custody_resent_records_total"},
      {"pruned_records", "checkpointd_custody_pruned_records_total"},
  };
  for (const auto& [key, name] : counters) {
    if (const auto v = number(custody, key)) {
      out.add_counter(name, "Custody agent counter (docs/custody.md).", {}, *v);
    }
  }
  // Recordings to central (docs/custody.md, "Recordings to central").
  if (const json* files = member(custody, "recordings"); files != nullptr && files->is_object()) {
    const std::pair<const char*, const char*> file_counters[] = {
        {"files_sent", "checkpointd_recordings_sent_total"},
        {"bytes_sent", "checkpointd_recordings_bytes_sent_total"},
        {"receipts_accepted", "checkpointd_recordings_receipts_accepted_total"},
        {"receipts_refused", "checkpointd_recordings_receipts_refused_total"},
        {"wants", "checkpointd_recordings_wants_total"},
        {"wants_refused", "checkpointd_recordings_wants_refused_total"},
        {"aborts_sent", "checkpointd_recordings_aborts_total"},
        {"link_failures", "checkpointd_recordings_link_failures_total"},
        {"inputs_dropped", "checkpointd_recordings_inputs_dropped_total"},
        {"pauses", "checkpointd_recordings_pauses_total"},
    };
    for (const auto& [key, name] : file_counters) {
      if (const auto v = number(*files, key)) {
        out.add_counter(name, "Recording uploader counter (docs/custody.md).", {}, *v);
      }
    }
    if (const auto v = number(*files, "pending")) {
      out.add_gauge("checkpointd_recordings_pending", "Recordings central has not confirmed yet.", {}, *v);
    }
    if (const auto v = number(*files, "pending_bytes")) {
      out.add_gauge("checkpointd_recordings_pending_bytes", "Bytes of those recordings.", {}, *v);
    }
  }
}

}  // namespace

std::string render_daemon_metrics(const json& status, const Histograms& histograms,
                                  const ProcessStats& process) {
  Exposition out;
  out.add_gauge("checkpointd_build_info", help::kBuildInfo, {{"version", CPD_VERSION}}, 1);

  if (const json* devices = member(status, "devices"); devices != nullptr && devices->is_object()) {
    for (const auto& [id, dev] : devices->items()) {
      if (dev.is_object()) {
        device_metrics(out, id, dev);
      }
    }
  }

  if (const json* records = member(status, "records_by_type"); records != nullptr && records->is_object()) {
    for (const auto& [type, count] : records->items()) {
      if (count.is_number()) {
        out.add_counter("checkpointd_records_total", help::kRecords, {{"type", type}}, count.get<double>());
      }
    }
  }

  if (const auto backlog = number(status, "backlog")) {
    out.add_gauge("checkpointd_outbox_records", help::kBacklog, {}, *backlog);
    double age = 0;
    const auto oldest = number(status, "backlog_oldest_ms");
    const auto now = number(status, "time_ms");
    if (*backlog > 0 && oldest && now) {
      age = std::max(0.0, (*now - *oldest) / kMs);  // a wall clock stepping back must not give a negative age
    }
    out.add_gauge("checkpointd_outbox_oldest_age_seconds", help::kBacklogAge, {}, age);
  }

  if (const json* broker = member(status, "broker")) {
    broker_metrics(out, *broker);
  }
  out.add_histogram("checkpointd_publish_latency_seconds", help::kPublishLatency, {},
                    histograms.publish_latency.snapshot());
  out.add_histogram("checkpointd_store_fsync_duration_seconds", help::kFsyncLatency, {},
                    histograms.fsync_latency.snapshot());

  if (const json* storage = member(status, "storage")) {
    storage_metrics(out, *storage);
  }
  if (const json* custody = member(status, "custody");
      custody != nullptr && custody->value("enabled", false)) {
    custody_metrics(out, *custody, number(status, "time_ms"));
  }
  process_metrics(out, process);
  return out.text();
}

}  // namespace cpd::metrics
