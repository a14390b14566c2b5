// MultipartParser: the camera's multipart/mixed alert stream split into parts, pure and fuzzable.
// Bytes may be cut anywhere; Content-Length is authoritative; bad parts are counted and skipped.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cpd::adapters {

struct MultipartPart {
  std::string content_type;  // as sent, e.g. application/xml; charset="UTF-8"
  std::string file_name;     // from Content-Disposition filename=, empty when absent
  std::string body;
};

enum class MultipartError : std::uint8_t {
  kHeaderTooLarge,    // no blank line within the header bound
  kPartTooLarge,      // Content-Length (or the body without one) above the part bound
  kBadContentLength,  // not a decimal number
  kBadHeader,         // a header line without a colon (the line is ignored)
  kBadDelimiter,      // after a part with a length, something other than CRLF and a boundary line
  kTruncated,         // the stream ended (reset) inside a part
};
inline constexpr std::size_t kMultipartErrorCount = 6;
std::string_view multipart_error_name(MultipartError e);

// The boundary parameter of a multipart Content-Type (quoted or not); nullopt if not multipart or absent.
std::optional<std::string> multipart_boundary(std::string_view content_type);

class MultipartParser {
 public:
  struct Limits {
    std::size_t max_header_bytes = 8 * 1024;
    std::size_t max_part_bytes = 8 * 1024 * 1024;
  };
  struct Counters {
    std::uint64_t parts = 0;
    std::uint64_t noise_bytes = 0;  // bytes outside any part that were not delimiters
    std::array<std::uint64_t, kMultipartErrorCount> errors{};
  };

  explicit MultipartParser(std::string boundary) : MultipartParser(std::move(boundary), Limits{}) {}
  MultipartParser(std::string boundary, Limits limits);

  // Appends every part completed by these bytes to `out`.
  void feed(std::string_view bytes, std::vector<MultipartPart>& out);
  // The stream was cut: a part in progress is dropped (counted as truncated); the next bytes start afresh.
  void reset();

  const Counters& counters() const { return counters_; }
  const std::string& boundary() const { return boundary_; }

 private:
  enum class State { kSeekBoundary, kHeaders, kBodyWithLength, kBodyToBoundary };

  bool step(std::vector<MultipartPart>& out);  // false: needs more bytes
  bool seek_boundary();
  bool read_headers();
  // A part's header block: the headers read into part_, what its Content-Length says.
  struct DeclaredLength {
    std::optional<std::uint64_t> length;
    bool bad = false;  // present but not a decimal number
  };
  DeclaredLength parse_part_headers(std::string_view block);
  // After the header block: the body by its length, to the boundary, or the part refused.
  void start_body(const DeclaredLength& declared);
  bool read_body_with_length(std::vector<MultipartPart>& out);
  bool read_body_to_boundary(std::vector<MultipartPart>& out);
  void count(MultipartError e) { ++counters_.errors[static_cast<std::size_t>(e)]; }
  void finish_part(std::vector<MultipartPart>& out);
  void consume(std::size_t n) { pos_ += n; }
  std::string_view pending() const { return std::string_view(buf_).substr(pos_); }

  std::string boundary_;
  std::string dash_boundary_;  // "--" + boundary
  std::string delimiter_;      // "\r\n--" + boundary (ends a part without a length)
  Limits limits_;
  State state_ = State::kSeekBoundary;
  std::string buf_;  // unconsumed bytes start at pos_
  std::size_t pos_ = 0;
  std::size_t scan_ = 0;       // where the search for a line end or the header end resumes (from pos_)
  bool in_long_line_ = false;  // discarding an over-long line that cannot be a boundary line
  bool after_length_body_ = false;
  MultipartPart part_;
  std::size_t body_remaining_ = 0;
  Counters counters_;
};

}  // namespace cpd::adapters
