// The SQLite schema as an ordered list of migrations. PRAGMA user_version
// holds the number of migrations applied. Migrations are append-only: once
// released, a migration's SQL never changes (older databases in the field
// ran exactly that text); schema changes go into a new migration.
#ifndef LAYERFLOW_SERVER_STORE_SQLITE_SCHEMA_H_
#define LAYERFLOW_SERVER_STORE_SQLITE_SCHEMA_H_

#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "server/store/sqlite_db.h"

namespace layerflow::server::sqlite {

struct Migration {
  int version;  // user_version after it is applied
  absl::string_view description;
  absl::string_view sql;
};

const std::vector<Migration>& Migrations();
int LatestSchemaVersion();

// Brings the database to LatestSchemaVersion(), one transaction per
// migration. Safe against another connection migrating at the same time.
// FAILED_PRECONDITION for a database newer than this build.
absl::Status Migrate(Db& db);

}  // namespace layerflow::server::sqlite

#endif  // LAYERFLOW_SERVER_STORE_SQLITE_SCHEMA_H_
