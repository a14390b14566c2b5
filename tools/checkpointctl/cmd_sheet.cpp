// checkpointctl sheet: one evidence record as a printed evidence sheet (A4 PDF). The record is verified
// first (signature under a given gateway key, canonical form, every picture's SHA-256) and a record that
// fails is refused, never rendered.
#include <sqlite3.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"
#include "daemon/core/record_check.h"
#include "tools/checkpointctl/commands.h"
#include "tools/checkpointctl/sheet_content.h"
#include "tools/checkpointctl/sheet_pdf.h"

namespace cpd::ctl {

namespace {

constexpr int kExitRefused = 1;
constexpr std::size_t kMaxLineBytes = 16 * 1024 * 1024;        // one JWS line (records are a few kB)
constexpr std::uintmax_t kMaxPictureBytes = 64 * 1024 * 1024;  // the spec's pictures are at most 1.5 MB
constexpr std::uintmax_t kMaxKeyBytes = 64 * 1024;
constexpr std::size_t kMaxLinks =
    100;  // link records shown beside one record (a recording per officer nearby)

struct SheetOptions {
  std::vector<std::string> pubkeys;
  std::string media_dir;
  std::string input;
  std::string store;
  std::string id;
  std::string output;
};

struct Refusal {
  std::string what;
};

// The record to render, verified, and the verified `link` records naming it found beside it.
struct Found {
  std::string jws;
  RecordCheck check;
  std::vector<nlohmann::json> links;
};

// A verified `link` record naming `id` goes into `links` (at most kMaxLinks): sealed by the record's own
// gateway and naming one of its recordings (an export may hold several gateways' chains).
void keep_link(const RecordCheck& c, const std::string& id, std::vector<nlohmann::json>& links) {
  const std::string gateway = id.substr(0, id.rfind(':'));
  const auto names_own = [&](const char* member) {
    return c.body.contains(member) && c.body[member].is_string() &&
           c.body[member].get<std::string>().rfind(gateway + ":", 0) == 0;
  };
  if (c.ok && c.type == "link" && c.gateway == gateway && c.body.contains("record") &&
      c.body["record"] == id && names_own("recording") && links.size() < kMaxLinks) {
    links.push_back(c.body);
  }
}

std::string read_bounded(const std::string& path, std::uintmax_t limit, const char* what) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    throw Refusal{std::string(what) + " " + path + ": " + ec.message()};
  }
  if (size > limit) {
    throw Refusal{std::string(what) + " " + path + " is " + std::to_string(size) + " bytes, more than " +
                  std::to_string(limit)};
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    throw Refusal{std::string("cannot read ") + what + " " + path};
  }
  return bytes;
}

std::map<std::string, Ed25519PublicKey> load_keys(const std::vector<std::string>& paths) {
  std::map<std::string, Ed25519PublicKey> keys;
  for (const auto& path : paths) {
    try {
      const auto key = Ed25519PublicKey::from_pem(read_bounded(path, kMaxKeyBytes, "public key"));
      keys.emplace(key.kid(), key);
    } catch (const KeyError& e) {
      throw Refusal{"public key " + path + ": " + e.what()};
    }
  }
  return keys;
}

// The next line of `in` (without its newline) into `line`; false at the end. A line longer than
// kMaxLineBytes is refused before it is read whole: a file is no reason to exhaust memory.
bool bounded_line(std::istream& in, std::string& line) {
  line.clear();
  char c = 0;
  bool any = false;
  while (in.get(c)) {
    any = true;
    if (c == '\n') {
      return true;
    }
    if (line.size() == kMaxLineBytes) {
      throw Refusal{"a line longer than " + std::to_string(kMaxLineBytes) + " bytes: not a JWS per line"};
    }
    line.push_back(c);
  }
  return any;
}

// The record to render: the only one in the file, or the one whose id is `id`; verified. With `id`, the
// links naming it in the same file (an export of the chain) come along.
Found find_record(const SheetOptions& o, const KeyForKid& key_for_kid) {
  std::ifstream in(o.input, std::ios::binary);
  if (!in) {
    throw Refusal{"cannot open " + o.input + ": " + std::strerror(errno)};
  }
  std::vector<std::pair<std::string, RecordCheck>> found;
  std::vector<nlohmann::json> links;
  std::string line;
  std::size_t records = 0;
  while (bounded_line(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.pop_back();
    }
    if (line.empty()) {
      continue;
    }
    ++records;
    RecordCheck check = check_record(line, key_for_kid);
    if (!o.id.empty() && check.id != o.id) {
      keep_link(check, o.id, links);
      continue;
    }
    found.emplace_back(line, std::move(check));
  }
  if (found.empty()) {
    throw Refusal{records == 0 ? o.input + " holds no record" : "no record " + o.id + " in " + o.input};
  }
  if (found.size() > 1) {
    throw Refusal{o.input + " holds " + std::to_string(found.size()) +
                  " records: choose one with --id GATEWAY:SEQ"};
  }
  if (!found[0].second.ok) {
    throw Refusal{"record " +
                  (found[0].second.id.empty() ? std::string("in ") + o.input : found[0].second.id) +
                  " does not verify: " + found[0].second.reason};
  }
  return Found{std::move(found[0].first), std::move(found[0].second), std::move(links)};
}

// The record `id` from a gateway's SQLite store, opened read-only (the daemon may be running), and the links
// naming it (a link's time_ms is its record's).
Found record_from_store(const SheetOptions& o, const KeyForKid& key_for_kid) {
  if (o.id.empty()) {
    throw Refusal{"--store needs --id GATEWAY:SEQ"};
  }
  sqlite3* db = nullptr;
  const int open_rc = sqlite3_open_v2(o.store.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> guard(db, &sqlite3_close);
  if (open_rc != SQLITE_OK) {
    throw Refusal{"cannot open store " + o.store + ": " + sqlite3_errmsg(db)};
  }
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT jws FROM records WHERE id = ?", -1, &raw, nullptr) != SQLITE_OK) {
    throw Refusal{"store " + o.store + " is not a checkpointd store: " + sqlite3_errmsg(db)};
  }
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw, &sqlite3_finalize);
  sqlite3_bind_text(raw, 1, o.id.c_str(), static_cast<int>(o.id.size()), SQLITE_TRANSIENT);
  const int step = sqlite3_step(raw);
  if (step != SQLITE_ROW) {
    throw Refusal{step == SQLITE_DONE
                      ? "no record " + o.id + " in " + o.store + " (never sealed, or pruned after custody)"
                      : "cannot read store " + o.store + ": " + sqlite3_errmsg(db)};
  }
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(raw, 0));
  std::string jws = text == nullptr ? "" : text;
  RecordCheck check = check_record(jws, key_for_kid);
  if (!check.ok) {
    throw Refusal{"record " + o.id + " does not verify: " + check.reason};
  }
  std::vector<nlohmann::json> links;
  sqlite3_stmt* raw_links = nullptr;
  if (sqlite3_prepare_v2(
          db, "SELECT jws FROM records WHERE type = 'link' AND time_ms = ? ORDER BY seq LIMIT 1000", -1,
          &raw_links, nullptr) == SQLITE_OK) {
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> link_stmt(raw_links, &sqlite3_finalize);
    sqlite3_bind_int64(raw_links, 1, check.body.value("time_ms", std::int64_t{0}));
    while (sqlite3_step(raw_links) == SQLITE_ROW) {
      const auto* link = reinterpret_cast<const char*>(sqlite3_column_text(raw_links, 0));
      keep_link(check_record(link == nullptr ? "" : link, key_for_kid), o.id, links);
    }
  }
  return Found{std::move(jws), std::move(check), std::move(links)};
}

// Every picture the record names, read from the media directory and checked against its hash.
std::map<std::string, std::string> verified_pictures(const nlohmann::json& body, const std::string& dir) {
  std::map<std::string, std::string> out;
  if (!body.contains("pictures") || !body["pictures"].is_array()) {
    return out;
  }
  for (const auto& p : body["pictures"]) {
    const std::string sha = p.is_object() && p.contains("sha256") && p["sha256"].is_string()
                                ? p["sha256"].get<std::string>()
                                : std::string();
    if (!is_sha256_hex(sha)) {
      throw Refusal{"the record names a picture without a valid sha256"};
    }
    // The gateway's media store names a file by its hash (DIR/<sha>); central's shards it
    // (DIR/<sha[0:2]>/<sha>).
    std::string path = dir + "/" + sha;
    if (!std::filesystem::exists(path)) {
      path = dir + "/" + sha.substr(0, 2) + "/" + sha;
    }
    if (!std::filesystem::exists(path)) {
      throw Refusal{"picture " + sha + " named by the record is not in " + dir +
                    " (as <sha256> or <sha256[0:2]>/<sha256>)"};
    }
    std::string bytes = read_bounded(path, kMaxPictureBytes, "picture");
    if (sha256_hex(bytes) != sha) {
      throw Refusal{"picture " + path + " does not match its SHA-256 (altered or damaged): refusing"};
    }
    out.emplace(sha, std::move(bytes));
  }
  return out;
}

int run_sheet(const SheetOptions& o) {
  try {
    if (std::filesystem::exists(o.output)) {
      throw Refusal{o.output + " already exists; refusing to overwrite it"};
    }
    const auto keys = load_keys(o.pubkeys);
    const KeyForKid key_for_kid = [&keys](const std::string& kid) -> std::optional<Ed25519PublicKey> {
      const auto it = keys.find(kid);
      return it == keys.end() ? std::nullopt : std::optional<Ed25519PublicKey>(it->second);
    };
    const auto [jws, check, links] =
        o.store.empty() ? find_record(o, key_for_kid) : record_from_store(o, key_for_kid);
    const auto pictures = verified_pictures(check.body, o.media_dir);
    const SheetContent content = sheet_content(check.body, check.kid, sha256_hex(jws), links);
    const std::string tmp = o.output + ".tmp";
    if (const std::string error = render_sheet_pdf(content, pictures, tmp); !error.empty()) {
      std::filesystem::remove(tmp);
      throw Refusal{"cannot write " + o.output + ": " + error};
    }
    std::filesystem::rename(tmp, o.output);
    std::cout << "checkpointctl: sheet for " << check.id << " (" << check.type << ", "
              << (content.not_enforceable ? "NOT enforceable" : "verified") << ", " << pictures.size()
              << " pictures, " << links.size() << " linked recordings) written to " << o.output << "\n";
    return kExitOk;
  } catch (const Refusal& r) {
    std::cerr << "checkpointctl: sheet: " << r.what << "\n";
    return kExitRefused;
  } catch (const std::filesystem::filesystem_error& e) {
    std::cerr << "checkpointctl: sheet: " << e.what() << "\n";
    return kExitRefused;
  }
}

}  // namespace

std::vector<Command> add_sheet_commands(CLI::App& app) {
  auto options = std::make_shared<SheetOptions>();
  auto* sheet =
      app.add_subcommand("sheet", "Render one verified evidence record as a printable evidence sheet (PDF)");
  sheet
      ->add_option("--pubkey", options->pubkeys,
                   "Gateway public key (PEM); repeat for a chain that rotated keys")
      ->required();
  sheet
      ->add_option(
          "--media", options->media_dir,
          "Directory of the record's pictures, named by SHA-256 (the gateway's media_dir, or central's)")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto* input =
      sheet->add_option("record", options->input,
                        "File with the record's JWS (one JWS per line, e.g. checkpoint-central export)");
  auto* store =
      sheet->add_option("--store", options->store, "Or a gateway's SQLite store (read-only), with --id")
          ->check(CLI::ExistingFile);
  input->excludes(store);
  sheet->add_option("--id", options->id,
                    "The record's id (GATEWAY:SEQ): needed with --store or several records");
  sheet->callback([input, store] {
    if (input->count() == 0 && store->count() == 0) {
      throw CLI::RequiredError("a record file or --store");
    }
  });

  sheet->add_option("-o,--output", options->output, "The PDF to write (must not exist)")->required();
  sheet->footer(
      "Verifies the record first (signature under one of the keys, canonical form, every picture's SHA-256)\n"
      "and refuses (exit 1) to render one that fails. The sheet (A4) states every case-file element in "
      "Chinese,\n"
      "the validity checks, the pictures with their role, size and SHA-256, and a QR code with the record's\n"
      "id, kid and SHA-256; it prints the openssl commands that verify the signature offline.\n"
      "Examples:\n"
      "  checkpointctl sheet --pubkey gw.pub.pem --media /var/lib/checkpointd/media records.jws \\\n"
      "      --id zj-hz-g60-k1234-n:1042 -o speeding-1042.pdf\n"
      "  checkpointctl sheet --pubkey gw.pub.pem --media /var/lib/checkpointd/media \\\n"
      "      --store /var/lib/checkpointd/store.db --id zj-hz-g60-k1234-n:1042 -o speeding-1042.pdf");

  return {{sheet, [options] { return run_sheet(*options); }}};
}

}  // namespace cpd::ctl
