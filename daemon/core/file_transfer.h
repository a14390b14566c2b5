// Recordings to central (docs/custody.md, "Recordings to central"): the messages of the file transfer,
// built and checked without I/O. Modelled on EMQX's MQTT file transfer: an `init` with the file's metadata,
// segments published at their byte offset each with its own SHA-256 in the topic, a `fin` with the whole
// file's size and SHA-256; central answers with a signed file receipt, or asks for the byte ranges it lacks.
// The file id is the file's SHA-256 (the recording record's `sha256`), so a transfer is content-addressed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/core/ed25519.h"
#include "daemon/core/record_check.h"
#include "daemon/core/time.h"

namespace cpd::filex {

inline constexpr std::string_view kFileReceiptTyp = "file+jws";
inline constexpr std::uint64_t kMinSegmentBytes = 4096;
inline constexpr std::uint64_t kMaxSegmentBytes = 16u << 20;
inline constexpr std::size_t kMaxWantRanges = 1000;     // byte ranges one `want` may ask for
inline constexpr std::size_t kMaxControlBytes = 65536;  // init, abort and want payloads
inline constexpr std::size_t kMaxNameBytes = 255;

using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;  // [lo, hi) byte ranges, ascending

// What a gateway says of a file before its segments (`<prefix>/<gw>/file/<sha256>/init`).
struct FileInit {
  std::string sha256;              // the whole file's SHA-256 = the file id in the topic
  std::uint64_t size = 0;          // bytes (0 allowed)
  std::uint64_t segment_size = 0;  // every segment but the last has this size; offsets are its multiples
  std::string name;                // the file's name as the dock listed it (UTF-8, informative)
  std::uint64_t seq = 0;           // the `recording` record naming the file
  bool operator==(const FileInit&) const = default;
};
// The init's payload. Its `name` is informative_name(init.name): always within what parse_init accepts.
std::string init_json(const FileInit& init);
// A file name as init may carry it: valid UTF-8 sequences kept, NULs and ill-formed bytes dropped, cut at a
// character boundary to kMaxNameBytes (a dock may list names up to 1024 bytes; the record keeps the whole).
std::string informative_name(std::string_view name);
struct InitParse {
  std::optional<FileInit> init;
  std::string reason;
};
// `id` is the file id of the topic; the payload must name the same checksum.
InitParse parse_init(std::string_view payload, std::string_view id);

// Topics under `base` = "<prefix>/<gateway>/".
std::string init_topic(const std::string& base, const std::string& sha256);
std::string segment_topic(const std::string& base, const std::string& sha256, std::uint64_t offset,
                          const std::string& segment_sha256);
std::string fin_topic(const std::string& base, const std::string& sha256, std::uint64_t size);
std::string abort_topic(const std::string& base, const std::string& sha256);

// The part of a topic after "<prefix>/<gateway>/" that starts with "file/".
struct FileTopic {
  enum class Kind { init, segment, fin, abort };
  Kind kind = Kind::init;
  std::string sha256;
  std::uint64_t offset = 0;  // segment
  std::string checksum;      // segment: the segment's SHA-256; fin: the whole file's
  std::uint64_t size = 0;    // fin
};
struct FileTopicParse {
  std::optional<FileTopic> topic;
  std::string reason;
};
FileTopicParse parse_file_topic(std::string_view rest);

// Whether a segment at `offset` of `length` bytes fits a file of `size` in `segment_size` pieces: the offset
// a multiple of segment_size below size, the length segment_size or what remains. "" when it fits.
std::string segment_refusal(std::uint64_t size, std::uint64_t segment_size, std::uint64_t offset,
                            std::uint64_t length);
std::uint64_t segment_count(std::uint64_t size, std::uint64_t segment_size);
// The byte ranges of [0, size) not covered by the segments at `held` offsets (sorted or not), merged, at
// most `max` of them.
Ranges missing_ranges(std::uint64_t size, std::uint64_t segment_size, std::vector<std::uint64_t> held,
                      std::size_t max = kMaxWantRanges);
// The bytes of `ranges` that are not in `minus` (both ascending and not overlapping): what a sender will
// send anyway is not sent twice.
Ranges ranges_minus(const Ranges& ranges, const Ranges& minus);
// The bytes the ranges cover (overlaps counted twice).
std::uint64_t ranges_bytes(const Ranges& ranges);

// Central holds the whole file: `size` bytes hashing to `sha256`, fsync'd, committed in PostgreSQL.
struct FileReceipt {
  std::string central;
  std::string gateway;
  std::string sha256;
  std::uint64_t size = 0;
  UnixMs issued_ms = 0;
  bool operator==(const FileReceipt&) const = default;
};
std::string seal_file_receipt(const Ed25519PrivateKey& central_key, const FileReceipt& receipt);
struct FileReceiptCheck {
  bool ok = false;
  std::string reason;
  std::string kid;
  FileReceipt receipt;
};
FileReceiptCheck check_file_receipt(std::string_view jws, const KeyForKid& central_keys,
                                    const std::string& gateway);

// Central asks for a file's bytes (`<prefix>/<gw>/files/want`): the listed ranges, or the whole file (an
// `init`, every segment and a `fin`) when `ranges` is empty.
struct Want {
  std::string sha256;
  Ranges ranges;
  bool operator==(const Want&) const = default;
};
std::string want_json(const Want& want);
struct WantParse {
  std::optional<Want> want;
  std::string reason;
};
WantParse parse_want(std::string_view payload);

// Central refused a file's init (`<prefix>/<gw>/files/refused`): `later` (too many transfers open now: the
// gateway stops sending it and starts it again after a backoff) or not (over central's size bound, or its
// copy failed the whole-file hash too often: the gateway sends no more of it until it restarts). The reason
// is printable, at most 200 bytes.
struct Refusal {
  std::string sha256;
  std::string reason;
  bool later = false;
  bool operator==(const Refusal&) const = default;
};
std::string refused_json(const Refusal& refusal);
struct RefusalParse {
  std::optional<Refusal> refusal;
  std::string reason;  // why the payload is malformed
};
RefusalParse parse_refused(std::string_view payload);

// What a gateway says when it cannot send a file it was asked for (`.../file/<sha256>/abort`).
std::string abort_json(const std::string& reason);
// The reason of an abort payload (printable, at most 200 bytes), or "" if malformed.
std::string parse_abort(std::string_view payload);

}  // namespace cpd::filex
