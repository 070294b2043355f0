// The PostgreSQL schema as an ordered list of migrations, like
// sqlite_schema.h: the table layerflow_schema holds the number of
// migrations applied. Append-only: a released migration's SQL never changes.
// Version 1 is the SQLite schema at its version 8 in PostgreSQL's types.
#ifndef LAYERFLOW_SERVER_STORE_POSTGRES_SCHEMA_H_
#define LAYERFLOW_SERVER_STORE_POSTGRES_SCHEMA_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/store/pg_db.h"

namespace layerflow::server::pg {

struct Migration {
  int version;  // layerflow_schema.version after it is applied
  absl::string_view description;
  absl::string_view sql;
};

const std::vector<Migration>& Migrations();
int LatestSchemaVersion();

// Brings the database to LatestSchemaVersion() in one transaction (DDL is
// transactional in PostgreSQL) under the writers' advisory lock, so that two
// coordinators opening one fresh database never both migrate it.
// FAILED_PRECONDITION for a database newer than this build.
absl::Status Migrate(Connection& db);

}  // namespace layerflow::server::pg

#endif  // LAYERFLOW_SERVER_STORE_POSTGRES_SCHEMA_H_
