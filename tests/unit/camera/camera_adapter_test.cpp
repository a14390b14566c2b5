// The camera adapter against a small Beast HTTP server in the test that checks Digest answers
// independently: deviceInfo, time (clock offset, and its burst of polls against a running clock), an
// alert stream with pictures, a dropped picture, a duplicate event, malformed XML; and the
// no-retry-loop behaviour on 401/403.
#include "adapters/camera/camera_adapter.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/camera/http_auth.h"
#include "daemon/core/encoding.h"
#include "daemon/media/media_store.h"
#include "tests/support/camera_messages.h"
#include "tests/support/device_test_helpers.h"

namespace cpd::adapters {
namespace {

using cpd::test::of_type;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;

constexpr UnixMs kGatewayNow = 1795750730000;  // 2026-11-27T03:38:50Z
constexpr const char* kPassword = "Circle Of Life";

// The gateway clock running in real time from kGatewayNow (on the steady clock, so it never steps).
class RunningClock final : public WallClock {
 public:
  UnixMs now_ms() const override {
    const auto elapsed = std::chrono::steady_clock::now() - start_;
    return kGatewayNow + std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// ISAPI localTime at +08:00, whole seconds only, as the cameras send it.
std::string local_time_of(UnixMs ms) {
  const std::time_t local = static_cast<std::time_t>((ms >= 0 ? ms : ms - 999) / 1000 + 8 * 3600);
  std::tm tm{};
  gmtime_r(&local, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+08:00", &tm);
  return buf;
}

// Collects events; waits on a condition (with a deadline), never on a sleep.
class CollectingSink final : public EventSink {
 public:
  void emit(DeviceEvent event) override {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
    cv_.notify_all();
  }
  template <typename Pred>
  bool wait_for(Pred pred) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return pred(events_); });
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

std::map<std::string, std::string> auth_params(const std::string& header) {
  std::map<std::string, std::string> out;
  static const std::regex kParam(R"re((\w+)=(?:"([^"]*)"|([^,\s]+)))re");
  for (auto it = std::sregex_iterator(header.begin(), header.end(), kParam); it != std::sregex_iterator();
       ++it) {
    out[(*it)[1]] = (*it)[2].matched ? (*it)[2].str() : (*it)[3].str();
  }
  return out;
}

// A camera speaking just enough ISAPI: thread per connection, synchronous Beast.
class FakeCamera {
 public:
  // kFlood: the stream body over and over, without pause, until the adapter hangs up.
  enum class Mode { kNormal, kLocked, kFlood };

  // camera_now: the camera's clock (ms) when it answers a time request; unset: always 11:38:54+08:00.
  explicit FakeCamera(std::string stream_body, Mode mode = Mode::kNormal,
                      std::function<UnixMs()> camera_now = {})
      : stream_body_(std::move(stream_body)),
        mode_(mode),
        camera_now_(std::move(camera_now)),
        acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~FakeCamera() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      for (auto* s : sockets_) {
        boost::system::error_code ignored;
        s->shutdown(tcp::socket::shutdown_both, ignored);
      }
    }
    cv_.notify_all();
    // Wake the blocking accept with a connection of our own.
    boost::system::error_code ignored;
    tcp::socket waker(io_);
    waker.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ignored);
    accept_thread_.join();
    for (auto& t : connection_threads_) {
      t.join();
    }
  }

  std::uint16_t port() const { return port_; }
  int requests() const { return requests_; }
  int challenges() const { return challenges_; }
  int bad_answers() const { return bad_answers_; }
  int time_requests() const { return time_requests_; }
  int stream_requests() const { return stream_requests_; }
  std::vector<std::string> nonce_counts() const {
    std::lock_guard lock(mutex_);
    return nonce_counts_;
  }

 private:
  void accept_loop() {
    while (true) {
      auto socket = std::make_unique<tcp::socket>(io_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      std::lock_guard lock(mutex_);
      if (stopping_ || ec) {
        return;
      }
      connection_threads_.emplace_back([this, s = std::move(socket)]() mutable { serve(std::move(s)); });
    }
  }

  // Independent Digest check (RFC 7616 with MD5 and qop=auth).
  bool authorized(const http::request<http::empty_body>& req) {
    const auto it = req.find(http::field::authorization);
    if (it == req.end()) {
      return false;
    }
    auto p = auth_params(std::string(it->value()));
    const std::string ha1 = md5_hex("admin:cam:" + std::string(kPassword));
    const std::string ha2 = md5_hex("GET:" + std::string(req.target()));
    const std::string expected =
        md5_hex(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":auth:" + ha2);
    const bool ok = p["username"] == "admin" && p["realm"] == "cam" && p["nonce"] == "n1" &&
                    p["uri"] == std::string(req.target()) && p["qop"] == "auth" && p["response"] == expected;
    std::lock_guard lock(mutex_);
    if (ok) {
      nonce_counts_.push_back(p["nc"]);
    } else {
      ++bad_answers_;
    }
    return ok;
  }

  template <typename Body>
  static void send(tcp::socket& s, http::response<Body>& res, bool keep_alive) {
    res.keep_alive(keep_alive);
    res.prepare_payload();
    boost::system::error_code ignored;
    http::write(s, res, ignored);
  }

  void serve(std::unique_ptr<tcp::socket> socket) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        return;
      }
      sockets_.push_back(socket.get());
    }
    serve_requests(*socket);
    std::lock_guard lock(mutex_);
    std::erase(sockets_, socket.get());
  }

  void serve_requests(tcp::socket& s) {
    beast::flat_buffer buffer;
    while (true) {
      http::request<http::empty_body> req;
      boost::system::error_code ec;
      http::read(s, buffer, req, ec);
      if (ec) {
        return;
      }
      ++requests_;
      if (mode_ == Mode::kLocked) {
        http::response<http::string_body> res{http::status::forbidden, 11};
        send(s, res, req.keep_alive());
        continue;
      }
      if (!authorized(req)) {
        ++challenges_;
        http::response<http::string_body> res{http::status::unauthorized, 11};
        res.set(http::field::www_authenticate, "Digest realm=\"cam\", nonce=\"n1\", qop=\"auth\"");
        res.body() = "unauthorized";
        send(s, res, req.keep_alive());
        continue;
      }
      const std::string target(req.target());
      if (target == "/ISAPI/System/deviceInfo") {
        http::response<http::string_body> res{http::status::ok, 11};
        res.set(http::field::content_type, "application/xml");
        cpd::test::DeviceInfo info;
        info.device_name = "gate";
        info.device_id = "dev-1";
        info.model = "iDS-TEST";
        info.serial_number = "SN42";
        res.body() = cpd::test::device_info_xml(info);
        send(s, res, req.keep_alive());
      } else if (target == "/ISAPI/System/time") {
        ++time_requests_;
        http::response<http::string_body> res{http::status::ok, 11};
        // By default the camera is 4 s ahead of the fixed gateway clock; whole seconds only.
        const std::string local = camera_now_ ? local_time_of(camera_now_()) : "2026-11-27T11:38:54+08:00";
        cpd::test::TimeStatus time;
        time.time_mode = "manual";
        time.local_time = local;
        res.body() = cpd::test::time_xml(time);
        send(s, res, req.keep_alive());
      } else if (target == "/ISAPI/Event/notification/alertStream") {
        ++stream_requests_;
        http::response<http::empty_body> res{http::status::ok, 11};
        res.set(http::field::content_type, "multipart/mixed; boundary=boundary");
        res.chunked(true);
        http::response_serializer<http::empty_body> sr{res};
        http::write_header(s, sr, ec);
        // Odd chunk sizes so parts are cut at awkward places.
        do {
          for (std::size_t at = 0; at < stream_body_.size() && !ec; at += 1013) {
            const auto piece = std::string_view(stream_body_).substr(at, 1013);
            asio::write(s, http::make_chunk(asio::buffer(piece.data(), piece.size())), ec);
          }
        } while (mode_ == Mode::kFlood && !ec);
        if (mode_ == Mode::kFlood) {
          return;
        }
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return stopping_; });
        return;
      } else {
        http::response<http::string_body> res{http::status::not_found, 11};
        send(s, res, req.keep_alive());
      }
      if (!req.keep_alive()) {
        return;
      }
    }
  }

  std::string stream_body_;
  Mode mode_;
  std::function<UnixMs()> camera_now_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::thread accept_thread_;
  std::vector<std::thread> connection_threads_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<tcp::socket*> sockets_;
  std::vector<std::string> nonce_counts_;
  std::atomic<int> requests_{0};
  std::atomic<int> challenges_{0};
  std::atomic<int> bad_answers_{0};
  std::atomic<int> time_requests_{0};
  std::atomic<int> stream_requests_{0};
};

// ---- stream builders ----

std::string xml_part(const std::string& xml) {
  return cpd::test::xml_part("boundary", xml);
}

std::string jpeg_part(const std::string& name, const std::string& bytes) {
  return cpd::test::jpeg_part("boundary", name, bytes);
}

std::string heartbeat() {
  cpd::test::Heartbeat h;
  h.date_time = "2026-11-27T11:38:50+08:00";
  return xml_part(cpd::test::heartbeat_xml(h));
}

std::string anpr(const std::string& uuid, const std::string& plate, const std::vector<std::string>& files) {
  cpd::test::AnprAlert a;
  a.date_time = "2026-11-27T11:38:54.123+08:00";
  a.active_post_count = 7;
  a.license_plate = plate;
  a.line = 2;
  a.uuid = uuid;
  for (const auto& f : files) {
    a.pictures.push_back({f,
                          f.find("plate") != std::string::npos ? "licensePlatePicture" : "detectionPicture",
                          "20261127113854223"});
  }
  return xml_part(cpd::test::anpr_alert_xml(a));
}

// JPEG-looking bytes with the boundary line inside: only Content-Length can frame them.
std::string jpeg(int seed, std::size_t size) {
  std::string j = "\xff\xd8\xff\xe0";
  j += "\r\n--boundary\r\nContent-Type: application/xml\r\n\r\n";
  std::uint32_t x = static_cast<std::uint32_t>(seed);
  while (j.size() < size - 2) {
    x = x * 1664525U + 1013904223U;
    j += static_cast<char>(x >> 24);
  }
  return j + "\xff\xd9";
}

class CameraAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cpd-camera-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    media_ = std::make_unique<media::MediaStore>((dir_ / "media").string());
  }
  void TearDown() override {
    if (adapter_) {
      adapter_->stop();
    }
    work_.reset();
    if (io_thread_.joinable()) {
      io_thread_.join();
    }
    blocking_.join();
    adapter_.reset();
    fs::remove_all(dir_);
  }

  void start(std::uint16_t port, const std::string& password = kPassword, const WallClock* clock = nullptr,
             int stream_idle_timeout_s = 30) {
    const CameraConfig c = config(port, password, stream_idle_timeout_s);
    ctx_.emplace(AdapterContext{io_, sink_, clock != nullptr ? *clock : clock_, &blocking_, media_.get()});
    adapter_ = make_camera_adapter(c, *ctx_);
    adapter_->start();
    io_thread_ = std::thread([this] { io_.run(); });
  }

  static CameraConfig config(std::uint16_t port, const std::string& password = kPassword,
                             int stream_idle_timeout_s = 30) {
    CameraConfig c;
    c.id = "cam-1";
    c.url = "http://127.0.0.1:" + std::to_string(port);
    c.host = "127.0.0.1";
    c.port = port;
    c.username = "admin";
    c.password = password;
    c.radar = "radar-1";
    c.picture_wait_ms = 5000;  // long: the test's dropped picture must be settled by the next alert
    c.stream_idle_timeout_s = stream_idle_timeout_s;
    c.reconnect_initial_ms = 100;
    return c;
  }

  // Polls `pred` every millisecond for up to 10 s.
  static bool eventually(const std::function<bool()>& pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) {
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  fs::path dir_;
  std::unique_ptr<media::MediaStore> media_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{io_.get_executor()};
  asio::thread_pool blocking_{1};
  cpd::test::FixedClock clock_{kGatewayNow};
  // A clock given to start() must outlive the adapter, which runs until TearDown: a fixture member, never a
  // test's local (a local one was destroyed while the adapter still read it: "pure virtual method called").
  RunningClock running_clock_;
  CollectingSink sink_;
  std::optional<AdapterContext> ctx_;
  std::unique_ptr<Adapter> adapter_;
  std::thread io_thread_;
};

TEST_F(CameraAdapterTest, StreamWithPicturesDroppedPictureDuplicateAndMalformedXml) {
  const std::string det = jpeg(1, 60000);
  const std::string plate = jpeg(2, 5000);
  const std::string b2 = jpeg(3, 20000);
  const std::string body = heartbeat() + anpr("uuid-A", "浙A12345", {"detection.jpg", "plate.jpg"}) +
                           jpeg_part("detection.jpg", det) + jpeg_part("plate.jpg", plate) + heartbeat() +
                           anpr("uuid-B", "浙B00001", {"b1.jpg", "b2.jpg"}) + jpeg_part("b2.jpg", b2) +
                           anpr("uuid-A", "浙A12345", {"detection.jpg", "plate.jpg"}) +
                           jpeg_part("detection.jpg", det) + jpeg_part("plate.jpg", plate) +
                           xml_part("<EventNotificationAlert><eventType>ANPR</event") +
                           anpr("uuid-C", "unknown", {});
  FakeCamera camera(body);
  start(camera.port());

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return of_type<PlateRead>(ev).size() >= 3; }))
      << adapter_->status().dump();
  const auto reads = of_type<PlateRead>(sink_.events());
  ASSERT_EQ(reads.size(), 3U);

  const UnixMs camera_ms = 1795750734123;  // 2026-11-27T11:38:54.123+08:00
  // 11:38:54 read at 11:38:50.000 sharp, again and again (the gateway clock is fixed): the camera is
  // 4000..4999 ms ahead, and no poll can narrow that.
  const std::int64_t offset = 4500;
  const PlateRead& a = reads[0];
  EXPECT_EQ(a.device_id, "cam-1");
  EXPECT_EQ(a.radar_id, "radar-1");
  EXPECT_EQ(a.uuid, "uuid-A");
  EXPECT_EQ(a.plate, "浙A12345");
  EXPECT_EQ(a.lane, 2);
  EXPECT_EQ(a.direction, "forward");
  EXPECT_EQ(a.confidence, 97);
  EXPECT_EQ(a.active_post_count, 7);
  EXPECT_EQ(a.camera_time, "2026-11-27T11:38:54.123+08:00");
  EXPECT_EQ(a.camera_time_ms, camera_ms);
  ASSERT_TRUE(a.clock_offset_ms);
  EXPECT_EQ(*a.clock_offset_ms, offset);
  ASSERT_TRUE(a.clock_offset_uncertainty_ms);
  EXPECT_EQ(*a.clock_offset_uncertainty_ms, 500);
  EXPECT_EQ(a.clock_offset_measured_ms, kGatewayNow);
  EXPECT_EQ(a.time_ms, camera_ms - offset);
  EXPECT_TRUE(a.missing_pictures.empty());
  ASSERT_EQ(a.pictures.size(), 2U);
  EXPECT_EQ(a.pictures[0].file_name, "detection.jpg");
  EXPECT_EQ(a.pictures[0].kind, "detectionPicture");
  EXPECT_EQ(a.pictures[0].content_type, "image/jpeg");
  EXPECT_EQ(a.pictures[0].sha256, sha256_hex(det));
  EXPECT_EQ(a.pictures[0].bytes, static_cast<std::int64_t>(det.size()));
  EXPECT_EQ(a.pictures[0].capture_ms, camera_ms + 100 - offset);
  EXPECT_EQ(a.pictures[1].file_name, "plate.jpg");
  EXPECT_EQ(a.pictures[1].kind, "licensePlatePicture");
  EXPECT_EQ(a.pictures[1].sha256, sha256_hex(plate));
  EXPECT_EQ(media_->read(a.pictures[0].sha256), det);
  EXPECT_EQ(media_->read(a.pictures[1].sha256), plate);
  EXPECT_NE(a.raw_xml.find("uuid-A"), std::string::npos);

  const PlateRead& b = reads[1];
  EXPECT_EQ(b.uuid, "uuid-B");
  ASSERT_EQ(b.pictures.size(), 1U);
  EXPECT_EQ(b.pictures[0].file_name, "b2.jpg");
  EXPECT_EQ(b.pictures[0].sha256, sha256_hex(b2));
  EXPECT_EQ(media_->read(b.pictures[0].sha256), b2);
  EXPECT_EQ(b.missing_pictures, std::vector<std::string>{"b1.jpg"});

  EXPECT_EQ(reads[2].uuid, "uuid-C");
  EXPECT_EQ(reads[2].plate, "unknown");
  EXPECT_TRUE(reads[2].pictures.empty());

  const auto st = adapter_->status();
  EXPECT_EQ(st["kind"], "camera");
  EXPECT_EQ(st["state"], "connected");
  EXPECT_EQ(st["device"]["model"], "iDS-TEST");
  EXPECT_EQ(st["device"]["serialNumber"], "SN42");
  EXPECT_EQ(st["device"]["deviceID"], "dev-1");
  EXPECT_EQ(st["device"]["deviceName"], "gate");
  EXPECT_EQ(st["device"]["firmwareVersion"], "V5.5.0");
  EXPECT_EQ(st["events"], 3);
  EXPECT_EQ(st["heartbeats"], 2);
  EXPECT_EQ(st["duplicates"], 1);
  EXPECT_EQ(st["pictures"], 3);
  EXPECT_EQ(st["missing_pictures"], 1);
  EXPECT_EQ(st["clock_offset_ms"], offset);
  EXPECT_EQ(st["clock_offset_uncertainty_ms"], 500);
  // A burst of time polls (the reads waited for it): all of them in the window, none narrowing.
  EXPECT_GT(camera.time_requests(), 1);
  EXPECT_EQ(st["clock_offset_samples"], camera.time_requests());
  EXPECT_EQ(st["clock_offset_restarts"], 0);
  EXPECT_EQ(st["errors"]["malformed_xml"], 1) << st.dump();
  EXPECT_FALSE(st["errors"].contains("unexpected_picture")) << st.dump();
  EXPECT_EQ(st["last_event_ms"], kGatewayNow);
  EXPECT_EQ(st.dump().find(kPassword), std::string::npos);

  const auto statuses = of_type<DeviceStatusEvent>(sink_.events());
  ASSERT_EQ(statuses.size(), 1U);
  EXPECT_EQ(statuses[0].state, "connected");
  EXPECT_EQ(statuses[0].kind, "camera");

  // One challenge per fresh connection before the nonce is known, then the nonce is reused with nc counting.
  EXPECT_EQ(camera.bad_answers(), 0);
  EXPECT_GE(camera.challenges(), 1);
  const auto ncs = camera.nonce_counts();
  // deviceInfo, the time polls, alertStream
  ASSERT_EQ(ncs.size(), 2U + static_cast<std::size_t>(camera.time_requests()));
  for (std::size_t i = 0; i < ncs.size(); ++i) {
    char expected[32];
    std::snprintf(expected, sizeof expected, "%08zx", i + 1);
    EXPECT_EQ(ncs[i], expected);
  }
}

// A loopback camera 4237 ms ahead of a running gateway clock, read in whole seconds: the burst of polls
// at (re)connect narrows the offset enough that the first plate read already carries a precise one.
TEST_F(CameraAdapterTest, FirstPlateReadHasAnOffsetGoodToTensOfMilliseconds) {
  constexpr std::int64_t kTrueOffset = 4237;
  const RunningClock& gateway = running_clock_;
  FakeCamera camera(heartbeat() + anpr("uuid-R", "浙R00042", {}), FakeCamera::Mode::kNormal,
                    [&gateway] { return gateway.now_ms() + kTrueOffset; });
  start(camera.port(), kPassword, &gateway);

  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return !of_type<PlateRead>(ev).empty(); }))
      << adapter_->status().dump();
  const PlateRead r = of_type<PlateRead>(sink_.events()).at(0);
  ASSERT_TRUE(r.clock_offset_ms);
  ASSERT_TRUE(r.clock_offset_uncertainty_ms);
  // The promise of the uncertainty, and its size (a single whole-second poll gives about ±500 ms).
  EXPECT_LE(std::abs(*r.clock_offset_ms - kTrueOffset), *r.clock_offset_uncertainty_ms)
      << *r.clock_offset_ms << " ± " << *r.clock_offset_uncertainty_ms;
  EXPECT_LE(*r.clock_offset_uncertainty_ms, 100)
      << *r.clock_offset_ms << " ± " << *r.clock_offset_uncertainty_ms;
  EXPECT_EQ(r.time_ms, r.camera_time_ms - *r.clock_offset_ms);
  EXPECT_GE(camera.time_requests(), 3);

  const auto st = adapter_->status();
  EXPECT_LE(st["clock_offset_uncertainty_ms"].get<std::int64_t>(), *r.clock_offset_uncertainty_ms);
  EXPECT_LE(std::abs(st["clock_offset_ms"].get<std::int64_t>() - kTrueOffset),
            st["clock_offset_uncertainty_ms"].get<std::int64_t>());
  EXPECT_EQ(st["clock_offset_restarts"], 0);
}

// A camera set to GBK: its plate read goes out with the exact bytes (never refused, never altered: the
// record escapes them and keeps them in base64), counted as errors{text_not_utf8}.
TEST_F(CameraAdapterTest, APlateThatIsNotUtf8IsKeptExactAndCounted) {
  const std::string det = jpeg(1, 6000);
  FakeCamera camera(heartbeat() +
                    anpr("uuid-G",
                         "\xd5\xe3"
                         "A12345",
                         {"detection.jpg"}) +
                    jpeg_part("detection.jpg", det) + anpr("uuid-H", "浙B00001", {}));
  start(camera.port());
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return of_type<PlateRead>(ev).size() >= 2; }))
      << adapter_->status().dump();
  const auto reads = of_type<PlateRead>(sink_.events());
  EXPECT_EQ(reads[0].plate,
            "\xd5\xe3"
            "A12345");
  EXPECT_NE(reads[0].raw_xml.find("\xd5\xe3"
                                  "A12345"),
            std::string::npos);
  ASSERT_EQ(reads[0].pictures.size(), 1U);
  EXPECT_EQ(reads[0].pictures[0].sha256, sha256_hex(det));
  EXPECT_EQ(reads[1].plate, "浙B00001");
  const auto st = adapter_->status();
  EXPECT_EQ(st["errors"].value("text_not_utf8", 0), 1) << st.dump();
  EXPECT_NO_THROW(st.dump()) << "the status stays JSON";
}

TEST_F(CameraAdapterTest, ASilentStreamIsClosedAndReopened) {
  // One heartbeat, then nothing: the camera's stream is dead once it is silent for the idle timeout
  // (30 s in the field; the config allows 11 s at least; 1 s here to keep the test short).
  FakeCamera camera(heartbeat());
  start(camera.port(), kPassword, nullptr, 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (camera.stream_requests() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(camera.stream_requests(), 2) << adapter_->status().dump();
  EXPECT_GE(adapter_->status()["errors"].value("stream_idle", 0), 1) << adapter_->status().dump();
}

// Regression: closing the stream (stop, idle timeout, reconnect) used to destroy the HTTP parser and buffer
// while a read on them was in flight. With data arriving all the time a read's bytes are often already
// taken when the stop runs; Beast then parsed them into the destroyed parser ("pure virtual method called",
// found by the fault harness's 500-kill run at one SIGTERM in ~270). Each connection now owns its parser.
TEST_F(CameraAdapterTest, StoppingWhileTheStreamFloodsInDoesNotTouchAClosedConnection) {
  FakeCamera camera(heartbeat(), FakeCamera::Mode::kFlood);
  ctx_.emplace(AdapterContext{io_, sink_, clock_, &blocking_, media_.get()});
  io_thread_ = std::thread([this] { io_.run(); });
  std::mt19937 rng(20261127);
  std::uniform_int_distribution<int> pause_us(0, 3000);
  constexpr int kCycles = 150;
  for (int i = 0; i < kCycles; ++i) {
    auto adapter = make_camera_adapter(config(camera.port()), *ctx_);
    adapter->start();
    ASSERT_TRUE(eventually([&] { return adapter->status()["state"] == "connected"; }))
        << "cycle " << i << ": " << adapter->status().dump();
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    adapter->stop();
    ASSERT_TRUE(eventually([&] { return adapter->status()["state"] == "stopped"; })) << "cycle " << i;
  }
  // Every connection's stale completions have run by now (or run harmlessly later); the camera saw each.
  EXPECT_GE(camera.stream_requests(), kCycles);
}

TEST_F(CameraAdapterTest, WrongPasswordIsOneFailedAttemptThenAFault) {
  FakeCamera camera("");
  start(camera.port(), "wrong password");
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return !of_type<DeviceStatusEvent>(ev).empty(); }));
  const auto statuses = of_type<DeviceStatusEvent>(sink_.events());
  EXPECT_EQ(statuses[0].state, "fault");
  EXPECT_EQ(statuses[0].text, "authentication failed");
  EXPECT_EQ(statuses[0].code, 401);
  // The unauthenticated request (a challenge, not a failure) and one fresh answer; no loop.
  EXPECT_EQ(camera.requests(), 2);
  EXPECT_EQ(camera.bad_answers(), 1);
  const auto st = adapter_->status();
  EXPECT_EQ(st["state"], "auth_failed");
  EXPECT_EQ(st["errors"]["auth_failed"], 1);
  EXPECT_EQ(st.dump().find("wrong password"), std::string::npos);
}

TEST_F(CameraAdapterTest, LockedUserIsAFaultWithoutRetry) {
  FakeCamera camera("", FakeCamera::Mode::kLocked);
  start(camera.port());
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return !of_type<DeviceStatusEvent>(ev).empty(); }));
  const auto statuses = of_type<DeviceStatusEvent>(sink_.events());
  EXPECT_EQ(statuses[0].state, "fault");
  EXPECT_EQ(statuses[0].text, "user locked");
  EXPECT_EQ(statuses[0].code, 403);
  EXPECT_EQ(camera.requests(), 1);
  EXPECT_EQ(adapter_->status()["state"], "locked");
}

TEST_F(CameraAdapterTest, UnreachableCameraReportsDisconnected) {
  // A port that was just free: nothing listens there.
  std::uint16_t port = 0;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  start(port);
  ASSERT_TRUE(sink_.wait_for([](const auto& ev) { return !of_type<DeviceStatusEvent>(ev).empty(); }));
  const auto statuses = of_type<DeviceStatusEvent>(sink_.events());
  EXPECT_EQ(statuses[0].state, "disconnected");
  EXPECT_NE(statuses[0].text.find("connect failed"), std::string::npos) << statuses[0].text;
}

}  // namespace
}  // namespace cpd::adapters
