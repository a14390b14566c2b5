// checkpoint-central: verifies every gateway's chain into PostgreSQL, repairs gaps, issues custody
// receipts (docs/custody.md). Subcommands: run, check-config, enroll, status, quarantine, discard-quarantine,
// revoke-key, accept-loss, choose-branch, files, export.
#include <systemd/sd-daemon.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <climits>
#include <csignal>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <thread>

#include "central/central_config.h"
#include "central/central_service.h"
#include "central/central_store.h"
#include "central/file_intake.h"
#include "central/pg.h"
#include "daemon/config/schema.h"
#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/log/log.h"
#include "daemon/metrics/metrics_server.h"

namespace {

using namespace cpd;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int run(const central::CentralConfig& cfg) {
  boost::asio::io_context io;
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  central::CentralService service(cfg);
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (cfg.metrics.enabled) {
    metrics::MetricsServerOptions options;
    options.host = cfg.metrics.host;
    options.port = static_cast<std::uint16_t>(cfg.metrics.port);
    metrics_server = std::make_unique<metrics::MetricsServer>(
        io, options, [&service] { return service.metrics_text(); },
        []() -> std::optional<std::string> { return std::nullopt; });
    if (const Status s = metrics_server->start(); !s.is_ok()) {
      log::warn("central", "", s.message());
      metrics_server.reset();
    } else {
      std::cout << "metrics: http://" << cfg.metrics.host << ":" << metrics_server->port() << "/metrics"
                << std::endl;
    }
  }
  signals.async_wait([&](const boost::system::error_code&, int) {
    service.request_stop();
    if (metrics_server) {
      metrics_server->stop();
    }
    io.stop();
  });
  std::thread io_thread([&io] { io.run(); });
  try {
    service.start();  // returns early when a signal asked to stop while connecting
  } catch (...) {
    io.stop();
    io_thread.join();
    throw;
  }
  // Ready once the shared subscriptions stand (or shortly after, if the broker is slow to confirm).
  for (int i = 0; i < 100 && !service.subscribed(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::cout << "running: central " << cfg.central.id
            << (service.subscribed() ? ", subscribed" : ", subscribing") << std::endl;
  sd_notify(0, "READY=1\nSTATUS=verifying the gateways' feed");
  io_thread.join();
  sd_notify(0, "STOPPING=1");
  service.stop();
  std::cout << "stopped" << std::endl;
  return 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot read " + path);
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// `checkpoint-central files`: the file_uploads rows, or a request for one file (docs/custody.md).
int files(central::PgConnection& pg, const std::string& gateway, const std::string& request,
          std::int64_t limit, bool json_out) {
  if (!request.empty()) {
    if (!is_sha256_hex(request) || gateway.empty()) {
      std::cerr
          << "checkpoint-central files --request needs --gateway and a SHA-256 (64 lower-case hex digits)"
          << std::endl;
      return 1;
    }
    central::FileIntake::request(pg, gateway, request, now_ms());
    std::cout << "requested " << request << " from " << gateway
              << " (asked at the next gap check; a file already held or being sent is left as it is)"
              << std::endl;
    return 0;
  }
  const central::PgResult r = pg.exec(
      "SELECT gateway, sha256, state, size, received_bytes, name, coalesce(seq, 0), wants, coalesce(reason, "
      "''), "
      "last_ms, coalesce(held_ms, 0) FROM file_uploads WHERE $1 = '' OR gateway = $1 ORDER BY last_ms DESC "
      "LIMIT $2",
      {gateway, std::to_string(limit)}, "listing file transfers");
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < r.rows(); ++i) {
    rows.push_back({{"gateway", r.text(i, 0)},
                    {"sha256", r.text(i, 1)},
                    {"state", r.text(i, 2)},
                    {"size", r.integer(i, 3)},
                    {"received_bytes", r.integer(i, 4)},
                    {"name", r.text(i, 5)},
                    {"seq", r.integer(i, 6)},
                    {"wants", r.integer(i, 7)},
                    {"reason", r.text(i, 8)},
                    {"last_ms", r.integer(i, 9)},
                    {"held_ms", r.integer(i, 10)}});
  }
  if (json_out) {
    std::cout << rows.dump(2) << std::endl;
    return 0;
  }
  for (const auto& f : rows) {
    std::cout << f["gateway"].get<std::string>() << " " << f["sha256"].get<std::string>() << " "
              << f["state"].get<std::string>() << " " << f["received_bytes"] << "/" << f["size"]
              << " bytes, record seq " << f["seq"] << ", name " << f["name"].dump() << ", wants "
              << f["wants"];
    if (!f["reason"].get<std::string>().empty()) {
      std::cout << ", reason " << f["reason"].dump();
    }
    std::cout << std::endl;
  }
  std::cout << "files: " << rows.size() << " shown" << std::endl;
  return 0;
}

// checkpoint-central accept-loss: what an operator accepts is printable text of bounded length (it goes into
// PostgreSQL and status output as is); the range or picture is checked by the store.
// An operator's --reason or --operator: kept in PostgreSQL and shown in logs, so printable and bounded.
bool printable_operator_text(const std::string& text) {
  return !text.empty() && text.size() <= 500 && printable(text, 500) == text;
}

int accept_loss(central::CentralStore& store, const std::string& gateway, const std::string& seqs,
                const std::string& picture, const std::string& reason, const std::string& by) {
  if (!printable_operator_text(reason) || !printable_operator_text(by)) {
    std::cerr << "checkpoint-central: --reason and --operator must be printable ASCII, 1-500 bytes"
              << std::endl;
    return 2;
  }
  std::optional<std::pair<std::uint64_t, std::uint64_t>> range;
  if (!seqs.empty()) {
    const auto dash = seqs.find('-');
    const auto parse = [](const std::string& text) -> std::uint64_t {
      if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos) {
        return 0;
      }
      return std::stoull(text);
    };
    const std::uint64_t from = parse(seqs.substr(0, dash));
    const std::uint64_t to = dash == std::string::npos ? from : parse(seqs.substr(dash + 1));
    if (from == 0 || to < from) {
      std::cerr << "checkpoint-central: --seq " << printable(seqs)
                << " is not a seq or a range A-B (1 <= A <= B)" << std::endl;
      return 2;
    }
    range.emplace(from, to);
  } else if (!is_sha256_hex(picture)) {
    std::cerr << "checkpoint-central: give --seq A[-B] or --picture SHA-256 (64 lower-case hex digits)"
              << std::endl;
    return 2;
  }
  const auto r = store.accept_loss(gateway, range, picture, reason, by, now_ms());
  if (!r.accepted) {
    std::cerr << "checkpoint-central: not accepted: " << r.refusal << " (nothing changed)" << std::endl;
    return 1;
  }
  std::cout << "accepted as lost: " << gateway << " "
            << (range ? "seq " + std::to_string(range->first) + ".." + std::to_string(range->second)
                      : "picture " + picture)
            << " by " << by << "; custody through seq " << r.watermark
            << " (the next receipt, within receipts.every_ms, names the loss)" << std::endl;
  for (const std::string& line : r.found) {
    std::cerr << "checkpoint-central: " << line << std::endl;
  }
  return 0;
}

// checkpoint-central choose-branch: `tip` is empty (the record at the chain break), SEQ, or SEQ:SHA-256 (a
// fork, or the record central holds at SEQ when its SHA-256 is that).
int choose_branch(central::CentralStore& store, const std::string& gateway, const std::string& tip,
                  central::CentralStore::BranchOptions options, const std::string& reason,
                  const std::string& by) {
  if (!printable_operator_text(reason) || !printable_operator_text(by)) {
    std::cerr << "checkpoint-central: --reason and --operator must be printable ASCII, 1-500 bytes"
              << std::endl;
    return 2;
  }
  std::uint64_t seq = 0;
  std::string sha;
  if (!tip.empty()) {
    const auto colon = tip.find(':');
    const std::string seq_text = tip.substr(0, colon);
    sha = colon == std::string::npos ? "" : tip.substr(colon + 1);
    if (seq_text.empty() || seq_text.size() > 18 ||
        seq_text.find_first_not_of("0123456789") != std::string::npos || std::stoull(seq_text) == 0 ||
        (colon != std::string::npos && !is_sha256_hex(sha))) {
      std::cerr << "checkpoint-central: --tip " << printable(tip)
                << " is not SEQ or SEQ:SHA-256 (64 lower-case hex digits)" << std::endl;
      return 2;
    }
    seq = std::stoull(seq_text);
  }
  const auto r = store.choose_branch(gateway, seq, sha, options, reason, by, now_ms());
  if (!r.chosen) {
    std::cerr << "checkpoint-central: not chosen: " << r.refusal << " (nothing changed)" << std::endl;
    return 1;
  }
  std::cout << "branch chosen: " << gateway;
  if (r.from_seq <= r.to_seq) {
    std::cout << " seq " << r.from_seq << ".." << r.to_seq << " taken from the forks";
  } else {
    std::cout << " the chain break's own record";
  }
  std::cout << " (tip SHA-256 " << r.tip_sha256 << ") by " << by << "; ";
  if (r.accepted_lost != 0) {
    std::cout << "seq " << r.accepted_lost
              << " accepted as lost (the record the branch follows on from, which nobody holds; receipts "
                 "name it); ";
  }
  std::cout << r.set_aside << " record(s) of the other branch";
  if (r.set_aside > 0) {
    std::cout << " (seq " << r.set_aside_from << ".." << r.set_aside_to << ")";
  }
  std::cout << " set aside into forks; custody through seq " << r.watermark
            << " (the next receipt, within receipts.every_ms, names the chosen head)" << std::endl;
  for (const std::string& line : r.found) {
    std::cerr << "checkpoint-central: " << line << std::endl;
  }
  return 0;
}

// Every option of every subcommand; each subcommand reads the ones it declares.
struct Args {
  std::string config_path;
  std::string gateway;
  std::string pubkey;
  std::uint64_t from_seq = 1;
  bool json_out = false;
  std::int64_t limit = 100;
  std::string kid;
  std::uint64_t after_seq = 0;
  std::string loss_seqs;
  std::string loss_picture;
  std::string reason;
  std::string by;
  std::string branch_tip;
  bool past_receipt = false;
  bool accept_break = false;
  std::vector<std::int64_t> discard_ids;
  std::optional<std::int64_t> seen_before_ms;
  std::string request_sha;
  std::uint64_t from = 1;
};

struct Commands {
  CLI::App* run = nullptr;
  CLI::App* check = nullptr;
  CLI::App* enroll = nullptr;
  CLI::App* status = nullptr;
  CLI::App* quarantine = nullptr;
  CLI::App* revoke = nullptr;
  CLI::App* accept = nullptr;
  CLI::App* branch = nullptr;
  CLI::App* discard = nullptr;
  CLI::App* files = nullptr;
  CLI::App* export_chain = nullptr;
};

CLI::App* with_config(CLI::App* cmd, Args& a) {
  cmd->add_option("-c,--config", a.config_path, "YAML config")->required();
  return cmd;
}

// run, check-config, enroll, status, quarantine, files, export: running and looking.
void add_service_commands(CLI::App& app, Args& a, Commands& c) {
  c.run = with_config(
      app.add_subcommand("run", "Run an instance (shared subscription: start as many as needed)"), a);
  c.check =
      with_config(app.add_subcommand("check-config", "Check a config file and exit (0 good, 1 bad)"), a);
  c.enroll = with_config(
      app.add_subcommand("enroll", "Trust a gateway's Ed25519 public key (PEM) for its records"), a);
  c.enroll->add_option("--gateway", a.gateway, "gateway id")->required();
  c.enroll->add_option("--pubkey", a.pubkey, "public key PEM file (checkpointctl pubkey --key KEY)")
      ->required();
  c.enroll->add_option("--from-seq", a.from_seq, "trust the key for seqs from this one on (default 1)")
      ->check(CLI::Range(std::uint64_t{1}, static_cast<std::uint64_t>(INT64_MAX)));
  c.status =
      with_config(app.add_subcommand("status", "Per gateway: watermark, gaps, receipts, keys, forks"), a);
  c.status->add_flag("--json", a.json_out, "JSON instead of a table");
  c.quarantine = with_config(
      app.add_subcommand("quarantine", "Quarantine rows: reason, count, first and last seen (newest first)"),
      a);
  c.quarantine->add_option("--gateway", a.gateway, "only this gateway (a name that is not enrolled too)");
  c.quarantine->add_option("--limit", a.limit, "at most this many rows (default 100)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100000}));
  c.quarantine->add_flag("--json", a.json_out, "JSON instead of lines");
  c.files = with_config(app.add_subcommand("files",
                                           "Recording transfers (newest first): held, open with bytes "
                                           "received, not held; --request asks for one"),
                        a);
  c.files->add_option("--gateway", a.gateway, "only this gateway (with --request: the gateway to ask)");
  c.files->add_option("--request", a.request_sha,
                      "ask the gateway for this recording (SHA-256 of its record)");
  c.files->add_option("--limit", a.limit, "at most this many rows (default 100)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100000}));
  c.files->add_flag("--json", a.json_out, "JSON instead of lines");
  c.export_chain = with_config(
      app.add_subcommand("export", "A gateway's stored chain as JWS lines (checkpointctl verify reads them)"),
      a);
  c.export_chain->add_option("--gateway", a.gateway, "gateway id")->required();
  c.export_chain->add_option("--from", a.from, "first seq (default 1)");
}

// revoke-key, accept-loss, choose-branch, discard-quarantine: an operator's decisions, each kept with who and
// why.
void add_operator_commands(CLI::App& app, Args& a, Commands& c) {
  const auto who_and_why = [&a](CLI::App* cmd, const std::string& why) {
    cmd->add_option("--reason", a.reason, why)->required();
    cmd->add_option("--operator", a.by, "who decides (kept with the decision)")->required();
  };
  c.revoke = with_config(
      app.add_subcommand(
          "revoke-key",
          "A leaked gateway key signs nothing valid after --after-seq (later records: quarantined)"),
      a);
  c.revoke->add_option("--gateway", a.gateway, "gateway id")->required();
  c.revoke->add_option("--kid", a.kid, "the key's kid (checkpoint-central status lists them)")->required();
  c.revoke->add_option("--after-seq", a.after_seq, "the last seq the key is trusted for (0: none)")
      ->required()
      ->check(CLI::Range(std::uint64_t{0}, static_cast<std::uint64_t>(INT64_MAX)));
  c.accept =
      with_config(app.add_subcommand("accept-loss",
                                     "Accept as lost records (--seq A or A-B) or a picture (--picture SHA) "
                                     "the gateway reported it no longer holds: custody moves past them and "
                                     "receipts name them"),
                  a);
  c.accept->add_option("--gateway", a.gateway, "gateway id")->required();
  auto* seq_opt = c.accept->add_option("--seq", a.loss_seqs, "a seq, or a range A-B (status: unrecoverable)");
  auto* picture_opt =
      c.accept->add_option("--picture", a.loss_picture, "a picture's SHA-256 (status: unrecoverable_media)");
  seq_opt->excludes(picture_opt);
  who_and_why(c.accept, "why the loss is accepted (kept with it)");
  c.branch =
      with_config(app.add_subcommand(
                      "choose-branch",
                      "At a chain break or fork: follow the gateway's branch ending at --tip (default: the "
                      "record at the chain break); the other branch is set aside into forks, kept"),
                  a);
  c.branch->add_option("--gateway", a.gateway, "gateway id")->required();
  c.branch->add_option("--tip", a.branch_tip,
                       "SEQ (the record central holds) or SEQ:SHA-256 (a fork: status --json, fork_records)");
  c.branch->add_flag("--past-receipt", a.past_receipt,
                     "the branch may replace records a custody receipt confirmed (the gateway lost them)");
  c.branch->add_flag("--accept-break", a.accept_break,
                     "the branch lacks a record the gateway reported it no longer holds: follow it from the "
                     "record after, accepting that one as lost (receipts name it)");
  who_and_why(c.branch, "why this branch (kept with the choice)");
  c.discard = with_config(app.add_subcommand("discard-quarantine",
                                             "Delete a gateway's quarantine rows (all, --id N..., or "
                                             "--seen-before-ms T); who and why are kept"),
                          a);
  c.discard->add_option("--gateway", a.gateway, "the rows' gateway name (quarantine lists them)")->required();
  c.discard->add_option("--id", a.discard_ids, "only these rows (quarantine --json lists their ids)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{INT64_MAX}));
  c.discard
      ->add_option("--seen-before-ms", a.seen_before_ms, "only rows last seen before this time (Unix ms)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{INT64_MAX}));
  who_and_why(c.discard, "why they are discarded (kept)");
}

int enroll(central::CentralStore& store, const Args& a) {
  const auto key = Ed25519PublicKey::from_pem(read_file(a.pubkey));
  const bool added = store.enroll(a.gateway, key, "enroll", now_ms(), a.from_seq);
  std::cout << (added ? "enrolled " : "already enrolled (unchanged): ") << a.gateway << " kid " << key.kid();
  if (added && a.from_seq > 1) {
    std::cout << " from seq " << a.from_seq;
  }
  std::cout << std::endl;
  return 0;
}

int quarantine(central::CentralStore& store, const Args& a) {
  const nlohmann::json q = store.quarantine_rows(a.gateway, a.limit);
  if (a.json_out) {
    std::cout << q.dump(2) << std::endl;
    return 0;
  }
  // Reasons and names are the peer's to shape: dump() escapes them as JSON strings.
  for (const auto& r : q["rows"]) {
    std::cout << r["gateway"].dump() << " " << r["topic"].get<std::string>() << " seq " << r["seq"].dump()
              << " kid " << r["kid"].dump() << " count " << r["count"] << " bytes " << r["bytes"]
              << " first_seen_ms " << r["first_seen_ms"] << " last_seen_ms " << r["last_seen_ms"]
              << " reason " << r["reason"].dump() << std::endl;
  }
  std::cout << "quarantine: " << q["total"] << " rows" << (a.gateway.empty() ? "" : " of " + a.gateway)
            << ", " << q["rows"].size() << " shown" << std::endl;
  return 0;
}

// One line per gateway: custody, what is missing, and every alarm an operator has to look at.
void print_gateway(const nlohmann::json& g) {
  std::cout << g["gateway"].get<std::string>() << ": custody through seq " << g["watermark"]
            << ", highest seen " << g["max_seq"] << ", announced " << g["announced_seq"] << ", records "
            << g["records"] << ", receipt through " << g["receipt_seq"] << ", resend requests "
            << g["resend_requests"] << ", forks " << g["forks"] << ", quarantined " << g["quarantined"]
            << ", keys " << g["kids"].get<std::string>();
  if (!g["chain_break"].is_null()) {
    std::cout << ", CHAIN BREAK at seq " << g["chain_break"]["seq"] << " ("
              << g["chain_break"]["reason"].get<std::string>() << ")";
  }
  if (!g["unrecoverable"].empty()) {
    std::cout << ", unrecoverable " << g["unrecoverable"].dump();
  }
  if (g["unnamed_bytes"].get<long long>() > 0) {
    std::cout << ", files no record names " << g["unnamed_bytes"] << " bytes";
  }
  if (g["unrecoverable_media_count"].get<long long>() > 0) {
    std::cout << ", UNRECOVERABLE PICTURES " << g["unrecoverable_media_count"] << " (first at seq "
              << g["unrecoverable_media"][0]["seq"] << ")";
  }
  for (const auto& c : g["chain_restarts"]) {
    std::cout << ", " << (c["kind"] == "new_chain" ? "NEW CHAIN" : "STORE REPLACED") << " at seq " << c["seq"]
              << (c["as_fork"].get<bool>() ? " (a fork of the old chain)" : "") << ": " << c["reason"].dump();
  }
  if (g["branch_choices_count"].get<long long>() > 0) {
    std::cout << ", BRANCHES CHOSEN "
              << g["branch_choices_count"];  // --json: which, why, by whom (newest 100)
  }
  if (g["accepted_losses_count"].get<long long>() > 0) {
    std::cout << ", ACCEPTED LOSSES "
              << g["accepted_losses_count"];  // --json: what, why, by whom (newest 100)
  }
  if (g["head_forks"].get<long long>() > 0) {
    std::cout << ", HEAD FORKS " << g["head_forks"];
  }
  std::cout << std::endl;
}

int status(central::CentralStore& store, const Args& a) {
  const nlohmann::json s = store.status();
  if (a.json_out) {
    std::cout << s.dump(2) << std::endl;
    return 0;
  }
  for (const auto& g : s["gateways"]) {
    print_gateway(g);
  }
  const auto& q = s["quarantine"];
  std::cout << "quarantine: " << q["rows"] << " rows, " << q["bytes"] << " bytes (bounds " << q["max_rows"]
            << " rows, " << q["max_bytes"] << " bytes; per gateway " << q["max_rows_per_gateway"] << " rows, "
            << q["max_bytes_per_gateway"] << " bytes), " << q["messages"] << " messages, " << q["dropped"]
            << " dropped beyond the bounds" << std::endl;
  const auto& u = s["unknown_gateways"];
  if (u["count"].get<long long>() > 0) {
    std::cout << "NOT ENROLLED: " << u["count"] << " gateway names with quarantined messages; latest:";
    for (const auto& g : u["latest"]) {
      std::cout << " " << g["gateway"].get<std::string>() << " (" << g["messages"] << ")";
    }
    std::cout << std::endl;
  }
  return 0;
}

int revoke(central::CentralStore& store, const Args& a) {
  const auto r = store.revoke_key(a.gateway, a.kid, a.after_seq);
  if (!r) {
    std::cerr << "checkpoint-central: " << a.gateway << " has no key " << a.kid << std::endl;
    return 1;
  }
  std::cout << "revoked: " << a.gateway << " key " << a.kid << " is trusted for seq " << r->valid_from_seq
            << ".." << r->valid_to_seq << " only; running instances follow within 5 s" << std::endl;
  if (r->stored_after > 0) {
    std::cout << "REVIEW: " << r->stored_after << " records under this key after seq " << r->valid_to_seq
              << " were stored before the revocation and stay stored (checkpoint-central export lists them)"
              << std::endl;
  }
  return 0;
}

int discard(central::CentralStore& store, const Args& a) {
  if (!printable_operator_text(a.reason) || !printable_operator_text(a.by)) {
    std::cerr << "checkpoint-central: --reason and --operator must be printable ASCII, 1-500 bytes"
              << std::endl;
    return 2;
  }
  const auto d =
      store.discard_quarantine(a.gateway, a.discard_ids, a.seen_before_ms, a.reason, a.by, now_ms());
  std::cout << "discarded " << d.rows << " quarantine rows (" << d.bytes << " bytes) of "
            << nlohmann::json(printable(a.gateway)).dump() << " by " << a.by
            << (d.rows == 0 ? " (none matched: nothing changed)" : "") << std::endl;
  return 0;
}

// The subcommands that work on the database (all but run and check-config).
int with_store(const central::CentralConfig& cfg, const Commands& c, const Args& a) {
  central::CentralStore store(cfg.postgres.conninfo, central::quarantine_bounds(cfg.feed));
  if (*c.enroll) {
    return enroll(store, a);
  }
  if (*c.quarantine) {
    return quarantine(store, a);
  }
  if (*c.status) {
    return status(store, a);
  }
  if (*c.revoke) {
    return revoke(store, a);
  }
  if (*c.accept) {
    return accept_loss(store, a.gateway, a.loss_seqs, a.loss_picture, a.reason, a.by);
  }
  if (*c.branch) {
    return choose_branch(store, a.gateway, a.branch_tip, {a.past_receipt, a.accept_break}, a.reason, a.by);
  }
  if (*c.discard) {
    return discard(store, a);
  }
  if (*c.files) {
    return files(store.connection(), a.gateway, a.request_sha, a.limit, a.json_out);
  }
  store.export_chain(a.gateway, a.from, [](const std::string& line) { std::cout << line << '\n'; });
  std::cout.flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint-central: verifies gateways' evidence chains into PostgreSQL and confirms custody"};
  app.require_subcommand(1);
  Args args;
  Commands commands;
  add_service_commands(app, args, commands);
  add_operator_commands(app, args, commands);
  CLI11_PARSE(app, argc, argv);

  try {
    const central::CentralConfig cfg = central::load_central_config(args.config_path);
    if (*commands.check) {
      Ed25519PrivateKey::load_pem_file(cfg.central.key_path);
      std::cout << args.config_path << ": ok" << std::endl;
      return 0;
    }
    if (*commands.run) {
      return run(cfg);
    }
    return with_store(cfg, commands, args);
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "checkpoint-central: " << e.what() << std::endl;
    return 1;
  }
}
