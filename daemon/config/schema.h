// The config schema toolkit: typed, range-checked keys read from YAML, each mistake reported with its place.
// Every config section (gateway, store, mqtt, each adapter kind) is read through a Section.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cpd::config {

// A config mistake: "file:line:column: key.path: what is wrong and what is allowed".
class ConfigError : public std::runtime_error {
 public:
  // `line`/`column` are 1-based; 0 when the mistake has no place in the text (e.g. an unreadable file).
  // `key` is the dotted path of the key ("devices[0].lanes[1].x_max"), empty when none applies.
  ConfigError(std::string file, int line, int column, std::string key, std::string detail);

  const std::string& file() const { return file_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& key() const { return key_; }
  const std::string& detail() const { return detail_; }

 private:
  std::string file_;
  int line_;
  int column_;
  std::string key_;
  std::string detail_;
};

// Shared by every section of one load: the file name for messages, and settings that later sections
// depend on (config.cpp reads gateway.site before the devices, so their calendar dates use its offset).
struct LoadContext {
  std::string file;
  int utc_offset_min = 0;  // gateway.site.utc_offset in minutes east of UTC
};

// What a key's value may be. Fields that do not apply to T are ignored: min/max for numbers, pattern for
// strings; one_of for both. `allowed` says in words what is allowed: it is quoted when a required key is
// missing or a pattern does not match, so it should read well after "must be".
template <typename T>
struct Rule {
  std::optional<T> min{};
  std::optional<T> max{};
  std::vector<T> one_of{};
  std::string_view pattern{};  // ECMAScript regex the whole string must match
  std::string_view allowed{};
};

// A YAML mapping with its dotted path. Reading a key (present or not) makes it known; finish() then
// rejects any key the schema never asked for. Copies share state, so a Section is a cheap handle.
// Supported T: bool, int, unsigned, std::int64_t, double, std::string.
class Section {
 public:
  // Checks the whole document (keys are plain scalars, no duplicates in any mapping) and wraps its root,
  // which must be a mapping. Throws ConfigError.
  static Section root(const YAML::Node& document, std::shared_ptr<LoadContext> context);

  const std::string& path() const;
  std::string key_path(std::string_view key) const;  // path() + "." + key, or key at the root
  std::string place() const;                         // "file:line:column" of this mapping
  std::string place(std::string_view key) const;     // of the key's value; of this mapping when absent
  // 1-based line and column of what place(key) names, for errors found after the load (the signing key).
  std::pair<int, int> position(std::string_view key) const;
  const LoadContext& context() const;

  bool has(std::string_view key);
  template <typename T>
  T required(std::string_view key, const Rule<T>& rule = {});
  template <typename T>
  T optional(std::string_view key, T fallback, const Rule<T>& rule = {});

  Section section(std::string_view key);  // a required mapping
  std::optional<Section> optional_section(std::string_view key);
  // A required sequence of mappings; entries are named key[0], key[1], ...
  std::vector<Section> sections(std::string_view key, std::size_t min_count = 0);

  // The scalar as written in the file (for messages about cross-key rules); empty if absent or not a scalar.
  std::string raw(std::string_view key) const;

  [[noreturn]] void fail(std::string_view key, const std::string& detail) const;  // at the key's value
  [[noreturn]] void fail_here(const std::string& detail) const;                   // at this mapping

  // Errors on the first key here, or in any section taken from this one, that the schema did not read:
  // "unknown key 'pol_interval_ms' (did you mean 'poll_interval_ms'?); allowed: id, kind, ...".
  void finish();

 private:
  struct State;
  explicit Section(std::shared_ptr<State> state);
  Section child(const YAML::Node& node, std::string path);
  YAML::Node value_of(std::string_view key);       // registers the key as known; null Node if absent
  YAML::Mark mark_of(std::string_view key) const;  // of the key's value; of this mapping when absent
  [[noreturn]] void fail_missing(std::string_view key, std::string_view allowed) const;
  [[noreturn]] void fail_at(const YAML::Mark& mark, const std::string& key, const std::string& detail) const;

  std::shared_ptr<State> state_;
};

extern template bool Section::required<bool>(std::string_view, const Rule<bool>&);
extern template int Section::required<int>(std::string_view, const Rule<int>&);
extern template unsigned Section::required<unsigned>(std::string_view, const Rule<unsigned>&);
extern template std::int64_t Section::required<std::int64_t>(std::string_view, const Rule<std::int64_t>&);
extern template double Section::required<double>(std::string_view, const Rule<double>&);
extern template std::string Section::required<std::string>(std::string_view, const Rule<std::string>&);
extern template bool Section::optional<bool>(std::string_view, bool, const Rule<bool>&);
extern template int Section::optional<int>(std::string_view, int, const Rule<int>&);
extern template unsigned Section::optional<unsigned>(std::string_view, unsigned, const Rule<unsigned>&);
extern template std::int64_t Section::optional<std::int64_t>(std::string_view, std::int64_t,
                                                             const Rule<std::int64_t>&);
extern template double Section::optional<double>(std::string_view, double, const Rule<double>&);
extern template std::string Section::optional<std::string>(std::string_view, std::string,
                                                           const Rule<std::string>&);

// A key naming a file: any non-empty path (resolved with resolve_path below).
inline constexpr std::string_view kPathPattern = "[^\\s].{0,4095}";
inline constexpr std::string_view kPathAllowed = "a non-empty file path";

// Days since 1970-01-01 of a proleptic Gregorian date; nullopt unless "YYYY-MM-DD" names a real day
// (years 1970..9999). Shared by sections that take calendar dates.
std::optional<std::int64_t> parse_calendar_date(std::string_view text);

// A path as written in the config, resolved against the config file's directory when relative.
std::string resolve_path(const Section& section, const std::string& path);

// Reads the file at `path` (named by `key`) at load, so a missing or unreadable file is a config error with
// its place, not a failure hours later: a regular file of at most 1 MiB; with `private_file`, no group or
// other access (0600 or stricter). `what` names the file in messages; the contents are never quoted.
std::string read_named_file(Section& section, std::string_view key, const std::string& path, const char* what,
                            bool private_file);

// The one YAML document of a config text, checked first by the libyaml guard (yaml_guard.h): malformed
// YAML, more than one document, or nesting/aliases beyond the bounds are ConfigErrors with their place.
YAML::Node load_yaml_document(std::string_view yaml_text, const std::string& name);
// A config file's bytes (at most 1 MiB); ConfigError naming the file when it cannot be read.
std::string read_config_file(const std::string& path);

}  // namespace cpd::config
