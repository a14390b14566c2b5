#include "daemon/config/yaml_guard.h"

#include <yaml.h>

#include <map>
#include <memory>
#include <vector>

#include "daemon/config/schema.h"

namespace cpd::config {

namespace {

struct ParserDeleter {
  void operator()(yaml_parser_t* p) const {
    yaml_parser_delete(p);
    delete p;
  }
};

struct EventGuard {
  yaml_event_t event{};
  ~EventGuard() { yaml_event_delete(&event); }
};

int line_of(const yaml_mark_t& mark) {
  return static_cast<int>(mark.line) + 1;
}
int column_of(const yaml_mark_t& mark) {
  return static_cast<int>(mark.column) + 1;
}

std::string text_or_empty(const yaml_char_t* s) {
  return s == nullptr ? std::string() : reinterpret_cast<const char*>(s);
}

[[noreturn]] void throw_parse_error(const yaml_parser_t& p, const std::string& name) {
  std::string detail = "invalid YAML: " + text_or_empty(reinterpret_cast<const yaml_char_t*>(p.problem));
  if (p.context != nullptr) {
    detail += " (" + std::string(p.context) + " at line " + std::to_string(line_of(p.context_mark)) + ")";
  }
  throw ConfigError(name, line_of(p.problem_mark), column_of(p.problem_mark), "", detail);
}

// The document's size with aliases expanded, counted event by event: each open collection with its size so
// far, each anchored node's size once it is complete. Throws at the first limit passed.
class ExpandedSize {
 public:
  ExpandedSize(const std::string& name, const YamlLimits& limits) : name_(name), limits_(limits) {}

  // False at the end of the stream.
  bool on_event(const yaml_event_t& ev) {
    switch (ev.type) {
      case YAML_STREAM_END_EVENT:
        return false;
      case YAML_DOCUMENT_START_EVENT:
        ++documents_;
        anchored_.clear();  // anchors do not cross documents
        break;
      case YAML_SCALAR_EVENT: {
        const std::string anchor = text_or_empty(ev.data.scalar.anchor);
        if (!anchor.empty()) {
          anchored_[anchor] = 1;
        }
        add(1, ev.start_mark);
        break;
      }
      case YAML_ALIAS_EVENT: {
        const auto it = anchored_.find(text_or_empty(ev.data.alias.anchor));
        add(it == anchored_.end() ? 1 : it->second,
            ev.start_mark);  // libyaml leaves unknown aliases to the loader
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT:
        open_collection(ev);
        break;
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        close_collection(ev.start_mark);
        break;
      default:
        break;
    }
    return true;
  }

  std::size_t documents() const { return documents_; }

 private:
  struct Open {
    std::size_t size = 1;  // the collection itself
    std::string anchor;
  };

  void add(std::size_t size, const yaml_mark_t& mark) {
    total_ += size;
    if (!open_.empty()) {
      open_.back().size += size;
    }
    if (total_ > limits_.max_nodes) {
      throw ConfigError(name_, line_of(mark), column_of(mark), "",
                        "the YAML document is too large: more than " + std::to_string(limits_.max_nodes) +
                            " nodes with aliases expanded");
    }
  }

  void open_collection(const yaml_event_t& ev) {
    if (static_cast<int>(open_.size()) >= limits_.max_depth) {
      throw ConfigError(name_, line_of(ev.start_mark), column_of(ev.start_mark), "",
                        "YAML nested more than " + std::to_string(limits_.max_depth) + " levels deep");
    }
    open_.push_back({1, text_or_empty(ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                           : ev.data.mapping_start.anchor)});
  }

  void close_collection(const yaml_mark_t& mark) {
    const Open done = std::move(open_.back());
    open_.pop_back();
    if (!done.anchor.empty()) {
      anchored_[done.anchor] = done.size;
    }
    // The collection's own node was counted in `size`; the elements were already added to `total_`.
    total_ -= done.size - 1;
    add(done.size, mark);
  }

  const std::string& name_;
  const YamlLimits& limits_;
  std::vector<Open> open_;
  std::map<std::string, std::size_t> anchored_;
  std::size_t total_ = 0;
  std::size_t documents_ = 0;
};

}  // namespace

std::size_t check_yaml(std::string_view text, const std::string& name, const YamlLimits& limits) {
  std::unique_ptr<yaml_parser_t, ParserDeleter> parser(new yaml_parser_t{});
  if (yaml_parser_initialize(parser.get()) == 0) {
    throw ConfigError(name, 0, 0, "", "cannot start the YAML parser (out of memory)");
  }
  yaml_parser_set_input_string(parser.get(), reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  ExpandedSize size(name, limits);
  for (;;) {
    EventGuard e;
    if (yaml_parser_parse(parser.get(), &e.event) == 0) {
      throw_parse_error(*parser, name);
    }
    if (!size.on_event(e.event)) {
      return size.documents();
    }
  }
}

}  // namespace cpd::config
