// libFuzzer target: evidence-record verification (ChainVerifier::feed), as a central consumer runs it on
// records that arrive over the network. Input byte 0 picks the mode:
//   even: bytes 1..32 are the gateway's raw public key, the rest newline-separated JWS Compact records;
//   odd:  the rest is newline-separated record bodies, signed here with the canonical header, so the
//         checks behind the signature (canonical body, fields, seq, prev, redelivery) are reached too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/chain_verifier.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"

namespace {

const cpd::Ed25519PrivateKey& signing_key() {
  static const cpd::Ed25519PrivateKey key = cpd::Ed25519PrivateKey::generate();
  return key;
}

template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    fn(text.substr(0, eol));
    if (eol == std::string_view::npos) {
      break;
    }
    text.remove_prefix(eol + 1);
  }
}

void check(const cpd::VerifyResult& r) {
  // A redelivery is ok without a decoded body (identical bytes to one already verified).
  if (r.ok && !r.duplicate && !r.body.is_object()) {
    std::abort();  // a verified record always has a decoded object body
  }
  if (!r.ok && !r.duplicate && r.reason.empty()) {
    std::abort();  // a failure always says why
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  if ((data[0] & 1U) == 0) {
    if (size < 33) {
      return 0;
    }
    std::optional<cpd::Ed25519PublicKey> key;
    try {
      key = cpd::Ed25519PublicKey::from_raw(all.substr(1, 32));
    } catch (const cpd::KeyError&) {
      return 0;  // not a point on the curve: nothing to verify against
    }
    cpd::ChainVerifier verifier(*key);
    verifier.expect_from_start((data[0] & 2U) != 0);
    for_each_line(all.substr(33), [&](std::string_view jws) { check(verifier.feed(jws)); });
    return 0;
  }
  const auto& key = signing_key();
  const std::string header = cpd::base64url_encode(R"({"alg":"EdDSA","kid":")" + key.public_key().kid() +
                                                   R"(","typ":"evidence+jws"})");
  cpd::ChainVerifier verifier(key.public_key());
  verifier.expect_from_start((data[0] & 2U) != 0);
  for_each_line(all.substr(1), [&](std::string_view payload) {
    const std::string signing_input = header + "." + cpd::base64url_encode(payload);
    const std::string jws = signing_input + "." + cpd::base64url_encode(key.sign(signing_input));
    check(verifier.feed(jws));
  });
  return 0;
}
