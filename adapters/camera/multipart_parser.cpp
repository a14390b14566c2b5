// The multipart/mixed stream parser: a small state machine over a byte buffer. A part with a
// Content-Length is taken by count (JPEG data may contain the boundary); one without ends at CRLF--boundary.
#include "adapters/camera/multipart_parser.h"

#include <algorithm>
#include <cctype>

#include "adapters/camera/ascii.h"

namespace cpd::adapters {
namespace {

constexpr std::size_t kMaxBoundaryLinePadding = 256;  // transport padding allowed after a boundary line
constexpr std::size_t kCompactAt = 64 * 1024;         // consumed bytes dropped from the buffer past this

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// The value of parameter `name` in "type; a=b; name="value"" (quoted-string or token).
std::optional<std::string> header_param(std::string_view value, std::string_view name) {
  std::size_t i = value.find(';');
  while (i != std::string_view::npos) {
    std::string_view rest = trim(value.substr(i + 1));
    const std::size_t eq = rest.find('=');
    const std::size_t semi = rest.find(';');
    if (eq != std::string_view::npos && (semi == std::string_view::npos || eq < semi)) {
      const std::string_view key = trim(rest.substr(0, eq));
      std::string_view v = trim(rest.substr(eq + 1));
      if (iequals(key, name)) {
        if (!v.empty() && v.front() == '"') {
          std::string out;
          for (std::size_t k = 1; k < v.size(); ++k) {
            if (v[k] == '\\' && k + 1 < v.size()) {
              out += v[++k];
            } else if (v[k] == '"') {
              return out;
            } else {
              out += v[k];
            }
          }
          return std::nullopt;  // unterminated quote
        }
        const std::size_t end = v.find_first_of("; \t");
        return std::string(v.substr(0, end));
      }
    }
    // Skip to the next ';' that is not inside quotes.
    bool quoted = false;
    std::size_t k = i + 1;
    for (; k < value.size(); ++k) {
      if (value[k] == '"') {
        quoted = !quoted;
      } else if (value[k] == ';' && !quoted) {
        break;
      }
    }
    i = k < value.size() ? k : std::string_view::npos;
  }
  return std::nullopt;
}

}  // namespace

std::string_view multipart_error_name(MultipartError e) {
  switch (e) {
    case MultipartError::kHeaderTooLarge:
      return "header_too_large";
    case MultipartError::kPartTooLarge:
      return "part_too_large";
    case MultipartError::kBadContentLength:
      return "bad_content_length";
    case MultipartError::kBadHeader:
      return "bad_header";
    case MultipartError::kBadDelimiter:
      return "bad_delimiter";
    case MultipartError::kTruncated:
      return "truncated";
  }
  return "unknown";
}

std::optional<std::string> multipart_boundary(std::string_view content_type) {
  const std::string_view type = trim(content_type.substr(0, content_type.find(';')));
  if (lower(type).rfind("multipart/", 0) != 0) {
    return std::nullopt;
  }
  auto b = header_param(content_type, "boundary");
  if (!b || b->empty() || b->size() > 200) {
    return std::nullopt;
  }
  return b;
}

MultipartParser::MultipartParser(std::string boundary, Limits limits)
    : boundary_(std::move(boundary)),
      dash_boundary_("--" + boundary_),
      delimiter_("\r\n--" + boundary_),
      limits_(limits) {}

void MultipartParser::feed(std::string_view bytes, std::vector<MultipartPart>& out) {
  if (pos_ >= kCompactAt || pos_ == buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  if (state_ == State::kBodyWithLength && pos_ == buf_.size()) {
    // The common case for pictures: bytes go straight into the part, not through the buffer.
    const std::size_t n = std::min(body_remaining_, bytes.size());
    part_.body.append(bytes.substr(0, n));
    body_remaining_ -= n;
    bytes.remove_prefix(n);
    if (body_remaining_ == 0) {
      finish_part(out);
      state_ = State::kSeekBoundary;
      after_length_body_ = true;
    }
  }
  buf_.append(bytes);
  while (step(out)) {
  }
}

void MultipartParser::reset() {
  if (state_ != State::kSeekBoundary) {
    count(MultipartError::kTruncated);
  }
  state_ = State::kSeekBoundary;
  buf_.clear();
  pos_ = 0;
  scan_ = 0;
  in_long_line_ = false;
  after_length_body_ = false;
  part_ = MultipartPart{};
  body_remaining_ = 0;
}

bool MultipartParser::step(std::vector<MultipartPart>& out) {
  switch (state_) {
    case State::kSeekBoundary:
      return seek_boundary();
    case State::kHeaders:
      return read_headers();
    case State::kBodyWithLength:
      return read_body_with_length(out);
    case State::kBodyToBoundary:
      return read_body_to_boundary(out);
  }
  return false;
}

void MultipartParser::finish_part(std::vector<MultipartPart>& out) {
  ++counters_.parts;
  out.push_back(std::move(part_));
  part_ = MultipartPart{};
}

bool MultipartParser::seek_boundary() {
  const std::string_view p = pending();
  const std::size_t nl = p.find('\n', scan_);
  if (nl == std::string_view::npos) {
    if (p.size() > dash_boundary_.size() + 2 + kMaxBoundaryLinePadding) {
      // Too long for a boundary line: drop it, and the rest of it when its end arrives.
      counters_.noise_bytes += p.size();
      consume(p.size());
      in_long_line_ = true;
      scan_ = 0;
    } else {
      scan_ = p.size();
    }
    return false;
  }
  const std::string_view raw_line = p.substr(0, nl);
  const std::string_view line = trim(raw_line);
  consume(nl + 1);
  scan_ = 0;
  if (in_long_line_) {
    in_long_line_ = false;
    counters_.noise_bytes += nl + 1;
    return true;
  }
  // A boundary line starts in column 0; only trailing padding is tolerated.
  const bool starts_clean = !raw_line.empty() && raw_line.front() == '-';
  if (starts_clean && line == dash_boundary_) {
    after_length_body_ = false;
    part_ = MultipartPart{};
    state_ = State::kHeaders;
    return true;
  }
  if (starts_clean && line.size() == dash_boundary_.size() + 2 &&
      line.substr(0, dash_boundary_.size()) == dash_boundary_ && line.substr(dash_boundary_.size()) == "--") {
    after_length_body_ = false;  // close delimiter: the camera may still go on with a new body
    return true;
  }
  if (line.empty() && raw_line.size() <= 1) {
    return true;  // the CRLF that ends a part's data, or a stray blank line
  }
  if (after_length_body_) {
    // A part's data did not end where its Content-Length said: its length was wrong.
    count(MultipartError::kBadDelimiter);
    after_length_body_ = false;
  }
  counters_.noise_bytes += nl + 1;
  return true;
}

bool MultipartParser::read_headers() {
  const std::string_view p = pending();
  while (true) {
    const std::size_t nl = p.find('\n', scan_);
    if (nl == std::string_view::npos) {
      if (p.size() > limits_.max_header_bytes) {
        break;
      }
      return false;  // scan_ stays at the start of the unfinished line
    }
    std::string_view line = p.substr(scan_, nl - scan_);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (!line.empty()) {
      scan_ = nl + 1;
      if (scan_ > limits_.max_header_bytes) {
        break;
      }
      continue;
    }
    // The blank line: the header block is p[0, scan_).
    const DeclaredLength declared = parse_part_headers(p.substr(0, scan_));
    consume(nl + 1);
    scan_ = 0;
    start_body(declared);
    return true;
  }
  // No blank line within the bound: resync on the next boundary line, scanning these same bytes.
  count(MultipartError::kHeaderTooLarge);
  part_ = MultipartPart{};
  scan_ = 0;
  state_ = State::kSeekBoundary;
  return true;
}

MultipartParser::DeclaredLength MultipartParser::parse_part_headers(std::string_view block) {
  DeclaredLength declared;
  std::size_t start = 0;
  while (start < block.size()) {
    std::size_t end = block.find('\n', start);
    if (end == std::string_view::npos) {
      end = block.size();
    }
    const std::string_view h = trim(block.substr(start, end - start));
    start = end + 1;
    if (h.empty()) {
      continue;
    }
    const std::size_t colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      count(MultipartError::kBadHeader);
      continue;
    }
    const std::string_view name = trim(h.substr(0, colon));
    const std::string_view value = trim(h.substr(colon + 1));
    if (iequals(name, "Content-Type")) {
      part_.content_type = std::string(value);
    } else if (iequals(name, "Content-Length")) {
      const bool digits =
          !value.empty() && value.size() <= 18 &&
          std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits) {
        declared.bad = true;
      } else {
        declared.length = std::stoull(std::string(value));
      }
    } else if (iequals(name, "Content-Disposition")) {
      if (auto f = header_param(value, "filename")) {
        part_.file_name = std::move(*f);
      }
    }
  }
  return declared;
}

void MultipartParser::start_body(const DeclaredLength& declared) {
  if (declared.bad) {
    count(MultipartError::kBadContentLength);
    part_ = MultipartPart{};
    state_ = State::kSeekBoundary;
    return;
  }
  if (!declared.length) {
    state_ = State::kBodyToBoundary;
    return;
  }
  if (*declared.length > limits_.max_part_bytes) {
    count(MultipartError::kPartTooLarge);
    part_ = MultipartPart{};
    state_ = State::kSeekBoundary;
    return;
  }
  body_remaining_ = static_cast<std::size_t>(*declared.length);
  part_.body.reserve(body_remaining_);
  state_ = State::kBodyWithLength;
}

bool MultipartParser::read_body_with_length(std::vector<MultipartPart>& out) {
  const std::string_view p = pending();
  const std::size_t n = std::min(body_remaining_, p.size());
  part_.body.append(p.substr(0, n));
  consume(n);
  body_remaining_ -= n;
  if (body_remaining_ > 0) {
    return false;
  }
  finish_part(out);
  state_ = State::kSeekBoundary;
  after_length_body_ = true;
  return true;
}

bool MultipartParser::read_body_to_boundary(std::vector<MultipartPart>& out) {
  const std::string_view p = pending();
  const std::size_t at = p.find(delimiter_, scan_);
  if (at != std::string_view::npos) {
    part_.body.append(p.substr(0, at));
    consume(at + 2);  // the CRLF belongs to the delimiter; "--boundary" is left for seek_boundary()
    scan_ = 0;
    if (part_.body.size() > limits_.max_part_bytes) {
      count(MultipartError::kPartTooLarge);
      part_ = MultipartPart{};
    } else {
      finish_part(out);
    }
    state_ = State::kSeekBoundary;
    after_length_body_ = false;
    return true;
  }
  // Keep a tail that may be the start of a delimiter cut by this read.
  const std::size_t keep = delimiter_.size() - 1;
  if (p.size() > keep) {
    const std::size_t take = p.size() - keep;
    part_.body.append(p.substr(0, take));
    consume(take);
  }
  scan_ = 0;
  if (part_.body.size() > limits_.max_part_bytes) {
    count(MultipartError::kPartTooLarge);
    part_ = MultipartPart{};
    state_ = State::kSeekBoundary;
    return true;
  }
  return false;
}

}  // namespace cpd::adapters
