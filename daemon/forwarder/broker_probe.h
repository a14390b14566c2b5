// BrokerProbe: what the broker really answers to an MQTT v5 CONNECT, for the cases where Paho cannot say
// ("TCP connect timeout" for a broker that accepts TCP and never sends CONNACK, "socket error" for garbage,
// or a 2-byte "CONNACK" of garbage read as a refusal). The wire helpers are pure; probe_broker() does the
// blocking exchange (TCP, TLS when configured) and must run off the io threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/config/mqtt_config.h"

namespace cpd::forwarder {

// The largest packet the gateway accepts from a broker, announced in CONNECT as the MQTT v5 Maximum Packet
// Size. Besides acknowledgements, a broker sends it the custody topics' messages: a resend request may be
// 128 KiB (docs/custody.md; 1000 media hashes are 67 KB), plus its topic and properties. A broker drops
// (unsent) whatever is larger.
inline constexpr std::uint32_t kMaxIncomingPacketBytes = 256 * 1024;

// An MQTT v5 CONNECT as the forwarder sends it (same client id, clean start off, session expiry, keep-alive,
// credentials, Maximum Packet Size); no will.
std::string encode_connect(const config::MqttSection& cfg, std::uint32_t max_packet_bytes);

// The bytes a broker sent after our CONNECT, judged as far as they go.
struct ConnackVerdict {
  enum class Kind {
    kIncomplete,  // a prefix of a well-formed CONNACK: read more
    kConnack,     // a well-formed CONNACK; `reason` is its reason code (0 = accepted)
    kMalformed,   // not a well-formed MQTT v5 CONNACK; `detail` says why
    kTooLarge,    // a packet larger than we accept; `detail` gives its size
  };
  Kind kind = Kind::kIncomplete;
  int reason = 0;
  std::string detail;
};
ConnackVerdict check_connack(std::string_view bytes, std::uint32_t max_packet_bytes);

// Up to `n` leading bytes in hex ("48 54 54 50"), to show what a broker sent instead of MQTT.
std::string hex_prefix(std::string_view bytes, std::size_t n = 8);

// Connects to cfg.uri (TLS as Paho does when enabled), sends encode_connect() and reads the answer within
// `timeout`. Returns why the connection fails as the broker's bytes show it ("TLS: ...", "TCP connect: ...",
// "no CONNACK within 10 s ...", "malformed packet instead of CONNACK: ..."), or "" when the broker answered
// with a well-formed CONNACK (then Paho's own report stands). Blocking; reads at most one packet.
std::string probe_broker(const config::MqttSection& cfg, std::chrono::milliseconds timeout);

}  // namespace cpd::forwarder
