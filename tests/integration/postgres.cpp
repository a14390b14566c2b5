// Private PostgreSQL server for integration tests (see postgres.h).
#include "tests/integration/postgres.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace cpd::testing {

namespace {

// The newest installed server (Debian: /usr/lib/postgresql/<major>/bin).
fs::path server_bin() {
  fs::path best;
  int best_major = -1;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql")) {
    const int major = std::atoi(entry.path().filename().c_str());
    if (major > best_major && fs::exists(entry.path() / "bin" / "postgres")) {
      best_major = major;
      best = entry.path() / "bin";
    }
  }
  if (best.empty()) {
    throw std::runtime_error("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)");
  }
  return best;
}

int run_and_wait(const std::vector<std::string>& argv, const fs::path& log) {
  Process p(argv, log);
  const auto code = p.wait(std::chrono::seconds(120));
  return code ? *code : -1;
}

}  // namespace

Postgres::Postgres() : port_(free_port()), bin_(server_bin()) {
  char tmpl[] = "/tmp/cpd-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  dir_ = tmpl;
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("nobody");
    if (pw == nullptr || ::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      throw std::runtime_error("cannot hand " + dir_.string() + " to nobody");
    }
  }
  const int code =
      run_and_wait(as_server_user({(bin_ / "initdb").string(), "-D", (dir_ / "data").string(), "-U", "cpd",
                                   "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"}),
                   dir_ / "initdb");
  if (code != 0) {
    std::ifstream err(dir_.string() + "/initdb.err");
    std::stringstream s;
    s << err.rdbuf();
    throw std::runtime_error("initdb failed (" + std::to_string(code) + "): " + s.str());
  }
}

Postgres::~Postgres() {
  stop();
  if (!::testing::Test::HasFailure()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::vector<std::string> Postgres::as_server_user(std::vector<std::string> argv) const {
  if (::geteuid() != 0) {
    return argv;
  }
  std::vector<std::string> out{"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

void Postgres::start() {
  // fsync off: the tests crash central and the broker, never this server, and CI time is a budget.
  std::vector<std::string> argv{
      (bin_ / "postgres").string(), "-D", (dir_ / "data").string(), "-k", dir_.string(),       "-p",
      std::to_string(port_),        "-c", "listen_addresses=",      "-c", "max_connections=40"};
  for (const std::string& setting : settings_) {
    argv.insert(argv.end(), {"-c", setting});
  }
  proc_ = std::make_unique<Process>(as_server_user(argv), dir_ / "postgres");
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < end) {
    if (!proc_->running()) {
      throw std::runtime_error("postgres exited: " + proc_->stderr_text());
    }
    if (run_and_wait({(bin_ / "pg_isready").string(), "-h", dir_.string(), "-p", std::to_string(port_), "-q"},
                     dir_ / "isready") == 0) {
      run_and_wait({(bin_ / "psql").string(), "-h", dir_.string(), "-p", std::to_string(port_), "-U", "cpd",
                    "-d", "postgres", "-q", "-c", "CREATE DATABASE evidence"},
                   dir_ / "createdb");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("postgres did not accept connections within 30 s: " + proc_->stderr_text());
}

void Postgres::stop() {
  if (proc_ && proc_->running()) {
    proc_->signal(SIGINT);  // fast shutdown
    proc_->wait(std::chrono::seconds(20));
  }
  proc_.reset();
}

void Postgres::kill() {
  if (proc_) {
    proc_->signal(SIGKILL);
    proc_->wait(std::chrono::seconds(10));
    proc_.reset();
  }
}

std::string Postgres::conninfo() const {
  return "host=" + dir_.string() + " port=" + std::to_string(port_) + " user=cpd dbname=evidence";
}

std::string Postgres::query(const std::string& sql) const {
  const fs::path out = dir_ / "query";
  std::error_code ec;
  fs::remove(out.string() + ".out", ec);
  run_and_wait({(bin_ / "psql").string(), "-h", dir_.string(), "-p", std::to_string(port_), "-U", "cpd", "-d",
                "evidence", "-tAq", "-c", sql},
               out);
  std::ifstream in(out.string() + ".out");
  std::string line;
  std::getline(in, line);
  return line;
}

std::string Postgres::log_text() const {
  return proc_ ? proc_->stderr_text() : std::string();
}

}  // namespace cpd::testing
