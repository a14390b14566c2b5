// The recorder dock simulator over a real loopback socket, read by a small Beast client written here (not the
// adapter): auth, status, cursor paging, ranged and broken downloads, acks, restarts, md5 faults, bursts and
// a 3 GiB file streamed through without being held.
#include "tools/sim/dock_sim.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "tests/support/camera_messages.h"

namespace cpd::sim {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// SHA-256 and MD5 over a stream of bytes, so a multi-GB body is never held.
class Hasher {
 public:
  explicit Hasher(bool with_md5 = true)
      : sha_(EVP_MD_CTX_new()), md5_(EVP_MD_CTX_new()), with_md5_(with_md5) {
    EVP_DigestInit_ex(sha_, EVP_sha256(), nullptr);
    EVP_DigestInit_ex(md5_, EVP_md5(), nullptr);
  }
  ~Hasher() {
    EVP_MD_CTX_free(sha_);
    EVP_MD_CTX_free(md5_);
  }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const char* p, std::size_t n) {
    EVP_DigestUpdate(sha_, p, n);
    if (with_md5_) {
      EVP_DigestUpdate(md5_, p, n);
    }
  }
  std::pair<std::string, std::string> finish() {  // sha256, md5
    return {hex(sha_), hex(md5_)};
  }

 private:
  static std::string hex(EVP_MD_CTX* ctx) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    std::string out;
    char h[3];
    for (unsigned int i = 0; i < len; ++i) {
      std::snprintf(h, sizeof h, "%02x", md[i]);
      out += h;
    }
    return out;
  }
  EVP_MD_CTX* sha_;
  EVP_MD_CTX* md5_;
  bool with_md5_;
};

std::string sha256_of(const std::string& s) {
  Hasher h;
  h.update(s.data(), s.size());
  return h.finish().first;
}

// A dock running on its own io thread for the test's lifetime.
class RunningDock {
 public:
  explicit RunningDock(DockOptions opt) : sim_(io_, std::move(opt)) {
    started_ = sim_.start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningDock() {
    asio::post(io_, [this] { sim_.stop(); });
    thread_.join();
  }
  bool started() const { return started_; }
  std::uint16_t port() const { return sim_.port(); }
  DockSim& sim() { return sim_; }

 private:
  asio::io_context io_;
  DockSim sim_;
  bool started_ = false;
  std::thread thread_;
};

struct Download {
  unsigned status = 0;
  std::string content_type;
  std::string content_range;
  std::uint64_t content_length = 0;
  std::uint64_t received = 0;
  bool complete = false;  // the whole announced body arrived
  std::string sha256;
  std::string md5;
  std::string bytes;  // only when asked to keep them
};

// One keep-alive connection (reopened when the server closed it); counts how often it connected.
class DockClient {
 public:
  DockClient(std::uint16_t port, std::string token) : port_(port), token_(std::move(token)), socket_(io_) {}

  int connects() const { return connects_; }

  // nullopt when the connection failed or was closed before an answer.
  std::optional<http::response<http::string_body>> try_request(http::verb verb, const std::string& target,
                                                               const std::string& body = {},
                                                               bool with_auth = true) {
    if (!connect()) {
      return std::nullopt;
    }
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (with_auth) {
      req.set(http::field::authorization, "Bearer " + token_);
    }
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    boost::system::error_code ec;
    http::write(socket_, req, ec);
    http::response<http::string_body> res;
    if (!ec) {
      http::read(socket_, buffer_, res, ec);
    }
    if (ec) {
      disconnect();
      return std::nullopt;
    }
    if (!res.keep_alive()) {
      disconnect();
    }
    return res;
  }

  http::response<http::string_body> get(const std::string& target, bool with_auth = true) {
    auto r = try_request(http::verb::get, target, {}, with_auth);
    if (!r) {
      ADD_FAILURE() << "GET " << target << " failed";
      return {};
    }
    return *r;
  }
  http::response<http::string_body> post(const std::string& target, const std::string& body) {
    auto r = try_request(http::verb::post, target, body);
    if (!r) {
      ADD_FAILURE() << "POST " << target << " failed";
      return {};
    }
    return *r;
  }
  json get_json(const std::string& target) { return json::parse(get(target).body()); }

  // Streams a content body through the hashers; keeps the bytes only when asked.
  Download download(const std::string& id, std::optional<std::uint64_t> from = std::nullopt,
                    bool keep_bytes = false, bool with_md5 = true) {
    Download d;
    if (!connect()) {
      return d;
    }
    http::request<http::empty_body> req{http::verb::get, "/api/v1/files/" + id + "/content", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer " + token_);
    if (from) {
      req.set(http::field::range, "bytes=" + std::to_string(*from) + "-");
    }
    boost::system::error_code ec;
    http::write(socket_, req, ec);
    http::response_parser<http::buffer_body> p;
    p.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (!ec) {
      http::read_header(socket_, buffer_, p, ec);
    }
    if (ec) {
      disconnect();
      return d;
    }
    d.status = p.get().result_int();
    d.content_type = std::string(p.get()[http::field::content_type]);
    d.content_range = std::string(p.get()[http::field::content_range]);
    d.content_length = p.content_length().value_or(0);
    Hasher h(with_md5);
    std::vector<char> buf(1 << 20);
    while (!p.is_done()) {
      p.get().body().data = buf.data();
      p.get().body().size = buf.size();
      http::read(socket_, buffer_, p, ec);
      const std::size_t n = buf.size() - p.get().body().size;
      h.update(buf.data(), n);
      d.received += n;
      if (keep_bytes) {
        d.bytes.append(buf.data(), n);
      }
      if (ec == http::error::need_buffer) {
        ec = {};
      }
      if (ec) {
        break;
      }
    }
    d.complete = !ec && p.is_done();
    std::tie(d.sha256, d.md5) = h.finish();
    if (ec || !p.keep_alive()) {
      disconnect();
    }
    return d;
  }

 private:
  bool connect() {
    if (socket_.is_open()) {
      return true;
    }
    boost::system::error_code ec;
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    if (ec) {
      socket_.close(ec);
      return false;
    }
    buffer_.clear();
    ++connects_;
    return true;
  }
  void disconnect() {
    boost::system::error_code ignored;
    socket_.close(ignored);
    buffer_.clear();
  }

  std::uint16_t port_;
  std::string token_;
  asio::io_context io_;
  tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
  int connects_ = 0;
};

DockOptions options() {
  DockOptions o;
  o.token = "s3cret-token";
  return o;
}

DockFileSpec small_file(const std::string& recorder, std::int64_t length) {
  DockFileSpec s;
  s.recorder = recorder;
  s.length = length;
  return s;
}

std::vector<std::string> ids_of(const json& listing) {
  std::vector<std::string> ids;
  for (const auto& f : listing["files"]) {
    ids.push_back(f["uniqueId"].get<std::string>());
  }
  return ids;
}

TEST(DockSimTest, EveryEndpointWantsTheBearerToken) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  const auto f = dock.sim().add_file(small_file("BWC-00917", 1000));
  const std::vector<std::pair<http::verb, std::string>> endpoints = {
      {http::verb::get, "/api/v1/status"},
      {http::verb::get, "/api/v1/files"},
      {http::verb::get, "/api/v1/files/" + f.unique_id + "/content"},
      {http::verb::post, "/api/v1/files/" + f.unique_id + "/ack"},
      {http::verb::get, "/api/v1/nothing-here"},
  };
  DockClient none(dock.port(), "");
  DockClient wrong(dock.port(), "s3cret-tokeN");
  for (const auto& [verb, target] : endpoints) {
    for (auto* c : {&none, &wrong}) {
      const auto res = c->try_request(verb, target, R"({"sha256":"00"})", c == &wrong);
      ASSERT_TRUE(res) << target;
      EXPECT_EQ(res->result_int(), 401U) << target;
      EXPECT_EQ(json::parse(res->body()), json({{"error", "unauthorized"}})) << target;
    }
  }
  EXPECT_TRUE(dock.sim().ack_log().empty());
  EXPECT_EQ(dock.sim().downloads_started(f.unique_id), 0U);

  DockClient right(dock.port(), "s3cret-token");
  EXPECT_EQ(right.get("/api/v1/status").result_int(), 200U);
  dock.sim().set_token("rotated");
  EXPECT_EQ(right.get("/api/v1/status").result_int(), 401U);
  EXPECT_EQ(DockClient(dock.port(), "rotated").get("/api/v1/status").result_int(), 200U);
  // All of that on one keep-alive connection.
  EXPECT_EQ(right.connects(), 1);
}

TEST(DockSimTest, StatusReportsTheStationClockAndDockedRecorders) {
  DockOptions o = options();
  o.station_clock_offset_ms = 3'600'000;
  o.station_id = "DS-TEST-1";
  o.slots = 4;
  RunningDock dock(o);
  ASSERT_TRUE(dock.started());
  dock.sim().add_file(small_file("BWC-00921", 5000));
  dock.sim().add_file(small_file("BWC-00917", 7000));
  dock.sim().add_file(small_file("BWC-00917", 100));
  DockClient c(dock.port(), "s3cret-token");
  const std::int64_t before = now_ms();
  const json s = c.get_json("/api/v1/status");
  const std::int64_t after = now_ms();
  EXPECT_EQ(s["stationId"], "DS-TEST-1");
  EXPECT_EQ(s["firmware"], "3.4.1");
  EXPECT_EQ(s["slots"], 4);
  EXPECT_EQ(s["docked"], json::array({"BWC-00917", "BWC-00921"}));
  EXPECT_EQ(s["freeBytes"].get<std::int64_t>(), o.capacity_bytes - 12100);
  // Whole seconds, +08:00, an hour ahead of the true time.
  const std::string t = s["time"];
  bool matched = false;
  for (std::int64_t ms = before + 3'600'000 - 1000; ms <= after + 3'600'000; ms += 1) {
    if (test::camera_time(ms, 480, false) == t) {
      matched = true;
      break;
    }
  }
  EXPECT_TRUE(matched) << t;
  EXPECT_EQ(t.size(), std::string("2026-11-27T11:38:54+08:00").size());
  EXPECT_EQ(t.substr(19), "+08:00");
}

TEST(DockSimTest, ListingEntriesCarryTheSpecFieldsByTheRecorderClock) {
  DockOptions o = options();
  o.recorder_clock_offsets["BWC-00930"] = 90'000;
  RunningDock dock(o);
  ASSERT_TRUE(dock.started());
  DockFileSpec spec = small_file("BWC-00930", 4321);
  spec.officer_id = "330102199003150024";
  spec.officer_name = "李娜";
  spec.case_code = "A-17";
  spec.file_type = "audio";
  spec.start_unix_ms = 1'795'000'000'123;
  spec.end_unix_ms = 1'795'000'030'999;
  spec.collect_unix_ms = 1'795'000'600'500;
  spec.important = true;
  const auto t = dock.sim().add_file(spec);
  EXPECT_EQ(t.recorder_offset_ms, 90'000);
  EXPECT_EQ(t.listed_start_ms, 1'795'000'090'000);  // recorder clock, truncated to whole seconds
  DockClient c(dock.port(), "s3cret-token");
  const json l = c.get_json("/api/v1/files");
  ASSERT_EQ(l["files"].size(), 1U);
  const json& f = l["files"][0];
  EXPECT_EQ(f["uniqueId"], t.unique_id);
  EXPECT_EQ(t.unique_id.rfind("BWC-00930-", 0), 0U) << t.unique_id;
  EXPECT_EQ(f["deviceId"], "BWC-00930");
  EXPECT_EQ(f["officerId"], "330102199003150024");
  EXPECT_EQ(f["officerName"], "李娜");
  EXPECT_EQ(f["caseCode"], "A-17");
  EXPECT_EQ(f["fileType"], "audio");
  EXPECT_EQ(f["format"], "wav");
  EXPECT_EQ(f["fileName"].get<std::string>().substr(f["fileName"].get<std::string>().size() - 4), ".wav");
  EXPECT_EQ(f["length"], 4321);
  EXPECT_EQ(f["md5"], t.md5);
  EXPECT_EQ(f["startTime"], test::camera_time(spec.start_unix_ms + 90'000, 480, false));
  EXPECT_EQ(f["endTime"], test::camera_time(spec.end_unix_ms + 90'000, 480, false));
  EXPECT_EQ(f["collectTime"], test::camera_time(spec.collect_unix_ms + 90'000, 480, false));
  EXPECT_EQ(f["important"], true);
  ASSERT_GE(f["gps"].size(), 2U);
  EXPECT_EQ(f["gps"][0]["t"], f["startTime"]);
  EXPECT_NEAR(f["gps"][0]["lat"].get<double>(), 30.27, 0.01);
  EXPECT_NEAR(f["gps"][0]["lon"].get<double>(), 120.155, 0.01);
}

TEST(DockSimTest, PagesWithLimitAndOpaqueCursors) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  std::vector<std::string> added;
  for (int i = 0; i < 7; ++i) {
    added.push_back(dock.sim().add_file(small_file("BWC-0091" + std::to_string(i % 3), 100 + i)).unique_id);
  }
  DockClient c(dock.port(), "s3cret-token");
  std::vector<std::string> seen;
  std::string cursor;
  std::vector<std::size_t> pages;
  for (int page = 0; page < 4; ++page) {
    const json l = c.get_json("/api/v1/files?limit=3" + (cursor.empty() ? "" : "&after=" + cursor));
    const auto ids = ids_of(l);
    pages.push_back(ids.size());
    seen.insert(seen.end(), ids.begin(), ids.end());
    ASSERT_TRUE(l["next"].is_string());
    if (ids.empty()) {
      EXPECT_EQ(l["next"], cursor);  // nothing new: the cursor given comes back
    } else {
      EXPECT_NE(l["next"], cursor);
    }
    cursor = l["next"];
  }
  EXPECT_EQ(pages, (std::vector<std::size_t>{3, 3, 1, 0}));
  EXPECT_EQ(seen, added);
  // Still nothing new, again and again; then a new file shows up after the same cursor.
  EXPECT_EQ(c.get_json("/api/v1/files?after=" + cursor)["next"], cursor);
  const auto late = dock.sim().add_file(small_file("BWC-00917", 10)).unique_id;
  const json l = c.get_json("/api/v1/files?after=" + cursor);
  EXPECT_EQ(ids_of(l), std::vector<std::string>{late});
  // Default limit 50, values above 500 served as 500.
  for (int i = 0; i < 592; ++i) {
    dock.sim().add_file(small_file("BWC-00999", 1));
  }
  EXPECT_EQ(c.get_json("/api/v1/files")["files"].size(), 50U);
  EXPECT_EQ(c.get_json("/api/v1/files?limit=100000")["files"].size(), 500U);
  EXPECT_EQ(c.get_json("/api/v1/files?limit=500")["files"].size(), 500U);
  for (const std::string bad : {"0", "-1", "abc", "5x", ""}) {
    const auto res = c.get("/api/v1/files?limit=" + bad);
    EXPECT_EQ(res.result_int(), 400U) << bad;
    EXPECT_EQ(json::parse(res.body()), json({{"error", "bad limit"}})) << bad;
  }
  // Cursors that were never handed out.
  std::string beyond = cursor;
  beyond.replace(beyond.size() - 4, 4, "ffff");
  for (const std::string& bad : {std::string("nonsense"), std::string(""), beyond, cursor + "0"}) {
    const auto res = c.get("/api/v1/files?after=" + bad);
    EXPECT_EQ(res.result_int(), 400U) << bad;
    EXPECT_EQ(json::parse(res.body()), json({{"error", "bad cursor"}})) << bad;
  }
}

TEST(DockSimTest, ContentStreamsWithTypeLengthAndRanges) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  std::map<std::string, DockFileTruth> by_type;
  for (const std::string type : {"video", "audio", "photo"}) {
    DockFileSpec s = small_file("BWC-00917", 700'001);  // not a multiple of the server's chunk or of 8
    s.file_type = type;
    by_type[type] = dock.sim().add_file(s);
  }
  DockClient c(dock.port(), "s3cret-token");
  const std::map<std::string, std::string> types = {
      {"video", "video/mp4"}, {"audio", "audio/wav"}, {"photo", "image/jpeg"}};
  for (const auto& [type, t] : by_type) {
    const Download d = c.download(t.unique_id, std::nullopt, true);
    EXPECT_EQ(d.status, 200U);
    EXPECT_TRUE(d.complete);
    EXPECT_EQ(d.content_type, types.at(type));
    EXPECT_EQ(d.content_length, 700'001U);
    EXPECT_EQ(d.sha256, t.sha256);
    EXPECT_EQ(d.md5, t.md5);
    EXPECT_EQ(d.bytes, DockContent(t.unique_id).bytes(0, 700'001));
    for (const std::uint64_t from : {0ULL, 1ULL, 13ULL, 262'144ULL, 700'000ULL}) {
      const Download r = c.download(t.unique_id, from, true);
      EXPECT_EQ(r.status, 206U) << from;
      EXPECT_TRUE(r.complete);
      EXPECT_EQ(r.content_range, "bytes " + std::to_string(from) + "-700000/700001");
      EXPECT_EQ(r.content_length, 700'001U - from);
      EXPECT_EQ(r.bytes, d.bytes.substr(from)) << from;
    }
  }
  const auto& v = by_type["video"];
  // Past the end: 416; unknown id: 404.
  const Download past = c.download(v.unique_id, 700'001);
  EXPECT_EQ(past.status, 416U);
  const auto res = c.get("/api/v1/files/BWC-00917-20991231-000001/content");
  EXPECT_EQ(res.result_int(), 404U);
  EXPECT_EQ(c.connects(), 1);  // downloads keep the connection alive
  // Counted once the server's last write completed, which is before it reads the next request on the
  // connection: the answers above order these reads.
  EXPECT_EQ(dock.sim().downloads_started(v.unique_id), 6U);
  EXPECT_EQ(dock.sim().downloads_completed(v.unique_id), 6U);
  // Content depends on the uniqueId only.
  EXPECT_NE(DockContent("a").bytes(0, 64), DockContent("b").bytes(0, 64));
  EXPECT_EQ(DockContent("a").bytes(5, 20), DockContent("a").bytes(0, 25).substr(5));
}

TEST(DockSimTest, AcksAnswer200Or409Or404AndAckedFilesLeaveTheListing) {
  DockOptions o = options();
  o.ground_truth = ::testing::TempDir() + "dock_truth.jsonl";
  RunningDock dock(o);
  ASSERT_TRUE(dock.started());
  const auto a = dock.sim().add_file(small_file("BWC-00917", 5000));
  const auto b = dock.sim().add_file(small_file("BWC-00921", 6000));
  EXPECT_EQ(dock.sim().files_pending(), 2U);
  DockClient c(dock.port(), "s3cret-token");
  const std::string target = "/api/v1/files/" + a.unique_id + "/ack";

  auto res = c.post(target, json({{"sha256", b.sha256}}).dump());
  EXPECT_EQ(res.result_int(), 409U);
  EXPECT_EQ(json::parse(res.body()), json({{"error", "checksum mismatch"}}));
  EXPECT_FALSE(dock.sim().acked(a.unique_id));

  const std::int64_t before = now_ms();
  res = c.post(target, json({{"sha256", a.sha256}}).dump());
  EXPECT_EQ(res.result_int(), 200U);
  EXPECT_EQ(json::parse(res.body()), json({{"acked", true}}));
  EXPECT_TRUE(dock.sim().acked(a.unique_id));

  res = c.post("/api/v1/files/BWC-00917-20000101-000001/ack", json({{"sha256", a.sha256}}).dump());
  EXPECT_EQ(res.result_int(), 404U);
  res = c.post("/api/v1/files/" + b.unique_id + "/ack", "not json");
  EXPECT_EQ(res.result_int(), 400U);
  EXPECT_FALSE(dock.sim().acked(b.unique_id));

  const auto acks = dock.sim().acks();
  ASSERT_EQ(acks.size(), 1U);
  EXPECT_EQ(acks[0].unique_id, a.unique_id);
  EXPECT_GE(acks[0].time_ms, before);
  const auto log = dock.sim().ack_log();
  ASSERT_EQ(log.size(), 3U);
  EXPECT_EQ(log[0].outcome, "mismatch");
  EXPECT_EQ(log[1].outcome, "acked");
  EXPECT_EQ(log[2].outcome, "unknown");
  EXPECT_EQ(dock.sim().files_pending(), 1U);
  EXPECT_EQ(ids_of(c.get_json("/api/v1/files")), std::vector<std::string>{b.unique_id});

  // Ground truth: one line per file, one per ack answer.
  std::ifstream in(o.ground_truth);
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(json::parse(line));
  }
  ASSERT_EQ(lines.size(), 5U);
  EXPECT_EQ(lines[0]["event"], "file");
  EXPECT_EQ(lines[0]["uniqueId"], a.unique_id);
  EXPECT_EQ(lines[0]["sha256"], a.sha256);
  EXPECT_EQ(lines[0]["md5"], a.md5);
  EXPECT_EQ(lines[0]["start_ms"], a.start_ms);
  EXPECT_EQ(lines[0]["end_ms"], a.end_ms);
  EXPECT_EQ(lines[0]["deviceId"], "BWC-00917");
  EXPECT_EQ(lines[2]["event"], "ack");
  EXPECT_EQ(lines[2]["outcome"], "mismatch");
  EXPECT_EQ(lines[3]["outcome"], "acked");
  EXPECT_EQ(lines[3]["time_ms"], acks[0].time_ms);
}

TEST(DockSimTest, RestartForgetsCursorsClosesConnectionsAndRepeatsUnackedFiles) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  std::vector<DockFileTruth> files;
  for (int i = 0; i < 4; ++i) {
    files.push_back(dock.sim().add_file(small_file("BWC-00917", 1000 + i)));
  }
  DockClient c(dock.port(), "s3cret-token");
  const json first = c.get_json("/api/v1/files");
  ASSERT_EQ(first["files"].size(), 4U);
  const std::string cursor = first["next"];
  EXPECT_EQ(c.post("/api/v1/files/" + files[1].unique_id + "/ack", json({{"sha256", files[1].sha256}}).dump())
                .result_int(),
            200U);
  ASSERT_EQ(c.connects(), 1);

  dock.sim().restart();
  EXPECT_EQ(dock.sim().restarts(), 1U);
  // The connection from before the restart answers nothing more.
  EXPECT_FALSE(c.try_request(http::verb::get, "/api/v1/status"));
  DockClient fresh(dock.port(), "s3cret-token");
  const auto old = fresh.get("/api/v1/files?after=" + cursor);
  EXPECT_EQ(old.result_int(), 400U);
  EXPECT_EQ(json::parse(old.body()), json({{"error", "bad cursor"}}));
  // From the beginning: every unacknowledged file again, in the same order.
  const json again = fresh.get_json("/api/v1/files");
  EXPECT_EQ(ids_of(again),
            (std::vector<std::string>{files[0].unique_id, files[2].unique_id, files[3].unique_id}));
  const std::string cursor2 = again["next"];
  EXPECT_NE(cursor2, cursor);
  EXPECT_TRUE(fresh.get_json("/api/v1/files?after=" + cursor2)["files"].empty());

  // A restart with an outage comes back on the same port.
  dock.sim().restart(0.2);
  bool back = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!back && std::chrono::steady_clock::now() < deadline) {
    DockClient probe(dock.port(), "s3cret-token");
    const auto r = probe.try_request(http::verb::get, "/api/v1/files?after=" + cursor2);
    back = r && r->result_int() == 400U;  // the second restart made cursor2 stale too
    if (!back) {
      std::this_thread::yield();
    }
  }
  EXPECT_TRUE(back);
  EXPECT_EQ(dock.sim().restarts(), 2U);
}

TEST(DockSimTest, Md5FaultCorruptsTheFirstDownloadsOnly) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  DockFileSpec s = small_file("BWC-00917", 300'000);
  s.md5_bad_downloads = 2;
  const auto t = dock.sim().add_file(s);
  DockFileSpec w = small_file("BWC-00921", 1000);
  w.md5_wrong_listing = true;
  const auto wrong = dock.sim().add_file(w);
  DockClient c(dock.port(), "s3cret-token");
  const json l = c.get_json("/api/v1/files");
  ASSERT_EQ(l["files"].size(), 2U);
  EXPECT_EQ(l["files"][0]["md5"], t.md5);
  for (int attempt = 1; attempt <= 3; ++attempt) {
    const Download d = c.download(t.unique_id);
    EXPECT_TRUE(d.complete);
    EXPECT_EQ(d.received, 300'000U);
    if (attempt <= 2) {
      EXPECT_NE(d.md5, t.md5) << attempt;
      EXPECT_NE(d.sha256, t.sha256) << attempt;
    } else {
      EXPECT_EQ(d.md5, t.md5);
      EXPECT_EQ(d.sha256, t.sha256);
    }
  }
  EXPECT_EQ(dock.sim().downloads_started(t.unique_id), 3U);
  // A permanently wrong listed md5: the content (and the sha256 an ack needs) are right.
  EXPECT_EQ(l["files"][1]["md5"], wrong.listed_md5);
  EXPECT_NE(wrong.listed_md5, wrong.md5);
  const Download d = c.download(wrong.unique_id);
  EXPECT_EQ(d.md5, wrong.md5);
  EXPECT_EQ(
      c.post("/api/v1/files/" + wrong.unique_id + "/ack", json({{"sha256", d.sha256}}).dump()).result_int(),
      200U);
}

TEST(DockSimTest, BrokenDownloadsResumeWithRange) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  DockFileSpec s = small_file("BWC-00917", 300'000);
  s.break_after_bytes = 100'000;
  s.break_times = 2;
  const auto t = dock.sim().add_file(s);
  DockClient c(dock.port(), "s3cret-token");
  std::string bytes;
  Download d = c.download(t.unique_id, std::nullopt, true);
  EXPECT_EQ(d.status, 200U);
  EXPECT_FALSE(d.complete);
  EXPECT_EQ(d.received, 100'000U);
  bytes += d.bytes;
  d = c.download(t.unique_id, bytes.size(), true);
  EXPECT_EQ(d.status, 206U);
  EXPECT_FALSE(d.complete);
  EXPECT_EQ(d.received, 100'000U);
  bytes += d.bytes;
  d = c.download(t.unique_id, bytes.size(), true);
  EXPECT_EQ(d.status, 206U);
  EXPECT_TRUE(d.complete);
  EXPECT_EQ(d.content_range, "bytes 200000-299999/300000");
  bytes += d.bytes;
  EXPECT_EQ(bytes.size(), 300'000U);
  EXPECT_EQ(sha256_of(bytes), t.sha256);
  EXPECT_EQ(c.get("/api/v1/status").result_int(), 200U);  // orders the completion count (see above)
  EXPECT_EQ(c.connects(), 3);                             // each break closed the connection
  EXPECT_EQ(dock.sim().downloads_started(t.unique_id), 3U);
  EXPECT_EQ(dock.sim().downloads_completed(t.unique_id), 1U);
}

TEST(DockSimTest, ShiftChangeBurstDocksHundredsAtOnce) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  const auto burst = dock.sim().add_burst(300, 2048);
  ASSERT_EQ(burst.size(), 300U);
  std::set<std::string> recorders;
  std::set<std::int64_t> collected;
  for (const auto& t : burst) {
    recorders.insert(t.device_id);
    collected.insert(t.collect_ms);
    EXPECT_LE(t.start_ms, t.end_ms);
    EXPECT_LT(t.end_ms, t.collect_ms);
  }
  EXPECT_GE(recorders.size(), 8U);
  EXPECT_EQ(collected.size(), 1U);
  DockClient c(dock.port(), "s3cret-token");
  const json l = c.get_json("/api/v1/files?limit=500");
  ASSERT_EQ(l["files"].size(), 300U);
  std::set<std::string> ids;
  for (const auto& f : l["files"]) {
    ids.insert(f["uniqueId"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), 300U);
  EXPECT_EQ(dock.sim().files_pending(), 300U);
}

// The spec allows files of up to 4 GB; the content is generated and hashed as it goes, never held. 3 GiB
// crosses 2^31, where signed 32-bit lengths and offsets break. The client checks SHA-256 only (MD5 would add
// seconds and nothing the small-file tests do not cover); about 20-35 s on 2 busy cores.
TEST(DockSimTest, ThreeGigabyteFileStreamsThrough) {
  RunningDock dock(options());
  ASSERT_TRUE(dock.started());
  constexpr std::int64_t kLength = std::int64_t{3} << 30U;
  const auto t = dock.sim().add_file(small_file("BWC-00917", kLength));
  DockClient c(dock.port(), "s3cret-token");
  const json l = c.get_json("/api/v1/files");
  EXPECT_EQ(l["files"][0]["length"].get<std::int64_t>(), kLength);
  const Download d = c.download(t.unique_id, std::nullopt, false, false);
  EXPECT_EQ(d.status, 200U);
  EXPECT_TRUE(d.complete);
  EXPECT_EQ(d.content_length, static_cast<std::uint64_t>(kLength));
  EXPECT_EQ(d.received, static_cast<std::uint64_t>(kLength));
  EXPECT_EQ(d.sha256, t.sha256);
  // A resume near the end (an offset beyond 31 bits) gives the same bytes.
  const std::uint64_t from = static_cast<std::uint64_t>(kLength) - 4099;
  const Download tail = c.download(t.unique_id, from, true, false);
  EXPECT_EQ(tail.status, 206U);
  EXPECT_EQ(tail.content_range, "bytes " + std::to_string(from) + "-" + std::to_string(kLength - 1) + "/" +
                                    std::to_string(kLength));
  EXPECT_EQ(tail.bytes, DockContent(t.unique_id).bytes(from, 4099));
  EXPECT_EQ(c.post("/api/v1/files/" + t.unique_id + "/ack", json({{"sha256", d.sha256}}).dump()).result_int(),
            200U);
}

// The hostile mode of issue 12, defect 5: while the flood lasts every listing finds a page of files never
// seen after its cursor (ignoring `limit` with ignore_limit); afterwards the station stops adding.
TEST(DockSimTest, FloodTopsUpEveryPageWithNewFiles) {
  DockOptions o = options();
  o.flood_s = 1.0;
  o.flood_page = 20;
  o.ignore_limit = true;
  o.file_bytes = 64;
  RunningDock dock(o);
  ASSERT_TRUE(dock.started());
  DockClient c(dock.port(), "s3cret-token");
  const json first = c.get_json("/api/v1/files?limit=5");
  EXPECT_EQ(first["files"].size(), 20U) << "the limit is ignored";
  // The same cursor: the page is still full of the same unacknowledged files, none added.
  EXPECT_EQ(ids_of(c.get_json("/api/v1/files?limit=5")), ids_of(first));
  const json second = c.get_json("/api/v1/files?limit=5&after=" + first["next"].get<std::string>());
  EXPECT_EQ(second["files"].size(), 20U);
  EXPECT_EQ(dock.sim().files().size(), 40U);
  const auto first_ids = ids_of(first);
  for (const auto& id : ids_of(second)) {
    EXPECT_EQ(std::count(first_ids.begin(), first_ids.end(), id), 0) << id;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the flood's own end, not a wait for work
  const json after = c.get_json("/api/v1/files?after=" + second["next"].get<std::string>());
  EXPECT_TRUE(after["files"].empty());
  EXPECT_EQ(dock.sim().files().size(), 40U);
}

}  // namespace
}  // namespace cpd::sim
