// What the store keeps beside a record, committed in the same transaction: the kept media it names, the
// span later `link` records are drawn from, the dock-ledger change. Not part of the record's bytes: the
// pipeline decides them (pure data, no SQLite here), the store worker completes and commits them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "daemon/core/record.h"
#include "daemon/core/time.h"

namespace cpd::store {

// The span (UTC ms, margins included) of a recording: enforcement records whose time_ms falls in
// [lo_ms, hi_ms] are linked to it (docs/records.md, "Links").
struct LinkSpan {
  UnixMs lo_ms = 0;
  UnixMs hi_ms = 0;
  bool contains(UnixMs t) const { return lo_ms <= t && t <= hi_ms; }
};

// A media file kept in the gateway's store but not published (a recording): retained while its record is
// unacknowledged and for the retention period (the longer one when important).
struct KeptMedia {
  std::string sha256;
  bool important = false;
  UnixMs hold_until_ms = 0;  // set by the store worker: kept at least until then (retention period)
};

// The dock-ledger change committed in the same transaction as the record that covers the file.
struct DockFileUpdate {
  std::string device_id;
  std::string unique_id;
  std::string md5;
  std::string sha256;  // empty for a fault record
};

struct RecordEffects {
  std::vector<KeptMedia> kept_media;          // kept on the gateway, not published
  std::optional<LinkSpan> link_span;          // a recording's: stored for later `link` records
  std::optional<DockFileUpdate> dock_update;  // committed with the record
};

// One record as the store appends it: the sealed record and what is committed with it.
struct StoredRecord {
  SealedRecord record;
  RecordEffects effects;
};

}  // namespace cpd::store
