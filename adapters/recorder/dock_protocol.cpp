// The docking station's JSON answers, checked member by member into DockStatus / DockListing, and its
// request targets. Untrusted input: nothing here throws or aborts; every rejection names the field.
#include "adapters/recorder/dock_protocol.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/camera/isapi_xml.h"

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

// Validates syntax with the position of the first error, and bounds the nesting depth; the DOM is built
// only after this passes.
class SyntaxCheck final : public json::json_sax_t {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return enter(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return leave(); }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override { return leave(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    position_ = position;
    return false;
  }

  std::optional<Failure> failure() const {
    if (too_deep_) {
      return Failure{"bounds", "nested deeper than " + std::to_string(kMaxDepth) + " levels"};
    }
    if (position_) {
      return Failure{"json", "not valid JSON (at byte " + std::to_string(*position_) + ")"};
    }
    return std::nullopt;
  }

 private:
  bool enter() {
    if (++depth_ > kMaxDepth) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  bool leave() {
    --depth_;
    return true;
  }

  int depth_ = 0;
  bool too_deep_ = false;
  std::optional<std::size_t> position_;
};

// Parses a whole answer into `out` or says why not.
std::optional<Failure> parse_json(std::string_view body, json& out) {
  if (body.size() > kDockMaxJsonBytes) {
    return Failure{"bounds", "answer of " + std::to_string(body.size()) + " bytes exceeds " +
                                 std::to_string(kDockMaxJsonBytes)};
  }
  SyntaxCheck check;
  const bool ok = json::sax_parse(body, &check, json::input_format_t::json, true);
  if (auto f = check.failure()) {
    return f;
  }
  if (!ok) {
    return Failure{"json", "not valid JSON"};
  }
  out = json::parse(body, nullptr, false);
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
  if (auto f = parse_json(body, doc)) {
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
  json doc;
  if (auto f = parse_json(body, doc)) {
    return failed<DockListing>(std::move(*f));
  }
  if (!doc.is_object()) {
    return failed<DockListing>({"schema", "listing: expected an object, got " + quote(doc)});
  }
  ObjectReader r(doc, "");
  DockListing listing;
  const json* files = r.array("files", kDockMaxFiles);
  listing.next = r.text("next");
  if (!r.ok()) {
    return failed<DockListing>(r.failure());
  }
  listing.files.resize(files->size());
  for (std::size_t i = 0; i < files->size(); ++i) {
    if (auto f = read_file((*files)[i], "files[" + std::to_string(i) + "]", listing.files[i])) {
      return failed<DockListing>(std::move(*f));
    }
  }
  DockParsed<DockListing> out;
  out.value = std::move(listing);
  return out;
}

DockParsed<DockFile> parse_dock_file(std::string_view entry_json) {
  json doc;
  if (auto f = parse_json(entry_json, doc)) {
    return failed<DockFile>(std::move(*f));
  }
  DockFile file;
  if (auto f = read_file(doc, "", file)) {
    return failed<DockFile>(std::move(*f));
  }
  DockParsed<DockFile> out;
  out.value = std::move(file);
  return out;
}

std::string dock_error_text(std::string_view body) {
  json doc;
  if (parse_json(body, doc) || !doc.is_object()) {
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

}  // namespace cpd::adapters
