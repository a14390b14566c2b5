// The ANPR camera simulator: a Beast HTTP/1.1 server with Digest/Basic auth and lock-out, deviceInfo and
// time documents, and the chunked multipart alert stream with heartbeats, ANPR alerts, real JPEGs and
// faults on demand (reboots, dropped pictures, malformed XML, repeats, split writes).
#include "tools/sim/camera_sim.h"

#include <iconv.h>
#include <openssl/evp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "tests/support/camera_messages.h"
#include "tools/sim/jpeg.h"
#include "tools/sim/listen.h"
#include "tools/sim/sim_common.h"

namespace cpd::sim {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kAlertStreamPath = "/ISAPI/Event/notification/alertStream";
constexpr std::string_view kDeviceInfoPath = "/ISAPI/System/deviceInfo";
constexpr std::string_view kTimePath = "/ISAPI/System/time";
constexpr auto kTick = std::chrono::milliseconds(50);
constexpr auto kNonceLifetime = std::chrono::minutes(5);
constexpr std::size_t kMaxNonces = 4096;
constexpr std::size_t kMaxStreamBacklog = 64U << 20U;  // a stream that stops reading is closed past this
constexpr std::int64_t kTwoStageGapMs = 300;

// The camera's text in its configured encoding: UTF-8 as given, or converted to GBK (what a camera set to a
// Chinese locale sends). A character GBK lacks is sent as '?', as such firmware does.
std::string camera_text(const CameraOptions& opt, const std::string& utf8) {
  if (opt.text_encoding != "GBK") {
    return utf8;
  }
  iconv_t cd = iconv_open("GBK//TRANSLIT", "UTF-8");
  if (cd == reinterpret_cast<iconv_t>(-1)) {
    return utf8;
  }
  std::string in = utf8;
  std::string out(in.size() * 2 + 4, '\0');
  char* src = in.data();
  std::size_t src_left = in.size();
  char* dst = out.data();
  std::size_t dst_left = out.size();
  while (src_left > 0) {
    if (iconv(cd, &src, &src_left, &dst, &dst_left) == static_cast<std::size_t>(-1)) {
      if (dst_left == 0) {
        break;
      }
      *dst++ = '?';
      --dst_left;
      ++src;
      --src_left;
    }
  }
  iconv_close(cd);
  out.resize(out.size() - dst_left);
  return out;
}

std::string hex_random(std::mt19937_64& rng, std::size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto b = static_cast<unsigned>(rng() & 0xFF);
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string uuid_v4(std::mt19937_64& rng) {
  std::string h = hex_random(rng, 16);
  h[12] = '4';
  h[16] = "89ab"[rng() % 4];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
         h.substr(20);
}

std::string sha256_hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md.data(), &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

// A random Chinese civil plate (province character, letter, five characters); green plates have six.
std::string random_plate(std::mt19937_64& rng, const std::string& color) {
  static const std::array<std::string_view, 31> kProvinces = {
      "京", "津", "沪", "渝", "冀", "豫", "云", "辽", "黑", "湘", "皖", "鲁", "新", "苏", "浙", "赣",
      "鄂", "桂", "甘", "晋", "蒙", "陕", "吉", "闽", "贵", "粤", "青", "藏", "川", "宁", "琼"};
  static constexpr std::string_view kLetters = "ABCDEFGHJKLMNPQRSTUVWXYZ";  // no I, O
  static constexpr std::string_view kDigits = "0123456789";
  std::string plate(kProvinces[rng() % kProvinces.size()]);
  plate += kLetters[rng() % kLetters.size()];
  const int n = color == "green" ? 6 : 5;
  for (int i = 0; i < n; ++i) {
    const bool letter = (color == "green" && i == 0) || (i < 2 && rng() % 4 == 0);
    plate += letter ? kLetters[rng() % kLetters.size()] : kDigits[rng() % kDigits.size()];
  }
  return plate;
}

std::string random_color(std::mt19937_64& rng) {
  const double u = uniform01(rng);
  return u < 0.78 ? "blue" : u < 0.90 ? "yellow" : u < 0.98 ? "green" : "white";
}

std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find('?'));
}

std::string response_status_xml(std::string_view ns, int code, std::string_view status,
                                std::string_view sub) {
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ResponseStatus version=\"2.0\" xmlns=\"";
  x += ns;
  x +=
      "\">\n<requestURL></requestURL>\n<statusCode>" + std::to_string(code) + "</statusCode>\n<statusString>";
  x += status;
  x += "</statusString>\n<subStatusCode>";
  x += sub;
  x += "</subStatusCode>\n</ResponseStatus>\n";
  return x;
}

}  // namespace

class Session;

class CameraSim::Impl : public std::enable_shared_from_this<CameraSim::Impl> {
 public:
  Impl(asio::io_context& io, CameraOptions opt)
      : io_(io),
        opt_(std::move(opt)),
        acceptor_(io),
        tick_timer_(io),
        reboot_timer_(io),
        traffic_rng_(opt_.seed),
        fault_rng_(opt_.seed ^ 0x9E3779B97F4A7C15ULL),
        split_rng_(opt_.seed ^ 0x51A7ULL),
        nonce_rng_(std::random_device{}()),
        opaque_(hex_random(nonce_rng_, 16)) {}

  bool start();
  bool open(std::uint16_t port);
  void accept();
  void tick();
  void reboot();
  void stop();
  CameraEventTruth emit(const CameraCapture& capture);
  std::string picture_parts(std::int64_t cam_ms, test::AnprAlert& a, CameraEventTruth& t);
  CameraCapture random_capture();
  void stream_opened();
  void forget(const std::shared_ptr<Session>& s) { sessions_.erase(s); }

  enum class AuthVerdict { kOk, kChallenge, kStale, kLocked };
  AuthVerdict authorize(const http::request<http::string_body>& req);
  std::string challenge(bool stale);
  std::string heartbeat_part();

  asio::io_context& io_;
  CameraOptions opt_;
  tcp::acceptor acceptor_;
  asio::steady_timer tick_timer_;
  asio::steady_timer reboot_timer_;
  std::uint16_t port_ = 0;
  std::set<std::shared_ptr<Session>> sessions_;
  std::mt19937_64 traffic_rng_;
  std::mt19937_64 fault_rng_;
  std::mt19937_64 split_rng_;
  std::mt19937_64 nonce_rng_;
  std::string opaque_;
  JpegFactory jpegs_;
  std::uint64_t active_post_count_ = 0;
  std::ofstream truth_;
  struct Failures {
    int in_a_row = 0;
    Clock::time_point locked_until{};
  };
  std::map<std::string, Failures> failures_;
  struct Nonce {
    Clock::time_point expires;
    std::uint32_t last_nc = 0;
  };
  std::map<std::string, Nonce> nonces_;
  bool rebooting_ = false;
  bool stopping_ = false;
  bool traffic_started_ = false;
  bool done_signalled_ = false;
  Clock::time_point traffic_start_{};
  double next_event_ms_ = 0.0;
  std::uint64_t emitted_ = 0;
  Clock::time_point next_reboot_{};
  std::function<void()> on_stream_opened_;
  std::function<void()> on_done_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<CameraSim::Impl> sim, tcp::socket socket)
      : sim_(std::move(sim)), socket_(std::move(socket)) {}

  void start() { read_request(); }
  bool streaming() const { return streaming_; }
  std::size_t backlog() const { return queued_bytes_; }
  Clock::time_point last_enqueued() const { return last_enqueued_; }

  // Stream data as HTTP chunks: one chunk per call, or random small chunks with --split-writes.
  void send_stream(std::string_view data) {
    if (closed_ || close_after_drain_) {
      return;
    }
    if (sim_->opt_.split_writes) {
      std::size_t at = 0;
      while (at < data.size()) {
        const std::size_t n = std::min<std::size_t>(data.size() - at, 1 + sim_->split_rng_() % 700);
        enqueue(test::http_chunk(data.substr(at, n)));
        at += n;
      }
    } else {
      enqueue(test::http_chunk(data));
    }
    last_enqueued_ = Clock::now();
    if (queued_bytes_ > kMaxStreamBacklog) {
      close();
    }
  }

  // A reboot: whatever is queued goes out, then a chunk that announces a whole part but carries only its
  // first half, then the connection drops (a reader sees the stream closed mid-part).
  void cut_and_close(std::string_view part) {
    if (closed_) {
      return;
    }
    if (streaming_) {
      std::string cut = test::http_chunk(part);
      cut.resize(cut.size() - 2 - part.size() / 2);
      enqueue(std::move(cut));
    }
    close_after_drain_ = true;
    write_next();
  }

  void close() {
    if (closed_) {
      return;
    }
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    out_.clear();
    queued_bytes_ = 0;
    sim_->forget(shared_from_this());
  }

 private:
  void read_request() {
    parser_.emplace();
    parser_->body_limit(64 * 1024);
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](const error_code& ec, std::size_t) {
                       if (ec || self->closed_ || self->sim_->stopping_) {
                         self->close();
                         return;
                       }
                       self->on_request(self->parser_->release());
                     });
  }

  void on_request(http::request<http::string_body> req) {
    using Verdict = CameraSim::Impl::AuthVerdict;
    const auto& ns = sim_->opt_.xml_namespace;
    const Verdict v = sim_->authorize(req);
    if (v == Verdict::kLocked) {
      respond(req, http::status::forbidden, response_status_xml(ns, 4, "Invalid Operation", "userLocked"));
      return;
    }
    if (v != Verdict::kOk) {
      respond(req, http::status::unauthorized,
              response_status_xml(ns, 4, "Invalid Operation", "badAuthorization"),
              sim_->challenge(v == Verdict::kStale));
      return;
    }
    const std::string_view path = path_of(std::string_view(req.target().data(), req.target().size()));
    if (req.method() != http::verb::get) {
      respond(req, http::status::method_not_allowed,
              response_status_xml(ns, 4, "Invalid Operation", "methodNotAllowed"));
      return;
    }
    const std::int64_t camera_ms = unix_now_ms() + sim_->opt_.clock_offset_ms;
    if (path == kDeviceInfoPath) {
      test::DeviceInfo d;
      d.xml_namespace = ns;
      if (sim_->opt_.text_encoding == "GBK") {
        d.device_name = camera_text(sim_->opt_, "卡口抓拍机");
        d.xml_encoding = "GBK";
      }
      respond(req, http::status::ok, test::device_info_xml(d));
    } else if (path == kTimePath) {
      test::TimeStatus t;
      t.xml_namespace = ns;
      t.time_mode = sim_->opt_.clock_offset_ms == 0 ? "NTP" : "manual";
      t.local_time = test::camera_time(camera_ms, sim_->opt_.utc_offset_min, false);
      const int off = sim_->opt_.utc_offset_min;
      std::array<char, 32> tz{};
      // POSIX-style zone as the cameras report it: the sign is inverted (CST-8:00:00 is UTC+8).
      std::snprintf(tz.data(), tz.size(), "CST%c%d:%02d:00", off >= 0 ? '-' : '+', std::abs(off) / 60,
                    std::abs(off) % 60);
      t.time_zone = tz.data();
      respond(req, http::status::ok, test::time_xml(t));
    } else if (path == kAlertStreamPath) {
      open_stream();
    } else {
      respond(req, http::status::not_found, response_status_xml(ns, 4, "Invalid Operation", "notSupport"));
    }
  }

  void respond(const http::request<http::string_body>& req, http::status status, std::string body,
               const std::string& www_authenticate = {}) {
    http::response<http::string_body> res{status, req.version()};
    res.set(http::field::server, "App-webs/");
    res.set(http::field::content_type, "application/xml; charset=\"UTF-8\"");
    if (!www_authenticate.empty()) {
      res.set(http::field::www_authenticate, www_authenticate);
    }
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream os;
    os << res;
    enqueue(os.str());
    if (req.keep_alive()) {
      read_request();
    } else {
      close_after_drain_ = true;
      write_next();
    }
  }

  void open_stream() {
    streaming_ = true;
    enqueue(
        "HTTP/1.1 200 OK\r\nServer: App-webs/\r\nConnection: close\r\nContent-Type: multipart/mixed; "
        "boundary=" +
        sim_->opt_.boundary + "\r\nTransfer-Encoding: chunked\r\n\r\n");
    last_enqueued_ = Clock::now();
    sim_->stream_opened();
    watch_for_close();
  }

  // The client sends nothing on a stream; a read completing with an error means it went away.
  void watch_for_close() {
    socket_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](const error_code& ec, std::size_t) {
                              if (ec) {
                                self->close();
                                return;
                              }
                              self->watch_for_close();
                            });
  }

  void enqueue(std::string bytes) {
    if (closed_) {
      return;
    }
    queued_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    write_next();
  }

  void write_next() {
    if (writing_ || closed_) {
      return;
    }
    if (out_.empty()) {
      if (close_after_drain_) {
        close();
      }
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_.front()),
                      [self = shared_from_this()](const error_code& ec, std::size_t) {
                        self->writing_ = false;
                        if (ec || self->closed_) {
                          self->close();
                          return;
                        }
                        self->queued_bytes_ -= self->out_.front().size();
                        self->out_.pop_front();
                        self->write_next();
                      });
  }

  std::shared_ptr<CameraSim::Impl> sim_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::array<char, 512> discard_{};
  std::deque<std::string> out_;
  std::size_t queued_bytes_ = 0;
  Clock::time_point last_enqueued_{};
  bool writing_ = false;
  bool streaming_ = false;
  bool close_after_drain_ = false;
  bool closed_ = false;
};

// ---- Impl ----

bool CameraSim::Impl::open(std::uint16_t port) {
  if (!open_listener(acceptor_, opt_.host, port, "camera-sim")) {
    return false;
  }
  port_ = acceptor_.local_endpoint().port();
  return true;
}

bool CameraSim::Impl::start() {
  if (!open(opt_.port)) {
    return false;
  }
  if (!opt_.ground_truth.empty()) {
    truth_.open(opt_.ground_truth, std::ios::out | std::ios::trunc);
    if (!truth_) {
      std::cerr << "camera-sim: cannot write " << opt_.ground_truth << "\n";
      return false;
    }
  }
  if (opt_.reboot_every_s > 0) {
    next_reboot_ =
        Clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(opt_.reboot_every_s * 1000));
  }
  accept();
  tick();
  return true;
}

void CameraSim::Impl::accept() {
  acceptor_.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket s) {
    if (ec || self->stopping_ || self->rebooting_) {
      return;  // acceptor closed (reboot or shutdown)
    }
    error_code ignored;
    s.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<Session>(self, std::move(s));
    self->sessions_.insert(session);
    session->start();
    self->accept();
  });
}

void CameraSim::Impl::tick() {
  if (stopping_) {
    return;
  }
  const auto now = Clock::now();
  if (opt_.reboot_every_s > 0 && !rebooting_ && now >= next_reboot_) {
    reboot();
  }
  if (!rebooting_) {
    const auto hb = std::chrono::milliseconds(static_cast<std::int64_t>(opt_.heartbeat_s * 1000));
    const auto sessions = sessions_;  // a send may close (and forget) a session
    for (const auto& s : sessions) {
      if (s->streaming() && now - s->last_enqueued() >= hb) {
        s->send_stream(heartbeat_part());
      }
    }
    if (traffic_started_ && opt_.rate > 0.0) {
      const double elapsed_ms = std::chrono::duration<double, std::milli>(now - traffic_start_).count();
      while ((opt_.events == 0 || emitted_ < opt_.events) && elapsed_ms >= next_event_ms_) {
        emit(random_capture());
        next_event_ms_ += -std::log(1.0 - uniform01(traffic_rng_)) / opt_.rate * 1000.0;
      }
    }
  }
  if (opt_.exit_when_done && opt_.events > 0 && emitted_ >= opt_.events && !done_signalled_) {
    bool drained = true;
    for (const auto& s : sessions_) {
      drained = drained && s->backlog() == 0;
    }
    if (drained) {
      done_signalled_ = true;
      if (on_done_) {
        on_done_();
      }
      return;
    }
  }
  tick_timer_.expires_after(kTick);
  tick_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
    if (!ec) {
      self->tick();
    }
  });
}

void CameraSim::Impl::reboot() {
  rebooting_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  const std::string cut = heartbeat_part();
  const auto sessions = sessions_;
  for (const auto& s : sessions) {
    s->cut_and_close(cut);
  }
  active_post_count_ = 0;
  nonces_.clear();
  reboot_timer_.expires_after(
      std::chrono::milliseconds(static_cast<std::int64_t>(opt_.reboot_outage_s * 1000)));
  reboot_timer_.async_wait([self = shared_from_this()](const error_code& ec) {
    if (ec || self->stopping_) {
      return;
    }
    if (!self->open(self->port_)) {
      self->stop();
      return;
    }
    self->rebooting_ = false;
    self->next_reboot_ =
        Clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(self->opt_.reboot_every_s * 1000));
    self->accept();
  });
}

void CameraSim::Impl::stop() {
  if (stopping_) {
    return;
  }
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  tick_timer_.cancel();
  reboot_timer_.cancel();
  const auto sessions = sessions_;
  for (const auto& s : sessions) {
    s->close();
  }
  sessions_.clear();
}

void CameraSim::Impl::stream_opened() {
  if (!traffic_started_) {
    traffic_started_ = true;
    traffic_start_ = Clock::now();
    next_event_ms_ = opt_.rate > 0.0 ? -std::log(1.0 - uniform01(traffic_rng_)) / opt_.rate * 1000.0 : 0.0;
  }
  if (on_stream_opened_) {
    on_stream_opened_();
  }
}

CameraCapture CameraSim::Impl::random_capture() {
  CameraCapture c;
  c.lane = 1 + static_cast<int>(traffic_rng_() % static_cast<std::uint64_t>(std::max(1, opt_.lanes)));
  c.plate_color = random_color(traffic_rng_);
  c.plate = random_plate(traffic_rng_, c.plate_color);
  if (uniform01(traffic_rng_) < opt_.unknown_rate) {
    c.plate = "unknown";
    c.plate_color = "unknown";
  }
  c.capture_unix_ms = unix_now_ms();
  return c;
}

std::string CameraSim::Impl::heartbeat_part() {
  test::Heartbeat h;
  h.xml_namespace = opt_.xml_namespace;
  h.date_time = test::camera_time(unix_now_ms() + opt_.clock_offset_ms, opt_.utc_offset_min);
  h.active_post_count = active_post_count_;
  return test::xml_part(opt_.boundary, test::heartbeat_xml(h));
}

CameraEventTruth CameraSim::Impl::emit(const CameraCapture& capture) {
  ++emitted_;
  CameraEventTruth t;
  t.capture = capture;
  t.uuid = uuid_v4(traffic_rng_);
  const std::int64_t cam_ms = capture.capture_unix_ms + opt_.clock_offset_ms;
  t.date_time = test::camera_time(cam_ms, opt_.utc_offset_min);
  const bool down = rebooting_ || stopping_;
  if (!down) {
    t.active_post_count = ++active_post_count_;
  }
  test::AnprAlert a;
  a.xml_namespace = opt_.xml_namespace;
  a.date_time = t.date_time;
  a.active_post_count = t.active_post_count;
  a.license_plate = camera_text(opt_, capture.plate);
  a.line = capture.lane;
  a.direction = capture.direction;
  a.plate_color = camera_text(opt_, capture.plate_color);
  a.xml_encoding = opt_.text_encoding;
  a.confidence_level = capture.plate == "unknown" ? 0 : 80 + static_cast<int>(traffic_rng_() % 20);
  a.uuid = t.uuid;
  const std::string pictures = picture_parts(cam_ms, a, t);
  std::string xml = test::anpr_alert_xml(a);
  if (opt_.malformed_xml_rate > 0.0 && uniform01(fault_rng_) < opt_.malformed_xml_rate) {
    t.malformed = true;
    // Cut somewhere in the middle: the part is well framed but its XML never closes.
    xml.resize(xml.size() * (40 + fault_rng_() % 50) / 100);
  }
  t.repeated = opt_.repeat_rate > 0.0 && uniform01(fault_rng_) < opt_.repeat_rate;
  const std::string alert = test::xml_part(opt_.boundary, xml);
  if (!down) {
    const auto sessions = sessions_;
    for (const auto& s : sessions) {
      if (!s->streaming()) {
        continue;
      }
      ++t.streams;
      for (int copy = 0; copy < (t.repeated ? 2 : 1); ++copy) {
        s->send_stream(alert);
        s->send_stream(pictures);
      }
    }
  }
  if (truth_.is_open()) {
    truth_ << camera_truth_json(t) << '\n';
    truth_.flush();
  }
  return t;
}

// The event's pictures: each is named in the alert `a` and recorded in `t`; returns the parts to send (a
// dropped picture is named but not sent).
std::string CameraSim::Impl::picture_parts(std::int64_t cam_ms, test::AnprAlert& a, CameraEventTruth& t) {
  struct Pic {
    std::string name;
    std::string type;
    std::int64_t at_ms;
    bool plate_crop;
  };
  std::vector<Pic> pics;
  if (opt_.two_stage) {
    pics = {{"detectionPicture1.jpg", "detectionPicture", cam_ms - kTwoStageGapMs, false},
            {"detectionPicture2.jpg", "detectionPicture", cam_ms, false}};
  } else {
    pics = {{"detectionPicture.jpg", "detectionPicture", cam_ms, false},
            {"licensePlatePicture.jpg", "licensePlatePicture", cam_ms, true}};
  }
  std::string pictures;
  for (const auto& p : pics) {
    a.pictures.push_back({p.name, p.type, test::camera_abs_time(p.at_ms, opt_.utc_offset_min)});
    std::size_t kb = static_cast<std::size_t>(opt_.picture_kb);
    if (kb == 0) {
      // Plate crops sit at the small end of the range, scenes anywhere in it.
      const int hi =
          p.plate_crop ? std::min(opt_.picture_max_kb, opt_.picture_min_kb + 100) : opt_.picture_max_kb;
      kb = static_cast<std::size_t>(opt_.picture_min_kb) +
           static_cast<std::size_t>(uniform01(traffic_rng_) * (hi - opt_.picture_min_kb + 1));
    }
    const std::size_t bytes = kb * 1024 + traffic_rng_() % 1024;
    // The comment makes each picture's hash unique and puts the boundary inside the JPEG, which the spec
    // says a reader must tolerate.
    const std::string jpeg =
        jpegs_.make(bytes, traffic_rng_(),
                    "uuid=" + t.uuid + " file=" + p.name + "\r\n--" + opt_.boundary + "\r\n", !p.plate_crop);
    CameraPictureTruth pt{p.name, p.type, jpeg.size(), sha256_hex(jpeg), true};
    if (opt_.drop_picture_rate > 0.0 && uniform01(fault_rng_) < opt_.drop_picture_rate) {
      pt.sent = false;
    } else {
      pictures += test::jpeg_part(opt_.boundary, p.name, jpeg);
    }
    t.pictures.push_back(std::move(pt));
  }
  return pictures;
}

CameraSim::Impl::AuthVerdict CameraSim::Impl::authorize(const http::request<http::string_body>& req) {
  const auto it = req.find(http::field::authorization);
  if (it == req.end()) {
    return AuthVerdict::kChallenge;
  }
  const std::string_view header(it->value().data(), it->value().size());
  const auto now = Clock::now();
  std::string user;
  bool credentials_ok = false;
  bool stale = false;
  if (opt_.auth == "basic") {
    if (header.size() < 6 || header.substr(0, 6) != "Basic ") {
      return AuthVerdict::kChallenge;
    }
    const auto decoded = test::base64_decode(header.substr(6));
    if (!decoded || decoded->find(':') == std::string::npos) {
      return AuthVerdict::kChallenge;
    }
    user = decoded->substr(0, decoded->find(':'));
    credentials_ok = user == opt_.username && decoded->substr(decoded->find(':') + 1) == opt_.password;
  } else {
    const auto p = test::parse_auth_params(header, "Digest");
    if (!p) {
      return AuthVerdict::kChallenge;
    }
    auto get = [&](const char* k) -> std::string {
      const auto f = p->find(k);
      return f == p->end() ? std::string() : f->second;
    };
    user = get("username");
    const std::string nc = get("nc");
    const std::string algorithm = get("algorithm");
    if (user.empty() || get("nonce").empty() || get("response").empty() || get("qop") != "auth" ||
        nc.size() != 8 || get("cnonce").empty() || (!algorithm.empty() && algorithm != "MD5") ||
        nc.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      return AuthVerdict::kChallenge;  // not a usable RFC 7616 answer: ask again, no attempt counted
    }
    const std::string target(req.target().data(), req.target().size());
    const std::string method(req.method_string().data(), req.method_string().size());
    const std::string expected = test::digest_response(user, opt_.realm, opt_.password, method, get("uri"),
                                                       get("nonce"), nc, get("cnonce"), "auth");
    credentials_ok = user == opt_.username && get("realm") == opt_.realm && get("uri") == target &&
                     get("response") == expected;
    if (credentials_ok) {
      // Right password; the nonce must be one we issued, still fresh, and the count must move forward.
      auto n = nonces_.find(get("nonce"));
      const auto ncv = static_cast<std::uint32_t>(std::stoul(nc, nullptr, 16));
      if (n == nonces_.end() || n->second.expires < now || ncv <= n->second.last_nc) {
        stale = true;
      } else {
        n->second.last_nc = ncv;
      }
    }
  }
  Failures& f = failures_[user];
  if (f.locked_until > now) {
    return AuthVerdict::kLocked;
  }
  if (!credentials_ok) {
    if (++f.in_a_row >= opt_.max_failures) {
      f.in_a_row = 0;
      f.locked_until = now + std::chrono::milliseconds(static_cast<std::int64_t>(opt_.lock_s * 1000));
      return AuthVerdict::kLocked;
    }
    if (failures_.size() > 1024) {
      failures_.clear();  // bounded: a scan of user names cannot grow memory
    }
    return AuthVerdict::kChallenge;
  }
  f.in_a_row = 0;
  return stale ? AuthVerdict::kStale : AuthVerdict::kOk;
}

std::string CameraSim::Impl::challenge(bool stale) {
  if (opt_.auth == "basic") {
    return "Basic realm=\"" + opt_.realm + "\"";
  }
  const auto now = Clock::now();
  std::erase_if(nonces_, [&](const auto& kv) { return kv.second.expires < now; });
  if (nonces_.size() >= kMaxNonces) {
    nonces_.erase(nonces_.begin());
  }
  const std::string nonce = hex_random(nonce_rng_, 16);
  nonces_[nonce] = Nonce{now + kNonceLifetime, 0};
  return "Digest qop=\"auth\", realm=\"" + opt_.realm + "\", nonce=\"" + nonce + "\", opaque=\"" + opaque_ +
         "\", algorithm=MD5" + (stale ? ", stale=TRUE" : "");
}

// ---- CameraSim ----

CameraSim::CameraSim(asio::io_context& io, CameraOptions opt)
    : impl_(std::make_shared<Impl>(io, std::move(opt))) {}
CameraSim::~CameraSim() {
  impl_->stop();
}
bool CameraSim::start() {
  return impl_->start();
}
std::uint16_t CameraSim::port() const {
  return impl_->port_;
}
CameraEventTruth CameraSim::emit(const CameraCapture& capture) {
  return impl_->emit(capture);
}
std::size_t CameraSim::stream_clients() const {
  return static_cast<std::size_t>(std::count_if(impl_->sessions_.begin(), impl_->sessions_.end(),
                                                [](const auto& s) { return s->streaming(); }));
}
std::size_t CameraSim::stream_backlog() const {
  std::size_t n = 0;
  for (const auto& s : impl_->sessions_) {
    n += s->streaming() ? s->backlog() : 0;
  }
  return n;
}
void CameraSim::on_stream_opened(std::function<void()> callback) {
  impl_->on_stream_opened_ = std::move(callback);
}
void CameraSim::on_done(std::function<void()> callback) {
  impl_->on_done_ = std::move(callback);
}
void CameraSim::stop() {
  impl_->stop();
}

std::string camera_truth_json(const CameraEventTruth& t) {
  nlohmann::json pics = nlohmann::json::array();
  for (const auto& p : t.pictures) {
    pics.push_back({{"file_name", p.file_name},
                    {"type", p.type},
                    {"bytes", p.bytes},
                    {"sha256", p.sha256},
                    {"sent", p.sent}});
  }
  const nlohmann::json j = {
      {"uuid", t.uuid},
      {"dateTime", t.date_time},
      {"active_post_count", t.active_post_count},
      {"plate", t.capture.plate},
      {"lane", t.capture.lane},
      {"plate_color", t.capture.plate_color},
      {"capture_ms", t.capture.capture_unix_ms},
      {"pictures", pics},
      {"repeated", t.repeated},
      {"malformed", t.malformed},
      {"streams", t.streams},
      {"sent", t.streams > 0},
  };
  return j.dump();
}

namespace {

// The server, its authentication, clock and stream format.
void add_camera_server_options(CLI::App& app, CameraOptions& opt, std::string& ns, std::string& utc) {
  app.add_option("--port", opt.port, "TCP port (0 = any; printed as 'listening <port>')");
  app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
  app.add_option("--username", opt.username, "user name")->capture_default_str();
  app.add_option("--password", opt.password, "password")->capture_default_str();
  app.add_option("--auth", opt.auth, "digest or basic")
      ->check(CLI::IsMember({"digest", "basic"}))
      ->capture_default_str();
  app.add_option("--realm", opt.realm, "auth realm")->capture_default_str();
  app.add_option("--lock-s", opt.lock_s, "lock-out after 5 failures in a row, seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--clock-offset-ms", opt.clock_offset_ms, "camera clock minus true time, ms")
      ->capture_default_str();
  app.add_option("--utc-offset", utc, "camera local offset, e.g. +08:00")->capture_default_str();
  app.add_option("--namespace", ns, "XML namespace: isapi or hikvision")
      ->check(CLI::IsMember({"isapi", "hikvision"}))
      ->capture_default_str();
  app.add_option("--boundary", opt.boundary, "multipart boundary")->capture_default_str();
  app.add_option("--heartbeat-s", opt.heartbeat_s, "heartbeat when idle for this long, seconds")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
}

// Random traffic, pictures and faults; the ground truth.
void add_camera_traffic_options(CLI::App& app, CameraOptions& opt) {
  app.add_option("--events", opt.events, "random events in total (0 = endless)")->capture_default_str();
  app.add_option("--rate", opt.rate, "random events per second (0 = none, heartbeats only)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--lanes", opt.lanes, "lanes, 1 = nearest the kerb")
      ->check(CLI::Range(1, 20))
      ->capture_default_str();
  app.add_option("--seed", opt.seed, "seed for plates, sizes, UUIDs and faults")->capture_default_str();
  app.add_option("--unknown-rate", opt.unknown_rate, "share of unreadable plates")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_flag("--two-stage", opt.two_stage,
               "two detectionPicture per event (else detection + licensePlate)");
  app.add_option("--picture-kb", opt.picture_kb, "fix every picture at this size, KiB (0 = by seed)")
      ->check(CLI::Range(0, 1600));
  app.add_option("--picture-min-kb", opt.picture_min_kb, "smallest picture, KiB")
      ->check(CLI::Range(4, 1600))
      ->capture_default_str();
  app.add_option("--picture-max-kb", opt.picture_max_kb, "largest picture, KiB")
      ->check(CLI::Range(4, 1600))
      ->capture_default_str();
  app.add_option("--reboot-every", opt.reboot_every_s,
                 "reboot every S seconds: cut mid-part, refuse for --reboot-outage-s")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--reboot-outage-s", opt.reboot_outage_s, "how long a reboot refuses connections")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--drop-picture-rate", opt.drop_picture_rate,
                 "probability a picture is announced but not sent")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--malformed-xml-rate", opt.malformed_xml_rate, "probability an alert's XML is truncated")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--repeat-rate", opt.repeat_rate,
                 "probability an event is sent twice (same UUID and dateTime)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_flag("--split-writes", opt.split_writes, "write the stream in random small chunks");
  app.add_option("--text-encoding", opt.text_encoding,
                 "how plates, plate colours and the device name are written: UTF-8 (spec) or GBK")
      ->check(CLI::IsMember({"UTF-8", "GBK"}))
      ->capture_default_str();
  app.add_option("--ground-truth", opt.ground_truth, "write one JSON line per event to this file");
  app.add_flag("--exit-when-done", opt.exit_when_done, "exit once --events events are written out");
}

// Serves until SIGINT or SIGTERM, or (--exit-when-done) until the last event is written out.
int serve_camera(const CameraOptions& opt) {
  asio::io_context io;
  CameraSim sim(io, opt);
  if (!sim.start()) {
    return 1;
  }
  std::cout << "listening " << sim.port() << std::endl;  // first line, flushed: harnesses wait for it
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code& ec, int) {
    if (!ec) {
      sim.stop();
    }
  });
  sim.on_done([&] {
    sim.stop();
    signals.cancel();
  });
  io.run();
  return 0;
}

}  // namespace

int run_camera_sim(int argc, char** argv) {
  CameraOptions opt;
  CLI::App app{"ANPR camera simulator: serves ISAPI (specs/anpr-camera.md) over HTTP", "camera"};
  std::string ns = "isapi";
  std::string utc = "+08:00";
  add_camera_server_options(app, opt, ns, utc);
  add_camera_traffic_options(app, opt);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const auto off = test::parse_utc_offset(utc);
  if (!off) {
    std::cerr << "camera: --utc-offset must look like +08:00\n";
    return 2;
  }
  opt.utc_offset_min = *off;
  opt.xml_namespace = std::string(ns == "isapi" ? test::kIsapiNamespace : test::kHikvisionNamespace);
  if (opt.picture_max_kb < opt.picture_min_kb) {
    std::cerr << "camera: --picture-max-kb must be >= --picture-min-kb\n";
    return 2;
  }
  return serve_camera(opt);
}

}  // namespace cpd::sim
