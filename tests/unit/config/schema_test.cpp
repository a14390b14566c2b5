// Unit tests of the schema toolkit: typed getters, ranges, enumerations, patterns, unknown and duplicate
// keys, sequences, and the place named in each message.
#include "daemon/config/schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/config/config_test_support.h"

namespace cpd::config {
namespace {

using testing::error_of;
using ::testing::HasSubstr;
using testing::place_in;
using ::testing::StartsWith;

constexpr const char* kSchemaFile = "t.yaml";

Section load(const std::string& text) {
  auto context = std::make_shared<LoadContext>();
  context->file = kSchemaFile;
  return Section::root(YAML::Load(text), context);
}

TEST(SchemaTest, ReadsTypedValuesAndDefaults) {
  Section s = load("i: 42\nd: -1.5\nb: true\ns: hello\nu: 115200\nbig: 9000000000\n");
  EXPECT_EQ(s.required<int>("i"), 42);
  EXPECT_DOUBLE_EQ(s.required<double>("d"), -1.5);
  EXPECT_TRUE(s.required<bool>("b"));
  EXPECT_EQ(s.required<std::string>("s"), "hello");
  EXPECT_EQ(s.required<unsigned>("u"), 115200U);
  EXPECT_EQ(s.required<std::int64_t>("big"), 9000000000LL);
  EXPECT_EQ(s.optional<int>("absent", 7), 7);
  EXPECT_EQ(s.optional<std::string>("absent_s", "dflt"), "dflt");
  EXPECT_NO_THROW(s.finish());
}

TEST(SchemaTest, IntegerGivenWhereNumberExpectedIsANumber) {
  Section s = load("x: 3\n");
  EXPECT_DOUBLE_EQ(s.required<double>("x"), 3.0);
}

TEST(SchemaTest, WrongTypeNamesPlaceKeyAndValue) {
  const std::string text = "outer:\n  port: abc\n";
  Section s = load(text);
  Section outer = s.section("outer");
  const ConfigError e = error_of([&] { outer.required<int>("port"); });
  EXPECT_EQ(e.key(), "outer.port");
  EXPECT_EQ(std::string(e.what()),
            place_in(kSchemaFile, text, "abc") + ": outer.port: expected an integer, got 'abc'");
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.column(), 9);
}

TEST(SchemaTest, RejectsTrailingGarbageFractionsAndNonFiniteNumbers) {
  Section s = load("a: 12x\nb: 1.5\nc: .inf\nd: nan\ne: [1]\nf: yes\n");
  EXPECT_THAT(error_of([&] { s.required<int>("a"); }).detail(), HasSubstr("expected an integer, got '12x'"));
  EXPECT_THAT(error_of([&] { s.required<int>("b"); }).detail(), HasSubstr("expected an integer, got '1.5'"));
  EXPECT_THAT(error_of([&] { s.required<double>("c"); }).detail(), HasSubstr("expected a number"));
  EXPECT_THAT(error_of([&] { s.required<double>("d"); }).detail(), HasSubstr("expected a number"));
  EXPECT_THAT(error_of([&] { s.required<std::string>("e"); }).detail(),
              HasSubstr("expected a string, got a sequence"));
  EXPECT_THAT(error_of([&] { s.required<bool>("f"); }).detail(), HasSubstr("expected true or false"));
}

TEST(SchemaTest, RangesNameTheBoundsAndTheValue) {
  const std::string text = "port: 70000\nneg: -1\nlat: 91.5\nhuge: 99999999999999999999\n";
  Section s = load(text);
  const ConfigError e = error_of([&] { s.required<int>("port", {.min = 1, .max = 65535}); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kSchemaFile, text, "70000") + ": port: must be between 1 and 65535, got 70000");
  EXPECT_EQ(error_of([&] { s.required<unsigned>("neg"); }).detail(), "must be at least 0, got -1");
  EXPECT_EQ(error_of([&] { s.required<double>("lat", {.min = -90.0, .max = 90.0}); }).detail(),
            "must be between -90 and 90, got 91.5");
  EXPECT_THAT(error_of([&] { s.required<int>("huge"); }).detail(), HasSubstr("must be at most 2147483647"));
  EXPECT_EQ(s.required<int>("port", {.min = 1}), 70000);
}

TEST(SchemaTest, EnumerationsListTheAllowedValues) {
  const std::string text = "direction: NNE\nbaud: 19200\n";
  Section s = load(text);
  const ConfigError e = error_of([&] {
    s.required<std::string>("direction", {.one_of = {"N", "NE", "E", "SE"}});
  });
  EXPECT_EQ(e.detail(), "must be one of N, NE, E, SE; got 'NNE'");
  EXPECT_EQ(error_of([&] {
              s.required<unsigned>("baud", {.one_of = {9600U, 115200U}});
            }).detail(),
            "must be one of 9600, 115200; got 19200");
}

TEST(SchemaTest, PatternsUseTheAllowedDescription) {
  Section s = load("id: Bad_ID\nok: good-id\n");
  const Rule<std::string> rule{.pattern = "[a-z0-9][a-z0-9-]{0,62}",
                               .allowed = "lower-case letters, digits or '-'"};
  EXPECT_EQ(error_of([&] { s.required<std::string>("id", rule); }).detail(),
            "must be lower-case letters, digits or '-', got 'Bad_ID'");
  EXPECT_EQ(s.required<std::string>("ok", rule), "good-id");
}

TEST(SchemaTest, MissingRequiredKeyPointsAtTheParentMapping) {
  const std::string text = "a: 1\nmqtt:\n  keepalive_s: 30\n";
  Section s = load(text);
  Section mqtt = s.section("mqtt");
  const ConfigError e = error_of([&] { mqtt.required<std::string>("uri", {.allowed = "tcp://host:port"}); });
  EXPECT_EQ(std::string(e.what()), place_in(kSchemaFile, text, "keepalive_s") +
                                       ": mqtt.uri: missing required key 'uri' (tcp://host:port)");
  const ConfigError missing_section = error_of([&] { s.section("store"); });
  EXPECT_EQ(missing_section.key(), "store");
  EXPECT_EQ(missing_section.line(), 1);
}

TEST(SchemaTest, MissingKeyMentionsALikelyTypo) {
  Section s = load("x_min: 0\nx_mx: 3\n");
  s.required<double>("x_min");
  EXPECT_THAT(error_of([&] { s.required<double>("x_max"); }).detail(),
              HasSubstr("found unknown key 'x_mx' at t.yaml:2:1, did you mean 'x_max'?"));
}

TEST(SchemaTest, NullValueIsAWrongTypeAtTheKey) {
  const std::string text = "a:\nb: 2\n";
  Section s = load(text);
  const ConfigError e = error_of([&] { s.required<int>("a"); });
  EXPECT_EQ(std::string(e.what()), "t.yaml:1:1: a: expected an integer, got nothing");
}

TEST(SchemaTest, UnknownKeyIsAnErrorWithSuggestionAndAllowedList) {
  const std::string text = "id: r1\nkind: radar\npol_interval_ms: 5\n";
  Section s = load(text);
  s.required<std::string>("id");
  s.required<std::string>("kind");
  s.optional<int>("poll_interval_ms", 0);
  s.optional<int>("track_timeout_ms", 400);
  const ConfigError e = error_of([&] { s.finish(); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kSchemaFile, text, "pol_interval_ms") +
                ": pol_interval_ms: unknown key 'pol_interval_ms' (did you mean "
                "'poll_interval_ms'?); allowed: id, kind, poll_interval_ms, track_timeout_ms");
}

TEST(SchemaTest, UnknownKeyFarFromAnyKnownKeyHasNoSuggestion) {
  Section s = load("id: r1\ncolour: red\n");
  s.required<std::string>("id");
  const ConfigError e = error_of([&] { s.finish(); });
  EXPECT_EQ(e.detail(), "unknown key 'colour'; allowed: id");
}

TEST(SchemaTest, FinishChecksSubSectionsTakenFromIt) {
  const std::string text = "outer:\n  inner:\n    a: 1\n    b: 2\n";
  Section s = load(text);
  Section outer = s.section("outer");
  Section inner = outer.section("inner");
  inner.required<int>("a");
  const ConfigError e = error_of([&] { s.finish(); });
  EXPECT_EQ(e.key(), "outer.inner.b");
  EXPECT_EQ(std::string(e.what()),
            place_in(kSchemaFile, text, "b: 2") + ": outer.inner.b: unknown key 'b'; allowed: a");
}

TEST(SchemaTest, SameSubSectionTwiceSharesKnownKeys) {
  Section s = load("tcp: {host: h, port: 1}\n");
  s.section("tcp").required<std::string>("host");
  s.section("tcp").required<int>("port");
  EXPECT_NO_THROW(s.finish());
}

TEST(SchemaTest, DuplicateKeysAreErrorsNamingBothPlaces) {
  const std::string text = "a: 1\nb:\n  c: x\n  c: y\n";
  const ConfigError e = error_of([&] { load(text); });
  EXPECT_EQ(std::string(e.what()), place_in(kSchemaFile, text, "c: y") +
                                       ": b.c: duplicate key 'c' (first at " +
                                       place_in(kSchemaFile, text, "c: x") + ")");
}

TEST(SchemaTest, DuplicateKeysInFlowMappingsInsideSequences) {
  const std::string text = "lanes: [{lane: 1}, {lane: 2, lane: 3}]\n";
  const ConfigError e = error_of([&] { load(text); });
  EXPECT_EQ(e.key(), "lanes[1].lane");
  EXPECT_EQ(std::string(e.what()).substr(0, place_in(kSchemaFile, text, "lane: 3").size()),
            place_in(kSchemaFile, text, "lane: 3"));
}

TEST(SchemaTest, NonScalarKeysAreErrors) {
  EXPECT_THAT(error_of([] { load("? [a, b]\n: 1\n"); }).detail(), HasSubstr("keys must be plain strings"));
}

TEST(SchemaTest, AliasCyclesDoNotHang) {
  EXPECT_NO_THROW(load("a: &x {p: *x}\n"));
}

TEST(SchemaTest, RootMustBeAMapping) {
  EXPECT_THAT(error_of([] { load("- 1\n- 2\n"); }).what(), StartsWith("t.yaml:1:1: expected a mapping"));
  EXPECT_THAT(error_of([] { load(""); }).what(), StartsWith("t.yaml:1:1: the file is empty"));
}

TEST(SchemaTest, SequencesOfSectionsAreNamedByIndex) {
  const std::string text = "lanes:\n  - {lane: 1}\n  - 7\n";
  Section s = load(text);
  const ConfigError e = error_of([&] { s.sections("lanes"); });
  EXPECT_EQ(std::string(e.what()),
            place_in(kSchemaFile, text, "7") + ": lanes[1]: expected a mapping, got '7'");

  Section ok = load("lanes: [{lane: 1}, {lane: 2}]\n");
  auto lanes = ok.sections("lanes", 1);
  ASSERT_EQ(lanes.size(), 2U);
  EXPECT_EQ(lanes[1].path(), "lanes[1]");
  EXPECT_EQ(lanes[1].required<int>("lane"), 2);
  EXPECT_EQ(lanes[1].place(), "t.yaml:1:20");
}

TEST(SchemaTest, EmptySequenceBelowMinimumIsAnError) {
  Section s = load("lanes: []\n");
  EXPECT_EQ(error_of([&] { s.sections("lanes", 1); }).detail(), "must have at least 1 entry, got 0");
}

TEST(SchemaTest, FailNamesTheKeyAndItsValuePlace) {
  const std::string text = "x_min: 3.75\nx_max: 2.0\n";
  Section s = load(text);
  const ConfigError e =
      error_of([&] { s.fail("x_max", "must be greater than x_min (" + s.raw("x_min") + ")"); });
  EXPECT_EQ(std::string(e.what()), "t.yaml:2:8: x_max: must be greater than x_min (3.75)");
}

TEST(SchemaTest, CalendarDates) {
  EXPECT_EQ(parse_calendar_date("1970-01-01"), 0);
  EXPECT_EQ(parse_calendar_date("2000-03-01"), 11017);
  EXPECT_EQ(parse_calendar_date("2024-02-29"), 19782);
  EXPECT_EQ(parse_calendar_date("2023-02-29"), std::nullopt);
  EXPECT_EQ(parse_calendar_date("2100-02-29"), std::nullopt);
  EXPECT_EQ(parse_calendar_date("2027-13-01"), std::nullopt);
  EXPECT_EQ(parse_calendar_date("2027-06-31"), std::nullopt);
  EXPECT_EQ(parse_calendar_date("2027-6-30"), std::nullopt);
  EXPECT_EQ(parse_calendar_date("2027-06-3x"), std::nullopt);
  EXPECT_EQ(parse_calendar_date("1969-12-31"), std::nullopt);
}

TEST(SchemaTest, ErrorWithoutPlaceOmitsLineAndColumn) {
  const ConfigError e("/etc/x.yaml", 0, 0, "", "cannot open: No such file or directory");
  EXPECT_EQ(std::string(e.what()), "/etc/x.yaml: cannot open: No such file or directory");
}

}  // namespace
}  // namespace cpd::config
