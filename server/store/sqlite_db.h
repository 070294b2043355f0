// A thin RAII layer over the SQLite C API that reports absl::Status.
// Internal to server/store: nothing outside this folder includes sqlite3.h.
#ifndef LAYERFLOW_SERVER_STORE_SQLITE_DB_H_
#define LAYERFLOW_SERVER_STORE_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace layerflow::server::sqlite {

// Maps an SQLite result code to the most specific absl code.
absl::Status FromSqlite(int rc, sqlite3* db, absl::string_view context);

class Db;

// A prepared statement. One from Db::Prepare goes back to its Db's cache
// when destroyed (reset, bindings cleared), so that a statement the store
// runs on every call is parsed and planned once per connection.
class Statement {
 public:
  Statement(Statement&&) noexcept;
  Statement& operator=(Statement&&) noexcept;
  ~Statement();

  // Parameters are 1-based as in SQLite.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, int value) { return Bind(index, int64_t{value}); }
  Statement& Bind(int index, double value);
  Statement& Bind(int index, absl::string_view text);
  Statement& Bind(int index, const char* text) { return Bind(index, absl::string_view(text)); }
  Statement& BindBlob(int index, absl::string_view bytes);

  // True when a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Steps to completion, ignoring rows.
  absl::Status Run();

  // Columns are 0-based as in SQLite.
  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  std::string Blob(int column) const;

 private:
  friend class Db;
  Statement(sqlite3* db, sqlite3_stmt* stmt, Db* owner) : db_(db), stmt_(stmt), owner_(owner) {}
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  Db* owner_ = nullptr;       // the cache it returns to; null: finalized
  absl::Status bind_status_;  // first bind error, reported by Step()
};

class Db {
 public:
  // Opens (creating if missing) with foreign keys on and the busy timeout
  // set; WAL mode is switched on by the caller (it is a database property).
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path, int busy_timeout_ms);
  ~Db();

  // A statement from the cache when this SQL text was prepared before and
  // is not in use; prepared (and kept once done) otherwise. Every
  // Statement must be destroyed before its Db.
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // Runs one or more statements without parameters.
  absl::Status Exec(absl::string_view sql);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  int64_t Changes() const;
  sqlite3* raw() { return db_; }

 private:
  friend class Statement;
  explicit Db(sqlite3* db) : db_(db) {}
  // Takes back a statement that is done: reset and cached, or finalized
  // once the cache holds kMaxCached texts.
  void Return(sqlite3_stmt* stmt);
  static constexpr size_t kMaxCached = 256;
  sqlite3* db_;
  // Idle prepared statements by SQL text.
  std::unordered_map<std::string, std::vector<sqlite3_stmt*>> cache_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back unless Commit() succeeded.
// IMMEDIATE takes the write lock up front: a deferred transaction that reads
// and then writes can fail with SQLITE_BUSY without waiting when another
// connection wrote in between, which the busy timeout cannot help with.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(Db& db);
  Transaction(Transaction&& other) noexcept : db_(other.db_), done_(other.done_) {
    other.done_ = true;
  }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();
  absl::Status Commit();

 private:
  explicit Transaction(Db* db) : db_(db) {}
  Db* db_;
  bool done_ = false;
};

}  // namespace layerflow::server::sqlite

#endif  // LAYERFLOW_SERVER_STORE_SQLITE_DB_H_
