// Test doubles the daemon/app unit tests share: a wall clock that stands still, a side channel with no
// broker behind it, a bounded wait for a worker thread's progress, a fresh directory per test and the custody
// settings the custody tests start from.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/config/config.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/time.h"
#include "daemon/forwarder/side_channel.h"

namespace cpd::app::test {

// Every reading is the same instant.
class FixedClock final : public WallClock {
 public:
  explicit FixedClock(UnixMs now_ms = 1'795'700'000'000) : now_ms_(now_ms) {}
  UnixMs now_ms() const override { return now_ms_; }
  void advance(UnixMs ms) { now_ms_ += ms; }

 private:
  UnixMs now_ms_;
};

// Records the subscriptions, refuses every publish, and delivers what a test hands it as a message from the
// broker (retained or not).
class FakeChannel final : public forwarder::SideChannel {
 public:
  explicit FakeChannel(bool retained = false) : retained_(retained) {}
  void set_subscriptions(std::vector<std::string> topics, Handler handler) override {
    topics_ = std::move(topics);
    handler_ = std::move(handler);
  }
  void publish_side(forwarder::OutboundMessage message, std::function<void(bool ok)> done) override {
    published.push_back(std::move(message));
    done(ack);
  }
  void deliver(const std::string& topic, const std::string& payload, const std::string& response_topic = "",
               const std::optional<std::string>& correlation = std::nullopt) {
    handler_(forwarder::InboundMessage{topic, payload, response_topic, correlation, retained_});
  }
  std::vector<std::string> topics_;
  Handler handler_;
  void set_retained(bool retained) { retained_ = retained; }  // what later deliveries say
  std::vector<forwarder::OutboundMessage> published;          // every publish, in order
  bool ack = false;                                           // what each publish's completion says

 private:
  bool retained_;
};

// Polls pred every 2 ms until it holds (true) or the limit passes (false).
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// A fresh directory for the running test (its name and the process id under the system's temp directory),
// emptied first if a crashed run left it behind.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const auto dir = std::filesystem::temp_directory_path() /
                   (prefix + "-" + std::to_string(::getpid()) + "-" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Gateway gw-1 under the prefix "checkpoint", custody on, `central` its one central key.
inline void custody_settings(config::Config& cfg, const Ed25519PrivateKey& central) {
  cfg.gateway.id = "gw-1";
  cfg.mqtt.topic_prefix = "checkpoint";
  cfg.custody.enabled = true;
  cfg.custody.central_keys_pem = {central.public_key().pem()};
}

}  // namespace cpd::app::test
