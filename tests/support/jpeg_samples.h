// Real JPEGs for tests, made with libturbojpeg: a smooth gradient of any size, subsampling (TJSAMP_GRAY for
// grey) and flags (TJFLAG_PROGRESSIVE), so what reads a picture's header is tested on the real thing.
#pragma once

#include <turbojpeg.h>

#include <string>

namespace cpd::test {

// Grey pixels for TJSAMP_GRAY, `pixel_format` otherwise. Empty on an encoder failure.
std::string sample_jpeg(int width, int height, int subsamp, int flags = 0, int pixel_format = TJPF_RGB);

}  // namespace cpd::test
