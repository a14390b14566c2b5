// Raw limit of the evidence store's storage: grouped synchronous=FULL inserts into a temp SQLite file.
#pragma once

#include <chrono>
#include <cstddef>

namespace cpd::bench {

// Inserts records of ~1.5 KB of JWS (into the store's own schema: records + outbox), `batch` per
// transaction, each committed with WAL and synchronous=FULL, for about `budget`; returns records per second.
// The file lives in $CPD_BENCH_DIR, else /var/tmp (disk-backed, unlike a tmpfs /tmp), and is removed after.
// Throws std::runtime_error if the temp store cannot be made or written.
double measure_grouped_inserts(std::size_t batch, std::chrono::milliseconds budget);

}  // namespace cpd::bench
