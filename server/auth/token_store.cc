#include "server/auth/token_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"

namespace layerflow::server::auth {
namespace {

constexpr size_t kIdBytes = 8;       // 16 hex digits
constexpr size_t kSecretBytes = 32;  // 64 hex digits
constexpr size_t kMaxUserBytes = 64;
constexpr absl::string_view kPrefix = "lf_";

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS auth_tokens (
  id TEXT PRIMARY KEY,
  user TEXT NOT NULL,
  role TEXT NOT NULL,
  secret_sha256 TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  revoked_unix_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS auth_owners (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  user TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);
)sql";

absl::string_view KindName(OwnedKind kind) {
  switch (kind) {
    case OwnedKind::kSweep:
      return "sweep";
    case OwnedKind::kWorker:
      return "worker";
    case OwnedKind::kLease:
      return "lease";
  }
  return "?";
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    return absl::InternalError("RAND_bytes failed: no random token could be made");
  }
  return absl::BytesToHexString(raw);
}

bool IsLowerHex(absl::string_view s, size_t length) {
  if (s.size() != length) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::Status CheckUser(const std::string& user) {
  if (user.empty()) return absl::InvalidArgumentError("user: required");
  if (user.size() > kMaxUserBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("user: ", user.size(), " bytes, at most ", kMaxUserBytes));
  }
  for (char c : user) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '@' &&
        c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("user: '", user, "' has a character outside [A-Za-z0-9._@-]"));
    }
  }
  return absl::OkStatus();
}

// One prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  absl::Status prepared() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("auth store: ", sqlite3_errmsg(db_)));
  }
  Statement& Bind(int i, absl::string_view text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // True for a row, false when done.
  absl::StatusOr<bool> Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    if (rc == SQLITE_BUSY) {
      return absl::UnavailableError(absl::StrCat("auth store busy: ", sqlite3_errmsg(db_)));
    }
    return absl::InternalError(absl::StrCat("auth store: ", sqlite3_errmsg(db_)));
  }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

absl::StatusOr<TokenRecord> ReadRecord(const Statement& s) {
  TokenRecord r;
  r.id = s.Text(0);
  r.user = s.Text(1);
  LF_ASSIGN_OR_RETURN(r.role, ParseRole(s.Text(2)));
  r.created_unix_ms = s.Int(4);
  r.revoked_unix_ms = s.Int(5);
  return r;
}

class SqliteTokenStore final : public TokenStore {
 public:
  explicit SqliteTokenStore(sqlite3* db) : db_(db) {}
  ~SqliteTokenStore() override { sqlite3_close(db_); }

  absl::StatusOr<NewToken> CreateToken(const std::string& user, Role role) override {
    LF_RETURN_IF_ERROR(CheckUser(user));
    LF_ASSIGN_OR_RETURN(std::string id, RandomHex(kIdBytes));
    LF_ASSIGN_OR_RETURN(std::string secret, RandomHex(kSecretBytes));
    NewToken out;
    out.record.id = id;
    out.record.user = user;
    out.record.role = role;
    out.record.created_unix_ms = absl::ToUnixMillis(absl::Now());
    out.token = absl::StrCat(kPrefix, id, "_", secret);
    absl::MutexLock lock(&mu_);
    Statement s(db_,
                "INSERT INTO auth_tokens (id, user, role, secret_sha256, created_unix_ms) "
                "VALUES (?, ?, ?, ?, ?)");
    LF_RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id)
        .Bind(2, user)
        .Bind(3, RoleName(role))
        .Bind(4, HashSecret(secret))
        .Bind(5, out.record.created_unix_ms);
    LF_RETURN_IF_ERROR(s.Step().status());
    return out;
  }

  absl::StatusOr<std::vector<TokenRecord>> ListTokens() override {
    absl::MutexLock lock(&mu_);
    Statement s(db_,
                "SELECT id, user, role, secret_sha256, created_unix_ms, revoked_unix_ms "
                "FROM auth_tokens ORDER BY created_unix_ms, id");
    LF_RETURN_IF_ERROR(s.prepared());
    std::vector<TokenRecord> out;
    while (true) {
      LF_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      LF_ASSIGN_OR_RETURN(TokenRecord r, ReadRecord(s));
      out.push_back(std::move(r));
    }
    return out;
  }

  absl::Status RevokeToken(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    Statement q(db_, "SELECT revoked_unix_ms FROM auth_tokens WHERE id = ?");
    LF_RETURN_IF_ERROR(q.prepared());
    q.Bind(1, id);
    LF_ASSIGN_OR_RETURN(bool found, q.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("token ", id, ": no such token"));
    if (q.Int(0) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("token ", id, ": already revoked"));
    }
    Statement s(db_, "UPDATE auth_tokens SET revoked_unix_ms = ? WHERE id = ?");
    LF_RETURN_IF_ERROR(s.prepared());
    s.Bind(1, absl::ToUnixMillis(absl::Now())).Bind(2, id);
    return s.Step().status();
  }

  absl::StatusOr<TokenRecord> Authenticate(absl::string_view token) override {
    // lf_<16 hex>_<64 hex>
    if (!absl::ConsumePrefix(&token, kPrefix) ||
        token.size() != 2 * kIdBytes + 1 + 2 * kSecretBytes || token[2 * kIdBytes] != '_') {
      return absl::UnauthenticatedError(
          "malformed token: expected lf_<16 hex digits>_<64 hex digits>");
    }
    const absl::string_view id = token.substr(0, 2 * kIdBytes);
    const absl::string_view secret = token.substr(2 * kIdBytes + 1);
    if (!IsLowerHex(id, 2 * kIdBytes) || !IsLowerHex(secret, 2 * kSecretBytes)) {
      return absl::UnauthenticatedError(
          "malformed token: expected lf_<16 hex digits>_<64 hex digits>");
    }
    absl::MutexLock lock(&mu_);
    Statement s(db_,
                "SELECT id, user, role, secret_sha256, created_unix_ms, revoked_unix_ms "
                "FROM auth_tokens WHERE id = ?");
    LF_RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id);
    LF_ASSIGN_OR_RETURN(bool found, s.Step());
    if (!found) return absl::UnauthenticatedError(absl::StrCat("unknown token ", id));
    const std::string want = s.Text(3);
    const std::string got = HashSecret(secret);
    // Constant time: how much of a guessed secret matched must not show in
    // the reply's timing.
    if (want.size() != got.size() || CRYPTO_memcmp(want.data(), got.data(), got.size()) != 0) {
      return absl::UnauthenticatedError(absl::StrCat("token ", id, ": wrong secret"));
    }
    LF_ASSIGN_OR_RETURN(TokenRecord r, ReadRecord(s));
    if (r.revoked_unix_ms != 0) {
      return absl::UnauthenticatedError(absl::StrCat("token ", id, " was revoked"));
    }
    return r;
  }

  absl::StatusOr<std::string> ClaimOwner(OwnedKind kind, const std::string& id,
                                         const std::string& user) override {
    absl::MutexLock lock(&mu_);
    Statement s(db_, "INSERT OR IGNORE INTO auth_owners (kind, id, user) VALUES (?, ?, ?)");
    LF_RETURN_IF_ERROR(s.prepared());
    s.Bind(1, KindName(kind)).Bind(2, id).Bind(3, user);
    LF_RETURN_IF_ERROR(s.Step().status());
    LF_ASSIGN_OR_RETURN(std::optional<std::string> owner, GetOwnerLocked(kind, id));
    if (!owner.has_value()) {
      return absl::InternalError(absl::StrCat(KindName(kind), " ", id, ": owner not kept"));
    }
    return *owner;
  }

  absl::StatusOr<std::optional<std::string>> GetOwner(OwnedKind kind,
                                                      const std::string& id) override {
    absl::MutexLock lock(&mu_);
    return GetOwnerLocked(kind, id);
  }

  absl::Status DropOwner(OwnedKind kind, const std::string& id) override {
    absl::MutexLock lock(&mu_);
    Statement s(db_, "DELETE FROM auth_owners WHERE kind = ? AND id = ?");
    LF_RETURN_IF_ERROR(s.prepared());
    s.Bind(1, KindName(kind)).Bind(2, id);
    return s.Step().status();
  }

 private:
  absl::StatusOr<std::optional<std::string>> GetOwnerLocked(OwnedKind kind, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Statement s(db_, "SELECT user FROM auth_owners WHERE kind = ? AND id = ?");
    LF_RETURN_IF_ERROR(s.prepared());
    s.Bind(1, KindName(kind)).Bind(2, id);
    LF_ASSIGN_OR_RETURN(bool found, s.Step());
    if (!found) return std::optional<std::string>();
    return std::optional<std::string>(s.Text(0));
  }

  absl::Mutex mu_;
  sqlite3* const db_;
};

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kUser:
      return "user";
    case Role::kWorker:
      return "worker";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  if (name == "user") return Role::kUser;
  if (name == "worker") return Role::kWorker;
  if (name == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(
      absl::StrCat("role: '", name, "' is not one of user, worker, admin"));
}

std::string HashSecret(absl::string_view secret) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

absl::StatusOr<std::unique_ptr<TokenStore>> OpenSqliteTokenStore(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("auth database path: required");
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db == nullptr ? sqlite3_errstr(rc) : sqlite3_errmsg(db);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("auth database '", path, "': ", why));
  }
  // The coordinator and an admin's `tokens` command may use the file at
  // once: wait for the other's lock rather than fail.
  sqlite3_busy_timeout(db, 5000);
  char* error = nullptr;
  if (sqlite3_exec(db, "PRAGMA journal_mode=WAL;", nullptr, nullptr, &error) != SQLITE_OK ||
      sqlite3_exec(db, kSchema, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string why = error == nullptr ? sqlite3_errmsg(db) : error;
    sqlite3_free(error);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("auth database '", path, "': ", why));
  }
  return std::unique_ptr<TokenStore>(std::make_unique<SqliteTokenStore>(db));
}

}  // namespace layerflow::server::auth
