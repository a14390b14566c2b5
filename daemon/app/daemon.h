// Daemon: wires config, key, store, sealer, correlator, adapters and forwarder around one io_context,
// and runs until SIGTERM/SIGINT. Start-up failures throw with one clear line naming the cause.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "daemon/config/config.h"

namespace cpd::app {

class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Daemon {
 public:
  explicit Daemon(config::Config config);
  ~Daemon();
  // Blocks until a clean stop; returns the process exit code. Throws StartupError (or the key/store/config
  // error types) when it cannot start.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cpd::app
