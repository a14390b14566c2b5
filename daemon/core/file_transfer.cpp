// File transfer messages (see the header): JSON built with sorted keys, every peer value bounded and
// checked before use.
#include "daemon/core/file_transfer.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "daemon/core/encoding.h"
#include "daemon/core/json_members.h"

namespace cpd::filex {

namespace {

using json_members::get_int;
using json_members::get_string;

// A decimal without sign or leading zeros (except "0"), within 64 bits.
bool parse_decimal(std::string_view text, std::uint64_t& out) {
  if (text.empty() || text.size() > 20 || (text.size() > 1 && text[0] == '0')) {
    return false;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::vector<std::string_view> split(std::string_view text) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (parts.size() < 8) {
    const auto slash = text.find('/', start);
    parts.push_back(
        text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  return parts;
}

std::optional<nlohmann::json> object_v1(std::string_view payload, const char* what, std::string& reason) {
  if (payload.size() > kMaxControlBytes) {
    reason = std::string(what) + " is " + std::to_string(payload.size()) + " bytes, more than " +
             std::to_string(kMaxControlBytes);
    return std::nullopt;
  }
  nlohmann::json body = nlohmann::json::parse(payload, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    reason = std::string(what) + " is not a JSON object";
    return std::nullopt;
  }
  std::uint64_t v = 0;
  if (!get_int(body, "v", v) || v != 1) {
    reason = std::string(what) + ": field \"v\" is not 1";
    return std::nullopt;
  }
  return body;
}

// The member "file" of a want or a refusal: the SHA-256 the message speaks of.
bool file_of(const nlohmann::json& body, const char* what, std::string& sha256, std::string& reason) {
  if (get_string(body, "file", sha256) && is_sha256_hex(sha256)) {
    return true;
  }
  reason = std::string(what) + ": field \"file\" is not 64 lower-case hex digits";
  return false;
}

}  // namespace

std::string informative_name(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size();) {
    const std::size_t start = i;
    const std::int32_t cp = decode_utf8(name, i);
    if (cp < 0) {
      ++i;  // an ill-formed byte: dropped
      continue;
    }
    if (cp == 0) {
      continue;
    }
    if (out.size() + (i - start) > kMaxNameBytes) {
      break;
    }
    out.append(name.substr(start, i - start));
  }
  return out;
}

std::string init_json(const FileInit& init) {
  const nlohmann::json body = {{"v", 1},
                               {"checksum", init.sha256},
                               {"name", informative_name(init.name)},
                               {"segment_size", init.segment_size},
                               {"seq", init.seq},
                               {"size", init.size}};
  return body.dump();
}

InitParse parse_init(std::string_view payload, std::string_view id) {
  InitParse out;
  const auto body = object_v1(payload, "init", out.reason);
  if (!body) {
    return out;
  }
  FileInit init;
  if (!get_string(*body, "checksum", init.sha256) || init.sha256 != id) {
    out.reason = "init: field \"checksum\" is not the file id of its topic";
    return out;
  }
  if (!get_int(*body, "size", init.size)) {
    out.reason = "init: field \"size\" is not a byte count";
    return out;
  }
  // An empty file has one id. Taken for another, no byte would ever arrive, each assembly would hash the
  // empty file, and three "mismatches" would call an intact copy damaged and refuse it for good.
  if (init.size == 0 && id != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") {
    out.reason = "init: size 0, but the file id is not the SHA-256 of no bytes";
    return out;
  }
  if (!get_int(*body, "segment_size", init.segment_size) || init.segment_size < kMinSegmentBytes ||
      init.segment_size > kMaxSegmentBytes) {
    out.reason = "init: field \"segment_size\" is not between " + std::to_string(kMinSegmentBytes) + " and " +
                 std::to_string(kMaxSegmentBytes);
    return out;
  }
  if (body->contains("name") && (!get_string(*body, "name", init.name) || init.name.size() > kMaxNameBytes ||
                                 !is_valid_utf8(init.name) || init.name.find('\0') != std::string::npos)) {
    out.reason =
        "init: field \"name\" is not UTF-8 text of at most " + std::to_string(kMaxNameBytes) + " bytes";
    return out;
  }
  if (body->contains("seq") && !get_int(*body, "seq", init.seq)) {
    out.reason = "init: field \"seq\" is not a record seq";
    return out;
  }
  out.init = std::move(init);
  return out;
}

std::string init_topic(const std::string& base, const std::string& sha256) {
  return base + "file/" + sha256 + "/init";
}

std::string segment_topic(const std::string& base, const std::string& sha256, std::uint64_t offset,
                          const std::string& segment_sha256) {
  return base + "file/" + sha256 + "/" + std::to_string(offset) + "/" + segment_sha256;
}

std::string fin_topic(const std::string& base, const std::string& sha256, std::uint64_t size) {
  return base + "file/" + sha256 + "/fin/" + std::to_string(size) + "/" + sha256;
}

std::string abort_topic(const std::string& base, const std::string& sha256) {
  return base + "file/" + sha256 + "/abort";
}

FileTopicParse parse_file_topic(std::string_view rest) {
  FileTopicParse out;
  const auto parts = split(rest);
  if (parts.size() < 3 || parts[0] != "file") {
    out.reason = "not a file transfer topic";
    return out;
  }
  FileTopic t;
  if (!is_sha256_hex(parts[1])) {
    out.reason = "file id is not a SHA-256 (64 lower-case hex digits)";
    return out;
  }
  t.sha256 = std::string(parts[1]);
  if (parts.size() == 3 && parts[2] == "init") {
    t.kind = FileTopic::Kind::init;
  } else if (parts.size() == 3 && parts[2] == "abort") {
    t.kind = FileTopic::Kind::abort;
  } else if (parts.size() == 5 && parts[2] == "fin") {
    t.kind = FileTopic::Kind::fin;
    if (!parse_decimal(parts[3], t.size) || parts[4] != parts[1]) {
      out.reason = "fin: size is not a decimal or the checksum is not the file id";
      return out;
    }
    t.checksum = std::string(parts[4]);
  } else if (parts.size() == 4) {
    t.kind = FileTopic::Kind::segment;
    if (!parse_decimal(parts[2], t.offset) || !is_sha256_hex(parts[3])) {
      out.reason = "segment: offset is not a decimal or its checksum is not a SHA-256";
      return out;
    }
    t.checksum = std::string(parts[3]);
  } else {
    out.reason = "not an init, segment, fin or abort topic";
    return out;
  }
  out.topic = std::move(t);
  return out;
}

std::uint64_t segment_count(std::uint64_t size, std::uint64_t segment_size) {
  return segment_size == 0 ? 0 : (size + segment_size - 1) / segment_size;
}

std::string segment_refusal(std::uint64_t size, std::uint64_t segment_size, std::uint64_t offset,
                            std::uint64_t length) {
  if (segment_size == 0 || offset % segment_size != 0) {
    return "offset " + std::to_string(offset) + " is not a multiple of the segment size " +
           std::to_string(segment_size);
  }
  if (offset >= size) {
    return "offset " + std::to_string(offset) + " is not below the file size " + std::to_string(size);
  }
  const std::uint64_t expected = std::min(segment_size, size - offset);
  if (length != expected) {
    return "segment at " + std::to_string(offset) + " has " + std::to_string(length) + " bytes, not " +
           std::to_string(expected);
  }
  return {};
}

Ranges missing_ranges(std::uint64_t size, std::uint64_t segment_size, std::vector<std::uint64_t> held,
                      std::size_t max) {
  Ranges out;
  if (segment_size == 0) {
    return out;
  }
  std::sort(held.begin(), held.end());
  held.erase(std::unique(held.begin(), held.end()), held.end());
  std::uint64_t at = 0;  // the first byte not yet known to be held or listed
  for (const std::uint64_t off : held) {
    if (off % segment_size != 0 || off >= size) {
      continue;
    }
    if (off > at) {
      out.emplace_back(at, off);
      if (out.size() >= max) {
        return out;
      }
    }
    at = std::max(at, std::min(size, off + segment_size));
  }
  if (at < size && out.size() < max) {
    out.emplace_back(at, size);
  }
  return out;
}

Ranges ranges_minus(const Ranges& ranges, const Ranges& minus) {
  Ranges out;
  std::size_t m = 0;
  for (auto [lo, hi] : ranges) {
    while (lo < hi) {
      while (m < minus.size() && minus[m].second <= lo) {
        ++m;
      }
      if (m == minus.size() || minus[m].first >= hi) {
        out.emplace_back(lo, hi);
        break;
      }
      if (minus[m].first > lo) {
        out.emplace_back(lo, minus[m].first);
      }
      lo = std::max(lo, minus[m].second);
    }
  }
  return out;
}

std::uint64_t ranges_bytes(const Ranges& ranges) {
  std::uint64_t n = 0;
  for (const auto& [lo, hi] : ranges) {
    n += hi > lo ? hi - lo : 0;
  }
  return n;
}

std::string seal_file_receipt(const Ed25519PrivateKey& central_key, const FileReceipt& receipt) {
  const nlohmann::json body = {{"v", 1},
                               {"type", "file_receipt"},
                               {"central", receipt.central},
                               {"gateway", receipt.gateway},
                               {"sha256", receipt.sha256},
                               {"size", receipt.size},
                               {"issued_ms", receipt.issued_ms}};
  return sign_compact(central_key, kFileReceiptTyp, body);
}

FileReceiptCheck check_file_receipt(std::string_view jws, const KeyForKid& central_keys,
                                    const std::string& gateway) {
  FileReceiptCheck r;
  if (jws.size() > kMaxControlBytes) {
    r.reason = "file receipt of " + std::to_string(jws.size()) + " bytes";
    return r;
  }
  SignedPayload s = check_signed(jws, central_keys, kFileReceiptTyp);
  r.kid = s.kid;
  if (!s.ok) {
    r.reason = s.unknown_key
                   ? "signed by kid " + printable(s.kid, 64) + ", which is not a configured central key"
                   : printable(s.reason, 300);
    return r;
  }
  const auto body = object_v1(s.payload, "file receipt", r.reason);
  if (!body) {
    return r;
  }
  std::string type;
  if (!get_string(*body, "type", type) || type != "file_receipt") {
    r.reason = "field \"type\" is not \"file_receipt\"";
    return r;
  }
  FileReceipt& out = r.receipt;
  if (!get_string(*body, "central", out.central) || out.central.empty()) {
    r.reason = "field \"central\" is not a non-empty string";
    return r;
  }
  if (!get_string(*body, "gateway", out.gateway) || out.gateway != gateway) {
    r.reason = "file receipt does not name this gateway \"" + gateway + "\"";
    return r;
  }
  if (!get_string(*body, "sha256", out.sha256) || !is_sha256_hex(out.sha256)) {
    r.reason = "field \"sha256\" is not 64 lower-case hex digits";
    return r;
  }
  if (!get_int(*body, "size", out.size)) {
    r.reason = "field \"size\" is not an integer";
    return r;
  }
  std::uint64_t issued_ms = 0;
  if (!get_int(*body, "issued_ms", issued_ms)) {
    r.reason = "field \"issued_ms\" is not an integer from 0 to 2^53";
    return r;
  }
  out.issued_ms = static_cast<UnixMs>(issued_ms);
  r.ok = true;
  return r;
}

std::string want_json(const Want& want) {
  nlohmann::json body = {{"v", 1}, {"file", want.sha256}};
  if (!want.ranges.empty()) {
    nlohmann::json ranges = nlohmann::json::array();
    for (const auto& [lo, hi] : want.ranges) {
      ranges.push_back({lo, hi});
    }
    body["ranges"] = std::move(ranges);
  }
  return body.dump();
}

WantParse parse_want(std::string_view payload) {
  WantParse out;
  const auto body = object_v1(payload, "want", out.reason);
  if (!body) {
    return out;
  }
  Want want;
  if (!file_of(*body, "want", want.sha256, out.reason)) {
    return out;
  }
  if (const auto it = body->find("ranges"); it != body->end()) {
    if (!it->is_array() || it->empty() || it->size() > kMaxWantRanges) {
      out.reason = "want: ranges must be 1.." + std::to_string(kMaxWantRanges) + " [lo, hi) pairs";
      return out;
    }
    std::uint64_t last = 0;
    for (const auto& r : *it) {
      if (!r.is_array() || r.size() != 2 || !json_members::is_int(r[0]) || !json_members::is_int(r[1])) {
        out.reason = "want: a range is not a pair of byte offsets";
        return out;
      }
      const auto lo = r[0].get<std::uint64_t>();
      const auto hi = r[1].get<std::uint64_t>();
      if (lo >= hi || lo < last) {
        out.reason = "want: ranges must be non-empty [lo, hi) pairs in ascending order, not overlapping";
        return out;
      }
      last = hi;
      want.ranges.emplace_back(lo, hi);
    }
  }
  out.want = std::move(want);
  return out;
}

std::string refused_json(const Refusal& refusal) {
  return nlohmann::json{{"v", 1},
                        {"file", refusal.sha256},
                        {"reason", refusal.reason},
                        {"retry", refusal.later ? "later" : "never"}}
      .dump();
}

RefusalParse parse_refused(std::string_view payload) {
  RefusalParse out;
  const auto body = object_v1(payload, "refused", out.reason);
  if (!body) {
    return out;
  }
  Refusal r;
  std::string retry;
  if (!file_of(*body, "refused", r.sha256, out.reason)) {
    return out;
  }
  if (!get_string(*body, "retry", retry) || (retry != "later" && retry != "never")) {
    out.reason = "refused: field \"retry\" is not \"later\" or \"never\"";
    return out;
  }
  if (!get_string(*body, "reason", r.reason)) {
    out.reason = "refused: field \"reason\" is not text";
    return out;
  }
  // The protocol requires the member, not words in it: an empty reason still refuses.
  r.reason = r.reason.empty() ? "(no reason given)" : printable(r.reason, 200);
  r.later = retry == "later";
  out.refusal = std::move(r);
  return out;
}

std::string abort_json(const std::string& reason) {
  return nlohmann::json{{"v", 1}, {"reason", reason}}.dump();
}

std::string parse_abort(std::string_view payload) {
  std::string reason;
  const auto body = object_v1(payload, "abort", reason);
  if (!body || !get_string(*body, "reason", reason)) {
    return {};
  }
  return reason.empty() ? "(no reason given)" : printable(reason, 200);
}

}  // namespace cpd::filex
