#include "server/store/pg_db.h"

#include <libpq-fe.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace layerflow::server::pg {
namespace {

// The most specific absl code for an SQLSTATE (PostgreSQL appendix A).
absl::StatusCode CodeOf(absl::string_view sqlstate) {
  if (sqlstate == "23505") return absl::StatusCode::kAlreadyExists;  // unique_violation
  if (absl::StartsWith(sqlstate, "23")) return absl::StatusCode::kFailedPrecondition;
  if (absl::StartsWith(sqlstate, "22")) return absl::StatusCode::kInvalidArgument;
  // Serialization failure, deadlock: the caller may retry.
  if (sqlstate == "40001" || sqlstate == "40P01") return absl::StatusCode::kAborted;
  // Connection exceptions, insufficient resources, operator intervention
  // (a shutting-down server), system errors.
  if (absl::StartsWith(sqlstate, "08") || absl::StartsWith(sqlstate, "53") ||
      absl::StartsWith(sqlstate, "57") || absl::StartsWith(sqlstate, "58")) {
    return absl::StatusCode::kUnavailable;
  }
  return absl::StatusCode::kInternal;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string DescribeUrl(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return "PostgreSQL (unparsable URL)";
  }
  std::string host, port, dbname, user;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const absl::string_view key = o->keyword;
    if (key == "host" || (key == "hostaddr" && host.empty())) host = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
    if (key == "user") user = o->val;
  }
  PQconninfoFree(options);
  // libpq's defaults, so that the message says where it really went.
  if (host.empty()) host = "localhost";
  if (port.empty()) port = "5432";
  std::string out = absl::StrCat("PostgreSQL at ", host, ":", port);
  if (!dbname.empty()) absl::StrAppend(&out, "/", dbname);
  if (!user.empty()) absl::StrAppend(&out, " (user ", user, ")");
  return out;
}

Param::Param(int value) : value_(absl::StrCat(value)) {}
Param::Param(int64_t value) : value_(absl::StrCat(value)) {}
// %.17g round-trips every double.
Param::Param(double value) : value_(absl::StrFormat("%.17g", value)) {}

Param Param::Bytes(absl::string_view bytes) {
  Param p;
  p.value_ = std::string(bytes);
  p.binary_ = true;
  return p;
}

Param Param::Null() {
  Param p;
  p.null_ = true;
  return p;
}

void Result::Clear::operator()(pg_result* r) const { PQclear(r); }

int Result::rows() const { return PQntuples(res_.get()); }

int64_t Result::affected() const {
  int64_t n = 0;
  return absl::SimpleAtoi(PQcmdTuples(res_.get()), &n) ? n : 0;
}

bool Result::IsNull(int row, int column) const { return PQgetisnull(res_.get(), row, column) != 0; }

std::string Result::Text(int row, int column) const {
  return std::string(PQgetvalue(res_.get(), row, column),
                     static_cast<size_t>(PQgetlength(res_.get(), row, column)));
}

int64_t Result::Int(int row, int column) const {
  int64_t v = 0;
  // NUMERIC (a SUM of bigint) prints as an integer too.
  return absl::SimpleAtoi(PQgetvalue(res_.get(), row, column), &v) ? v : 0;
}

double Result::Double(int row, int column) const {
  double v = 0;
  return absl::SimpleAtod(PQgetvalue(res_.get(), row, column), &v) ? v : 0;
}

bool Result::Bool(int row, int column) const {
  return PQgetvalue(res_.get(), row, column)[0] == 't';
}

std::string Result::Bytes(int row, int column) const {
  absl::string_view text(PQgetvalue(res_.get(), row, column),
                         static_cast<size_t>(PQgetlength(res_.get(), row, column)));
  // bytea_output = hex (set on connect): "\x" then two digits a byte.
  if (!absl::ConsumePrefix(&text, "\\x")) return std::string(text);
  std::string out;
  out.reserve(text.size() / 2);
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    out.push_back(static_cast<char>(HexDigit(text[i]) << 4 | HexDigit(text[i + 1])));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& url) {
  std::string description = DescribeUrl(url);
  pg_conn* conn = PQconnectdb(url.c_str());
  if (conn == nullptr) return absl::ResourceExhaustedError("libpq: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    // libpq's message names host and port but never the password.
    std::string message(absl::StripAsciiWhitespace(PQerrorMessage(conn)));
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", description, ": ", message));
  }
  std::unique_ptr<Connection> db(new Connection(conn, std::move(description)));
  if (absl::Status s = db->SetUpSession(); !s.ok()) return s;
  return db;
}

// Fixed session settings the reading code relies on: hex bytea, every
// float digit, UTC, and no notices on stderr.
absl::Status Connection::SetUpSession() {
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
  return ExecScript(
      "SET bytea_output = 'hex'; SET extra_float_digits = 3; SET TIME ZONE 'UTC'; "
      "SET client_min_messages = warning");
}

bool Connection::ReconnectAfterFailure() {
  if (in_transaction_ || PQstatus(conn_) == CONNECTION_OK) return false;
  prepared_.clear();
  PQreset(conn_);
  return PQstatus(conn_) == CONNECTION_OK && SetUpSession().ok();
}

Connection::~Connection() { PQfinish(conn_); }

absl::Status Connection::EnsureConnected() {
  if (PQstatus(conn_) == CONNECTION_OK) return absl::OkStatus();
  in_transaction_ = false;  // the server rolled it back with the connection
  prepared_.clear();
  PQreset(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat("lost the connection to ", description_, ": ",
                                               absl::StripAsciiWhitespace(PQerrorMessage(conn_))));
  }
  return SetUpSession();
}

absl::Status Connection::ErrorOf(pg_result* res, absl::string_view sql) const {
  const char* sqlstate = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const std::string message(absl::StripAsciiWhitespace(res != nullptr ? PQresultErrorMessage(res)
                                                                      : PQerrorMessage(conn_)));
  const std::string context(sql.substr(0, 80));
  if (sqlstate == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    // No SQLSTATE: the connection itself failed.
    return absl::UnavailableError(absl::StrCat(description_, ": ", message, " (", context, ")"));
  }
  return absl::Status(CodeOf(sqlstate), absl::StrCat(message, " (", context, ")"));
}

absl::StatusOr<Result> Connection::Exec(absl::string_view sql, const std::vector<Param>& params) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  for (const Param& p : params) {
    values.push_back(p.null_ ? nullptr : p.value_.data());
    lengths.push_back(static_cast<int>(p.value_.size()));
    formats.push_back(p.binary_ ? 1 : 0);
  }
  const std::string text(sql);
  for (int attempt = 0;; ++attempt) {
    Result result;
    absl::StatusOr<std::string> name = PreparedName(text, static_cast<int>(params.size()));
    if (!name.ok()) {
      if (attempt == 0 && ReconnectAfterFailure()) continue;
      return name.status();
    }
    if (name->empty()) {
      result.res_.reset(PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), nullptr,
                                     values.data(), lengths.data(), formats.data(),
                                     /*resultFormat=*/0));
    } else {
      result.res_.reset(PQexecPrepared(conn_, name->c_str(), static_cast<int>(params.size()),
                                       values.data(), lengths.data(), formats.data(),
                                       /*resultFormat=*/0));
    }
    const ExecStatusType status =
        result.res_ ? PQresultStatus(result.res_.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
    if (attempt == 0 && ReconnectAfterFailure()) continue;
    return ErrorOf(result.res_.get(), sql);
  }
}

absl::StatusOr<Result> Connection::ExecOnce(absl::string_view sql,
                                            const std::vector<Param>& params) {
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  // As inside a transaction: Exec does not reconnect and resend.
  in_transaction_ = true;
  absl::StatusOr<Result> result = Exec(sql, params);
  in_transaction_ = false;
  return result;
}

absl::StatusOr<std::string> Connection::PreparedName(const std::string& sql, int params) {
  if (auto it = prepared_.find(sql); it != prepared_.end()) return it->second;
  if (prepared_.size() >= kMaxPrepared || sql.size() > kMaxPreparedText) return std::string();
  std::string name = absl::StrCat("lf_", prepared_.size());
  // Parameter types come from the text's casts ($1::bigint).
  std::unique_ptr<pg_result, Result::Clear> res(
      PQprepare(conn_, name.c_str(), sql.c_str(), params, nullptr));
  if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) return ErrorOf(res.get(), sql);
  prepared_.emplace(sql, name);
  return name;
}

absl::Status Connection::ExecScript(absl::string_view sql) {
  const std::string text(sql);
  for (int attempt = 0;; ++attempt) {
    // PQexec returns the last statement's result; an error stops the script.
    std::unique_ptr<pg_result, Result::Clear> res(PQexec(conn_, text.c_str()));
    const ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return absl::OkStatus();
    if (attempt == 0 && ReconnectAfterFailure()) continue;
    return ErrorOf(res.get(), sql);
  }
}

absl::StatusOr<Transaction> Transaction::Begin(Connection& db) {
  if (absl::Status s = db.EnsureConnected(); !s.ok()) return s;
  // One round trip: BEGIN and the lock as one simple-query script (the
  // key is a constant).
  static const std::string* begin =
      new std::string(absl::StrCat("BEGIN; SELECT pg_advisory_xact_lock(", kWriterLockKey, ")"));
  // Outside a transaction until it succeeded, so that a connection lost
  // between calls is re-opened and the script sent again.
  if (absl::Status s = db.ExecScript(*begin); !s.ok()) {
    // BEGIN may have run and the lock failed: end that transaction (a
    // no-op with a warning when there is none).
    (void)db.ExecScript("ROLLBACK");
    return s;
  }
  db.in_transaction_ = true;
  return Transaction(&db);  // rolls back from here on
}

Transaction::~Transaction() {
  if (done_) return;
  (void)db_->ExecScript("ROLLBACK");
  db_->in_transaction_ = false;
}

absl::Status Transaction::Commit() {
  absl::Status s = db_->ExecScript("COMMIT");
  if (s.ok()) {
    done_ = true;
    db_->in_transaction_ = false;
  }
  return s;
}

}  // namespace layerflow::server::pg
