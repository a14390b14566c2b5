// StoreDockLedger: DockLedger calls become tasks on the store worker thread (the store's only owner).
#include "daemon/app/store_dock_ledger.h"

#include <utility>

#include "daemon/log/log.h"

namespace cpd::app {
namespace {

adapters::DockFileState state_of(const std::string& text) {
  if (text == "recorded") {
    return adapters::DockFileState::kRecorded;
  }
  if (text == "acked") {
    return adapters::DockFileState::kAcked;
  }
  if (text == "faulted") {
    return adapters::DockFileState::kFaulted;
  }
  return adapters::DockFileState::kPending;
}

adapters::DockLedgerFile from_row(store::DockFileRow row) {
  adapters::DockLedgerFile f;
  f.unique_id = std::move(row.unique_id);
  f.md5 = std::move(row.md5);
  f.entry_json = std::move(row.entry_json);
  f.state = state_of(row.state);
  f.sha256 = std::move(row.sha256);
  f.record_id = std::move(row.record_id);
  return f;
}

}  // namespace

void StoreDockLedger::load(const std::string& device_id,
                           std::function<void(Status, adapters::DockLedgerState)> done) {
  worker_.run_on_worker([device_id, done = std::move(done)](store::EvidenceStore& store) {
    adapters::DockLedgerState state;
    std::vector<store::DockFileRow> rows;
    const Status st = store.dock_load(device_id, state.cursor, rows);
    for (auto& row : rows) {
      state.open.push_back(from_row(std::move(row)));
    }
    done(st, std::move(state));
  });
}

void StoreDockLedger::save_listing(const std::string& device_id, std::vector<adapters::DockLedgerFile> files,
                                   std::string next_cursor, adapters::DockListingBudget budget,
                                   std::function<void(Status, std::vector<adapters::DockLedgerFile>)> done) {
  worker_.run_on_worker([this, device_id, files = std::move(files), next_cursor = std::move(next_cursor),
                         budget, done = std::move(done)](store::EvidenceStore& store) {
    std::vector<store::DockFileRow> rows;
    rows.reserve(files.size());
    for (const auto& f : files) {
      store::DockFileRow row;
      row.unique_id = f.unique_id;
      row.md5 = f.md5;
      row.entry_json = f.entry_json;
      rows.push_back(std::move(row));
    }
    std::vector<store::DockFileRow> states;
    const Status st =
        store.dock_save_listing(device_id, rows, next_cursor, states, budget.files, budget.bytes);
    std::vector<adapters::DockLedgerFile> out;
    out.reserve(states.size());
    for (auto& row : states) {
      out.push_back(from_row(std::move(row)));
    }
    done(st, std::move(out));
    prune_if_due(store);
  });
}

void StoreDockLedger::prune_if_due(store::EvidenceStore& store) {
  const UnixMs now = clock_.now_ms();
  if (last_prune_ms_ != 0 && now - last_prune_ms_ < kPruneIntervalMs) {
    return;
  }
  last_prune_ms_ = now;
  std::uint64_t pruned = 0;
  const Status st = store.dock_prune(now - retention_ms_, kPruneBatch, pruned);
  if (!st.is_ok()) {
    log::warn("store", "", "dock ledger retention (tried again in a minute): " + st.message());
  } else if (pruned > 0) {
    log::info("store", "",
              "dock ledger retention: " + std::to_string(pruned) + " closed file rows older than " +
                  std::to_string(retention_ms_ / 86'400'000) + " days pruned");
  }
}

void StoreDockLedger::mark_acked(const std::string& device_id, const std::string& unique_id,
                                 const std::string& md5, std::function<void(Status)> done) {
  worker_.run_on_worker(
      [this, device_id, unique_id, md5, done = std::move(done)](store::EvidenceStore& store) {
        done(store.dock_mark_acked(device_id, unique_id, md5, clock_.now_ms()));
      });
}

}  // namespace cpd::app
