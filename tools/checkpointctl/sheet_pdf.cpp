// The evidence sheet as an A4 PDF: cairo's PDF surface, pango for text (Chinese shaped with WenQuanYi Zen
// Hei, embedded as a subset by cairo), each picture decoded with libturbojpeg for its pixels and embedded as
// its original JPEG bytes (cairo's JPEG MIME data: the PDF holds the evidence itself, not a re-encoding), and
// the QR code drawn module by module from libqrencode.
#include "tools/checkpointctl/sheet_pdf.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <pango/pangocairo.h>
#include <qrencode.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

namespace cpd::ctl {

namespace {

constexpr double kPageWidth = 595.276;  // A4 in points
constexpr double kPageHeight = 841.890;
constexpr double kMargin = 42.0;
constexpr double kContentWidth = kPageWidth - 2 * kMargin;
constexpr double kLabelWidth = 150.0;
constexpr double kMaxPictureHeight = 320.0;
constexpr int kMaxPicturePixels = 40'000'000;  // a bigger picture is not decoded (memory bound)
constexpr const char* kFont = "WenQuanYi Zen Hei, Noto Sans CJK SC, sans";
constexpr const char* kMonoFont = "DejaVu Sans Mono, WenQuanYi Zen Hei Mono, monospace";

struct Colour {
  double r, g, b;
};
constexpr Colour kBlack{0, 0, 0};
constexpr Colour kGrey{0.35, 0.35, 0.35};
constexpr Colour kRed{0.75, 0.05, 0.05};
constexpr Colour kGreen{0.05, 0.45, 0.15};
constexpr Colour kWhite{1, 1, 1};

struct TextStyle {
  double size = 9.0;
  bool bold = false;
  bool mono = false;
  Colour colour = kBlack;
};

// One PDF being written: the page cursor, page breaks with a running header and footer.
class SheetWriter {
 public:
  SheetWriter(const std::string& path, const SheetContent& content)
      : surface_(cairo_pdf_surface_create(path.c_str(), kPageWidth, kPageHeight)),
        cr_(cairo_create(surface_)),
        content_(content) {
    cairo_pdf_surface_set_metadata(surface_, CAIRO_PDF_METADATA_TITLE,
                                   (content.title + " " + content.record_id).c_str());
    cairo_pdf_surface_set_metadata(surface_, CAIRO_PDF_METADATA_CREATOR, "checkpointctl sheet");
    y_ = kMargin;
  }
  ~SheetWriter() {
    cairo_destroy(cr_);
    cairo_surface_destroy(surface_);
  }
  SheetWriter(const SheetWriter&) = delete;
  SheetWriter& operator=(const SheetWriter&) = delete;

  // Text in a box of `width` at `x`, at the cursor unless `at_y` is given; returns its height.
  double text(const std::string& s, double x, double width, const TextStyle& style, bool draw = true,
              double at_y = -1) {
    PangoLayout* layout = pango_cairo_create_layout(cr_);
    PangoFontDescription* font = pango_font_description_from_string(style.mono ? kMonoFont : kFont);
    pango_font_description_set_absolute_size(font, style.size * PANGO_SCALE);
    pango_font_description_set_weight(font, style.bold ? PANGO_WEIGHT_BOLD : PANGO_WEIGHT_NORMAL);
    pango_layout_set_font_description(layout, font);
    pango_layout_set_width(layout, static_cast<int>(width * PANGO_SCALE));
    pango_layout_set_wrap(layout, PANGO_WRAP_WORD_CHAR);
    pango_layout_set_text(layout, s.c_str(), static_cast<int>(s.size()));
    int w = 0;
    int h = 0;
    pango_layout_get_size(layout, &w, &h);
    if (draw) {
      cairo_set_source_rgb(cr_, style.colour.r, style.colour.g, style.colour.b);
      cairo_move_to(cr_, x, at_y >= 0 ? at_y : y_);
      pango_cairo_show_layout(cr_, layout);
    }
    pango_font_description_free(font);
    g_object_unref(layout);
    return static_cast<double>(h) / PANGO_SCALE;
  }

  double measure(const std::string& s, double width, const TextStyle& style) {
    return text(s, 0, width, style, false);
  }

  // A page break when `height` does not fit below the cursor.
  void need(double height) {
    if (y_ + height > kPageHeight - kMargin - 14) {
      footer();
      cairo_show_page(cr_);
      ++page_;
      y_ = kMargin;
      header_line();
    }
  }

  void advance(double dy) { y_ += dy; }
  double y() const { return y_; }
  cairo_t* cr() { return cr_; }

  void header_line() {
    if (page_ > 1) {
      y_ += text(content_.title + " · " + content_.record_id, kMargin, kContentWidth,
                 {8.0, false, false, kGrey});
      y_ += 6;
    }
  }

  void footer() {
    text("第 " + std::to_string(page_) + " 页 page " + std::to_string(page_) + " · " + content_.record_id +
             " · checkpointctl sheet",
         kMargin, kContentWidth, {7.0, false, false, kGrey}, true, kPageHeight - kMargin);
  }

  // Finishes the document; an error message or "".
  std::string finish() {
    footer();
    cairo_show_page(cr_);
    cairo_surface_finish(surface_);
    const cairo_status_t status = cairo_surface_status(surface_);
    return status == CAIRO_STATUS_SUCCESS ? "" : cairo_status_to_string(status);
  }

 private:
  cairo_surface_t* surface_;
  cairo_t* cr_;
  const SheetContent& content_;
  double y_ = 0;
  int page_ = 1;
};

void title_block(SheetWriter& w, const SheetContent& c) {
  w.advance(w.text(c.title, kMargin, kContentWidth, {18.0, true, false, kBlack}));
  w.advance(w.text(c.subtitle, kMargin, kContentWidth, {10.0, false, false, kGrey}) + 10);
  if (!c.not_enforceable) {
    return;
  }
  std::string banner = "不可用于处罚 NOT ENFORCEABLE";
  std::string why = "未通过的条件 failed conditions: ";
  for (std::size_t i = 0; i < c.reasons.size(); ++i) {
    why += (i > 0 ? "；" : "") + c.reasons[i];
  }
  const double h = w.measure(banner, kContentWidth - 16, {16.0, true}) +
                   w.measure(why, kContentWidth - 16, {10.0, false}) + 16;
  cairo_set_source_rgb(w.cr(), kRed.r, kRed.g, kRed.b);
  cairo_rectangle(w.cr(), kMargin, w.y(), kContentWidth, h);
  cairo_fill(w.cr());
  w.advance(8);
  w.advance(w.text(banner, kMargin + 8, kContentWidth - 16, {16.0, true, false, kWhite}));
  w.advance(w.text(why, kMargin + 8, kContentWidth - 16, {10.0, false, false, kWhite}) + 18);
}

void row(SheetWriter& w, const std::string& label, const std::string& value, Colour value_colour = kBlack) {
  const double value_width = kContentWidth - kLabelWidth;
  const double h =
      std::max(w.measure(label, kLabelWidth - 6, {9.0, true}), w.measure(value, value_width, {9.0, false}));
  w.need(h + 3);
  w.text(label, kMargin, kLabelWidth - 6, {9.0, true, false, kGrey});
  w.text(value, kMargin + kLabelWidth, value_width, {9.0, false, false, value_colour});
  w.advance(h + 3);
}

void section_title(SheetWriter& w, const std::string& title) {
  w.need(40);
  w.advance(6);
  w.advance(w.text(title, kMargin, kContentWidth, {12.0, true}) + 2);
  cairo_set_source_rgb(w.cr(), kGrey.r, kGrey.g, kGrey.b);
  cairo_set_line_width(w.cr(), 0.5);
  cairo_move_to(w.cr(), kMargin, w.y());
  cairo_line_to(w.cr(), kMargin + kContentWidth, w.y());
  cairo_stroke(w.cr());
  w.advance(4);
}

// The picture's pixels (for viewers that need them) with its original JPEG attached as MIME data, which the
// PDF surface embeds as is. nullptr, with `why`, when libturbojpeg cannot decode it or it is too large.
cairo_surface_t* picture_surface(const std::string& jpeg, std::string& why) {
  tjhandle tj = tjInitDecompress();
  int width = 0;
  int height = 0;
  int subsampling = 0;
  int colourspace = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(jpeg.data());
  const auto size = static_cast<unsigned long>(jpeg.size());
  cairo_surface_t* surface = nullptr;
  if (tjDecompressHeader3(tj, data, size, &width, &height, &subsampling, &colourspace) != 0) {
    why = std::string("not decodable: ") + tjGetErrorStr2(tj);
  } else if (width <= 0 || height <= 0 || static_cast<long long>(width) * height > kMaxPicturePixels) {
    why = "too large to show: " + std::to_string(width) + " x " + std::to_string(height);
  } else {
    surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
    cairo_surface_flush(surface);
    if (tjDecompress2(tj, data, size, cairo_image_surface_get_data(surface), width,
                      cairo_image_surface_get_stride(surface), height, TJPF_BGRX, 0) != 0) {
      why = std::string("not decodable: ") + tjGetErrorStr2(tj);
      cairo_surface_destroy(surface);
      surface = nullptr;
    } else {
      cairo_surface_mark_dirty(surface);
      auto* copy = static_cast<unsigned char*>(std::malloc(jpeg.size()));  // owned by cairo from here
      std::memcpy(copy, jpeg.data(), jpeg.size());
      cairo_surface_set_mime_data(surface, CAIRO_MIME_TYPE_JPEG, copy, jpeg.size(), std::free, copy);
    }
  }
  tjDestroy(tj);
  return surface;
}

void picture(SheetWriter& w, const SheetPicture& p, const std::map<std::string, std::string>& pictures) {
  const std::string caption = p.caption + "\nSHA-256 " + p.sha256;
  const double caption_h = w.measure(caption, kContentWidth, {8.0, false});
  const auto it = pictures.find(p.sha256);
  std::string why = "图片文件缺失 picture file missing";
  cairo_surface_t* surface = it == pictures.end() ? nullptr : picture_surface(it->second, why);
  double h = 40;
  double scale = 1;
  if (surface != nullptr) {
    const double pw = cairo_image_surface_get_width(surface);
    const double ph = cairo_image_surface_get_height(surface);
    scale = std::min(kContentWidth / pw, kMaxPictureHeight / ph);
    h = ph * scale;
  }
  w.need(h + caption_h + 12);
  if (surface != nullptr) {
    cairo_save(w.cr());
    cairo_translate(w.cr(), kMargin, w.y());
    cairo_scale(w.cr(), scale, scale);
    cairo_set_source_surface(w.cr(), surface, 0, 0);
    cairo_paint(w.cr());
    cairo_restore(w.cr());
    cairo_surface_destroy(surface);
  } else {
    cairo_set_source_rgb(w.cr(), kRed.r, kRed.g, kRed.b);
    cairo_rectangle(w.cr(), kMargin, w.y(), kContentWidth, h);
    cairo_stroke(w.cr());
    w.text(why, kMargin + 6, kContentWidth - 12, {9.0, false, false, kRed}, true, w.y() + 6);
  }
  w.advance(h + 2);
  w.advance(w.text(caption, kMargin, kContentWidth, {8.0, false, false, kGrey}) + 10);
}

// The QR code at the cursor, `module` points per module with a 4-module quiet zone; its side, or 0.
double qr_code(SheetWriter& w, const std::string& text, double module) {
  std::unique_ptr<QRcode, decltype(&QRcode_free)> qr(
      QRcode_encodeString(text.c_str(), 0, QR_ECLEVEL_M, QR_MODE_8, 1), &QRcode_free);
  if (!qr) {
    return 0;
  }
  const double side = (qr->width + 8) * module;
  w.need(side);
  cairo_set_source_rgb(w.cr(), 0, 0, 0);
  for (int y = 0; y < qr->width; ++y) {
    for (int x = 0; x < qr->width; ++x) {
      if ((qr->data[y * qr->width + x] & 1) != 0) {
        cairo_rectangle(w.cr(), kMargin + (x + 4) * module, w.y() + (y + 4) * module, module, module);
      }
    }
  }
  cairo_fill(w.cr());
  return side;
}

void verification(SheetWriter& w, const SheetContent& c) {
  section_title(w, "核验 Verification");
  w.need(200);
  const double side = qr_code(w, c.qr_text, 2.2);
  const double x = kMargin + side + 10;
  double y = w.y() + 8;
  y += w.text("二维码内容 The QR code holds:", x, kContentWidth - side - 10, {9.0, true}, true, y);
  y += w.text(c.qr_text, x, kContentWidth - side - 10, {8.0, false, true}, true, y) + 6;
  y += w.text(
      "以网关公钥离线核验签名 Verify the signature offline with the gateway's public key "
      "(checkpointctl pubkey; Ed25519, RFC 8037):",
      x, kContentWidth - side - 10, {8.5, false}, true, y);
  w.advance(std::max(side, y - w.y()) + 6);
  for (const auto& line : c.verify_commands) {
    const double h = w.measure(line, kContentWidth, {7.5, false, true});
    w.need(h + 2);
    w.advance(w.text(line, kMargin, kContentWidth, {7.5, false, true}) + 2);
  }
}

// pango's default font map and fontconfig keep process-wide caches for the process's life: released once the
// PDF is written (every cairo and pango object gone), so a leak checker (make sanitize) sees none of them.
void release_font_caches() {
  pango_cairo_font_map_set_default(nullptr);
  cairo_debug_reset_static_data();
  FcFini();
}

std::string write_sheet(const SheetContent& content, const std::map<std::string, std::string>& pictures,
                        const std::string& path) {
  SheetWriter w(path, content);
  title_block(w, content);
  for (const auto& section : content.sections) {
    section_title(w, section.title);
    for (const auto& r : section.rows) {
      row(w, r.label, r.value);
    }
  }
  if (!content.checks.empty()) {
    section_title(w, "有效性检查 Validity checks");
    for (const auto& check : content.checks) {
      const std::string outcome = (check.ok ? "通过 pass" : "未通过 FAILED") +
                                  (check.detail.empty() ? std::string() : "  (" + check.detail + ")");
      row(w, check.label, outcome, check.ok ? kGreen : kRed);
    }
  }
  if (!content.pictures.empty()) {
    section_title(w, "图片 Pictures");
    for (const auto& p : content.pictures) {
      picture(w, p, pictures);
    }
  }
  verification(w, content);
  return w.finish();
}

}  // namespace

std::string render_sheet_pdf(const SheetContent& content, const std::map<std::string, std::string>& pictures,
                             const std::string& path) {
  std::string error = write_sheet(content, pictures, path);
  release_font_caches();
  return error;
}

}  // namespace cpd::ctl
