// Real JPEGs for tests: a gradient encoded with libturbojpeg.
#include "tests/support/jpeg_samples.h"

#include <cstddef>
#include <vector>

namespace cpd::test {

std::string sample_jpeg(int width, int height, int subsamp, int flags, int pixel_format) {
  const int pf = subsamp == TJSAMP_GRAY ? TJPF_GRAY : pixel_format;
  const auto n = static_cast<std::size_t>(tjPixelSize[pf]);
  std::vector<unsigned char> px(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * n);
  for (std::size_t i = 0; i < px.size(); ++i) {
    px[i] = static_cast<unsigned char>(
        (i / n) % static_cast<std::size_t>(width) * 255 / static_cast<std::size_t>(width) + (i % n) * 40);
  }
  tjhandle tj = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  const int rc = tjCompress2(tj, px.data(), width, 0, height, pf, &out, &out_size, subsamp, 85, flags);
  std::string jpeg;
  if (rc == 0 && out != nullptr) {
    jpeg.assign(reinterpret_cast<const char*>(out), out_size);
  }
  tjFree(out);
  tjDestroy(tj);
  return jpeg;
}

}  // namespace cpd::test
