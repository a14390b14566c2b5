// cpd-store-bench: prints the grouped synchronous=FULL insert rate of this disk at a few batch sizes.
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>

#include "bench/store_bench.h"

int main() {
  // 4 sizes x 3 s keeps the whole run under ~15 s while smoothing out single slow fsyncs.
  constexpr std::chrono::milliseconds kBudget{3000};
  try {
    for (std::size_t batch : {std::size_t{1}, std::size_t{16}, std::size_t{128}, std::size_t{512}}) {
      const double records_per_s = cpd::bench::measure_grouped_inserts(batch, kBudget);
      std::printf("sqlite_full_grouped_inserts batch=%zu records_per_s=%.0f fsyncs_per_s=%.0f\n", batch,
                  records_per_s, records_per_s / static_cast<double>(batch));
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpd-store-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
