// libpq wrappers: text parameters (never string-spliced SQL), a result owner, connection-loss detection.
#include "central/pg.h"

#include <libpq-fe.h>

#include <cstdlib>

namespace cpd::central {

PgResult::~PgResult() {
  if (result_ != nullptr) {
    PQclear(result_);
  }
}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    if (result_ != nullptr) {
      PQclear(result_);
    }
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}

int PgResult::rows() const {
  return result_ == nullptr ? 0 : PQntuples(result_);
}
bool PgResult::is_null(int row, int col) const {
  return PQgetisnull(result_, row, col) != 0;
}
std::string PgResult::text(int row, int col) const {
  return std::string(PQgetvalue(result_, row, col), static_cast<std::size_t>(PQgetlength(result_, row, col)));
}
long long PgResult::integer(int row, int col) const {
  return is_null(row, col) ? 0 : std::strtoll(PQgetvalue(result_, row, col), nullptr, 10);
}
bool PgResult::boolean(int row, int col) const {
  return !is_null(row, col) && PQgetvalue(result_, row, col)[0] == 't';
}
long long PgResult::affected() const {
  const char* n = PQcmdTuples(result_);
  return n == nullptr || *n == '\0' ? 0 : std::strtoll(n, nullptr, 10);
}

PgConnection::PgConnection(const std::string& conninfo) {
  conn_ = PQconnectdb(conninfo.c_str());
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    std::string why = conn_ == nullptr ? "out of memory" : PQerrorMessage(conn_);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) {
      why.pop_back();
    }
    if (conn_ != nullptr) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    throw PgError("postgres: cannot connect: " + why, "", true);
  }
  // Notices (e.g. "relation already exists, skipping") are not errors; keep them off stderr.
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  // Central's locking rules (the watermark walk, the age-out, a file's advisory lock) read what a lock's
  // holder committed: READ COMMITTED, whatever the server's or role's default.
  try {
    exec("SET default_transaction_isolation TO 'read committed'", "setting the isolation level");
  } catch (...) {
    PQfinish(conn_);
    conn_ = nullptr;
    throw;
  }
}

PgConnection::~PgConnection() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
  }
}

PgResult PgConnection::exec(const std::string& sql, const char* what) {
  return exec(sql, {}, what);
}

namespace {

std::vector<const char*> param_values(const PgParams& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) {
    values.push_back(p ? p->c_str() : nullptr);
  }
  return values;
}

}  // namespace

PgResult PgConnection::exec(const std::string& sql, const PgParams& params, const char* what) {
  // Several statements (a schema step) need the simple query protocol; parameters need the extended one.
  if (params.empty()) {
    return check(PQexec(conn_, sql.c_str()), what);
  }
  const std::vector<const char*> values = param_values(params);
  const int n = static_cast<int>(values.size());
  return check(PQexecParams(conn_, sql.c_str(), n, nullptr, values.data(), nullptr, nullptr, 0), what);
}

PgResult PgConnection::exec_prepared(const std::string& sql, const PgParams& params, const char* what) {
  const std::vector<const char*> values = param_values(params);
  const int n = static_cast<int>(values.size());
  auto found = prepared_.find(sql);
  if (found == prepared_.end() && prepared_.size() < kMaxPrepared) {
    // A prepared statement belongs to the session, not the transaction: a rollback keeps it.
    std::string name = "cpd_" + std::to_string(prepared_.size() + 1);
    check(PQprepare(conn_, name.c_str(), sql.c_str(), n, nullptr), what);
    found = prepared_.emplace(sql, std::move(name)).first;
  }
  if (found == prepared_.end()) {
    return check(PQexecParams(conn_, sql.c_str(), n, nullptr, values.data(), nullptr, nullptr, 0), what);
  }
  return check(PQexecPrepared(conn_, found->second.c_str(), n, values.data(), nullptr, nullptr, 0), what);
}

PgResult PgConnection::check(PGresult* raw, const char* what) {
  const ExecStatusType status = raw == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(raw);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    return PgResult(raw);
  }
  std::string sqlstate;
  std::string message = PQerrorMessage(conn_);
  if (raw != nullptr) {
    if (const char* state = PQresultErrorField(raw, PG_DIAG_SQLSTATE); state != nullptr) {
      sqlstate = state;
    }
    if (const char* m = PQresultErrorMessage(raw); m != nullptr && *m != '\0') {
      message = m;
    }
    PQclear(raw);
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.pop_back();
  }
  const bool lost = PQstatus(conn_) != CONNECTION_OK || sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01";
  throw PgError(std::string("postgres: ") + what + ": " + message, sqlstate, lost);
}

PgTransaction::~PgTransaction() {
  if (!done_) {
    try {
      conn_.exec("ROLLBACK", "rolling back");
    } catch (const PgError&) {
      // The connection is gone: the server rolled back already.
    }
  }
}

void PgTransaction::commit() {
  conn_.exec("COMMIT", "committing");
  done_ = true;
}

}  // namespace cpd::central
