// Byte encodings used by the evidence format: lower-case hex, base64url without padding, base64, SHA-256,
// and UTF-8 checks for device text (records are UTF-8 text; devices do not always send it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cpd {

std::string hex_lower(std::string_view bytes);
// Whether `text` is a SHA-256 as the feed writes it: 64 lower-case hex digits.
bool is_sha256_hex(std::string_view text);
std::string base64url_encode(std::string_view bytes);
// nullopt on any character outside the base64url alphabet, on padding, or an impossible length.
std::optional<std::string> base64url_decode(std::string_view text);
// Standard base64 (RFC 4648 section 4: '+', '/', '=' padding): device bytes carried in a record.
std::string base64_encode(std::string_view bytes);
std::string sha256_raw(std::string_view bytes);  // 32 bytes
std::string sha256_hex(std::string_view bytes);  // 64 lower-case hex digits

// Decodes the UTF-8 sequence at text[i] and moves i past it; -1 (i unchanged) for an ill-formed sequence:
// overlong forms, surrogates, beyond U+10FFFF, a truncated sequence (RFC 3629). i < text.size().
std::int32_t decode_utf8(std::string_view text, std::size_t& i);
bool is_valid_utf8(std::string_view text);

// Device text that is not valid UTF-8 written as UTF-8 without losing a byte: well-formed sequences are
// kept, each byte of an ill-formed one becomes `\xNN` (lower-case hex) and each backslash is doubled, so
// the exact bytes can be read back from it. Meant for text that failed is_valid_utf8 (valid text goes into
// records unchanged).
std::string escape_invalid_utf8(std::string_view bytes);

// Peer-chosen text (a topic level, a kid, a gateway id) quoted in a log line, a refusal or a status:
// printable ASCII kept, every other byte (and the backslash) as \xNN, at most `max` bytes of it, then "...".
std::string printable(std::string_view text, std::size_t max = 80);

}  // namespace cpd
