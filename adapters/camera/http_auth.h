// HTTP authentication for the camera: Digest (RFC 7616/2617, MD5, qop=auth, nonce reuse with nc counting)
// and Basic. Pure: the cnonce source is injected so tests fix it; no sockets.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cpd::adapters {

struct DigestChallenge {
  std::string realm;
  std::string nonce;
  std::string opaque;
  std::string algorithm;  // empty = MD5
  bool qop_auth = false;  // "auth" among the offered qop values
  bool has_qop = false;   // no qop at all: RFC 2069 compatibility (response without nc/cnonce)
  bool stale = false;
};

// Parses one WWW-Authenticate value; nullopt unless it is a usable Digest challenge (MD5, with a nonce,
// and qop absent or offering auth).
std::optional<DigestChallenge> parse_digest_challenge(std::string_view www_authenticate);

std::string md5_hex(std::string_view bytes);

class DigestAuthenticator {
 public:
  using CnonceSource = std::function<std::string()>;
  // An empty source draws 16 random bytes (OpenSSL RAND_bytes) as hex per request.
  DigestAuthenticator(std::string username, std::string password, CnonceSource cnonce = {});

  // Takes a challenge from a 401; resets nc. Returns false if none of the values is usable.
  bool take_challenge(const std::vector<std::string>& www_authenticate);
  bool has_challenge() const { return challenge_.has_value(); }
  const std::optional<DigestChallenge>& challenge() const { return challenge_; }
  void forget() { challenge_.reset(); }

  // The Authorization header value for one request; counts nc up. Requires has_challenge().
  std::string authorization(std::string_view method, std::string_view uri);
  // The response for fixed inputs (what authorization() computes), for tests against RFC examples.
  std::string response(std::string_view method, std::string_view uri, std::string_view nc,
                       std::string_view cnonce) const;
  std::uint32_t nonce_count() const { return nc_; }

 private:
  std::string username_;
  std::string password_;
  CnonceSource cnonce_;
  std::optional<DigestChallenge> challenge_;
  std::uint32_t nc_ = 0;
};

std::string basic_authorization(std::string_view username, std::string_view password);

}  // namespace cpd::adapters
