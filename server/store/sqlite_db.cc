#include "server/store/sqlite_db.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace layerflow::server::sqlite {

absl::Status FromSqlite(int rc, sqlite3* db, absl::string_view context) {
  const std::string message =
      absl::StrCat(context, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
      return absl::OkStatus();
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
        return absl::AlreadyExistsError(message);
      }
      return absl::FailedPreconditionError(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
      return absl::UnavailableError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    default:
      return absl::InternalError(message);
  }
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      owner_(other.owner_),
      bind_status_(std::move(other.bind_status_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_ != nullptr) {
      if (owner_ != nullptr) {
        owner_->Return(stmt_);
      } else {
        sqlite3_finalize(stmt_);
      }
    }
    db_ = other.db_;
    stmt_ = std::exchange(other.stmt_, nullptr);
    owner_ = other.owner_;
    bind_status_ = std::move(other.bind_status_);
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_ == nullptr) return;
  if (owner_ != nullptr) {
    owner_->Return(stmt_);
  } else {
    sqlite3_finalize(stmt_);
  }
}

namespace {
void Keep(absl::Status& first, int rc, sqlite3* db) {
  if (first.ok() && rc != SQLITE_OK) first = FromSqlite(rc, db, "bind");
}
}  // namespace

Statement& Statement::Bind(int index, int64_t value) {
  Keep(bind_status_, sqlite3_bind_int64(stmt_, index, value), db_);
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  Keep(bind_status_, sqlite3_bind_double(stmt_, index, value), db_);
  return *this;
}

Statement& Statement::Bind(int index, absl::string_view text) {
  Keep(
      bind_status_,
      sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT),
      db_);
  return *this;
}

Statement& Statement::BindBlob(int index, absl::string_view bytes) {
  // A zero-length blob with a null pointer would bind NULL; use "" instead.
  Keep(bind_status_,
       sqlite3_bind_blob(stmt_, index, bytes.empty() ? "" : bytes.data(),
                         static_cast<int>(bytes.size()), SQLITE_TRANSIENT),
       db_);
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return FromSqlite(rc, db_, sqlite3_sql(stmt_));
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

int64_t Statement::Int(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::Double(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::string Statement::Blob(int column) const {
  const void* blob = sqlite3_column_blob(stmt_, column);
  if (blob == nullptr) return "";
  return std::string(static_cast<const char*>(blob),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path, int busy_timeout_ms) {
  // SQLite's own message for a missing folder is "unable to open database
  // file"; name the folder instead (a mistyped --db is the usual cause).
  if (const size_t slash = path.rfind('/');
      slash != std::string::npos && slash > 0 && !absl::StartsWith(path, "file:")) {
    const std::string dir = path.substr(0, slash);
    struct stat info;
    if (::stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
      return absl::NotFoundError(absl::StrCat("cannot open database '", path, "': its folder '",
                                              dir, "' does not exist (create it first)"));
    }
  }
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = FromSqlite(rc, raw, absl::StrCat("cannot open database '", path, "'"));
    sqlite3_close(raw);
    return status;
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, busy_timeout_ms);
  if (absl::Status s = db->Exec("PRAGMA foreign_keys = ON"); !s.ok()) return s;
  return db;
}

Db::~Db() {
  for (auto& [sql, stmts] : cache_) {
    for (sqlite3_stmt* stmt : stmts) sqlite3_finalize(stmt);
  }
  sqlite3_close(db_);
}

absl::StatusOr<Statement> Db::Prepare(absl::string_view sql) {
  if (auto it = cache_.find(std::string(sql)); it != cache_.end() && !it->second.empty()) {
    sqlite3_stmt* stmt = it->second.back();
    it->second.pop_back();
    return Statement(db_, stmt, this);
  }
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return FromSqlite(rc, db_, absl::StrCat("prepare: ", sql));
  }
  return Statement(db_, stmt, this);
}

void Db::Return(sqlite3_stmt* stmt) {
  // sqlite3_sql is the text given to prepare (one statement: the store
  // never prepares a text with a tail), so it is the key Prepare looks up.
  const char* sql = sqlite3_sql(stmt);
  auto it = sql != nullptr ? cache_.find(sql) : cache_.end();
  if (sql == nullptr || (it == cache_.end() && cache_.size() >= kMaxCached)) {
    sqlite3_finalize(stmt);
    return;
  }
  sqlite3_reset(stmt);  // its error, if any, was reported by Step
  sqlite3_clear_bindings(stmt);
  if (it == cache_.end()) it = cache_.emplace(sql, std::vector<sqlite3_stmt*>()).first;
  it->second.push_back(stmt);
}

absl::Status Db::Exec(absl::string_view sql) {
  const std::string text(sql);
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
  return FromSqlite(rc, db_, text.substr(0, 80));
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }

absl::StatusOr<Transaction> Transaction::Begin(Db& db) {
  if (absl::Status s = db.Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (!done_) (void)db_->Exec("ROLLBACK");
}

absl::Status Transaction::Commit() {
  absl::Status s = db_->Exec("COMMIT");
  if (s.ok()) done_ = true;
  return s;
}

}  // namespace layerflow::server::sqlite
