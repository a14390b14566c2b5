// The DockLedger the recorder-dock adapters see, served by the store worker thread from the evidence store,
// so listing cursors and dock files share the store's transactions with the records that cover them.
#pragma once

#include "adapters/dock_ledger.h"
#include "daemon/app/store_worker.h"

namespace cpd::app {

// Closed rows (acknowledged, or faulted by a committed fault record) are kept `retention_days` after they
// closed, then pruned: at most once a minute, on the next listing, kPruneBatch rows at a time.
class StoreDockLedger final : public adapters::DockLedger {
 public:
  static constexpr std::size_t kPruneBatch = 1000;
  static constexpr UnixMs kPruneIntervalMs = 60'000;

  StoreDockLedger(StoreWorker& worker, const WallClock& clock, int retention_days)
      : worker_(worker), clock_(clock), retention_ms_(static_cast<UnixMs>(retention_days) * 86'400'000) {}

  void load(const std::string& device_id,
            std::function<void(Status, adapters::DockLedgerState)> done) override;
  void save_listing(const std::string& device_id, std::vector<adapters::DockLedgerFile> files,
                    std::string next_cursor, adapters::DockListingBudget budget,
                    std::function<void(Status, std::vector<adapters::DockLedgerFile>)> done) override;
  void mark_acked(const std::string& device_id, const std::string& unique_id, const std::string& md5,
                  std::function<void(Status)> done) override;

 private:
  // On the worker thread: prunes closed rows older than the retention, once per kPruneIntervalMs.
  void prune_if_due(store::EvidenceStore& store);

  StoreWorker& worker_;
  const WallClock& clock_;
  UnixMs retention_ms_;
  UnixMs last_prune_ms_ = 0;  // touched on the worker thread only
};

}  // namespace cpd::app
