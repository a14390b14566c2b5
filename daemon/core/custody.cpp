// Custody messages: JCS bodies, JWS signatures (EdDSA) with their own typ, bounded request parsing.
#include "daemon/core/custody.h"

#include <algorithm>
#include <utility>

#include "daemon/core/encoding.h"
#include "daemon/core/json_members.h"

namespace cpd::custody {

namespace {

using json_members::get_int;
using json_members::get_string;

bool get_time(const nlohmann::json& body, const char* name, UnixMs& out) {
  std::uint64_t v = 0;
  if (!get_int(body, name, v)) {
    return false;
  }
  out = static_cast<UnixMs>(v);
  return true;
}

// Parses a signed payload as a JSON object with v = 1 and the given type.
std::optional<nlohmann::json> typed_body(const std::string& payload, const char* type, std::string& reason) {
  nlohmann::json body = nlohmann::json::parse(payload, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    reason = "body is not a JSON object";
    return std::nullopt;
  }
  std::uint64_t v = 0;
  if (!get_int(body, "v", v) || v != 1) {
    reason = "field \"v\" is not 1";
    return std::nullopt;
  }
  std::string t;
  if (!get_string(body, "type", t) || t != type) {
    reason = std::string("field \"type\" is not \"") + type + "\"";
    return std::nullopt;
  }
  return body;
}

}  // namespace

std::string seal_receipt(const Ed25519PrivateKey& central_key, const Receipt& receipt) {
  nlohmann::json body = {{"v", 1},
                         {"type", "custody_receipt"},
                         {"central", receipt.central},
                         {"gateway", receipt.gateway},
                         {"through_seq", receipt.through_seq},
                         {"head", receipt.head},
                         {"issued_ms", receipt.issued_ms}};
  if (!receipt.lost_seqs.empty()) {
    body["lost_seqs"] = nlohmann::json::array();
    for (const auto& [from, to] : receipt.lost_seqs) {
      body["lost_seqs"].push_back({from, to});
    }
  }
  if (!receipt.lost_pictures.empty()) {
    body["lost_pictures"] = receipt.lost_pictures;
  }
  return sign_compact(central_key, kReceiptTyp, body);
}

ReceiptCheck check_receipt(std::string_view jws, const KeyForKid& central_keys, const std::string& gateway) {
  ReceiptCheck r;
  SignedPayload s = check_signed(jws, central_keys, kReceiptTyp);
  r.kid = s.kid;
  if (!s.ok) {
    r.reason = s.unknown_key
                   ? "signed by kid " + printable(s.kid, 64) + ", which is not a configured central key"
                   : printable(s.reason, 300);
    return r;
  }
  const auto body = typed_body(s.payload, "custody_receipt", r.reason);
  if (!body) {
    return r;
  }
  Receipt& out = r.receipt;
  if (!get_string(*body, "central", out.central) || out.central.empty()) {
    r.reason = "field \"central\" is not a non-empty string";
    return r;
  }
  if (!get_string(*body, "gateway", out.gateway)) {
    r.reason = "field \"gateway\" is not a string";
    return r;
  }
  if (out.gateway != gateway) {
    r.reason =
        "receipt names gateway \"" + printable(out.gateway, 64) + "\", not this gateway \"" + gateway + "\"";
    return r;
  }
  if (!get_int(*body, "through_seq", out.through_seq) || out.through_seq == 0) {
    r.reason = "field \"through_seq\" is not a positive integer up to 2^53";
    return r;
  }
  if (!get_string(*body, "head", out.head) || !is_sha256_hex(out.head)) {
    r.reason = "field \"head\" is not 64 lower-case hex digits";
    return r;
  }
  if (!get_time(*body, "issued_ms", out.issued_ms)) {
    r.reason = "field \"issued_ms\" is not an integer from 0 to 2^53";
    return r;
  }
  if (const auto it = body->find("lost_seqs"); it != body->end()) {
    const bool shaped = it->is_array() && !it->empty() && it->size() <= kMaxLosses &&
                        std::all_of(it->begin(), it->end(), [&](const nlohmann::json& range) {
                          return range.is_array() && range.size() == 2 && range[0].is_number_unsigned() &&
                                 range[1].is_number_unsigned() && range[0].get<std::uint64_t>() >= 1 &&
                                 range[0].get<std::uint64_t>() <= range[1].get<std::uint64_t>() &&
                                 range[1].get<std::uint64_t>() < out.through_seq;
                        });
    if (!shaped) {
      r.reason = "field \"lost_seqs\" is not a list of [from, to] seq ranges below through_seq";
      return r;
    }
    for (const auto& range : *it) {
      out.lost_seqs.emplace_back(range[0].get<std::uint64_t>(), range[1].get<std::uint64_t>());
    }
  }
  if (const auto it = body->find("lost_pictures"); it != body->end()) {
    const bool shaped = it->is_array() && !it->empty() && it->size() <= kMaxLosses &&
                        std::all_of(it->begin(), it->end(), [](const nlohmann::json& sha) {
                          return sha.is_string() && is_sha256_hex(sha.get_ref<const std::string&>());
                        });
    if (!shaped) {
      r.reason = "field \"lost_pictures\" is not a list of SHA-256 (64 lower-case hex digits)";
      return r;
    }
    for (const auto& sha : *it) {
      out.lost_pictures.push_back(sha.get<std::string>());
    }
  }
  r.ok = true;
  return r;
}

std::string seal_head(const Ed25519PrivateKey& gateway_key, const Head& head) {
  const nlohmann::json body = {{"v", 1},          {"type", "head"},    {"gateway", head.gateway},
                               {"seq", head.seq}, {"head", head.head}, {"time_ms", head.time_ms}};
  return sign_compact(gateway_key, kHeadTyp, body);
}

HeadCheck check_head(std::string_view jws, const KeyForKid& gateway_keys, const std::string& gateway) {
  HeadCheck r;
  SignedPayload s = check_signed(jws, gateway_keys, kHeadTyp);
  r.kid = s.kid;
  if (!s.ok) {
    r.unknown_key = s.unknown_key;
    r.reason = s.reason;
    return r;
  }
  const auto body = typed_body(s.payload, "head", r.reason);
  if (!body) {
    return r;
  }
  if (!get_string(*body, "gateway", r.head.gateway) || r.head.gateway != gateway) {
    r.reason = "head announcement names another gateway than its topic's \"" + gateway + "\"";
    return r;
  }
  if (!get_int(*body, "seq", r.head.seq)) {
    r.reason = "field \"seq\" is not an integer from 0 to 2^53";
    return r;
  }
  if (!get_string(*body, "head", r.head.head) || !is_sha256_hex(r.head.head)) {
    r.reason = "field \"head\" is not 64 lower-case hex digits";
    return r;
  }
  if (!get_time(*body, "time_ms", r.head.time_ms)) {
    r.reason = "field \"time_ms\" is not an integer from 0 to 2^53";
    return r;
  }
  r.ok = true;
  return r;
}

ResendParse parse_resend_request(std::string_view payload) {
  ResendParse out;
  if (payload.size() > kMaxRequestBytes) {
    out.reason = "request is " + std::to_string(payload.size()) + " bytes, more than " +
                 std::to_string(kMaxRequestBytes);
    return out;
  }
  const nlohmann::json body = nlohmann::json::parse(payload, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    out.reason = "request is not a JSON object (UTF-8 JSON text, RFC 8259)";
    return out;
  }
  std::uint64_t v = 0;
  if (!get_int(body, "v", v) || v != 1) {
    out.reason = "field \"v\" is not 1";
    return out;
  }
  ResendRequest req;
  const bool has_from = body.contains("from_seq");
  const bool has_to = body.contains("to_seq");
  if (has_from != has_to) {
    out.reason = "from_seq and to_seq go together";
    return out;
  }
  if (has_from) {
    if (!get_int(body, "from_seq", req.from_seq) || !get_int(body, "to_seq", req.to_seq) ||
        req.from_seq == 0 || req.to_seq < req.from_seq || req.to_seq > kMaxSeq) {
      out.reason = "from_seq and to_seq must be integers with 1 <= from_seq <= to_seq <= 2^53";
      return out;
    }
    if (req.to_seq - req.from_seq + 1 > kMaxResendRange) {
      out.reason = "range of " + std::to_string(req.to_seq - req.from_seq + 1) + " records is more than " +
                   std::to_string(kMaxResendRange);
      return out;
    }
  }
  if (const auto it = body.find("media"); it != body.end()) {
    if (!it->is_array() || it->size() > kMaxResendMedia) {
      out.reason = "media must be an array of at most " + std::to_string(kMaxResendMedia) + " SHA-256 values";
      return out;
    }
    for (const auto& m : *it) {
      if (!m.is_string() || !is_sha256_hex(m.get_ref<const std::string&>())) {
        out.reason = "media holds a value that is not 64 lower-case hex digits";
        return out;
      }
      req.media.push_back(m.get<std::string>());
    }
  }
  if (!has_from && req.media.empty()) {
    out.reason = "request asks for nothing (no from_seq/to_seq, no media)";
    return out;
  }
  out.request = std::move(req);
  return out;
}

std::string resend_request_json(const ResendRequest& request) {
  nlohmann::json body = {{"v", 1}};
  if (request.from_seq != 0) {
    body["from_seq"] = request.from_seq;
    body["to_seq"] = request.to_seq;
  }
  if (!request.media.empty()) {
    body["media"] = request.media;
  }
  return body.dump();
}

std::string resend_reply_json(const ResendReply& reply) {
  nlohmann::json body = {{"v", 1}};
  if (!reply.error.empty()) {
    body["error"] = reply.error;
    return body.dump();
  }
  if (reply.from_seq != 0) {
    body["from_seq"] = reply.from_seq;
    body["to_seq"] = reply.to_seq;
  }
  body["sent"] = reply.sent;
  nlohmann::json ranges = nlohmann::json::array();
  for (const auto& [lo, hi] : reply.not_held) {
    ranges.push_back({lo, hi});
  }
  body["not_held"] = ranges;
  body["media_sent"] = reply.media_sent;
  body["media_not_held"] = reply.media_not_held;
  return body.dump();
}

std::optional<ResendReply> parse_resend_reply(std::string_view payload) {
  if (payload.size() > kMaxRequestBytes * 4) {
    return std::nullopt;
  }
  const nlohmann::json body = nlohmann::json::parse(payload, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    return std::nullopt;
  }
  if (const auto v = body.find("v"); v == body.end() || !v->is_number_integer() || *v != 1) {
    return std::nullopt;  // version 1 is the only one this reader knows: another says nothing we can read
  }
  ResendReply r;
  if (const auto it = body.find("error"); it != body.end()) {
    r.error = it->is_string() ? it->get<std::string>() : "error";
    return r;
  }
  get_int(body, "from_seq", r.from_seq);
  get_int(body, "to_seq", r.to_seq);
  get_int(body, "sent", r.sent);
  if (const auto it = body.find("not_held"); it != body.end() && it->is_array()) {
    for (const auto& range : *it) {
      if (range.is_array() && range.size() == 2 && json_members::is_int(range[0]) &&
          json_members::is_int(range[1])) {
        r.not_held.emplace_back(range[0].get<std::uint64_t>(), range[1].get<std::uint64_t>());
      }
    }
  }
  for (const char* key : {"media_sent", "media_not_held"}) {
    if (const auto it = body.find(key); it != body.end() && it->is_array()) {
      auto& out = std::string_view(key) == "media_sent" ? r.media_sent : r.media_not_held;
      for (const auto& m : *it) {
        if (m.is_string() && is_sha256_hex(m.get_ref<const std::string&>())) {
          out.push_back(m.get<std::string>());
        }
      }
    }
  }
  return r;
}

nlohmann::json store_replaced_details(const Receipt& receipt, const std::string& kid,
                                      const std::string& receipt_jws, const std::string& why) {
  // What the gateway knows: central holds 1..through_seq (the receipt). Whatever the previous store sealed
  // after it is not here, and how far it went is not known here: lost_after_seq says exactly that.
  return nlohmann::json{{"reason", why},
                        {"continued_from_seq", receipt.through_seq},
                        {"continued_from_head", receipt.head},
                        {"lost_after_seq", receipt.through_seq},
                        {"central", receipt.central},
                        {"central_kid", kid},
                        {"receipt_sha256", sha256_hex(receipt_jws)},
                        {"receipt", receipt_jws}};
}

}  // namespace cpd::custody
