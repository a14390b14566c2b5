// libjpeg's header reader behind a setjmp/longjmp error trap: libjpeg reports a fatal error by calling
// error_exit, which must not return (the default one prints to stderr and calls exit()).
#include "adapters/common/jpeg_header.h"

#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <type_traits>

// After <cstdio>: jpeglib.h uses FILE and size_t without including their headers.
#include <jerror.h>
#include <jpeglib.h>

namespace cpd::adapters {

namespace {

constexpr std::size_t kMaxErrorBytes = 200;
static_assert(sizeof(unsigned long) >= sizeof(std::size_t), "jpeg_mem_src takes the size as unsigned long");

// libjpeg's error manager, the jump back into read_raw and what the read saw. A longjmp skips destructors,
// so everything alive between setjmp and longjmp is trivially destructible, this included.
struct ErrorTrap {
  jpeg_error_mgr mgr;  // first, so the jpeg_error_mgr* libjpeg hands back converts to the trap
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool premature_end;  // libjpeg ran out of bytes and went on with an EOI marker of its own (JWRN_JPEG_EOF)
};
static_assert(std::is_standard_layout_v<ErrorTrap> && std::is_trivially_destructible_v<ErrorTrap>);

// The fields JpegHeader keeps, copied out of the decompressor before it is destroyed.
struct RawHeader {
  int width;
  int height;
  int components;
  int precision;
  J_COLOR_SPACE color_space;
  bool progressive;
  bool arithmetic;
};
static_assert(std::is_trivially_destructible_v<RawHeader>);

// The trap that owns libjpeg's error manager.
ErrorTrap& trap_of(j_common_ptr cinfo) {
  return *reinterpret_cast<ErrorTrap*>(cinfo->err);
}

// error_exit: keeps libjpeg's message in the trap and jumps back to read_raw's setjmp.
[[noreturn]] void on_error_exit(j_common_ptr cinfo) {
  ErrorTrap& trap = trap_of(cinfo);
  (*cinfo->err->format_message)(cinfo, trap.message);
  std::longjmp(trap.jump, 1);
}

// emit_message: counts corrupt-data warnings as libjpeg's own does and notes an invented EOI; prints nothing.
// Other warnings (junk skipped between markers) are about bytes libjpeg passed over, as a decoder would.
void on_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) {
    return;  // a trace message
  }
  ++cinfo->err->num_warnings;
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
    trap_of(cinfo).premature_end = true;
  }
}

// output_message: silent, so nothing a hostile file makes libjpeg say reaches stderr.
void on_output_message(j_common_ptr /*cinfo*/) {}

// Reads the header of `bytes` into `raw`; false, with libjpeg's message in the trap, when libjpeg gives up.
// It holds the setjmp, so the decompressor and the trap belong to the caller (no local of this frame changes
// between setjmp and longjmp), and it destroys the decompressor on both paths.
bool read_raw(jpeg_decompress_struct& cinfo, ErrorTrap& trap, std::string_view bytes, RawHeader& raw) {
  if (setjmp(trap.jump) != 0) {
    jpeg_destroy_decompress(&cinfo);  // safe even when create failed half-way: it checks cinfo.mem
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  const bool ok = jpeg_read_header(&cinfo, TRUE) == JPEG_HEADER_OK;
  raw = {static_cast<int>(cinfo.image_width),
         static_cast<int>(cinfo.image_height),
         cinfo.num_components,
         cinfo.data_precision,
         cinfo.jpeg_color_space,
         cinfo.progressive_mode != FALSE,
         cinfo.arith_code != FALSE};
  jpeg_destroy_decompress(&cinfo);
  return ok;
}

// libjpeg's name for a colour space, in our words.
std::string color_space_name(J_COLOR_SPACE cs) {
  switch (cs) {
    case JCS_GRAYSCALE:
      return "grey";
    case JCS_YCbCr:
      return "ycbcr";
    case JCS_RGB:
      return "rgb";
    case JCS_CMYK:
      return "cmyk";
    case JCS_YCCK:
      return "ycck";
    default:
      return "unknown";
  }
}

// A failure with `text` made printable ASCII and cut to kMaxErrorBytes (libjpeg's string parameters come
// from the file).
JpegHeaderResult failure(std::string_view text) {
  JpegHeaderResult r;
  for (const char c : text.substr(0, kMaxErrorBytes)) {
    r.error += (c >= 0x20 && c <= 0x7E) ? c : '?';
  }
  return r;
}

}  // namespace

JpegHeaderResult read_jpeg_header(std::string_view bytes) {
  if (bytes.empty()) {
    return failure("not a JPEG (empty input)");
  }
  if (bytes.size() < 2 || static_cast<unsigned char>(bytes[0]) != 0xFF ||
      static_cast<unsigned char>(bytes[1]) != 0xD8) {
    return failure("not a JPEG (no SOI marker)");
  }
  ErrorTrap trap{};
  jpeg_std_error(&trap.mgr);
  trap.mgr.error_exit = on_error_exit;
  trap.mgr.emit_message = on_emit_message;
  trap.mgr.output_message = on_output_message;
  jpeg_decompress_struct cinfo{};
  cinfo.err = &trap.mgr;
  RawHeader raw{};
  const bool ok = read_raw(cinfo, trap, bytes, raw);
  // libjpeg pads a short input with EOI markers and only warns: a header it then accepted was partly made up.
  if (trap.premature_end) {
    return failure(ok ? std::string("truncated before the first scan")
                      : "truncated before the first scan (libjpeg: " + std::string(trap.message) + ")");
  }
  if (!ok) {
    return failure(trap.message[0] != '\0' ? trap.message : "libjpeg found no image");
  }
  if (raw.width <= 0 || raw.height <= 0) {
    return failure("nonsense size " + std::to_string(raw.width) + "x" + std::to_string(raw.height));
  }
  return {JpegHeader{raw.width, raw.height, raw.components, raw.precision, color_space_name(raw.color_space),
                     raw.progressive, raw.arithmetic},
          {}};
}

bool is_24bit_colour(const JpegHeader& h) {
  return h.components == 3 && h.bits_per_sample == 8 && (h.color_space == "ycbcr" || h.color_space == "rgb");
}

}  // namespace cpd::adapters
