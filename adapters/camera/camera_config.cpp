// Reads a `kind: camera` device section: the ISAPI base URL, credentials (password from a private file),
// the radar it pairs with, and timings. The password never appears in any message.
#include "adapters/camera/camera_config.h"

#include <regex>
#include <string>

#include "daemon/config/schema.h"

namespace cpd::adapters {

namespace {

using config::Rule;
using config::Section;

void parse_url(Section& device, CameraConfig& out) {
  out.url = device.required<std::string>("url", {.allowed = "the camera's base URL, http://host[:port]"});
  if (out.url.rfind("https://", 0) == 0) {
    device.fail("url",
                "https is not supported yet (the cameras speak plain HTTP with Digest auth); "
                "use http://host[:port], got '" +
                    out.url + "'");
  }
  static const std::regex kUrl(
      R"(http://([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(:([0-9]{1,5}))?/?)");
  std::smatch m;
  if (!std::regex_match(out.url, m, kUrl)) {
    device.fail("url", "must be http://host[:port] (no path, no user info), got '" + out.url + "'");
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
}

void read_password(Section& device, CameraConfig& out) {
  out.password_file = device.required<std::string>(
      "password_file", {.allowed = "the path of a file (mode 0600 or stricter) holding the camera password"});
  const std::string path = config::resolve_path(device, out.password_file);
  std::string password = config::read_named_file(device, "password_file", path, "password file", true);
  // One trailing line end is how editors and `echo` leave the file; it is not part of the secret.
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (password.empty()) {
    device.fail("password_file", "password file '" + path + "' is empty");
  }
  if (password.find_first_of("\r\n") != std::string::npos) {
    device.fail("password_file", "password file '" + path + "' must hold the password on a single line");
  }
  out.password = std::move(password);
}

}  // namespace

CameraConfig parse_camera_config(config::Section& device) {
  CameraConfig out;
  out.id = device.required<std::string>("id");
  parse_url(device, out);
  out.username = device.required<std::string>(
      "username",
      {.pattern = "[^:\\s\"\\\\]{1,64}",
       .allowed = "the camera user name, 1 to 64 characters without ':', quotes, backslash or spaces"});
  read_password(device, out);
  out.auth = device.optional<std::string>("auth", out.auth, {.one_of = {"digest", "basic"}});
  out.radar = device.required<std::string>(
      "radar", {.pattern = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
                .allowed = "the id of the radar device whose lanes this camera watches"});
  out.time_poll_s = device.optional<int>("time_poll_s", out.time_poll_s, {.min = 5, .max = 86400});
  out.stream_idle_timeout_s =
      device.optional<int>("stream_idle_timeout_s", out.stream_idle_timeout_s, {.min = 11, .max = 600});
  out.picture_wait_ms =
      device.optional<int>("picture_wait_ms", out.picture_wait_ms, {.min = 50, .max = 60000});
  out.reconnect_initial_ms =
      device.optional<int>("reconnect_initial_ms", out.reconnect_initial_ms, {.min = 10, .max = 600000});
  out.reconnect_max_ms =
      device.optional<int>("reconnect_max_ms", out.reconnect_max_ms, {.min = 10, .max = 3600000});
  if (out.reconnect_max_ms < out.reconnect_initial_ms) {
    device.fail("reconnect_max_ms", "must be at least reconnect_initial_ms (" +
                                        std::to_string(out.reconnect_initial_ms) + "), got " +
                                        std::to_string(out.reconnect_max_ms));
  }
  // The camera locks a user after 5 failures for 30 min; a minute between tries keeps well clear of it.
  out.auth_backoff_s = device.optional<int>("auth_backoff_s", out.auth_backoff_s, {.min = 60, .max = 86400});
  device.finish();
  return out;
}

}  // namespace cpd::adapters
