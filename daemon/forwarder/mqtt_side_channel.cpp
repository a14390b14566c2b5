// MqttForwarder's side channel (side_channel.h): the custody topics it subscribes to on every connect, and
// publishes beside the outbox, a few at a time. Kept apart from the outbox pump in mqtt_forwarder.cpp.
#include <mqtt/async_client.h>

#include <boost/asio/post.hpp>

#include "daemon/core/encoding.h"
#include "daemon/forwarder/mqtt_forwarder.h"
#include "daemon/log/log.h"

namespace cpd::forwarder {

namespace asio = boost::asio;

// A side publish's completion: posted to the strand, then the listener deletes itself.
class MqttForwarder::SideListener final : public mqtt::iaction_listener {
 public:
  SideListener(MqttForwarder& fwd, std::uint64_t generation, std::function<void(bool)> done)
      : fwd_(fwd), generation_(generation), done_(std::move(done)) {}
  void on_success(const mqtt::token& tok) override {
    complete(static_cast<int>(tok.get_reason_code()) < 0x80);
  }
  void on_failure(const mqtt::token&) override { complete(false); }
  void complete(bool ok) {
    MqttForwarder& f = fwd_;
    asio::post(f.strand_, [&f, ok, generation = generation_, done = std::move(done_)] {
      if (generation == f.side_generation_ && f.side_inflight_ > 0) {
        --f.side_inflight_;
      }
      if (done) {
        done(ok);
      }
      f.pump_side();
    });
    delete this;
  }

 private:
  MqttForwarder& fwd_;
  std::uint64_t generation_;
  std::function<void(bool)> done_;
};

// A subscribe's outcome: a topic the broker refuses (an ACL, no shared subscriptions, ...) leaves the gateway
// deaf to it, so each refusal is logged as an error and counted (status broker.subscribe_refused).
class MqttForwarder::SubscribeListener final : public mqtt::iaction_listener {
 public:
  SubscribeListener(MqttForwarder& fwd, std::vector<std::string> topics)
      : fwd_(fwd), topics_(std::move(topics)) {}
  void on_success(const mqtt::token& tok) override {
    std::vector<mqtt::ReasonCode> codes;
    try {
      codes = tok.get_subscribe_response().get_reason_codes();
    } catch (const std::exception&) {
      // no per-topic codes: the token's own code below
    }
    if (codes.empty()) {
      codes.push_back(tok.get_reason_code());
    }
    for (std::size_t i = 0; i < topics_.size() && i < codes.size(); ++i) {
      if (static_cast<int>(codes[i]) >= 0x80) {
        refused(topics_[i], "reason code " + std::to_string(static_cast<int>(codes[i])));
      }
    }
    delete this;
  }
  void on_failure(const mqtt::token& tok) override {
    for (const auto& t : topics_) {
      refused(t, "reason code " + std::to_string(static_cast<int>(tok.get_reason_code())));
    }
    delete this;
  }

 private:
  void refused(const std::string& topic, const std::string& why) {
    ++fwd_.subscribe_refused_;
    log::error("mqtt", "",
               "the broker refused the subscription to " + topic + " (" + why +
                   "; a broker ACL?): custody messages on it are not received until the next reconnect");
  }
  MqttForwarder& fwd_;
  std::vector<std::string> topics_;
};

void MqttForwarder::install_side_callbacks() {
  client_->set_message_callback([this](mqtt::const_message_ptr msg) {
    InboundMessage in;
    in.topic = msg->get_topic();
    in.payload = msg->get_payload_str();
    in.retained = msg->is_retained();
    const mqtt::properties& props = msg->get_properties();
    if (props.contains(mqtt::property::RESPONSE_TOPIC)) {
      in.response_topic = mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
    }
    if (props.contains(mqtt::property::CORRELATION_DATA)) {
      in.correlation_data = mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA);
    }
    // Bounded before the strand too: a flood from the broker while the strand is busy waits here at most
    // kMaxInboundWaiting messages / kMaxInboundBytesWaiting bytes; beyond, dropped and counted (receipts are
    // retained and resend requests asked again, so what a flood pushes out comes back).
    const std::size_t bytes = in.topic.size() + in.payload.size() + in.response_topic.size() +
                              in.correlation_data.value_or("").size();
    if (inbound_waiting_.load() >= kMaxInboundWaiting ||
        inbound_waiting_bytes_.load() + bytes > kMaxInboundBytesWaiting) {
      if (inbound_dropped_.fetch_add(1) % 1000 == 0) {
        log::warn("mqtt", "",
                  "message on " + printable(in.topic, 120) + " dropped: the custody inputs are flooded (" +
                      std::to_string(kMaxInboundWaiting) + " messages or " +
                      std::to_string(kMaxInboundBytesWaiting >> 20) +
                      " MiB waiting; counted in status broker.inbound_dropped, logged once per 1000)");
      }
      return;
    }
    inbound_waiting_ += 1;
    inbound_waiting_bytes_ += bytes;
    asio::post(strand_, [this, bytes, in = std::move(in)]() mutable {
      inbound_waiting_ -= 1;
      inbound_waiting_bytes_ -= bytes;
      if (side_handler_) {
        side_handler_(std::move(in));
      }
    });
  });
}

// Every (re)connect (called by on_connected on the strand): subscribe again (a broker may have lost the
// session) and start the in-flight count over (publishes of the old connection may never complete). Not
// Paho's connected handler: Paho C++ 1.2 completes the connect token a second time from it.
void MqttForwarder::on_side_connected() {
  ++side_generation_;
  side_inflight_ = 0;
  subscribe_side();
  pump_side();
}

void MqttForwarder::set_subscriptions(std::vector<std::string> topics, Handler handler) {
  install_side_callbacks();
  asio::post(strand_, [this, topics = std::move(topics), handler = std::move(handler)]() mutable {
    side_topics_ = std::move(topics);
    side_handler_ = std::move(handler);
    if (connected_) {
      subscribe_side();
    }
  });
}

void MqttForwarder::subscribe_side() {
  if (side_topics_.empty()) {
    return;
  }
  try {
    auto topics = mqtt::string_collection::create(side_topics_);
    auto* listener = new SubscribeListener(*this, side_topics_);
    try {
      client_->subscribe(topics, std::vector<int>(side_topics_.size(), 1), nullptr, *listener);
    } catch (...) {
      delete listener;  // not taken: Paho calls no listener
      throw;
    }
  } catch (const mqtt::exception& e) {
    log::warn("mqtt", "", std::string("subscribing to the custody topics failed: ") + e.what());
  }
}

void MqttForwarder::publish_side(OutboundMessage message, std::function<void(bool ok)> done) {
  asio::post(strand_, [this, message = std::move(message), done = std::move(done)]() mutable {
    if (stopped_ || side_queue_.size() >= kMaxSideQueued) {
      if (done) {
        done(false);
      }
      return;
    }
    side_queue_.emplace_back(std::move(message), std::move(done));
    pump_side();
  });
}

void MqttForwarder::pump_side() {
  while (connected_ && !stopped_ && !side_queue_.empty() && side_inflight_ < kMaxSideInflight) {
    auto [message, done] = std::move(side_queue_.front());
    side_queue_.pop_front();
    auto msg = mqtt::make_message(message.topic, message.payload, 1, message.retained);
    if (message.correlation_data) {
      msg->set_properties(mqtt::properties{{mqtt::property::CORRELATION_DATA, *message.correlation_data}});
    }
    auto* listener = new SideListener(*this, side_generation_, std::move(done));
    ++side_inflight_;
    try {
      client_->publish(msg, nullptr, *listener);
    } catch (const mqtt::exception&) {
      listener->complete(false);  // Paho did not take it (not connected, too many in flight)
    }
  }
}

}  // namespace cpd::forwarder
