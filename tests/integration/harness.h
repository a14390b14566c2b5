// Integration-test harness: real processes (daemon, simulators, mosquitto) on free loopback ports, a temp
// directory per test, and an MQTT collector. Nothing here is mocked.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mqtt {
class async_client;
}  // namespace mqtt

namespace cpd::testing {

namespace fs = std::filesystem;

std::string build_dir();  // $CPD_BUILD_DIR
// Built with ASan+UBSan (make sanitize): RSS figures include shadow memory and everything runs slower, so
// tests skip memory bounds and widen latency bounds there.
#ifdef CPD_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

std::string binary(const std::string& relative);  // build_dir()/relative, checked to exist
std::uint16_t free_port();
void pause(std::chrono::milliseconds d);
bool wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout);

// A temp directory removed at destruction unless the test failed (then kept for inspection).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// A child process with stdout and stderr sent to files.
class Process {
 public:
  Process(std::vector<std::string> argv, const fs::path& log_prefix);
  ~Process();  // SIGKILLs if still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int signo);
  // Waits for exit; returns the exit code (128+signal if killed), nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  std::string stdout_text() const;
  std::string stderr_text() const;
  // Waits until stdout has a line starting with `prefix`; returns the line.
  std::optional<std::string> wait_for_stdout_line(const std::string& prefix,
                                                  std::chrono::milliseconds timeout);
  std::optional<std::string> wait_for_stderr_line(const std::string& prefix,
                                                  std::chrono::milliseconds timeout);

 private:
  std::optional<std::string> wait_for_line(std::string (Process::*text)() const, const std::string& prefix,
                                           std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  fs::path out_;
  fs::path err_;
};

// A broker that speaks only TLS on its port (no plaintext listener at all), optionally with passwords.
struct MosquittoOptions {
  struct Tls {
    fs::path ca_file;  // CA that client certificates must chain to (and that signed cert_file)
    fs::path cert_file;
    fs::path key_file;
    bool require_client_cert = false;  // mutual TLS
  };
  std::optional<Tls> tls;
  fs::path password_file;  // mosquitto_passwd file; set: anonymous clients are refused
};

class Mosquitto {
 public:
  // Persistence on (so queued messages for persistent subscribers survive a graceful restart).
  Mosquitto(const fs::path& dir, std::uint16_t port = 0);
  Mosquitto(const fs::path& dir, std::uint16_t port, const MosquittoOptions& options);
  void start();
  void stop();  // graceful (SIGTERM), saves persistence
  std::uint16_t port() const { return port_; }
  Process& process() { return *proc_; }  // the running broker, for SIGSTOP/SIGKILL in fault tests
  std::string uri() const { return (tls_ ? "ssl://127.0.0.1:" : "tcp://127.0.0.1:") + std::to_string(port_); }
  std::string log_text() const;  // the broker's log file

 private:
  fs::path dir_;
  std::uint16_t port_;
  bool tls_ = false;
  std::unique_ptr<Process> proc_;
};

// A plain MQTT v5 client for a test's own publishing (a fake central, a hostile peer): QoS 1 with at most 64
// tokens in flight, as fast as the broker acknowledges; clean start, no persistence.
class MqttPublisher {
 public:
  MqttPublisher(const std::string& uri, const std::string& id);
  ~MqttPublisher();  // waits for what is in flight, then disconnects
  void publish(const std::string& topic, const std::string& payload, const std::string& response_topic = "",
               const std::string& correlation = "");
  void drain();
  std::uint64_t sent() const;
  mqtt::async_client& client();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Subscribes with a persistent session (clean start off, fixed id) and QoS 1; keeps every message.
class MqttCollector {
 public:
  struct Message {
    std::string topic;
    std::string payload;
    bool retained = false;
  };
  // For an ssl:// broker: the CA to trust, a client certificate for mutual TLS, credentials.
  struct Options {
    fs::path ca_file;
    fs::path cert_file;
    fs::path key_file;
    std::string username;
    std::string password;
  };
  MqttCollector(const std::string& uri, const std::vector<std::string>& topics);
  MqttCollector(const std::string& uri, const std::vector<std::string>& topics, const Options& options);
  ~MqttCollector();
  std::vector<Message> messages() const;
  std::vector<std::string> payloads(const std::string& topic) const;
  std::size_t count(const std::string& topic) const;  // without copying the messages
  int subscriptions() const;  // subscriptions the broker confirmed: one per (re)connection
  // Waits until `pred()` holds, polling every 50 ms.
  template <class Pred>
  bool wait_until(Pred pred, std::chrono::milliseconds timeout) const {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) {
        return true;
      }
      pause(std::chrono::milliseconds(50));
    }
    return pred();
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A broker outage under a running daemon, without depending on the broker to keep the test subscriber's
// session. Both freeze the daemon (SIGSTOP) and return false if that did not settle within 60 s.
// - stop: waits until everything the broker already accepted has reached `collector` on `topic`, then
//   stops the broker (graceful) and resumes the daemon.
// - start: starts the broker again and resumes the daemon only once `collector` has subscribed again.
//
// Why: seen here with mosquitto 2.0.11, after a graceful restart with persistence on, the gateway's session
// was back (CONNACK session present) but the test subscriber's was not, so whatever the gateway published
// before the subscriber had subscribed again reached nobody - and whatever was still queued for it at the
// stop was gone. Messages the broker acknowledged are the broker's to deliver. Records the daemon had in
// flight stay in flight across the freeze: those are the gateway's to resend, and the tests check it does.
bool stop_broker_with_daemon_frozen(Process& daemon, const MqttCollector& collector, const std::string& topic,
                                    Mosquitto& broker);
bool start_broker_with_daemon_frozen(Process& daemon, const MqttCollector& collector,
                                     const std::string& topic, Mosquitto& broker);

// The decoded body (payload) of a JWS record, as a consumer reads it.
nlohmann::json record_body(const std::string& jws);
// The distinct records of the given types on `topic`, decoded, in seq order (redeliveries dropped).
std::vector<nlohmann::json> records_of(const MqttCollector& collector, const std::string& topic,
                                       const std::vector<std::string>& types);

// From a `checkpoint-sim dock --ground-truth` file: uniqueId -> SHA-256 of every file the station saw
// acknowledged (outcome "acked").
std::map<std::string, std::string> dock_acks(const fs::path& truth_file);

// Peak resident set size of a running process (VmHWM), kB; -1 if unreadable.
long peak_rss_kb(pid_t pid);
// Resident set now (VmRSS) in kB; -1 if unreadable.
long rss_kb(pid_t pid);
// User + system CPU seconds a process has used so far (all its threads), from /proc/<pid>/stat; 0 if
// unreadable.
double cpu_seconds(pid_t pid);
// How often the process's threads have blocked and been woken so far (the sum of their
// voluntary_ctxt_switches in /proc/<pid>/task/*/status): a busy timer shows as wakeups while nothing happens.
long long wakeups(pid_t pid);
// The same summed over every running process whose command name (/proc/<pid>/comm) is `comm`, e.g. all of
// PostgreSQL's backends and helpers.
double cpu_seconds_of(const std::string& comm);
// One integer read from the daemon's SQLite store beside it (WAL lets a reader in), e.g.
// "SELECT count(*) FROM outbox"; -1 when unreadable.
long long store_query(const fs::path& db, const std::string& sql);
// n bytes from a xorshift generator: data no file system or hash can short-cut.
std::string pseudo_random_bytes(std::size_t n, std::uint64_t seed);

// Writes a new Ed25519 key (0600) and its public PEM; returns the public PEM path.
fs::path make_gateway_key(const fs::path& dir);

// One GET on 127.0.0.1:port with Connection: close; the body, or "" when the endpoint did not answer 200.
std::string http_get_body(std::uint16_t port, const std::string& target);
// The value of the first sample of `name` (unlabelled, or with any labels) in Prometheus text; -1 if absent.
double prometheus_sample(const std::string& text, const std::string& name);

// The evidence and status topics of the gateway most tests run (gateway id test-gw-1, default prefix).
inline const std::string kEvidence = "checkpoint/test-gw-1/evidence";
inline const std::string kStatus = "checkpoint/test-gw-1/status";

}  // namespace cpd::testing
