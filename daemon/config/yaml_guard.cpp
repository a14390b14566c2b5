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

}  // namespace

std::size_t check_yaml(std::string_view text, const std::string& name, const YamlLimits& limits) {
  std::unique_ptr<yaml_parser_t, ParserDeleter> parser(new yaml_parser_t{});
  if (yaml_parser_initialize(parser.get()) == 0) {
    throw ConfigError(name, 0, 0, "", "cannot start the YAML parser (out of memory)");
  }
  yaml_parser_set_input_string(parser.get(), reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());

  // Each open collection with its expanded size so far; each anchored node's size once it is complete.
  struct Open {
    std::size_t size = 1;  // the collection itself
    std::string anchor;
  };
  std::vector<Open> open;
  std::map<std::string, std::size_t> anchored;
  std::size_t total = 0;
  std::size_t documents = 0;
  const auto add = [&](std::size_t size, const yaml_mark_t& mark) {
    total += size;
    if (!open.empty()) {
      open.back().size += size;
    }
    if (total > limits.max_nodes) {
      throw ConfigError(name, line_of(mark), column_of(mark), "",
                        "the YAML document is too large: more than " + std::to_string(limits.max_nodes) +
                            " nodes with aliases expanded");
    }
  };

  for (;;) {
    EventGuard e;
    if (yaml_parser_parse(parser.get(), &e.event) == 0) {
      const yaml_parser_t& p = *parser;
      std::string detail = "invalid YAML: " + text_or_empty(reinterpret_cast<const yaml_char_t*>(p.problem));
      if (p.context != nullptr) {
        detail += " (" + std::string(p.context) + " at line " + std::to_string(line_of(p.context_mark)) + ")";
      }
      throw ConfigError(name, line_of(p.problem_mark), column_of(p.problem_mark), "", detail);
    }
    const yaml_event_t& ev = e.event;
    switch (ev.type) {
      case YAML_STREAM_END_EVENT:
        return documents;
      case YAML_DOCUMENT_START_EVENT:
        ++documents;
        anchored.clear();  // anchors do not cross documents
        break;
      case YAML_SCALAR_EVENT: {
        const std::string anchor = text_or_empty(ev.data.scalar.anchor);
        if (!anchor.empty()) {
          anchored[anchor] = 1;
        }
        add(1, ev.start_mark);
        break;
      }
      case YAML_ALIAS_EVENT: {
        const auto it = anchored.find(text_or_empty(ev.data.alias.anchor));
        add(it == anchored.end() ? 1 : it->second,
            ev.start_mark);  // libyaml leaves unknown aliases to the loader
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        if (static_cast<int>(open.size()) >= limits.max_depth) {
          throw ConfigError(name, line_of(ev.start_mark), column_of(ev.start_mark), "",
                            "YAML nested more than " + std::to_string(limits.max_depth) + " levels deep");
        }
        open.push_back(
            {1, text_or_empty(ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                   : ev.data.mapping_start.anchor)});
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT: {
        const Open done = std::move(open.back());
        open.pop_back();
        const std::size_t size = done.size;
        if (!done.anchor.empty()) {
          anchored[done.anchor] = size;
        }
        // The collection's own node was counted in `size`; the elements were already added to `total`.
        total -= size - 1;
        add(size, ev.start_mark);
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace cpd::config
