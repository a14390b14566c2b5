// Central's side of a key rotation: the record names the key; central enrols it for that gateway.
#include "central/key_rotation.h"

#include <algorithm>

#include "daemon/core/key_rotation.h"
#include "daemon/log/log.h"

namespace cpd::central {

std::optional<RotationEnrolment> rotation_enrolment(const IncomingRecord& record, std::string* error) {
  if (!record.body.is_object() || record.body.value("type", std::string()) != "key_rotation") {
    return std::nullopt;
  }
  const auto rotation = parse_key_rotation(record.body, record.kid, error);
  if (!rotation) {
    return std::nullopt;
  }
  return RotationEnrolment{record.gateway, record.seq, rotation->new_kid, rotation->new_key.pem(),
                           "rotation:" + std::to_string(record.seq)};
}

std::string key_range_refusal(const std::string& kid, std::uint64_t from_seq,
                              const std::optional<std::uint64_t>& to_seq, std::uint64_t seq) {
  if (seq < from_seq) {
    return "seq " + std::to_string(seq) + " is before kid " + kid + "'s range (trusted from seq " +
           std::to_string(from_seq) + ")";
  }
  if (to_seq && seq > *to_seq) {
    return "seq " + std::to_string(seq) + " is signed by kid " + kid + ", retired at seq " +
           std::to_string(*to_seq) + " by its key_rotation record: refused as a forgery";
  }
  return {};
}

std::optional<std::string> trust_rotated_key(TrustedKeys& keys, const IncomingRecord& record) {
  const auto e = rotation_enrolment(record);
  if (!e) {
    return std::nullopt;
  }
  auto& mine = keys[record.gateway];
  if (const auto old = mine.find(record.kid); old != mine.end()) {
    old->second.to_seq = std::min(old->second.to_seq.value_or(record.seq), record.seq);
  }
  if (mine.count(e->new_kid) != 0) {
    return std::nullopt;
  }
  mine.emplace(e->new_kid, TrustedKey{Ed25519PublicKey::from_pem(e->new_pem), record.seq + 1, std::nullopt});
  return e->new_kid;
}

void enrol_rotated_keys(PgConnection& conn, const std::vector<IncomingRecord>& records, std::size_t from,
                        std::size_t to, const std::set<std::pair<std::string, std::uint64_t>>& fresh,
                        std::int64_t now_ms) {
  for (std::size_t i = from; i < to && i < records.size(); ++i) {
    const IncomingRecord& rec = records[i];
    if (fresh.count({rec.gateway, rec.seq}) == 0) {
      continue;
    }
    std::string error;
    const auto e = rotation_enrolment(rec, &error);
    if (!e) {
      if (!error.empty()) {
        log::error("central", rec.gateway,
                   rec.gateway + ":" + std::to_string(rec.seq) + ": " + error + "; no key enrolled from it");
      }
      continue;
    }
    // The old key signs nothing after its rotation record; the new one nothing up to it.
    conn.exec(
        "UPDATE gateway_keys SET valid_to_seq = LEAST(COALESCE(valid_to_seq, $3::bigint), $3::bigint) WHERE "
        "gateway = $1 AND kid = $2",
        {e->gateway, rec.kid, std::to_string(rec.seq)}, "retiring a rotated key");
    PgResult r = conn.exec(
        "INSERT INTO gateway_keys (gateway, kid, public_key_pem, source, enrolled_ms, valid_from_seq) VALUES "
        "($1, $2, $3, $4, $5, $6) ON CONFLICT (gateway, kid) DO NOTHING",
        {e->gateway, e->new_kid, e->new_pem, e->source, std::to_string(now_ms), std::to_string(rec.seq + 1)},
        "enrolling a rotated key");
    if (r.affected() == 1) {
      log::notice("central", rec.gateway,
                  "key rotation at " + rec.gateway + ":" + std::to_string(rec.seq) + ": kid " + e->new_kid +
                      " enrolled (signed by kid " + rec.kid + ")");
    }
  }
}

}  // namespace cpd::central
