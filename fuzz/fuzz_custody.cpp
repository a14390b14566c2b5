// libFuzzer target: the custody protocol's inputs as a gateway or central receives them from the network
// (docs/custody.md): resend requests and replies, custody receipts, head announcements, and the recordings'
// file transfer (topics, init, want, abort, file receipts). Input byte 0 picks the parser; the rest is the
// payload. Every result must be internally consistent: a refusal says why, what is accepted is within the
// documented bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/file_transfer.h"

namespace {

const cpd::Ed25519PrivateKey& central_key() {
  static const cpd::Ed25519PrivateKey key = cpd::Ed25519PrivateKey::generate();
  return key;
}

cpd::KeyForKid keys() {
  return [](const std::string& kid) -> std::optional<cpd::Ed25519PublicKey> {
    if (kid == central_key().public_key().kid()) {
      return central_key().public_key();
    }
    return std::nullopt;
  };
}

void require(bool ok) {
  if (!ok) {
    std::abort();
  }
}

std::uint64_t u64(std::string_view bytes, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && at + i < bytes.size(); ++i) {
    v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  }
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 10) {
    case 0: {
      const auto r = cpd::custody::parse_resend_request(payload);
      require(r.request.has_value() != !r.reason.empty());
      if (r.request) {
        require(r.request->media.size() <= cpd::custody::kMaxResendMedia);
        require(r.request->from_seq == 0 ||
                r.request->to_seq - r.request->from_seq < cpd::custody::kMaxResendRange);
        // What was accepted serialises and parses back to the same request.
        const auto again = cpd::custody::parse_resend_request(cpd::custody::resend_request_json(*r.request));
        require(again.request && again.request->from_seq == r.request->from_seq &&
                again.request->to_seq == r.request->to_seq && again.request->media == r.request->media);
      }
      break;
    }
    case 1:
      (void)cpd::custody::parse_resend_reply(payload);
      break;
    case 2: {
      const auto r = cpd::custody::check_receipt(payload, keys(), "gw");
      require(r.ok == r.reason.empty());
      require(!r.ok || r.receipt.gateway == "gw");
      require(r.reason.size() < 1000);  // a refusal quotes at most a bounded part of the peer's bytes
      break;
    }
    case 3: {
      const auto r = cpd::custody::check_head(payload, keys(), "gw");
      require(r.ok == r.reason.empty());
      break;
    }
    case 4: {
      const auto r = cpd::filex::parse_file_topic(payload);
      require(r.topic.has_value() == r.reason.empty());
      if (r.topic) {
        require(cpd::is_sha256_hex(r.topic->sha256));
        const std::string base = "p/g/";
        std::string rebuilt;
        switch (r.topic->kind) {
          case cpd::filex::FileTopic::Kind::init:
            rebuilt = cpd::filex::init_topic(base, r.topic->sha256);
            break;
          case cpd::filex::FileTopic::Kind::segment:
            rebuilt = cpd::filex::segment_topic(base, r.topic->sha256, r.topic->offset, r.topic->checksum);
            break;
          case cpd::filex::FileTopic::Kind::fin:
            rebuilt = cpd::filex::fin_topic(base, r.topic->sha256, r.topic->size);
            break;
          case cpd::filex::FileTopic::Kind::abort:
            rebuilt = cpd::filex::abort_topic(base, r.topic->sha256);
            break;
        }
        require(rebuilt == base + payload);  // one spelling per message: no aliases for a peer to use
      }
      break;
    }
    case 5: {
      const std::string id = payload.size() >= 64 ? payload.substr(0, 64) : std::string(64, 'a');
      const auto r = cpd::filex::parse_init(payload.size() >= 64 ? payload.substr(64) : payload, id);
      require(r.init.has_value() == r.reason.empty());
      if (r.init) {
        require(r.init->sha256 == id);
        require(r.init->segment_size >= cpd::filex::kMinSegmentBytes &&
                r.init->segment_size <= cpd::filex::kMaxSegmentBytes);
        require(cpd::is_valid_utf8(r.init->name) && r.init->name.size() <= cpd::filex::kMaxNameBytes);
      }
      break;
    }
    case 6: {
      const auto r = cpd::filex::parse_want(payload);
      require(r.want.has_value() == r.reason.empty());
      if (r.want) {
        require(r.want->ranges.size() <= cpd::filex::kMaxWantRanges);
        std::uint64_t last = 0;
        for (const auto& [lo, hi] : r.want->ranges) {
          require(lo < hi && lo >= last);
          last = hi;
        }
      }
      break;
    }
    case 7: {
      const auto r = cpd::filex::check_file_receipt(payload, keys(), "gw");
      require(r.ok == r.reason.empty());
      require(r.reason.size() < 1000);
      break;
    }
    case 8: {
      // At most 200 bytes of the peer's reason, each printed as itself or as a 4-byte \xNN escape, then
      // "..." when cut: non-ASCII UTF-8 is escaped byte by byte.
      const std::string reason = cpd::filex::parse_abort(payload);
      require(reason.size() <= 4 * 200 + 3);
      for (const char c : reason) {
        require(c >= 0x20 && c < 0x7f);
      }
      // The same bytes as central's refusal of an init (files/refused): the same bound on its reason.
      const auto refused = cpd::filex::parse_refused(payload);
      require(refused.refusal.has_value() == refused.reason.empty());
      if (refused.refusal) {
        require(cpd::is_sha256_hex(refused.refusal->sha256));
        require(!refused.refusal->reason.empty() && refused.refusal->reason.size() <= 4 * 200 + 3);
        for (const char c : refused.refusal->reason) {
          require(c >= 0x20 && c < 0x7f);
        }
        const auto again = cpd::filex::parse_refused(cpd::filex::refused_json(*refused.refusal));
        require(again.refusal && again.refusal->later == refused.refusal->later &&
                again.refusal->sha256 == refused.refusal->sha256);
      }
      break;
    }
    case 9: {
      // Segment arithmetic on peer-chosen numbers: size, segment size, then held offsets.
      const std::uint64_t file_size = u64(payload, 0) >> 20;  // up to 16 TiB
      const std::uint64_t segment =
          cpd::filex::kMinSegmentBytes + u64(payload, 8) % cpd::filex::kMaxSegmentBytes;
      std::vector<std::uint64_t> held;
      for (std::size_t at = 16; at + 8 <= payload.size() && held.size() < 256; at += 8) {
        held.push_back(u64(payload, at) % (file_size + 1));
      }
      const auto missing = cpd::filex::missing_ranges(file_size, segment, held, 64);
      require(missing.size() <= 64);
      std::uint64_t last = 0;
      for (const auto& [lo, hi] : missing) {
        require(lo < hi && hi <= file_size && lo >= last);
        last = hi;
      }
      for (const std::uint64_t off : held) {
        const std::string why = cpd::filex::segment_refusal(file_size, segment, off, segment);
        require(why.empty() || !why.empty());  // total: never throws, never traps
      }
      break;
    }
  }
  return 0;
}
