// The docking station's JSON answers, checked member by member into DockStatus / DockListing, and its
// request targets. Untrusted input: nothing here throws or aborts; every rejection names the field.
#include "adapters/recorder/dock_protocol.h"

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "adapters/common/device_time.h"
#include "daemon/core/encoding.h"

namespace cpd::adapters {

namespace {

using nlohmann::json;

// Deeper than any answer of the spec (listing > files > entry > gps > point is 4); a bound keeps the
// recursive dump() of raw_json and the DOM's size in check for hostile input.
constexpr int kMaxDepth = 32;
// /status `docked`: one entry per slot; far more than any station has.
constexpr std::size_t kMaxDocked = 1024;
// How much of an offending value an error detail quotes.
constexpr std::size_t kQuoteBytes = 64;

struct Failure {
  std::string reason;
  std::string detail;
};

// A JSON value quoted for an error detail: strings cut to kQuoteBytes (UTF-8 damage from the cut is
// replaced, never thrown), other kinds named by type.
std::string quote(const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    const bool cut = s.size() > kQuoteBytes;
    const json shown = cut ? json(s.substr(0, kQuoteBytes)) : v;
    return shown.dump(-1, ' ', false, json::error_handler_t::replace) + (cut ? "..." : "");
  }
  if (v.is_number_float()) {
    return "a fractional number";
  }
  if (v.is_number()) {
    return "a number";
  }
  return std::string(v.is_null()      ? "null"
                     : v.is_boolean() ? "a boolean"
                     : v.is_array()   ? "an array"
                                      : "an object");
}

// ---- UTF-8 ----

// Length of the well-formed UTF-8 sequence at text[i] (RFC 3629, as cpd::decode_utf8), 0 when there is
// none.
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  std::size_t next = i;
  return decode_utf8(text, next) < 0 ? 0 : next - i;
}

// Offset of the first byte that is not part of well-formed UTF-8, or npos.
std::size_t invalid_utf8_at(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_sequence(text, i);
    if (n == 0) {
      return i;
    }
    i += n;
  }
  return std::string_view::npos;
}

// The text with every byte outside well-formed UTF-8 replaced by '?': same length and offsets, and JSON
// structure untouched (such bytes are only legal inside strings), so the JSON parser, which refuses
// invalid UTF-8 anywhere, can still find each entry and the refusal stays with the entry that holds them.
std::string with_utf8_replaced(std::string_view text) {
  std::string out(text);
  for (std::size_t i = 0; i < out.size();) {
    const std::size_t n = utf8_sequence(out, i);
    if (n == 0) {
      out[i] = '?';
      ++i;
    } else {
      i += n;
    }
  }
  return out;
}

std::string hex_byte(unsigned char c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return std::string("0x") + kHex[c >> 4] + kHex[c & 0x0F];
}

// ---- syntax, depth and duplicate members ----

// Validates syntax with the position of the first error, bounds the nesting depth and finds members named
// twice (nlohmann keeps the last one silently). In a listing, depth and duplicates inside files[i] are
// that entry's problem; anywhere else (and in any other document) they fail the whole document.
class SyntaxCheck final : public json::json_sax_t {
 public:
  explicit SyntaxCheck(bool listing) : listing_(listing) {}

  bool null() override { return scalar(); }
  bool boolean(bool) override { return scalar(); }
  bool number_integer(number_integer_t) override { return scalar(); }
  bool number_unsigned(number_unsigned_t) override { return scalar(); }
  bool number_float(number_float_t, const string_t&) override { return scalar(); }
  bool string(string_t&) override { return scalar(); }
  bool binary(binary_t&) override { return scalar(); }
  bool start_object(std::size_t) override { return enter(true); }
  bool key(string_t& k) override {
    if (depth_ > levels_.size()) {
      return true;  // beyond the depth bound: already refused, names no longer tracked
    }
    Level& top = levels_.back();
    top.key = k;
    if (!top.keys.insert(k).second) {
      problem(Failure{"duplicate_key", path() + ": member named twice (JSON readers would keep only one)"});
    }
    return true;
  }
  bool end_object() override { return leave(); }
  bool start_array(std::size_t) override { return enter(false); }
  bool end_array() override { return leave(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    position_ = position;
    return false;
  }

  // A failure of the whole document: syntax, or depth/duplicates outside the entries of a listing.
  std::optional<Failure> failure() const {
    if (position_) {
      return Failure{"json", "not valid JSON (at byte " + std::to_string(*position_) + ")"};
    }
    return whole_;
  }
  // The first depth or duplicate problem inside files[index] of a listing.
  const Failure* entry_failure(std::size_t index) const {
    const auto it = entries_.find(index);
    return it == entries_.end() ? nullptr : &it->second;
  }

 private:
  struct Level {
    bool object = false;
    std::string key;        // object: the member being read
    std::size_t count = 0;  // array: elements started
    std::set<std::string> keys;
  };

  bool scalar() {
    value_start();
    return true;
  }

  void value_start() {
    if (!levels_.empty() && depth_ == levels_.size() && !levels_.back().object) {
      ++levels_.back().count;
    }
  }

  bool enter(bool object) {
    value_start();
    ++depth_;
    if (depth_ > static_cast<std::size_t>(kMaxDepth)) {
      if (depth_ == static_cast<std::size_t>(kMaxDepth) + 1) {
        problem(Failure{"bounds", (path().empty() ? std::string("document") : path()) +
                                      ": nested deeper than " + std::to_string(kMaxDepth) + " levels"});
      }
      return true;
    }
    levels_.push_back(Level{object, {}, 0, {}});
    return true;
  }

  bool leave() {
    if (depth_ == levels_.size()) {
      levels_.pop_back();
    }
    --depth_;
    return true;
  }

  // "files[3].gps[0].t": the member or element being read.
  std::string path() const {
    std::string p;
    for (const auto& l : levels_) {
      if (l.object) {
        p += (p.empty() ? "" : ".") + l.key;
      } else if (l.count > 0) {
        p += "[" + std::to_string(l.count - 1) + "]";
      }
    }
    return p;
  }

  void problem(Failure f) {
    // Inside files[i]: the root object's member "files", an array, and a value within it.
    if (listing_ && levels_.size() >= 2 && depth_ >= 3 && levels_[0].object && levels_[0].key == "files" &&
        !levels_[1].object && levels_[1].count > 0) {
      const std::size_t index = levels_[1].count - 1;
      if (index < kDockMaxFiles) {  // beyond it the listing fails its entry bound anyway
        entries_.try_emplace(index, std::move(f));
      }
      return;
    }
    if (!whole_) {
      whole_ = std::move(f);
    }
  }

  bool listing_;
  std::vector<Level> levels_;  // at most kMaxDepth
  std::size_t depth_ = 0;      // containers open
  std::optional<std::size_t> position_;
  std::optional<Failure> whole_;
  std::map<std::size_t, Failure> entries_;
};

// ---- positions in a text already checked to be JSON ----

struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;  // one past the last byte
  std::size_t size() const { return end - begin; }
};

bool is_json_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

std::size_t skip_space(std::string_view s, std::size_t i) {
  while (i < s.size() && is_json_space(s[i])) {
    ++i;
  }
  return i;
}

// i at the opening quote; returns the offset past the closing one.
std::size_t string_end(std::string_view s, std::size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return s.size();
}

// The offset past the value starting at i. Iterative: depth is not bounded here.
std::size_t value_end(std::string_view s, std::size_t i) {
  if (i >= s.size()) {
    return s.size();
  }
  if (s[i] == '"') {
    return string_end(s, i);
  }
  if (s[i] == '{' || s[i] == '[') {
    std::size_t depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = string_end(s, i);
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return s.size();
  }
  while (i < s.size() && s[i] != ',' && s[i] != ']' && s[i] != '}' && !is_json_space(s[i])) {
    ++i;
  }
  return i;
}

struct MemberSpan {
  Span key;  // with the quotes
  Span value;
};

// The members of the object whose '{' is at `at`.
std::vector<MemberSpan> members_of(std::string_view s, std::size_t at) {
  std::vector<MemberSpan> out;
  std::size_t i = skip_space(s, at + 1);
  while (i < s.size() && s[i] == '"') {
    MemberSpan m;
    m.key = {i, string_end(s, i)};
    i = skip_space(s, m.key.end) + 1;  // past ':'
    i = skip_space(s, i);
    m.value = {i, value_end(s, i)};
    out.push_back(m);
    i = skip_space(s, m.value.end);
    if (i < s.size() && s[i] == ',') {
      i = skip_space(s, i + 1);
    }
  }
  return out;
}

// The elements of the array whose '[' is at `at`; `count` gets all of them, at most `keep` are returned.
std::vector<Span> elements_of(std::string_view s, std::size_t at, std::size_t keep, std::size_t& count) {
  std::vector<Span> out;
  count = 0;
  std::size_t i = skip_space(s, at + 1);
  while (i < s.size() && s[i] != ']') {
    const Span e{i, value_end(s, i)};
    if (count++ < keep) {
      out.push_back(e);
    }
    i = skip_space(s, e.end);
    if (i < s.size() && s[i] == ',') {
      i = skip_space(s, i + 1);
    }
  }
  return out;
}

// A string token's value. `token` must be well-formed JSON apart from bytes outside UTF-8, which are kept
// as they are (they can only stand between escapes, never inside one).
std::string decode_string(std::string_view token) {
  if (invalid_utf8_at(token) == std::string_view::npos) {
    const json v = json::parse(token, nullptr, false);
    return v.is_string() ? v.get<std::string>() : std::string();
  }
  std::string out;
  const std::string_view inner = token.substr(1, token.size() - 2);
  std::size_t run = 0;
  for (std::size_t i = 0; i <= inner.size();) {
    const std::size_t n = i < inner.size() ? utf8_sequence(inner, i) : 0;
    if (n > 0) {
      i += n;
      continue;
    }
    const json v = json::parse("\"" + std::string(inner.substr(run, i - run)) + "\"", nullptr, false);
    if (v.is_string()) {
      out += v.get_ref<const std::string&>();
    }
    if (i < inner.size()) {
      out += inner[i];
    }
    run = ++i;
  }
  return out;
}

// A token quoted for an error detail: strings and numbers by value, containers by kind.
std::string quote_token(std::string_view clean, Span v) {
  const char c = v.size() > 0 ? clean[v.begin] : ' ';
  if (c == '{') {
    return "an object";
  }
  if (c == '[') {
    return "an array";
  }
  return quote(json::parse(clean.substr(v.begin, v.size()), nullptr, false));
}

// Which member of the object at `span` holds bytes outside UTF-8: "officerName: not valid UTF-8 (byte
// 0xB9 at offset 42)", prefixed with `path`. Offsets are within the span.
Failure not_utf8(std::string_view original, std::string_view clean, Span span, const std::string& path,
                 const std::string& whole) {
  const std::string_view raw = original.substr(span.begin, span.size());
  const std::size_t at = invalid_utf8_at(raw);
  std::string where = path.empty() ? whole : path;
  if (span.size() > 0 && clean[span.begin] == '{') {
    for (const auto& m : members_of(clean, span.begin)) {
      if (span.begin + at >= m.key.begin && span.begin + at < m.value.end) {
        const std::string key = decode_string(clean.substr(m.key.begin, m.key.size()));
        where = (path.empty() ? "" : path + ".") + key;
        if (span.begin + at < m.key.end) {
          where += " (the member name)";
        }
        break;
      }
    }
  }
  return Failure{"not_utf8", where + ": not valid UTF-8 (byte " +
                                 hex_byte(static_cast<unsigned char>(raw[at])) + " at offset " +
                                 std::to_string(at) + ")"};
}

// Parses a whole answer (status, error body) into `out` or says why not; `what` names it in details.
std::optional<Failure> parse_json(std::string_view body, json& out, const std::string& what) {
  if (body.size() > kDockMaxJsonBytes) {
    return Failure{"bounds", "answer of " + std::to_string(body.size()) + " bytes exceeds " +
                                 std::to_string(kDockMaxJsonBytes)};
  }
  const std::string clean = with_utf8_replaced(body);
  SyntaxCheck check(false);
  const bool ok = json::sax_parse(clean, &check, json::input_format_t::json, true);
  if (auto f = check.failure()) {
    return f;
  }
  if (!ok) {
    return Failure{"json", "not valid JSON"};
  }
  if (invalid_utf8_at(body) != std::string_view::npos) {
    return not_utf8(body, clean, Span{skip_space(clean, 0), clean.size()}, "", what);
  }
  out = json::parse(clean, nullptr, false);
  if (out.is_discarded()) {
    return Failure{"json", "not valid JSON"};  // cannot happen after the SAX pass; checked all the same
  }
  return std::nullopt;
}

// Reads the members of one JSON object with field paths for errors; the first failure sticks and every
// later read becomes a no-op, so the callers read straight through and check once.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  bool ok() const { return !failure_.has_value(); }
  const Failure& failure() const { return *failure_; }

  std::string field(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  void fail(std::string reason, std::string_view key, const std::string& what) {
    if (!failure_) {
      failure_ = Failure{std::move(reason), field(key) + ": " + what};
    }
  }

  // The member, or nullptr (and a failure when required).
  const json* member(std::string_view key, bool required) {
    if (failure_) {
      return nullptr;
    }
    const auto it = object_.find(key);
    if (it == object_.end()) {
      if (required) {
        fail("schema", key, "missing");
      }
      return nullptr;
    }
    return &*it;
  }

  std::string text(std::string_view key, bool required = true) {
    const json* v = member(key, required);
    if (v == nullptr) {
      return {};
    }
    if (!v->is_string()) {
      fail("schema", key, "expected a string, got " + quote(*v));
      return {};
    }
    const auto& s = v->get_ref<const std::string&>();
    if (s.size() > kDockMaxText) {
      fail("bounds", key,
           "string of " + std::to_string(s.size()) + " bytes exceeds " + std::to_string(kDockMaxText));
      return {};
    }
    return s;
  }

  std::optional<std::int64_t> integer(std::string_view key, std::int64_t lo, std::int64_t hi,
                                      bool required = true) {
    const json* v = member(key, required);
    if (v == nullptr) {
      return std::nullopt;
    }
    // Fractions and integers beyond 64 bits (parsed as floats) are both "not an integer".
    if (!v->is_number_integer()) {
      fail("schema", key, "expected an integer, got " + quote(*v));
      return std::nullopt;
    }
    std::int64_t n = 0;
    if (v->is_number_unsigned()) {
      const auto u = v->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail("bounds", key, "integer " + std::to_string(u) + " is out of range");
        return std::nullopt;
      }
      n = static_cast<std::int64_t>(u);
    } else {
      n = v->get<std::int64_t>();
    }
    if (n < lo) {
      fail("schema", key, "must be at least " + std::to_string(lo) + ", got " + std::to_string(n));
      return std::nullopt;
    }
    if (n > hi) {
      fail("bounds", key, "must be at most " + std::to_string(hi) + ", got " + std::to_string(n));
      return std::nullopt;
    }
    return n;
  }

  bool boolean(std::string_view key) {
    const json* v = member(key, true);
    if (v == nullptr) {
      return false;
    }
    if (!v->is_boolean()) {
      fail("schema", key, "expected true or false, got " + quote(*v));
      return false;
    }
    return v->get<bool>();
  }

  // An ISO 8601 instant with offset; `as_sent` keeps the text.
  std::optional<IsoTime> time(std::string_view key, std::string& as_sent) {
    as_sent = text(key);
    if (!ok()) {
      return std::nullopt;
    }
    auto t = parse_iso8601(as_sent);
    if (!t) {
      fail("schema", key, "expected an ISO 8601 time with offset, got " + quote(json(as_sent)));
    }
    return t;
  }

  // Degrees within [-limit, limit] as integer degrees x 1e7.
  std::int64_t degrees_e7(std::string_view key, double limit) {
    const json* v = member(key, true);
    if (v == nullptr) {
      return 0;
    }
    if (!v->is_number()) {
      fail("schema", key, "expected a number, got " + quote(*v));
      return 0;
    }
    const double d = v->get<double>();
    if (!std::isfinite(d) || d < -limit || d > limit) {
      fail("schema", key,
           "must be within [-" + std::to_string(static_cast<int>(limit)) + ", " +
               std::to_string(static_cast<int>(limit)) + "], got " + v->dump());
      return 0;
    }
    return std::llround(d * 1e7);
  }

  const json* array(std::string_view key, std::size_t max_items, bool required = true) {
    const json* v = member(key, required);
    if (v == nullptr) {
      return nullptr;
    }
    if (!v->is_array()) {
      fail("schema", key, "expected an array, got " + quote(*v));
      return nullptr;
    }
    if (v->size() > max_items) {
      fail("bounds", key,
           std::to_string(v->size()) + " entries exceed the limit of " + std::to_string(max_items));
      return nullptr;
    }
    return v;
  }

  void one_of(std::string_view key, const std::string& value,
              std::initializer_list<std::string_view> allowed) {
    if (!ok()) {
      return;
    }
    std::string names;
    for (const auto a : allowed) {
      if (value == a) {
        return;
      }
      names += names.empty() ? "" : ", ";
      names += a;
    }
    fail("schema", key, "expected one of " + names + ", got " + quote(json(value)));
  }

 private:
  const json& object_;
  std::string path_;
  std::optional<Failure> failure_;
};

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool is_safe_id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

// The id names a directory entry and a URL path segment: a safe component, never "." or "..".
bool is_safe_unique_id(std::string_view id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") {
    return false;
  }
  for (const char c : id) {
    if (!is_safe_id_char(c)) {
      return false;
    }
  }
  return true;
}

std::optional<Failure> read_gps(ObjectReader& entry, const json& points, std::vector<GpsPoint>& out) {
  out.reserve(points.size());
  for (std::size_t i = 0; i < points.size(); ++i) {
    const std::string path = entry.field("gps") + "[" + std::to_string(i) + "]";
    const json& p = points[i];
    if (!p.is_object()) {
      return Failure{"schema", path + ": expected an object, got " + quote(p)};
    }
    ObjectReader r(p, path);
    GpsPoint g;
    const auto t = r.time("t", g.t);
    g.lat_e7 = r.degrees_e7("lat", 90.0);
    g.lon_e7 = r.degrees_e7("lon", 180.0);
    if (!r.ok()) {
      return r.failure();
    }
    g.t_ms = t->unix_ms;
    out.push_back(std::move(g));
  }
  return std::nullopt;
}

// One listing entry; `path` is "files[i]" inside a listing, "" on its own.
std::optional<Failure> read_file(const json& entry, const std::string& path, DockFile& f) {
  if (!entry.is_object()) {
    return Failure{
        "schema", (path.empty() ? std::string("entry") : path) + ": expected an object, got " + quote(entry)};
  }
  ObjectReader r(entry, path);
  f.unique_id = r.text("uniqueId");
  if (r.ok() && !is_safe_unique_id(f.unique_id)) {
    r.fail("schema", "uniqueId",
           "expected 1 to 128 of [A-Za-z0-9._-] (not \".\" or \"..\"), got " + quote(json(f.unique_id)));
  }
  f.recorder_id = r.text("deviceId");
  f.officer_id = r.text("officerId");
  f.officer_name = r.text("officerName");
  f.case_code = r.text("caseCode");
  f.file_name = r.text("fileName");
  f.file_type = r.text("fileType");
  r.one_of("fileType", f.file_type, {"video", "audio", "photo"});
  f.format = r.text("format");
  r.one_of("format", f.format, {"mp4", "wav", "jpg"});
  f.length = r.integer("length", 0, kDockMaxFileBytes).value_or(0);
  f.md5 = r.text("md5");
  if (r.ok()) {
    const std::string as_sent = f.md5;
    bool hex = f.md5.size() == 32;
    for (char& c : f.md5) {
      hex = hex && is_hex(c);
      if (c >= 'A' && c <= 'F') {
        c = static_cast<char>(c - 'A' + 'a');
      }
    }
    if (!hex) {
      r.fail("schema", "md5", "expected 32 hex digits, got " + quote(json(as_sent)));
    }
  }
  const auto start = r.time("startTime", f.start_time);
  const auto end = r.time("endTime", f.end_time);
  const auto collect = r.time("collectTime", f.collect_time);
  f.important = r.boolean("important");
  // gps is optional: a recorder without a fix (or an audio-only one) lists none.
  const json* gps = r.array("gps", kDockMaxGpsPoints, false);
  if (!r.ok()) {
    return r.failure();
  }
  f.start_ms = start->unix_ms;
  f.end_ms = end->unix_ms;
  f.collect_ms = collect->unix_ms;
  if (gps != nullptr) {
    if (auto failure = read_gps(r, *gps, f.gps)) {
      return failure;
    }
  }
  // Compact and UTF-8 as is; strings were validated as UTF-8 by the parser, so dump() cannot throw.
  f.raw_json = entry.dump(-1, ' ', false, json::error_handler_t::replace);
  return std::nullopt;
}

template <typename T>
DockParsed<T> failed(Failure f) {
  DockParsed<T> out;
  out.error = DockParseError{std::move(f.reason), std::move(f.detail)};
  return out;
}

// One entry of a listing (or of the ledger) at `span` of the checked text: a DockFile, or why it is refused.
// `flagged` is a depth or duplicate-member problem the syntax pass found inside it.
DockParsed<DockFile> read_entry(std::string_view original, std::string_view clean, Span span,
                                const std::string& path, const Failure* flagged) {
  if (flagged != nullptr) {
    return failed<DockFile>(*flagged);
  }
  if (invalid_utf8_at(original.substr(span.begin, span.size())) != std::string_view::npos) {
    return failed<DockFile>(not_utf8(original, clean, span, path, "entry"));
  }
  const json entry = json::parse(clean.substr(span.begin, span.size()), nullptr, false);
  DockFile f;
  if (entry.is_discarded()) {
    return failed<DockFile>({"json", (path.empty() ? std::string("entry") : path) + ": not valid JSON"});
  }
  if (auto failure = read_file(entry, path, f)) {
    return failed<DockFile>(std::move(*failure));
  }
  DockParsed<DockFile> out;
  out.value = std::move(f);
  return out;
}

// The bytes and ledger key of a refused entry (see DockRefusedEntry).
DockRefusedEntry refused_entry(std::string_view original, std::string_view clean, Span span) {
  DockRefusedEntry r;
  r.raw = std::string(original.substr(span.begin, span.size()));
  std::string unique_id;
  std::string md5;
  if (span.size() > 0 && clean[span.begin] == '{') {
    for (const auto& m : members_of(clean, span.begin)) {
      const std::string_view value = original.substr(m.value.begin, m.value.size());
      if (value.empty() || value[0] != '"' || invalid_utf8_at(value) != std::string_view::npos) {
        continue;
      }
      const std::string key = decode_string(clean.substr(m.key.begin, m.key.size()));
      if (key == "uniqueId") {
        unique_id = decode_string(value);
      } else if (key == "md5") {
        md5 = decode_string(value);
      }
    }
  }
  bool md5_ok = md5.size() == 32;
  for (char& c : md5) {
    md5_ok = md5_ok && is_hex(c);
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (is_safe_unique_id(unique_id) && md5_ok) {
    r.unique_id = std::move(unique_id);
    r.md5 = std::move(md5);
  } else {
    r.unique_id = "refused-" + sha256_hex(r.raw).substr(0, 32);
  }
  return r;
}

bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// A path segment: like a query value, and "." / ".." encoded too so a segment can never climb a level.
std::string encode_segment(std::string_view id) {
  if (id == "." || id == "..") {
    return id.size() == 1 ? "%2E" : "%2E%2E";
  }
  return url_encode_query(id);
}

}  // namespace

DockParsed<DockStatus> parse_dock_status(std::string_view body) {
  json doc;
  if (auto f = parse_json(body, doc, "status")) {
    return failed<DockStatus>(std::move(*f));
  }
  if (!doc.is_object()) {
    return failed<DockStatus>({"schema", "status: expected an object, got " + quote(doc)});
  }
  ObjectReader r(doc, "");
  DockStatus s;
  s.station_id = r.text("stationId");
  s.firmware = r.text("firmware");
  const auto t = r.time("time", s.time);
  // slots, docked and freeBytes are informational (status json); a station may leave them out.
  s.slots = static_cast<int>(r.integer("slots", 0, 100000, false).value_or(0));
  if (const json* docked = r.array("docked", kMaxDocked, false)) {
    for (std::size_t i = 0; i < docked->size() && r.ok(); ++i) {
      const json& d = (*docked)[i];
      const std::string key = "docked[" + std::to_string(i) + "]";
      if (!d.is_string()) {
        r.fail("schema", key, "expected a string, got " + quote(d));
      } else if (d.get_ref<const std::string&>().size() > kDockMaxText) {
        r.fail("bounds", key, "string exceeds " + std::to_string(kDockMaxText) + " bytes");
      } else {
        s.docked.push_back(d.get<std::string>());
      }
    }
  }
  s.free_bytes = r.integer("freeBytes", 0, std::numeric_limits<std::int64_t>::max(), false).value_or(0);
  if (!r.ok()) {
    return failed<DockStatus>(r.failure());
  }
  s.time_ms = t->unix_ms;
  s.time_has_fraction = t->has_fraction;
  DockParsed<DockStatus> out;
  out.value = std::move(s);
  return out;
}

DockParsed<DockListing> parse_dock_listing(std::string_view body) {
  if (body.size() > kDockMaxJsonBytes) {
    return failed<DockListing>({"bounds", "answer of " + std::to_string(body.size()) + " bytes exceeds " +
                                              std::to_string(kDockMaxJsonBytes)});
  }
  const std::string clean = with_utf8_replaced(body);
  SyntaxCheck check(true);
  const bool ok = json::sax_parse(clean, &check, json::input_format_t::json, true);
  if (auto f = check.failure()) {
    return failed<DockListing>(std::move(*f));
  }
  if (!ok) {
    return failed<DockListing>({"json", "not valid JSON"});
  }
  // The envelope, read from the positions of its members: the entries are parsed one by one below.
  const std::size_t root = skip_space(clean, 0);
  if (clean[root] != '{') {
    return failed<DockListing>({"schema", "listing: expected an object, got " +
                                              quote_token(clean, Span{root, value_end(clean, root)})});
  }
  std::optional<Span> files;
  std::optional<Span> next;
  for (const auto& m : members_of(clean, root)) {
    const std::string key = decode_string(clean.substr(m.key.begin, m.key.size()));
    if (key == "files") {
      files = m.value;
    } else if (key == "next") {
      next = m.value;
    }
  }
  if (!files) {
    return failed<DockListing>({"schema", "files: missing"});
  }
  if (clean[files->begin] != '[') {
    return failed<DockListing>({"schema", "files: expected an array, got " + quote_token(clean, *files)});
  }
  std::size_t count = 0;
  const std::vector<Span> entries = elements_of(clean, files->begin, kDockMaxFiles, count);
  if (count > kDockMaxFiles) {
    return failed<DockListing>({"bounds", "files: " + std::to_string(count) +
                                              " entries exceed the limit of " +
                                              std::to_string(kDockMaxFiles)});
  }
  if (!next) {
    return failed<DockListing>({"schema", "next: missing"});
  }
  if (clean[next->begin] != '"') {
    return failed<DockListing>({"schema", "next: expected a string, got " + quote_token(clean, *next)});
  }
  DockListing listing;
  // The cursor is opaque: sent back percent-encoded and stored as bytes, so any bytes will do.
  listing.next = decode_string(body.substr(next->begin, next->size()));
  if (listing.next.size() > kDockMaxText) {
    return failed<DockListing>({"bounds", "next: string of " + std::to_string(listing.next.size()) +
                                              " bytes exceeds " + std::to_string(kDockMaxText)});
  }
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::string path = "files[" + std::to_string(i) + "]";
    auto entry = read_entry(body, clean, entries[i], path, check.entry_failure(i));
    if (entry.value) {
      listing.files.push_back(std::move(*entry.value));
    } else {
      DockRefusedEntry r = refused_entry(body, clean, entries[i]);
      r.index = i;
      r.error = std::move(entry.error);
      listing.refused.push_back(std::move(r));
    }
  }
  DockParsed<DockListing> out;
  out.value = std::move(listing);
  return out;
}

DockParsed<DockFile> parse_dock_file(std::string_view entry_json) {
  if (entry_json.size() > kDockMaxJsonBytes) {
    return failed<DockFile>({"bounds", "entry of " + std::to_string(entry_json.size()) + " bytes exceeds " +
                                           std::to_string(kDockMaxJsonBytes)});
  }
  const std::string clean = with_utf8_replaced(entry_json);
  SyntaxCheck check(false);
  const bool ok = json::sax_parse(clean, &check, json::input_format_t::json, true);
  if (auto f = check.failure()) {
    return failed<DockFile>(std::move(*f));
  }
  if (!ok) {
    return failed<DockFile>({"json", "not valid JSON"});
  }
  const std::size_t root = skip_space(clean, 0);
  return read_entry(entry_json, clean, Span{root, value_end(clean, root)}, "", nullptr);
}

std::string dock_error_text(std::string_view body) {
  json doc;
  if (parse_json(body, doc, "answer") || !doc.is_object()) {
    return {};
  }
  const auto it = doc.find("error");
  if (it == doc.end() || !it->is_string()) {
    return {};
  }
  std::string text = it->get<std::string>();
  if (text.size() > kDockMaxText) {
    text.resize(kDockMaxText);  // for logs and status only; a cut UTF-8 sequence does no harm there
  }
  return text;
}

std::string dock_status_target(std::string_view base_path) {
  return std::string(base_path) + "/api/v1/status";
}

std::string dock_files_target(std::string_view base_path, std::string_view cursor, int limit) {
  std::string t = std::string(base_path) + "/api/v1/files?";
  if (!cursor.empty()) {
    t += "after=" + url_encode_query(cursor) + "&";
  }
  return t + "limit=" + std::to_string(limit);
}

std::string dock_content_target(std::string_view base_path, std::string_view unique_id) {
  return std::string(base_path) + "/api/v1/files/" + encode_segment(unique_id) + "/content";
}

std::string dock_ack_target(std::string_view base_path, std::string_view unique_id) {
  return std::string(base_path) + "/api/v1/files/" + encode_segment(unique_id) + "/ack";
}

std::string dock_ack_body(std::string_view sha256_hex) {
  return json{{"sha256", std::string(sha256_hex)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string url_encode_query(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c)) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0x0F];
    }
  }
  return out;
}

std::optional<DockContentRange> parse_content_range(std::string_view s) {
  constexpr std::string_view kUnit = "bytes ";
  if (s.substr(0, kUnit.size()) != kUnit) {
    return std::nullopt;
  }
  s.remove_prefix(kUnit.size());
  auto number = [&s](char stop, std::int64_t& out) {
    std::size_t i = 0;
    out = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i < 18) {
      out = out * 10 + (s[i] - '0');
      ++i;
    }
    if (i == 0 || (stop != '\0' ? (i >= s.size() || s[i] != stop) : i != s.size())) {
      return false;
    }
    s.remove_prefix(stop != '\0' ? i + 1 : i);
    return true;
  };
  DockContentRange r;
  if (!number('-', r.from) || !number('/', r.to) || !number('\0', r.total)) {
    return std::nullopt;
  }
  return r;
}

}  // namespace cpd::adapters
