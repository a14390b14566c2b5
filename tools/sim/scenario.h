// `checkpoint-sim scenario FILE`: one YAML file drives a radar and an ANPR camera together, so the ground
// truth of every vehicle (plate, lane, speed, trigger time) is known to the tests that read both feeds.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tools/sim/camera_sim.h"

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

struct Scenario {
  ScenarioRadar radar;
  CameraOptions camera;  // random traffic off: the vehicles drive it
  std::int64_t start_delay_ms = 1000;
  std::vector<ScenarioLane> lanes;  // default: 2 lanes of 3.75 m from x = 0
  std::vector<ScenarioVehicle> vehicles;
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

struct ScenarioRunOptions {
  std::string ground_truth;  // JSON lines, one per vehicle, written as each completes
  double linger_s = -1.0;    // < 0: serve until stop(); else stop this long after the last vehicle
};

class ScenarioRunner {
 public:
  ScenarioRunner(boost::asio::io_context& io, Scenario scenario, ScenarioRunOptions run);
  ~ScenarioRunner();
  ScenarioRunner(const ScenarioRunner&) = delete;
  ScenarioRunner& operator=(const ScenarioRunner&) = delete;

  bool start();  // both listening afterwards; false with a message on stderr
  std::uint16_t radar_port() const;
  std::uint16_t camera_port() const;
  void stop();
  // Completed vehicles so far, in completion order.
  const std::vector<ScenarioTruth>& truth() const;
  void on_finished(std::function<void()> callback);  // after the linger, once everything is closed

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

int run_scenario(int argc, char** argv);

}  // namespace cpd::sim
