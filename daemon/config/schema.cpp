// The config schema toolkit: typed keys with ranges, enumerations and patterns, unknown- and duplicate-key
// detection, and messages that carry file:line:column. yaml-cpp gives us marks; the checking is ours.
#include "daemon/config/schema.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

#include "daemon/config/yaml_guard.h"

namespace cpd::config {

namespace {

std::string format_message(const std::string& file, int line, int column, const std::string& key,
                           const std::string& detail) {
  std::string out = file;
  if (line > 0) {
    out += ":" + std::to_string(line) + ":" + std::to_string(column);
  }
  out += ": ";
  if (!key.empty()) {
    out += key + ": ";
  }
  out += detail;
  return out;
}

// yaml-cpp marks are 0-based; an unset mark has line -1.
std::string place_of(const std::string& file, const YAML::Mark& mark) {
  if (mark.line < 0) {
    return file;
  }
  return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string join_path(const std::string& path, std::string_view key) {
  if (path.empty()) {
    return std::string(key);
  }
  return path + "." + std::string(key);
}

// The value as the user wrote it, short and printable, for "got '...'".
std::string quoted(std::string_view text) {
  constexpr std::size_t kMax = 40;
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      constexpr std::array<char, 16> kHex{'0', '1', '2', '3', '4', '5', '6', '7',
                                          '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
      out += "\\x";
      out += kHex[c >> 4U];
      out += kHex[c & 0xfU];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMax) {
    out += "...";
  }
  out += "'";
  return out;
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return quoted(node.Scalar());
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a sequence";
    default:
      return "nothing";
  }
}

template <typename T>
requires std::is_integral_v<T> std::string number_text(T v) {
  return std::to_string(v);
}

std::string number_text(double v) {
  std::array<char, 64> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  if (ec != std::errc()) {
    return std::to_string(v);
  }
  return std::string(buf.data(), end);
}

std::string range_text(const std::string& lo, const std::string& hi, bool has_lo, bool has_hi) {
  if (has_lo && has_hi) {
    return "must be between " + lo + " and " + hi;
  }
  if (has_lo) {
    return "must be at least " + lo;
  }
  return "must be at most " + hi;
}

template <typename T>
std::string list_text(const std::vector<T>& values) {
  std::string out;
  for (const auto& v : values) {
    if (!out.empty()) {
      out += ", ";
    }
    if constexpr (std::is_same_v<T, std::string>) {
      out += v;
    } else if constexpr (std::is_same_v<T, bool>) {
      out += v ? "true" : "false";
    } else {
      out += number_text(v);
    }
  }
  return out;
}

// Converts and checks one value. Returns the error detail, or an empty string when `out` was set.
std::string convert(const YAML::Node& node, const Rule<bool>& rule, bool& out) {
  static const std::set<std::string> kTrue{"true", "True", "TRUE"};
  static const std::set<std::string> kFalse{"false", "False", "FALSE"};
  if (node.IsScalar() && kTrue.count(node.Scalar()) != 0) {
    out = true;
  } else if (node.IsScalar() && kFalse.count(node.Scalar()) != 0) {
    out = false;
  } else {
    return "expected true or false, got " + describe(node);
  }
  if (!rule.one_of.empty() && std::find(rule.one_of.begin(), rule.one_of.end(), out) == rule.one_of.end()) {
    return "must be " + list_text(rule.one_of) + ", got " + describe(node);
  }
  return {};
}

template <typename T>
requires std::is_integral_v<T> std::string convert(const YAML::Node& node, const Rule<T>& rule, T& out) {
  if (!node.IsScalar()) {
    return "expected an integer, got " + describe(node);
  }
  const std::string& text = node.Scalar();
  long long value = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, value);
  const bool overflow = ec == std::errc::result_out_of_range && end == last;
  if (!overflow && (ec != std::errc() || end != last || text.empty())) {
    return "expected an integer, got " + describe(node);
  }
  const long long type_lo = static_cast<long long>(std::numeric_limits<T>::min());
  const long long type_hi = static_cast<long long>(std::numeric_limits<T>::max());
  const long long lo = rule.min ? std::max(type_lo, static_cast<long long>(*rule.min)) : type_lo;
  const long long hi = rule.max ? std::min(type_hi, static_cast<long long>(*rule.max)) : type_hi;
  const bool too_low = overflow ? text.front() == '-' : value < lo;
  const bool too_high = overflow ? text.front() != '-' : value > hi;
  if (too_low || too_high) {
    // Name the bounds the schema set, plus the type's own bound when that is the one crossed.
    const bool has_lo = rule.min.has_value() || too_low;
    const bool has_hi = rule.max.has_value() || too_high;
    return range_text(number_text(lo), number_text(hi), has_lo, has_hi) + ", got " + text;
  }
  out = static_cast<T>(value);
  if (!rule.one_of.empty() && std::find(rule.one_of.begin(), rule.one_of.end(), out) == rule.one_of.end()) {
    return "must be one of " + list_text(rule.one_of) + "; got " + text;
  }
  return {};
}

std::string convert(const YAML::Node& node, const Rule<double>& rule, double& out) {
  if (!node.IsScalar()) {
    return "expected a number, got " + describe(node);
  }
  const std::string& text = node.Scalar();
  double value = 0.0;
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(text.data(), last, value);
  if (ec != std::errc() || end != last || text.empty() || !std::isfinite(value)) {
    return "expected a number, got " + describe(node);
  }
  if ((rule.min && value < *rule.min) || (rule.max && value > *rule.max)) {
    return range_text(rule.min ? number_text(*rule.min) : "", rule.max ? number_text(*rule.max) : "",
                      rule.min.has_value(), rule.max.has_value()) +
           ", got " + text;
  }
  out = value;
  if (!rule.one_of.empty() && std::find(rule.one_of.begin(), rule.one_of.end(), out) == rule.one_of.end()) {
    return "must be one of " + list_text(rule.one_of) + "; got " + text;
  }
  return {};
}

std::string convert(const YAML::Node& node, const Rule<std::string>& rule, std::string& out) {
  if (!node.IsScalar()) {
    return "expected a string, got " + describe(node);
  }
  const std::string& text = node.Scalar();
  if (!rule.one_of.empty() && std::find(rule.one_of.begin(), rule.one_of.end(), text) == rule.one_of.end()) {
    return "must be one of " + list_text(rule.one_of) + "; got " + quoted(text);
  }
  if (!rule.pattern.empty() && !std::regex_match(text, std::regex(std::string(rule.pattern)))) {
    const std::string what =
        rule.allowed.empty() ? "match " + std::string(rule.pattern) : std::string(rule.allowed);
    return "must be " + what + ", got " + quoted(text);
  }
  out = text;
  return {};
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      const std::size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The known key a typo most likely meant, if any is close enough to be worth suggesting.
std::optional<std::string> nearest(std::string_view key, const std::vector<std::string>& known) {
  std::optional<std::string> best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& k : known) {
    const std::size_t d = edit_distance(key, k);
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  const std::size_t limit = std::max<std::size_t>(2, key.size() / 3);
  if (best && best_distance <= limit && best_distance < std::max(key.size(), best->size())) {
    return best;
  }
  return std::nullopt;
}

// Whole-document pass before any section is read: mapping keys must be plain scalars and unique, since
// yaml-cpp keeps duplicates and a lookup would silently take one. Nodes reached again through aliases are
// skipped, which also stops alias cycles and alias bombs.
class DocumentChecker {
 public:
  explicit DocumentChecker(const std::string& file) : file_(file) {}

  void check(const YAML::Node& node, const std::string& path) {
    const YAML::Mark mark = node.Mark();
    if (!visited_.insert({mark.pos, static_cast<int>(node.Type())}).second) {
      return;
    }
    if (node.IsSequence()) {
      std::size_t i = 0;
      for (const auto& item : node) {
        check(item, path + "[" + std::to_string(i) + "]");
        ++i;
      }
      return;
    }
    if (!node.IsMap()) {
      return;
    }
    std::map<std::string, YAML::Mark> seen;
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) {
        throw ConfigError(file_, key.Mark().line + 1, key.Mark().column + 1, path,
                          "keys must be plain strings, got " + describe(key));
      }
      const std::string name = key.Scalar();
      const std::string key_path = join_path(path, name);
      const auto [it, inserted] = seen.emplace(name, key.Mark());
      if (!inserted) {
        throw ConfigError(file_, key.Mark().line + 1, key.Mark().column + 1, key_path,
                          "duplicate key '" + name + "' (first at " + place_of(file_, it->second) + ")");
      }
      check(entry.second, key_path);
    }
  }

 private:
  const std::string& file_;
  std::set<std::pair<std::size_t, int>> visited_;
};

}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key, std::string detail)
    : std::runtime_error(format_message(file, line, column, key, detail)),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_(std::move(key)),
      detail_(std::move(detail)) {}

struct Section::State {
  YAML::Node node;
  std::string path;
  std::shared_ptr<LoadContext> context;
  std::vector<std::string> known;  // in the order the schema asked: the "allowed" list of messages
  std::vector<std::shared_ptr<State>> children;
};

Section::Section(std::shared_ptr<State> state) : state_(std::move(state)) {}

Section Section::root(const YAML::Node& document, std::shared_ptr<LoadContext> context) {
  const std::string& file = context->file;
  if (!document.IsDefined() || document.IsNull()) {
    throw ConfigError(file, 1, 1, "", "the file is empty; expected a mapping of sections");
  }
  if (!document.IsMap()) {
    throw ConfigError(file, document.Mark().line + 1, document.Mark().column + 1, "",
                      "expected a mapping of sections at the top level, got " + describe(document));
  }
  DocumentChecker(file).check(document, "");
  auto state = std::make_shared<State>();
  state->node = document;
  state->context = std::move(context);
  return Section(std::move(state));
}

const std::string& Section::path() const {
  return state_->path;
}

std::string Section::key_path(std::string_view key) const {
  return join_path(state_->path, key);
}

std::string Section::place() const {
  return place_of(state_->context->file, state_->node.Mark());
}

std::string Section::place(std::string_view key) const {
  return place_of(state_->context->file, mark_of(key));
}

std::pair<int, int> Section::position(std::string_view key) const {
  const YAML::Mark mark = mark_of(key);
  return mark.line < 0 ? std::pair{0, 0} : std::pair{mark.line + 1, mark.column + 1};
}

YAML::Mark Section::mark_of(std::string_view key) const {
  for (const auto& entry : state_->node) {
    if (entry.first.Scalar() == key) {
      // A null value's mark points past the key (often the next line): use the key's own place.
      const YAML::Node& at = entry.second.IsNull() ? entry.first : entry.second;
      return at.Mark();
    }
  }
  return state_->node.Mark();
}

const LoadContext& Section::context() const {
  return *state_->context;
}

YAML::Node Section::value_of(std::string_view key) {
  const std::string name(key);
  if (std::find(state_->known.begin(), state_->known.end(), name) == state_->known.end()) {
    state_->known.push_back(name);
  }
  for (const auto& entry : state_->node) {
    if (entry.first.Scalar() == key) {
      return entry.second;
    }
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

bool Section::has(std::string_view key) {
  return value_of(key).IsDefined();
}

std::string Section::raw(std::string_view key) const {
  for (const auto& entry : state_->node) {
    if (entry.first.Scalar() == key && entry.second.IsScalar()) {
      return entry.second.Scalar();
    }
  }
  return {};
}

void Section::fail_at(const YAML::Mark& mark, const std::string& key, const std::string& detail) const {
  if (mark.line < 0) {
    throw ConfigError(state_->context->file, 0, 0, key, detail);
  }
  throw ConfigError(state_->context->file, mark.line + 1, mark.column + 1, key, detail);
}

void Section::fail(std::string_view key, const std::string& detail) const {
  for (const auto& entry : state_->node) {
    if (entry.first.Scalar() == key) {
      const YAML::Node& at = entry.second.IsNull() ? entry.first : entry.second;
      fail_at(at.Mark(), key_path(key), detail);
    }
  }
  fail_at(state_->node.Mark(), key_path(key), detail);
}

void Section::fail_here(const std::string& detail) const {
  fail_at(state_->node.Mark(), state_->path, detail);
}

void Section::fail_missing(std::string_view key, std::string_view allowed) const {
  std::string detail = "missing required key '" + std::string(key) + "'";
  if (!allowed.empty()) {
    detail += " (" + std::string(allowed) + ")";
  }
  // A typo of a required key shows up as "missing" first: name the unread key it probably is.
  for (const auto& entry : state_->node) {
    const std::string& present = entry.first.Scalar();
    if (std::find(state_->known.begin(), state_->known.end(), present) == state_->known.end() &&
        nearest(present, {std::string(key)})) {
      detail += "; found unknown key '" + present + "' at " +
                place_of(state_->context->file, entry.first.Mark()) + ", did you mean '" + std::string(key) +
                "'?";
      break;
    }
  }
  fail_at(state_->node.Mark(), key_path(key), detail);
}

template <typename T>
T Section::required(std::string_view key, const Rule<T>& rule) {
  const YAML::Node value = value_of(key);
  if (!value.IsDefined()) {
    fail_missing(key, rule.allowed);
  }
  T out{};
  const std::string error = convert(value, rule, out);
  if (!error.empty()) {
    fail(key, error);
  }
  return out;
}

template <typename T>
T Section::optional(std::string_view key, T fallback, const Rule<T>& rule) {
  const YAML::Node value = value_of(key);
  if (!value.IsDefined()) {
    return fallback;
  }
  T out{};
  const std::string error = convert(value, rule, out);
  if (!error.empty()) {
    fail(key, error);
  }
  return out;
}

template bool Section::required<bool>(std::string_view, const Rule<bool>&);
template int Section::required<int>(std::string_view, const Rule<int>&);
template unsigned Section::required<unsigned>(std::string_view, const Rule<unsigned>&);
template std::int64_t Section::required<std::int64_t>(std::string_view, const Rule<std::int64_t>&);
template double Section::required<double>(std::string_view, const Rule<double>&);
template std::string Section::required<std::string>(std::string_view, const Rule<std::string>&);
template bool Section::optional<bool>(std::string_view, bool, const Rule<bool>&);
template int Section::optional<int>(std::string_view, int, const Rule<int>&);
template unsigned Section::optional<unsigned>(std::string_view, unsigned, const Rule<unsigned>&);
template std::int64_t Section::optional<std::int64_t>(std::string_view, std::int64_t,
                                                      const Rule<std::int64_t>&);
template double Section::optional<double>(std::string_view, double, const Rule<double>&);
template std::string Section::optional<std::string>(std::string_view, std::string, const Rule<std::string>&);

Section Section::child(const YAML::Node& node, std::string path) {
  // Asking twice for the same sub-section must give the same known-key set, or finish() would misjudge.
  for (const auto& existing : state_->children) {
    if (existing->path == path) {
      return Section(existing);
    }
  }
  auto state = std::make_shared<State>();
  state->node = node;
  state->path = std::move(path);
  state->context = state_->context;
  state_->children.push_back(state);
  return Section(std::move(state));
}

Section Section::section(std::string_view key) {
  const YAML::Node value = value_of(key);
  if (!value.IsDefined()) {
    fail_missing(key, "a mapping");
  }
  if (!value.IsMap()) {
    fail(key, "expected a mapping, got " + describe(value));
  }
  return child(value, key_path(key));
}

std::optional<Section> Section::optional_section(std::string_view key) {
  const YAML::Node value = value_of(key);
  if (!value.IsDefined()) {
    return std::nullopt;
  }
  if (!value.IsMap()) {
    fail(key, "expected a mapping, got " + describe(value));
  }
  return child(value, key_path(key));
}

std::vector<Section> Section::sections(std::string_view key, std::size_t min_count) {
  const YAML::Node value = value_of(key);
  if (!value.IsDefined()) {
    fail_missing(key, "a sequence of mappings");
  }
  if (!value.IsSequence()) {
    fail(key, "expected a sequence of mappings, got " + describe(value));
  }
  if (value.size() < min_count) {
    fail(key, "must have at least " + std::to_string(min_count) + (min_count == 1 ? " entry" : " entries") +
                  ", got " + std::to_string(value.size()));
  }
  std::vector<Section> out;
  std::size_t i = 0;
  for (const auto& item : value) {
    const std::string item_path = key_path(key) + "[" + std::to_string(i) + "]";
    if (!item.IsMap()) {
      const YAML::Mark mark = item.IsNull() ? value.Mark() : item.Mark();
      fail_at(mark, item_path, "expected a mapping, got " + describe(item));
    }
    out.push_back(child(item, item_path));
    ++i;
  }
  return out;
}

void Section::finish() {
  for (const auto& entry : state_->node) {
    const std::string& key = entry.first.Scalar();
    if (std::find(state_->known.begin(), state_->known.end(), key) != state_->known.end()) {
      continue;
    }
    std::string detail = "unknown key '" + key + "'";
    if (const auto suggestion = nearest(key, state_->known)) {
      detail += " (did you mean '" + *suggestion + "'?)";
    }
    detail += "; allowed: ";
    detail += state_->known.empty() ? std::string("no keys") : list_text(state_->known);
    fail_at(entry.first.Mark(), key_path(key), detail);
  }
  for (const auto& child_state : state_->children) {
    Section(child_state).finish();
  }
}

std::optional<std::int64_t> parse_calendar_date(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') {
    return std::nullopt;
  }
  const auto number = [&](std::size_t pos, std::size_t len) -> std::optional<int> {
    int v = 0;
    const char* first = text.data() + pos;
    const auto [end, ec] = std::from_chars(first, first + len, v);
    if (ec != std::errc() || end != first + len || *first == '-' || *first == '+') {
      return std::nullopt;
    }
    return v;
  };
  const auto y = number(0, 4);
  const auto m = number(5, 2);
  const auto d = number(8, 2);
  if (!y || !m || !d || *y < 1970 || *m < 1 || *m > 12 || *d < 1) {
    return std::nullopt;
  }
  const bool leap = (*y % 4 == 0 && *y % 100 != 0) || *y % 400 == 0;
  constexpr std::array<int, 12> kDays{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int days_in_month = kDays[static_cast<std::size_t>(*m - 1)] + ((*m == 2 && leap) ? 1 : 0);
  if (*d > days_in_month) {
    return std::nullopt;
  }
  // Days from civil (H. Hinnant's algorithm), exact for the proleptic Gregorian calendar.
  const std::int64_t yy = *y - (*m <= 2 ? 1 : 0);
  const std::int64_t era = yy / 400;
  const std::int64_t yoe = yy - era * 400;
  const std::int64_t mp = (*m + 9) % 12;
  const std::int64_t doy = (153 * mp + 2) / 5 + *d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

namespace {
constexpr std::size_t kMaxNamedFileBytes = 1024 * 1024;  // secrets and PEM files are a few KiB
}  // namespace

// A path as written, resolved against the config file's directory when relative (as devices do).
std::string resolve_path(const Section& section, const std::string& path) {
  if (path.empty() || path.front() == '/') {
    return path;
  }
  const std::string& file = section.context().file;
  const auto slash = file.rfind('/');
  return slash == std::string::npos ? path : file.substr(0, slash + 1) + path;
}

namespace {

std::string mode_text(mode_t mode) {
  std::array<char, 8> buf{};
  std::snprintf(buf.data(), buf.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return buf.data();
}

}  // namespace

// Reads a file named by `key` at load, so a missing or unreadable file is a config error with its place,
// not a connection failure hours later. `private_file`: refuse group/other access (keys, passwords).
// `what` names the file in messages; the contents are never quoted.
std::string read_named_file(Section& section, std::string_view key, const std::string& path, const char* what,
                            bool private_file) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    section.fail(key, std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    section.fail(key, std::string(what) + " '" + path + "' is not a regular file");
  }
  if (private_file && (st.st_mode & 077) != 0) {
    section.fail(key, std::string(what) + " '" + path + "' has mode " + mode_text(st.st_mode) +
                          ": must be 0600 or stricter (no group or other access)");
  }
  if (static_cast<std::size_t>(st.st_size) > kMaxNamedFileBytes) {
    section.fail(key, std::string(what) + " '" + path + "' is larger than " +
                          std::to_string(kMaxNamedFileBytes) + " bytes");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    section.fail(key, std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return std::move(text).str();
}

YAML::Node load_yaml_document(std::string_view yaml_text, const std::string& name) {
  check_yaml(yaml_text, name);  // malformed or oversized text never reaches yaml-cpp (see yaml_guard.h)
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) {
      throw ConfigError(name, 0, 0, "", "invalid YAML: " + e.msg);
    }
    throw ConfigError(name, e.mark.line + 1, e.mark.column + 1, "", "invalid YAML: " + e.msg);
  }
  if (documents.size() > 1) {
    const YAML::Mark mark = documents[1].Mark();
    throw ConfigError(name, mark.line < 0 ? 0 : mark.line + 1, mark.column < 0 ? 0 : mark.column + 1, "",
                      "expected one YAML document, found " + std::to_string(documents.size()));
  }
  return documents.empty() ? YAML::Node() : documents.front();
}

std::string read_config_file(const std::string& path) {
  constexpr std::size_t kMaxConfigBytes = 1024 * 1024;  // a config is a few KiB; anything larger is a mistake
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw ConfigError(path, 0, 0, "", std::string("cannot open: ") + std::strerror(errno));
  }
  std::string bytes;
  std::array<char, 8192> buffer{};
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      throw ConfigError(path, 0, 0, "", std::string("cannot read: ") + std::strerror(error));
    }
    if (n == 0) {
      break;
    }
    bytes.append(buffer.data(), static_cast<std::size_t>(n));
    if (bytes.size() > kMaxConfigBytes) {
      ::close(fd);
      throw ConfigError(path, 0, 0, "", "file is larger than " + std::to_string(kMaxConfigBytes) + " bytes");
    }
  }
  ::close(fd);
  return bytes;
}

}  // namespace cpd::config
