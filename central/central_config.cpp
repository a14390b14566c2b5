// Reads checkpoint-central's YAML through the same schema toolkit as the gateway's config.
#include "central/central_config.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>

#include "daemon/config/schema.h"

namespace cpd::central {

namespace {

using config::Section;

constexpr std::string_view kIdPattern = "[a-z0-9][a-z0-9-]{0,62}";
constexpr std::string_view kIdAllowed =
    "1 to 63 lower-case letters, digits or '-', starting with a letter or digit";

// The `feed` section: the subscription, the queue and batch bounds, the media directory, the quarantine's.
void parse_feed(Section feed, decltype(CentralConfig::feed)& out) {
  out.share_group =
      feed.optional<std::string>("share_group", out.share_group,
                                 {.pattern = "[A-Za-z0-9_.-]{1,64}",
                                  .allowed = "1 to 64 letters, digits, '_', '.' or '-' (no '/', '+', '#')"});
  out.queue_messages = feed.optional<int>("queue_messages", out.queue_messages, {.min = 10, .max = 1000000});
  out.queue_mb = feed.optional<int>("queue_mb", out.queue_mb, {.min = 1, .max = 65536});
  out.max_file_mb = feed.optional<int>("max_file_mb", out.max_file_mb, {.min = 1, .max = 1 << 20});
  out.max_open_files = feed.optional<int>("max_open_files", out.max_open_files, {.min = 1, .max = 64});
  out.unnamed_max_mb = feed.optional<int>("unnamed_max_mb", out.unnamed_max_mb, {.min = 1, .max = 1 << 20});
  out.unnamed_max_age_days =
      feed.optional<int>("unnamed_max_age_days", out.unnamed_max_age_days, {.min = 0, .max = 36500});
  out.batch_max = feed.optional<int>("batch_max", out.batch_max, {.min = 1, .max = 10000});
  out.batch_linger_ms = feed.optional<int>("batch_linger_ms", out.batch_linger_ms, {.min = 0, .max = 1000});
  out.media_dir = config::resolve_path(
      feed, feed.required<std::string>("media_dir",
                                       {.pattern = config::kPathPattern, .allowed = config::kPathAllowed}));
  out.quarantine_max_per_gateway = feed.optional<int>(
      "quarantine_max_per_gateway", out.quarantine_max_per_gateway, {.min = 1, .max = 100000000});
  out.quarantine_max_mb_per_gateway = feed.optional<int>(
      "quarantine_max_mb_per_gateway", out.quarantine_max_mb_per_gateway, {.min = 1, .max = 1048576});
  out.quarantine_max_rows =
      feed.optional<int>("quarantine_max_rows", out.quarantine_max_rows, {.min = 1, .max = 1000000000});
  out.quarantine_max_mb =
      feed.optional<int>("quarantine_max_mb", out.quarantine_max_mb, {.min = 1, .max = 1048576});
  out.quarantine_max_age_days =
      feed.optional<int>("quarantine_max_age_days", out.quarantine_max_age_days, {.min = 0, .max = 36500});
  if (out.quarantine_max_rows < out.quarantine_max_per_gateway) {
    feed.fail("quarantine_max_rows", "must be at least quarantine_max_per_gateway (" +
                                         std::to_string(out.quarantine_max_per_gateway) + ")");
  }
  if (out.quarantine_max_mb < out.quarantine_max_mb_per_gateway) {
    feed.fail("quarantine_max_mb", "must be at least quarantine_max_mb_per_gateway (" +
                                       std::to_string(out.quarantine_max_mb_per_gateway) + ")");
  }
  feed.finish();
}

// The `gaps` section: when central asks a gateway again for what it lacks, and how often it looks.
void parse_gaps(Section& gaps, decltype(CentralConfig::gaps)& out) {
  out.resend_after_ms =
      gaps.optional<int>("resend_after_ms", out.resend_after_ms, {.min = 100, .max = 86400000});
  out.file_stall_ms = gaps.optional<int>("file_stall_ms", out.file_stall_ms, {.min = 100, .max = 86400000});
  out.retry_min_ms = gaps.optional<int>("retry_min_ms", out.retry_min_ms, {.min = 100, .max = 86400000});
  out.retry_max_ms = gaps.optional<int>("retry_max_ms", out.retry_max_ms, {.min = 100, .max = 86400000});
  if (out.retry_max_ms < out.retry_min_ms) {
    gaps.fail("retry_max_ms", "must be at least retry_min_ms (" + std::to_string(out.retry_min_ms) + ")");
  }
  out.check_interval_ms =
      gaps.optional<int>("check_interval_ms", out.check_interval_ms, {.min = 50, .max = 600000});
  gaps.finish();
}

CentralConfig parse_document(const YAML::Node& document, const std::string& name) {
  auto context = std::make_shared<config::LoadContext>();
  context->file = name;
  Section root = Section::root(document, context);
  CentralConfig out;
  out.source = name;

  Section central = root.section("central");
  out.central.id = central.required<std::string>("id", {.pattern = kIdPattern, .allowed = kIdAllowed});
  out.central.key_path = config::resolve_path(
      central, central.required<std::string>(
                   "key", {.pattern = config::kPathPattern, .allowed = config::kPathAllowed}));
  central.finish();

  Section pg = root.section("postgres");
  out.postgres.conninfo = pg.required<std::string>(
      "conninfo", {.pattern = "[^\\x00-\\x08\\x0a-\\x1f]{1,4096}",
                   .allowed = "a libpq connection string, e.g. 'host=/run/postgresql dbname=checkpoint'"});
  pg.finish();

  // Each instance needs its own session: the default client id names the host and the process.
  char host[64] = {};
  ::gethostname(host, sizeof host - 1);
  std::string default_client = "central-" + out.central.id + "-" + host + "-" + std::to_string(::getpid());
  for (char& ch : default_client) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) {
      ch = '-';
    }
  }
  out.mqtt = config::parse_mqtt_section(root.section("mqtt"), default_client.substr(0, 64));

  parse_feed(root.section("feed"), out.feed);

  if (auto receipts = root.optional_section("receipts")) {
    out.receipts.every_records =
        receipts->optional<int>("every_records", out.receipts.every_records, {.min = 1, .max = 10000000});
    out.receipts.every_ms =
        receipts->optional<int>("every_ms", out.receipts.every_ms, {.min = 100, .max = 3600000});
    receipts->finish();
  }
  if (auto gaps = root.optional_section("gaps")) {
    parse_gaps(*gaps, out.gaps);
  }
  if (auto trust = root.optional_section("trust")) {
    if (trust->has("keys_dir")) {
      out.trust.keys_dir = config::resolve_path(
          *trust, trust->required<std::string>(
                      "keys_dir", {.pattern = config::kPathPattern, .allowed = config::kPathAllowed}));
      if (!std::filesystem::is_directory(out.trust.keys_dir)) {
        trust->fail("keys_dir", "'" + out.trust.keys_dir + "' is not a directory");
      }
    }
    trust->finish();
  }
  if (auto metrics = root.optional_section("metrics")) {
    out.metrics.enabled = metrics->optional<bool>("enabled", out.metrics.enabled);
    out.metrics.host = metrics->optional<std::string>(
        "host", out.metrics.host,
        {.pattern = "[0-9.]{7,15}|[0-9A-Fa-f:]{2,39}", .allowed = "a numeric IP address"});
    out.metrics.port = metrics->optional<int>("port", out.metrics.port, {.min = 0, .max = 65535});
    metrics->finish();
  }
  root.finish();
  return out;
}

}  // namespace

CentralConfig parse_central_config(std::string_view yaml_text, const std::string& name) {
  return parse_document(config::load_yaml_document(yaml_text, name), name);
}

CentralConfig load_central_config(const std::string& path) {
  return parse_central_config(config::read_config_file(path), path);
}

bool is_gateway_id(std::string_view id) {
  if (id.empty() || id.size() > 63 || id.front() == '-') {
    return false;
  }
  return std::all_of(id.begin(), id.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

}  // namespace cpd::central
