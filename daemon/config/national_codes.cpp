// The plate-type (GA 24.7) and vehicle-type (GA 24.4) tables: the shipped default and the lookups the
// correlator uses (pure; the config section is read in config.cpp).
#include "daemon/config/national_codes.h"

namespace cpd::config {

CodesSection default_codes() {
  CodesSection d;
  d.plate_types = {
      {"92TypeCivil", "blue", "02", "小型汽车号牌"},
      {"92TypeCivil", "yellow", "01", "大型汽车号牌"},
      {"yellow1Line", "yellow", "01", "大型汽车号牌"},
      {"newEnergy", "green", "52", "小型新能源汽车号牌"},
      {"embassy", "black", "03", "使馆汽车号牌"},
      {"consulate", "black", "04", "领馆汽车号牌"},
      {"trailer", "yellow", "15", "挂车号牌"},
      {"coach", "yellow", "16", "教练汽车号牌"},
      {"yellowMotorcycle", "yellow", "07", "普通摩托车号牌"},
      {"arm", "white", "23", "警用汽车号牌"},
      {"oneLineArm", "white", "23", "警用汽车号牌"},
      {"twoLineArm", "white", "23", "警用汽车号牌"},
  };
  d.vehicle_types = {
      {"largeBus", "K11", "大型普通客车"},   {"mediumBus", "K21", "中型普通客车"},
      {"SUVMPV", "K31", "小型普通客车"},     {"smallCar", "K33", "轿车"},
      {"heavyTruck", "H11", "重型普通货车"},
  };
  return d;
}

const PlateTypeCode* find_plate_type(const CodesSection& codes, std::string_view plate_type,
                                     std::string_view plate_color) {
  const PlateTypeCode* any_colour = nullptr;
  for (const auto& c : codes.plate_types) {
    if (c.plate_type != plate_type) {
      continue;
    }
    if (c.plate_color == plate_color) {
      return &c;
    }
    if (c.plate_color.empty()) {
      any_colour = &c;
    }
  }
  return any_colour;
}

const VehicleTypeCode* find_vehicle_type(const CodesSection& codes, std::string_view vehicle_type) {
  for (const auto& c : codes.vehicle_types) {
    if (c.vehicle_type == vehicle_type) {
      return &c;
    }
  }
  return nullptr;
}

}  // namespace cpd::config
