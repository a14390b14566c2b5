// The ISAPI builders and HTTP auth helpers, checked against published vectors and the spec's examples.
#include "tests/support/camera_messages.h"

#include <gtest/gtest.h>

namespace cpd::test {
namespace {

TEST(CameraMessagesTest, DigestMatchesRfc2617Example) {
  // RFC 2617 section 3.5 (qop=auth, MD5).
  EXPECT_EQ(digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                            "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b"),
            "6629fae49393a05397450978507c4ef1");
}

TEST(CameraMessagesTest, DigestAuthorizationAnswersTheChallenge) {
  const auto h = digest_authorization(
      "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", "
      "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", "
      "opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
      "GET", "/dir/index.html", "Mufasa", "Circle Of Life");
  ASSERT_TRUE(h);
  const auto p = parse_auth_params(*h, "Digest");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->at("response"), "6629fae49393a05397450978507c4ef1");
  EXPECT_EQ(p->at("opaque"), "5ccc069c403ebaf9f0171e9517f40e41");
  EXPECT_EQ(p->at("nc"), "00000001");
}

TEST(CameraMessagesTest, AuthParamsRejectMalformedHeaders) {
  EXPECT_FALSE(parse_auth_params("Basic abc", "Digest"));
  EXPECT_FALSE(parse_auth_params("Digest realm=\"unterminated", "Digest"));
  EXPECT_FALSE(parse_auth_params("Digest realm=a, realm=b", "Digest"));
}

TEST(CameraMessagesTest, Base64RoundTripsAndBasicHeader) {
  EXPECT_EQ(basic_authorization("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
  for (const std::string s : {"", "a", "ab", "abc", "abcd", "\xff\x00\x10"}) {
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  }
  EXPECT_FALSE(base64_decode("abc"));
  EXPECT_FALSE(base64_decode("a=bc"));
}

TEST(CameraMessagesTest, CameraTimesUseTheLocalOffset) {
  // 2026-11-27T03:38:54.123Z
  const std::int64_t ms = 1'795'750'734'123;
  EXPECT_EQ(camera_time(ms, 480), "2026-11-27T11:38:54.123+08:00");
  EXPECT_EQ(camera_time(ms, 480, false), "2026-11-27T11:38:54+08:00");
  EXPECT_EQ(camera_time(ms, -330), "2026-11-26T22:08:54.123-05:30");
  EXPECT_EQ(camera_abs_time(ms, 480), "20261127113854123");
  EXPECT_EQ(parse_utc_offset("+08:00"), 480);
  EXPECT_EQ(parse_utc_offset("-05:30"), -330);
  EXPECT_FALSE(parse_utc_offset("+8:00"));
  EXPECT_FALSE(parse_utc_offset("+08:60"));
}

TEST(CameraMessagesTest, AlertCarriesEveryElementOfTheSpecExample) {
  AnprAlert a;
  a.date_time = "2026-11-27T11:38:54.123+08:00";
  a.license_plate = "浙A12345";
  a.line = 2;
  a.uuid = "1f0c7a52-8f7e-4c1e-9d3a-0b6c2f9e4a11";
  a.pictures = {{"detectionPicture.jpg", "detectionPicture", "20261127113854123"},
                {"licensePlatePicture.jpg", "licensePlatePicture", "20261127113854123"}};
  const std::string x = anpr_alert_xml(a);
  for (const char* want :
       {"<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">",
        "<dateTime>2026-11-27T11:38:54.123+08:00</dateTime>", "<activePostCount>1</activePostCount>",
        "<eventType>ANPR</eventType>", "<licensePlate>浙A12345</licensePlate>", "<line>2</line>",
        "<fileName>licensePlatePicture.jpg</fileName>", "<UUID>1f0c7a52-8f7e-4c1e-9d3a-0b6c2f9e4a11</UUID>",
        "<picNum>2</picNum>"}) {
    EXPECT_NE(x.find(want), std::string::npos) << want;
  }
  Heartbeat h;
  h.xml_namespace = std::string(kHikvisionNamespace);
  const std::string hb = heartbeat_xml(h);
  EXPECT_NE(hb.find("<eventType>videoloss</eventType>"), std::string::npos);
  EXPECT_NE(hb.find("<eventState>inactive</eventState>"), std::string::npos);
  EXPECT_NE(hb.find("hikvision.com"), std::string::npos);
}

TEST(CameraMessagesTest, PartsCarryExactLengths) {
  const std::string body = "--b\r\n inside";
  EXPECT_EQ(jpeg_part("b", "x.jpg", body),
            "--b\r\nContent-Type: image/jpeg\r\nContent-Length: 12\r\nContent-Disposition: attachment; "
            "filename=\"x.jpg\"\r\n\r\n--b\r\n inside\r\n");
  EXPECT_EQ(http_chunk("hello world, 17b"), "10\r\nhello world, 17b\r\n");
}

}  // namespace
}  // namespace cpd::test
