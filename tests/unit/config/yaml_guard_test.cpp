// The libyaml first pass: malformed text that hangs yaml-cpp 0.7 is refused with a place, and valid text
// is bounded in depth and in size with aliases expanded.
#include "daemon/config/yaml_guard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "daemon/config/config.h"
#include "daemon/config/schema.h"
#include "tests/unit/config/config_test_support.h"

namespace cpd::config {
namespace {

using testing::error_of;
using ::testing::HasSubstr;

TEST(YamlGuard, WellFormedTextPassesAndDocumentsAreCounted) {
  EXPECT_EQ(check_yaml("a: 1\nb: [x, y, {c: d}]\n", "f.yaml"), 1U);
  EXPECT_EQ(check_yaml("a: 1\n---\nb: 2\n", "f.yaml"), 2U);
  EXPECT_EQ(check_yaml("", "f.yaml"), 0U);
  EXPECT_EQ(check_yaml("base: &lane {lane: 1}\nother: *lane\n", "f.yaml"), 1U);
}

// Each of these made yaml-cpp 0.7 loop forever, allocating (found by fuzz_config; upstream #1040, #499).
TEST(YamlGuard, TextThatHangsYamlCppIsRefusedWithAPlace) {
  for (const std::string text : {",", "\n,\n", "a: 1\n,\n", "[:", "{:", "- !+(.,.)"}) {
    const ConfigError e = error_of([&] { check_yaml(text, "f.yaml"); });
    EXPECT_THAT(e.detail(), HasSubstr("invalid YAML")) << text;
    EXPECT_GE(e.line(), 1) << text;
    EXPECT_GE(e.column(), 1) << text;
    // And through the loader itself, which must return rather than hang.
    EXPECT_THAT(error_of([&] { (void)parse_config(text, "f.yaml"); }).detail(), HasSubstr("invalid YAML"))
        << text;
  }
}

TEST(YamlGuard, ErrorNamesLineAndColumn) {
  const ConfigError e = error_of([] { check_yaml("a: 1\nb: [1, 2\nc: 3\n", "gw.yaml"); });
  EXPECT_EQ(e.file(), "gw.yaml");
  EXPECT_EQ(e.line(), 3);
  EXPECT_THAT(e.detail(), HasSubstr("flow sequence"));
}

TEST(YamlGuard, DeepNestingIsRefused) {
  const std::string deep = std::string(65, '[') + std::string(65, ']');
  EXPECT_THAT(error_of([&] { check_yaml(deep, "f.yaml"); }).detail(), HasSubstr("nested more than 64"));
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_EQ(check_yaml(ok, "f.yaml"), 1U);
}

TEST(YamlGuard, AliasExpansionIsBounded) {
  // Nine levels of ten aliases: 10^9 nodes once expanded, in a few hundred bytes.
  std::string laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 9; ++i) {
    const std::string prev = "*a" + std::to_string(i - 1);
    laughs += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) {
      laughs += (k == 0 ? "" : ", ") + prev;
    }
    laughs += "]\n";
  }
  const ConfigError e = error_of([&] { check_yaml(laughs, "f.yaml"); });
  EXPECT_THAT(e.detail(), HasSubstr("too large"));
  EXPECT_GE(e.line(), 4);  // the level where the expanded count passes the bound, not before
  // Three levels (~1 300 nodes) is fine.
  EXPECT_NO_THROW(check_yaml(laughs.substr(0, laughs.find("a3:")), "f.yaml"));
}

TEST(YamlGuard, SizeBoundCountsPlainNodesToo) {
  std::string many = "[";
  for (int i = 0; i < 200; ++i) {
    many += "1,";
  }
  many += "1]";
  EXPECT_NO_THROW(check_yaml(many, "f.yaml", YamlLimits{64, 202}));
  EXPECT_THROW(check_yaml(many, "f.yaml", YamlLimits{64, 201}), ConfigError);
}

}  // namespace
}  // namespace cpd::config
