// A first pass over YAML text with libyaml, before yaml-cpp builds nodes from it.
//
// yaml-cpp 0.7 (Debian 12) loops forever, allocating, on some malformed text: a lone "," is enough
// (upstream issues #1040, #499; fixed in later releases by PR #1318/#1319). libyaml is a small, widely
// fuzzed event parser; text it rejects never reaches yaml-cpp, and its error names line and column. The same
// pass bounds what a valid document may cost: nesting depth, and the node count once aliases are expanded
// (a "billion laughs" file is a few hundred bytes).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cpd::config {

struct YamlLimits {
  int max_depth = 64;               // nested mappings/sequences
  std::size_t max_nodes = 100'000;  // scalars + collections, each alias counted as what it stands for
};

// Throws ConfigError (file `name`, 1-based line and column) if `text` is not well-formed YAML or exceeds
// `limits`. Returns the number of documents in the stream.
std::size_t check_yaml(std::string_view text, const std::string& name, const YamlLimits& limits = {});

}  // namespace cpd::config
