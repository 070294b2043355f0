// A thin RAII layer over libpq that reports absl::Status (the PostgreSQL
// counterpart of sqlite_db.h). Internal to server/store: nothing outside
// this folder includes libpq-fe.h.
#ifndef LAYERFLOW_SERVER_STORE_PG_DB_H_
#define LAYERFLOW_SERVER_STORE_PG_DB_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct pg_conn;
struct pg_result;

namespace layerflow::server::pg {

// "host:port/dbname (user u)" of a connection URL, never its password: the
// text every error and log line names the database by.
std::string DescribeUrl(const std::string& url);

// One query parameter: text (numbers are sent as their decimal text), bytea
// (sent in binary) or NULL.
class Param {
 public:
  Param(absl::string_view text) : value_(text) {}   // NOLINT: implicit by design
  Param(const std::string& text) : value_(text) {}  // NOLINT
  Param(const char* text) : value_(text) {}         // NOLINT
  Param(int value);                                 // NOLINT
  Param(int64_t value);                             // NOLINT
  Param(double value);                              // NOLINT
  static Param Bytes(absl::string_view bytes);
  static Param Null();

 private:
  friend class Connection;
  Param() = default;
  std::string value_;
  bool null_ = false;
  bool binary_ = false;
};

// The rows of one statement, in text format.
class Result {
 public:
  int rows() const;
  // Rows an INSERT/UPDATE/DELETE changed.
  int64_t affected() const;
  bool IsNull(int row, int column) const;
  std::string Text(int row, int column) const;
  int64_t Int(int row, int column) const;
  double Double(int row, int column) const;
  bool Bool(int row, int column) const;
  // A bytea column (hex output format).
  std::string Bytes(int row, int column) const;

 private:
  friend class Connection;
  struct Clear {
    void operator()(pg_result* r) const;
  };
  std::unique_ptr<pg_result, Clear> res_;
};

class Connection {
 public:
  // UNAVAILABLE naming DescribeUrl(url) when the server cannot be reached.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& url);
  ~Connection();

  // Reconnects a connection known to be broken; UNAVAILABLE when that
  // fails. Called before each top-level operation.
  absl::Status EnsureConnected();
  // One statement with $1.. parameters. Prepared once per session (a
  // named server-side statement, so parsed and planned once) unless the
  // session already holds kMaxPrepared of them or the text is one of the
  // long, generated multi-row INSERTs.
  absl::StatusOr<Result> Exec(absl::string_view sql, const std::vector<Param>& params = {});
  // One statement that writes, as its own transaction (a function that
  // takes the writers' lock itself): reconnects first when the connection
  // is known to be broken, but never sends the statement twice, since a
  // reply lost with the connection may follow a commit. UNAVAILABLE then.
  absl::StatusOr<Result> ExecOnce(absl::string_view sql, const std::vector<Param>& params);
  // Several statements without parameters (schema scripts).
  absl::Status ExecScript(absl::string_view sql);
  const std::string& description() const { return description_; }

 private:
  Connection(pg_conn* conn, std::string description)
      : conn_(conn), description_(std::move(description)) {}
  absl::Status ErrorOf(pg_result* res, absl::string_view sql) const;
  absl::Status SetUpSession();
  // True after a statement failed because the connection is gone while no
  // transaction was open: reconnected, the statement may run again (a
  // server restart or a dropped connection between calls costs nothing).
  bool ReconnectAfterFailure();
  // The name of the session's prepared statement for sql, preparing it;
  // empty when it is not to be prepared.
  absl::StatusOr<std::string> PreparedName(const std::string& sql, int params);
  static constexpr size_t kMaxPrepared = 256;
  static constexpr size_t kMaxPreparedText = 4096;
  friend class Transaction;
  pg_conn* conn_;
  bool in_transaction_ = false;
  // SQL text -> prepared statement name, for this session (cleared when the
  // connection is reset: a new session has none).
  std::unordered_map<std::string, std::string> prepared_;
  std::string description_;
};

// BEGIN ... COMMIT, rolled back unless Commit() succeeded. Begin takes a
// transaction-scoped advisory lock first: writers run one at a time, as
// under SQLite's BEGIN IMMEDIATE, so every read-then-write of the store
// sees the state no other writer can change before it commits (READ
// COMMITTED gives each later statement a snapshot taken after the lock).
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(Connection& db);
  Transaction(Transaction&& other) noexcept : db_(other.db_), done_(other.done_) {
    other.done_ = true;
  }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();
  absl::Status Commit();

 private:
  explicit Transaction(Connection* db) : db_(db) {}
  Connection* db_;
  bool done_ = false;
};

// The advisory lock key (pg_advisory_xact_lock) every write transaction and
// schema migration takes ("lfstore" 1).
inline constexpr int64_t kWriterLockKey = 0x6c66'7374'6f72'6501;

}  // namespace layerflow::server::pg

#endif  // LAYERFLOW_SERVER_STORE_PG_DB_H_
