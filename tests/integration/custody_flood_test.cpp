// checkpointd's two custody inputs under a hostile flood (docs/custody.md, "Checks, in order"): custody
// receipts on checkpoint/gw/custody and resend requests on checkpoint/gw/resend, for >= 10 s from raw MQTT v5
// clients, beside a real radar simulator -> checkpointd -> mosquitto chain. No central: the test signs
// receipts with the fixture's central key itself. Soak (RSS, rates): the sanitizer pass skips it.
#include <gtest/gtest.h>
#include <mqtt/async_client.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/record_check.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr double kRate = 10;   // the radar simulator's vehicles per second
constexpr int kMaxQueued = 4;  // custody.resend_max_queued
constexpr int kBurst = 30;     // valid resend requests sent back to back, three times in the flood
constexpr auto kFlood = 11s;
constexpr std::uint64_t kAccepted = 5;  // the one receipt the test lets the gateway accept before the flood
const std::string kReceipts = "checkpoint/gw/custody";
const std::string kRequests = "checkpoint/gw/resend";
const std::string kReplies = "checkpoint/gw/resend/response";

// What the gateway publishes that the test looks at: each record's first arrival (live rate, chain), resend
// replies with their Correlation Data, and anything on topics where no reply may go.
class Watcher {
 public:
  struct Record {
    std::string jws;
    std::string type;
    Clock::time_point first;
  };
  struct Reply {
    std::string correlation;
    nlohmann::json body;
  };

  Watcher(const std::string& uri, const std::vector<std::string>& topics)
      : client_(uri, "custody-flood-watcher", mqtt::create_options(MQTTVERSION_5),
                static_cast<mqtt::iclient_persistence*>(nullptr)) {
    client_.set_message_callback([this](mqtt::const_message_ptr msg) { on_message(*msg); });
    client_.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true).finalize())
        ->wait();
    client_.subscribe(mqtt::string_collection::create(topics), std::vector<int>(topics.size(), 1))->wait();
  }
  ~Watcher() {
    try {
      client_.disconnect()->wait_for(std::chrono::seconds(5));
    } catch (...) {
    }
  }

  std::map<std::uint64_t, Record> records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }
  std::string jws(std::uint64_t seq) const {
    std::lock_guard lock(mutex_);
    const auto it = records_.find(seq);
    return it == records_.end() ? "" : it->second.jws;
  }
  // The highest seq such that every record 1..seq has arrived.
  std::uint64_t contiguous() const {
    std::lock_guard lock(mutex_);
    std::uint64_t n = 0;
    for (const auto& [seq, r] : records_) {
      if (seq != n + 1) {
        break;
      }
      n = seq;
    }
    return n;
  }
  std::vector<Reply> replies() const {
    std::lock_guard lock(mutex_);
    return replies_;
  }
  // The first reply carrying `correlation`; null when none arrived.
  nlohmann::json reply(const std::string& correlation) const {
    std::lock_guard lock(mutex_);
    for (const auto& r : replies_) {
      if (r.correlation == correlation) {
        return r.body;
      }
    }
    return nullptr;
  }
  std::size_t replies_count() const {
    std::lock_guard lock(mutex_);
    return replies_.size();
  }
  std::vector<std::string> strays() const {
    std::lock_guard lock(mutex_);
    return strays_;
  }

 private:
  void on_message(const mqtt::message& msg) {
    const auto now = Clock::now();
    const std::string& topic = msg.get_topic();
    std::string correlation;
    if (msg.get_properties().contains(mqtt::property::CORRELATION_DATA)) {
      correlation = mqtt::get<mqtt::binary>(msg.get_properties(), mqtt::property::CORRELATION_DATA);
    }
    std::lock_guard lock(mutex_);
    if (topic == "checkpoint/gw/evidence") {
      nlohmann::json body;
      try {
        body = record_body(msg.to_string());
      } catch (const std::exception&) {
        strays_.push_back(topic + ": " + msg.to_string().substr(0, 200));
        return;
      }
      if (!body.is_object() || body.value("gateway", "") != "gw" || !body["seq"].is_number_unsigned()) {
        strays_.push_back(topic + ": " + msg.to_string().substr(0, 200));
        return;
      }
      records_.try_emplace(body["seq"].get<std::uint64_t>(),
                           Record{msg.to_string(), body.value("type", ""), now});
    } else if (topic == kReplies) {
      replies_.push_back(Reply{correlation, nlohmann::json::parse(msg.to_string(), nullptr, false)});
    } else {
      strays_.push_back(topic + ": " + msg.to_string().substr(0, 200));
    }
  }

  mqtt::async_client client_;
  mutable std::mutex mutex_;
  std::map<std::uint64_t, Record> records_;
  std::vector<Reply> replies_;
  std::vector<std::string> strays_;
};

// A JWS from raw parts: header and payload bytes as given (any bytes), signed by `key`.
std::string raw_jws(const Ed25519PrivateKey& key, const std::string& header, const std::string& payload) {
  const std::string input = base64url_encode(header) + "." + base64url_encode(payload);
  return input + "." + base64url_encode(key.sign(input));
}

std::string receipt_header(const std::string& kid) {
  return R"({"alg":"EdDSA","kid":")" + kid + R"(","typ":"custody+jws"})";
}

class CustodyFlood : public CustodyFixture {
 protected:
  void SetUp() override {
    CustodyFixture::SetUp();
    GatewayConfig config;
    config.retention_days = 0;  // what is in custody goes at the next round: a wrongly accepted receipt shows
    config.control = true;
    config.custody_extra = "  resend_max_queued: " + std::to_string(kMaxQueued) +
                           "\n  resend_records_per_s: 40\n  retention_check_ms: 300\n"
                           "  empty_store_wait_ms: 0\n";  // a new store: no wait for a retained receipt
    start_radar(static_cast<int>(kRate * 90), kRate, /*seed=*/23);
    write_gateway_config(config);
  }

  // The daemon's custody status (checkpointctl status --json), null when it did not answer.
  nlohmann::json custody_status() {
    std::string out;
    if (ctl({"status", "--socket", (dir_ / "control.sock").string(), "--json"}, &out) != 0) {
      return nullptr;
    }
    const auto s = nlohmann::json::parse(out, nullptr, false);
    if (!s.is_object() || !s.contains("custody")) {
      return nullptr;
    }
    // Messages dropped before the custody agent, at the MQTT client's hand-off to the forwarder (256 messages
    // or 16 MiB waiting: a strand slow under a loaded machine), are counted there.
    nlohmann::json custody = s["custody"];
    const auto broker = s.find("broker");
    custody["broker_inbound_dropped"] = broker != s.end() && broker->is_object()
                                            ? broker->value("inbound_dropped", std::uint64_t{0})
                                            : std::uint64_t{0};
    return custody;
  }
  static std::uint64_t counter(const nlohmann::json& custody, const char* name) {
    return custody.is_object() && custody[name].is_number_unsigned() ? custody[name].get<std::uint64_t>() : 0;
  }
};

TEST_F(CustodyFlood, HostileReceiptsAndResendRequestsAreRefusedCountedAndSurvived) {
  Watcher watch(broker_->uri(), {"checkpoint/gw/evidence", kReplies, "checkpoint/other/#", "elsewhere/#"});
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return watch.contiguous() >= 20; }, 60s)) << daemon->stderr_text();

  // One genuine receipt through seq 5: accepted, and records 1..5 pruned (retention 0 days). This is what a
  // wrongly accepted receipt would do to the rest of the chain.
  const auto central_key = Ed25519PrivateKey::load_pem_file((dir_ / "central.key").string());
  const std::string kid = central_key.public_key().kid();
  const std::string accepted = custody::seal_receipt(
      central_key, {"central-test", "gw", kAccepted, sha256_hex(watch.jws(kAccepted)), 1, {}, {}});
  {
    MqttPublisher central(broker_->uri(), "fake-central");
    central.publish(kReceipts, accepted);
  }
  nlohmann::json st;
  ASSERT_TRUE(wait_for_condition(
      [&] {
        st = custody_status();
        return counter(st, "through_seq") == kAccepted && counter(st, "pruned_records") == kAccepted;
      },
      20s))
      << st.dump() << daemon->stderr_text();
  EXPECT_EQ(store_query(store_db_, "SELECT min(seq) FROM records"), static_cast<long long>(kAccepted) + 1);

  // Refused receipts whose peer-chosen text (a kid, a header member's name) holds a line break and a journald
  // priority: sent before the flood, while the log's rate limit still prints every refusal. The refusal
  // quotes a bounded, escaped part of it: no log line of the peer's own, no line or status field of 30 KB.
  const auto forger = Ed25519PrivateKey::generate();
  const std::vector<std::string> injections = {
      raw_jws(forger, receipt_header("k\\n<3>custody: FORGED LINE" + std::string(30000, 'k')), "{}"),
      raw_jws(forger, R"({"alg":"EdDSA","kid":"k","typ":"custody+jws","\n<3>custody: FORGED LINE":1})",
              "{}")};
  {
    MqttPublisher peer(broker_->uri(), "peer");
    for (const auto& jws : injections) {
      peer.publish(kReceipts, jws);
    }
  }
  ASSERT_TRUE(
      wait_for_condition([&] { return counter(st = custody_status(), "receipts_refused") == 2; }, 20s))
      << st.dump();
  ASSERT_TRUE(st["last_refusal"].is_string()) << st.dump();
  EXPECT_LT(st["last_refusal"].get<std::string>().size(), 500U) << st["last_refusal"];
  {
    const std::string log = daemon->stderr_text();
    EXPECT_NE(log.find("custody receipt refused: "), std::string::npos) << log;
    EXPECT_EQ(log.find("\n<3>custody: FORGED LINE"), std::string::npos)
        << "a peer's text wrote a log line of its own";
    std::size_t longest_line = 0;
    for (std::size_t pos = 0; pos < log.size();) {
      const std::size_t end = std::min(log.find('\n', pos), log.size());
      longest_line = std::max(longest_line, end - pos);
      pos = end + 1;
    }
    EXPECT_LT(longest_line, 1000U) << "a log line quoted a peer's message at length";
  }

  // What the flood sends, prepared beforehand so the clients go as fast as the broker takes it.
  const std::uint64_t head0 = watch.contiguous();
  std::mt19937_64 rng(13);
  const auto random_bytes = [&](std::size_t n) {
    std::string b(n, '\0');
    for (char& ch : b) {
      ch = static_cast<char>(rng());
    }
    return b;
  };
  const auto random_sha = [&] { return sha256_hex(random_bytes(16)); };
  const std::string not_utf8 = "\xff\xfe\xc3\x28 not UTF-8 \xe2\x82\x00\x80";
  const std::string huge = pseudo_random_bytes((3u << 20) / 2, 5);  // 1.5 MiB: over the gateway's packet size
  // Receipts that fail checks 1-3 (refused at once, counted).
  std::vector<std::string> early_refused;
  for (int i = 0; i < 100; ++i) {
    early_refused.push_back(random_bytes(1 + rng() % 3000));
  }
  early_refused.insert(early_refused.end(), {not_utf8, "a.b.c", "..", std::string(50000, '.')});
  // Receipts signed by central that pass checks 1-3 and are refused by the store (checks 5 and 6): a head
  // that is not this gateway's record, a seq far beyond the head, a 48 KiB receipt. One is ignored instead
  // (check 4) while another with a higher seq is being checked: these are not all counted.
  std::vector<std::string> store_refused;
  for (int i = 0; i < 40; ++i) {
    const std::uint64_t through = kAccepted + 1 + rng() % (head0 - kAccepted);
    const std::string head = sha256_hex(watch.jws(through));
    // Signed by a key nobody configured; signed by it under central's kid; signed by central for another
    // gateway.
    early_refused.push_back(custody::seal_receipt(forger, {"central-test", "gw", through, head, 2, {}, {}}));
    early_refused.push_back(
        raw_jws(forger, receipt_header(kid),
                custody::seal_receipt(central_key, {"central-test", "gw", through, head, 2, {}, {}})));
    early_refused.push_back(
        custody::seal_receipt(central_key, {"central-test", "gx", through, head, 3, {}, {}}));
    store_refused.push_back(
        custody::seal_receipt(central_key, {"central-test", "gw", through, random_sha(), 4, {}, {}}));
    store_refused.push_back(custody::seal_receipt(
        central_key, {"central-test", "gw", 1000000000000ULL + rng() % 1000, random_sha(), 5, {}, {}}));
  }
  store_refused.push_back(raw_jws(central_key, receipt_header(kid),
                                  nlohmann::json{{"v", 1},
                                                 {"type", "custody_receipt"},
                                                 {"central", "c"},
                                                 {"gateway", "gw"},
                                                 {"through_seq", head0},
                                                 {"head", std::string(64, 'b')},
                                                 {"issued_ms", 1},
                                                 {"pad", std::string(36000, 'p')}}
                                      .dump()));
  // Bodies signed by central that are not a receipt; headers that are not the one allowed form.
  for (
      const std::string& bad_body :
      {std::string(
           R"({"central":"c","gateway":"gw","head":"x","issued_ms":1,"through_seq":9,"type":"custody_receipt","v":2})"),
       std::string(R"({"central":"c","gateway":"gw","head":")") + std::string(64, 'A') +
           R"(","issued_ms":1,"through_seq":9,"type":"custody_receipt","v":1})",
       std::string(R"({"central":"c","gateway":"gw","head":")") + std::string(64, 'a') +
           R"(","issued_ms":1,"through_seq":0,"type":"custody_receipt","v":1})",
       std::string(R"({"central":"c","gateway":"gw","head":")") + std::string(64, 'a') +
           R"(","issued_ms":1.5,"through_seq":-7,"type":"custody_receipt","v":1})",
       std::string(R"({"central":"","gateway":"gw","type":"custody_receipt","v":1})"),
       std::string(R"({"type":"custody_receipt","v":1,"gateway":["gw"]})"), std::string("[]"), not_utf8,
       std::string(20000, '[') + std::string(20000, ']')}) {
    early_refused.push_back(raw_jws(central_key, receipt_header(kid), bad_body));
  }
  early_refused.push_back(
      raw_jws(central_key, R"({"alg":"none","kid":")" + kid + R"(","typ":"custody+jws"})", "{}"));
  early_refused.push_back(
      raw_jws(central_key, R"({"typ":"custody+jws","alg":"EdDSA","kid":")" + kid + R"("})", "{}"));
  early_refused.push_back(
      raw_jws(central_key, R"({"alg":"EdDSA","kid":")" + kid + R"(","typ":"custody+jws","x":1})", "{}"));
  early_refused.push_back(raw_jws(central_key, std::string(20000, '[') + std::string(20000, ']'), "{}"));
  early_refused.insert(early_refused.end(), injections.begin(), injections.end());

  // Resend requests the gateway must refuse and answer with an error (they name the right Response Topic).
  std::vector<std::string> bad_requests = {
      "",
      "[]",
      "\"x\"",
      "{}",
      "null",
      not_utf8,
      R"({"v":2,"from_seq":6,"to_seq":7})",
      R"({"v":1})",
      R"({"v":1,"from_seq":6})",
      R"({"v":1,"to_seq":6})",
      R"({"v":1,"from_seq":0,"to_seq":6})",
      R"({"v":1,"from_seq":9,"to_seq":6})",
      R"({"v":1,"from_seq":1,"to_seq":100001})",
      R"({"v":1,"from_seq":1,"to_seq":18446744073709551615})",
      R"({"v":1,"from_seq":-1,"to_seq":6})",
      R"({"v":1,"from_seq":1.5,"to_seq":6})",
      R"({"v":1,"from_seq":"6","to_seq":"7"})",
      R"({"v":1,"from_seq":6,"to_seq":7,"media":"x"})",
      R"({"v":1,"media":[1,2]})",
      R"({"v":1,"media":[{}]})",
      R"({"v":1,"media":["zz"]})",
      R"({"v":1,"media":[")" + std::string(64, 'A') + R"("]})",
      R"({"v":1,"media":[")" + std::string(63, 'a') + R"("]})",
      R"({"v":1,"media":[]})",
      R"({"v":1,"media":null,"from_seq":null})",
      std::string(30000, '[') + std::string(30000, ']'),
      R"({"v":1,"media":)" + std::string(25000, '[') + std::string(25000, ']') + "}",
      std::string(60000, ' ')};
  {
    std::string garbage_media = R"({"v":1,"media":[)";
    for (int i = 0; i < 900; ++i) {
      garbage_media += (i == 0 ? "\"" : ",\"") + hex_lower(random_bytes(31)) + "g\"";
    }
    bad_requests.push_back(garbage_media + "]}");
    for (int i = 0; i < 20; ++i) {
      bad_requests.push_back(random_bytes(1 + rng() % 3000));
    }
  }
  const std::string valid_request = R"({"from_seq":6,"to_seq":7,"v":1})";
  // Response Topics the gateway must not answer on (refused, counted, no reply anywhere).
  const std::vector<std::string> foreign_topics = {
      "checkpoint/other/resend/response", "elsewhere/gw/resend/response",
      "checkpoint/gw/evidence",           "checkpoint/gw/custody",
      "checkpoint/gwx/resend/response",   "checkpoint/gw",
      "checkpoint/gw/resend/respons",     "checkpoint/gw/resend/responseX",
      "checkpoint/gw/resend/response/x",  std::string(20000, 'r')};
  const auto burst_request = [](int k) {
    const std::uint64_t from = kAccepted + 1 + static_cast<std::uint64_t>(k);
    return R"({"from_seq":)" + std::to_string(from) + R"(,"to_seq":)" + std::to_string(from + 9) +
           R"(,"v":1})";
  };

  // --- the flood: two raw clients for >= 10 s, as fast as the broker acknowledges ---
  std::atomic<std::uint64_t> receipts_early{0};  // fail checks 1-3
  std::atomic<std::uint64_t> receipts_store{0};  // signed by central, refused by the store (or ignored)
  std::atomic<std::uint64_t> receipts_replayed{0};
  std::atomic<std::uint64_t> receipts_huge{0};
  std::atomic<std::uint64_t> requests_answered{0};  // refused with a reply
  std::atomic<std::uint64_t> requests_silent{0};    // refused without a reply (foreign or no Response Topic)
  std::atomic<std::uint64_t> requests_huge{0};
  std::vector<std::string> burst_ids;  // Correlation Data of the valid requests (request thread only)
  std::cout << "flood starts: checkpointd pid " << daemon->pid() << ", " << dir_.path().string() << std::endl;
  const auto start = Clock::now();
  std::thread receipts([&] {
    MqttPublisher client(broker_->uri(), "flood-receipts");
    std::uint64_t i = 0;
    while (Clock::now() - start < kFlood) {
      for (int k = 0; k < 8; ++k, ++i) {
        client.publish(kReceipts, early_refused[i % early_refused.size()]);
        ++receipts_early;
      }
      client.publish(kReceipts, store_refused[i % store_refused.size()]);
      client.publish(kReceipts, store_refused[(i + 1) % store_refused.size()]);
      receipts_store += 2;
      client.publish(kReceipts, accepted);  // replayed: ignored
      ++receipts_replayed;
      if (i % 400 == 0) {
        client.publish(kReceipts, huge);
        client.publish(kReceipts, raw_jws(central_key, receipt_header(kid), huge));
        receipts_huge += 2;
      }
    }
    client.drain();
  });
  std::thread requests([&] {
    MqttPublisher client(broker_->uri(), "flood-requests");
    std::uint64_t i = 0;
    int bursts = 0;
    while (Clock::now() - start < kFlood) {
      if (bursts < 3 && Clock::now() - start > 2s + bursts * 3s) {
        // Many valid requests at once: one served, custody.resend_max_queued queued, the rest "busy".
        for (int k = 0; k < kBurst; ++k) {
          const std::string id = "burst-" + std::to_string(bursts) + "-" + std::to_string(k);
          client.publish(kRequests, burst_request(k), kReplies, id);
          burst_ids.push_back(id);
        }
        ++bursts;
      }
      for (int k = 0; k < 8; ++k, ++i) {
        client.publish(kRequests, bad_requests[i % bad_requests.size()], kReplies,
                       "bad-" + std::to_string(i));
        ++requests_answered;
      }
      client.publish(kRequests, valid_request, foreign_topics[i % foreign_topics.size()],
                     "foreign-" + std::to_string(i));
      client.publish(kRequests, bad_requests[i % bad_requests.size()]);  // no Response Topic: no reply
      requests_silent += 2;
      if (i % 400 == 0) {
        client.publish(kRequests, huge, kReplies, "huge-" + std::to_string(i));
        ++requests_huge;
      }
    }
    client.drain();
  });

  // Meanwhile: the daemon's memory, and its control socket answering.
  const long rss_before = rss_kb(daemon->pid());
  long rss_max = rss_before;
  int status_answers = 0;
  int status_asked = 0;
  auto next_status = start + 1s;
  while (Clock::now() - start < kFlood) {
    rss_max = std::max(rss_max, rss_kb(daemon->pid()));
    if (Clock::now() >= next_status) {
      ++status_asked;
      const auto now = custody_status();
      status_answers += now.is_object() ? 1 : 0;
      // Nothing the flood says moves custody or deletes a record.
      EXPECT_EQ(counter(now, "through_seq"), kAccepted) << now.dump();
      EXPECT_EQ(counter(now, "pruned_records"), kAccepted) << now.dump();
      next_status += 2s;
    }
    pause(100ms);
  }
  receipts.join();
  requests.join();
  const auto flood_end = Clock::now();
  const double flood_s = std::chrono::duration<double>(flood_end - start).count();
  ASSERT_TRUE(daemon->running()) << daemon->stderr_text().substr(0, 20000);
  const std::uint64_t receipts_sent = receipts_early + receipts_store + receipts_replayed + receipts_huge;
  const std::uint64_t requests_sent = requests_answered + requests_silent + requests_huge + burst_ids.size();
  std::cout << "flood: " << receipts_sent << " receipts (" << receipts_early << " failing checks 1-3, "
            << receipts_store << " for the store to refuse, " << receipts_replayed << " replays, "
            << receipts_huge << " of 1.5 MiB) and " << requests_sent << " resend requests ("
            << requests_answered << " to refuse with a reply, " << requests_silent << " without, "
            << requests_huge << " of 1.5 MiB, " << burst_ids.size() << " valid) in " << flood_s
            << " s = " << static_cast<long>(static_cast<double>(receipts_sent + requests_sent) / flood_s)
            << " msg/s" << std::endl;

  // The gateway takes the broker's backlog. Every message that reached it (all but the 1.5 MiB ones: its
  // Maximum Packet Size) is accounted for: refused, queued, ignored (a replay; a receipt below one being
  // checked) or dropped at the bounded hand-off, each counted but the ignored ones.
  const std::uint64_t must_count =
      2 + receipts_early + requests_answered + requests_silent + burst_ids.size();
  const auto counted = [&](const nlohmann::json& s) {
    return counter(s, "receipts_refused") + counter(s, "resend_refused") + counter(s, "resend_requests") +
           counter(s, "inputs_dropped") + counter(s, "broker_inbound_dropped");
  };
  // A drained backlog: the count has reached what must be counted and stopped moving.
  std::uint64_t last_count = 0;
  const bool drained = wait_for_condition(
      [&] {
        st = custody_status();
        const std::uint64_t n = counted(st);
        const bool settled = n >= must_count && n == last_count;
        last_count = n;
        return settled;
      },
      60s);
  const double drain_s = std::chrono::duration<double>(Clock::now() - flood_end).count();
  const long peak = peak_rss_kb(daemon->pid());
  std::cout << "gateway: backlog taken " << drain_s << " s after the flood; RSS " << rss_before
            << " kB before, " << rss_max << " kB at most (sampled), VmHWM " << peak
            << " kB; control socket answered " << status_answers << " of " << status_asked << "; custody "
            << st.dump() << std::endl;
  EXPECT_TRUE(drained) << st.dump();
  ASSERT_TRUE(daemon->running()) << daemon->stderr_text().substr(0, 20000);
  EXPECT_EQ(status_answers, status_asked);
  EXPECT_GE(counted(st), must_count);
  EXPECT_LE(counted(st), must_count + receipts_store + receipts_replayed + receipts_huge + requests_huge);
  if (!kSanitized && std::getenv("CPD_SANITIZED") == nullptr) {
    EXPECT_LT(peak - rss_before, 32 * 1024) << "RSS " << rss_before << " -> peak " << peak << " kB";
  }

  // Nothing moved, nothing was deleted.
  EXPECT_EQ(counter(st, "receipts_accepted"), 1U);
  EXPECT_EQ(counter(st, "through_seq"), kAccepted);
  EXPECT_EQ(counter(st, "pruned_records"), kAccepted);
  EXPECT_EQ(store_query(store_db_, "SELECT min(seq) FROM records"), static_cast<long long>(kAccepted) + 1);
  EXPECT_EQ(store_query(store_db_, "SELECT count(*) FROM custody"), 1);
  EXPECT_EQ(store_query(store_db_, "SELECT count(*) FROM records WHERE type = 'custody'"), 1);

  // Replies in the flood: at most one per request; the bad ones errors; the valid ones "busy" or served
  // whole. (Replies go through the side channel's bounded queue, so under the flood some may be dropped; the
  // calm phase below checks them one by one.)
  std::map<std::string, int> answers;
  std::size_t busy = 0;
  std::size_t served = 0;
  std::size_t bad_answered = 0;
  const std::set<std::string> bursts(burst_ids.begin(), burst_ids.end());
  for (const auto& r : watch.replies()) {
    ++answers[r.correlation];
    ASSERT_TRUE(r.body.is_object()) << r.correlation;
    if (r.correlation.rfind("bad-", 0) == 0) {
      ++bad_answered;
      EXPECT_TRUE(r.body["error"].is_string()) << r.correlation << " " << r.body.dump();
    } else if (bursts.count(r.correlation) > 0) {
      if (r.body.contains("error")) {
        EXPECT_EQ(r.body["error"].get<std::string>().rfind("busy: ", 0), 0U) << r.body.dump();
        ++busy;
      } else {
        ++served;
        EXPECT_EQ(r.body["sent"], 10) << r.body.dump();
        EXPECT_EQ(r.body["not_held"], nlohmann::json::array()) << r.body.dump();
      }
    } else {
      ADD_FAILURE() << "a reply nobody asked for: " << r.correlation << " " << r.body.dump();
    }
  }
  for (const auto& [id, n] : answers) {
    EXPECT_EQ(n, 1) << id << " answered " << n << " times";
  }
  std::cout << "replies in the flood: " << bad_answered << " errors for " << requests_answered
            << " bad requests; " << busy << " busy and " << served << " served of " << bursts.size()
            << " valid" << std::endl;
  EXPECT_GT(bad_answered, 0U);
  EXPECT_TRUE(watch.strays().empty()) << watch.strays().front();

  // Live records kept arriving at the radar's rate all through the flood.
  const auto records = watch.records();
  // The rate before the flood (the simulator's vehicles, as the pipeline turns them into records).
  std::size_t before = 0;
  auto first_live = start;
  for (const auto& [seq, r] : records) {
    if (r.type == "speed_measurement" && r.first < start) {
      first_live = std::min(first_live, r.first);
      ++before;
    }
  }
  const double baseline =
      static_cast<double>(before) / std::chrono::duration<double>(start - first_live).count();
  std::size_t live = 0;
  std::vector<Clock::time_point> arrivals;
  for (const auto& [seq, r] : records) {
    if (r.first >= start && r.first <= flood_end) {
      live += r.type == "speed_measurement" ? 1 : 0;
      arrivals.push_back(r.first);
    }
  }
  std::sort(arrivals.begin(), arrivals.end());
  double longest_gap = 0;
  auto last = start;
  for (const auto t : arrivals) {
    longest_gap = std::max(longest_gap, std::chrono::duration<double>(t - last).count());
    last = t;
  }
  longest_gap = std::max(longest_gap, std::chrono::duration<double>(flood_end - last).count());
  std::cout << "live: " << live << " speed records in " << flood_s
            << " s of flood = " << static_cast<double>(live) / flood_s << "/s (before it: " << baseline
            << "/s), longest wait for a new record " << longest_gap << " s" << std::endl;
  EXPECT_GE(static_cast<double>(live) / flood_s, 0.7 * baseline);
  EXPECT_LT(longest_gap, 2.0);

  // --- calm again: each input answered exactly as docs/custody.md says ---
  const std::size_t replies_before = watch.replies_count();
  const std::uint64_t refused_before_calm = counter(st, "receipts_refused");
  const auto reply_to = [&](const std::string& id) { return watch.reply(id); };
  // First the flood's queued requests are served (slowly: their publishes waited behind the flood's error
  // replies in the side channel's queue). A request served in turn says nothing is left before it.
  for (int k = 0;; ++k) {
    const std::string id = "probe-" + std::to_string(k);
    {
      MqttPublisher central(broker_->uri(), "fake-central");
      central.publish(kRequests, burst_request(0), kReplies, id);
    }
    ASSERT_TRUE(wait_for_condition([&] { return !reply_to(id).is_null(); }, 20s)) << id << " unanswered";
    if (!reply_to(id).contains("error")) {
      break;
    }
    ASSERT_LT(k, 20) << reply_to(id).dump();
    pause(300ms);
  }
  {
    // A request for the most media a request may name (1000, none held: 67 KB, over 64 KiB).
    MqttPublisher central(broker_->uri(), "fake-central");
    nlohmann::json most = {{"v", 1}, {"media", nlohmann::json::array()}};
    for (int k = 0; k < 1000; ++k) {
      most["media"].push_back(random_sha());
    }
    central.publish(kRequests, most.dump(), kReplies, "most-media");
  }
  const auto most_media = [&] { return reply_to("most-media"); };
  ASSERT_TRUE(wait_for_condition([&] { return !most_media().is_null(); }, 20s))
      << "a request of 1000 media unanswered";
  EXPECT_EQ(most_media()["media_not_held"].size(), 1000U) << most_media().dump().substr(0, 300);
  // Calm: each group stays well below the 64 messages the gateway's hand-off holds, and waits for its
  // replies.
  const std::uint64_t dropped_before_calm = counter(custody_status(), "inputs_dropped");
  const auto send_requests = [&](const std::vector<std::pair<std::string, std::string>>& batch) {
    {
      MqttPublisher central(broker_->uri(), "fake-central");
      for (const auto& [id, payload] : batch) {
        central.publish(kRequests, payload, kReplies, id);
      }
    }
    EXPECT_TRUE(wait_for_condition(
        [&] {
          return std::all_of(batch.begin(), batch.end(),
                             [&](const auto& r) { return !reply_to(r.first).is_null(); });
        },
        20s))
        << "unanswered requests, the first " << batch.front().first;
  };
  // Valid requests beyond the queue: one served, resend_max_queued queued, the others "busy".
  std::vector<std::pair<std::string, std::string>> burst;
  for (int k = 0; k < kBurst; ++k) {
    burst.emplace_back("calm-" + std::to_string(k), burst_request(k));
  }
  send_requests(burst);
  std::size_t calm_busy = 0;
  std::size_t calm_served = 0;
  for (const auto& [id, payload] : burst) {
    const auto body = reply_to(id);
    if (body.contains("error")) {
      EXPECT_EQ(body["error"].get<std::string>(), "busy: " + std::to_string(kMaxQueued) +
                                                      " requests already queued (custody.resend_max_queued)");
      ++calm_busy;
    } else {
      EXPECT_EQ(body["sent"], 10) << body.dump();
      ++calm_served;
    }
  }
  // At least one served and resend_max_queued queued; more when one was served while the burst still
  // arrived (the pacing's token bucket lets a short request through at once after a pause; seen under load).
  std::cout << "calm: " << calm_busy << " busy, " << calm_served << " served of " << kBurst
            << " valid requests at once" << std::endl;
  EXPECT_GE(calm_served, static_cast<std::size_t>(1 + kMaxQueued));
  EXPECT_GE(calm_busy, static_cast<std::size_t>(kBurst / 3));
  EXPECT_EQ(calm_busy + calm_served, static_cast<std::size_t>(kBurst));
  // Each malformed request: an error reply.
  for (std::size_t k = 0; k < bad_requests.size(); k += 8) {
    std::vector<std::pair<std::string, std::string>> group;
    for (std::size_t j = k; j < std::min(k + 8, bad_requests.size()); ++j) {
      group.emplace_back("calm-bad-" + std::to_string(j), bad_requests[j]);
    }
    send_requests(group);
    for (const auto& [id, payload] : group) {
      EXPECT_TRUE(reply_to(id)["error"].is_string()) << id << " " << reply_to(id).dump();
    }
  }
  // Each request answered once.
  std::map<std::string, int> calm_answers;
  const auto all_replies = watch.replies();
  for (std::size_t k = replies_before; k < all_replies.size(); ++k) {
    ++calm_answers[all_replies[k].correlation];
  }
  for (const auto& [id, n] : calm_answers) {
    EXPECT_EQ(n, 1) << id << " answered " << n << " times";
  }
  // Receipts for seqs beyond the head, each checked while the next arrives: all refused, and they leave
  // nothing behind that would make the gateway ignore the genuine receipt after them.
  {
    MqttPublisher central(broker_->uri(), "fake-central");
    for (std::uint64_t k = 1; k <= 20; ++k) {
      central.publish(
          kReceipts,
          custody::seal_receipt(
              central_key, {"central-test", "gw", 1000000000000ULL + 1000 + k, random_sha(), 6, {}, {}}));
    }
  }
  EXPECT_TRUE(wait_for_condition(
      [&] { return counter(st = custody_status(), "receipts_refused") == refused_before_calm + 20; }, 20s))
      << st.dump();
  EXPECT_EQ(counter(st, "inputs_dropped"), dropped_before_calm) << "the calm phase's messages were dropped";

  // The gateway still accepts a genuine receipt: the refused ones left no trace in its state.
  const std::uint64_t through = watch.contiguous();
  ASSERT_GT(through, head0);
  {
    MqttPublisher central(broker_->uri(), "fake-central");
    central.publish(
        kReceipts,
        custody::seal_receipt(central_key,
                              {"central-test", "gw", through, sha256_hex(watch.jws(through)), 9, {}, {}}));
  }
  EXPECT_TRUE(wait_for_condition(
      [&] {
        st = custody_status();
        return counter(st, "through_seq") == through && counter(st, "receipts_accepted") == 2;
      },
      20s))
      << st.dump();
  // Every record resent is counted: the served requests' replies say how many they sent. A request queued
  // early in the flood may have asked for seqs beyond the head of then, and sent fewer than 10.
  {
    std::uint64_t replied_sent = 0;
    std::uint64_t sent = 0;
    for (const auto& r : watch.replies()) {
      if (r.body.is_object() && !r.body.contains("error") && r.body.contains("sent")) {
        ++replied_sent;
        sent += r.body["sent"].get<std::uint64_t>();
      }
    }
    EXPECT_LE(counter(st, "resent_records"), 10 * (counter(st, "resend_requests") - 1)) << st.dump();
    if (replied_sent == counter(st, "resend_requests")) {
      EXPECT_EQ(counter(st, "resent_records"), sent) << st.dump();
    } else {
      // A served request's reply can be lost in the flood (the side channel's queue is bounded).
      EXPECT_GE(counter(st, "resent_records"), sent) << st.dump();
    }
  }

  // The chain, as published, verifies from seq 1.
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text().substr(0, 20000);
  const auto chain = watch.records();
  {
    std::ofstream out(dir_ / "export.jws");
    for (const auto& [seq, r] : chain) {
      out << r.jws << "\n";
    }
  }
  EXPECT_EQ(chain.rbegin()->first, static_cast<std::uint64_t>(head_seq()));
  std::string out;
  std::string err;
  EXPECT_EQ(verify_export(&out, &err, 30s), 0) << out << err;
  std::cout << out;
}

}  // namespace
}  // namespace cpd::testing
