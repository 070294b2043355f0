// Users and API tokens of the coordinator, and who owns what (sweeps,
// registered workers, leases), kept apart from the results Store so that
// server/store/store.h stays the same for SQLite and PostgreSQL.
//
// A token is "lf_<id>_<secret>": <id> (16 hex digits) names the row,
// <secret> (64 hex digits, 32 bytes from the OS's CSPRNG) proves it. Only
// SHA-256(secret) is stored; the secret is shown once, at creation, and is
// compared in constant time. Revoking keeps the row (it still lists, marked
// revoked) so that an id is never reused.
#ifndef LAYERFLOW_SERVER_AUTH_TOKEN_STORE_H_
#define LAYERFLOW_SERVER_AUTH_TOKEN_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerflow::server::auth {

// user: submits sweeps and reads, cancels and retries its own.
// worker: the worker protocol (register, lease, results, artifacts).
// admin: everything, every user's sweeps included.
enum class Role { kUser, kWorker, kAdmin };

absl::string_view RoleName(Role role);
// INVALID_ARGUMENT naming the accepted values.
absl::StatusOr<Role> ParseRole(absl::string_view name);

struct TokenRecord {
  std::string id;    // 16 hex digits
  std::string user;  // who the token speaks for
  Role role = Role::kUser;
  int64_t created_unix_ms = 0;
  int64_t revoked_unix_ms = 0;  // 0: live
};

struct NewToken {
  TokenRecord record;
  std::string token;  // the whole "lf_<id>_<secret>", never stored
};

// What an owner row is about. Sweeps are owned by the user who submitted
// them; worker ids and lease ids by the worker principal that registered or
// leased them, so that one worker's token cannot act under another's lease.
enum class OwnedKind { kSweep, kWorker, kLease };

class TokenStore {
 public:
  virtual ~TokenStore() = default;

  // INVALID_ARGUMENT for an empty or overlong user name or one with
  // characters outside [A-Za-z0-9._@-].
  virtual absl::StatusOr<NewToken> CreateToken(const std::string& user, Role role) = 0;
  // Every token, live and revoked, oldest first.
  virtual absl::StatusOr<std::vector<TokenRecord>> ListTokens() = 0;
  // NOT_FOUND for an unknown id, FAILED_PRECONDITION when already revoked.
  virtual absl::Status RevokeToken(const std::string& id) = 0;
  // The live token's record. UNAUTHENTICATED (with why: malformed, unknown,
  // wrong secret, revoked) otherwise; the message never echoes the secret.
  virtual absl::StatusOr<TokenRecord> Authenticate(absl::string_view token) = 0;

  // Records `user` as the owner of `id` unless it already has one; returns
  // the owner after the call (the earlier one when there was one).
  virtual absl::StatusOr<std::string> ClaimOwner(OwnedKind kind, const std::string& id,
                                                 const std::string& user) = 0;
  // The owner, or nullopt when nobody claimed `id`.
  virtual absl::StatusOr<std::optional<std::string>> GetOwner(OwnedKind kind,
                                                              const std::string& id) = 0;
  // Forgets an owner row (a finished lease); OK when there was none.
  virtual absl::Status DropOwner(OwnedKind kind, const std::string& id) = 0;
};

// A SQLite file of its own (tables auth_tokens and auth_owners, created on
// open), safe for concurrent use by the coordinator and by an admin's
// `layerflow-coordinator tokens ...` in another process. UNAVAILABLE when
// the file cannot be opened.
absl::StatusOr<std::unique_ptr<TokenStore>> OpenSqliteTokenStore(const std::string& path);

// SHA-256 of `secret`, lowercase hex (what the store keeps).
std::string HashSecret(absl::string_view secret);

}  // namespace layerflow::server::auth

#endif  // LAYERFLOW_SERVER_AUTH_TOKEN_STORE_H_
