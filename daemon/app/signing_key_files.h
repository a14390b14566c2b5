// The gateway's signing key files across a key rotation (docs/custody.md, "Key rotation"): the new key is
// written durably beside gateway.key before its key_rotation record is sealed, and installed as gateway.key
// only after that record is committed; the old key is kept under another name. At start, an unfinished
// rotation is finished or abandoned according to what the chain holds.
#pragma once

#include <optional>
#include <string>

#include "daemon/core/ed25519.h"

namespace cpd::app {

// <key>.next: the new key between its creation and its installation.
std::string next_key_path(const std::string& key_path);
// <key>.retired-<kid>: an old key, kept (never deleted by the daemon).
std::string retired_key_path(const std::string& key_path, const std::string& kid);

// Step 1 of a rotation: generates an Ed25519 key and writes it to <key>.next (mode 0600) through a
// temporary file, fsync'd, renamed, directory fsync'd: <key>.next is either absent or the whole key.
// Throws KeyError, among others when <key>.next already exists (an unfinished rotation).
Ed25519PrivateKey write_next_key(const std::string& key_path);

// Step 3, once the key_rotation record naming <key>.next's key is committed: hard-links <key> to
// <key>.retired-<old_kid> (kept), renames <key>.next over <key>, fsyncs the directory. Idempotent: each
// step is skipped when already done. Throws KeyError.
void install_next_key(const std::string& key_path, const std::string& old_kid);

// Removes <key>.next (a rotation whose record was never committed: its key never signed anything).
void discard_next_key(const std::string& key_path);

// Pure: did the chain take the rotation to `next_kid`? True when the chain's head record is signed by
// `next_kid` or is a key_rotation record naming it. The head is never pruned, and only the rotation record
// and records after it can be either, so this decides an unfinished rotation at start.
bool chain_took_rotation(const std::string& head_jws, const std::string& next_kid);

// At start, before anything is signed: resolves an unfinished rotation. With no <key>.next, returns
// nullopt (use gateway.key as loaded). With one: if chain_took_rotation(head_jws, its kid), finishes the
// installation and returns the new key (also when a file step of the installation fails: then `error` is set
// and the next start tries again); with no head record (an empty store cannot tell), sets it aside as
// <key>.unresolved-<kid> (kept, `error` set) and returns nullopt; otherwise discards it (it signed nothing)
// and returns nullopt. `note` says what was done (for the log). Throws KeyError when <key>.next cannot be
// read or set aside.
std::optional<Ed25519PrivateKey> resolve_unfinished_rotation(const std::string& key_path,
                                                             const std::string& current_kid,
                                                             const std::string& head_jws, std::string& note,
                                                             bool& error);

}  // namespace cpd::app
