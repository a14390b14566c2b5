// The national code tables a case file uses, from the camera vendor's strings: plate types (GA 24.7, from
// the camera's plateType and plateColor) and vehicle types (GA 24.4, from its vehicleType). The table is
// config (`codes`), with a shipped default; a value no entry maps stays unmapped, never guessed.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cpd::config {

struct PlateTypeCode {
  std::string plate_type;   // the camera's plateType, e.g. 92TypeCivil
  std::string plate_color;  // the camera's plateColor; empty: any colour
  std::string code;         // GA 24.7, two digits, e.g. 02
  std::string name;         // its name in the table, UTF-8, e.g. 小型汽车号牌

  bool operator==(const PlateTypeCode&) const = default;
};

struct VehicleTypeCode {
  std::string vehicle_type;  // the camera's vehicleType, e.g. largeBus
  std::string code;          // GA 24.4, a letter and two digits, e.g. K11
  std::string name;          // e.g. 大型普通客车

  bool operator==(const VehicleTypeCode&) const = default;
};

struct CodesSection {
  std::vector<PlateTypeCode> plate_types;
  std::vector<VehicleTypeCode> vehicle_types;

  bool operator==(const CodesSection&) const = default;
};

// The shipped default (docs/records.md, "National codes"): only what the vendor's strings say without doubt.
CodesSection default_codes();

// The entry for the camera's strings: an exact plate_type with the same colour, else one for any colour.
const PlateTypeCode* find_plate_type(const CodesSection& codes, std::string_view plate_type,
                                     std::string_view plate_color);
const VehicleTypeCode* find_vehicle_type(const CodesSection& codes, std::string_view vehicle_type);

}  // namespace cpd::config
