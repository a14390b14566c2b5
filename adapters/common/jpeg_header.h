// What a JPEG's own header says about the picture (size, components, precision, coding), read with libjpeg
// from the bytes in memory, so a camera's claim about its pictures can be checked against the picture.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cpd::adapters {

// The frame header (SOF) as libjpeg reads it, up to the first scan.
struct JpegHeader {
  int width = 0;
  int height = 0;
  int components = 0;        // 1 grey, 3 colour, 4 CMYK/YCCK
  int bits_per_sample = 0;   // libjpeg data_precision (8 or 12)
  std::string color_space;   // "grey", "ycbcr", "rgb", "cmyk", "ycck", "unknown" (libjpeg jpeg_color_space)
  bool progressive = false;  // SOF2 (progressive_mode)
  bool arithmetic = false;   // arith_code
  bool operator==(const JpegHeader&) const = default;
};

// The header, or why there is none.
struct JpegHeaderResult {
  std::optional<JpegHeader> header;
  std::string error;  // when header is empty: e.g. "not a JPEG (no SOI marker)", libjpeg's message otherwise
};

// Reads the header only (markers up to the first SOS) with libjpeg's jpeg_read_header on the bytes in
// memory (jpeg_mem_src); never decodes the scan. Empty input, truncated headers and garbage give an error
// (printable ASCII, at most ~200 bytes), never a message on stderr. Thread-safe: no state of its own.
JpegHeaderResult read_jpeg_header(std::string_view bytes);

// 24-bit colour: 3 components of 8 bits (YCbCr or RGB).
bool is_24bit_colour(const JpegHeader& h);

}  // namespace cpd::adapters
