// A private PostgreSQL server for a test: initdb into its own directory, a unix socket there, a free port
// number for the socket's name, no TCP listener. PostgreSQL refuses to run as root, so as root (CI) the
// server runs as `nobody` in a directory made for it; otherwise as ourselves.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/harness.h"

namespace cpd::testing {

class Postgres {
 public:
  Postgres();   // initdb (a few seconds)
  ~Postgres();  // stops the server and removes its directory (kept if the test failed)
  Postgres(const Postgres&) = delete;
  Postgres& operator=(const Postgres&) = delete;

  // Server settings for start() instead of the tests' (fsync off, 32 MB of shared buffers): e.g. the benches
  // run a server configured as a deployment would be ({"fsync=on", "shared_buffers=1GB"}).
  void settings(std::vector<std::string> settings) { settings_ = std::move(settings); }
  void start();  // returns once the server accepts connections
  void stop();   // fast shutdown
  void kill();   // SIGKILL (crash)
  // libpq connection string for the test database `evidence`.
  std::string conninfo() const;
  // One value of a query through psql (e.g. "SELECT count(*) FROM records"); "" on error.
  std::string query(const std::string& sql) const;
  std::string log_text() const;

 private:
  std::vector<std::string> as_server_user(std::vector<std::string> argv) const;

  fs::path dir_;
  std::uint16_t port_ = 0;
  fs::path bin_;
  std::unique_ptr<Process> proc_;
  std::vector<std::string> settings_{"fsync=off", "shared_buffers=32MB"};
};

}  // namespace cpd::testing
