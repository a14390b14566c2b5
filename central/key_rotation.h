// Central follows a gateway's key rotation (docs/custody.md, "Key rotation"): a verified key_rotation record
// of a gateway, signed by a key enrolled for it, enrols the key it names for that gateway. Stored in the
// same transaction as the record; the instance that reads it trusts the key at once for the rest of its
// batch.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "central/central_store.h"
#include "central/pg.h"
#include "daemon/core/ed25519.h"

namespace cpd::central {

struct RotationEnrolment {
  std::string gateway;
  std::uint64_t seq = 0;
  std::string new_kid;
  std::string new_pem;
  std::string source;  // "rotation:<seq>"
};

// Pure: the enrolment a verified record asks for. nullopt for any other record type, and for a malformed
// key_rotation (then `error` says why; the record itself is still evidence and stored).
std::optional<RotationEnrolment> rotation_enrolment(const IncomingRecord& record,
                                                    std::string* error = nullptr);

// Pure: empty when `seq` lies in the key's range, else the reason a record of that seq signed by `kid` is
// refused (a key rotated away from signs nothing after its key_rotation record: a forgery, or a leaked key).
std::string key_range_refusal(const std::string& kid, std::uint64_t from_seq,
                              const std::optional<std::uint64_t>& to_seq, std::uint64_t seq);

// The instance's key cache: after a verified key_rotation record is taken into a batch, the key it names is
// trusted for that gateway from the next seq on for the rest of the batch, and the key that signed it only
// through its seq (the enrolment commits with the batch, or the batch is retried). Returns the new kid when
// one was added.
std::optional<std::string> trust_rotated_key(TrustedKeys& keys, const IncomingRecord& record);

// Inside store_batch's transaction: enrols the key named by each key_rotation record among
// records[from, to) that was stored now (`fresh`: first copies, not duplicates or forks) from seq + 1 on,
// and ends the signing key's range at seq. Idempotent.
void enrol_rotated_keys(PgConnection& conn, const std::vector<IncomingRecord>& records, std::size_t from,
                        std::size_t to, const std::set<std::pair<std::string, std::uint64_t>>& fresh,
                        std::int64_t now_ms);

}  // namespace cpd::central
