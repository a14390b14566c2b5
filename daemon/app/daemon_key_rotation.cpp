// Daemon key rotation: checkpointctl rotate-key, and at start the rotation a crash interrupted.
#include <boost/asio/post.hpp>
#include <filesystem>

#include "daemon/app/daemon_impl.h"
#include "daemon/app/signing_key_files.h"
#include "daemon/core/key_rotation.h"
#include "daemon/log/log.h"

namespace cpd::app {

namespace asio = boost::asio;
using nlohmann::json;

// A key rotation a crash interrupted: finished if the chain took it, abandoned otherwise. At start, before
// the sealer exists.
void Daemon::Impl::finish_interrupted_rotation() {
  const ChainHead h = store->chain_head();
  std::string head_jws;
  if (h.seq > 0) {
    if (auto rec = store->record(h.seq)) {
      head_jws = rec->jws;
    } else if (const auto origin = store->chain_origin();
               (!origin || origin->through_seq != h.seq) &&
               std::filesystem::exists(next_key_path(cfg.gateway.key_path))) {
      // The head is never pruned (and is no continued chain's origin, which has no record): a store read
      // error. Taken for "no record", it would set the next key aside
      // while the chain may already name it, and every later record would be signed by a retired key.
      throw store::StoreError("store: cannot read the chain head (seq " + std::to_string(h.seq) +
                              ") to resolve an interrupted key rotation; not started");
    }
  }
  std::string note;
  bool error = false;
  if (auto rotated =
          resolve_unfinished_rotation(cfg.gateway.key_path, key->public_key().kid(), head_jws, note, error)) {
    key = std::move(*rotated);
  }
  if (error) {
    log::error("daemon", "", note);
  } else if (!note.empty()) {
    log::warn("daemon", "", note);
  }
}

// checkpointctl rotate-key (docs/custody.md, "Key rotation"), on the io thread. The new key is on disk
// (<key>.next, fsync'd) before its key_rotation record is submitted; the store worker seals that record
// under the old key and everything after it under the new one; only once it is committed is the new key
// installed as gateway.key (the old one kept as <key>.retired-<kid>). A crash at any step is resolved at
// the next start (resolve_unfinished_rotation).
void Daemon::Impl::rotate_key(std::function<void(json)> reply) {
  if (stopping || rotating || sealing != Sealing::started) {
    reply(json{{"error", stopping   ? "checkpointd is stopping"
                         : rotating ? "a key rotation is already in progress"
                                    : "the chain's start is still being decided (empty store); try again"}});
    return;
  }
  const std::string key_path = cfg.gateway.key_path;
  std::shared_ptr<const Ed25519PrivateKey> next;
  try {
    next = std::make_shared<const Ed25519PrivateKey>(write_next_key(key_path));
  } catch (const std::exception& e) {
    log::error("daemon", "", std::string("key rotation refused: ") + e.what());
    reply(json{{"error", std::string("key rotation refused: ") + e.what()}});
    return;
  }
  rotating = true;
  const Ed25519PublicKey old_public = key->public_key();  // the sealer's key: no rotation is under way
  const std::string old_kid = old_public.kid();
  const std::string new_kid = next->public_key().kid();
  log::notice("daemon", "",
              "rotating the signing key: kid " + old_kid + " -> " + new_kid + " (new key in " +
                  next_key_path(key_path) + ")");
  Fact fact = make_key_rotation_fact(old_public, next->public_key(), clock.now_ms());
  worker->submit_key_rotation(
      std::move(fact), next, [this, next, key_path, old_kid, new_kid, reply](const SealedRecord& rec) {
        // On the store worker thread, once the record is committed (or what was sealed in its place).
        json answer;
        if (rec.type != "key_rotation" || !rec.salvage_reason.empty()) {
          // Signing failed and a fault record took its place (or it was salvaged): the store worker did not
          // switch keys, so the chain did not rotate.
          std::string why =
              "the key_rotation record could not be sealed (" + rec.id + " is a " + rec.type + ")";
          try {
            discard_next_key(key_path);
          } catch (const std::exception& e) {
            why += "; " + std::string(e.what());
          }
          log::error("daemon", "", "key rotation failed: " + why);
          answer = {{"error", "key rotation failed: " + why}};
        } else {
          *key = *next;  // head announcements are signed on this thread too
          {
            std::lock_guard lock(counts_mutex);
            kid = new_kid;
          }
          answer = {{"rotated",
                     {{"seq", rec.seq},
                      {"old_kid", old_kid},
                      {"new_kid", new_kid},
                      {"key_file", key_path},
                      {"old_key_file", retired_key_path(key_path, old_kid)}}}};
          try {
            install_next_key(key_path, old_kid);
            log::notice("daemon", "",
                        "signing key rotated at seq " + std::to_string(rec.seq) + ": kid " + old_kid +
                            " -> " + new_kid + "; old key kept as " + retired_key_path(key_path, old_kid));
          } catch (const std::exception& e) {
            // The record is committed and the new key is durable as <key>.next: records go on under it, and
            // the next start finishes the installation.
            log::error("daemon", "",
                       std::string("key rotated at seq ") + std::to_string(rec.seq) +
                           " but the key files were not renamed (done at the next start): " + e.what());
            answer["rotated"]["warning"] = e.what();
          }
        }
        asio::post(io, [this] { rotating = false; });
        reply(std::move(answer));
      });
}

}  // namespace cpd::app
