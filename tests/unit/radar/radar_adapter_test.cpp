// The radar adapter on a real loopback socket: an Asio acceptor in the test plays the radar with
// builder frames; we check emitted tracks and status events, polling, and a reconnect.
#include "adapters/radar/radar_adapter.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "adapters/radar/radar_clock.h"
#include "adapters/record_bound.h"
#include "tests/support/radar_frames.h"

namespace cpd::adapters {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

class TestClock final : public WallClock {
 public:
  UnixMs now_ms() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
};

class RecordingSink final : public EventSink {
 public:
  void emit(DeviceEvent event) override {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
    cv_.notify_all();
  }
  // Waits (on a condition, not a sleep) until `pred` holds over the events, or the deadline.
  bool wait(const std::function<bool(const std::vector<DeviceEvent>&)>& pred,
            std::chrono::milliseconds timeout = 5s) {
    // Re-checked every 10 ms too, for conditions on adapter->status() that emit no event.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lock(mutex_);
    while (!pred(events_)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return false;
      }
      cv_.wait_for(lock, 10ms);
    }
    return true;
  }
  std::vector<DeviceEvent> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<DeviceEvent> events_;
};

std::vector<RadarTrack> tracks_of(const std::vector<DeviceEvent>& ev) {
  std::vector<RadarTrack> out;
  for (const auto& e : ev) {
    if (const auto* t = std::get_if<RadarTrack>(&e)) {
      out.push_back(*t);
    }
  }
  return out;
}

std::vector<DeviceStatusEvent> statuses_of(const std::vector<DeviceEvent>& ev, const std::string& state) {
  std::vector<DeviceStatusEvent> out;
  for (const auto& e : ev) {
    if (const auto* s = std::get_if<DeviceStatusEvent>(&e); s && s->state == state) {
      out.push_back(*s);
    }
  }
  return out;
}

std::string vehicle(std::int64_t start_cs, int target, std::int32_t peak, std::int32_t x_tenths) {
  std::string out;
  for (int i = 0; i < 5; ++i) {
    test::DetectFields f;
    f.time_cs = start_cs + i * 5;
    f.target = target;
    f.speed_tenths = peak - (i == 2 ? 0 : 10);
    f.range_dm = 400 - i * 10;
    f.x_tenths = x_tenths;
    f.amplitude_ddb = 600;
    out += test::detect_frame(f);
  }
  return out;
}

// The fake radar: accepts on loopback and serves blocking writes from the test thread.
class FakeRadar {
 public:
  FakeRadar() : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  bool accept() {
    socket_ = std::make_unique<tcp::socket>(io_);
    bool ok = false;
    acceptor_.async_accept(*socket_, [&](const boost::system::error_code& ec) { ok = !ec; });
    io_.restart();
    io_.run_for(5s);
    return ok;
  }
  void send(const std::string& bytes) { asio::write(*socket_, asio::buffer(bytes)); }
  std::string read_some() {
    std::string buf(64, '\0');
    std::size_t n = 0;
    socket_->async_read_some(asio::buffer(buf),
                             [&](const boost::system::error_code&, std::size_t k) { n = k; });
    io_.restart();
    io_.run_for(5s);
    return buf.substr(0, n);
  }
  void close() { socket_->close(); }

 private:
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::unique_ptr<tcp::socket> socket_;
};

TEST(RadarAdapter, TracksStatusPollingAndReconnectOverLoopback) {
  FakeRadar radar;
  asio::io_context io;
  RecordingSink sink;
  TestClock clock;
  AdapterContext ctx{io, sink, clock};

  RadarConfig cfg;
  cfg.id = "radar-loop";
  cfg.link = TcpLink{"127.0.0.1", radar.port()};
  cfg.lanes = {{1, 0.0, 3.75}, {2, 3.75, 7.5}};
  cfg.track_timeout_ms = 200;
  cfg.poll_interval_ms = 50;
  cfg.reconnect_initial_ms = 20;
  cfg.reconnect_max_ms = 100;
  auto adapter = make_radar_adapter(cfg, ctx);
  EXPECT_EQ(adapter->device_id(), "radar-loop");
  adapter->start();
  std::thread runner([&] {
    auto guard = asio::make_work_guard(io);
    io.run();
  });

  ASSERT_TRUE(radar.accept());
  ASSERT_TRUE(sink.wait([](const auto& ev) { return !statuses_of(ev, "connected").empty(); }));
  // Poll mode: the adapter asks with "*P\r".
  EXPECT_EQ(radar.read_some().substr(0, 3), "*P\r");

  radar.send("noise" + test::status_frame(100000, 0, "OK"));
  radar.send(vehicle(100100, 3, 873, 18));  // lane 1
  radar.send(test::with_wrong_checksum(test::status_frame(100120, 0, "OK")));
  radar.send(test::status_frame(100130, 20, "ANTENNA FAULT"));
  ASSERT_TRUE(sink.wait([](const auto& ev) { return tracks_of(ev).size() == 1; }));
  ASSERT_TRUE(sink.wait([](const auto& ev) { return !statuses_of(ev, "fault").empty(); }));

  auto ev = sink.events();
  auto tracks = tracks_of(ev);
  EXPECT_EQ(tracks[0].device_id, "radar-loop");
  EXPECT_EQ(tracks[0].target, 3);
  EXPECT_EQ(tracks[0].lane, 1);
  EXPECT_EQ(tracks[0].peak_speed_dkmh, 873);
  EXPECT_EQ(tracks[0].samples.size(), 5u);
  EXPECT_EQ(tracks[0].status.code, 0);
  EXPECT_EQ(tracks[0].time_ms - tracks[0].first_ms, 100);  // two frames at 50 ms after the first
  auto oks = statuses_of(ev, "ok");
  ASSERT_EQ(oks.size(), 1u);
  EXPECT_EQ(oks[0].code, 0);
  EXPECT_EQ(oks[0].raw_frame, test::status_frame(100000, 0, "OK"));
  auto faults = statuses_of(ev, "fault");
  ASSERT_EQ(faults.size(), 1u);
  EXPECT_EQ(faults[0].code, 20);
  EXPECT_EQ(faults[0].text, "ANTENNA FAULT");

  auto st = adapter->status();
  EXPECT_EQ(st["kind"], "radar");
  EXPECT_EQ(st["state"], "connected");
  EXPECT_EQ(st["frames"], 7);
  EXPECT_EQ(st["tracks"], 1);
  EXPECT_EQ(st["errors"]["checksum"], 1);
  EXPECT_EQ(st["noise_bytes"], 5);
  EXPECT_EQ(st["status_code"], 20);

  // A vehicle in progress when the radar closes the link is emitted at the disconnect.
  radar.send(vehicle(100200, 8, 650, 50));
  ASSERT_TRUE(sink.wait([&](const auto&) { return adapter->status()["frames"] == 12; }));
  radar.close();
  ASSERT_TRUE(sink.wait([](const auto& e) { return !statuses_of(e, "disconnected").empty(); }));
  ASSERT_TRUE(sink.wait([](const auto& e) { return tracks_of(e).size() == 2; }));
  EXPECT_EQ(tracks_of(sink.events())[1].lane, 2);

  // The adapter reconnects by itself; frames on the new connection form tracks again.
  ASSERT_TRUE(radar.accept());
  ASSERT_TRUE(sink.wait([](const auto& e) { return statuses_of(e, "connected").size() == 2; }));
  radar.send(vehicle(100400, 9, 1000, 20));
  ASSERT_TRUE(sink.wait([](const auto& e) { return tracks_of(e).size() == 3; }));
  EXPECT_EQ(tracks_of(sink.events())[2].peak_speed_dkmh, 1000);
  EXPECT_GE(adapter->status()["reconnects"].get<int>(), 1);
  // The fault code did not change across the reconnect: no repeated status event.
  EXPECT_EQ(statuses_of(sink.events(), "fault").size(), 1u);

  adapter->stop();
  ASSERT_TRUE(sink.wait([&](const auto&) { return adapter->status()["state"] == "stopped"; }));
  io.stop();
  runner.join();
}

TEST(RadarAdapter, RefusedConnectionReportsDisconnectedOnceAndKeepsTrying) {
  std::uint16_t port = 0;
  {
    // Find a free port, then close it so connects are refused.
    asio::io_context tmp;
    tcp::acceptor a(tmp, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  asio::io_context io;
  RecordingSink sink;
  TestClock clock;
  AdapterContext ctx{io, sink, clock};
  RadarConfig cfg;
  cfg.id = "radar-refused";
  cfg.link = TcpLink{"127.0.0.1", port};
  cfg.reconnect_initial_ms = 10;
  cfg.reconnect_max_ms = 20;
  auto adapter = make_radar_adapter(cfg, ctx);
  adapter->start();
  std::thread runner([&] { io.run(); });
  ASSERT_TRUE(sink.wait([&](const auto&) { return adapter->status()["reconnects"].get<int>() >= 3; }));
  auto down = statuses_of(sink.events(), "disconnected");
  ASSERT_EQ(down.size(), 1u);
  EXPECT_NE(down[0].text.find("refused"), std::string::npos) << down[0].text;
  adapter->stop();
  runner.join();  // stop() cancels every timer: run() returns on its own
  EXPECT_EQ(adapter->status()["state"], "stopped");
}

// Issue 12, defect 6 and its class: what one radar can make the gateway record. A status code flapping on
// every frame is held to the record bound (suppression counted and reported once); a clock stepping back
// on every frame is one clock_fault, not a record per frame.
TEST(RadarAdapter, AFlappingStatusAndASteppingClockAreBoundedAndReportedOnce) {
  FakeRadar radar;
  asio::io_context io;
  RecordingSink sink;
  TestClock clock;
  AdapterContext ctx{io, sink, clock};
  RadarConfig cfg;
  cfg.id = "radar-hostile";
  cfg.link = TcpLink{"127.0.0.1", radar.port()};
  cfg.lanes = {{1, 0.0, 3.75}};
  cfg.max_records_per_s = 10;
  auto adapter = make_radar_adapter(cfg, ctx);
  adapter->start();
  std::thread runner([&] {
    auto guard = asio::make_work_guard(io);
    io.run();
  });
  ASSERT_TRUE(radar.accept());
  ASSERT_TRUE(sink.wait([](const auto& ev) { return !statuses_of(ev, "connected").empty(); }));

  constexpr int kFlaps = 2000;
  std::string flapping;
  for (int i = 0; i < kFlaps; ++i) {
    flapping += test::status_frame(100000, i % 2 == 0 ? 0 : 20, i % 2 == 0 ? "OK" : "ANTENNA FAULT");
  }
  radar.send(flapping);
  ASSERT_TRUE(sink.wait([&](const auto&) { return adapter->status()["frames"] == kFlaps; }));
  auto ev = sink.events();
  const std::size_t changes = statuses_of(ev, "ok").size() + statuses_of(ev, "fault").size();
  const int burst = RecordBound::default_burst(cfg.max_records_per_s);
  EXPECT_LE(changes + 1, static_cast<std::size_t>(burst + cfg.max_records_per_s * 5))
      << "connected + changes";
  EXPECT_EQ(statuses_of(ev, "records_suppressed").size(), 1u);
  auto st = adapter->status();
  EXPECT_EQ(st["records"]["max_per_s"], 10);
  EXPECT_EQ(st["records"]["burst"], burst);
  EXPECT_TRUE(st["records"]["suppressing"].get<bool>());
  EXPECT_EQ(st["records"]["suppressed"].get<std::size_t>() + changes, static_cast<std::size_t>(kFlaps));
  EXPECT_EQ(st["errors"]["records_suppressed"], st["records"]["suppressed"]);
  EXPECT_EQ(st["status_code"], 20) << "the radar's status is still followed, only its records are bounded";

  // A clock stepping 2 s back on every frame, at a few thousand frames per second.
  constexpr int kSteps = 5000;
  std::string stepping;
  for (int i = 0; i < kSteps; ++i) {
    test::DetectFields f;
    f.time_cs = 9'000'000 - i * 200;
    f.target = 1 + i / 1000;
    f.speed_tenths = 600;
    f.range_dm = 300;
    f.x_tenths = 18;
    f.amplitude_ddb = 600;
    stepping += test::detect_frame(f);
  }
  radar.send(stepping);
  ASSERT_TRUE(sink.wait([&](const auto&) { return adapter->status()["frames"] == kFlaps + kSteps; }));
  ASSERT_TRUE(sink.wait([](const auto& e) { return !statuses_of(e, "clock_fault").empty(); }));
  ev = sink.events();
  EXPECT_EQ(statuses_of(ev, "clock_fault").size(), 1u);
  EXPECT_NE(statuses_of(ev, "clock_fault")[0].text.find("unstable"), std::string::npos);
  st = adapter->status();
  EXPECT_TRUE(st["clock"]["unstable"].get<bool>());
  EXPECT_GE(st["clock"]["steps"].get<int>(), kSteps - 1);
  // Tracks are still built by target number: at most the few of the steps before the fault, plus the
  // five vehicles, whatever passed the bound.
  EXPECT_LE(st["tracks"].get<int>(), RadarClockMapper::kUnstableSteps + 5);

  adapter->stop();
  ASSERT_TRUE(sink.wait([&](const auto&) { return adapter->status()["state"] == "stopped"; }));
  io.stop();
  runner.join();
}

}  // namespace
}  // namespace cpd::adapters
