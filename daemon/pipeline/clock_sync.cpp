// Reads the kernel's clock discipline state (adjtimex), for the gateway-clock validity check.
#include "daemon/pipeline/clock_sync.h"

#include <sys/timex.h>

namespace cpd::pipeline {

ClockSync read_kernel_clock_sync() {
  ClockSync out;
  out.source = "kernel";
  timex tx{};
  tx.modes = 0;  // read only
  const int state = ::adjtimex(&tx);
  if (state < 0) {
    return out;  // unknown counts as unsynchronised: evidence must not claim what was not checked
  }
  out.synchronized = state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0;
  out.max_error_us = tx.maxerror;
  out.est_error_us = tx.esterror;
  return out;
}

}  // namespace cpd::pipeline
