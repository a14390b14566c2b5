// The camera simulator over a real loopback socket: auth (challenge, digest, lock-out, basic), the XML
// documents, and an alert stream whose parts have exact lengths and whose pictures match the ground truth.
#include "tools/sim/camera_sim.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <turbojpeg.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/camera_messages.h"
#include "tests/unit/sim/sim_test_client.h"

namespace cpd::sim {
namespace {

using testing::AlertStreamClient;
using testing::http_get;
using testing::xml_text;

std::string sha256_hex(const std::string& bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  std::string out;
  char hex[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(hex, sizeof hex, "%02x", md[i]);
    out += hex;
  }
  return out;
}

bool decodes(const std::string& jpeg) {
  tjhandle tj = tjInitDecompress();
  int w = 0;
  int h = 0;
  int ss = 0;
  int cs = 0;
  auto* data = reinterpret_cast<const unsigned char*>(jpeg.data());
  bool ok = tjDecompressHeader3(tj, data, jpeg.size(), &w, &h, &ss, &cs) == 0;
  if (ok) {
    std::vector<unsigned char> px(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    ok = tjDecompress2(tj, data, jpeg.size(), px.data(), w, 0, h, TJPF_RGB, 0) == 0;
  }
  tjDestroy(tj);
  return ok;
}

// A camera running on its own io thread for the test's lifetime.
class RunningCamera {
 public:
  explicit RunningCamera(CameraOptions opt) : sim_(io_, std::move(opt)) {
    started_ = sim_.start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningCamera() {
    boost::asio::post(io_, [this] { sim_.stop(); });
    thread_.join();
  }
  bool started() const { return started_; }
  std::uint16_t port() const { return sim_.port(); }

 private:
  boost::asio::io_context io_;
  CameraSim sim_;
  bool started_ = false;
  std::thread thread_;
};

std::string challenge_for(std::uint16_t port, const std::string& target) {
  const auto res = http_get(port, target);
  return std::string(res[boost::beast::http::field::www_authenticate]);
}

TEST(CameraSimTest, ChallengesThenAcceptsDigest) {
  CameraOptions opt;
  opt.username = "admin";
  opt.password = "secret";
  RunningCamera cam(opt);
  ASSERT_TRUE(cam.started());
  const std::string target = "/ISAPI/System/deviceInfo";
  const auto first = http_get(cam.port(), target);
  EXPECT_EQ(first.result_int(), 401);
  const std::string challenge(first[boost::beast::http::field::www_authenticate]);
  const auto params = test::parse_auth_params(challenge, "Digest");
  ASSERT_TRUE(params);
  EXPECT_EQ(params->at("qop"), "auth");
  EXPECT_FALSE(params->at("nonce").empty());

  const auto auth = test::digest_authorization(challenge, "GET", target, "admin", "secret", 1);
  ASSERT_TRUE(auth);
  const auto ok = http_get(cam.port(), target, *auth);
  ASSERT_EQ(ok.result_int(), 200);
  for (const char* e : {"deviceName", "deviceID", "model", "serialNumber", "firmwareVersion"}) {
    EXPECT_FALSE(xml_text(ok.body(), e).empty()) << e;
  }
  // The same nonce count again is a replay: challenged (stale), not served.
  const auto replay = http_get(cam.port(), target, *auth);
  EXPECT_EQ(replay.result_int(), 401);
  // A higher count on the same nonce is fine.
  const auto next = test::digest_authorization(challenge, "GET", target, "admin", "secret", 2);
  EXPECT_EQ(http_get(cam.port(), target, *next).result_int(), 200);
  // The hash covers the URI: an answer for another URI is refused.
  const auto other = test::digest_authorization(challenge, "GET", "/ISAPI/System/time", "admin", "secret", 3);
  EXPECT_EQ(http_get(cam.port(), target, *other).result_int(), 401);
}

TEST(CameraSimTest, FiveFailuresLockTheUser) {
  CameraOptions opt;
  opt.password = "secret";
  RunningCamera cam(opt);
  const std::string target = "/ISAPI/System/time";
  for (int i = 1; i <= 4; ++i) {
    const auto bad =
        test::digest_authorization(challenge_for(cam.port(), target), "GET", target, "admin", "wrong");
    EXPECT_EQ(http_get(cam.port(), target, *bad).result_int(), 401) << i;
  }
  // A success in between would reset the count; here the fifth failure in a row locks.
  const auto fifth =
      test::digest_authorization(challenge_for(cam.port(), target), "GET", target, "admin", "wrong");
  EXPECT_EQ(http_get(cam.port(), target, *fifth).result_int(), 403);
  const auto good =
      test::digest_authorization(challenge_for(cam.port(), target), "GET", target, "admin", "secret");
  EXPECT_EQ(http_get(cam.port(), target, *good).result_int(), 403);
}

TEST(CameraSimTest, SuccessResetsTheFailureCount) {
  CameraOptions opt;
  opt.password = "secret";
  RunningCamera cam(opt);
  const std::string target = "/ISAPI/System/time";
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 4; ++i) {
      const auto bad =
          test::digest_authorization(challenge_for(cam.port(), target), "GET", target, "admin", "x");
      EXPECT_EQ(http_get(cam.port(), target, *bad).result_int(), 401);
    }
    const auto good =
        test::digest_authorization(challenge_for(cam.port(), target), "GET", target, "admin", "secret");
    EXPECT_EQ(http_get(cam.port(), target, *good).result_int(), 200);
  }
}

TEST(CameraSimTest, BasicAuthWhenConfigured) {
  CameraOptions opt;
  opt.auth = "basic";
  opt.password = "secret";
  opt.clock_offset_ms = 5000;
  opt.utc_offset_min = -300;
  RunningCamera cam(opt);
  const std::string target = "/ISAPI/System/time";
  const auto first = http_get(cam.port(), target);
  EXPECT_EQ(first.result_int(), 401);
  EXPECT_EQ(std::string(first[boost::beast::http::field::www_authenticate]).rfind("Basic realm=", 0), 0U);
  EXPECT_EQ(http_get(cam.port(), target, test::basic_authorization("admin", "nope")).result_int(), 401);
  const auto ok = http_get(cam.port(), target, test::basic_authorization("admin", "secret"));
  ASSERT_EQ(ok.result_int(), 200);
  EXPECT_EQ(xml_text(ok.body(), "timeMode"), "manual");  // a clock off by seconds is not on NTP
  const std::string local = xml_text(ok.body(), "localTime");
  ASSERT_EQ(local.size(), 25U) << local;
  EXPECT_EQ(local.substr(19), "-05:00");
}

struct StreamRun {
  std::vector<testing::Part> parts;
  std::string error;
  std::string head;
};

StreamRun read_stream(const CameraOptions& opt, std::size_t parts_wanted) {
  RunningCamera cam(opt);
  const std::string target = "/ISAPI/Event/notification/alertStream";
  const auto auth = test::digest_authorization(challenge_for(cam.port(), target), "GET", target, opt.username,
                                               opt.password);
  AlertStreamClient client(cam.port(), *auth);
  StreamRun run;
  run.head = client.head();
  while (run.parts.size() < parts_wanted) {
    auto p = client.next(opt.boundary);
    if (!p) {
      break;
    }
    run.parts.push_back(std::move(*p));
  }
  run.error = client.error();
  return run;
}

std::vector<nlohmann::json> read_truth(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

void check_stream(bool split_writes, bool two_stage) {
  CameraOptions opt;
  opt.password = "secret";
  opt.rate = 50.0;
  opt.events = 3;
  opt.seed = 42;
  opt.picture_min_kb = 50;
  opt.picture_max_kb = 90;
  opt.two_stage = two_stage;
  opt.split_writes = split_writes;
  opt.heartbeat_s = 0.1;
  opt.ground_truth = ::testing::TempDir() + "camera_truth_" + std::to_string(split_writes) + ".jsonl";
  const StreamRun run = read_stream(opt, 9 + 3);  // 3 x (alert + 2 pictures), plus heartbeats between them
  ASSERT_TRUE(run.error.empty()) << run.error;
  EXPECT_NE(run.head.find("multipart/mixed; boundary=boundary"), std::string::npos);
  EXPECT_NE(run.head.find("Transfer-Encoding: chunked"), std::string::npos);
  const auto truth = read_truth(opt.ground_truth);
  ASSERT_EQ(truth.size(), 3U);

  std::size_t event = 0;
  std::vector<std::string> names;
  std::size_t picture = 0;
  int heartbeats = 0;
  for (const auto& p : run.parts) {
    if (p.headers.at("content-type").rfind("application/xml", 0) == 0) {
      ASSERT_EQ(picture, names.size()) << "an alert arrived before the previous one's pictures";
      const std::string type = xml_text(p.body, "eventType");
      if (type == "videoloss") {
        EXPECT_EQ(xml_text(p.body, "eventState"), "inactive");
        ++heartbeats;
        continue;
      }
      ASSERT_EQ(type, "ANPR");
      ASSERT_LT(event, truth.size());
      const auto& t = truth[event];
      EXPECT_EQ(xml_text(p.body, "UUID"), t["uuid"]);
      EXPECT_EQ(xml_text(p.body, "dateTime"), t["dateTime"]);
      EXPECT_EQ(xml_text(p.body, "licensePlate"), t["plate"]);
      EXPECT_EQ(xml_text(p.body, "activePostCount"), std::to_string(event + 1));
      names.clear();
      picture = 0;
      for (const auto& pic : t["pictures"]) {
        names.push_back(pic["file_name"]);
        EXPECT_NE(p.body.find("<fileName>" + std::string(pic["file_name"]) + "</fileName>"),
                  std::string::npos);
        EXPECT_EQ(pic["type"], two_stage ? "detectionPicture"
                                         : (names.size() == 1 ? "detectionPicture" : "licensePlatePicture"));
      }
      ++event;
    } else {
      ASSERT_EQ(p.headers.at("content-type"), "image/jpeg");
      ASSERT_LT(picture, names.size());
      const auto& pic = truth[event - 1]["pictures"][picture];
      EXPECT_EQ(p.headers.at("content-disposition"), "attachment; filename=\"" + names[picture] + "\"");
      EXPECT_EQ(p.body.size(), pic["bytes"]);
      EXPECT_EQ(sha256_hex(p.body), pic["sha256"]);
      EXPECT_GE(p.body.size(), 50U * 1024U);
      EXPECT_LE(p.body.size(), 91U * 1024U);
      EXPECT_TRUE(decodes(p.body));
      ++picture;
    }
  }
  EXPECT_EQ(event, 3U);
  EXPECT_GE(heartbeats, 1);
}

TEST(CameraSimTest, AlertStreamPartsHaveExactLengths) {
  check_stream(false, false);
}
TEST(CameraSimTest, AlertStreamSurvivesSplitWritesTwoStage) {
  check_stream(true, true);
}

TEST(CameraSimTest, DroppedPicturesAreAnnouncedButNotSent) {
  CameraOptions opt;
  opt.rate = 50.0;
  opt.events = 2;
  opt.picture_kb = 50;
  opt.drop_picture_rate = 1.0;
  opt.heartbeat_s = 0.1;
  opt.xml_namespace = std::string(test::kHikvisionNamespace);
  // Two alerts with no pictures, then heartbeats: the alerts announce two pictures each.
  const StreamRun run = read_stream(opt, 4);
  ASSERT_TRUE(run.error.empty()) << run.error;
  int alerts = 0;
  for (const auto& p : run.parts) {
    ASSERT_EQ(p.headers.at("content-type").rfind("application/xml", 0), 0U);
    EXPECT_NE(p.body.find("hikvision.com/ver20"), std::string::npos);
    if (xml_text(p.body, "eventType") == "ANPR") {
      ++alerts;
      EXPECT_EQ(xml_text(p.body, "picNum"), "2");
    }
  }
  EXPECT_EQ(alerts, 2);
}

}  // namespace
}  // namespace cpd::sim
