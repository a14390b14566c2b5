// Reads a `kind: recorder_dock` device section: the station's base URL, its bearer token (from a private
// file, read at load), polling and download settings. The token never appears in any message.
#include "adapters/recorder/recorder_config.h"

#include <regex>
#include <string>

#include "daemon/config/schema.h"

namespace cpd::adapters {

namespace {

using config::Section;

void parse_url(Section& device, RecorderDockConfig& out) {
  out.url = device.required<std::string>(
      "url", {.allowed = "the docking station's base URL, http://host[:port][/path]"});
  if (out.url.rfind("https://", 0) == 0) {
    device.fail("url",
                "https is not supported yet (docking stations speak plain HTTP with a bearer token); "
                "use http://host[:port][/path], got '" +
                    out.url + "'");
  }
  // The path is a plain prefix of the API paths: no query, fragment, user info or percent-escapes.
  static const std::regex kUrl(
      R"(http://([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(:([0-9]{1,5}))?((/[A-Za-z0-9._~-]+)*)/?)");
  std::smatch m;
  if (!std::regex_match(out.url, m, kUrl)) {
    device.fail("url",
                "must be http://host[:port][/path] (no user info, query or fragment), got '" + out.url + "'");
  }
  out.host = m[1].str();
  if (out.host.front() == '[') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  if (m[3].matched) {
    const int port = std::stoi(m[3].str());
    if (port < 1 || port > 65535) {
      device.fail("url", "port must be between 1 and 65535, got " + m[3].str());
    }
    out.port = static_cast<std::uint16_t>(port);
  }
  out.base_path = m[4].str();
  // "." and ".." segments would be resolved away by some servers and not others: refuse them.
  const std::string padded = out.base_path + "/";
  if (padded.find("/./") != std::string::npos || padded.find("/../") != std::string::npos) {
    device.fail("url", "the path must not contain '.' or '..' segments, got '" + out.url + "'");
  }
}

void read_token(Section& device, RecorderDockConfig& out) {
  out.token_file = device.required<std::string>(
      "token_file",
      {.allowed = "the path of a file (mode 0600 or stricter) holding the station's bearer token"});
  const std::string path = config::resolve_path(device, out.token_file);
  std::string token = config::read_named_file(device, "token_file", path, "token file", true);
  // A trailing line end is how editors and `echo` leave the file; it is not part of the secret.
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) {
    token.pop_back();
  }
  if (token.empty()) {
    device.fail("token_file", "token file '" + path + "' is empty");
  }
  // The token goes into an Authorization header: a space or control character would split or forge it.
  for (const char c : token) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F) {
      device.fail("token_file",
                  "token file '" + path +
                      "' must hold the token on a single line without spaces or control characters");
    }
  }
  out.token = std::move(token);
}

}  // namespace

RecorderDockConfig parse_recorder_dock_config(config::Section& device) {
  RecorderDockConfig out;
  out.id = device.required<std::string>("id");
  parse_url(device, out);
  read_token(device, out);
  out.poll_interval_ms =
      device.optional<int>("poll_interval_ms", out.poll_interval_ms, {.min = 200, .max = 3600000});
  // The spec caps a listing at 500 files.
  out.list_limit = device.optional<int>("list_limit", out.list_limit, {.min = 1, .max = 500});
  out.max_parallel_downloads =
      device.optional<int>("max_parallel_downloads", out.max_parallel_downloads, {.min = 1, .max = 16});
  out.request_timeout_s =
      device.optional<int>("request_timeout_s", out.request_timeout_s, {.min = 1, .max = 3600});
  out.download_idle_timeout_s =
      device.optional<int>("download_idle_timeout_s", out.download_idle_timeout_s, {.min = 1, .max = 3600});
  out.max_md5_attempts =
      device.optional<int>("max_md5_attempts", out.max_md5_attempts, {.min = 1, .max = 10});
  out.reconnect_initial_ms =
      device.optional<int>("reconnect_initial_ms", out.reconnect_initial_ms, {.min = 10, .max = 600000});
  out.reconnect_max_ms =
      device.optional<int>("reconnect_max_ms", out.reconnect_max_ms, {.min = 10, .max = 3600000});
  if (out.reconnect_max_ms < out.reconnect_initial_ms) {
    device.fail("reconnect_max_ms", "must be at least reconnect_initial_ms (" +
                                        std::to_string(out.reconnect_initial_ms) + "), got " +
                                        std::to_string(out.reconnect_max_ms));
  }
  out.auth_backoff_s = device.optional<int>("auth_backoff_s", out.auth_backoff_s, {.min = 1, .max = 86400});
  out.recorder_clock_tolerance_s = device.optional<int>(
      "recorder_clock_tolerance_s", out.recorder_clock_tolerance_s, {.min = 0, .max = 3600});
  // Files beyond these bounds wait on the station; an entry larger than the byte bound is still taken
  // when nothing else is pending, so no entry can stall the station for good.
  out.max_pending_files =
      device.optional<int>("max_pending_files", out.max_pending_files, {.min = 1, .max = 100000});
  out.max_pending_entry_bytes =
      device.optional<std::int64_t>("max_pending_entry_bytes", out.max_pending_entry_bytes,
                                    {.min = std::int64_t{1} << 20, .max = std::int64_t{1} << 30});
  device.finish();
  return out;
}

}  // namespace cpd::adapters
