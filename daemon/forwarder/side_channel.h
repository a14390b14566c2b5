// The forwarder's MQTT connection as other parts of the gateway use it beside the outbox: topics to
// subscribe to on every connect (custody receipts, resend requests) and publishes that are not outbox
// records (head announcements, resend replies, records published again). The custody agent is written
// against this interface, so it is unit-tested without a broker.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cpd::forwarder {

struct InboundMessage {
  std::string topic;
  std::string payload;
  std::string response_topic;  // MQTT v5 Response Topic property ("" when absent)
  // MQTT v5 Correlation Data property: absent, or present and possibly empty (zero-length binary data is
  // allowed, and a reply must carry it back as it came).
  std::optional<std::string> correlation_data;
  bool retained = false;
};

struct OutboundMessage {
  std::string topic;
  std::string payload;
  bool retained = false;
  std::optional<std::string> correlation_data;  // set as the Correlation Data property when present
};

class SideChannel {
 public:
  virtual ~SideChannel() = default;
  using Handler = std::function<void(InboundMessage)>;
  // Subscribes (QoS 1) to `topics` now if connected and after every reconnect; messages are handed to
  // `handler` on the forwarder's strand. Call before start().
  virtual void set_subscriptions(std::vector<std::string> topics, Handler handler) = 0;
  // Publishes with QoS 1; `done(true)` once PUBACKed with success, `done(false)` on any failure or when not
  // connected. Thread-safe; `done` runs on the forwarder's strand.
  virtual void publish_side(OutboundMessage message, std::function<void(bool ok)> done) = 0;
};

}  // namespace cpd::forwarder
