// `checkpoint-sim scenario FILE`: one YAML file drives a radar, an ANPR camera and (optionally) a recorder
// dock together, so the ground truth of every vehicle and every officer stop is known to the tests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tools/sim/camera_sim.h"
#include "tools/sim/dock_sim.h"

namespace boost::asio {
class io_context;
}

namespace cpd::sim {

struct ScenarioLane {
  int lane = 1;
  double x_min = 0.0;
  double x_max = 3.75;
};

struct ScenarioVehicle {
  std::int64_t at_ms = 0;  // first radar frame, after the start delay; the peak follows
  std::string plate = "unknown";
  int lane = 1;
  double speed_kmh = 0.0;      // the track's peak speed
  std::string color = "blue";  // plate colour
  bool radar = true;           // false: the radar misses it
  bool camera = true;          // false: the camera misses it
};

struct ScenarioRadar {
  std::uint16_t port = 0;
  std::string host = "127.0.0.1";
  int status_code = 0;
  int frames_per_track = 8;
  int frame_interval_ms = 50;
};

// An officer's stop: a recording whose true span is [at_ms, at_ms + duration_ms] on the vehicles' clock
// (after the start delay, so like the vehicles it waits for a radar client and an alert stream), put on the
// dock `dock_after_ms` after it ends.
struct ScenarioStop {
  std::int64_t at_ms = 0;
  std::int64_t duration_ms = 0;
  std::string officer_id = "330102198801010011";
  std::string officer_name = "王伟";
  std::string recorder = "BWC-00917";
  bool important = true;
  std::int64_t dock_after_ms = 2000;
  std::int64_t bytes = 200000;
  std::string file_type = "video";  // video | audio | photo
  std::string case_code;
  std::optional<std::int64_t> recorder_clock_offset_ms;  // nullopt: dock.recorder_clock_offset_ms
};

struct Scenario {
  ScenarioRadar radar;
  CameraOptions camera;  // random traffic off: the vehicles drive it
  // Served when the YAML has a `dock:` section or `stops:` (then with defaults); nullopt: no dock.
  std::optional<DockOptions> dock;
  std::int64_t start_delay_ms = 1000;
  std::vector<ScenarioLane> lanes;  // default: 2 lanes of 3.75 m from x = 0
  std::vector<ScenarioVehicle> vehicles;
  std::vector<ScenarioStop> stops;
};

// Parses and checks a scenario; throws std::runtime_error naming "<name>:<line>:<column>: <key>: <why>".
Scenario parse_scenario(const std::string& yaml_text, const std::string& name = "scenario");
Scenario load_scenario_file(const std::string& path);

// What happened to one vehicle.
struct ScenarioTruth {
  std::size_t vehicle = 0;  // 1-based, in file order
  ScenarioVehicle spec;
  std::int32_t dkmh = 0;        // round(speed_kmh * 10)
  int target = 0;               // radar track number (0 when radar: false)
  std::string peak_radar_time;  // DDDDD.DD of the peak frame
  std::int64_t time_ms = 0;     // UTC of the peak (the trigger moment)
  bool radar_sent = false;      // every frame written to a connected radar client
  bool camera_sent = false;     // the alert went out on at least one alert stream
  std::string uuid;
  std::string date_time;  // the alert's dateTime (camera clock)
};

std::string scenario_truth_json(const ScenarioTruth& t);

// What happened to one stop: its file on the dock (true span in UTC ms, sha256, ...).
struct ScenarioStopTruth {
  std::size_t stop = 0;  // 1-based, in file order
  ScenarioStop spec;
  std::int64_t start_ms = 0;  // true UTC span of the recording
  std::int64_t end_ms = 0;
  bool docked = false;  // false: the run stopped before the file reached the dock
  DockFileTruth file;   // when docked
};

std::string scenario_stop_truth_json(const ScenarioStopTruth& t);

struct ScenarioRunOptions {
  std::string ground_truth;  // JSON lines, one per vehicle and one per stop, written as each completes
  double linger_s = -1.0;    // < 0: serve until stop(); else stop this long after the last vehicle
};

class ScenarioRunner {
 public:
  ScenarioRunner(boost::asio::io_context& io, Scenario scenario, ScenarioRunOptions run);
  ~ScenarioRunner();
  ScenarioRunner(const ScenarioRunner&) = delete;
  ScenarioRunner& operator=(const ScenarioRunner&) = delete;

  bool start();  // all listening afterwards; false with a message on stderr
  std::uint16_t radar_port() const;
  std::uint16_t camera_port() const;
  std::uint16_t dock_port() const;  // 0 when the scenario has no dock
  DockSim* dock();                  // nullptr when the scenario has no dock
  void stop();
  // Completed vehicles so far, in completion order.
  const std::vector<ScenarioTruth>& truth() const;
  // Stops whose file is on the dock so far (and, after stop(), those cut short), in docking order. Read it
  // on the io thread or after the run.
  const std::vector<ScenarioStopTruth>& stop_truth() const;
  void on_finished(std::function<void()> callback);  // after the linger, once everything is closed

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

int run_scenario(int argc, char** argv);

}  // namespace cpd::sim
