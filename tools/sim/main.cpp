// checkpoint-sim: device simulators for tests, demos and benchmarks. A small dispatcher: each
// subcommand (radar, camera, dock, scenario) owns its options and its run loop.
#include <cstring>
#include <iostream>
#include <string_view>

#include "tools/sim/camera_sim.h"
#include "tools/sim/dock_sim.h"
#include "tools/sim/radar_sim.h"
#include "tools/sim/scenario.h"

namespace {

struct Subcommand {
  std::string_view name;
  std::string_view help;
  int (*run)(int argc, char** argv);
};

constexpr Subcommand kSubcommands[] = {
    {"radar", "serve the traffic radar protocol on TCP", cpd::sim::run_radar_sim},
    {"camera", "serve an ANPR camera's ISAPI interface over HTTP", cpd::sim::run_camera_sim},
    {"dock", "serve a body-worn recorder docking station's file interface over HTTP", cpd::sim::run_dock_sim},
    {"scenario", "drive a radar, a camera and a recorder dock together from one YAML file",
     cpd::sim::run_scenario},
};

int usage(std::ostream& out) {
  out << "usage: checkpoint-sim <subcommand> [options]  (<subcommand> --help for its options)\n";
  for (const auto& s : kSubcommands) {
    out << "  " << s.name << "\t" << s.help << "\n";
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    return usage(std::cerr);
  }
  const std::string_view name = argv[1];
  if (name == "--help" || name == "-h") {
    usage(std::cout);
    return 0;
  }
  for (const auto& s : kSubcommands) {
    if (s.name == name) {
      // The subcommand sees itself as argv[0], so its parser reports "radar" in usage lines.
      return s.run(argc - 1, argv + 1);
    }
  }
  std::cerr << "checkpoint-sim: unknown subcommand '" << name << "'\n";
  return usage(std::cerr);
}
