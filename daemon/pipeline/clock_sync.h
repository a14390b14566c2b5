// The gateway clock's synchronisation state, as the correlator writes it into evidence: a plain value
// that unit tests inject, and the one kernel query (adjtimex) that the daemon calls to fill it.
#pragma once

#include <cstdint>
#include <string>

namespace cpd::pipeline {

struct ClockSync {
  bool synchronized = false;
  std::string source;              // "kernel" (adjtimex) | "assume" (config validity.clock_sync: assume)
  std::int64_t max_error_us = -1;  // kernel's maximum error estimate; -1 = not known
  std::int64_t est_error_us = -1;  // kernel's estimated error; -1 = not known
};

// Asks the kernel (adjtimex with modes 0: a read, no change) whether NTP/PTP discipline holds the clock:
// synchronised unless the call fails, returns TIME_ERROR or has STA_UNSYNC set. The only I/O of the
// pipeline; the Correlator itself never calls it.
ClockSync read_kernel_clock_sync();

}  // namespace cpd::pipeline
