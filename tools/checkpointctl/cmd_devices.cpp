// checkpointctl check-config and devices test: work from a config file, without the daemon. check-config
// reports the loader's errors and config_warnings(); devices test probes one device (device_probe.h).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "daemon/config/config.h"
#include "daemon/config/config_warnings.h"
#include "daemon/config/schema.h"
#include "daemon/core/encoding.h"
#include "daemon/core/time.h"
#include "tools/checkpointctl/commands.h"
#include "tools/checkpointctl/device_probe.h"

namespace cpd::ctl {

namespace {

using json = nlohmann::json;

constexpr int kExitFault = 1;  // check-config: invalid; devices test: the device answered badly or not at all

constexpr const char* kCheckConfigFooter =
    "Reads the file exactly as checkpointd does: every error is printed as FILE:LINE:COLUMN: key: what is\n"
    "wrong and what is allowed; then warnings (FILE:LINE:COLUMN of the device entry: warning: ...) such as "
    "a\n"
    "radar calibration that has expired or ends within 30 days, two devices on one address, a radar no\n"
    "camera names, lanes without a speed limit; then a one-line summary. Secrets (password and token files,\n"
    "the signing key gateway.key: loaded exactly as checkpointd loads it) are read to check them but never\n"
    "printed.\n"
    "Examples:\n"
    "  checkpointctl check-config /etc/checkpointd/checkpointd.yaml\n"
    "  checkpointctl check-config /etc/checkpointd/checkpointd.yaml --json | jq .warnings\n"
    "Exit codes: 0 valid (warnings allowed); 1 invalid (errors printed); 2 usage error.";

constexpr const char* kDevicesTestFooter =
    "Probes one device of the config once and shows what it says:\n"
    "  radar: connects (tcp or serial as configured), sends one poll *P, listens --seconds and shows frames\n"
    "    by type, the radar's status frames (code/text), parse errors by reason and a sample target;\n"
    "  camera: ISAPI deviceInfo (model, serial number, firmware) and the camera's clock against this host's\n"
    "    (offset), with the configured user, password_file and auth (one login attempt only: 5 failures in\n"
    "    a row lock the user for 30 minutes);\n"
    "  recorder_dock: GET /api/v1/status with the token from token_file: station id, recorders docked, free\n"
    "    space, clock offset.\n"
    "Failures are explained: DNS name not found, connection refused (nothing listening), timeout (host down\n"
    "or firewall), no route, TLS expected, wrong credentials (401), user locked (403), unexpected reply "
    "(what\n"
    "arrived is shown). A radar accepts one client at a time: stop checkpointd before testing a radar it\n"
    "reads, or the radar will say nothing.\n"
    "Examples:\n"
    "  checkpointctl devices test radar-1 --config /etc/checkpointd/checkpointd.yaml\n"
    "  checkpointctl devices test radar-1 --config /etc/checkpointd/checkpointd.yaml --seconds 12\n"
    "  checkpointctl devices test cam-1 --config /etc/checkpointd/checkpointd.yaml --json\n"
    "Exit codes: 0 the device answered well; 1 it answered with a fault or not at all (explained);\n"
    "2 usage error, invalid config or unknown device id.";

struct CheckConfigOptions {
  std::string file;
  bool json = false;
};

struct DevicesTestOptions {
  std::string id;
  std::string config;
  double seconds = 3.0;
  double timeout = 5.0;
  bool json = false;
};

std::optional<std::string> file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return std::nullopt;
  }
  return sha256_hex(ss.str());
}

json error_json(const config::ConfigError& e) {
  return {{"file", e.file()}, {"line", e.line()},     {"column", e.column()},
          {"key", e.key()},   {"detail", e.detail()}, {"message", e.what()}};
}

int run_check_config(const CheckConfigOptions& opts) {
  std::optional<config::Config> cfg;
  std::optional<config::ConfigError> error;
  try {
    cfg = config::load_config(opts.file);
    // The signing key as the daemon will load it: a key it would refuse makes the file unusable.
    config::load_signing_key(*cfg);
  } catch (const config::ConfigError& e) {
    cfg.reset();
    error = e;
  } catch (const std::exception& e) {
    // The loader reports through ConfigError; anything else still makes the file unusable.
    cfg.reset();
    error = config::ConfigError(opts.file, 0, 0, "", e.what());
  }
  std::vector<config::ConfigWarning> warnings;
  if (cfg) {
    warnings = config::config_warnings(*cfg, SystemWallClock().now_ms());
  }
  const auto sha = cfg ? std::optional<std::string>(cfg->sha256) : file_sha256(opts.file);
  if (opts.json) {
    json out = {{"valid", cfg.has_value()},
                {"file", opts.file},
                {"errors", json::array()},
                {"warnings", json::array()},
                {"devices", cfg ? cfg->devices.size() : 0},
                {"sha256", sha ? json(*sha) : json()}};
    if (error) {
      out["errors"].push_back(error_json(*error));
    }
    for (const auto& w : warnings) {
      out["warnings"].push_back({{"place", w.place}, {"device", w.device}, {"message", w.message}});
    }
    if (cfg) {
      out["gateway"] = cfg->gateway.id;
    }
    std::cout << out.dump() << '\n';
  } else {
    if (error) {
      std::cout << error->what() << '\n';
    }
    for (const auto& w : warnings) {
      std::cout << config::format_warning(w) << '\n';
    }
    if (cfg) {
      std::cout << opts.file << ": valid (gateway " << cfg->gateway.id << ", " << cfg->devices.size()
                << (cfg->devices.size() == 1 ? " device, " : " devices, ") << warnings.size()
                << (warnings.size() == 1 ? " warning" : " warnings") << ", sha256 " << cfg->sha256 << ")\n";
    } else {
      std::cout << opts.file << ": invalid (1 error; checkpointd would refuse to start with it)\n";
    }
  }
  std::cout.flush();
  return cfg ? kExitOk : kExitFault;
}

void print_report(const ProbeReport& r) {
  std::cout << r.kind << " " << r.device << (r.address.empty() ? "" : " at " + r.address) << '\n';
  for (const auto& line : r.lines) {
    std::cout << "  " << line << '\n';
  }
  if (r.ok) {
    std::cout << "OK: " << r.device << " answered well\n";
  } else {
    std::cout << "FAILED (" << probe_problem_name(r.problem) << "): " << r.explanation << '\n';
  }
}

int run_devices_test(const DevicesTestOptions& opts) {
  config::Config cfg;
  try {
    cfg = config::load_config(opts.config);
  } catch (const std::exception& e) {
    std::cerr << "checkpointctl: invalid config: " << e.what() << '\n';
    return kExitUsage;
  }
  const config::DeviceConfig* device = nullptr;
  std::string known;
  for (const auto& d : cfg.devices) {
    known += (known.empty() ? "" : ", ") + d.id;
    if (d.id == opts.id) {
      device = &d;
    }
  }
  if (device == nullptr) {
    std::cerr << "checkpointctl: no device '" << opts.id << "' in " << opts.config << " (devices: " << known
              << ")\n";
    return kExitUsage;
  }
  ProbeOptions popts;
  popts.listen = std::chrono::milliseconds(static_cast<std::int64_t>(opts.seconds * 1000));
  popts.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(opts.timeout * 1000));
  popts.max_camera_clock_offset_ms = cfg.validity.max_camera_clock_offset_ms;
  const ProbeReport r = probe_device(*device, popts);
  if (opts.json) {
    json out = {{"device", r.device},
                {"kind", r.kind},
                {"address", r.address},
                {"ok", r.ok},
                {"problem", r.ok ? json() : json(std::string(probe_problem_name(r.problem)))},
                {"explanation", r.explanation},
                {"facts", r.data}};
    std::cout << out.dump() << '\n';
  } else {
    print_report(r);
  }
  std::cout.flush();
  return r.ok ? kExitOk : kExitFault;
}

}  // namespace

std::vector<Command> add_device_commands(CLI::App& app) {
  std::vector<Command> commands;

  auto check_opts = std::make_shared<CheckConfigOptions>();
  auto* check = app.add_subcommand("check-config", "Check a checkpointd config file: errors and warnings");
  check->add_option("file", check_opts->file, "The config file")->required();
  check->add_flag("--json", check_opts->json,
                  "Print {\"valid\",\"errors\",\"warnings\",\"devices\",\"sha256\"} as one JSON object");
  check->footer(kCheckConfigFooter);
  commands.push_back({check, [check_opts] { return run_check_config(*check_opts); }});

  auto test_opts = std::make_shared<DevicesTestOptions>();
  auto* devices = app.add_subcommand("devices", "Work with the devices of a config file (see: devices test)");
  devices->require_subcommand(1);
  auto* test = devices->add_subcommand("test", "Probe one configured device and show what it says");
  test->add_option("id", test_opts->id, "The device id (devices[].id in the config)")->required();
  test->add_option("--config,-c", test_opts->config, "The config file")->required();
  test->add_option("--seconds", test_opts->seconds, "Radar: how long to listen, seconds (default 3)")
      ->check(CLI::Range(0.1, 600.0));
  test->add_option(
          "--timeout", test_opts->timeout,
          "Give up a network step (DNS, connect, one HTTP answer) after this long, seconds (default 5)")
      ->check(CLI::Range(0.1, 300.0));
  test->add_flag("--json", test_opts->json, "Print the result as one JSON object");
  test->footer(kDevicesTestFooter);
  devices->footer(kDevicesTestFooter);
  commands.push_back({test, [test_opts] { return run_devices_test(*test_opts); }});
  return commands;
}

}  // namespace cpd::ctl
