// checkpoint-central under hostile input, with real parts: mosquitto, a private PostgreSQL, the real
// checkpoint-central (and, in the flood, a real gateway: radar simulator -> checkpointd). The test also plays
// a gateway of its own ("gh", its key enrolled) to answer resend requests and to announce heads.
#include <gtest/gtest.h>
#include <mqtt/async_client.h>
#include <signal.h>

#include <atomic>
#include <climits>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "central/central_store.h"
#include "central/file_intake.h"
#include "central/pg.h"
#include "daemon/core/custody.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/file_transfer.h"
#include "daemon/core/key_rotation.h"
#include "daemon/core/record_check.h"
#include "tests/integration/custody_fixture.h"

namespace cpd::testing {
namespace {

using namespace std::chrono_literals;

class CentralHostile : public CustodyFixture {
 protected:
  void SetUp() override {
    CustodyFixture::SetUp();
    std::ofstream(dir_ / "gh.pub.pem") << gh_key_.public_key().pem();
    CentralConfig config;
    config.feed_extra =
        "  queue_messages: 2000\n  queue_mb: " + std::to_string(kQueueMb) +
        "\n  quarantine_max_per_gateway: " + std::to_string(kRowsPerGateway) +
        "\n  quarantine_max_mb_per_gateway: 2\n  quarantine_max_rows: " + std::to_string(kRows) +
        "\n  quarantine_max_mb: " + std::to_string(kMb) + "\n";
    config.metrics = true;
    write_central_config("central", config);
    for (const auto& [gateway, pem] : {std::pair<std::string, fs::path>{"gw", pub_pem_},
                                       std::pair<std::string, fs::path>{"gh", dir_ / "gh.pub.pem"}}) {
      std::string err;
      ASSERT_EQ(central_enroll(gateway, pem, &err), 0) << err;
    }
  }

  void start_central() { CustodyFixture::start_central(central_, "central", &metrics_port_); }

  // Central's recordings intake against the test's PostgreSQL, without the broker: the schema, a connection,
  // a media directory and a signing key (max 1 MiB a file, 4 open, stall 30 s, retry up to 300 s).
  struct IntakeRig {
    explicit IntakeRig(CentralHostile& t)
        : store(t.pg_.conninfo()),
          pg(std::make_unique<central::PgConnection>(t.pg_.conninfo())),
          media(t.dir_ / "central-media"),
          intake(std::make_unique<central::FileIntake>(
              central::FileIntakeConfig{"central-test", media.string(), 1 << 20, 4, 30000, 300000}, key,
              "checkpoint")) {}
    central::CentralStore store;
    std::unique_ptr<central::PgConnection> pg;
    fs::path media;
    Ed25519PrivateKey key = Ed25519PrivateKey::generate();
    std::unique_ptr<central::FileIntake> intake;
  };

  // Receipts by count only (every 3 records), so a test knows which receipt comes when.
  void start_central_with_receipts_every_3_records() {
    CentralConfig config;
    config.receipts = "  every_records: 3\n  every_ms: 3600000\n";
    config.metrics = true;
    write_central_config("central", config);
    start_central();
  }

  nlohmann::json status() {
    std::string out;
    std::string err;
    EXPECT_EQ(central_cli({"status", "--config", (dir_ / "central.yaml").string(), "--json"}, &out, &err), 0)
        << err;
    return nlohmann::json::parse(out, nullptr, false);
  }

  // A record of gateway gh, as the gateway seals it (canonical body, signed by `key`): a `note` unless
  // `fields` says otherwise.
  static std::string gh_signed(const Ed25519PrivateKey& key, std::uint64_t seq, const std::string& prev,
                               const nlohmann::json& fields) {
    nlohmann::json body = {{"v", 1},
                           {"gateway", "gh"},
                           {"seq", seq},
                           {"id", "gh:" + std::to_string(seq)},
                           {"prev", prev},
                           {"type", "note"},
                           {"time_ms", 1767225600000 + static_cast<long long>(seq)},
                           {"created_ms", 1767225600000 + static_cast<long long>(seq)}};
    body.update(fields);
    return sign_compact(key, "evidence+jws", body);
  }

  // A `note` of gh naming these pictures, signed by gh's key.
  std::string gh_record(std::uint64_t seq, const std::string& prev,
                        const std::vector<std::string>& pictures) {
    nlohmann::json fields = nlohmann::json::object();
    if (!pictures.empty()) {
      fields["pictures"] = nlohmann::json::array();
      for (const auto& sha : pictures) {
        fields["pictures"].push_back({{"sha256", sha}});
      }
    }
    return gh_signed(gh_key_, seq, prev, fields);
  }

  // gh's notes 1..n, each following on from the one before (o1..on).
  std::vector<std::string> gh_chain(std::uint64_t n) {
    std::vector<std::string> chain{gh_record(1, std::string(64, '0'), {})};
    for (std::uint64_t seq = 2; seq <= n; ++seq) {
      chain.push_back(gh_record(seq, sha256_hex(chain.back()), {}));
    }
    return chain;
  }

  // A record of gh as classify() hands it to the store (verified, decoded).
  central::IncomingRecord gh_incoming(const std::string& jws) {
    const nlohmann::json body = record_body(jws);
    central::IncomingRecord r;
    r.gateway = "gh";
    r.seq = body["seq"].get<std::uint64_t>();
    r.jws = jws;
    r.jws_sha256 = sha256_hex(jws);
    r.prev = body["prev"].get<std::string>();
    r.kid = gh_key_.public_key().kid();
    r.body = body;
    return r;
  }

  long long gh_int(const std::string& column) {
    return pg_int("SELECT " + column + " FROM gateways WHERE gateway = 'gh'");
  }

  // "h1,h2,...": the SHA-256 of jws[from..to), as string_agg of jws_sha256 prints them.
  static std::string hashes(const std::vector<std::string>& jws, std::size_t from, std::size_t to) {
    std::string out;
    for (std::size_t i = from; i < to; ++i) {
      out += (out.empty() ? "" : ",") + sha256_hex(jws[i]);
    }
    return out;
  }

  // Publishes jws[from..to) on gh's evidence topic and waits for their PUBACKs.
  static void publish_evidence(MqttPublisher& gh, const std::vector<std::string>& jws, std::size_t from,
                               std::size_t to) {
    for (std::size_t i = from; i < to; ++i) {
      gh.publish("checkpoint/gh/evidence", jws[i]);
    }
    gh.drain();
  }

  // Answers a resend request the way a gateway does: on its Response Topic, with its Correlation Data.
  static void reply_to(MqttPublisher& gateway, const mqtt::const_message_ptr& request,
                       const custody::ResendReply& reply) {
    auto out =
        mqtt::make_message(mqtt::get<std::string>(request->get_properties(), mqtt::property::RESPONSE_TOPIC),
                           custody::resend_reply_json(reply), 1, false);
    out->set_properties(mqtt::properties{
        {mqtt::property::CORRELATION_DATA,
         mqtt::get<mqtt::binary>(request->get_properties(), mqtt::property::CORRELATION_DATA)}});
    gateway.client().publish(out);
  }

  static constexpr int kQueueMb = 16;
  static constexpr int kRowsPerGateway = 300;
  static constexpr int kRows = 600;
  static constexpr int kMb = 8;

  Ed25519PrivateKey gh_key_ = Ed25519PrivateKey::generate();
  std::unique_ptr<Process> central_;
};

// A resend reply saying a picture is no longer held: recorded (gateway, seq, sha256, when), not asked for
// again, shown by status and metrics; custody (watermark, receipts) stops before the record naming it. A
// signed head naming another hash for a seq central holds is a fork alarm, and so is a record that arrives
// after such a head. A reply nobody asked for changes nothing, and an operator can discard its quarantine
// row.
TEST_F(CentralHostile, MediaNotHeldIsRecordedAndAHeadForkIsAlarmed) {
  start_central();
  const std::string lost = sha256_hex("a picture the gateway lost");
  const std::string r1 = gh_record(1, std::string(64, '0'), {});
  const std::string r2 = gh_record(2, sha256_hex(r1), {lost});
  const std::string r3 = gh_record(3, sha256_hex(r2), {});

  // The test answers resend requests as a gateway that no longer holds the picture.
  std::atomic<int> media_requests{0};
  std::atomic<int> other_requests{0};
  MqttPublisher gh(broker_->uri(), "gh");
  gh.client().set_message_callback([&](mqtt::const_message_ptr msg) {
    const auto parsed = custody::parse_resend_request(msg->get_payload_str());
    if (!parsed.request) {
      return;
    }
    if (parsed.request->media.empty()) {
      ++other_requests;
      return;
    }
    ++media_requests;
    custody::ResendReply reply;
    reply.media_not_held = parsed.request->media;
    reply_to(gh, msg, reply);
  });
  gh.client().subscribe("checkpoint/gh/resend", 1)->wait();

  // A reply nobody asked for, naming everything as lost: not believed.
  gh.publish(
      "checkpoint/gh/resend/response",
      R"({"from_seq":1,"media_not_held":[],"media_sent":[],"not_held":[[1,9223372036854775807]],"sent":0,"to_seq":9223372036854775807,"v":1})",
      "", "12345");
  gh.publish("checkpoint/gh/evidence", r1);
  gh.publish("checkpoint/gh/evidence", r2);
  gh.publish("checkpoint/gh/evidence", r3);
  gh.drain();

  ASSERT_TRUE(
      wait_for_condition([&] { return pg_int("SELECT count(*) FROM unrecoverable_media") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT gateway || ' ' || seq || ' ' || sha256 FROM unrecoverable_media"),
            "gh 2 " + lost);
  EXPECT_GT(pg_int("SELECT noted_ms FROM unrecoverable_media"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM unrecoverable WHERE gateway = 'gh'"), 0)
      << "an unsolicited reply was believed";
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh' AND topic = 'resend/response'"), 1);

  // Not asked for again (three times the longest backoff), and custody stops before seq 2.
  const int asked = media_requests.load();
  pause(6s);
  EXPECT_EQ(media_requests.load(), asked)
      << "a picture the gateway said it no longer holds was asked for again";
  EXPECT_EQ(pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"), 1);
  EXPECT_LE(pg_int("SELECT receipt_seq FROM gateways WHERE gateway = 'gh'"), 1);
  const auto s = status();
  bool seen = false;
  for (const auto& g : s["gateways"]) {
    if (g["gateway"] == "gh") {
      seen = true;
      EXPECT_EQ(g["unrecoverable_media_count"], 1);
      EXPECT_EQ(g["unrecoverable_media"][0]["seq"], 2);
      EXPECT_EQ(g["unrecoverable_media"][0]["sha256"], lost);
      EXPECT_EQ(g["watermark"], 1);
      EXPECT_EQ(g["max_seq"], 3);
    }
  }
  EXPECT_TRUE(seen) << s.dump();
  std::string m = metrics();
  EXPECT_EQ(prometheus_sample(m, "central_unsolicited_replies_total"), 1) << m;
  EXPECT_EQ(prometheus_sample(m, "central_unrecoverable_total"), 1) << m;
  EXPECT_NE(m.find("central_gateway_unrecoverable_media{gateway=\"gh\"} 1"), std::string::npos) << m;

  // A head, signed by gh's key, naming another hash for seq 1: kept and alarmed; the announced head stays.
  gh.publish("checkpoint/gh/head",
             custody::seal_head(gh_key_, custody::Head{"gh", 1, std::string(64, 'e'), 1767225609000}));
  // The true head is no fork.
  gh.publish("checkpoint/gh/head",
             custody::seal_head(gh_key_, custody::Head{"gh", 3, sha256_hex(r3), 1767225609001}));
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM head_forks") == 1; }, 20s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT seq || ' ' || stored_hash FROM head_forks"), "1 " + sha256_hex(r1));
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT announced_seq FROM gateways WHERE gateway = 'gh'") == 3; }, 20s));
  EXPECT_EQ(pg_int("SELECT head_forks FROM gateways WHERE gateway = 'gh'"), 1);
  m = metrics();
  EXPECT_EQ(prometheus_sample(m, "central_head_forks_total"), 1) << m;
  EXPECT_NE(central_->stderr_text().find("FORK: head announcement gh:1"), std::string::npos);

  // A head announced before its record arrives, naming another hash for its seq: the fork is found when the
  // record is stored, and kept with the signed announcement.
  const std::string r4 = gh_record(4, sha256_hex(r3), {});
  const std::string r5 = gh_record(5, sha256_hex(r4), {});
  const std::string early =
      custody::seal_head(gh_key_, custody::Head{"gh", 5, std::string(64, 'f'), 1767225609002});
  gh.publish("checkpoint/gh/head", early);
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT announced_seq FROM gateways WHERE gateway = 'gh'") == 5; }, 20s));
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_forks"), 1);
  gh.publish("checkpoint/gh/evidence", r4);
  gh.publish("checkpoint/gh/evidence", r5);
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM head_forks") == 2; }, 20s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT announced_hash || ' ' || stored_hash FROM head_forks WHERE seq = 5"),
            std::string(64, 'f') + " " + sha256_hex(r5));
  EXPECT_EQ(pg_.query("SELECT jws FROM head_forks WHERE seq = 5"), early);
  EXPECT_EQ(pg_int("SELECT head_forks FROM gateways WHERE gateway = 'gh'"), 2);
  m = metrics();
  EXPECT_EQ(prometheus_sample(m, "central_head_forks_total"), 2) << m;
  EXPECT_NE(central_->stderr_text().find("FORK: head announcement gh:5"), std::string::npos);

  // Two announcements before their records, the second replacing the first as the last one: the record the
  // first one named is still compared with it when it arrives (the contradicted head at seq 7 is a fork), and
  // every compared announcement is dropped.
  const std::string r6 = gh_record(6, sha256_hex(r5), {});
  const std::string r7 = gh_record(7, sha256_hex(r6), {});
  const std::string r8 = gh_record(8, sha256_hex(r7), {});
  const std::string wrong7 =
      custody::seal_head(gh_key_, custody::Head{"gh", 7, std::string(64, 'a'), 1767225609003});
  gh.publish("checkpoint/gh/head", wrong7);
  gh.publish("checkpoint/gh/head",
             custody::seal_head(gh_key_, custody::Head{"gh", 8, sha256_hex(r8), 1767225609004}));
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT announced_seq FROM gateways WHERE gateway = 'gh'") == 8; }, 20s));
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_announcements WHERE gateway = 'gh'"), 2);
  gh.publish("checkpoint/gh/evidence", r6);
  gh.publish("checkpoint/gh/evidence", r7);
  gh.publish("checkpoint/gh/evidence", r8);
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM head_forks") == 3; }, 20s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT announced_hash || ' ' || stored_hash FROM head_forks WHERE seq = 7"),
            std::string(64, 'a') + " " + sha256_hex(r7));
  EXPECT_EQ(pg_.query("SELECT jws FROM head_forks WHERE seq = 7"), wrong7);
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_forks WHERE seq = 8"), 0) << "the true head is no fork";
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM head_announcements WHERE gateway = 'gh'") == 0; }, 20s));

  // Bounded: announcements far ahead of the records keep only the 64 highest seqs.
  for (std::uint64_t seq = 100; seq < 170; ++seq) {
    gh.publish("checkpoint/gh/head",
               custody::seal_head(gh_key_, custody::Head{"gh", seq, sha256_hex(std::to_string(seq)),
                                                         static_cast<std::int64_t>(1767225610000 + seq)}));
  }
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT announced_seq FROM gateways WHERE gateway = 'gh'") == 169; }, 20s));
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_announcements WHERE gateway = 'gh'"), 64);
  EXPECT_EQ(pg_int("SELECT min(seq) FROM head_announcements WHERE gateway = 'gh'"), 106);
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();

  // An operator discards gh's quarantine row (the unsolicited reply): deleted, uncounted, who and why kept.
  const std::string config = (dir_ / "central.yaml").string();
  const auto discard = [&](std::vector<std::string> more, std::string* out) {
    std::vector<std::string> args = {"discard-quarantine", "--config", config, "--gateway", "gh"};
    args.insert(args.end(), more.begin(), more.end());
    return central_cli(args, out);
  };
  std::string out;
  EXPECT_EQ(discard({"--reason", "bell\x07", "--operator", "op"}, &out), 2) << "a reason not printable";
  EXPECT_EQ(discard({"--id", "999999999", "--reason", "noise", "--operator", "op"}, &out), 0);
  EXPECT_NE(out.find("discarded 0 quarantine rows"), std::string::npos) << out;
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine_discards"), 0) << "a discard of nothing was kept";
  ASSERT_EQ(discard({"--reason", "an unsolicited reply, looked at", "--operator", "duty officer"}, &out), 0);
  EXPECT_NE(out.find("discarded 1 quarantine rows"), std::string::npos) << out;
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT rows FROM quarantine_usage WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT rows FROM quarantine_usage WHERE gateway = ''"),
            pg_int("SELECT count(*) FROM quarantine"));
  EXPECT_EQ(pg_.query("SELECT rows || ' ' || operator || ' / ' || reason FROM quarantine_discards"),
            "1 duty officer / an unsolicited reply, looked at");
}

// An operator accepts what a gateway reported lost (checkpoint-central accept-loss): refused for what the
// gateway did not report lost or central holds; once accepted, the watermark passes it (the record after a
// lost range has no predecessor at central to check its prev against), and the receipts say what they do
// not cover (lost_seqs, lost_pictures), signed by central's key like the rest.
TEST_F(CentralHostile, AnOperatorAcceptsAReportedLossAndCustodyMovesPastIt) {
  start_central();
  const std::string lost = sha256_hex("a picture the gateway lost");
  const std::string r1 = gh_record(1, std::string(64, '0'), {});
  const std::string r2 = gh_record(2, sha256_hex(r1), {lost});
  const std::string r3 = gh_record(3, sha256_hex(r2), {});  // lost: never published
  const std::string r4 = gh_record(4, sha256_hex(r3), {});

  // The test answers resend requests as a gateway that lost seq 3 and r2's picture.
  MqttPublisher gh(broker_->uri(), "gh");
  gh.client().set_message_callback([&](mqtt::const_message_ptr msg) {
    const auto parsed = custody::parse_resend_request(msg->get_payload_str());
    if (!parsed.request) {
      return;
    }
    custody::ResendReply reply;
    reply.from_seq = parsed.request->from_seq;
    reply.to_seq = parsed.request->to_seq;
    if (parsed.request->to_seq > 0) {
      reply.not_held = {{parsed.request->from_seq, parsed.request->to_seq}};
    }
    reply.media_not_held = parsed.request->media;
    reply_to(gh, msg, reply);
  });
  gh.client().subscribe("checkpoint/gh/resend", 1)->wait();
  gh.publish("checkpoint/gh/evidence", r1);
  gh.publish("checkpoint/gh/evidence", r2);
  gh.publish("checkpoint/gh/evidence", r4);
  gh.drain();
  ASSERT_TRUE(
      wait_for_condition([&] { return pg_int("SELECT count(*) FROM unrecoverable_media") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"), 1);

  const std::string config = (dir_ / "central.yaml").string();
  const auto accept = [&](std::vector<std::string> what, std::string* out, std::string* err) {
    std::vector<std::string> args = {"accept-loss", "--config", config, "--gateway", "gh"};
    args.insert(args.end(), what.begin(), what.end());
    return central_cli(args, out, err);
  };
  std::string out;
  std::string err;
  // Refused, nothing changes: what the gateway never reported lost, what central holds, no reason given.
  EXPECT_EQ(accept({"--seq", "3", "--reason", "r", "--operator", "op"}, &out, &err), 1);
  EXPECT_NE(err.find("seq 3 was not reported lost by the gateway"), std::string::npos) << err;
  EXPECT_EQ(accept({"--seq", "1-3", "--reason", "r", "--operator", "op"}, &out, &err), 1);
  EXPECT_NE(err.find("seq 1 is held"), std::string::npos) << err;
  EXPECT_EQ(accept({"--picture", sha256_hex("another"), "--reason", "r", "--operator", "op"}, &out, &err), 1);
  EXPECT_NE(err.find("was not reported lost"), std::string::npos) << err;
  EXPECT_NE(accept({"--picture", lost, "--operator", "op"}, &out, &err), 0);
  EXPECT_NE(accept({"--seq", "2-1", "--reason", "r", "--operator", "op"}, &out, &err), 0);
  EXPECT_EQ(
      pg_int("SELECT count(*) FROM accepted_losses") + pg_int("SELECT count(*) FROM accepted_media_losses"),
      0);
  EXPECT_EQ(pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"), 1);

  // A receipt names at most 1 000 losses of each kind, and every one below its through_seq: with 1 000
  // accepted already (elsewhere in the chain), the next is refused, or a receipt would have to leave one out.
  pg_.query(
      "INSERT INTO accepted_losses (gateway, from_seq, to_seq, reason, operator, accepted_ms) SELECT 'gh', "
      "1000000 + 2 * i, 1000000 + 2 * i, 'r', 'op', 0 FROM generate_series(1, 1000) i");
  pg_.query(
      "INSERT INTO accepted_media_losses (gateway, sha256, reason, operator, accepted_ms) SELECT 'gh', "
      "md5(i::text) || md5(i::text), 'r', 'op', 0 FROM generate_series(1, 1000) i");
  EXPECT_EQ(accept({"--picture", lost, "--reason", "r", "--operator", "op"}, &out, &err), 1);
  EXPECT_NE(err.find("already has 1000 accepted picture losses, the most one custody receipt can name"),
            std::string::npos)
      << err;
  pg_.query("DELETE FROM accepted_media_losses");

  // The picture: custody passes seq 2; then central asks for the hole at 3, which the gateway lost too.
  ASSERT_EQ(accept({"--picture", lost, "--reason", "camera SD card failed", "--operator", "duty officer 7"},
                   &out, &err),
            0)
      << err;
  EXPECT_NE(out.find("custody through seq 2"), std::string::npos) << out;
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM unrecoverable WHERE gateway = 'gh' AND from_seq = 3") == 1; },
      30s))
      << central_->stderr_text();
  EXPECT_EQ(accept({"--seq", "3", "--reason", "r", "--operator", "op"}, &out, &err), 1);
  EXPECT_NE(err.find("already has 1000 accepted record losses"), std::string::npos) << err;
  EXPECT_EQ(pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"), 2);
  pg_.query("DELETE FROM accepted_losses");
  ASSERT_EQ(
      accept({"--seq", "3", "--reason", "store sector lost", "--operator", "duty officer 7"}, &out, &err), 0)
      << err;
  EXPECT_NE(out.find("custody through seq 4"), std::string::npos) << out;

  // The receipt through 4 names both losses and verifies with central's key.
  MqttCollector receipts(broker_->uri(), {"checkpoint/gh/custody"});
  std::optional<custody::Receipt> last;
  ASSERT_TRUE(receipts.wait_until(
      [&] {
        for (const auto& p : receipts.payloads("checkpoint/gh/custody")) {
          const auto c = custody::check_receipt(
              p,
              [&](const std::string& kid) -> std::optional<Ed25519PublicKey> {
                return kid == central_pub_->kid() ? std::optional(*central_pub_) : std::nullopt;
              },
              "gh");
          if (c.ok && c.receipt.through_seq == 4) {
            last = c.receipt;
            return true;
          }
        }
        return false;
      },
      20s))
      << central_->stderr_text();
  EXPECT_EQ(last->head, sha256_hex(r4));
  EXPECT_EQ(last->lost_seqs, (std::vector<std::pair<std::uint64_t, std::uint64_t>>{{3, 3}}));
  EXPECT_EQ(last->lost_pictures, std::vector<std::string>{lost});

  const auto s = status();
  bool seen = false;
  for (const auto& g : s["gateways"]) {
    if (g["gateway"] == "gh") {
      seen = true;
      EXPECT_EQ(g["watermark"], 4);
      ASSERT_EQ(g["accepted_losses"].size(), 2u) << g.dump();
      EXPECT_EQ(g["accepted_losses"][0]["picture"], lost);
      EXPECT_EQ(g["accepted_losses"][1]["seqs"], nlohmann::json::array({3, 3}));
      EXPECT_EQ(g["accepted_losses"][1]["operator"], "duty officer 7");
    }
  }
  EXPECT_TRUE(seen) << s.dump();
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

// >= 10 s of hostile messages on every topic central subscribes to, as fast as one MQTT client gets them
// acknowledged, beside a real gateway whose chain must still reach custody.
// A record signed by a key that a rotation stored after it retires (two instances' transactions overlapping,
// played here by publishing the forgery before the rotation record reaches central): stored at first, it is
// set aside when the watermark walk reaches it, and the gateway's own record under the new key takes its seq.
TEST_F(CentralHostile, ARecordUnderAKeyRetiredByALaterStoredRotationIsSetAsideWhenWalked) {
  start_central();
  const auto new_key = Ed25519PrivateKey::generate();
  const auto record = [](const Ed25519PrivateKey& key, std::uint64_t seq, const std::string& prev,
                         const std::string& type, nlohmann::json fields) {
    fields["type"] = type;
    return gh_signed(key, seq, prev, fields);
  };
  const std::string r1 = gh_record(1, std::string(64, '0'), {});
  const std::string r2 = gh_record(2, sha256_hex(r1), {});
  const std::string r3 =
      record(gh_key_, 3, sha256_hex(r2), "key_rotation",
             make_key_rotation_fact(gh_key_.public_key(), new_key.public_key(), 1767225600003).fields);
  const std::string forged = record(gh_key_, 4, sha256_hex(r3), "note", {{"message", "forged"}});
  const std::string genuine = record(new_key, 4, sha256_hex(r3), "note", {{"message", "genuine"}});

  MqttPublisher gh(broker_->uri(), "gh");
  gh.publish("checkpoint/gh/evidence", r1);
  gh.publish("checkpoint/gh/evidence", r2);
  gh.publish("checkpoint/gh/evidence", forged);  // the old key is still valid for seq 4 here
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 4") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"), 2);

  gh.publish("checkpoint/gh/evidence", r3);  // the rotation: the old key ends at seq 3
  gh.drain();
  ASSERT_TRUE(
      wait_for_condition([&] { return pg_int("SELECT count(*) FROM forks WHERE gateway = 'gh'") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT jws_sha256 FROM forks WHERE gateway = 'gh' AND seq = 4"), sha256_hex(forged));
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 4"), 0);
  EXPECT_EQ(pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"), 3);
  EXPECT_EQ(prometheus_sample(metrics(), "central_retired_key_total"), 1);
  EXPECT_NE(central_->stderr_text().find("RETIRED KEY: gh:4: seq 4 is signed by kid " +
                                         gh_key_.public_key().kid() + ", retired at seq 3"),
            std::string::npos)
      << central_->stderr_text();

  gh.publish("checkpoint/gh/evidence", genuine);
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'") == 4; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT jws_sha256 FROM records WHERE gateway = 'gh' AND seq = 4"),
            sha256_hex(genuine));
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

// A gateway whose store was replaced continues its chain after central's last receipt (through 4), but
// central held two records of the old store after it (received, never confirmed). The continued chain's
// store_replaced record sets them aside (kept in forks, never deleted) and custody follows the new chain:
// no fork alarm, no chain break, receipts go on. A second replacement continuing after 4 once central has
// confirmed 7 is not followed: a fork, as before.
TEST_F(CentralHostile, AReplacedStoreIsFollowedPastTheOldChainsUnconfirmedRecords) {
  start_central_with_receipts_every_3_records();
  const auto record = [&](std::uint64_t seq, const std::string& prev, const nlohmann::json& fields) {
    return gh_signed(gh_key_, seq, prev, fields);
  };
  // The continued chain is sealed after the old one (the old store was lost before the new one started).
  constexpr long long kLater = 1767225600000 + 60000;
  const auto store_replaced = [&](std::uint64_t after, const std::string& head, const std::string& why) {
    return record(after + 1, head,
                  {{"type", "audit"},
                   {"event", "store_replaced"},
                   {"reason", why},
                   {"continued_from_seq", after},
                   {"continued_from_head", head},
                   {"lost_after_seq", after},
                   {"created_ms", kLater}});
  };
  std::vector<std::string> old_chain{gh_record(1, std::string(64, '0'), {})};
  for (std::uint64_t seq = 2; seq <= 6; ++seq) {
    old_chain.push_back(gh_record(seq, sha256_hex(old_chain.back()), {}));
  }
  const auto watermark = [&] { return pg_int("SELECT watermark_seq FROM gateways WHERE gateway = 'gh'"); };
  const auto receipt_seq = [&] { return pg_int("SELECT receipt_seq FROM gateways WHERE gateway = 'gh'"); };
  MqttPublisher gh(broker_->uri(), "gh");
  // The first receipt goes out at once (through 1), the next when custody is 3 records further (through 4).
  gh.publish("checkpoint/gh/evidence", old_chain[0]);
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return receipt_seq() == 1; }, 30s)) << central_->stderr_text();
  for (std::size_t i = 1; i < 4; ++i) {
    gh.publish("checkpoint/gh/evidence", old_chain[i]);
  }
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return receipt_seq() == 4; }, 30s)) << central_->stderr_text();
  gh.publish("checkpoint/gh/evidence", old_chain[4]);
  gh.publish("checkpoint/gh/evidence", old_chain[5]);
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == 6; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(receipt_seq(), 4);

  // The store is lost; the gateway continues after the receipt through 4.
  const std::string n5 = store_replaced(4, sha256_hex(old_chain[3]), "store.db missing at start");
  const std::string n6 = record(6, sha256_hex(n5), {{"message", "new 6"}, {"created_ms", kLater + 1}});
  const std::string n7 = record(7, sha256_hex(n6), {{"message", "new 7"}, {"created_ms", kLater + 2}});
  // The continued chain's head announcement (seq 6) comes before its records: compared with the old chain's
  // 6, it reads as a fork, until the store_replaced record sets the old chain aside. It then goes back among
  // the announcements, compared with the new 6 when that comes (it used to stay a head fork, alarmed).
  const auto head_forks = [&] { return pg_int("SELECT head_forks FROM gateways WHERE gateway = 'gh'"); };
  gh.publish("checkpoint/gh/head",
             custody::seal_head(gh_key_, custody::Head{"gh", 6, sha256_hex(n6), kLater + 3}));
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return head_forks() == 1; }, 30s)) << central_->stderr_text();
  gh.publish("checkpoint/gh/evidence", n5);
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == 5; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(head_forks(), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_forks WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_announcements WHERE gateway = 'gh' AND seq = 6"), 1);
  // The old chain's 6, set aside, arrives again (a redelivery, a late resend) before the new chain's 6: it
  // stays set aside. It used to take the free seq 6, and the new 6 became a fork and a chain break.
  gh.publish("checkpoint/gh/evidence", old_chain[5]);
  gh.drain();
  pause(1s);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 6"), 0);
  for (const auto& jws : {n6, n7}) {
    gh.publish("checkpoint/gh/evidence", jws);
  }
  gh.drain();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() == 7; }, 30s)) << central_->stderr_text();
  ASSERT_TRUE(wait_for_condition([&] { return receipt_seq() == 7; }, 30s)) << central_->stderr_text();
  for (const auto& [seq, jws] : std::vector<std::pair<int, std::string>>{{5, n5}, {6, n6}, {7, n7}}) {
    EXPECT_EQ(
        pg_.query("SELECT jws_sha256 FROM records WHERE gateway = 'gh' AND seq = " + std::to_string(seq)),
        sha256_hex(jws));
  }
  // The old chain's unconfirmed records are kept, beside the forks; nothing counts as a fork or a break.
  EXPECT_EQ(pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM forks WHERE gateway = 'gh'"),
            sha256_hex(old_chain[4]) + "," + sha256_hex(old_chain[5]));
  EXPECT_EQ(pg_int("SELECT forks FROM gateways WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM gateways WHERE gateway = 'gh' AND chain_break_seq IS NULL"), 1);
  EXPECT_EQ(pg_.query("SELECT reason FROM chain_restarts WHERE gateway = 'gh' AND seq = 5"),
            "store.db missing at start (records after seq 4 lost) -- followed: the old chain's 2 record(s) "
            "central held after seq 4 (seq 5..6, never confirmed) set aside into forks; 1 head fork(s) noted "
            "against those records withdrawn (the announcements are compared again)");
  EXPECT_EQ(head_forks(), 0) << "the announcement matched the continued chain's 6";
  EXPECT_EQ(pg_int("SELECT count(*) FROM head_announcements WHERE gateway = 'gh'"), 0);
  EXPECT_NE(central_->stderr_text().find("set aside into forks"), std::string::npos)
      << central_->stderr_text();

  // Central has confirmed 1..7 of the continued chain: another chain continuing after 4 is not followed.
  const std::string again = store_replaced(4, sha256_hex(old_chain[3]), "replaced again");
  gh.publish("checkpoint/gh/evidence", again);
  gh.drain();
  ASSERT_TRUE(
      wait_for_condition([&] { return pg_int("SELECT forks FROM gateways WHERE gateway = 'gh'") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT jws_sha256 FROM records WHERE gateway = 'gh' AND seq = 5"), sha256_hex(n5));
  EXPECT_EQ(watermark(), 7);
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

// A gateway restored from a backup holding seq 1..3 goes on sealing 4, 5, … while central holds (and has
// confirmed through 4) the lost history's 4..6: its 4..6 arrive as forks and its 7 as a chain break. An
// operator chooses the gateway's branch (choose-branch): refused while the branch is incomplete and, without
// --past-receipt, because it replaces confirmed records; then the branch takes 4..6, the other branch is
// kept in forks, custody walks on and the choice is kept. While the break stands central asks for the seqs
// below it, which brings in the branch's missing record. Choosing a fork as the tip sets aside what does not
// follow on from it.
TEST_F(CentralHostile, AnOperatorChoosesTheGatewaysBranchAtAChainBreak) {
  start_central_with_receipts_every_3_records();
  const std::vector<std::string> lost = gh_chain(6);                  // o1..o6
  std::vector<std::string> restored(lost.begin(), lost.begin() + 3);  // 1..3, then b4..b9
  const std::string b5_picture = "b5's picture";
  for (std::uint64_t seq = 4; seq <= 9; ++seq) {
    nlohmann::json fields = {{"message", "restored"}};
    if (seq == 5) {
      fields["pictures"] = nlohmann::json::array({{{"sha256", sha256_hex(b5_picture)}}});
    }
    restored.push_back(gh_signed(gh_key_, seq, sha256_hex(restored.back()), fields));
  }
  const auto chain = [&] {
    return pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM records WHERE gateway = 'gh'");
  };
  MqttPublisher gh(broker_->uri(), "gh");
  const auto publish = [&](const std::vector<std::string>& jws, std::size_t from, std::size_t to) {
    publish_evidence(gh, jws, from, to);
  };
  // Once `answering`, gh answers range requests as the restored gateway does: it republishes what it holds.
  std::atomic<bool> answering{false};
  std::atomic<int> break_requests{0};
  gh.client().set_message_callback([&](mqtt::const_message_ptr msg) {
    const auto parsed = custody::parse_resend_request(msg->get_payload_str());
    if (!parsed.request || parsed.request->from_seq != 1 || parsed.request->to_seq != 4) {
      return;  // only what the branch below the chain break at 7 lacks (b4, and the 99 seqs below it)
    }
    ++break_requests;
    if (answering) {
      for (std::size_t i = 0; i < 4; ++i) {
        gh.client().publish(mqtt::make_message("checkpoint/gh/evidence", restored[i], 1, false));
      }
      // Seqs 1..2 are gone from the restored gateway (retention): central holds them, so nothing is lost.
      custody::ResendReply reply;
      reply.from_seq = 1;
      reply.to_seq = 4;
      reply.not_held = {{1, 2}};
      reply_to(gh, msg, reply);
    }
  });
  gh.client().subscribe("checkpoint/gh/resend", 1)->wait();
  publish(lost, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 1; }, 30s)) << central_->stderr_text();
  publish(lost, 1, 4);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 4; }, 30s)) << central_->stderr_text();
  publish(lost, 4, 6);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 6; }, 30s))
      << central_->stderr_text();
  ASSERT_EQ(gh_int("receipt_seq"), 4);

  gh.publish("checkpoint/gh/media/" + sha256_hex(b5_picture), b5_picture);
  publish(restored, 4, 8);  // b5..b8: b5, b6 forks, b7 a chain break, b8 stored above it
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("COALESCE(chain_break_seq, 0)") == 7; }, 30s))
      << central_->stderr_text();
  const std::string cfg = (dir_ / "central.yaml").string();
  const auto choose = [&](std::vector<std::string> what, std::string* out, std::string* err) {
    std::vector<std::string> args = {
        "choose-branch", "--config",      cfg, "--gateway", "gh", "--reason", "backup restored 2026-12-01",
        "--operator",    "duty officer 7"};
    args.insert(args.end(), what.begin(), what.end());
    return central_cli(args, out, err);
  };
  std::string out;
  std::string err;
  EXPECT_EQ(choose({"--past-receipt"}, &out, &err), 1);
  EXPECT_NE(err.find("the branch needs gh:4 with SHA-256 " + sha256_hex(restored[3])), std::string::npos)
      << err;
  EXPECT_EQ(choose({"--tip", "7:nothex"}, &out, &err), 2);
  // Central asks for what the branch lacks; the gateway's answer brings b4 in as a fork too.
  ASSERT_TRUE(wait_for_condition([&] { return break_requests.load() > 0; }, 30s)) << central_->stderr_text();
  answering = true;
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("forks") == 3; }, 30s)) << central_->stderr_text();
  const int asked = break_requests.load();
  pause(3s);  // longer than the fixture's longest request backoff (2 s)
  EXPECT_LE(break_requests.load(), asked + 1) << "a complete branch is asked for again";
  EXPECT_EQ(pg_int("SELECT count(*) FROM unrecoverable WHERE gateway = 'gh'"), 0)
      << "not_held below the watermark (records central holds) was taken as a loss";
  EXPECT_EQ(choose({}, &out, &err), 1);
  EXPECT_NE(err.find("central confirmed gh through seq 4"), std::string::npos) << err;
  EXPECT_EQ(chain(), hashes(lost, 0, 6) + "," + hashes(restored, 6, 8));
  EXPECT_EQ(pg_int("SELECT count(*) FROM branch_choices"), 0);

  ASSERT_EQ(choose({"--past-receipt"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("seq 4..6 taken from the forks"), std::string::npos) << out;
  EXPECT_NE(out.find("3 record(s) of the other branch (seq 4..6) set aside"), std::string::npos) << out;
  EXPECT_NE(out.find("custody through seq 8"), std::string::npos) << out;
  EXPECT_EQ(chain(), hashes(restored, 0, 8));
  EXPECT_EQ(gh_int("receipt_seq"), 3) << "the next receipt names the chosen branch's head";
  EXPECT_EQ(pg_.query("SELECT string_agg(seq || ':' || sha256, ',') FROM record_media WHERE gateway = 'gh'"),
            "5:" + sha256_hex(b5_picture));
  EXPECT_EQ(pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM forks WHERE gateway = 'gh'"),
            hashes(lost, 3, 6));
  EXPECT_EQ(gh_int("COALESCE(chain_break_seq, 0)"), 0);
  EXPECT_EQ(pg_.query("SELECT from_seq || '-' || to_seq || ' ' || set_aside || ' ' || past_receipt || ' ' || "
                      "receipt_seq || ' ' || operator FROM branch_choices"),
            "4-6 3 true 4 duty officer 7");
  const nlohmann::json gh_status = status()["gateways"][0];
  EXPECT_EQ(gh_status["branch_choices"].size(), 1u);
  ASSERT_EQ(gh_status["fork_records"].size(), 3u);  // the lost history's 4..6, set aside
  EXPECT_EQ(gh_status["fork_records"][2]["sha256"], sha256_hex(lost[5]));
  publish(restored, 8, 9);  // b9: the receipt follows the chosen branch
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 9; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT watermark_hash FROM gateways WHERE gateway = 'gh'"), sha256_hex(restored[8]));

  // Back to the lost history by its fork at 6: b4..b6 and, not following on from o6, b7..b9 are set aside.
  ASSERT_EQ(choose({"--tip", "6:" + sha256_hex(lost[5]), "--past-receipt"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("6 record(s) of the other branch (seq 4..9) set aside"), std::string::npos) << out;
  EXPECT_EQ(chain(), hashes(lost, 0, 6));
  EXPECT_EQ(gh_int("watermark_seq"), 6);
  EXPECT_EQ(pg_int("SELECT count(*) FROM record_media WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks WHERE gateway = 'gh'"), 6);
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

// A chain break whose branch nobody holds: a gateway restored from a backup (o1..o3, then b4..b9) has since
// lost b4 too. Central asks for what the branch lacks, the gateway says it no longer holds b4 (noted apart:
// central holds o4 there), and the asking stops. choose-branch refuses the incomplete branch until the
// operator accepts b4 as lost (--accept-break): then the branch b5.. follows on over the hole at 4, o4..o6
// are set aside, and receipts name seq 4 as lost.
TEST_F(CentralHostile, AChainBreakWhoseBranchNobodyHoldsIsPassedByAcceptingTheMissingRecord) {
  start_central_with_receipts_every_3_records();
  const std::vector<std::string> lost = gh_chain(6);                  // o1..o6
  std::vector<std::string> restored(lost.begin(), lost.begin() + 3);  // 1..3, then b4..b9
  for (std::uint64_t seq = 4; seq <= 9; ++seq) {
    restored.push_back(gh_signed(gh_key_, seq, sha256_hex(restored.back()), {{"message", "restored"}}));
  }
  MqttPublisher gh(broker_->uri(), "gh");
  const auto publish = [&](const std::vector<std::string>& jws, std::size_t from, std::size_t to) {
    publish_evidence(gh, jws, from, to);
  };
  // gh answers what the branch below the chain break at 7 lacks (b4, and the 99 seqs below it) as the
  // restored gateway does: it republishes o3, and no longer holds 1..2 (retention) nor b4 (lost).
  std::atomic<int> break_requests{0};
  std::mutex receipt_mutex;
  std::string receipt;
  gh.client().set_message_callback([&](mqtt::const_message_ptr msg) {
    if (msg->get_topic() == "checkpoint/gh/custody") {
      std::lock_guard lock(receipt_mutex);
      receipt = msg->get_payload_str();
      return;
    }
    const auto parsed = custody::parse_resend_request(msg->get_payload_str());
    if (!parsed.request || parsed.request->from_seq != 1 || parsed.request->to_seq != 4) {
      return;
    }
    ++break_requests;
    gh.client().publish(mqtt::make_message("checkpoint/gh/evidence", restored[2], 1, false));
    custody::ResendReply reply;
    reply.from_seq = 1;
    reply.to_seq = 4;
    reply.not_held = {{1, 2}, {4, 4}};
    reply_to(gh, msg, reply);
  });
  gh.client().subscribe("checkpoint/gh/resend", 1)->wait();
  gh.client().subscribe("checkpoint/gh/custody", 1)->wait();
  publish(lost, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 1; }, 30s)) << central_->stderr_text();
  publish(lost, 1, 4);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 4; }, 30s)) << central_->stderr_text();
  publish(lost, 4, 6);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 6; }, 30s))
      << central_->stderr_text();
  publish(restored, 4, 8);  // b5, b6 forks, b7 a chain break, b8 stored above it
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("COALESCE(chain_break_seq, 0)") == 7; }, 30s))
      << central_->stderr_text();

  // The gateway's not_held below the watermark is noted apart, and the branch it leaves incomplete is not
  // asked for again and again.
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM branch_not_held WHERE gateway = 'gh'") == 2; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM unrecoverable WHERE gateway = 'gh'"), 0);
  const int asked = break_requests.load();
  pause(3s);  // longer than the fixture's longest request backoff (2 s)
  EXPECT_LE(break_requests.load(), asked + 1) << "a branch nobody holds is asked for again";

  const std::string cfg = (dir_ / "central.yaml").string();
  const auto choose = [&](std::vector<std::string> what, std::string* out, std::string* err) {
    std::vector<std::string> args = {"choose-branch",
                                     "--config",
                                     cfg,
                                     "--gateway",
                                     "gh",
                                     "--reason",
                                     "backup restored, b4 lost with the disk",
                                     "--operator",
                                     "duty officer 7"};
    args.insert(args.end(), what.begin(), what.end());
    return central_cli(args, out, err);
  };
  std::string out;
  std::string err;
  EXPECT_EQ(choose({"--past-receipt"}, &out, &err), 1);
  EXPECT_NE(err.find("the branch needs gh:4 with SHA-256 " + sha256_hex(restored[3])), std::string::npos)
      << err;
  EXPECT_NE(err.find("the gateway reported it no longer holds"), std::string::npos) << err;
  EXPECT_NE(err.find("--accept-break"), std::string::npos) << err;
  EXPECT_EQ(choose({"--accept-break"}, &out, &err), 1);
  EXPECT_NE(err.find("central confirmed gh through seq 4"), std::string::npos) << err;
  EXPECT_EQ(pg_int("SELECT count(*) FROM branch_choices"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM accepted_losses"), 0);

  ASSERT_EQ(choose({"--accept-break", "--past-receipt"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("seq 5..6 taken from the forks"), std::string::npos) << out;
  EXPECT_NE(out.find("seq 4 accepted as lost"), std::string::npos) << out;
  EXPECT_NE(out.find("3 record(s) of the other branch (seq 4..6) set aside"), std::string::npos) << out;
  EXPECT_NE(out.find("custody through seq 8"), std::string::npos) << out;
  EXPECT_EQ(pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM records WHERE gateway = 'gh'"),
            hashes(lost, 0, 3) + "," + hashes(restored, 4, 8));
  EXPECT_EQ(pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM forks WHERE gateway = 'gh'"),
            hashes(lost, 3, 6));
  EXPECT_EQ(pg_.query("SELECT from_seq || '-' || to_seq || ' ' || operator FROM accepted_losses"),
            "4-4 duty officer 7");
  EXPECT_EQ(pg_.query("SELECT from_seq || '-' || to_seq || ' ' || accepted_lost_seq || ' ' || past_receipt "
                      "FROM branch_choices"),
            "5-6 4 true");
  EXPECT_EQ(status()["gateways"][0]["branch_choices"][0]["accepted_lost_seq"], 4);
  // The next receipt (b9 makes one due) names the chosen branch's head and says seq 4 is lost.
  publish(restored, 8, 9);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 9; }, 30s)) << central_->stderr_text();
  nlohmann::json body;
  ASSERT_TRUE(wait_for_condition(
      [&] {
        std::lock_guard lock(receipt_mutex);
        body = unverified_jws_part(receipt, 1).value_or(nlohmann::json());
        return body.is_object() && body.value("through_seq", 0) == 9;
      },
      30s))
      << body.dump();
  EXPECT_EQ(body["head"], sha256_hex(restored[8])) << body.dump();
  EXPECT_EQ(body["lost_seqs"], nlohmann::json::parse("[[4,4]]")) << body.dump();

  // The set-aside o4, delivered again, does not fill the hole custody passed as lost: it stays in forks, a
  // duplicate of the copy set aside (alarmed when it was set aside, not again).
  const auto duplicates = prometheus_sample(metrics(), "central_duplicates_total");
  publish(lost, 3, 4);
  ASSERT_TRUE(wait_for_condition(
      [&] { return prometheus_sample(metrics(), "central_duplicates_total") > duplicates; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 4"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks WHERE gateway = 'gh' AND seq = 4"), 1);
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

// A branch set aside undoes its key rotations. Central held o1..o6 of gh, o4 rotating gh's key to a new one
// (o5, o6 signed by it); the gateway, restored from a backup taken at seq 3, seals b4.. with its old key. b4
// is a fork; b5.. are refused as forgeries (the old key retired at seq 4) and quarantined. Choosing b4's
// branch sets o4..o6 aside and undoes o4's rotation: the new key is enrolled no more, the old one signs again
// with no end, and the quarantined b5..b7 are examined again and taken in; the undone key signs nothing any
// more.
TEST_F(CentralHostile, ChoosingABranchUndoesTheKeyRotationsOfTheBranchSetAside) {
  start_central_with_receipts_every_3_records();
  const auto new_key = Ed25519PrivateKey::generate();
  std::vector<std::string> lost(gh_chain(3));  // o1..o3, then o4 (the rotation) .. o7 under the new key
  nlohmann::json rotation =
      make_key_rotation_fact(gh_key_.public_key(), new_key.public_key(), 1767225600004).fields;
  rotation["type"] = "key_rotation";
  lost.push_back(gh_signed(gh_key_, 4, sha256_hex(lost.back()), rotation));
  for (std::uint64_t seq = 5; seq <= 7; ++seq) {
    lost.push_back(gh_signed(new_key, seq, sha256_hex(lost.back()), {{"message", "after the rotation"}}));
  }
  std::vector<std::string> restored(lost.begin(), lost.begin() + 3);  // 1..3, then b4..b7 under the old key
  for (std::uint64_t seq = 4; seq <= 7; ++seq) {
    restored.push_back(gh_signed(gh_key_, seq, sha256_hex(restored.back()), {{"message", "restored"}}));
  }
  const auto chain = [&] {
    return pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM records WHERE gateway = 'gh'");
  };
  const auto quarantined = [&] { return pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"); };
  MqttPublisher gh(broker_->uri(), "gh");
  publish_evidence(gh, lost, 0, 6);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("receipt_seq") == 6; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(pg_.query("SELECT valid_to_seq FROM gateway_keys WHERE gateway = 'gh' AND kid = '" +
                      gh_key_.public_key().kid() + "'"),
            "4");
  publish_evidence(gh, restored, 3, 7);  // b4 a fork; b5..b7 under a key retired at seq 4: quarantined
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("forks") == 1 && quarantined() == 3; }, 30s))
      << central_->stderr_text();

  const std::string cfg = (dir_ / "central.yaml").string();
  std::string out;
  std::string err;
  ASSERT_EQ(central_cli(
                {"choose-branch", "--config", cfg, "--gateway", "gh", "--tip", "4:" + sha256_hex(restored[3]),
                 "--past-receipt", "--reason", "backup of seq 3 restored", "--operator", "duty officer 7"},
                &out, &err),
            0)
      << err;
  EXPECT_NE(out.find("3 record(s) of the other branch (seq 4..6) set aside"), std::string::npos) << out;
  EXPECT_NE(
      err.find("key rotation at gh:4 undone: kid " + new_key.public_key().kid() + " is no longer enrolled"),
      std::string::npos)
      << err;
  EXPECT_NE(err.find("kid " + gh_key_.public_key().kid() + " signs again with no end (was through seq 4)"),
            std::string::npos)
      << err;
  EXPECT_EQ(pg_int("SELECT count(*) FROM gateway_keys WHERE gateway = 'gh'"), 1);
  EXPECT_EQ(pg_.query("SELECT COALESCE(valid_to_seq::text, 'no end') FROM gateway_keys WHERE gateway = 'gh'"),
            "no end");
  EXPECT_EQ(pg_.query("SELECT undone_rotations FROM branch_choices"), "4:" + new_key.public_key().kid());
  EXPECT_EQ(status()["gateways"][0]["branch_choices"][0]["undone_rotations"],
            "4:" + new_key.public_key().kid());

  // The quarantined b5..b7 verify under the old key's range now: taken in, custody through b7.
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 7; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(chain(), hashes(restored, 0, 7));
  EXPECT_EQ(quarantined(), 0);
  EXPECT_EQ(pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM forks WHERE gateway = 'gh'"),
            hashes(lost, 3, 6));
  // The undone key signs nothing: o7, under it, is quarantined, not stored.
  publish_evidence(gh, lost, 6, 7);
  ASSERT_TRUE(wait_for_condition([&] { return quarantined() == 1; }, 30s)) << central_->stderr_text();
  EXPECT_EQ(chain(), hashes(restored, 0, 7));
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(20s), 0) << central_->stderr_text();
}

// Two records with one seq in one batch (a cloned gateway publishing beside the real one): PostgreSQL's
// INSERT ... ON CONFLICT DO NOTHING keeps the first and skips the other without a word, so both looked stored
// and the clone was lost unseen. The batch's later copies now go to the fork check: other bytes are a fork
// (kept, counted), the same bytes a duplicate.
TEST_F(CentralHostile, TwoCopiesOfOneSeqInOneBatchAreAForkOrADuplicate) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  const auto incoming = [&](const std::string& jws) { return gh_incoming(jws); };
  const auto chain = gh_chain(2);
  const std::string clone2 = gh_signed(gh_key_, 2, sha256_hex(chain[0]), {{"note", "a clone's record"}});
  central::Batch batch;
  batch.records = {incoming(chain[0]), incoming(chain[1]), incoming(clone2), incoming(chain[1])};
  const central::BatchOutcome out = store.store_batch(batch, 1767225600000, policy);
  EXPECT_EQ(out.stored, 2u);
  EXPECT_EQ(out.forks, 1u);
  EXPECT_EQ(out.duplicates, 1u);
  EXPECT_EQ(pg_.query("SELECT string_agg(jws_sha256, ',' ORDER BY seq) FROM records WHERE gateway = 'gh'"),
            hashes(chain, 0, 2));
  EXPECT_EQ(pg_.query("SELECT jws_sha256 FROM forks WHERE gateway = 'gh' AND seq = 2"), sha256_hex(clone2));
  EXPECT_EQ(gh_int("forks"), 1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM record_media WHERE gateway = 'gh'"), 0);
}

// Recordings at central, against a real PostgreSQL (FileIntake without the broker): a transfer started again
// with a smaller size keeps no byte of the old one beyond it, and a second copy of a segment already held,
// with other bytes under a checksum of their own, writes nothing. Before, the old tail stayed in the partial
// file and the copy overwrote the first one's bytes: either way the whole file failed its hash and was asked
// for again from nothing.
TEST_F(CentralHostile, AFileTransferStartedAgainOrSentASegmentTwiceStillAssemblesTheRightBytes) {
  const IntakeRig rig(*this);
  central::PgConnection& pg = *rig.pg;
  const fs::path& media = rig.media;
  central::FileIntake& intake = *rig.intake;
  std::string content(8192, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) {
    content[i] = static_cast<char>(i * 7 % 251);
  }
  const std::string sha = sha256_hex(content);
  const fs::path part = media / "partial" / "gh" / (sha + ".part");
  std::vector<central::FilePublish> out;
  std::int64_t now = 1767225600000;
  const auto send = [&](const std::string& topic, const std::string& payload) {
    intake.handle(pg, "gh", topic, payload, ++now, out);
  };
  const auto segment = [&](std::uint64_t offset, const std::string& bytes) {
    send(filex::segment_topic("", sha, offset, sha256_hex(bytes)), bytes);
  };

  // A first init claims 12 KiB; a segment lands at 8 KiB. The transfer starts again at the true 8 KiB.
  send(filex::init_topic("", sha), filex::init_json({sha, 12288, 4096, "a.mp4", 7}));
  segment(8192, std::string(4096, 'q'));
  EXPECT_EQ(fs::file_size(part), 12288u);
  send(filex::init_topic("", sha), filex::init_json({sha, 8192, 4096, "a.mp4", 7}));
  EXPECT_LE(fs::file_size(part), 8192u);
  EXPECT_EQ(pg_int("SELECT count(*) FROM file_segments WHERE sha256 = '" + sha + "'"), 0);

  // Segment 0, then another payload at offset 0 with its own checksum: a duplicate, nothing written.
  segment(0, content.substr(0, 4096));
  segment(0, std::string(4096, 'z'));
  EXPECT_EQ(intake.counters().segments_duplicate.load(), 1u);
  // The gateway aborts, then opens it again: what was received is dropped, and `files` shows no byte
  // received (it used to keep counting the bytes of before the abort).
  send(filex::abort_topic("", sha), filex::abort_json("read error"));
  EXPECT_EQ(pg_.query("SELECT state || ' ' || received_bytes FROM file_uploads WHERE sha256 = '" + sha + "'"),
            "not_held 0");
  send(filex::init_topic("", sha), filex::init_json({sha, 8192, 4096, "a.mp4", 7}));
  segment(0, content.substr(0, 4096));
  EXPECT_EQ(pg_.query("SELECT received_bytes FROM file_uploads WHERE sha256 = '" + sha + "'"), "4096");
  segment(4096, content.substr(4096));

  EXPECT_EQ(intake.counters().mismatches.load(), 0u);
  EXPECT_EQ(intake.counters().files_held.load(), 1u);
  EXPECT_EQ(pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + sha + "'"), "held");
  EXPECT_FALSE(fs::exists(part));
  std::ifstream held(media / sha.substr(0, 2) / sha, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(held), {}), content);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back().topic, "checkpoint/gh/files/receipt");

  // A late copy of a segment once the file is held: dropped, no partial file made again.
  segment(4096, content.substr(4096));
  EXPECT_FALSE(fs::exists(part));
  EXPECT_EQ(intake.counters().unexpected.load(), 1u);
}

// feed.unnamed_max_mb bounds, per gateway, the files central keeps that no stored record names. Pictures
// nobody names are taken up to the bound, then refused (counted); a picture a stored record names is taken
// all the same, and so is one central holds already. A recording's init whose record is not stored, beyond
// the bound, is told to come back later; once its record is stored it opens. Before, an enrolled gateway (or
// anyone its ACL lets publish on its topics) could fill central's media directory with files no evidence
// names.
TEST_F(CentralHostile, FilesNoRecordNamesAreBoundedPerGatewayAndANamedOneIsAlwaysTaken) {
  CentralConfig config;
  config.feed_extra = "  unnamed_max_mb: 1\n";
  config.metrics = true;
  write_central_config("central", config);
  start_central();
  std::mt19937 rng(7);
  const auto picture = [&rng] {
    std::string bytes(400 * 1024, '\0');
    for (char& c : bytes) {
      c = static_cast<char>(rng());
    }
    return bytes;
  };
  const std::vector<std::string> pictures = {picture(), picture(), picture()};
  MqttPublisher gh(broker_->uri(), "gh");
  for (const auto& p : pictures) {
    gh.publish("checkpoint/gh/media/" + sha256_hex(p), p);
  }
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return prometheus_sample(metrics(), "central_media_unnamed_refused_total") == 1; }, 30s))
      << central_->stderr_text();
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM media") == 2; }, 30s))
      << "two of 400 KiB fit in 1 MiB";
  pause(500ms);
  EXPECT_EQ(pg_int("SELECT count(*) FROM media"), 2) << "the third does not";
  EXPECT_EQ(pg_int("SELECT count(*) FROM media WHERE named"), 0);
  gh.publish("checkpoint/gh/media/" + sha256_hex(pictures[0]), pictures[0]);  // held already: taken

  // Record 1 names the refused picture: once it is stored, central asks for the picture (a resend request),
  // takes it past the bound, and the record is in custody with it.
  const std::string wanted = sha256_hex(pictures[2]);
  std::atomic<bool> asked{false};
  gh.client().set_message_callback([&](mqtt::const_message_ptr msg) {
    const auto parsed = custody::parse_resend_request(msg->get_payload_str());
    if (parsed.request && !asked &&
        std::find(parsed.request->media.begin(), parsed.request->media.end(), wanted) !=
            parsed.request->media.end()) {
      asked = true;
      gh.client().publish(mqtt::make_message("checkpoint/gh/media/" + wanted, pictures[2], 1, false));
    }
  });
  gh.client().subscribe("checkpoint/gh/resend", 1)->wait();
  const std::string rec = gh_record(1, std::string(64, '0'), {wanted});
  publish_evidence(gh, {rec}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_TRUE(asked);
  EXPECT_EQ(prometheus_sample(metrics(), "central_media_unnamed_refused_total"), 1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM media"), 3);

  // Recordings: 800 KiB of unnamed pictures leave no room for a 300 KiB file no record names, nor for an open
  // transfer grown to that size; a file of 4 KiB fits (and 1 byte counts as 4 KiB).
  const IntakeRig rig(*this);
  std::vector<central::FilePublish> out;
  const std::string file(300 * 1024, 'r');
  const std::string sha = sha256_hex(file);
  central::FileIntakeConfig small{"central-test", rig.media.string(), 1 << 20, 4, 30000, 300000, 1 << 20};
  central::FileIntake intake(small, rig.key, "checkpoint");
  intake.handle(*rig.pg, "gh", filex::init_topic("", sha),
                filex::init_json({sha, file.size(), 65536, "a.mp4", 2}), 1767225600000, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "checkpoint/gh/files/refused");
  EXPECT_NE(out[0].payload.find("\"retry\":\"later\""), std::string::npos) << out[0].payload;
  EXPECT_EQ(intake.counters().unnamed_refused.load(), 1u);
  EXPECT_EQ(pg_int("SELECT count(*) FROM file_uploads"), 0);
  const std::string small_file = "one byte";
  const std::string small_sha = sha256_hex(small_file);
  out.clear();
  intake.handle(*rig.pg, "gh", filex::init_topic("", small_sha),
                filex::init_json({small_sha, small_file.size(), 65536, "b.mp4", 9}), 1767225600000, out);
  EXPECT_TRUE(out.empty()) << out[0].payload;
  EXPECT_EQ(central::unnamed_bytes(*rig.pg, "gh"), 2u * 400 * 1024 + 4096);
  intake.handle(*rig.pg, "gh", filex::init_topic("", small_sha),
                filex::init_json({small_sha, 300 * 1024, 65536, "b.mp4", 9}), 1767225600000, out);
  ASSERT_EQ(out.size(), 1u) << "an open transfer started again at 300 KiB passes the bound";
  EXPECT_EQ(out[0].topic, "checkpoint/gh/files/refused");
  EXPECT_EQ(intake.counters().unnamed_refused.load(), 2u);
  EXPECT_EQ(pg_int("SELECT size FROM file_uploads WHERE sha256 = '" + small_sha + "'"), 8);

  // Its `recording` record (seq 2) stored: the same init opens the transfer.
  const std::string rec2 = gh_signed(gh_key_, 2, sha256_hex(rec),
                                     {{"type", "recording"}, {"sha256", sha}, {"bytes", file.size()}});
  publish_evidence(gh, {rec2}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 2; }, 30s))
      << central_->stderr_text();
  out.clear();
  intake.handle(*rig.pg, "gh", filex::init_topic("", sha),
                filex::init_json({sha, file.size(), 65536, "a.mp4", 2}), 1767225600001, out);
  EXPECT_TRUE(out.empty()) << out[0].topic << " " << out[0].payload;
  EXPECT_EQ(pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + sha + "'"), "open");
  // What is left unnamed: the two pictures nobody names and the small transfer (the large one's record is
  // stored); the picture record 1 names is marked on the way.
  EXPECT_EQ(central::unnamed_bytes(*rig.pg, "gh"), 2u * 400 * 1024 + 4096);
  EXPECT_EQ(pg_int("SELECT count(*) FROM media WHERE named"), 1);
  const nlohmann::json st = status();
  const auto gh_status = std::find_if(st["gateways"].begin(), st["gateways"].end(),
                                      [](const nlohmann::json& g) { return g["gateway"] == "gh"; });
  ASSERT_NE(gh_status, st["gateways"].end());
  EXPECT_EQ((*gh_status)["unnamed_bytes"], 2 * 400 * 1024) << "status: the pictures (open transfers apart)";
}

// An init's `seq` is optional (docs/custody.md): without it, the transfer takes the seq of the gateway's
// stored `recording` record naming the file, or gets it when that record is stored. Before, such a file was
// never named: it took the gateway's room for unnamed files for good, and later inits were refused `later`.
// An operator asks for a file the gateway then announces over feed.max_file_mb: the request ends not_held
// with that reason. Its wants went on for ever (every retry_max_ms), each answered by the same init, refused.
TEST_F(CentralHostile, ARequestedFileOverTheSizeBoundEndsNotHeld) {
  const IntakeRig rig(*this);
  std::vector<central::FilePublish> out;
  const std::string sha(64, '7');
  central::FileIntake::request(*rig.pg, "gh", sha, 1767225600000);
  rig.intake->tick(*rig.pg, 1767225600001, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "checkpoint/gh/files/want");
  out.clear();
  rig.intake->handle(*rig.pg, "gh", filex::init_topic("", sha),
                     filex::init_json({sha, 2 << 20, 65536, "c.mp4", 3}), 1767225600002, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].payload.find("\"retry\":\"never\""), std::string::npos) << out[0].payload;
  EXPECT_EQ(pg_.query("SELECT state || ': ' || reason FROM file_uploads WHERE sha256 = '" + sha + "'"),
            "not_held: 2097152 bytes is more than this central takes (feed.max_file_mb)");
  out.clear();
  rig.intake->tick(*rig.pg, 1767225600000 + 86400000, out);
  EXPECT_TRUE(out.empty()) << "asked again: " << out[0].payload;
}

TEST_F(CentralHostile, AnInitWithoutSeqIsNamedByTheRecordingRecordNamingItsFile) {
  start_central();
  const IntakeRig rig(*this);
  central::FileIntakeConfig bounded{"central-test", rig.media.string(), 1 << 20, 4, 30000, 300000, 1 << 20};
  central::FileIntake intake(bounded, rig.key, "checkpoint");
  const auto file = [](char c) { return std::string(600 * 1024, c); };
  const auto init_without_seq = [](const std::string& sha, std::size_t size) {
    return nlohmann::json{{"v", 1}, {"checksum", sha}, {"size", size}, {"segment_size", 65536}}.dump();
  };
  const std::string a = sha256_hex(file('a'));
  const std::string b = sha256_hex(file('b'));
  const std::string c = sha256_hex(file('c'));
  MqttPublisher gh(broker_->uri(), "gh");
  const std::string rec1 = gh_signed(gh_key_, 1, std::string(64, '0'),
                                     {{"type", "recording"}, {"sha256", a}, {"bytes", 600 * 1024}});
  publish_evidence(gh, {rec1}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 1; }, 30s))
      << central_->stderr_text();

  // Record first (the usual order), then the init without seq: named by record 1.
  std::vector<central::FilePublish> out;
  intake.handle(*rig.pg, "gh", filex::init_topic("", a), init_without_seq(a, 600 * 1024), 1767225600000, out);
  EXPECT_TRUE(out.empty()) << out[0].payload;
  EXPECT_EQ(pg_int("SELECT seq FROM file_uploads WHERE sha256 = '" + a + "'"), 1);
  EXPECT_EQ(central::unnamed_bytes(*rig.pg, "gh"), 0u);

  // The init first: unnamed until record 2 names the file, then named by it.
  intake.handle(*rig.pg, "gh", filex::init_topic("", b), init_without_seq(b, 600 * 1024), 1767225600000, out);
  EXPECT_TRUE(out.empty()) << out[0].payload;
  EXPECT_EQ(central::unnamed_bytes(*rig.pg, "gh"), 600u * 1024);
  const std::string rec2 =
      gh_signed(gh_key_, 2, sha256_hex(rec1), {{"type", "recording"}, {"sha256", b}, {"bytes", 600 * 1024}});
  publish_evidence(gh, {rec2}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 2; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(central::unnamed_bytes(*rig.pg, "gh"), 0u) << "named by record 2, its transfer row at seq 0";

  // So the room for files no record names (1 MiB) is whole again: a file of 600 KiB nobody names fits.
  intake.handle(*rig.pg, "gh", filex::init_topic("", c), init_without_seq(c, 600 * 1024), 1767225600000, out);
  EXPECT_TRUE(out.empty()) << out[0].payload;
  EXPECT_EQ(central::unnamed_bytes(*rig.pg, "gh"), 600u * 1024);
}

// Pictures no stored record names go, row and file, once older than feed.unnamed_max_age_days; only those: a
// picture a record names stays, and so does one only a fork names (kept for forensics). A record that names
// an aged-out picture later asks for it again and comes into custody with it: the gateway still holds it.
TEST_F(CentralHostile, OldPicturesNoRecordNamesAgeOutAndOneNamedLaterIsAskedForAgain) {
  CentralConfig config;
  config.metrics = true;
  write_central_config("central", config);
  start_central();
  const std::vector<std::string> pictures = {"named by record 1", "named by nothing yet", "named by a fork"};
  std::vector<std::string> shas;
  MqttPublisher gh(broker_->uri(), "gh");
  for (const auto& p : pictures) {
    shas.push_back(sha256_hex(p));
    gh.publish("checkpoint/gh/media/" + shas.back(), p);
  }
  const std::string rec1 = gh_record(1, std::string(64, '0'), {shas[0]});
  publish_evidence(gh, {rec1}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 1; }, 30s))
      << central_->stderr_text();
  publish_evidence(gh, {gh_record(1, std::string(64, '0'), {shas[2]})}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return pg_int("SELECT count(*) FROM forks") == 1; }, 30s))
      << central_->stderr_text();
  ASSERT_EQ(pg_int("SELECT count(*) FROM media"), 3);
  const auto file_of = [&](const std::string& sha) {
    return dir_ / "central-media" / sha.substr(0, 2) / sha;
  };
  ASSERT_TRUE(fs::exists(file_of(shas[1])));

  // All three received 31 days ago (the default bound is 30): the sweep (every 60 gap checks of 200 ms) takes
  // the one nobody names.
  pg_.query("UPDATE media SET received_ms = received_ms - 31 * 86400000::bigint");
  ASSERT_TRUE(wait_for_condition(
      [&] { return prometheus_sample(metrics(), "central_media_aged_out_total") == 1; }, 40s))
      << central_->stderr_text();
  EXPECT_EQ(prometheus_sample(metrics(), "central_media_aged_out_bytes_total"),
            static_cast<double>(pictures[1].size()));
  EXPECT_EQ(pg_int("SELECT count(*) FROM media WHERE sha256 = '" + shas[1] + "'"), 0);
  EXPECT_FALSE(fs::exists(file_of(shas[1])));
  EXPECT_TRUE(fs::exists(file_of(shas[0]))) << "a record names it";
  EXPECT_TRUE(fs::exists(file_of(shas[2]))) << "a fork names it";
  EXPECT_EQ(pg_int("SELECT count(*) FROM media"), 2);
  EXPECT_EQ(pg_int("SELECT count(*) FROM media WHERE named AND sha256 = '" + shas[2] + "'"), 1)
      << "marked named by its fork: not found again each round";

  // Record 2 names it now: central asks for it again and holds it, with the record, in custody.
  std::atomic<bool> asked{false};
  gh.client().set_message_callback([&](mqtt::const_message_ptr msg) {
    const auto parsed = custody::parse_resend_request(msg->get_payload_str());
    if (parsed.request && !asked &&
        std::find(parsed.request->media.begin(), parsed.request->media.end(), shas[1]) !=
            parsed.request->media.end()) {
      asked = true;
      gh.client().publish(mqtt::make_message("checkpoint/gh/media/" + shas[1], pictures[1], 1, false));
    }
  });
  gh.client().subscribe("checkpoint/gh/resend", 1)->wait();
  publish_evidence(gh, {gh_record(2, sha256_hex(rec1), {shas[1]})}, 0, 1);
  ASSERT_TRUE(wait_for_condition([&] { return gh_int("watermark_seq") == 2; }, 30s))
      << central_->stderr_text();
  EXPECT_TRUE(asked);
  EXPECT_TRUE(fs::exists(file_of(shas[1])));
  EXPECT_EQ(pg_int("SELECT count(*) FROM media WHERE named"), 3);
}

// Files in the media directory no row holds (a picture written for a batch that then failed, a crash between
// an age-out's rows and its files, a writer's temporary file) go once written over a day ago; a held file, or
// a fresh one (a batch may be about to commit its row), stays. Against a database with no media row at all
// (not the directory's), no held-looking name goes.
TEST_F(CentralHostile, FilesNoRowHoldsAreRemovedADayAfterTheyWereWritten) {
  { central::CentralStore migrate(pg_.conninfo()); }
  const fs::path media = dir_ / "central-media";
  const auto place = [&](const std::string& name, bool old) {
    const fs::path path = media / name.substr(0, 2) / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << name;
    if (old) {
      fs::last_write_time(path, fs::file_time_type::clock::now() - std::chrono::hours(49));
    }
    return path;
  };
  const fs::path orphan = place(sha256_hex("orphan"), true);
  const fs::path temporary = place(sha256_hex("temporary") + ".tmp-12-34", true);
  const std::string held_sha = sha256_hex("held");
  const fs::path held = place(held_sha, true);
  const fs::path fresh = place(sha256_hex("fresh"), false);
  CentralConfig config;
  config.metrics = true;
  write_central_config("central", config);
  start_central();
  ASSERT_TRUE(wait_for_condition(
      [&] { return prometheus_sample(metrics(), "central_media_orphans_refused_total") == 2; }, 30s))
      << "no media row at all: the held-looking names stay " << central_->stderr_text();
  EXPECT_TRUE(fs::exists(orphan));
  EXPECT_TRUE(fs::exists(held));
  EXPECT_NE(central_->stderr_text().find("none removed"), std::string::npos) << central_->stderr_text();
  EXPECT_EQ(prometheus_sample(metrics(), "central_media_orphans_removed_total"), 1) << "the temporary file";

  // Its row stored: the next round (60 gap checks of 200 ms later) takes the orphan.
  pg_.query("INSERT INTO media (sha256, bytes, path, first_gateway, received_ms, named) VALUES ('" +
            held_sha + "', 64, '" + held.string() + "', 'gh', 0, true)");
  ASSERT_TRUE(wait_for_condition(
      [&] { return prometheus_sample(metrics(), "central_media_orphans_removed_total") == 2; }, 30s))
      << central_->stderr_text();
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_FALSE(fs::exists(temporary));
  EXPECT_TRUE(fs::exists(held)) << "its row holds it";
  EXPECT_TRUE(fs::exists(fresh)) << "written less than a day ago";
}

// A gateway whose copy of a recording is damaged (a bit flipped after collection, each segment's checksum
// taken from what it reads) sends segments that all match their checksums and a whole that never matches the
// file's id. Central asks for the whole file again after each failure, kMaxFileMismatches times; then the
// transfer ends not_held with the reason, its partial file goes, and a new init is refused: no more wants,
// until an operator requests the file again. It used to be asked for and sent whole for ever.
TEST_F(CentralHostile, AFileWhoseWholeNeverMatchesItsIdIsGivenUpAfterThreeTries) {
  const IntakeRig rig(*this);
  central::PgConnection& pg = *rig.pg;
  const fs::path& media = rig.media;
  central::FileIntake& intake = *rig.intake;
  const std::string sha = sha256_hex("the file as the dock gave it");
  const std::string damaged(4096, 'd');
  std::vector<central::FilePublish> out;
  std::int64_t now = 1767225600000;
  const auto send = [&](const std::string& topic, const std::string& payload) {
    intake.handle(pg, "gh", topic, payload, ++now, out);
  };
  const auto wants = [&] {
    return std::count_if(out.begin(), out.end(),
                         [](const central::FilePublish& p) { return p.topic == "checkpoint/gh/files/want"; });
  };
  const auto transfer = [&] {
    send(filex::init_topic("", sha), filex::init_json({sha, 4096, 4096, "a.mp4", 7}));
    send(filex::segment_topic("", sha, 0, sha256_hex(damaged)), damaged);
  };
  for (int i = 1; i < central::kMaxFileMismatches; ++i) {
    transfer();
    EXPECT_EQ(pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + sha + "'"), "open");
    EXPECT_EQ(wants(), i) << "after mismatch " << i << ": the whole file asked for again";
  }
  transfer();
  EXPECT_EQ(intake.counters().mismatches.load(), static_cast<std::uint64_t>(central::kMaxFileMismatches));
  EXPECT_EQ(intake.counters().damaged.load(), 1u);
  EXPECT_EQ(pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + sha + "'"), "not_held");
  EXPECT_NE(pg_.query("SELECT reason FROM file_uploads WHERE sha256 = '" + sha + "'").find("damaged"),
            std::string::npos);
  EXPECT_EQ(wants(), central::kMaxFileMismatches - 1) << "not asked for after the last try";
  EXPECT_FALSE(fs::exists(media / "partial" / "gh" / (sha + ".part")));

  // The gateway's receipt wait runs out: init and fin again. Refused; nothing asked for, now or later.
  const auto refused = intake.counters().refused.load();
  send(filex::init_topic("", sha), filex::init_json({sha, 4096, 4096, "a.mp4", 7}));
  send(filex::fin_topic("", sha, 4096), "");
  EXPECT_EQ(intake.counters().refused.load(), refused + 1);
  const auto told = std::find_if(out.begin(), out.end(), [](const central::FilePublish& p) {
    return p.topic == "checkpoint/gh/files/refused";
  });
  ASSERT_NE(told, out.end()) << "the gateway is told";
  const auto refusal = filex::parse_refused(told->payload);
  ASSERT_TRUE(refusal.refusal) << refusal.reason;
  EXPECT_EQ(refusal.refusal->sha256, sha);
  EXPECT_FALSE(refusal.refusal->later);
  EXPECT_NE(refusal.refusal->reason.find("damaged"), std::string::npos);
  intake.tick(pg, now + 3600000, out);
  EXPECT_EQ(wants(), central::kMaxFileMismatches - 1);
  EXPECT_EQ(pg_.query("SELECT state FROM file_uploads WHERE sha256 = '" + sha + "'"), "not_held");

  // An operator asks for it again: the tries count from nothing.
  intake.request(pg, "gh", sha, now);
  EXPECT_EQ(pg_int("SELECT mismatches FROM file_uploads WHERE sha256 = '" + sha + "'"), 0);
  intake.tick(pg, now + 1, out);
  EXPECT_EQ(wants(), central::kMaxFileMismatches);
}

// Signed audit records whose members are of an unexpected type (an `event` that is a number, a `reason` that
// is null) are stored like any other: central reads them as no chain restart. json::value threw on them, the
// batch went one message at a time, the record was dropped with a count, and custody stopped at its seq.
TEST_F(CentralHostile, AnAuditRecordWithMembersOfAnotherTypeIsStored) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  const auto first = gh_record(1, std::string(64, '0'), {});
  const auto odd_event = gh_signed(gh_key_, 2, sha256_hex(first), {{"type", "audit"}, {"event", 7}});
  const auto odd_reason = gh_signed(gh_key_, 3, sha256_hex(odd_event),
                                    {{"type", "audit"}, {"event", "store_replaced"}, {"reason", nullptr}});
  central::Batch batch;
  batch.records = {gh_incoming(first), gh_incoming(odd_event), gh_incoming(odd_reason)};
  EXPECT_EQ(store.store_batch(batch, 1767225600000, policy).stored, 3u);
  EXPECT_EQ(gh_int("watermark_seq"), 3);
}

// A signed record whose plate, type or recording file hash is 8 kB (a camera sending garbage as a plate, an
// independent gateway): PostgreSQL cannot put such a value into a B-tree entry ("index row size exceeds
// btree maximum"), and refused the record on every resend: custody stopped there for good. It is stored,
// the overlong value left out of its indexed column (the body and the JWS keep it), and custody passes it.
TEST_F(CentralHostile, ARecordWithAnOverlongPlateTypeOrFileHashIsStoredAndCustodyPassesIt) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  const std::string garbage(8000, 'a');
  const auto first = gh_record(1, std::string(64, '0'), {});
  const auto plate = gh_signed(gh_key_, 2, sha256_hex(first), {{"type", "passage"}, {"plate", garbage}});
  const auto type = gh_signed(gh_key_, 3, sha256_hex(plate), {{"type", garbage}});
  const auto file = gh_signed(gh_key_, 4, sha256_hex(type), {{"type", "recording"}, {"sha256", garbage}});
  central::Batch batch;
  batch.records = {gh_incoming(first), gh_incoming(plate), gh_incoming(type), gh_incoming(file)};
  EXPECT_EQ(store.store_batch(batch, 1767225600000, policy).stored, 4u);
  EXPECT_EQ(gh_int("watermark_seq"), 4);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 2 AND plate IS NULL AND "
                   "octet_length(body->>'plate') = 8000"),
            1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 3 AND type = '' AND "
                   "octet_length(body->>'type') = 8000"),
            1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 4 AND type = 'recording'"),
            1);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 0);
}

// PostgreSQL refuses a batch. For the content of one record (a check violation, 23514, raised by a trigger
// on its seq): the batch goes one message at a time, that record is quarantined (kept, with PostgreSQL's
// reason), the others are stored. For the server's state (disk full, 53100, on another seq): nothing is set
// aside; the batch waits and is stored once the server takes it. For a deadlock (40P01, as another
// instance's transaction causes): the same batch goes again. The instance lives through all three: the
// one-at-a-time pass used to rethrow a lost connection from inside a catch block (std::terminate), and took
// every error but a lost link as the message's fault (a full disk quarantined valid records).
TEST_F(CentralHostile, ARecordPostgresRefusesIsQuarantinedAndAFullDiskOnlyDelaysTheBatch) {
  pg_.query(R"sql(
CREATE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.gateway = 'gh' AND NEW.seq = 2 THEN
    RAISE EXCEPTION 'seq 2 is refused' USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.gateway = 'gh' AND NEW.seq = 5 AND EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'disk_full') THEN
    RAISE EXCEPTION 'no space left (simulated)' USING ERRCODE = 'disk_full';
  END IF;
  -- A sequence is not rolled back with the transaction: seq 7 meets two deadlocks, then goes in.
  IF NEW.gateway = 'gh' AND NEW.seq = 7 AND nextval('deadlocks') <= 2 THEN
    RAISE EXCEPTION 'deadlock detected (simulated)' USING ERRCODE = 'deadlock_detected';
  END IF;
  RETURN NEW;
END $$)sql");
  pg_.query(
      "CREATE TRIGGER refuse_some BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION refuse_some()");
  pg_.query("CREATE SEQUENCE deadlocks");
  start_central();
  std::vector<std::string> chain{gh_record(1, std::string(64, '0'), {})};
  for (std::uint64_t seq = 2; seq <= 7; ++seq) {
    chain.push_back(gh_record(seq, sha256_hex(chain.back()), {}));
  }
  MqttPublisher gh(broker_->uri(), "gh");
  for (std::size_t i = 0; i < 3; ++i) {
    gh.publish("checkpoint/gh/evidence", chain[i]);
  }
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE gateway = 'gh'") == 2; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh' AND reason LIKE "
                   "'refused by PostgreSQL:%seq 2 is refused%'"),
            1);

  pg_.query("CREATE TABLE disk_full ()");
  for (std::size_t i = 3; i < 6; ++i) {
    gh.publish("checkpoint/gh/evidence", chain[i]);
  }
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return central_->stderr_text().find("no space left (simulated)") != std::string::npos; }, 30s))
      << central_->stderr_text();
  pause(1s);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq >= 5"), 0)
      << "seq 5's batch is stored whole or not at all, and what came after it waits behind it";
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 1) << "a valid record set aside";
  pg_.query("DROP TABLE disk_full");
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq >= 4") == 3; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 1) << "a valid record set aside";

  // A deadlock (another instance's transaction) aborts a batch with nothing wrong in it: the batch goes
  // again, and seq 7 is stored on the third try, not set aside.
  gh.publish("checkpoint/gh/evidence", chain[6]);
  gh.drain();
  ASSERT_TRUE(wait_for_condition(
      [&] { return pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 7") == 1; }, 30s))
      << central_->stderr_text();
  EXPECT_EQ(prometheus_sample(metrics(), "central_postgres_transient_total"), 2);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 1) << "a valid record set aside";
  EXPECT_TRUE(central_->running()) << central_->stderr_text();
}

// A cloned gateway adds a fork per record it seals. Forks are kept up to kMaxForksPerGateway rows per
// gateway; beyond, a fork is counted and alarmed but not kept: the table does not grow without bound.
TEST_F(CentralHostile, ForksBeyondTheBoundAreCountedButNotKept) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  const auto chain = gh_chain(2);
  central::Batch batch;
  batch.records = {gh_incoming(chain[0]), gh_incoming(chain[1])};
  store.store_batch(batch, 1767225600000, policy);
  pg_.query(
      "INSERT INTO forks (gateway, seq, jws, jws_sha256, received_ms) SELECT 'gh', 1000 + i, 'x', "
      "md5(i::text), "
      "0 FROM generate_series(1, " +
      std::to_string(central::kMaxForksPerGateway - 1) + ") AS i");
  central::Batch clone;
  clone.records = {gh_incoming(gh_signed(gh_key_, 2, sha256_hex(chain[0]), {{"note", "a clone's 2"}}))};
  auto out = store.store_batch(clone, 1767225600001, policy);
  EXPECT_EQ(out.forks, 1u) << "the last fork within the bound is kept";
  clone.records = {gh_incoming(gh_signed(gh_key_, 2, sha256_hex(chain[0]), {{"note", "another clone's 2"}}))};
  out = store.store_batch(clone, 1767225600002, policy);
  EXPECT_EQ(out.forks, 0u);
  EXPECT_EQ(out.forks_dropped, 1u);
  EXPECT_EQ(out.forks_not_kept, (std::vector<std::string>{"gh:2"}));
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks WHERE gateway = 'gh'"), central::kMaxForksPerGateway);
  EXPECT_EQ(gh_int("watermark_seq"), 2);
}

// A broker restart lost the pictures of several records in a row: one request asks for all of them, in seq
// order, not one record's pictures per round of resend_after_ms. A picture the gateway then says it no longer
// holds is noted with the record naming it.
TEST_F(CentralHostile, LostPicturesOfConsecutiveRecordsAreAskedForInOneRequest) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  const std::int64_t now = 1767225600000;
  std::vector<std::string> chain{gh_record(1, std::string(64, '0'), {})};
  std::vector<std::string> pictures;
  for (std::uint64_t seq = 2; seq <= 5; ++seq) {
    pictures.push_back(sha256_hex("picture of seq " + std::to_string(seq)));
    chain.push_back(gh_record(seq, sha256_hex(chain.back()), {pictures.back()}));
  }
  central::Batch batch;
  for (const auto& jws : chain) {
    batch.records.push_back(gh_incoming(jws));
  }
  store.store_batch(batch, now, policy);
  EXPECT_EQ(gh_int("watermark_seq"), 1);
  const auto plans = store.plan_resends(now + 3600000, central::GapPolicy{1000, 1000, 10000});
  const auto gh = std::find_if(plans.begin(), plans.end(), [](const auto& p) { return p.gateway == "gh"; });
  ASSERT_NE(gh, plans.end());
  EXPECT_EQ(gh->request.media, pictures);
  EXPECT_EQ(gh->why, "media of seq 2..5");

  // The gateway no longer holds the picture of seq 4: noted with seq 4, not with the request's first seq.
  custody::ResendReply reply;
  reply.media_not_held = {pictures[2]};
  central::Batch replies;
  replies.replies.push_back(
      central::IncomingReply{"gh", gh->correlation, reply, custody::resend_reply_json(reply)});
  store.store_batch(replies, now + 3600001, policy);
  EXPECT_EQ(pg_.query("SELECT seq || ' ' || sha256 FROM unrecoverable_media WHERE gateway = 'gh'"),
            "4 " + pictures[2]);
}

// The continued chain's N+2 reaches central before its store_replaced at N+1 (another instance, a broker
// that dropped N+1): it is a fork of the old N+2 then. Once store_replaced is followed, the old branch is set
// aside and seq N+2 is free: the resend of the new N+2 fills it (an ordinary fork's bytes are no copy set
// aside), and the watermark reaches the new head.
TEST_F(CentralHostile, AContinuedChainsRecordSeenFirstAsAForkFillsItsSeqOnceFollowed) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  constexpr long long kLater = 1767225600000 + 60000;
  std::vector<std::string> old_chain{gh_record(1, std::string(64, '0'), {})};
  for (std::uint64_t seq = 2; seq <= 6; ++seq) {
    old_chain.push_back(gh_record(seq, sha256_hex(old_chain.back()), {}));
  }
  central::Batch batch;
  for (const auto& jws : old_chain) {
    batch.records.push_back(gh_incoming(jws));
  }
  store.store_batch(batch, 1767225600000, policy);
  pg_.query("UPDATE gateways SET receipt_seq = 4 WHERE gateway = 'gh'");  // confirmed through 4 only
  const std::string n5 = gh_signed(gh_key_, 5, sha256_hex(old_chain[3]),
                                   {{"type", "audit"},
                                    {"event", "store_replaced"},
                                    {"reason", "store.db missing at start"},
                                    {"continued_from_seq", 4},
                                    {"continued_from_head", sha256_hex(old_chain[3])},
                                    {"lost_after_seq", 4},
                                    {"created_ms", kLater}});
  const std::string n6 = gh_signed(gh_key_, 6, sha256_hex(n5), {{"created_ms", kLater + 1}});
  const auto one = [&](const std::string& jws, std::int64_t at) {
    central::Batch b;
    b.records = {gh_incoming(jws)};
    return store.store_batch(b, at, policy);
  };
  EXPECT_EQ(one(n6, 1767225600001).forks, 1u) << "the new 6 first: a fork of the old 6";
  one(n5, 1767225600002);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gh' AND seq = 6"), 0) << "old 6 set aside";
  const auto again = one(n6, 1767225600003);  // the gap request brings it again
  EXPECT_EQ(again.stored, 1u);
  EXPECT_EQ(pg_.query("SELECT jws_sha256 FROM records WHERE gateway = 'gh' AND seq = 6"), sha256_hex(n6));
  EXPECT_EQ(gh_int("watermark_seq"), 6);
}

// A fork (a cloned gateway's record) naming a picture adds no picture to the record central holds at that
// seq: the walk passes the held record without it. And a range the gateway reported lost at watermark + 1
// does not stop the requests for the holes after it. Before, the held record waited for the fork's picture
// (asked of the gateway, which never named it: an unrecoverable picture and a custody stall), and no request
// went out at all while watermark + 1 was in a reported loss.
TEST_F(CentralHostile, AForkAddsNoPictureAndAReportedLossDoesNotStopTheGapRequests) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  const std::int64_t now = 1767225600000;
  const auto chain = gh_chain(3);
  central::Batch batch;
  for (const auto& jws : chain) {
    batch.records.push_back(gh_incoming(jws));
  }
  store.store_batch(batch, now, policy);
  central::Batch fork;
  fork.records = {gh_incoming(gh_record(2, sha256_hex(chain[0]), {std::string(64, 'e')}))};
  EXPECT_EQ(store.store_batch(fork, now + 1, policy).forks, 1u);
  EXPECT_EQ(pg_int("SELECT count(*) FROM record_media WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(gh_int("watermark_seq"), 3);

  // Seqs 4..9 missing, 10 here; the gateway said it no longer holds 4..6.
  central::Batch later;
  later.records = {gh_incoming(gh_record(10, std::string(64, 'c'), {}))};
  store.store_batch(later, now + 2, policy);
  pg_.query("INSERT INTO unrecoverable (gateway, from_seq, to_seq, noted_ms) VALUES ('gh', 4, 6, 0)");
  const auto plans = store.plan_resends(now + 3600000, central::GapPolicy{1000, 1000, 10000});
  const auto gh = std::find_if(plans.begin(), plans.end(), [](const auto& p) { return p.gateway == "gh"; });
  ASSERT_NE(gh, plans.end()) << "no request for gh's holes after the reported loss";
  EXPECT_EQ(gh->request.from_seq, 7u) << gh->why;
  EXPECT_EQ(gh->request.to_seq, 9u) << gh->why;
}

// feed.quarantine_max_age_days: quarantine rows unseen for longer are discarded as an operator's discard
// would be (uncounted, kept in quarantine_discards with operator "checkpoint-central"); a younger row stays.
TEST_F(CentralHostile, QuarantineRowsPastTheirAgeAreDiscardedAndTheDiscardIsKept) {
  central::CentralStore store(pg_.conninfo());
  const central::ReceiptPolicy policy{"central-test", 1000, 5000};
  constexpr std::int64_t kT0 = 1767225600000;
  constexpr std::int64_t kDay = 86400000;
  const auto entry = [](const std::string& gateway, const std::string& bytes) {
    central::QuarantineEntry q;
    q.gateway = gateway;
    q.topic = "evidence";
    q.kid = "0123456789abcdef";
    q.payload = bytes;
    q.payload_sha256 = sha256_hex(bytes);
    q.bytes = bytes.size();
    q.reason = "no trusted key has kid 0123456789abcdef";
    return q;
  };
  central::Batch old_rows;
  old_rows.quarantine = {entry("gh", "an old record"), entry("gh", "another old one")};
  store.store_batch(old_rows, kT0, policy);
  central::Batch young_rows;
  young_rows.quarantine = {entry("gw", "a young record")};
  store.store_batch(young_rows, kT0 + 10 * kDay, policy);
  ASSERT_EQ(pg_int("SELECT count(*) FROM quarantine"), 3);

  const std::string why = "unseen for 5 days (feed.quarantine_max_age_days)";
  const auto expired = store.expire_quarantine(kT0 + 10 * kDay + 1, 5 * kDay, why);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].first, "gh");
  EXPECT_EQ(expired[0].second.rows, 2);
  EXPECT_EQ(expired[0].second.bytes, 28);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine WHERE gateway = 'gw'"), 1);
  EXPECT_EQ(pg_int("SELECT rows FROM quarantine_usage WHERE gateway = 'gh'"), 0);
  EXPECT_EQ(pg_int("SELECT rows FROM quarantine_usage WHERE gateway = ''"), 1);
  EXPECT_EQ(
      pg_.query("SELECT gateway || ' ' || rows || ' ' || operator || ' ' || reason FROM quarantine_discards"),
      "gh 2 checkpoint-central " + why);
  // Nothing else is old enough: nothing changes, nothing more is kept.
  EXPECT_TRUE(store.expire_quarantine(kT0 + 10 * kDay + 2, 5 * kDay, why).empty());
  EXPECT_EQ(pg_int("SELECT count(*) FROM quarantine_discards"), 1);
}

TEST_F(CentralHostile, AFloodOfHostileMessagesIsBoundedCountedAndSurvived) {
  start_central();
  // The real gateway: radar simulator -> checkpointd with custody on.
  start_radar(60, 5, /*seed=*/5);
  write_gateway_config();
  auto daemon = start_daemon();
  ASSERT_TRUE(wait_for_condition([&] { return watermark() >= 3; }, 60s))
      << central_->stderr_text() << daemon->stderr_text();
  const long rss_before = rss_kb(central_->pid());

  // Every resend request central publishes, to any gateway, is checked for its bounds.
  MqttCollector resends(broker_->uri(), {"checkpoint/+/resend"});

  // The hostile messages, in rounds.
  const auto forger = Ed25519PrivateKey::generate();
  const auto gw_key = Ed25519PrivateKey::load_pem_file((dir_ / "gateway.key").string());
  std::mt19937_64 rng(7);
  const auto random_bytes = [&](std::size_t n) {
    std::string s(n, '\0');
    for (char& c : s) {
      c = static_cast<char>(rng());
    }
    return s;
  };
  std::vector<std::string> garbage;  // a fixed set, sent again and again: deduplicated in the quarantine
  for (int i = 0; i < 200; ++i) {
    garbage.push_back(random_bytes(16 + rng() % 2000));
  }
  const std::string bad_utf8 = "\xff\xfe\xc3\x28 not UTF-8 \xe2\x82\x00\x80";
  const std::string oversized = pseudo_random_bytes(5u << 20, 99);  // over the 4 MiB record bound
  const auto record_body = [](const std::string& gateway, std::uint64_t seq) {
    return nlohmann::json{{"v", 1},
                          {"gateway", gateway},
                          {"seq", seq},
                          {"id", gateway + ":" + std::to_string(seq)},
                          {"prev", std::string(64, '0')},
                          {"type", "speeding"},
                          {"time_ms", 1},
                          {"created_ms", 1}};
  };
  // A head announcing 2^63-1, signed with gh's key (gh is enrolled; the real gateway is left alone), and
  // heads whose seq is out of any range or whose signature is not gh's.
  // (JCS has no integers beyond 2^53, so these bodies are written by hand: the body need not be canonical.)
  const auto raw_head = [](const Ed25519PrivateKey& key, const std::string& seq, char hash) {
    const std::string header =
        base64url_encode(R"({"alg":"EdDSA","kid":")" + key.public_key().kid() + R"(","typ":"head+jws"})");
    const std::string body = base64url_encode(R"({"gateway":"gh","head":")" + std::string(64, hash) +
                                              R"(","seq":)" + seq + R"(,"time_ms":1,"type":"head","v":1})");
    return header + "." + body + "." + base64url_encode(key.sign(header + "." + body));
  };
  const std::string head_max = raw_head(gh_key_, "9223372036854775807", 'a');
  const std::string head_beyond = raw_head(gh_key_, "18446744073709551615", 'b');
  const std::string head_negative = raw_head(gh_key_, "-1", 'c');
  const std::string head_forged = raw_head(forger, "9223372036854775807", 'd');

  // Several clients at once (one MQTT client is paced by its own acknowledgements), for 12 s.
  constexpr int kThreads = 3;
  std::atomic<std::uint64_t> sent_total{0};
  std::atomic<std::uint64_t> oversized_total{0};
  const auto start = std::chrono::steady_clock::now();
  const auto flood_client = [&](int index) {
    MqttPublisher flood(broker_->uri(), "flood-" + std::to_string(index));
    std::mt19937_64 local_rng(static_cast<std::uint64_t>(index) + 100);
    std::uint64_t round = static_cast<std::uint64_t>(index);
    std::uint64_t oversized_sent = 0;
    while (std::chrono::steady_clock::now() - start < 12s) {
      round += kThreads;
      const std::string g = garbage[round % garbage.size()];
      flood.publish("checkpoint/gw/evidence", g);
      flood.publish("checkpoint/gw/media/" + std::string(64, 'f'), g);
      flood.publish("checkpoint/gw/media/not-a-hash", g);
      flood.publish("checkpoint/gw/head", g);
      flood.publish("checkpoint/gw/resend/response", g);
      flood.publish("checkpoint/gw/evidence", bad_utf8);
      flood.publish("checkpoint/gw/head", bad_utf8);
      flood.publish("checkpoint/gw/resend/response", bad_utf8);
      // Records with bad signatures: an unknown key, and the real kid with a tampered signature.
      flood.publish("checkpoint/gw/evidence", sign_compact(forger, "evidence+jws", record_body("gw", round)));
      std::string tampered = sign_compact(gw_key, "evidence+jws", record_body("gw", 1000000 + round));
      tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
      flood.publish("checkpoint/gw/evidence", tampered);
      flood.publish("checkpoint/gh/head", head_max);
      flood.publish("checkpoint/gh/head", head_beyond);
      flood.publish("checkpoint/gh/head", head_negative);
      flood.publish("checkpoint/gh/head", head_forged);
      // Resend replies nobody asked for: everything declared lost, with and without Correlation Data.
      const std::string lie = R"({"from_seq":1,"media_not_held":[],"media_sent":[],"not_held":[[1,)" +
                              std::to_string(round) + R"(]],"sent":0,"to_seq":9223372036854775807,"v":1})";
      flood.publish("checkpoint/gw/resend/response", lie, std::to_string(local_rng()));
      flood.publish("checkpoint/gw/resend/response", lie);
      // Gateways nobody enrolled (a new name every round), and names no gateway can have.
      flood.publish("checkpoint/rogue-" + std::to_string(round) + "/evidence", g);
      flood.publish("checkpoint/Not_A_Gateway!/head", g);
      if (round % 100 == 0) {
        flood.publish("checkpoint/gw/evidence", oversized);
        flood.publish("checkpoint/gw/media/" + sha256_hex(g), oversized);
        flood.publish("checkpoint/rogue-big/evidence", oversized);
        oversized_sent += 3;
      }
    }
    flood.drain();
    sent_total += flood.sent();
    oversized_total += oversized_sent;
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < kThreads; ++i) {
    clients.emplace_back(flood_client, i);
  }
  for (auto& t : clients) {
    t.join();
  }
  const double flood_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::uint64_t sent = sent_total.load();
  std::cout << "flood: " << sent << " messages (" << oversized_total.load() << " of 5 MiB) from " << kThreads
            << " clients in " << flood_s << " s = " << static_cast<long>(static_cast<double>(sent) / flood_s)
            << " msg/s" << std::endl;

  // Central is up and answering while the broker still feeds it the backlog.
  ASSERT_TRUE(central_->running()) << central_->stderr_text();
  EXPECT_EQ(http_get_body(metrics_port_, "/healthz").substr(0, 2), "ok");
  // Central takes the whole backlog; meanwhile the bounds hold at every look.
  long long max_rows = 0;
  long long max_bytes = 0;
  double processed = 0;
  const auto drain_start = std::chrono::steady_clock::now();
  const bool drained = wait_for_condition(
      [&] {
        max_rows = std::max(max_rows, pg_int("SELECT count(*) FROM quarantine"));
        max_bytes =
            std::max(max_bytes, pg_int("SELECT COALESCE(sum(octet_length(payload)), 0) FROM quarantine"));
        const std::string m = metrics();
        processed = prometheus_sample(m, "central_messages_total");
        return processed >= static_cast<double>(sent) && prometheus_sample(m, "central_queue_messages") == 0;
      },
      180s);
  const double drain_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - drain_start).count();
  const long peak = peak_rss_kb(central_->pid());
  std::cout << "central: took " << processed << " messages; backlog drained " << drain_s
            << " s after the flood; RSS " << rss_before << " kB before, peak " << peak << " kB; quarantine "
            << max_rows << " rows, " << max_bytes << " bytes at most" << std::endl;
  EXPECT_TRUE(drained) << "central took " << processed << " of " << sent;
  ASSERT_TRUE(central_->running()) << central_->stderr_text();
  if (!kSanitized) {
    // The queue holds at most feed.queue_mb (16 MiB) of payloads; a 5 MiB message passes through Paho and
    // the queue as a few copies.
    EXPECT_LT(peak - rss_before, 160 * 1024) << "RSS " << rss_before << " -> peak " << peak << " kB";
  }

  // The quarantine stayed within its bounds: rows and bytes in all and per gateway.
  EXPECT_LE(max_rows, kRows);
  EXPECT_LE(max_bytes, static_cast<long long>(kMb) << 20);
  EXPECT_LE(pg_int("SELECT max(n) FROM (SELECT count(*) AS n FROM quarantine GROUP BY gateway) x"),
            kRowsPerGateway);
  EXPECT_LE(
      pg_int(
          "SELECT max(b) FROM (SELECT sum(octet_length(payload)) AS b FROM quarantine GROUP BY gateway) x"),
      2LL << 20);
  // Repeated payloads are one row with a count; what did not fit is counted.
  EXPECT_GT(pg_int("SELECT max(count) FROM quarantine"), 10);
  const auto s = status();
  std::cout << "status: quarantine " << s["quarantine"].dump() << ", names not enrolled with rows "
            << s["unknown_gateways"]["count"] << std::endl;
  EXPECT_EQ(s["quarantine"]["rows"].get<long long>(), pg_int("SELECT count(*) FROM quarantine"));
  EXPECT_GT(s["quarantine"]["dropped"].get<long long>(), 0);
  EXPECT_GT(s["unknown_gateways"]["count"].get<long long>(), 0);
  // Names nobody enrolled have usage rows only while they have quarantine rows.
  EXPECT_LE(pg_int("SELECT count(*) FROM quarantine_usage"), kRows + 3);

  // Nothing a peer said was believed: no unrecoverable range, no announced head beyond 2^63-1, the forged
  // head did not move gw's announced head.
  EXPECT_EQ(pg_int("SELECT count(*) FROM unrecoverable"), 0);
  EXPECT_EQ(pg_int("SELECT count(*) FROM records WHERE gateway = 'gw' AND seq > 100000"), 0);
  EXPECT_LT(pg_int("SELECT announced_seq FROM gateways WHERE gateway = 'gw'"), 100000);

  // Every resend request central published is one a gateway accepts: a range of at most 100 000 records.
  std::size_t requests = 0;
  for (const auto& msg : resends.messages()) {
    const auto parsed = custody::parse_resend_request(msg.payload);
    ASSERT_TRUE(parsed.request) << msg.topic << ": " << parsed.reason << ": " << msg.payload;
    EXPECT_LE(parsed.request->to_seq, static_cast<std::uint64_t>(INT64_MAX)) << msg.payload;
    ++requests;
  }
  std::cout << "resend requests published: " << requests << std::endl;
  // gh announced 2^63-1: asked with backoff (500 ms doubling to 2 s), not in a loop.
  EXPECT_LE(resends.count("checkpoint/gh/resend"), 40U);

  // The errors are counted.
  const std::string m = metrics();
  EXPECT_GT(prometheus_sample(m, "central_quarantined_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_quarantine_dropped_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_media_refused_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_unknown_gateway_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_heads_refused_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_replies_refused_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_unsolicited_replies_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_refused_total"), 0) << m;
  EXPECT_GT(prometheus_sample(m, "central_quarantine_rows"), 0) << m;
  EXPECT_EQ(prometheus_sample(m, "central_postgres_errors_total"), 0)
      << m << central_->stderr_text().substr(0, 4000);

  // The real gateway's chain still reaches custody, whole.
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(30s), 0) << daemon->stderr_text();
  const long long head = head_seq();
  ASSERT_GT(head, 3);
  EXPECT_TRUE(wait_for_condition([&] { return watermark() == head; }, 60s))
      << "watermark " << watermark() << " head " << head;
  EXPECT_EQ(pg_int("SELECT count(*) FROM forks"), 0);
  central_->signal(SIGTERM);
  EXPECT_EQ(central_->wait(30s), 0) << central_->stderr_text().substr(0, 4000);
}

}  // namespace
}  // namespace cpd::testing
