// Real baseline JPEGs for the camera simulator: a seeded road scene (asphalt, lane marks, a vehicle, a
// plate), padded with COM segments to an exact byte size, so each picture decodes and hashes differently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

namespace cpd::sim {

struct JpegScene {
  int width = 1280;
  int height = 720;
  int quality = 85;
  std::uint64_t seed = 1;
};

// Encodes the scene as a baseline JFIF JPEG (4:2:0). Empty on an encoder failure.
std::string encode_scene_jpeg(const JpegScene& scene);

// Inserts COM segments after the JFIF APP0 so the file is exactly `target_bytes` long (or as close as the
// 4-byte segment overhead allows when the JPEG is already bigger). `comment` goes into the first segment.
std::string pad_jpeg(std::string_view jpeg, std::size_t target_bytes, std::string_view comment);

// Pictures of a requested size, from a small cache of encoded scenes (encoding a 2 MP scene takes tens of
// ms; padding a cached one takes microseconds).
class JpegFactory {
 public:
  // A JPEG of exactly `target_bytes` (>= a few KB) whose scene is chosen by `seed` among a few variants per
  // resolution; `comment` (e.g. the event UUID) makes the bytes unique.
  // `panorama`: a scene a camera takes whole, never below 1280x720 whatever the size asked (a real camera's
  // panoramas keep their resolution; only a plate crop is small), so the file may come out larger.
  std::string make(std::size_t target_bytes, std::uint64_t seed, std::string_view comment,
                   bool panorama = false);

 private:
  const std::string& base(int width, int height, int quality, std::uint64_t variant);
  std::map<std::tuple<int, int, int, std::uint64_t>, std::string> cache_;
};

}  // namespace cpd::sim
