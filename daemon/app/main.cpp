// checkpointd: the gateway daemon's entry point. `--config FILE` runs; `--check-config FILE` validates.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "daemon/app/daemon.h"
#include "daemon/config/config.h"
#include "daemon/config/config_warnings.h"
#include "daemon/core/time.h"
#include "daemon/log/log.h"

int main(int argc, char** argv) {
  CLI::App app{"checkpointd: evidence gateway for traffic-police checkpoints"};
  std::string config_path;
  std::string check_path;
  bool verbose = false;
  auto* run_opt = app.add_option("--config,-c", config_path, "run with this config file");
  auto* check_opt =
      app.add_option("--check-config", check_path, "validate this config file and exit (0 = valid)");
  run_opt->excludes(check_opt);
  app.add_flag("--verbose,-v", verbose, "log debug lines too");
  app.set_version_flag("--version", std::string("checkpointd ") + CPD_VERSION);
  app.footer(
      "Examples:\n  checkpointd --config /etc/checkpointd/checkpointd.yaml\n"
      "  checkpointd --check-config /etc/checkpointd/checkpointd.yaml");
  CLI11_PARSE(app, argc, argv);
  if (config_path.empty() && check_path.empty()) {
    std::fprintf(stderr, "checkpointd: give --config FILE to run or --check-config FILE to validate\n");
    return 2;
  }
  if (verbose) {
    cpd::log::set_min_level(cpd::log::Level::kDebug);
  }
  try {
    if (!check_path.empty()) {
      const auto cfg = cpd::config::load_config(check_path);
      cpd::config::load_signing_key(cfg);  // as the daemon will load it
      cpd::SystemWallClock clock;
      for (const auto& w : cpd::config::config_warnings(cfg, clock.now_ms())) {
        std::fprintf(stderr, "%s\n", cpd::config::format_warning(w).c_str());
      }
      std::printf("%s: valid (gateway %s, %zu devices, sha256 %s)\n", check_path.c_str(),
                  cfg.gateway.id.c_str(), cfg.devices.size(), cfg.sha256.c_str());
      return 0;
    }
    cpd::app::Daemon daemon(cpd::config::load_config(config_path));
    return daemon.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "<3>checkpointd: %s\n", e.what());
    return 1;
  }
}
