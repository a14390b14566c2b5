// Central's side of a key rotation: the record names the key; central enrols it for that gateway.
#include "central/key_rotation.h"

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

std::optional<std::string> trust_rotated_key(TrustedKeys& keys, const IncomingRecord& record) {
  const auto e = rotation_enrolment(record);
  if (!e) {
    return std::nullopt;
  }
  auto& mine = keys[record.gateway];
  if (mine.count(e->new_kid) != 0) {
    return std::nullopt;
  }
  mine.emplace(e->new_kid, Ed25519PublicKey::from_pem(e->new_pem));
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
    PgResult r = conn.exec(
        "INSERT INTO gateway_keys (gateway, kid, public_key_pem, source, enrolled_ms) VALUES ($1, $2, $3, $4, "
        "$5) ON CONFLICT (gateway, kid) DO NOTHING",
        {e->gateway, e->new_kid, e->new_pem, e->source, std::to_string(now_ms)}, "enrolling a rotated key");
    if (r.affected() == 1) {
      log::notice("central", rec.gateway,
                  "key rotation at " + rec.gateway + ":" + std::to_string(rec.seq) + ": kid " + e->new_kid +
                      " enrolled (signed by kid " + rec.kid + ")");
    }
  }
}

}  // namespace cpd::central
