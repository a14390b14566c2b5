// Writes the fuzz targets' seed corpora from the same builders the simulators and unit tests use:
// radar frames, ISAPI documents and multipart streams, the dock spec's JSON, config/example.yaml and a
// real sealed, hash-chained JWS chain. Usage: cpd-fuzz-seeds <out-dir> <config/example.yaml>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// After <cstdio>: jpeglib.h uses FILE and size_t without including their headers.
#include <jpeglib.h>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/file_transfer.h"
#include "daemon/core/sealer.h"
#include "tests/support/camera_messages.h"
#include "tests/support/dock_messages.h"
#include "tests/support/radar_frames.h"

namespace fs = std::filesystem;

namespace cpd {
namespace {

class CorpusWriter {
 public:
  explicit CorpusWriter(fs::path root) : root_(std::move(root)) {}

  void write(std::string_view target, std::string_view name, std::string_view bytes) {
    const fs::path dir = root_ / target;
    if (cleared_.insert(std::string(target)).second) {
      fs::remove_all(dir);  // a re-run leaves no stale seeds behind
    }
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      throw std::runtime_error("cannot write " + (dir / name).string());
    }
    ++written_;
  }
  int written() const { return written_; }

 private:
  fs::path root_;
  std::set<std::string> cleared_;
  int written_ = 0;
};

constexpr std::int64_t kT0Ms = 1795779534123;  // 2026-11-27T03:38:54.123Z

void radar_seeds(CorpusWriter& w) {
  test::DetectFields d;
  d.time_cs = 1234567;
  d.target = 3;
  d.targets = 4;
  d.speed_tenths = 1234;
  d.range_dm = 456;
  d.x_tenths = -35;
  d.amplitude_ddb = 612;
  const std::string detect = test::detect_frame(d);
  test::DetectFields p = d;
  p.dir = 'R';
  p.units = 'M';
  p.coord = 'P';
  p.x_tenths = 123;
  const std::string detect_polar = test::detect_frame(p);
  const std::string status = test::status_frame(9999999, 0, test::radar_status_text(0));
  const std::string status_hot = test::status_frame(42, 3, test::radar_status_text(3));
  std::mt19937_64 rng(7);
  // Byte 0 is the target's chunk size.
  w.write("radar_frame", "detect", std::string(1, '\x3f') + detect);
  w.write("radar_frame", "detect_polar", std::string(1, '\x05') + detect_polar);
  w.write("radar_frame", "status", std::string(1, '\x3f') + status);
  w.write("radar_frame", "stream",
          std::string(1, '\x07') + detect + test::noise_bytes(9, rng) + status_hot +
              test::with_wrong_checksum(detect) + test::overlong_frame() + detect_polar);
  w.write("radar_frame", "cut", std::string(1, '\x01') + detect.substr(0, 20) + status);
}

void camera_seeds(CorpusWriter& w) {
  test::AnprAlert a;
  a.date_time = test::camera_time(kT0Ms, 480);
  a.license_plate =
      "\xe6\xb5\x99"
      "A12345";
  a.uuid = "6b3f2a10-0000-4000-8000-000000000001";
  a.pictures = {{"detectionPicture.jpg", "detectionPicture", test::camera_abs_time(kT0Ms, 480)},
                {"licensePlatePicture.jpg", "licensePlatePicture", test::camera_abs_time(kT0Ms, 480)}};
  test::AnprAlert hik = a;
  hik.xml_namespace = std::string(test::kHikvisionNamespace);
  hik.date_time = test::camera_time(kT0Ms, -330, false);
  test::Heartbeat hb;
  hb.date_time = test::camera_time(kT0Ms, 0);
  test::TimeStatus ts;
  ts.local_time = test::camera_time(kT0Ms, 480, false);
  const std::string alert = test::anpr_alert_xml(a);
  w.write("isapi_xml", "anpr", alert);
  w.write("isapi_xml", "anpr_hikvision", test::anpr_alert_xml(hik));
  w.write("isapi_xml", "heartbeat", test::heartbeat_xml(hb));
  w.write("isapi_xml", "device_info", test::device_info_xml(test::DeviceInfo{}));
  w.write("isapi_xml", "time", test::time_xml(ts));
  w.write("isapi_xml", "iso_time", test::camera_time(kT0Ms, 480));
  w.write("isapi_xml", "abs_time", test::camera_abs_time(kT0Ms, 480));

  // Byte 0: chunk size; line 1: the Content-Type header value; then the stream.
  const std::string b = "MIME_boundary";
  constexpr char kJpeg[] = "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9";
  const std::string jpeg(kJpeg, sizeof(kJpeg) - 1);  // SOI, a JFIF APP0 header, EOI
  const std::string stream = test::xml_part(b, alert) + test::jpeg_part(b, "detectionPicture.jpg", jpeg) +
                             test::jpeg_part(b, "licensePlatePicture.jpg", jpeg) +
                             test::xml_part(b, test::heartbeat_xml(hb));
  w.write("multipart", "alert_stream",
          "\x7f"
          "multipart/mixed; boundary=" +
              b + "\n" + stream);
  w.write("multipart", "quoted_boundary",
          "\x0b"
          "multipart/mixed; boundary=\"" +
              b + "\"\n" + stream);
  // Without Content-Length: the body runs to the next delimiter.
  w.write("multipart", "no_length",
          "\x20"
          "multipart/mixed; boundary=" +
              b + "\n--" + b + "\r\nContent-Type: application/xml\r\n\r\n" + test::heartbeat_xml(hb) +
              "\r\n--" + b + "--\r\n");
}

void dock_seeds(CorpusWriter& w) {
  // The examples of specs/recorder-dock.md, verbatim (tests/support/dock_messages).
  const std::string entry = test::kDockSpecEntry;
  w.write("dock_json", "status", test::kDockSpecStatus);
  w.write("dock_json", "listing", test::dock_spec_listing());
  w.write("dock_json", "listing_empty", R"({"files":[],"next":"c-000153"})");
  w.write("dock_json", "entry", entry);
  w.write("dock_json", "error", R"({"error":"bad cursor"})");
}

void config_seeds(CorpusWriter& w, const fs::path& example_yaml) {
  std::ifstream in(example_yaml, std::ios::binary);
  const std::string yaml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (yaml.empty()) {
    throw std::runtime_error("cannot read " + example_yaml.string());
  }
  w.write("config", "example.yaml", yaml);
}

// Custody inputs (fuzz_custody): byte 0 picks the parser, as in the target.
void custody_seeds(CorpusWriter& w) {
  const auto key = Ed25519PrivateKey::generate();
  const std::string sha(64, 'a');
  const auto put = [&](char mode, const std::string& name, const std::string& payload) {
    w.write("custody", name, std::string(1, mode) + payload);
  };
  put('\0', "resend_range", R"({"from_seq":41,"to_seq":57,"v":1})");
  put('\0', "resend_media", R"({"media":[")" + sha + R"("],"v":1})");
  put('\1', "reply",
      R"({"from_seq":1,"media_not_held":[],"media_sent":[],"not_held":[[1,9]],"sent":10,"to_seq":10,"v":1})");
  put('\2', "receipt", custody::seal_receipt(key, {"central", "gw", 120, sha, 1767225605000, {}, {}}));
  put('\3', "head", custody::seal_head(key, {"gw", 130, sha, 1767225607250}));
  put('\4', "topic_init", "file/" + sha + "/init");
  put('\4', "topic_segment", "file/" + sha + "/1048576/" + sha);
  put('\4', "topic_fin", "file/" + sha + "/fin/1073741824/" + sha);
  put('\5', "init", sha + filex::init_json({sha, 1073741824, 1048576, "20261205_0001.mp4", 42}));
  put('\6', "want", filex::want_json({sha, {{0, 4096}, {8192, 10000}}}));
  put('\6', "want_whole", filex::want_json({sha, {}}));
  put('\7', "file_receipt", filex::seal_file_receipt(key, {"central", "gw", sha, 1073741824, 1767225605000}));
  put('\x08', "abort", filex::abort_json("not held"));
  put('\x09', "ranges", std::string(16, '\x01') + std::string(64, '\x02'));
}

void jws_seeds(CorpusWriter& w) {
  const Ed25519PrivateKey key = Ed25519PrivateKey::generate();
  Sealer sealer(key, "gw-fuzz", ChainHead{});
  std::vector<std::string> records;
  std::vector<std::string> bodies;
  for (int i = 0; i < 3; ++i) {
    Fact f;
    f.type = i == 2 ? "speed_measurement" : "passage";
    f.time_ms = kT0Ms + i;
    f.fields = {{"plate",
                 "\xe6\xb5\x99"
                 "A0000" +
                     std::to_string(i)},
                {"lane", i % 3},
                {"speed_kmh_x10", 1234}};
    records.push_back(sealer.seal(f, kT0Ms + 1000 + i).jws);
    const std::string& jws = records.back();
    const auto first = jws.find('.');
    const auto second = jws.find('.', first + 1);
    bodies.push_back(base64url_decode(jws.substr(first + 1, second - first - 1)).value_or(""));
  }
  const std::string pub = key.public_key().raw();
  // Mode byte 0x02: verify against the key in bytes 1..32, chain expected from seq 1.
  w.write("jws", "chain", "\x02" + pub + records[0] + "\n" + records[1] + "\n" + records[2]);
  w.write("jws", "redelivery",
          std::string(1, '\x00') + pub + records[1] + "\n" + records[1] + "\n" + records[2]);
  w.write("jws", "single", std::string(1, '\x00') + pub + records[2]);
  // Mode byte 0x03: bodies signed by the target itself, so the checks behind the signature are reached.
  w.write("jws", "bodies", "\x03" + bodies[0] + "\n" + bodies[1] + "\n" + bodies[2]);
  w.write("jws", "gap", "\x01" + bodies[0] + "\n" + bodies[2]);

  for (std::size_t i = 0; i < bodies.size(); ++i) {
    w.write("jcs", "record_body_" + std::to_string(i), bodies[i]);
  }
  // RFC 8785's own example and number forms (ECMAScript shortest round trip, exponents, -0).
  w.write(
      "jcs", "rfc8785_numbers",
      R"({"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001,-0,1e21,1e-7,5e-324,9007199254740991]})");
  w.write("jcs", "rfc8785_strings",
          R"({"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]})");
  w.write(
      "jcs", "sort_utf16",
      R"({"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"})");
  w.write("jcs", "nested", R"([{"b":[1,{"a":{}}],"a":[]},"",-1.5e-10,123456789012345678])");
}

// A real JPEG of a flat grey picture, written with libjpeg into memory.
std::string jpeg_of(int width, int height, int components, bool progressive) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* out = nullptr;
  unsigned long size = 0;  // NOLINT(google-runtime-int): libjpeg's type
  jpeg_mem_dest(&c, &out, &size);
  c.image_width = static_cast<JDIMENSION>(width);
  c.image_height = static_cast<JDIMENSION>(height);
  c.input_components = components;
  c.in_color_space = components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  if (progressive) {
    jpeg_simple_progression(&c);
  }
  jpeg_start_compress(&c, TRUE);
  std::vector<unsigned char> row(static_cast<std::size_t>(width * components), 128);
  while (c.next_scanline < c.image_height) {
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&c, rows, 1);
  }
  jpeg_finish_compress(&c);
  std::string bytes(reinterpret_cast<const char*>(out), size);
  jpeg_destroy_compress(&c);
  free(out);  // NOLINT(cppcoreguidelines-no-malloc): jpeg_mem_dest's buffer
  return bytes;
}

void jpeg_seeds(CorpusWriter& w) {
  w.write("jpeg_header", "colour_64x48", jpeg_of(64, 48, 3, false));
  w.write("jpeg_header", "grey_32x32", jpeg_of(32, 32, 1, false));
  w.write("jpeg_header", "progressive_48x32", jpeg_of(48, 32, 3, true));
  const std::string head = jpeg_of(16, 16, 3, false);
  w.write("jpeg_header", "cut_in_header", head.substr(0, head.size() / 3));
}

}  // namespace
}  // namespace cpd

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: cpd-fuzz-seeds <out-dir> <config/example.yaml>\n";
    return 2;
  }
  try {
    cpd::CorpusWriter w(argv[1]);
    cpd::radar_seeds(w);
    cpd::camera_seeds(w);
    cpd::dock_seeds(w);
    cpd::config_seeds(w, argv[2]);
    cpd::jws_seeds(w);
    cpd::custody_seeds(w);
    cpd::jpeg_seeds(w);
    std::cout << "cpd-fuzz-seeds: " << w.written() << " seeds in " << argv[1] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "cpd-fuzz-seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
