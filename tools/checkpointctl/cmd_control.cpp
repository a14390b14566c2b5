// checkpointctl status and tail: talk to the running checkpointd over its local control socket
// (docs/control.md) and show a technician what it is doing, as a table or as JSON.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/core/encoding.h"
#include "tools/checkpointctl/commands.h"
#include "tools/checkpointctl/record_line.h"

namespace cpd::ctl {

namespace {

using json = nlohmann::json;

constexpr int kExitDaemonError = 1;  // the daemon answered with an error, or ended the tail early
constexpr int kExitUnreachable = 3;
constexpr int kExitOutcomeUnknown = 4;  // rotate-key: asked, but no answer came; the rotation may commit

constexpr const char* kDefaultSocket = "/var/lib/checkpointd/control.sock";
constexpr int kAnswerTimeoutMs = 10'000;
constexpr int kRotateTimeoutMs = 30'000;  // a rotation waits for its record's commit

constexpr const char* kExitCodes =
    "Exit codes: 0 ok; 1 the daemon answered with an error or ended the stream early (tail cut off as too\n"
    "slow, daemon stopped); 2 usage or config error; 3 the daemon is not reachable (no socket, nothing\n"
    "listening, permission denied, no answer within 10 s); 4 rotate-key only: the daemon took the request\n"
    "but did not answer within 30 s, so the rotation may still commit (see 'checkpointctl status').";

std::atomic<bool> g_tail_interrupted{false};

extern "C" void on_control_signal(int /*sig*/) {
  g_tail_interrupted.store(true);
}

// Failures carry their exit code and a message for stderr.
struct CtlError : std::runtime_error {
  CtlError(int code, const std::string& what) : std::runtime_error(what), exit_code(code) {}
  int exit_code;
};

struct Target {
  std::string socket;
  std::string config;
};

std::string resolve_socket(const Target& t) {
  if (!t.socket.empty()) {
    return t.socket;
  }
  if (!t.config.empty()) {
    try {
      return config::load_config(t.config).control.socket;
    } catch (const std::exception& e) {
      throw CtlError(kExitUsage, std::string("cannot take the control socket from the config: ") + e.what());
    }
  }
  return kDefaultSocket;
}

// A blocking client connection to the control socket, reading newline-delimited JSON.
class ControlClient {
 public:
  explicit ControlClient(const std::string& path) : path_(path) {
    sockaddr_un addr{};
    if (path.size() >= sizeof(addr.sun_path)) {
      throw CtlError(kExitUsage, "socket path " + path + " is too long for a unix socket");
    }
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      throw CtlError(kExitUnreachable, std::string("cannot create a socket: ") + std::strerror(errno));
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      const int err = errno;
      ::close(fd_);
      fd_ = -1;
      throw CtlError(kExitUnreachable, explain_connect_error(path, err));
    }
  }
  ~ControlClient() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  void send_line(const std::string& line) {
    const std::string text = line + "\n";
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::send(fd_, text.data() + done, text.size() - done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        throw CtlError(kExitUnreachable,
                       "lost the connection to checkpointd at " + path_ + ": " + std::strerror(errno));
      }
      done += static_cast<std::size_t>(n);
    }
  }

  // The next line; nullopt when the daemon closed the connection or (timeout_ms >= 0) nothing came in
  // time (then timed_out() is true) or the user pressed Ctrl-C.
  std::optional<std::string> read_line(int timeout_ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    timed_out_ = false;
    while (true) {
      if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      if (g_tail_interrupted.load()) {
        return std::nullopt;
      }
      int slice = 200;  // wake up now and then to notice Ctrl-C
      if (timeout_ms >= 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          timed_out_ = true;
          return std::nullopt;
        }
        slice = static_cast<int>(std::min<std::int64_t>(slice, left.count()));
      }
      pollfd p{fd_, POLLIN, 0};
      const int rc = ::poll(&p, 1, slice);
      if (rc < 0 && errno != EINTR) {
        return std::nullopt;
      }
      if (rc <= 0) {
        continue;
      }
      char chunk[65536];
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      }
      if (n <= 0) {
        return std::nullopt;
      }
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  bool timed_out() const { return timed_out_; }

 private:
  static std::string explain_connect_error(const std::string& path, int err) {
    switch (err) {
      case ENOENT:
        return "no control socket at " + path +
               ": is checkpointd running? Check with 'systemctl status checkpointd'. If it runs with another "
               "config, pass --config FILE (or --socket PATH).";
      case ECONNREFUSED:
        return "nothing is listening on " + path +
               " (connection refused): checkpointd is not running; the socket is left from an earlier run. "
               "Check with 'systemctl status checkpointd' and 'journalctl -u checkpointd'.";
      case EACCES:
      case EPERM:
        return "permission denied on " + path +
               ": run as root or as a member of group checkpointd (sudo usermod -aG checkpointd $USER, then "
               "log in again).";
      case ENOTDIR:
        return "cannot reach " + path + ": a part of the path is not a directory; check --socket/--config.";
      default:
        return "cannot connect to " + path + ": " + std::strerror(err);
    }
  }

  std::string path_;
  int fd_ = -1;
  std::string buf_;
  bool timed_out_ = false;
};

// ---- status: the human table --------------------------------------------------------------------------

std::string age_text(std::int64_t now_ms, std::int64_t then_ms) {
  if (then_ms <= 0) {
    return "never";
  }
  const double s = static_cast<double>(std::max<std::int64_t>(0, now_ms - then_ms)) / 1000.0;
  char buf[32];
  if (s < 10) {
    std::snprintf(buf, sizeof(buf), "%.1f s", s);
  } else if (s < 120) {
    std::snprintf(buf, sizeof(buf), "%.0f s", s);
  } else if (s < 7200) {
    std::snprintf(buf, sizeof(buf), "%.0f min", s / 60);
  } else if (s < 172800) {
    std::snprintf(buf, sizeof(buf), "%.0f h", s / 3600);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f d", s / 86400);
  }
  return buf;
}

std::string bytes_text(const json& v) {
  if (!v.is_number()) {
    return "?";
  }
  const double b = v.get<double>();
  if (b >= 1.8e19) {
    return "unknown";
  }
  char buf[32];
  if (b >= 1024.0 * 1024 * 1024) {
    std::snprintf(buf, sizeof(buf), "%.1f GiB", b / (1024.0 * 1024 * 1024));
  } else if (b >= 1024.0 * 1024) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", b / (1024.0 * 1024));
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f KiB", b / 1024.0);
  }
  return buf;
}

// Device text reaches the technician's terminal: no control sequences.
std::string printable(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      c = '?';
    }
  }
  return s;
}

std::string text_of(const json& v, const std::string& fallback = "-") {
  if (v.is_string()) {
    return printable(v.get<std::string>());
  }
  if (v.is_null()) {
    return fallback;
  }
  return v.dump();
}

std::int64_t int_of(const json& obj, const char* key, std::int64_t fallback = 0) {
  if (obj.is_object()) {
    if (auto it = obj.find(key); it != obj.end() && it->is_number()) {
      return it->is_number_float() ? static_cast<std::int64_t>(std::llround(it->get<double>()))
                                   : it->get<std::int64_t>();
    }
  }
  return fallback;
}

std::string signed_ms(const json& v) {
  if (!v.is_number()) {
    return "-";
  }
  const double ms = v.get<double>();
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%+.0f ms", ms);
  return buf;
}

struct DeviceRow {
  std::string id, kind, state, last_event, counts, errors, reconnects, clock;
  std::vector<std::string> notes;
};

DeviceRow device_row(const std::string& id, const json& d, std::int64_t now_ms) {
  DeviceRow r;
  r.id = printable(id);
  r.kind = text_of(d.value("kind", json()));
  r.state = text_of(d.value("state", json()));
  // The lead's generic last_event_ms when present; a radar's last frame otherwise.
  std::int64_t last = int_of(d, "last_event_ms");
  if (last <= 0) {
    last = int_of(d, "last_frame_ms");
  }
  r.last_event = last > 0 ? age_text(now_ms, last) + " ago" : "never";
  if (d.value("kind", std::string()) == "recorder_dock" && !d.contains("last_event_ms")) {
    r.last_event = "-";
  }
  std::vector<std::string> counts;
  if (d.contains("frames")) {
    counts.push_back(std::to_string(int_of(d, "frames")) + " frames");
  }
  if (d.contains("events")) {
    counts.push_back(std::to_string(int_of(d, "events")) + " events");
  }
  if (d.contains("collected")) {
    counts.push_back(std::to_string(int_of(d, "collected")) + " files");
  }
  r.counts = counts.empty() ? "-" : counts.front();
  for (std::size_t i = 1; i < counts.size(); ++i) {
    r.counts += ", " + counts[i];
  }
  std::int64_t errors = 0;
  std::string breakdown;
  if (auto it = d.find("errors"); it != d.end() && it->is_object()) {
    for (const auto& [reason, n] : it->items()) {
      if (n.is_number_integer() && n.get<std::int64_t>() > 0) {
        errors += n.get<std::int64_t>();
        breakdown += (breakdown.empty() ? "" : ", ") + printable(reason) + " " + n.dump();
      }
    }
  }
  r.errors = std::to_string(errors);
  r.reconnects = d.contains("reconnects") ? std::to_string(int_of(d, "reconnects")) : "-";
  // Each adapter names its clock offset its own way. A radar has no wall clock: its `clock.offset_ms` maps
  // a since-power-up counter onto UTC, not a clock error, so the column says how many frames it rests on.
  json offset;
  if (d.contains("clock") && d["clock"].is_object() && d.value("kind", "") == "radar") {
    r.clock = "no clock (" + std::to_string(int_of(d["clock"], "samples")) + " frames mapped)";
    offset = nullptr;
  } else if (d.contains("clock_offset_ms")) {
    offset = d["clock_offset_ms"];
  } else if (d.contains("station_clock_offset_ms")) {
    offset = d["station_clock_offset_ms"];
  }
  if (r.clock.empty()) {
    r.clock = signed_ms(offset);
  }
  if (offset.is_number() && d.contains("clock_offset_uncertainty_ms") &&
      d["clock_offset_uncertainty_ms"].is_number()) {
    r.clock += " ±" + std::to_string(int_of(d, "clock_offset_uncertainty_ms"));
  }
  if (!breakdown.empty()) {
    r.notes.push_back("errors: " + breakdown);
  }
  if (auto it = d.find("last_error"); it != d.end() && it->is_string() && !it->get<std::string>().empty()) {
    r.notes.push_back("last error: " + printable(it->get<std::string>()));
  }
  if (auto it = d.find("status_text");
      it != d.end() && it->is_string() && !it->get<std::string>().empty() && int_of(d, "status_code") != 0) {
    r.notes.push_back("device says: " + printable(it->get<std::string>()));
  }
  return r;
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line += std::string(width[i] - row[i].size() + 2, ' ');
      }
    }
    out << "  " << line << '\n';
  }
}

// One row per device, then the notes a device carries.
void print_devices(std::ostream& out, const json& s, std::int64_t now) {
  out << "\nDevices:\n";
  const json devices = s.value("devices", json::object());
  if (!devices.is_object() || devices.empty()) {
    out << "  (none configured)\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"DEVICE", "KIND", "STATE", "LAST EVENT", "FRAMES/EVENTS", "ERRORS", "RECONNECTS", "CLOCK OFFSET"}};
    std::vector<std::pair<std::string, std::vector<std::string>>> notes;
    for (const auto& [id, d] : devices.items()) {
      const DeviceRow r = device_row(id, d, now);
      rows.push_back({r.id, r.kind, r.state, r.last_event, r.counts, r.errors, r.reconnects, r.clock});
      if (!r.notes.empty()) {
        notes.emplace_back(r.id, r.notes);
      }
    }
    print_table(out, rows);
    for (const auto& [id, lines] : notes) {
      for (const auto& line : lines) {
        out << "  " << id << ": " << line << '\n';
      }
    }
  }
}

// The broker link, and why it refuses records when it does.
void print_broker(std::ostream& out, const json& s, std::int64_t now) {
  if (const json b = s.value("broker", json()); b.is_object()) {
    const bool connected = b.value("connected", false);
    out << "Broker:   " << (connected ? "connected" : "NOT connected") << " to "
        << text_of(b.value("uri", json())) << ", acked seq " << int_of(b, "acked_seq") << ", published "
        << int_of(b, "published") << ", connects " << int_of(b, "connects") << ", disconnects "
        << int_of(b, "disconnects") << '\n';
    if (const json r = b.value("refusing", json()); r.is_object()) {
      // The broker takes the connection but refuses the records (an ACL, a quota): nothing is forwarded.
      out << "          REFUSING publishes for " << age_text(now, int_of(r, "since_ms")) << ": "
          << printable(text_of(r.value("reason", json()), "?")) << " (reason " << int_of(r, "reason_code")
          << "), seq " << int_of(r, "seq") << ", " << int_of(r, "attempts")
          << " attempts; records stay in the outbox";
      if (const std::int64_t retry = int_of(r, "retry_at_ms"); retry > now && now > 0) {
        out << ", next try in " << age_text(retry, now);
      }
      out << '\n';
    }
    if (b.contains("last_error") && b["last_error"].is_string()) {
      out << "          last error: " << printable(b["last_error"].get<std::string>()) << '\n';
    }
  }
}

// The store and media file systems and the storage alarm.
void print_storage(std::ostream& out, const json& s) {
  if (const json st = s.value("storage", json()); st.is_object() && !st.empty()) {
    out << "Storage:  " << text_of(st.value("state", json()), "?");
    if (st.contains("text") && st["text"].is_string() && !st["text"].get<std::string>().empty()) {
      out << " (" << printable(st["text"].get<std::string>()) << ")";
    }
    out << ", store free " << bytes_text(st.value("store_free_bytes", json())) << ", media free "
        << bytes_text(st.value("media_free_bytes", json())) << ", reserve "
        << bytes_text(st.value("reserve_bytes", json()));
    if (int_of(st, "commit_failures") > 0 || int_of(st, "refused_media_writes") > 0) {
      out << ", commit failures " << int_of(st, "commit_failures") << ", refused media writes "
          << int_of(st, "refused_media_writes");
    }
    out << '\n';
  }
}

// How far central's custody reaches and what it allowed to be pruned.
void print_custody(std::ostream& out, const json& s, std::int64_t now) {
  if (const json c = s.value("custody", json()); c.is_object() && c.value("enabled", false)) {
    out << "Custody:  ";
    if (int_of(c, "through_seq") > 0) {
      out << "central " << text_of(c.value("central", json()), "?") << " holds seq 1.."
          << int_of(c, "through_seq") << " (receipt " << age_text(now, int_of(c, "receipt_ms")) << " ago)";
    } else {
      out << "no receipt yet: nothing is deleted";
    }
    if (c.contains("oldest_not_in_custody_ms") && c["oldest_not_in_custody_ms"].is_number()) {
      out << ", oldest record not in custody " << age_text(now, int_of(c, "oldest_not_in_custody_ms"))
          << " old";
    }
    out << ", receipts accepted " << int_of(c, "receipts_accepted") << ", resends served "
        << int_of(c, "resend_requests") << " (" << int_of(c, "resent_records") << " records, "
        << int_of(c, "resent_media") << " pictures; " << int_of(c, "resend_refused") << " refused), pruned "
        << int_of(c, "pruned_records") << " records and " << int_of(c, "pruned_media") << " pictures";
    if (int_of(c, "inputs_dropped") > 0) {
      out << ", inputs DROPPED " << int_of(c, "inputs_dropped");
    }
    if (int_of(c, "receipts_refused") > 0) {
      out << ", receipts REFUSED " << int_of(c, "receipts_refused")
          << " (last: " << printable(text_of(c.value("last_refusal", json()), "")) << ")";
    }
    out << '\n';
  }
}

// The gateway clock's synchronisation.
void print_clock(std::ostream& out, const json& s) {
  if (const json c = s.value("clock_sync", json()); c.is_object()) {
    const bool synced = c.value("synced", false);
    out << "Clock:    " << (synced ? "synchronised" : "NOT synchronised") << " (source "
        << text_of(c.value("source", json()), "?") << ")";
    // What the kernel says of its own clock (adjtimex): the bound on its error and its estimate.
    if (c.contains("max_error_us") || c.contains("est_error_us")) {
      out << ", max error " << int_of(c, "max_error_us") << " us, estimated error "
          << int_of(c, "est_error_us") << " us";
    }
    out << '\n';
  } else {
    out << "Clock:    (not reported by this checkpointd)\n";
  }
}

void print_status(std::ostream& out, const json& s, const std::string& socket) {
  const std::int64_t now = int_of(s, "time_ms");
  out << "checkpointd status" << (now > 0 ? " at " + iso8601_utc(now) : std::string()) << " (" << socket
      << ")\n";

  print_devices(out, s, now);
  out << '\n';
  const std::int64_t backlog = int_of(s, "backlog");
  out << "Backlog:  " << backlog << (backlog == 1 ? " record" : " records")
      << " not yet acknowledged by the broker";
  if (backlog > 0 && int_of(s, "backlog_oldest_ms") > 0) {
    out << ", oldest " << age_text(now, int_of(s, "backlog_oldest_ms")) << " old";
  }
  out << '\n';

  print_broker(out, s, now);
  print_storage(out, s);
  print_custody(out, s, now);
  if (const json k = s.value("kid", json()); k.is_string()) {
    out << "Key:      signing with kid " << k.get<std::string>() << '\n';
  }

  print_clock(out, s);
}

// ---- commands -------------------------------------------------------------------------------------------

int run_status(const Target& target, bool as_json) {
  const std::string path = resolve_socket(target);
  ControlClient client(path);
  client.send_line(R"({"cmd":"status"})");
  const auto line = client.read_line(kAnswerTimeoutMs);
  if (!line) {
    if (client.timed_out()) {
      throw CtlError(kExitUnreachable, "checkpointd at " + path +
                                           " did not answer within 10 s: is its event "
                                           "loop stuck? Check 'journalctl -u checkpointd'.");
    }
    throw CtlError(kExitUnreachable, "checkpointd at " + path + " closed the connection without an answer");
  }
  const json snapshot = json::parse(*line, nullptr, false);
  if (!snapshot.is_object()) {
    throw CtlError(kExitDaemonError, "checkpointd sent something that is not a JSON object");
  }
  if (snapshot.size() == 1 && snapshot.contains("error")) {
    throw CtlError(kExitDaemonError, "checkpointd: " + text_of(snapshot["error"]));
  }
  if (as_json) {
    std::cout << snapshot.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
  } else {
    print_status(std::cout, snapshot, path);
  }
  return kExitOk;
}

// The record body from a compact JWS (not verified here: the daemon signed it a moment ago; use
// `checkpointctl verify` on the feed for that).
std::optional<json> decode_body(const std::string& jws) {
  const auto first = jws.find('.');
  const auto second = first == std::string::npos ? std::string::npos : jws.find('.', first + 1);
  if (second == std::string::npos) {
    return std::nullopt;
  }
  const auto payload = base64url_decode(std::string_view(jws).substr(first + 1, second - first - 1));
  if (!payload) {
    return std::nullopt;
  }
  json body = json::parse(*payload, nullptr, false);
  if (!body.is_object()) {
    return std::nullopt;
  }
  return body;
}

int run_tail(const Target& target, bool as_json, std::uint64_t count) {
  const std::string path = resolve_socket(target);
  ControlClient client(path);
  std::signal(SIGINT, on_control_signal);
  std::signal(SIGTERM, on_control_signal);
  client.send_line(R"({"cmd":"tail"})");
  const auto ack = client.read_line(kAnswerTimeoutMs);
  if (!ack) {
    throw CtlError(kExitUnreachable, client.timed_out()
                                         ? "checkpointd at " + path + " did not answer within 10 s"
                                         : "checkpointd at " + path + " closed the connection");
  }
  if (const json a = json::parse(*ack, nullptr, false); !a.is_object() || !a.contains("tail")) {
    throw CtlError(kExitDaemonError, "checkpointd refused the tail: " + printable(*ack));
  }
  std::uint64_t shown = 0;
  while (count == 0 || shown < count) {
    const auto line = client.read_line(-1);
    if (!line) {
      if (g_tail_interrupted.load()) {
        return kExitOk;
      }
      throw CtlError(kExitDaemonError, "checkpointd closed the connection after " + std::to_string(shown) +
                                           " records (stopped or restarted?)");
    }
    const json rec = json::parse(*line, nullptr, false);
    if (!rec.is_object()) {
      continue;
    }
    if (rec.contains("error")) {
      throw CtlError(kExitDaemonError, "checkpointd ended the tail: " + text_of(rec["error"]));
    }
    if (!rec.contains("seq") || !rec["seq"].is_number_unsigned() || !rec.contains("jws") ||
        !rec["jws"].is_string()) {
      continue;  // lines this version does not know are skipped
    }
    const auto seq = rec["seq"].get<std::uint64_t>();
    const auto body = decode_body(rec["jws"].get<std::string>());
    if (as_json) {
      std::cout << (body ? body->dump(-1, ' ', false, json::error_handler_t::replace)
                         : json{{"seq", seq}, {"undecodable", true}}.dump())
                << '\n';
    } else if (body) {
      std::cout << record_line(seq, *body) << '\n';
    } else {
      std::cout << "seq " << seq << "  " << text_of(rec.value("type", json()), "?")
                << "  (undecodable record)\n";
    }
    std::cout.flush();
    ++shown;
  }
  return kExitOk;
}

// Asks the daemon to rotate its signing key and waits for the key_rotation record to be committed.
int run_rotate_key(const Target& target, bool as_json) {
  const std::string path = resolve_socket(target);
  ControlClient client(path);
  client.send_line(R"({"cmd":"rotate_key"})");
  const auto line = client.read_line(kRotateTimeoutMs);
  if (!line) {
    // The request was sent: the daemon may have taken it, and its key_rotation record may still commit.
    // Neither "done" nor "not reachable" would be true; exit 4 says so, and where to look.
    throw CtlError(
        kExitOutcomeUnknown,
        "checkpointd at " + path +
            (client.timed_out() ? " did not confirm the rotation within 30 s (its store may be slow "
                                  "or failing to commit)"
                                : " closed the connection without an answer") +
            ": the rotation may or may not have happened; 'checkpointctl status' shows the kid "
            "in use. Do not ask again before checking it");
  }
  const json answer = json::parse(*line, nullptr, false);
  if (!answer.is_object()) {
    throw CtlError(kExitDaemonError, "checkpointd sent something that is not a JSON object");
  }
  if (answer.contains("error")) {
    throw CtlError(kExitDaemonError, "checkpointd: " + text_of(answer["error"]));
  }
  const json r = answer.value("rotated", json::object());
  if (as_json) {
    std::cout << r.dump() << '\n';
  } else {
    std::cout << "rotated at seq " << int_of(r, "seq") << ": kid " << text_of(r.value("old_kid", json()), "?")
              << " -> " << text_of(r.value("new_kid", json()), "?")
              << "\n  new key: " << text_of(r.value("key_file", json()), "?")
              << "\n  old key kept as: " << text_of(r.value("old_key_file", json()), "?") << '\n';
    if (r.contains("warning")) {
      std::cout << "  warning: " << text_of(r["warning"]) << '\n';
    }
  }
  return kExitOk;
}

int report(const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const CtlError& e) {
    std::cerr << "checkpointctl: " << e.what() << '\n';
    return e.exit_code;
  }
}

void add_target_options(CLI::App* sub, Target& t) {
  auto* socket = sub->add_option(
      "--socket", t.socket, std::string("Control socket of the daemon (default ") + kDefaultSocket + ")");
  auto* cfg = sub->add_option("--config", t.config, "Take the socket from this config file (control.socket)");
  socket->excludes(cfg);
}

}  // namespace

std::vector<Command> add_control_commands(CLI::App& app) {
  // Options live as long as the app: the commands run after parsing.
  static Target status_target;
  static bool status_json = false;
  static Target tail_target;
  static bool tail_json = false;
  static std::uint64_t tail_count = 0;
  static Target rotate_target;
  static bool rotate_json = false;

  auto* status = app.add_subcommand("status",
                                    "Show what the running checkpointd is doing (devices, backlog, "
                                    "broker, storage, clock)");
  add_target_options(status, status_target);
  status->add_flag("--json", status_json, "Print the daemon's status snapshot as JSON");
  status->footer(
      std::string("Asks the running daemon over its control socket. Per device: kind, state (connected or "
                  "not), age of the\nlast event, frames/events, error counts (reasons below the table), "
                  "reconnects, clock offset;\nthen the backlog (records not yet acknowledged by the broker "
                  "and the oldest one's age), the broker\nconnection, storage and the gateway's clock "
                  "sync.\n"
                  "Examples:\n"
                  "  checkpointctl status\n"
                  "  checkpointctl status --config /etc/checkpointd/checkpointd.yaml\n"
                  "  checkpointctl status --json | jq '.devices[\"radar-1\"].state'\n") +
      kExitCodes);

  auto* tail = app.add_subcommand("tail", "Follow records as checkpointd seals them, one line each");
  add_target_options(tail, tail_target);
  tail->add_flag("--json", tail_json, "Print each whole decoded record (JSON, one per line)");
  tail->add_option("--count", tail_count, "Stop after N records (default: follow until Ctrl-C)")
      ->check(CLI::PositiveNumber);
  tail->footer(
      std::string("Each line: seq, type, time (UTC) and the fields looked for first (plate, speed, device, "
                  "lane, ...).\nRecords are shown as committed to the store, before they reach the broker; "
                  "they are not verified\nhere (use 'checkpointctl verify' on the feed). A reader that falls "
                  "more than 4 MiB behind is cut off\nby the daemon (exit 1).\n"
                  "Examples:\n"
                  "  checkpointctl tail\n"
                  "  checkpointctl tail --count 10\n"
                  "  checkpointctl tail --json | jq 'select(.type == \"speed_measurement\") | .plate'\n") +
      kExitCodes);

  auto* rotate = app.add_subcommand(
      "rotate-key", "Make the running checkpointd switch to a new signing key, announced in its chain");
  add_target_options(rotate, rotate_target);
  rotate->add_flag("--json", rotate_json,
                   "Print the daemon's answer as JSON (seq, old_kid, new_kid, key files)");
  rotate->footer(
      std::string(
          "The daemon writes a new Ed25519 key beside gateway.key, seals a key_rotation record signed by "
          "the old key\nthat names the new one, and signs every later record with the new key; the old "
          "key file is kept as\n<gateway.key>.retired-<kid>. Central enrols the new key when it stores "
          "the record (docs/custody.md).\n"
          "Examples:\n"
          "  checkpointctl rotate-key\n"
          "  checkpointctl rotate-key --config /etc/checkpointd/checkpointd.yaml --json\n") +
      kExitCodes);

  return {
      Command{rotate, [] { return report([] { return run_rotate_key(rotate_target, rotate_json); }); }},
      Command{status, [] { return report([] { return run_status(status_target, status_json); }); }},
      Command{tail, [] { return report([] { return run_tail(tail_target, tail_json, tail_count); }); }},
  };
}

}  // namespace cpd::ctl
