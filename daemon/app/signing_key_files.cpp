// Key rotation on disk: write the next key durably, install it after its record commits, recover at start.
#include "daemon/app/signing_key_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "daemon/core/durable_fs.h"
#include "daemon/core/encoding.h"
#include "daemon/core/key_rotation.h"
#include "daemon/core/record_check.h"

namespace cpd::app {

namespace {

std::string dir_of(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

void fsync_dir(const std::string& path) {
  const std::string dir = dir_of(path);
  if (const auto failed = fsync_directory(dir)) {
    throw KeyError(std::string("cannot ") + failed->step + " directory " + dir + ": " +
                   std::strerror(failed->err));
  }
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

std::string next_key_path(const std::string& key_path) {
  return key_path + ".next";
}

std::string retired_key_path(const std::string& key_path, const std::string& kid) {
  return key_path + ".retired-" + kid;
}

Ed25519PrivateKey write_next_key(const std::string& key_path) {
  const std::string next = next_key_path(key_path);
  if (exists(next)) {
    throw KeyError(next + " exists: a key rotation is unfinished (restart checkpointd to resolve it)");
  }
  const std::string tmp = next + ".tmp";
  ::unlink(tmp.c_str());  // left by a crash while writing: never used
  Ed25519PrivateKey key = Ed25519PrivateKey::generate();
  key.save_pem_file(tmp);  // 0600, O_EXCL, fsync'd, directory fsync'd
  if (::rename(tmp.c_str(), next.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw KeyError("cannot rename " + tmp + " to " + next + ": " + std::strerror(err));
  }
  fsync_dir(next);
  return key;
}

void install_next_key(const std::string& key_path, const std::string& old_kid) {
  const std::string next = next_key_path(key_path);
  const std::string retired = retired_key_path(key_path, old_kid);
  if (!exists(next)) {
    return;  // installed already
  }
  if (!exists(retired) && ::link(key_path.c_str(), retired.c_str()) != 0) {
    throw KeyError("cannot keep the old key " + key_path + " as " + retired + ": " + std::strerror(errno));
  }
  fsync_dir(key_path);  // the old key's second name is durable before its first name is replaced
  if (::rename(next.c_str(), key_path.c_str()) != 0) {
    throw KeyError("cannot rename " + next + " to " + key_path + ": " + std::strerror(errno));
  }
  fsync_dir(key_path);
}

void discard_next_key(const std::string& key_path) {
  const std::string next = next_key_path(key_path);
  if (::unlink(next.c_str()) == 0 || errno == ENOENT) {
    ::unlink((next + ".tmp").c_str());
    fsync_dir(key_path);
    return;
  }
  throw KeyError("cannot remove " + next + ": " + std::strerror(errno));
}

bool chain_took_rotation(const std::string& head_jws, const std::string& next_kid) {
  const auto header = unverified_jws_part(head_jws, 0);
  if (!header) {
    return false;
  }
  if (header->value("kid", std::string()) == next_kid) {
    return true;
  }
  const auto body = unverified_jws_part(head_jws, 1);
  if (!body) {
    return false;
  }
  const auto rotation = parse_key_rotation(*body, header->value("kid", std::string()));
  return rotation && rotation->new_kid == next_kid;
}

std::optional<Ed25519PrivateKey> resolve_unfinished_rotation(const std::string& key_path,
                                                             const std::string& current_kid,
                                                             const std::string& head_jws, std::string& note,
                                                             bool& error) {
  error = false;
  const std::string next = next_key_path(key_path);
  ::unlink((next + ".tmp").c_str());  // a crash while writing it: that key never existed for the chain
  if (!exists(next)) {
    return std::nullopt;
  }
  Ed25519PrivateKey next_key = Ed25519PrivateKey::load_pem_file(next);
  const std::string next_kid = next_key.public_key().kid();
  if (chain_took_rotation(head_jws, next_kid)) {
    try {
      install_next_key(key_path, current_kid);
    } catch (const KeyError& e) {
      // The chain signs with the next key from now on whatever the files say: signing goes on with it (from
      // memory), and the next start tries the file steps again. A daemon that would not start seals nothing.
      error = true;
      note = "an interrupted key rotation to kid " + next_kid +
             " (the chain names it) could not be installed: " + e.what() + "; signing with it from " + next +
             ", installed at the next start";
      return next_key;
    }
    note = "finished an interrupted key rotation: the chain names kid " + next_kid + "; " + next +
           " installed as " + key_path + ", the old key kept as " + retired_key_path(key_path, current_kid);
    return next_key;
  }
  if (head_jws.empty()) {
    // A store that holds no record (a new one after a lost or moved-aside store) cannot tell whether its
    // chain took the rotation: a key the chain may depend on is never deleted on that word. Set aside, kept.
    const std::string aside = key_path + ".unresolved-" + next_kid;
    if (::rename(next.c_str(), aside.c_str()) != 0) {
      throw KeyError("cannot rename " + next + " to " + aside + ": " + std::strerror(errno));
    }
    fsync_dir(key_path);
    error = true;
    note =
        "an interrupted key rotation to kid " + next_kid +
        " cannot be resolved: the store holds no record to tell whether the chain took it; the key is kept "
        "as " +
        aside + ", still signing with kid " + current_kid +
        ". If central refuses this gateway's records as signed by a retired key, stop the daemon and "
        "install that file as " +
        key_path + " (docs/custody.md, \"Key rotation\")";
    return std::nullopt;
  }
  discard_next_key(key_path);
  note = "abandoned an interrupted key rotation: no key_rotation record naming kid " + next_kid +
         " was committed; " + next + " removed (it signed nothing), still signing with kid " + current_kid;
  return std::nullopt;
}

}  // namespace cpd::app
