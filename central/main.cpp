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
                  bool past_receipt, const std::string& reason, const std::string& by) {
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
  const auto r = store.choose_branch(gateway, seq, sha, past_receipt, reason, by, now_ms());
  if (!r.chosen) {
    std::cerr << "checkpoint-central: not chosen: " << r.refusal << " (nothing changed)" << std::endl;
    return 1;
  }
  std::cout << "branch chosen: " << gateway << " seq " << r.from_seq << ".." << r.to_seq
            << " taken from the forks (tip SHA-256 " << r.tip_sha256 << ") by " << by << "; " << r.set_aside
            << " record(s) of the other branch";
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint-central: verifies gateways' evidence chains into PostgreSQL and confirms custody"};
  app.require_subcommand(1);
  std::string config_path;
  auto* run_cmd = app.add_subcommand("run", "Run an instance (shared subscription: start as many as needed)");
  run_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  auto* check_cmd = app.add_subcommand("check-config", "Check a config file and exit (0 good, 1 bad)");
  check_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  std::string gateway;
  std::string pubkey;
  auto* enroll_cmd =
      app.add_subcommand("enroll", "Trust a gateway's Ed25519 public key (PEM) for its records");
  enroll_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  enroll_cmd->add_option("--gateway", gateway, "gateway id")->required();
  enroll_cmd->add_option("--pubkey", pubkey, "public key PEM file (checkpointctl pubkey --key KEY)")
      ->required();
  std::uint64_t from_seq = 1;
  enroll_cmd->add_option("--from-seq", from_seq, "trust the key for seqs from this one on (default 1)")
      ->check(CLI::Range(std::uint64_t{1}, static_cast<std::uint64_t>(INT64_MAX)));
  bool json_out = false;
  auto* status_cmd = app.add_subcommand("status", "Per gateway: watermark, gaps, receipts, keys, forks");
  status_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  status_cmd->add_flag("--json", json_out, "JSON instead of a table");
  std::int64_t limit = 100;
  auto* quarantine_cmd =
      app.add_subcommand("quarantine", "Quarantine rows: reason, count, first and last seen (newest first)");
  quarantine_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  quarantine_cmd->add_option("--gateway", gateway, "only this gateway (a name that is not enrolled too)");
  quarantine_cmd->add_option("--limit", limit, "at most this many rows (default 100)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100000}));
  quarantine_cmd->add_flag("--json", json_out, "JSON instead of lines");
  std::string kid;
  std::uint64_t after_seq = 0;
  auto* revoke_cmd = app.add_subcommand(
      "revoke-key",
      "A leaked gateway key signs nothing valid after --after-seq (later records: quarantined)");
  revoke_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  revoke_cmd->add_option("--gateway", gateway, "gateway id")->required();
  revoke_cmd->add_option("--kid", kid, "the key's kid (checkpoint-central status lists them)")->required();
  revoke_cmd->add_option("--after-seq", after_seq, "the last seq the key is trusted for (0: none)")
      ->required()
      ->check(CLI::Range(std::uint64_t{0}, static_cast<std::uint64_t>(INT64_MAX)));
  std::string loss_seqs;
  std::string loss_picture;
  std::string loss_reason;
  std::string loss_operator;
  auto* accept_cmd = app.add_subcommand("accept-loss",
                                        "Accept as lost records (--seq A or A-B) or a picture (--picture "
                                        "SHA) the gateway reported it no longer "
                                        "holds: custody moves past them and receipts name them");
  accept_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  accept_cmd->add_option("--gateway", gateway, "gateway id")->required();
  auto* seq_opt = accept_cmd->add_option("--seq", loss_seqs, "a seq, or a range A-B (status: unrecoverable)");
  auto* picture_opt =
      accept_cmd->add_option("--picture", loss_picture, "a picture's SHA-256 (status: unrecoverable_media)");
  seq_opt->excludes(picture_opt);
  accept_cmd->add_option("--reason", loss_reason, "why the loss is accepted (kept with it)")->required();
  accept_cmd->add_option("--operator", loss_operator, "who accepts it (kept with it)")->required();
  std::string branch_tip;
  bool past_receipt = false;
  auto* branch_cmd = app.add_subcommand(
      "choose-branch",
      "At a chain break or fork: follow the gateway's branch ending at --tip (default: the record at the "
      "chain break); the other branch is set aside into forks, kept");
  branch_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  branch_cmd->add_option("--gateway", gateway, "gateway id")->required();
  branch_cmd->add_option("--tip", branch_tip,
                         "SEQ (the record central holds) or SEQ:SHA-256 (a fork: status --json lists them)");
  branch_cmd->add_flag("--past-receipt", past_receipt,
                       "the branch may replace records a custody receipt confirmed (the gateway lost them)");
  branch_cmd->add_option("--reason", loss_reason, "why this branch (kept with the choice)")->required();
  branch_cmd->add_option("--operator", loss_operator, "who chooses it (kept with the choice)")->required();
  std::vector<std::int64_t> discard_ids;
  std::optional<std::int64_t> seen_before_ms;
  auto* discard_cmd = app.add_subcommand(
      "discard-quarantine",
      "Delete a gateway's quarantine rows (all, --id N..., or --seen-before-ms T); who and why are kept");
  discard_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  discard_cmd->add_option("--gateway", gateway, "the rows' gateway name (quarantine lists them)")->required();
  discard_cmd->add_option("--id", discard_ids, "only these rows (quarantine --json lists their ids)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{INT64_MAX}));
  discard_cmd
      ->add_option("--seen-before-ms", seen_before_ms, "only rows last seen before this time (Unix ms)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{INT64_MAX}));
  discard_cmd->add_option("--reason", loss_reason, "why they are discarded (kept)")->required();
  discard_cmd->add_option("--operator", loss_operator, "who discards them (kept)")->required();
  std::string request_sha;
  auto* files_cmd = app.add_subcommand(
      "files",
      "Recording transfers (newest first): held, open with bytes received, not held; --request asks for one");
  files_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  files_cmd->add_option("--gateway", gateway, "only this gateway (with --request: the gateway to ask)");
  files_cmd->add_option("--request", request_sha,
                        "ask the gateway for this recording (SHA-256 of its record)");
  files_cmd->add_option("--limit", limit, "at most this many rows (default 100)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100000}));
  files_cmd->add_flag("--json", json_out, "JSON instead of lines");
  std::uint64_t from = 1;
  auto* export_cmd =
      app.add_subcommand("export", "A gateway's stored chain as JWS lines (checkpointctl verify reads them)");
  export_cmd->add_option("-c,--config", config_path, "YAML config")->required();
  export_cmd->add_option("--gateway", gateway, "gateway id")->required();
  export_cmd->add_option("--from", from, "first seq (default 1)");
  CLI11_PARSE(app, argc, argv);

  try {
    const central::CentralConfig cfg = central::load_central_config(config_path);
    if (*check_cmd) {
      Ed25519PrivateKey::load_pem_file(cfg.central.key_path);
      std::cout << config_path << ": ok" << std::endl;
      return 0;
    }
    if (*run_cmd) {
      return run(cfg);
    }
    central::CentralStore store(cfg.postgres.conninfo, central::quarantine_bounds(cfg.feed));
    if (*enroll_cmd) {
      const auto key = Ed25519PublicKey::from_pem(read_file(pubkey));
      const bool added = store.enroll(gateway, key, "enroll", now_ms(), from_seq);
      std::cout << (added ? "enrolled " : "already enrolled (unchanged): ") << gateway << " kid "
                << key.kid();
      if (added && from_seq > 1) {
        std::cout << " from seq " << from_seq;
      }
      std::cout << std::endl;
      return 0;
    }
    if (*quarantine_cmd) {
      const nlohmann::json q = store.quarantine_rows(gateway, limit);
      if (json_out) {
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
      std::cout << "quarantine: " << q["total"] << " rows" << (gateway.empty() ? "" : " of " + gateway)
                << ", " << q["rows"].size() << " shown" << std::endl;
      return 0;
    }
    if (*status_cmd) {
      const nlohmann::json s = store.status();
      if (json_out) {
        std::cout << s.dump(2) << std::endl;
        return 0;
      }
      for (const auto& g : s["gateways"]) {
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
        if (g["unrecoverable_media_count"].get<long long>() > 0) {
          std::cout << ", UNRECOVERABLE PICTURES " << g["unrecoverable_media_count"] << " (first at seq "
                    << g["unrecoverable_media"][0]["seq"] << ")";
        }
        for (const auto& c : g["chain_restarts"]) {
          std::cout << ", " << (c["kind"] == "new_chain" ? "NEW CHAIN" : "STORE REPLACED") << " at seq "
                    << c["seq"] << (c["as_fork"].get<bool>() ? " (a fork of the old chain)" : "") << ": "
                    << c["reason"].dump();
        }
        if (!g["branch_choices"].empty()) {
          std::cout << ", BRANCHES CHOSEN " << g["branch_choices"].size();  // --json: which, why, by whom
        }
        if (!g["accepted_losses"].empty()) {
          std::cout << ", ACCEPTED LOSSES " << g["accepted_losses"].size();  // --json: what, why, by whom
        }
        if (g["head_forks"].get<long long>() > 0) {
          std::cout << ", HEAD FORKS " << g["head_forks"];
        }
        std::cout << std::endl;
      }
      const auto& q = s["quarantine"];
      std::cout << "quarantine: " << q["rows"] << " rows, " << q["bytes"] << " bytes (bounds "
                << q["max_rows"] << " rows, " << q["max_bytes"] << " bytes; per gateway "
                << q["max_rows_per_gateway"] << " rows, " << q["max_bytes_per_gateway"] << " bytes), "
                << q["messages"] << " messages, " << q["dropped"] << " dropped beyond the bounds"
                << std::endl;
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
    if (*revoke_cmd) {
      const auto r = store.revoke_key(gateway, kid, after_seq);
      if (!r) {
        std::cerr << "checkpoint-central: " << gateway << " has no key " << kid << std::endl;
        return 1;
      }
      std::cout << "revoked: " << gateway << " key " << kid << " is trusted for seq " << r->valid_from_seq
                << ".." << r->valid_to_seq << " only; running instances follow within 5 s" << std::endl;
      if (r->stored_after > 0) {
        std::cout
            << "REVIEW: " << r->stored_after << " records under this key after seq " << r->valid_to_seq
            << " were stored before the revocation and stay stored (checkpoint-central export lists them)"
            << std::endl;
      }
      return 0;
    }
    if (*accept_cmd) {
      return accept_loss(store, gateway, loss_seqs, loss_picture, loss_reason, loss_operator);
    }
    if (*branch_cmd) {
      return choose_branch(store, gateway, branch_tip, past_receipt, loss_reason, loss_operator);
    }
    if (*discard_cmd) {
      if (!printable_operator_text(loss_reason) || !printable_operator_text(loss_operator)) {
        std::cerr << "checkpoint-central: --reason and --operator must be printable ASCII, 1-500 bytes"
                  << std::endl;
        return 2;
      }
      const auto d = store.discard_quarantine(gateway, discard_ids, seen_before_ms, loss_reason,
                                              loss_operator, now_ms());
      std::cout << "discarded " << d.rows << " quarantine rows (" << d.bytes << " bytes) of "
                << nlohmann::json(printable(gateway)).dump() << " by " << loss_operator
                << (d.rows == 0 ? " (none matched: nothing changed)" : "") << std::endl;
      return 0;
    }
    if (*files_cmd) {
      return files(store.connection(), gateway, request_sha, limit, json_out);
    }
    if (*export_cmd) {
      store.export_chain(gateway, from, [](const std::string& line) { std::cout << line << '\n'; });
      std::cout.flush();
      return 0;
    }
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "checkpoint-central: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
