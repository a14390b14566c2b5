// A thin RAII layer over libpq: one connection, text-format parameters, results that clear themselves,
// errors as PgError naming the statement's purpose and PostgreSQL's message.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct pg_conn;
struct pg_result;

namespace cpd::central {

class PgError : public std::runtime_error {
 public:
  PgError(const std::string& what, std::string sqlstate, bool connection_lost)
      : std::runtime_error(what), sqlstate_(std::move(sqlstate)), connection_lost_(connection_lost) {}
  const std::string& sqlstate() const { return sqlstate_; }
  // The server is gone (restart, network): reconnect and retry the whole transaction.
  bool connection_lost() const { return connection_lost_; }
  // PostgreSQL refused the data itself (SQLSTATE classes 22 data exception, 23 integrity constraint, 54
  // program limit, and 42 but for 42501 insufficient privilege): the same statement fails again with the same
  // data. Anything else (a lost link, a deadlock, a full disk, a read-only server after a failover, a
  // statement timeout, an operator's cancel) is the server's state, not the message's: retry it later.
  bool content_refused() const {
    const std::string cls = sqlstate_.substr(0, 2);
    // And libpq's own refusal, without a SQLSTATE, of a statement with more parameters than the wire protocol
    // carries, which the same batch would meet again (its other errors without one, e.g. out of memory, are
    // the moment's: retried).
    const bool too_many_parameters =
        sqlstate_.empty() && std::string_view(what()).find("number of parameters") != std::string_view::npos;
    return !connection_lost_ && (too_many_parameters || cls == "22" || cls == "23" || cls == "54" ||
                                 (cls == "42" && sqlstate_ != "42501"));
  }

 private:
  std::string sqlstate_;
  bool connection_lost_;
};

class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* result) : result_(result) {}
  ~PgResult();
  PgResult(PgResult&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;

  int rows() const;
  bool is_null(int row, int col) const;
  std::string text(int row, int col) const;
  long long integer(int row, int col) const;  // 0 for NULL
  bool boolean(int row, int col) const;       // 't'
  long long affected() const;                 // rows an INSERT/UPDATE/DELETE touched

 private:
  pg_result* result_ = nullptr;
};

using PgParams = std::vector<std::optional<std::string>>;

class PgConnection {
 public:
  explicit PgConnection(const std::string& conninfo);  // throws PgError
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // `what` names the statement in errors ("inserting a record").
  PgResult exec(const std::string& sql, const char* what);
  PgResult exec(const std::string& sql, const PgParams& params, const char* what);
  // For the statements of the hot path (one text, run for every batch): prepared on its first use on this
  // connection and run prepared after that, so PostgreSQL parses and plans it once per connection, not once
  // per call. At most kMaxPrepared texts are kept; others run unprepared. Only for texts from a small fixed
  // set (never one with values spliced in).
  PgResult exec_prepared(const std::string& sql, const PgParams& params, const char* what);

  static constexpr std::size_t kMaxPrepared = 256;

 private:
  PgResult check(pg_result* raw, const char* what);

  pg_conn* conn_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
};

// BEGIN at construction, ROLLBACK at destruction unless commit() ran.
class PgTransaction {
 public:
  explicit PgTransaction(PgConnection& conn) : conn_(conn) { conn_.exec("BEGIN", "starting a transaction"); }
  ~PgTransaction();
  PgTransaction(const PgTransaction&) = delete;
  PgTransaction& operator=(const PgTransaction&) = delete;
  void commit();

 private:
  PgConnection& conn_;
  bool done_ = false;
};

}  // namespace cpd::central
