// The radar adapter over a serial line: a pseudo-terminal stands in for /dev/ttyUSB0, the test writes
// builder frames into its master side, and the adapter reads them through boost::asio::serial_port.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "adapters/radar/radar_adapter.h"
#include "tests/support/radar_frames.h"

namespace cpd::adapters {
namespace {

using namespace std::chrono_literals;

class SystemClock final : public WallClock {
 public:
  UnixMs now_ms() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
};

class Sink final : public EventSink {
 public:
  void emit(DeviceEvent event) override {
    std::lock_guard lock(mutex_);
    if (const auto* t = std::get_if<RadarTrack>(&event)) {
      tracks_.push_back(*t);
    }
    cv_.notify_all();
  }
  bool wait_tracks(std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return tracks_.size() >= n; });
  }
  std::vector<RadarTrack> tracks() {
    std::lock_guard lock(mutex_);
    return tracks_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<RadarTrack> tracks_;
};

TEST(RadarSerial, ReadsFramesFromASerialLineAndClosesTracks) {
  int master = -1;
  int slave = -1;
  char name[256] = {};
  ASSERT_EQ(::openpty(&master, &slave, name, nullptr, nullptr), 0);
  termios raw{};
  ::tcgetattr(slave, &raw);
  ::cfmakeraw(&raw);
  ::tcsetattr(slave, TCSANOW, &raw);

  RadarConfig cfg;
  cfg.id = "radar-serial";
  cfg.link = SerialLink{name, 115200};
  cfg.lanes = {{1, 0.0, 3.75}, {2, 3.75, 7.5}};
  cfg.track_timeout_ms = 200;
  cfg.calibration.valid_until_ms = 4102444800000;

  boost::asio::io_context io;
  Sink sink;
  SystemClock clock;
  AdapterContext ctx{io, sink, clock};
  auto adapter = make_radar_adapter(cfg, ctx);
  adapter->start();
  std::thread runner([&] { io.run(); });

  std::string bytes = test::status_frame(100, 0, "OK");
  for (int i = 0; i < 5; ++i) {
    test::DetectFields f;
    f.time_cs = 110 + i * 5;
    f.target = 7;
    f.speed_tenths = 870 + i * 3;  // peak 88.2 km/h
    f.range_dm = 500 - i * 20;
    f.x_tenths = 52;  // lane 2
    f.amplitude_ddb = 600;
    bytes += test::detect_frame(f);
  }
  ASSERT_EQ(::write(master, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));

  ASSERT_TRUE(sink.wait_tracks(1, 5s)) << adapter->status().dump();
  const auto tracks = sink.tracks();
  EXPECT_EQ(tracks[0].lane, 2);
  EXPECT_EQ(tracks[0].peak_speed_dkmh, 882);
  EXPECT_EQ(tracks[0].raw_frames.size(), 5u);
  EXPECT_EQ(adapter->status()["link"], std::string("serial ") + name + "@115200");

  adapter->stop();
  io.stop();
  runner.join();
  ::close(master);
  ::close(slave);
}

}  // namespace
}  // namespace cpd::adapters
