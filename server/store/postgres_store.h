// The PostgreSQL backend of Store, for a lab's coordinator (--db
// postgresql://...): one libpq connection per object, a versioned schema
// (postgres_schema.h), and writers serialised by a transaction-scoped
// advisory lock (pg_db.h says why), so that its semantics are exactly
// SqliteStore's. Several PostgresStore objects, in one process or many, may
// open one database.
#ifndef LAYERFLOW_SERVER_STORE_POSTGRES_STORE_H_
#define LAYERFLOW_SERVER_STORE_POSTGRES_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/store.h"

namespace layerflow::server {

// Connects to `url` (a libpq URI, postgresql://user:password@host:port/db
// ?param=value) and migrates the database to the latest schema.
// UNAVAILABLE, naming host, port, database and user but never the password,
// when the server cannot be reached.
absl::StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url);

// The schema version OpenPostgresStore leaves a database at.
int PostgresSchemaVersion();

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_STORE_POSTGRES_STORE_H_
