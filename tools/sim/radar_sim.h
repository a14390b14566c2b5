// `checkpoint-sim radar`: a traffic radar speaking the radar protocol on TCP (see specs/radar.md).
#pragma once

namespace cpd::sim {

// Parses the radar options and serves until SIGTERM/SIGINT (or --exit-when-done); returns the exit code.
int run_radar_sim(int argc, char** argv);

}  // namespace cpd::sim
