// The scenario runner: parses the YAML, serves the radar protocol (frames built with the shared frame
// builders) and drives the camera simulator so that each vehicle's radar peak and ANPR alert share one
// instant, and puts each officer stop's recording on the dock simulator; writes what was actually sent as
// ground truth.
#include "tools/sim/scenario.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cmath>
#include <deque>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "tests/support/camera_messages.h"
#include "tests/support/radar_frames.h"
#include "tools/sim/listen.h"
#include "tools/sim/sim_common.h"

namespace cpd::sim {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr auto kIdleStatus = std::chrono::seconds(10);
constexpr auto kMaxTick = std::chrono::milliseconds(100);

// ---- YAML checking ----

class Checker {
 public:
  explicit Checker(std::string name) : name_(std::move(name)) {}

  [[noreturn]] void fail(const YAML::Node& n, const std::string& key, const std::string& why) const {
    std::ostringstream os;
    const auto m = n.Mark();
    os << name_ << ":" << (m.line + 1) << ":" << (m.column + 1) << ": " << key << ": " << why;
    throw std::runtime_error(os.str());
  }

  void only_keys(const YAML::Node& map, const std::string& where,
                 std::initializer_list<std::string_view> keys) const {
    if (!map.IsMap()) {
      fail(map, where, "must be a mapping");
    }
    for (const auto& kv : map) {
      const auto k = kv.first.as<std::string>();
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
        std::string allowed;
        for (const auto& a : keys) {
          allowed += (allowed.empty() ? "" : ", ") + std::string(a);
        }
        fail(kv.first, where.empty() ? k : where + "." + k, "unknown key (allowed: " + allowed + ")");
      }
    }
  }

  template <typename T>
  T get(const YAML::Node& map, const std::string& where, const char* key, T fallback) const {
    const YAML::Node n = map[key];
    if (!n) {
      return fallback;
    }
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      fail(n, where + key, "wrong type");
    }
  }

  template <typename T>
  T ranged(const YAML::Node& map, const std::string& where, const char* key, T fallback, T lo, T hi) const {
    const T v = get<T>(map, where, key, fallback);
    if (v < lo || v > hi) {
      std::ostringstream os;
      os << "must be in [" << lo << ", " << hi << "]";
      fail(map[key], where + key, os.str());
    }
    return v;
  }

 private:
  std::string name_;
};

std::string radar_time(std::int64_t cs) {
  return test::radar_time_field(((cs % kRadarWrapCs) + kRadarWrapCs) % kRadarWrapCs);
}

// ---- the YAML sections ----

void parse_radar_section(const Checker& c, const YAML::Node& r, ScenarioRadar& radar) {
  c.only_keys(r, "radar", {"port", "host", "status_code", "frames_per_track", "frame_interval_ms"});
  radar.port = static_cast<std::uint16_t>(c.ranged<int>(r, "radar.", "port", 0, 0, 65535));
  radar.host = c.get<std::string>(r, "radar.", "host", radar.host);
  radar.status_code = c.ranged<int>(r, "radar.", "status_code", 0, 0, 99);
  radar.frames_per_track = c.ranged<int>(r, "radar.", "frames_per_track", 8, 1, 200);
  radar.frame_interval_ms = c.ranged<int>(r, "radar.", "frame_interval_ms", 50, 1, 10'000);
}

void parse_camera_section(const Checker& c, const YAML::Node& k, CameraOptions& cam) {
  c.only_keys(
      k, "camera",
      {"port", "host", "username", "password", "auth", "realm", "clock_offset_ms", "utc_offset", "namespace",
       "two_stage", "heartbeat_s", "picture_kb", "seed", "boundary", "lock_s", "text_encoding"});
  cam.port = static_cast<std::uint16_t>(c.ranged<int>(k, "camera.", "port", 0, 0, 65535));
  cam.host = c.get<std::string>(k, "camera.", "host", cam.host);
  cam.username = c.get<std::string>(k, "camera.", "username", cam.username);
  cam.password = c.get<std::string>(k, "camera.", "password", cam.password);
  cam.auth = c.get<std::string>(k, "camera.", "auth", cam.auth);
  if (cam.auth != "digest" && cam.auth != "basic") {
    c.fail(k["auth"], "camera.auth", "must be digest or basic");
  }
  cam.realm = c.get<std::string>(k, "camera.", "realm", cam.realm);
  cam.clock_offset_ms = c.ranged<std::int64_t>(k, "camera.", "clock_offset_ms", 0, -86'400'000, 86'400'000);
  const auto utc = c.get<std::string>(k, "camera.", "utc_offset", "+08:00");
  const auto off = test::parse_utc_offset(utc);
  if (!off) {
    c.fail(k["utc_offset"], "camera.utc_offset", "must look like +08:00");
  }
  cam.utc_offset_min = *off;
  const auto ns = c.get<std::string>(k, "camera.", "namespace", "isapi");
  if (ns != "isapi" && ns != "hikvision") {
    c.fail(k["namespace"], "camera.namespace", "must be isapi or hikvision");
  }
  cam.xml_namespace = std::string(ns == "isapi" ? test::kIsapiNamespace : test::kHikvisionNamespace);
  cam.two_stage = c.get<bool>(k, "camera.", "two_stage", true);
  cam.heartbeat_s = c.ranged<double>(k, "camera.", "heartbeat_s", 10.0, 0.05, 3600.0);
  cam.picture_kb = c.ranged<int>(k, "camera.", "picture_kb", 0, 0, 1600);
  cam.seed = c.get<std::uint64_t>(k, "camera.", "seed", 1);
  cam.boundary = c.get<std::string>(k, "camera.", "boundary", cam.boundary);
  cam.lock_s = c.ranged<double>(k, "camera.", "lock_s", cam.lock_s, 0.0, 86'400.0);
  cam.text_encoding = c.get<std::string>(k, "camera.", "text_encoding", cam.text_encoding);
  if (cam.text_encoding != "UTF-8" && cam.text_encoding != "GBK") {
    c.fail(k["text_encoding"], "camera.text_encoding", "must be UTF-8 or GBK");
  }
}

std::vector<ScenarioLane> parse_lanes_section(const Checker& c, const YAML::Node& lanes) {
  if (!lanes.IsSequence() || lanes.size() == 0) {
    c.fail(lanes, "lanes", "must be a non-empty list of {lane, x_min, x_max}");
  }
  std::vector<ScenarioLane> out;
  for (const auto& l : lanes) {
    c.only_keys(l, "lanes[]", {"lane", "x_min", "x_max"});
    ScenarioLane sl;
    sl.lane = c.ranged<int>(l, "lanes[].", "lane", 0, 1, 99);
    sl.x_min = c.ranged<double>(l, "lanes[].", "x_min", 0.0, -99.0, 99.0);
    sl.x_max = c.ranged<double>(l, "lanes[].", "x_max", 0.0, -99.0, 99.0);
    if (sl.x_max <= sl.x_min) {
      c.fail(l, "lanes[]", "x_max must be greater than x_min");
    }
    for (const auto& other : out) {
      if (other.lane == sl.lane) {
        c.fail(l, "lanes[].lane", "lane " + std::to_string(sl.lane) + " declared twice");
      }
    }
    out.push_back(sl);
  }
  return out;
}

// dock.recorder_clock_offsets: recorder id -> ms.
void parse_recorder_offsets(const Checker& c, const YAML::Node& m, DockOptions& dock) {
  if (!m.IsMap()) {
    c.fail(m, "dock.recorder_clock_offsets", "must be a mapping of recorder id to ms");
  }
  for (const auto& kv : m) {
    const auto id = kv.first.as<std::string>();
    std::int64_t ms = 0;
    try {
      ms = kv.second.as<std::int64_t>();
    } catch (const YAML::Exception&) {
      c.fail(kv.second, "dock.recorder_clock_offsets." + id, "wrong type");
    }
    if (ms < -86'400'000 || ms > 86'400'000) {
      c.fail(kv.second, "dock.recorder_clock_offsets." + id, "must be in [-86400000, 86400000]");
    }
    dock.recorder_clock_offsets[id] = ms;
  }
}

DockOptions parse_dock_section(const Checker& c, const YAML::Node& d) {
  c.only_keys(d, "dock",
              {"port", "host", "token", "station_id", "firmware", "station_clock_offset_ms",
               "recorder_clock_offset_ms", "recorder_clock_offsets", "utc_offset", "time_ms", "seed"});
  DockOptions dock;
  dock.port = static_cast<std::uint16_t>(c.ranged<int>(d, "dock.", "port", 0, 0, 65535));
  dock.host = c.get<std::string>(d, "dock.", "host", dock.host);
  dock.token = c.get<std::string>(d, "dock.", "token", dock.token);
  if (dock.token.empty()) {
    c.fail(d["token"], "dock.token", "must not be empty");
  }
  dock.station_id = c.get<std::string>(d, "dock.", "station_id", dock.station_id);
  dock.firmware = c.get<std::string>(d, "dock.", "firmware", dock.firmware);
  dock.station_clock_offset_ms =
      c.ranged<std::int64_t>(d, "dock.", "station_clock_offset_ms", 0, -86'400'000, 86'400'000);
  dock.recorder_clock_offset_ms =
      c.ranged<std::int64_t>(d, "dock.", "recorder_clock_offset_ms", 0, -86'400'000, 86'400'000);
  if (const auto m = d["recorder_clock_offsets"]) {
    parse_recorder_offsets(c, m, dock);
  }
  const auto utc = c.get<std::string>(d, "dock.", "utc_offset", "+08:00");
  const auto off = test::parse_utc_offset(utc);
  if (!off) {
    c.fail(d["utc_offset"], "dock.utc_offset", "must look like +08:00");
  }
  dock.utc_offset_min = *off;
  dock.time_ms = c.get<bool>(d, "dock.", "time_ms", false);
  dock.seed = c.get<std::uint64_t>(d, "dock.", "seed", 1);
  return dock;
}

ScenarioStop parse_stop(const Checker& c, const YAML::Node& st) {
  c.only_keys(st, "stops[]",
              {"at_ms", "duration_ms", "officer_id", "officer_name", "recorder", "important", "dock_after_ms",
               "bytes", "file_type", "case_code", "recorder_clock_offset_ms"});
  if (!st["at_ms"] || !st["duration_ms"]) {
    c.fail(st, "stops[]", "at_ms and duration_ms are required");
  }
  ScenarioStop sp;
  sp.at_ms = c.ranged<std::int64_t>(st, "stops[].", "at_ms", 0, 0, 86'400'000);
  sp.duration_ms = c.ranged<std::int64_t>(st, "stops[].", "duration_ms", 0, 0, 86'400'000);
  sp.officer_id = c.get<std::string>(st, "stops[].", "officer_id", sp.officer_id);
  sp.officer_name = c.get<std::string>(st, "stops[].", "officer_name", sp.officer_name);
  sp.recorder = c.get<std::string>(st, "stops[].", "recorder", sp.recorder);
  // The recorder id is the first part of the uniqueId, which clients use as a file name.
  if (sp.recorder.empty() || sp.recorder.size() > 64 ||
      sp.recorder.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string::npos) {
    c.fail(st["recorder"], "stops[].recorder", "1-64 characters of [A-Za-z0-9._-]");
  }
  sp.important = c.get<bool>(st, "stops[].", "important", sp.important);
  sp.dock_after_ms = c.ranged<std::int64_t>(st, "stops[].", "dock_after_ms", sp.dock_after_ms, 0, 86'400'000);
  sp.bytes = c.ranged<std::int64_t>(st, "stops[].", "bytes", sp.bytes, 0, std::int64_t{64} << 30U);
  sp.file_type = c.get<std::string>(st, "stops[].", "file_type", sp.file_type);
  if (sp.file_type != "video" && sp.file_type != "audio" && sp.file_type != "photo") {
    c.fail(st["file_type"], "stops[].file_type", "must be video, audio or photo");
  }
  sp.case_code = c.get<std::string>(st, "stops[].", "case_code", "");
  if (st["recorder_clock_offset_ms"]) {
    sp.recorder_clock_offset_ms =
        c.ranged<std::int64_t>(st, "stops[].", "recorder_clock_offset_ms", 0, -86'400'000, 86'400'000);
  }
  return sp;
}

ScenarioVehicle parse_vehicle(const Checker& c, const YAML::Node& v, const std::vector<ScenarioLane>& lanes) {
  c.only_keys(v, "vehicles[]", {"at_ms", "plate", "lane", "speed_kmh", "color", "radar", "camera"});
  ScenarioVehicle sv;
  if (!v["at_ms"] || !v["speed_kmh"] || !v["lane"]) {
    c.fail(v, "vehicles[]", "at_ms, lane and speed_kmh are required");
  }
  sv.at_ms = c.ranged<std::int64_t>(v, "vehicles[].", "at_ms", 0, 0, 86'400'000);
  sv.plate = c.get<std::string>(v, "vehicles[].", "plate", "unknown");
  sv.lane = c.get<int>(v, "vehicles[].", "lane", 1);
  if (std::none_of(lanes.begin(), lanes.end(), [&](const ScenarioLane& l) { return l.lane == sv.lane; })) {
    c.fail(v["lane"], "vehicles[].lane", "not a declared lane");
  }
  sv.speed_kmh = c.ranged<double>(v, "vehicles[].", "speed_kmh", 0.0, 0.0, 999.9);
  sv.color = c.get<std::string>(v, "vehicles[].", "color", sv.plate == "unknown" ? "unknown" : "blue");
  static const std::set<std::string> kColors = {"blue", "yellow", "white", "black", "green", "unknown"};
  if (!kColors.contains(sv.color)) {
    c.fail(v["color"], "vehicles[].color", "must be blue, yellow, white, black, green or unknown");
  }
  sv.radar = c.get<bool>(v, "vehicles[].", "radar", true);
  sv.camera = c.get<bool>(v, "vehicles[].", "camera", true);
  return sv;
}

}  // namespace

Scenario parse_scenario(const std::string& yaml_text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    std::ostringstream os;
    os << name << ":" << (e.mark.line + 1) << ":" << (e.mark.column + 1) << ": " << e.msg;
    throw std::runtime_error(os.str());
  }
  const Checker c(name);
  Scenario s;
  c.only_keys(root, "", {"radar", "camera", "dock", "start_delay_ms", "lanes", "vehicles", "stops"});
  s.start_delay_ms = c.ranged<std::int64_t>(root, "", "start_delay_ms", 1000, 0, 3'600'000);
  if (const auto r = root["radar"]) {
    parse_radar_section(c, r, s.radar);
  }
  s.camera.rate = 0.0;
  if (const auto k = root["camera"]) {
    parse_camera_section(c, k, s.camera);
  } else {
    s.camera.two_stage = true;
  }
  if (const auto lanes = root["lanes"]) {
    s.lanes = parse_lanes_section(c, lanes);
  } else {
    s.lanes = {{1, 0.0, 3.75}, {2, 3.75, 7.5}};
  }
  if (const auto d = root["dock"]) {
    s.dock = parse_dock_section(c, d);
  }
  if (const auto stops = root["stops"]) {
    if (!stops.IsSequence()) {
      c.fail(stops, "stops", "must be a list");
    }
    for (const auto& st : stops) {
      s.stops.push_back(parse_stop(c, st));
    }
    if (!s.stops.empty() && !s.dock) {
      s.dock = DockOptions{};
    }
  }
  const auto vehicles = root["vehicles"];
  if (vehicles && !vehicles.IsSequence()) {
    c.fail(vehicles, "vehicles", "must be a list");
  }
  if (vehicles) {
    for (const auto& v : vehicles) {
      s.vehicles.push_back(parse_vehicle(c, v, s.lanes));
    }
  }
  return s;
}

Scenario load_scenario_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error(path + ": cannot read");
  }
  std::ostringstream os;
  os << in.rdbuf();
  return parse_scenario(os.str(), path);
}

std::string scenario_truth_json(const ScenarioTruth& t) {
  const nlohmann::json j = {
      {"vehicle", t.vehicle},
      {"plate", t.spec.plate},
      {"lane", t.spec.lane},
      {"color", t.spec.color},
      {"speed_kmh", t.spec.speed_kmh},
      {"dkmh", t.dkmh},
      {"target", t.target},
      {"peak_radar_time", t.peak_radar_time},
      {"time_ms", t.time_ms},
      {"radar", t.spec.radar},
      {"camera", t.spec.camera},
      {"radar_sent", t.radar_sent},
      {"camera_sent", t.camera_sent},
      {"uuid", t.uuid},
      {"date_time", t.date_time},
  };
  return j.dump();
}

std::string scenario_stop_truth_json(const ScenarioStopTruth& t) {
  const nlohmann::json j = {
      {"stop", t.stop},
      {"uniqueId", t.file.unique_id},
      {"recorder", t.spec.recorder},
      {"officer_id", t.spec.officer_id},
      {"officer_name", t.spec.officer_name},
      {"important", t.spec.important},
      {"start_ms", t.start_ms},
      {"end_ms", t.end_ms},
      {"docked", t.docked},
      {"docked_ms", t.file.collect_ms},
      {"length", t.file.length},
      {"md5", t.file.md5},
      {"sha256", t.file.sha256},
      {"startTime", t.file.start_time},
      {"endTime", t.file.end_time},
      {"recorder_offset_ms", t.file.recorder_offset_ms},
  };
  return j.dump();
}

class ScenarioRunner::Impl : public std::enable_shared_from_this<ScenarioRunner::Impl> {
 public:
  Impl(asio::io_context& io, Scenario s, ScenarioRunOptions run)
      : io_(io),
        s_(std::move(s)),
        run_(std::move(run)),
        camera_(io, s_.camera),
        dock_(s_.dock ? std::make_unique<DockSim>(io, *s_.dock) : nullptr),
        acceptor_(io),
        timer_(io),
        start_timer_(io),
        sim_start_(Clock::now()),
        sim_start_utc_ms_(std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count()) {}

  bool start() {
    if (!open_listener(acceptor_, s_.radar.host, s_.radar.port, "scenario: radar")) {
      return false;
    }
    if (!camera_.start()) {
      return false;
    }
    if (dock_ && !dock_->start()) {
      return false;
    }
    if (!run_.ground_truth.empty()) {
      truth_file_.open(run_.ground_truth, std::ios::out | std::ios::trunc);
      if (!truth_file_) {
        std::cerr << "scenario: cannot write " << run_.ground_truth << "\n";
        return false;
      }
    }
    camera_.on_stream_opened([w = weak_from_this()] {
      if (auto self = w.lock()) {
        self->camera_ready_ = true;
        self->maybe_begin();
      }
    });
    accept();
    return true;
  }

  std::uint16_t radar_port() const { return acceptor_.local_endpoint().port(); }
  std::uint16_t camera_port() const { return camera_.port(); }
  std::uint16_t dock_port() const { return dock_ ? dock_->port() : 0; }
  DockSim* dock() { return dock_.get(); }

  void stop() {
    if (stopping_) {
      return;
    }
    stopping_ = true;
    // Vehicles cut short by the stop are recorded with what went out, so the ground truth is complete.
    for (auto& v : pending_) {
      if (!v.done) {
        v.truth.radar_sent = false;
        complete(v);
      }
    }
    for (std::size_t i = next_dock_; i < docks_.size(); ++i) {
      ScenarioStopTruth t = docks_[i].truth;
      t.docked = false;
      complete_stop(std::move(t));
    }
    next_dock_ = docks_.size();
    error_code ignored;
    acceptor_.close(ignored);
    if (client_) {
      client_->close(ignored);
      client_.reset();
    }
    timer_.cancel();
    start_timer_.cancel();
    camera_.stop();
    if (dock_) {
      dock_->stop();
    }
    if (on_finished_) {
      on_finished_();
    }
  }

  std::vector<ScenarioTruth> truth_;
  std::vector<ScenarioStopTruth> stop_truth_;
  std::function<void()> on_finished_;

 private:
  struct Frame {
    Clock::time_point at;
    std::size_t vehicle;  // index into pending_
    std::string bytes;
  };
  struct Camera {
    Clock::time_point at;
    std::size_t vehicle;
  };
  struct Span {  // a vehicle's first and last radar frame
    Clock::time_point from;
    Clock::time_point to;
  };
  struct Dock {
    Clock::time_point at;  // when the file appears on the dock
    ScenarioStopTruth truth;
  };
  struct Pending {
    ScenarioTruth truth;
    int frames_total = 0;
    int frames_written = 0;
    bool frame_lost = false;
    bool camera_done = false;
    Clock::time_point last_frame_at{};
    bool done = false;
  };

  std::int64_t utc_ms(Clock::time_point t) const {
    return sim_start_utc_ms_ + std::chrono::duration_cast<std::chrono::milliseconds>(t - sim_start_).count();
  }
  std::int64_t radar_cs(Clock::time_point t) const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t - sim_start_).count() / 10;
  }

  void accept() {
    acceptor_.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket sock) {
      if (ec || self->stopping_) {
        return;
      }
      if (self->client_) {
        error_code ignored;
        sock.close(ignored);  // the radar accepts one client at a time
        self->accept();
        return;
      }
      error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      self->client_ = std::make_unique<tcp::socket>(std::move(sock));
      self->enqueue(self->status_frame(Clock::now()), SIZE_MAX);
      self->read_polls();
      self->radar_ready_ = true;
      self->maybe_begin();
      self->accept();
    });
  }

  void read_polls() {
    client_->async_read_some(asio::buffer(read_buf_), [self = shared_from_this(), c = client_.get()](
                                                          const error_code& ec, std::size_t n) {
      if (c != self->client_.get()) {
        return;
      }
      if (ec) {
        self->drop_client();
        return;
      }
      self->poll_buffer_.append(self->read_buf_.data(), n);
      std::size_t pos = 0;
      while ((pos = self->poll_buffer_.find("*P\r")) != std::string::npos) {
        self->poll_buffer_.erase(0, pos + 3);
        self->answer_poll();
      }
      if (self->poll_buffer_.size() > 64) {
        self->poll_buffer_.erase(0, self->poll_buffer_.size() - 2);
      }
      self->read_polls();
    });
  }

  void answer_poll() {
    if (active_frames_.empty()) {
      enqueue(status_frame(Clock::now()), SIZE_MAX);
      return;
    }
    for (const auto& [idx, bytes] : active_frames_) {
      enqueue(bytes, SIZE_MAX);  // a poll answer repeats the latest frame; it is not counted as the track's
    }
  }

  std::string status_frame(Clock::time_point t) {
    last_radar_send_ = t;
    return test::status_frame(radar_cs(t), s_.radar.status_code,
                              test::radar_status_text(s_.radar.status_code));
  }

  void drop_client() {
    if (!client_) {
      return;
    }
    error_code ignored;
    client_->close(ignored);
    client_.reset();
    for (const auto& q : queue_) {
      if (q.second < pending_.size()) {
        pending_[q.second].frame_lost = true;
      }
    }
    queue_.clear();
    writing_ = false;
  }

  void enqueue(std::string bytes, std::size_t vehicle) {
    if (!client_) {
      if (vehicle < pending_.size()) {
        pending_[vehicle].frame_lost = true;
      }
      return;
    }
    queue_.emplace_back(std::move(bytes), vehicle);
    write_next();
  }

  void write_next() {
    if (writing_ || queue_.empty() || !client_) {
      return;
    }
    writing_ = true;
    asio::async_write(*client_, asio::buffer(queue_.front().first),
                      [self = shared_from_this(), c = client_.get()](const error_code& ec, std::size_t) {
                        if (c != self->client_.get()) {
                          return;
                        }
                        self->writing_ = false;
                        if (ec) {
                          self->drop_client();
                          return;
                        }
                        const std::size_t v = self->queue_.front().second;
                        self->queue_.pop_front();
                        if (v < self->pending_.size()) {
                          ++self->pending_[v].frames_written;
                        }
                        self->write_next();
                      });
  }

  void maybe_begin() {
    if (begun_ || !radar_ready_ || !camera_ready_ || stopping_) {
      return;
    }
    begun_ = true;
    start_timer_.expires_after(std::chrono::milliseconds(s_.start_delay_ms));
    start_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec && !self->stopping_) {
        self->begin(Clock::now());
      }
    });
  }

  // Lays out every frame and alert on the timeline once the traffic clock starts.
  void begin(Clock::time_point t0) {
    const auto step = std::chrono::milliseconds(s_.radar.frame_interval_ms);
    const int frames = s_.radar.frames_per_track;
    std::vector<Span> spans;
    for (const auto& v : s_.vehicles) {
      const auto first = t0 + std::chrono::milliseconds(v.at_ms);
      spans.push_back({first, first + step * (frames - 1)});
    }
    int next_target = 0;
    for (std::size_t i = 0; i < s_.vehicles.size(); ++i) {
      plan_vehicle(i, spans, next_target);
    }
    for (std::size_t i = 0; i < s_.stops.size(); ++i) {
      const ScenarioStop& st = s_.stops[i];
      Dock d;
      d.truth.stop = i + 1;
      d.truth.spec = st;
      const auto from = t0 + std::chrono::milliseconds(st.at_ms);
      const auto to = from + std::chrono::milliseconds(st.duration_ms);
      d.truth.start_ms = utc_ms(from);
      d.truth.end_ms = utc_ms(to);
      d.at = to + std::chrono::milliseconds(st.dock_after_ms);
      docks_.push_back(std::move(d));
    }
    std::stable_sort(docks_.begin(), docks_.end(), [](const Dock& a, const Dock& b) { return a.at < b.at; });
    std::stable_sort(frames_.begin(), frames_.end(),
                     [](const Frame& a, const Frame& b) { return a.at < b.at; });
    std::stable_sort(cameras_.begin(), cameras_.end(),
                     [](const Camera& a, const Camera& b) { return a.at < b.at; });
    tick();
  }

  // Vehicle i's truth, its alert and (unless the radar misses it) its track under the next track number.
  void plan_vehicle(std::size_t i, const std::vector<Span>& spans, int& next_target) {
    const auto step = std::chrono::milliseconds(s_.radar.frame_interval_ms);
    const int frames = s_.radar.frames_per_track;
    const ScenarioVehicle& v = s_.vehicles[i];
    Pending p;
    p.truth.vehicle = i + 1;
    p.truth.spec = v;
    p.truth.dkmh = static_cast<std::int32_t>(std::lround(v.speed_kmh * 10.0));
    const auto peak_at = spans[i].from + step * (frames / 2);
    p.truth.time_ms = utc_ms(peak_at);
    p.truth.peak_radar_time = radar_time(radar_cs(peak_at));
    p.last_frame_at = spans[i].to;
    p.camera_done = !v.camera;
    if (v.camera) {
      cameras_.push_back({peak_at, i});
    }
    if (v.radar) {
      next_target = next_target % 99 + 1;
      p.truth.target = next_target;
      p.frames_total = frames;
      plan_track(i, spans, p.truth.dkmh, next_target);
    }
    pending_.push_back(std::move(p));
  }

  // The detect frames of vehicle i's track: speed peaking mid-track, range closing, inside its lane.
  void plan_track(std::size_t i, const std::vector<Span>& spans, std::int32_t dkmh, int target) {
    const auto step = std::chrono::milliseconds(s_.radar.frame_interval_ms);
    const int frames = s_.radar.frames_per_track;
    const int peak_index = frames / 2;
    const ScenarioVehicle& v = s_.vehicles[i];
    const auto& lane = *std::find_if(s_.lanes.begin(), s_.lanes.end(),
                                     [&](const ScenarioLane& l) { return l.lane == v.lane; });
    const double x_mid = (lane.x_min + lane.x_max) / 2.0;
    const double wobble = std::min(0.2, (lane.x_max - lane.x_min) / 4.0);
    const double mps = v.speed_kmh / 3.6;
    const double end_range = std::max(15.0, 2.5 * std::abs(x_mid));
    const double start_range = end_range + mps * frames * s_.radar.frame_interval_ms / 1000.0;
    for (int f = 0; f < frames; ++f) {
      const auto at = spans[i].from + step * f;
      int targets = 0;
      for (std::size_t j = 0; j < spans.size(); ++j) {
        targets += (s_.vehicles[j].radar && spans[j].from <= at && at <= spans[j].to) ? 1 : 0;
      }
      test::DetectFields d;
      d.time_cs = radar_cs(at) % kRadarWrapCs;
      d.target = target;
      d.targets = std::clamp(targets, 1, 99);
      d.dir = 'A';
      d.speed_tenths = std::max(0, dkmh - kProfileStepDkmh * std::abs(f - peak_index));
      d.units = 'K';
      d.range_dm = static_cast<std::int32_t>(std::lround(
          std::clamp(start_range - mps * f * s_.radar.frame_interval_ms / 1000.0, 0.0, 999.9) * 10.0));
      // Alternating small lateral wobble, always inside the lane's band.
      const double x = x_mid + ((f % 2 == 0) ? wobble : -wobble) / 2.0;
      d.x_tenths = static_cast<std::int32_t>(std::lround(x * 10.0));
      d.coord = 'C';
      d.amplitude_ddb = 550 + 10 * f;
      frames_.push_back({at, i, test::detect_frame(d)});
    }
  }

  void tick() {
    if (stopping_) {
      return;
    }
    const auto now = Clock::now();
    send_due_frames(now);
    send_due_alerts(now);
    dock_due_stops(now);
    if (active_frames_.empty() && client_ && now - last_radar_send_ >= kIdleStatus) {
      enqueue(status_frame(now), SIZE_MAX);
    }
    for (auto& p : pending_) {
      const bool radar_done = p.frames_total == 0 || p.frame_lost || p.frames_written == p.frames_total;
      if (!p.done && p.camera_done && p.last_frame_at <= now && radar_done) {
        p.truth.radar_sent = p.frames_total > 0 && !p.frame_lost && p.frames_written == p.frames_total;
        complete(p);
      }
    }
    const bool all_done =
        std::all_of(pending_.begin(), pending_.end(), [](const Pending& p) { return p.done; }) &&
        next_dock_ == docks_.size();
    if (all_done && run_.linger_s >= 0.0) {
      if (!finished_at_) {
        finished_at_ = now;
      }
      // Let the alert streams drain before the linger ends, so what the truth says was sent arrives.
      if (now - *finished_at_ >= std::chrono::duration<double>(run_.linger_s) &&
          camera_.stream_backlog() == 0 && queue_.empty()) {
        stop();
        return;
      }
    }
    schedule_tick(now, all_done);
  }

  void send_due_frames(Clock::time_point now) {
    while (next_frame_ < frames_.size() && frames_[next_frame_].at <= now) {
      Frame& f = frames_[next_frame_++];
      last_radar_send_ = now;
      active_frames_[f.vehicle] = f.bytes;
      if (pending_[f.vehicle].last_frame_at == f.at) {
        active_frames_.erase(f.vehicle);
      }
      enqueue(std::move(f.bytes), f.vehicle);
    }
  }

  void send_due_alerts(Clock::time_point now) {
    while (next_camera_ < cameras_.size() && cameras_[next_camera_].at <= now) {
      const Camera& c = cameras_[next_camera_++];
      Pending& p = pending_[c.vehicle];
      CameraCapture cap;
      cap.plate = p.truth.spec.plate;
      cap.lane = p.truth.spec.lane;
      cap.plate_color = p.truth.spec.color;
      cap.capture_unix_ms = p.truth.time_ms;
      const CameraEventTruth t = camera_.emit(cap);
      p.truth.uuid = t.uuid;
      p.truth.date_time = t.date_time;
      p.truth.camera_sent = t.streams > 0;
      p.camera_done = true;
    }
  }

  // Puts the recordings of the stops whose time has come on the dock.
  void dock_due_stops(Clock::time_point now) {
    while (dock_ && next_dock_ < docks_.size() && docks_[next_dock_].at <= now) {
      ScenarioStopTruth t = docks_[next_dock_++].truth;
      DockFileSpec spec;
      spec.recorder = t.spec.recorder;
      spec.officer_id = t.spec.officer_id;
      spec.officer_name = t.spec.officer_name;
      spec.case_code = t.spec.case_code;
      spec.file_type = t.spec.file_type;
      spec.length = t.spec.bytes;
      spec.start_unix_ms = t.start_ms;
      spec.end_unix_ms = t.end_ms;
      spec.collect_unix_ms = utc_ms(now);  // the scenario's clock, as the vehicles' trigger times
      spec.important = t.spec.important;
      spec.recorder_clock_offset_ms = t.spec.recorder_clock_offset_ms;
      try {
        t.file = dock_->add_file(std::move(spec));
        t.docked = true;
      } catch (const std::exception& e) {
        std::cerr << "scenario: stop " << t.stop << " not docked: " << e.what() << "\n";
      }
      complete_stop(std::move(t));
    }
  }

  // The next tick: at the next frame, alert or docking, sooner while a queue drains or the linger runs.
  void schedule_tick(Clock::time_point now, bool all_done) {
    auto next = now + kMaxTick;
    if (next_frame_ < frames_.size()) {
      next = std::min(next, frames_[next_frame_].at);
    }
    if (next_camera_ < cameras_.size()) {
      next = std::min(next, cameras_[next_camera_].at);
    }
    if (next_dock_ < docks_.size()) {
      next = std::min(next, docks_[next_dock_].at);
    }
    if (!queue_.empty() || (all_done && run_.linger_s >= 0.0)) {
      next = std::min(next, now + std::chrono::milliseconds(10));
    }
    timer_.expires_at(next);
    timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec) {
        self->tick();
      }
    });
  }

  void complete_stop(ScenarioStopTruth t) {
    if (truth_file_.is_open()) {
      truth_file_ << scenario_stop_truth_json(t) << '\n';
      truth_file_.flush();
    }
    stop_truth_.push_back(std::move(t));
  }

  void complete(Pending& p) {
    p.done = true;
    truth_.push_back(p.truth);
    if (truth_file_.is_open()) {
      truth_file_ << scenario_truth_json(p.truth) << '\n';
      truth_file_.flush();
    }
  }

  asio::io_context& io_;
  Scenario s_;
  ScenarioRunOptions run_;
  CameraSim camera_;
  std::unique_ptr<DockSim> dock_;
  tcp::acceptor acceptor_;
  asio::steady_timer timer_;
  asio::steady_timer start_timer_;
  Clock::time_point sim_start_;
  std::int64_t sim_start_utc_ms_;
  std::unique_ptr<tcp::socket> client_;
  std::array<char, 256> read_buf_{};
  std::string poll_buffer_;
  std::deque<std::pair<std::string, std::size_t>> queue_;
  bool writing_ = false;
  bool radar_ready_ = false;
  bool camera_ready_ = false;
  bool begun_ = false;
  bool stopping_ = false;
  Clock::time_point last_radar_send_{};
  std::vector<Frame> frames_;
  std::vector<Camera> cameras_;
  std::size_t next_frame_ = 0;
  std::size_t next_camera_ = 0;
  std::vector<Dock> docks_;
  std::size_t next_dock_ = 0;
  std::vector<Pending> pending_;
  std::map<std::size_t, std::string> active_frames_;  // latest frame of each track in progress (for *P)
  std::optional<Clock::time_point> finished_at_;
  std::ofstream truth_file_;
};

ScenarioRunner::ScenarioRunner(asio::io_context& io, Scenario scenario, ScenarioRunOptions run)
    : impl_(std::make_shared<Impl>(io, std::move(scenario), std::move(run))) {}
ScenarioRunner::~ScenarioRunner() {
  impl_->on_finished_ = nullptr;  // its captures may already be gone
  impl_->stop();
}
bool ScenarioRunner::start() {
  return impl_->start();
}
std::uint16_t ScenarioRunner::radar_port() const {
  return impl_->radar_port();
}
std::uint16_t ScenarioRunner::camera_port() const {
  return impl_->camera_port();
}
std::uint16_t ScenarioRunner::dock_port() const {
  return impl_->dock_port();
}
DockSim* ScenarioRunner::dock() {
  return impl_->dock();
}
const std::vector<ScenarioStopTruth>& ScenarioRunner::stop_truth() const {
  return impl_->stop_truth_;
}
void ScenarioRunner::stop() {
  impl_->stop();
}
const std::vector<ScenarioTruth>& ScenarioRunner::truth() const {
  return impl_->truth_;
}
void ScenarioRunner::on_finished(std::function<void()> callback) {
  impl_->on_finished_ = std::move(callback);
}

int run_scenario(int argc, char** argv) {
  CLI::App app{"Scenario: one YAML file drives a radar, an ANPR camera and a recorder dock together",
               "scenario"};
  std::string file;
  ScenarioRunOptions run;
  app.add_option("file", file, "scenario YAML")->required();
  app.add_option("--ground-truth", run.ground_truth,
                 "write one JSON line per vehicle and per stop (true span, uniqueId, sha256) to this file");
  app.add_option("--linger-s", run.linger_s,
                 "exit this long after the last vehicle (default: serve until SIGTERM)")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  Scenario s;
  try {
    s = load_scenario_file(file);
  } catch (const std::exception& e) {
    std::cerr << "scenario: " << e.what() << "\n";
    return 2;
  }
  asio::io_context io;
  ScenarioRunner runner(io, std::move(s), run);
  if (!runner.start()) {
    return 1;
  }
  // One line per device; "dock <port>" only when the scenario has a dock.
  std::cout << "radar " << runner.radar_port() << "\ncamera " << runner.camera_port() << "\n";
  if (runner.dock_port() != 0) {
    std::cout << "dock " << runner.dock_port() << "\n";
  }
  std::cout << std::flush;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code& ec, int) {
    if (!ec) {
      runner.stop();
    }
  });
  runner.on_finished([&] { signals.cancel(); });
  io.run();
  return 0;
}

}  // namespace cpd::sim
