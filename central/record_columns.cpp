// Decoded columns of a verified record: tolerant of absent or oddly typed members (those stay NULL).
#include "central/record_columns.h"

#include "daemon/core/encoding.h"

namespace cpd::central {

namespace {

// PostgreSQL text holds no NUL: one is kept visible as the JSON escape (the JWS column has the exact bytes).
std::string without_nul(std::string text) {
  for (std::size_t at = text.find('\0'); at != std::string::npos; at = text.find('\0', at + 6)) {
    text.replace(at, 1, "\\u0000");
  }
  return text;
}

std::optional<std::string> text_of(const nlohmann::json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || !it->is_string()) {
    return std::nullopt;
  }
  return without_nul(it->get<std::string>());
}

std::optional<long long> int_of(const nlohmann::json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || !it->is_number_integer()) {
    return std::nullopt;
  }
  return it->get<long long>();
}

}  // namespace

RecordColumns record_columns(const nlohmann::json& body) {
  RecordColumns c;
  c.type = text_of(body, "type").value_or("");
  if (c.type.size() > kMaxIndexedText) {
    c.type.clear();  // kMaxIndexedText: not a type this feed has; the body holds it
  }
  c.time_ms = int_of(body, "time_ms").value_or(0);
  c.created_ms = int_of(body, "created_ms").value_or(0);
  if (const auto it = body.find("site"); it != body.end() && it->is_object()) {
    c.site = it->dump();
  }
  c.plate = text_of(body, "plate");
  if (c.plate && c.plate->size() > kMaxIndexedText) {
    c.plate.reset();  // kMaxIndexedText: no plate is this long; the body holds what the device sent
  }
  c.plate_color = text_of(body, "plate_color");
  c.lane = int_of(body, "lane");
  c.speed_dkmh = int_of(body, "speed_dkmh");
  c.limit_kmh = int_of(body, "limit_kmh");
  if (const auto it = body.find("enforceable"); it != body.end() && it->is_boolean()) {
    c.enforceable = it->get<bool>();
  }
  if (const auto it = body.find("reasons"); it != body.end() && it->is_array()) {
    c.reasons = it->dump();
  }
  if (const auto it = body.find("pictures"); it != body.end() && it->is_array()) {
    for (const auto& picture : *it) {
      if (picture.is_object()) {
        const auto sha = picture.find("sha256");
        if (sha != picture.end() && sha->is_string() && is_sha256_hex(sha->get_ref<const std::string&>())) {
          c.pictures.push_back(sha->get<std::string>());
        }
      }
    }
  }
  return c;
}

}  // namespace cpd::central
