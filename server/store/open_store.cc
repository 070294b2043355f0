#include "server/store/open_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/store/pg_db.h"
#include "server/store/postgres_store.h"
#include "server/store/sqlite_store.h"

namespace layerflow::server {

bool IsPostgresUrl(const std::string& db) {
  return absl::StartsWithIgnoreCase(db, "postgresql://") ||
         absl::StartsWithIgnoreCase(db, "postgres://");
}

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& db) {
  if (IsPostgresUrl(db)) return OpenPostgresStore(db);
  return OpenSqliteStore(db);
}

std::string DescribeStoreLocation(const std::string& db) {
  if (IsPostgresUrl(db)) return pg::DescribeUrl(db);
  return db;
}

}  // namespace layerflow::server
