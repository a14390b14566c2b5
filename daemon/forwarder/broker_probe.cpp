// BrokerProbe: one blocking CONNECT/CONNACK exchange that says why a connection to the broker fails.
#include "daemon/forwarder/broker_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace cpd::forwarder {

namespace {

struct HostPort {
  std::string host;  // without IPv6 brackets
  std::string port;
};

// "ssl://host:port" as normalised by the config loader.
HostPort split_uri(const std::string& uri) {
  HostPort out;
  const auto scheme_end = uri.find("://");
  const std::string rest = scheme_end == std::string::npos ? uri : uri.substr(scheme_end + 3);
  const auto colon = rest.rfind(':');
  out.host = rest.substr(0, colon);
  out.port = colon == std::string::npos ? "" : rest.substr(colon + 1);
  if (out.host.size() >= 2 && out.host.front() == '[') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  return out;
}

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    if (reason != nullptr && out.find(reason) == std::string::npos) {
      out += (out.empty() ? "" : "; ") + std::string(reason);
    }
  }
  return out;
}

void set_timeouts(int fd, std::chrono::milliseconds timeout) {
  const auto ms = std::max<long long>(timeout.count(), 1);
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// Connects within `timeout`; -1 and `why` set on failure.
int connect_tcp(const HostPort& hp, std::chrono::milliseconds timeout, std::string& why) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
    why = "cannot resolve " + hp.host + ": " + ::gai_strerror(rc);
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, &::freeaddrinfo);
  why = "no address for " + hp.host;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      continue;
    }
    int err = 0;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        err = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 ? 0 : ETIMEDOUT;
        socklen_t len = sizeof err;
        if (err == 0) {
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
      }
    }
    if (err == 0) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      set_timeouts(fd, timeout);
      return fd;
    }
    why = std::string("TCP connect: ") + std::strerror(err);
    ::close(fd);
  }
  return -1;
}

void put_u16(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::string& out, std::uint32_t v) {
  put_u16(out, v >> 16);
  put_u16(out, v & 0xffff);
}

void put_varint(std::string& out, std::size_t v) {
  do {
    auto byte = static_cast<unsigned char>(v % 128);
    v /= 128;
    if (v > 0) {
      byte |= 0x80;
    }
    out.push_back(static_cast<char>(byte));
  } while (v > 0);
}

void put_text(std::string& out, const std::string& s) {
  put_u16(out, static_cast<std::uint32_t>(s.size()));
  out += s;
}

// A variable byte integer at `pos`: its value and length in bytes; length 0 if incomplete, -1 if longer
// than the 4 bytes MQTT allows.
struct VarInt {
  std::size_t value = 0;
  int length = 0;
};
VarInt read_varint(std::string_view bytes, std::size_t pos) {
  VarInt out;
  std::size_t multiplier = 1;
  for (int i = 0; i < 4; ++i) {
    if (pos + static_cast<std::size_t>(i) >= bytes.size()) {
      return VarInt{};
    }
    const auto byte = static_cast<unsigned char>(bytes[pos + static_cast<std::size_t>(i)]);
    out.value += (byte & 0x7f) * multiplier;
    multiplier *= 128;
    if ((byte & 0x80) == 0) {
      out.length = i + 1;
      return out;
    }
  }
  out.length = -1;
  return out;
}

// The reason codes MQTT v5 allows in a CONNACK (section 3.2.2.2).
bool is_connack_reason(int code) {
  static constexpr std::array<int, 22> kAllowed{0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                                0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                                0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
  return std::find(kAllowed.begin(), kAllowed.end(), code) != kAllowed.end();
}

// The probe's connection: a socket, with TLS over it when configured.
class Link {
 public:
  explicit Link(int fd) : fd_(fd) {}
  ~Link() {
    if (ssl_) {
      SSL_shutdown(ssl_.get());
    }
    ::close(fd_);
  }
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // The TLS handshake and verification, as Paho does them; "" when they succeed.
  std::string start_tls(const config::MqttSection& cfg, const HostPort& hp);

  enum class Got { kData, kClosed, kTimeout, kError };
  Got read(char* buf, std::size_t n, std::size_t& got, std::chrono::milliseconds left, std::string& why);
  bool write_all(std::string_view data, std::string& why);

 private:
  int fd_;
  std::unique_ptr<SSL_CTX, decltype(&::SSL_CTX_free)> ctx_{nullptr, &::SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&::SSL_free)> ssl_{nullptr, &::SSL_free};
};

std::string Link::start_tls(const config::MqttSection& cfg, const HostPort& hp) {
  ERR_clear_error();
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  if (!ctx_) {
    return "cannot create a TLS context: " + openssl_errors();
  }
  SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(ctx_.get(), cfg.tls.ca_file.c_str(), nullptr) != 1) {
    return "cannot load CA file " + cfg.tls.ca_file + ": " + openssl_errors();
  }
  if (!cfg.tls.cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx_.get(), cfg.tls.cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx_.get(), cfg.tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(ctx_.get()) != 1)) {
    return "cannot load client certificate " + cfg.tls.cert_file + " / key " + cfg.tls.key_file + ": " +
           openssl_errors();
  }
  SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
  ssl_.reset(SSL_new(ctx_.get()));
  SSL_set_fd(ssl_.get(), fd_);
  const bool ip = is_ip_literal(hp.host);
  if (!ip) {
    // SSL_set_tlsext_host_name() without its C cast (SNI, so a broker with several names picks the right
    // one).
    SSL_ctrl(ssl_.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(hp.host.c_str()));
  }
  if (cfg.tls.verify_hostname) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_.get());
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, hp.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, hp.host.c_str(), 0);
    }
  }
  if (SSL_connect(ssl_.get()) == 1) {
    return "";
  }
  const long verify = SSL_get_verify_result(ssl_.get());
  const std::string errors = openssl_errors();
  ssl_.reset();  // no shutdown on a failed handshake
  if (verify != X509_V_OK) {
    std::string result = std::string("server certificate rejected: ") + X509_verify_cert_error_string(verify);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      result += " (hostname mismatch: the certificate does not name " + hp.host + ")";
    }
    return result;
  }
  if (!errors.empty()) {
    return "TLS handshake failed: " + errors;
  }
  return "TLS handshake failed: the broker closed the connection (is it a TLS port?)";
}

Link::Got Link::read(char* buf, std::size_t n, std::size_t& got, std::chrono::milliseconds left,
                     std::string& why) {
  set_timeouts(fd_, left);
  got = 0;
  if (!ssl_) {
    const ssize_t r = ::recv(fd_, buf, n, 0);
    if (r > 0) {
      got = static_cast<std::size_t>(r);
      return Got::kData;
    }
    if (r == 0 || errno == ECONNRESET) {
      return Got::kClosed;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      return Got::kTimeout;
    }
    why = std::strerror(errno);
    return Got::kError;
  }
  ERR_clear_error();
  errno = 0;
  const int r = SSL_read(ssl_.get(), buf, static_cast<int>(std::min<std::size_t>(n, 1 << 20)));
  if (r > 0) {
    got = static_cast<std::size_t>(r);
    return Got::kData;
  }
  const int err = SSL_get_error(ssl_.get(), r);
  const int saved_errno = errno;
  if (err == SSL_ERROR_ZERO_RETURN) {
    return Got::kClosed;
  }
  if (err == SSL_ERROR_SYSCALL &&
      (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == EINTR)) {
    return Got::kTimeout;
  }
  // TLS 1.3 reports a rejected client certificate only after the handshake, as an alert read here.
  const std::string errors = openssl_errors();
  if (!errors.empty()) {
    why = "TLS: TLS handshake failed: " + errors;
    ssl_.reset();
    return Got::kError;
  }
  if (err == SSL_ERROR_SYSCALL && saved_errno == 0) {
    ssl_.reset();
    return Got::kClosed;
  }
  why = saved_errno != 0 ? std::strerror(saved_errno) : "TLS read failed";
  ssl_.reset();
  return Got::kError;
}

bool Link::write_all(std::string_view data, std::string& why) {
  while (!data.empty()) {
    long n = 0;
    if (ssl_) {
      ERR_clear_error();
      n = SSL_write(ssl_.get(), data.data(), static_cast<int>(data.size()));
      if (n <= 0) {
        const std::string errors = openssl_errors();
        why = errors.empty() ? "cannot send CONNECT over TLS" : "TLS: TLS handshake failed: " + errors;
        ssl_.reset();
        return false;
      }
    } else {
      n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        why = std::string("cannot send CONNECT: ") + std::strerror(errno);
        return false;
      }
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string seconds_text(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

std::string encode_connect(const config::MqttSection& cfg, std::uint32_t max_packet_bytes) {
  std::string body;
  put_text(body, "MQTT");
  body.push_back(5);        // protocol version
  unsigned char flags = 0;  // clean start off, no will: as the forwarder connects, less the will
  if (!cfg.username.empty()) {
    flags |= 0x80;
    if (!cfg.password.empty()) {
      flags |= 0x40;
    }
  }
  body.push_back(static_cast<char>(flags));
  put_u16(body, static_cast<std::uint32_t>(std::clamp(cfg.keepalive_s, 0, 65535)));
  std::string props;
  props.push_back(0x11);  // Session Expiry Interval
  put_u32(props, static_cast<std::uint32_t>(std::max(cfg.session_expiry_s, 0)));
  props.push_back(0x27);  // Maximum Packet Size
  put_u32(props, max_packet_bytes);
  put_varint(body, props.size());
  body += props;
  put_text(body, cfg.client_id);
  if (!cfg.username.empty()) {
    put_text(body, cfg.username);
    if (!cfg.password.empty()) {
      put_text(body, cfg.password);
    }
  }
  std::string packet(1, static_cast<char>(0x10));
  put_varint(packet, body.size());
  return packet + body;
}

ConnackVerdict check_connack(std::string_view bytes, std::uint32_t max_packet_bytes) {
  using Kind = ConnackVerdict::Kind;
  if (bytes.empty()) {
    return {};
  }
  const auto first = static_cast<unsigned char>(bytes[0]);
  if (first != 0x20) {
    char detail[96];
    std::snprintf(detail, sizeof detail, "first byte 0x%02x is %s, not CONNACK (0x20)", first,
                  (first >> 4) == 2 ? "CONNACK with reserved flags set" : "another packet type");
    return {Kind::kMalformed, 0, detail};
  }
  const VarInt length = read_varint(bytes, 1);
  if (length.length == 0) {
    return {};
  }
  if (length.length < 0) {
    return {Kind::kMalformed, 0, "remaining length longer than 4 bytes"};
  }
  const std::size_t total = 1 + static_cast<std::size_t>(length.length) + length.value;
  if (total > max_packet_bytes) {
    return {Kind::kTooLarge, 0, "a CONNACK of " + std::to_string(total) + " bytes"};
  }
  if (bytes.size() < total) {
    return {};
  }
  const std::string_view body = bytes.substr(1 + static_cast<std::size_t>(length.length), length.value);
  if (body.size() < 3) {
    // MQTT v5 always has a properties length after the reason code.
    return {Kind::kMalformed, 0,
            "CONNACK of " + std::to_string(body.size()) + " bytes (an MQTT v5 CONNACK has at least 3)"};
  }
  const auto ack_flags = static_cast<unsigned char>(body[0]);
  const int reason = static_cast<unsigned char>(body[1]);
  if ((ack_flags & 0xfe) != 0) {
    return {Kind::kMalformed, reason, "CONNACK flags with reserved bits set"};
  }
  if (!is_connack_reason(reason)) {
    return {Kind::kMalformed, reason,
            "reason code " + std::to_string(reason) + " is not one a CONNACK may carry"};
  }
  const VarInt props = read_varint(body, 2);
  if (props.length <= 0 || 2 + static_cast<std::size_t>(props.length) + props.value != body.size()) {
    return {Kind::kMalformed, reason, "CONNACK properties length does not match the packet"};
  }
  return {Kind::kConnack, reason, ""};
}

std::string hex_prefix(std::string_view bytes, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < n; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(bytes[i]));
    out += (out.empty() ? "" : " ") + std::string(b);
  }
  return out;
}

std::string probe_broker(const config::MqttSection& cfg, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const HostPort hp = split_uri(cfg.uri);
  std::string why;
  const int fd = connect_tcp(hp, timeout, why);
  if (fd < 0) {
    return why;
  }
  Link link(fd);
  if (cfg.tls.enabled) {
    if (std::string tls = link.start_tls(cfg, hp); !tls.empty()) {
      return "TLS: " + tls;
    }
  }
  if (!link.write_all(encode_connect(cfg, kMaxIncomingPacketBytes), why)) {
    return why;
  }
  std::string answer;
  std::array<char, 4096> chunk{};
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    Link::Got got = Link::Got::kTimeout;
    std::size_t n = 0;
    if (left.count() > 0) {
      got = link.read(chunk.data(), chunk.size(), n, left, why);
    }
    if (got == Link::Got::kData) {
      answer.append(chunk.data(), n);
      const ConnackVerdict v = check_connack(answer, kMaxIncomingPacketBytes);
      switch (v.kind) {
        case ConnackVerdict::Kind::kIncomplete:
          continue;
        case ConnackVerdict::Kind::kConnack:
          if (v.reason == 0) {
            link.write_all(std::string_view("\xe0\x00", 2), why);  // DISCONNECT, normal
          }
          return "";
        case ConnackVerdict::Kind::kMalformed:
          return "malformed packet instead of CONNACK: " + v.detail + " (first bytes " + hex_prefix(answer) +
                 ")";
        case ConnackVerdict::Kind::kTooLarge:
          return "the broker announced " + v.detail + ", over the " +
                 std::to_string(kMaxIncomingPacketBytes) +
                 "-byte Maximum Packet Size the gateway sets in CONNECT (malformed or hostile broker)";
      }
    }
    if (got == Link::Got::kTimeout) {
      if (answer.empty()) {
        return "no CONNACK within " + seconds_text(timeout) +
               ": the broker accepted the connection but did not answer the MQTT CONNECT (timeout waiting "
               "for "
               "CONNACK)";
      }
      return "timeout waiting for CONNACK: the broker sent " + std::to_string(answer.size()) +
             " bytes of an incomplete packet (first bytes " + hex_prefix(answer) + ")";
    }
    if (got == Link::Got::kClosed) {
      if (answer.empty()) {
        return "the broker closed the connection without answering the MQTT CONNECT (no CONNACK)";
      }
      return "the broker closed the connection in the middle of a packet (" + std::to_string(answer.size()) +
             " bytes, first bytes " + hex_prefix(answer) + ")";
    }
    return why.rfind("TLS: ", 0) == 0 ? why : "reading the CONNACK: " + why;
  }
}

}  // namespace cpd::forwarder
