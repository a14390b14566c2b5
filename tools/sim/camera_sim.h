// `checkpoint-sim camera`: an ANPR checkpoint camera speaking ISAPI over HTTP (specs/anpr-camera.md):
// Digest/Basic auth with lock-out, deviceInfo, time, and the never-ending multipart alert stream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace cpd::sim {

struct CameraOptions {
  std::uint16_t port = 0;
  std::string host = "127.0.0.1";
  std::string username = "admin";
  std::string password = "12345";
  std::string auth = "digest";  // digest | basic
  std::string realm = "IP Camera";
  int max_failures = 5;              // failed attempts in a row before the lock
  double lock_s = 1800.0;            // lock-out duration
  std::int64_t clock_offset_ms = 0;  // camera clock minus true time
  int utc_offset_min = 480;          // the camera's local offset (+08:00)
  std::string xml_namespace = "http://www.isapi.org/ver20/XMLSchema";
  std::string boundary = "boundary";
  double heartbeat_s = 10.0;
  // Random traffic: `events` (0 = endless) at `rate` per second; rate 0 = only what emit() is given.
  std::uint64_t events = 0;
  double rate = 0.0;
  int lanes = 2;
  std::uint64_t seed = 1;
  double unknown_rate = 0.05;  // share of random plates the camera cannot read
  bool two_stage = false;
  int picture_kb = 0;  // 0: sizes chosen by seed in [picture_min_kb, picture_max_kb]
  int picture_min_kb = 50;
  int picture_max_kb = 1500;
  double reboot_every_s = 0.0;  // 0 = never
  double reboot_outage_s = 5.0;
  double drop_picture_rate = 0.0;
  double malformed_xml_rate = 0.0;
  double repeat_rate = 0.0;
  bool split_writes = false;
  // How the camera writes its text: UTF-8 (the spec) or GBK (some firmware): plates, plate colours and the
  // device name are then sent in GBK, the XML declaring encoding="GBK".
  std::string text_encoding = "UTF-8";
  std::string ground_truth;     // JSON lines, one per event
  bool exit_when_done = false;  // with events > 0: exit once the last one is written out
};

// One vehicle as the camera saw it; the scenario supplies these, random traffic makes its own.
struct CameraCapture {
  std::string plate = "unknown";
  int lane = 1;
  std::string plate_color = "blue";
  std::string direction = "forward";
  std::int64_t capture_unix_ms = 0;  // true (UTC) time of the trigger; the camera adds its offset
};

struct CameraPictureTruth {
  std::string file_name;
  std::string type;
  std::size_t bytes = 0;
  std::string sha256;
  bool sent = false;  // false: announced but dropped
};

struct CameraEventTruth {
  std::string uuid;
  std::string date_time;  // as in the alert (camera clock, local offset)
  std::uint64_t active_post_count = 0;
  CameraCapture capture;
  std::vector<CameraPictureTruth> pictures;
  bool repeated = false;
  bool malformed = false;
  int streams = 0;  // alert streams the event was written to (0 = nobody listening)
};

class CameraSim {
 public:
  CameraSim(boost::asio::io_context& io, CameraOptions opt);
  ~CameraSim();
  CameraSim(const CameraSim&) = delete;
  CameraSim& operator=(const CameraSim&) = delete;

  // Listens (port() is known afterwards) and starts the timers; false with a message on stderr.
  bool start();
  std::uint16_t port() const;
  // Sends one ANPR alert (and its pictures) on every open alert stream now; also written to the ground
  // truth file when one is configured.
  CameraEventTruth emit(const CameraCapture& capture);
  std::size_t stream_clients() const;
  // Bytes queued on alert streams and not yet taken by the kernel (0 = everything is written out).
  std::size_t stream_backlog() const;
  // Called each time an alert stream is opened (after authentication).
  void on_stream_opened(std::function<void()> callback);
  // Called once the sim has nothing more to do (exit_when_done); default: nothing.
  void on_done(std::function<void()> callback);
  void stop();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// One ground-truth line (JSON, no newline) for an event.
std::string camera_truth_json(const CameraEventTruth& t);

// Parses the camera options and serves until SIGTERM/SIGINT; returns the exit code.
int run_camera_sim(int argc, char** argv);

}  // namespace cpd::sim
