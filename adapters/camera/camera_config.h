// The ANPR camera's config section (ISAPI over HTTP, Digest or Basic auth).
#pragma once

#include <cstdint>
#include <string>

namespace cpd::config {
class Section;
}

namespace cpd::adapters {

struct CameraConfig {
  std::string id;
  std::string url;   // http://host[:port] (base of the ISAPI paths)
  std::string host;  // parsed from url
  std::uint16_t port = 80;
  std::string username;
  std::string password_file;    // the secret is read from this file (mode 0600 or stricter), never the config
  std::string password;         // filled at load from password_file; never logged or written to records
  std::string auth = "digest";  // digest | basic
  std::string radar;            // the radar device whose lanes this camera watches
  int time_poll_s = 60;         // GET /ISAPI/System/time interval, for the clock offset
  int stream_idle_timeout_s = 30;  // no bytes for this long: the stream is dead, reconnect
  int picture_wait_ms = 3000;      // how long announced pictures may take to arrive
  int reconnect_initial_ms = 500;
  int reconnect_max_ms = 30000;
  int auth_backoff_s = 300;  // after a 401/403: wait this long before trying again (lock-out is 5 tries)

  bool operator==(const CameraConfig&) const = default;
};

CameraConfig parse_camera_config(config::Section& device);

}  // namespace cpd::adapters
