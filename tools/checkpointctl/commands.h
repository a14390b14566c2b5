// checkpointctl's command groups beyond keys and verification: each adds its subcommands to the app and
// returns how to run them; main.cpp runs the one that was parsed.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace cpd::ctl {

// Exit codes every subcommand shares (each documents its others in --help).
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 2;

struct Command {
  CLI::App* sub = nullptr;   // the parsed() subcommand (or a parent whose child was parsed)
  std::function<int()> run;  // returns the exit code; reports its own errors on stderr
};

// status, tail: talk to the running daemon over its control socket (cmd_control.cpp).
std::vector<Command> add_control_commands(CLI::App& app);
// check-config, devices test: work from a config file, without the daemon (cmd_devices.cpp).
std::vector<Command> add_device_commands(CLI::App& app);
// sheet: one verified record as a printable evidence sheet (cmd_sheet.cpp).
std::vector<Command> add_sheet_commands(CLI::App& app);

}  // namespace cpd::ctl
