// Three-way outcome of a data-path operation: done, retry later, or permanent failure (errors are values).
#pragma once

#include <string>
#include <utility>

namespace cpd {

class Status {
 public:
  enum class Kind { kOk, kRetry, kFail };

  static Status ok() { return Status(Kind::kOk, {}); }
  static Status retry(std::string why) { return Status(Kind::kRetry, std::move(why)); }
  static Status fail(std::string why) { return Status(Kind::kFail, std::move(why)); }

  bool is_ok() const { return kind_ == Kind::kOk; }
  Kind kind() const { return kind_; }
  const std::string& message() const { return message_; }

 private:
  Status(Kind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  Kind kind_;
  std::string message_;
};

}  // namespace cpd
