// The DockLedger the recorder-dock adapters see, served by the store worker thread from the evidence store,
// so listing cursors and dock files share the store's transactions with the records that cover them.
#pragma once

#include "adapters/dock_ledger.h"
#include "daemon/app/store_worker.h"

namespace cpd::app {

class StoreDockLedger final : public adapters::DockLedger {
 public:
  explicit StoreDockLedger(StoreWorker& worker) : worker_(worker) {}

  void load(const std::string& device_id,
            std::function<void(Status, adapters::DockLedgerState)> done) override;
  void save_listing(const std::string& device_id, std::vector<adapters::DockLedgerFile> files,
                    std::string next_cursor, adapters::DockListingBudget budget,
                    std::function<void(Status, std::vector<adapters::DockLedgerFile>)> done) override;
  void mark_acked(const std::string& device_id, const std::string& unique_id, const std::string& md5,
                  std::function<void(Status)> done) override;

 private:
  StoreWorker& worker_;
};

}  // namespace cpd::app
