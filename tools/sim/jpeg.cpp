// Seeded road scenes encoded with libturbojpeg, padded to exact sizes with COM segments.
#include "tools/sim/jpeg.h"

#include <turbojpeg.h>

#include <algorithm>
#include <array>
#include <random>
#include <vector>

namespace cpd::sim {
namespace {

constexpr std::size_t kMaxComData = 65'533;  // a segment length field counts itself: 65535 - 2
constexpr std::uint64_t kVariants = 4;

struct Rgb {
  std::uint8_t r;
  std::uint8_t g;
  std::uint8_t b;
};

void fill_rect(std::vector<std::uint8_t>& px, int width, int height, int x0, int y0, int x1, int y1, Rgb c) {
  x0 = std::clamp(x0, 0, width);
  x1 = std::clamp(x1, 0, width);
  y0 = std::clamp(y0, 0, height);
  y1 = std::clamp(y1, 0, height);
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) {
      const auto i =
          (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
      px[i] = c.r;
      px[i + 1] = c.g;
      px[i + 2] = c.b;
    }
  }
}

}  // namespace

std::string encode_scene_jpeg(const JpegScene& s) {
  const int w = std::max(16, s.width);
  const int h = std::max(16, s.height);
  std::vector<std::uint8_t> px(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
  std::mt19937_64 rng(s.seed);
  // Asphalt: grey with per-pixel grain, which is what makes real checkpoint pictures large.
  for (std::size_t i = 0; i < px.size(); i += 3) {
    const auto grain = static_cast<int>(rng() % 48);
    const auto v = static_cast<std::uint8_t>(86 + grain);
    px[i] = v;
    px[i + 1] = v;
    px[i + 2] = static_cast<std::uint8_t>(v + 4);
  }
  // Lane markings: dashed white lines at a third and two thirds of the width.
  for (const int lx : {w / 3, 2 * w / 3}) {
    for (int y = 0; y < h; y += h / 8) {
      fill_rect(px, w, h, lx - w / 160, y, lx + w / 160, y + h / 16, {235, 235, 230});
    }
  }
  // The vehicle: a coloured body with a darker windscreen, somewhere in the lower half.
  const std::array<Rgb, 6> bodies = {
      {{200, 30, 30}, {230, 230, 235}, {20, 20, 25}, {40, 70, 160}, {150, 150, 155}, {210, 180, 40}}};
  const Rgb body = bodies[rng() % bodies.size()];
  const int vw = w / 3;
  const int vh = h / 3;
  const int vx = static_cast<int>(rng() % static_cast<std::uint64_t>(std::max(1, w - vw)));
  const int vy = h / 2 + static_cast<int>(rng() % static_cast<std::uint64_t>(std::max(1, h / 2 - vh)));
  fill_rect(px, w, h, vx, vy, vx + vw, vy + vh, body);
  fill_rect(px, w, h, vx + vw / 8, vy + vh / 10, vx + vw - vw / 8, vy + vh / 3, {40, 50, 60});
  // The plate: a blue rectangle with a white border (text omitted).
  const int pw = vw / 3;
  const int ph = std::max(4, vh / 8);
  const int px0 = vx + (vw - pw) / 2;
  const int py0 = vy + vh - 2 * ph;
  fill_rect(px, w, h, px0, py0, px0 + pw, py0 + ph, {240, 240, 240});
  fill_rect(px, w, h, px0 + 2, py0 + 2, px0 + pw - 2, py0 + ph - 2, {20, 60, 170});

  tjhandle tj = tjInitCompress();
  if (tj == nullptr) {
    return {};
  }
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  const int rc = tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &out, &out_size, TJSAMP_420,
                             std::clamp(s.quality, 1, 100), TJFLAG_FASTDCT);
  std::string jpeg;
  if (rc == 0 && out != nullptr) {
    jpeg.assign(reinterpret_cast<const char*>(out), out_size);
  }
  tjFree(out);
  tjDestroy(tj);
  return jpeg;
}

std::string pad_jpeg(std::string_view jpeg, std::size_t target_bytes, std::string_view comment) {
  // Insert after SOI and, when present, the JFIF APP0 segment (which must come first).
  std::size_t at = 2;
  if (jpeg.size() > 6 && static_cast<unsigned char>(jpeg[2]) == 0xFF &&
      static_cast<unsigned char>(jpeg[3]) == 0xE0) {
    at = 4 + ((static_cast<std::size_t>(static_cast<unsigned char>(jpeg[4])) << 8) |
              static_cast<unsigned char>(jpeg[5]));
  }
  if (jpeg.size() < at) {
    return std::string(jpeg);
  }
  const std::string_view cmt = comment.substr(0, kMaxComData);
  std::size_t need = target_bytes > jpeg.size() ? target_bytes - jpeg.size() : 0;
  need = std::max(need, cmt.size() + 4);  // the comment always goes in
  std::string segments;
  segments.reserve(need);
  bool first = true;
  while (need > 0) {
    std::size_t data = std::min(need - 4, kMaxComData);
    const std::size_t rest = need - (data + 4);
    if (rest > 0 && rest < 4) {
      data -= 4 - rest;  // leave room for one more whole segment
    }
    segments += static_cast<char>(0xFF);
    segments += static_cast<char>(0xFE);
    segments += static_cast<char>(((data + 2) >> 8) & 0xFF);
    segments += static_cast<char>((data + 2) & 0xFF);
    std::size_t written = 0;
    if (first) {
      const std::size_t n = std::min(data, cmt.size());
      segments.append(cmt.substr(0, n));
      written = n;
      first = false;
    }
    // Filler: printable, so `strings` shows where it came from.
    static constexpr std::string_view kFill = "checkpoint-sim padding ";
    for (; written < data; ++written) {
      segments += kFill[written % kFill.size()];
    }
    need -= data + 4;
  }
  std::string out;
  out.reserve(jpeg.size() + segments.size());
  out.append(jpeg.substr(0, at));
  out += segments;
  out.append(jpeg.substr(at));
  return out;
}

const std::string& JpegFactory::base(int width, int height, int quality, std::uint64_t variant) {
  const auto key = std::make_tuple(width, height, quality, variant);
  auto it = cache_.find(key);
  if (it == cache_.end()) {
    it = cache_.emplace(key, encode_scene_jpeg({width, height, quality, 0x5EED0000ULL + variant})).first;
  }
  return it->second;
}

std::string JpegFactory::make(std::size_t target_bytes, std::uint64_t seed, std::string_view comment,
                              bool panorama) {
  // Resolution grows with the requested size, as a camera's would between plate crops and full scenes;
  // the scene's natural size stays below the target and COM padding makes up the rest.
  struct Step {
    int w;
    int h;
  };
  static constexpr std::array<Step, 5> kSteps = {
      {{320, 180}, {704, 576}, {1280, 720}, {1920, 1080}, {2560, 1440}}};
  std::size_t idx = 0;
  if (target_bytes >= 1'000'000) {
    idx = 4;
  } else if (target_bytes >= 500'000) {
    idx = 3;
  } else if (target_bytes >= 200'000) {
    idx = 2;
  } else if (target_bytes >= 60'000) {
    idx = 1;
  }
  const std::size_t min_idx = panorama ? 2 : 0;  // kSteps[2] is 1280x720
  idx = std::max(idx, min_idx);
  const std::uint64_t variant = seed % kVariants;
  for (;;) {
    for (const int q : {85, 60, 35}) {
      const std::string& b = base(kSteps[idx].w, kSteps[idx].h, q, variant);
      if (!b.empty() && b.size() + comment.size() + 8 <= target_bytes) {
        return pad_jpeg(b, target_bytes, comment);
      }
    }
    if (idx == min_idx) {
      return pad_jpeg(base(kSteps[idx].w, kSteps[idx].h, 35, variant), target_bytes, comment);
    }
    --idx;
  }
}

}  // namespace cpd::sim
