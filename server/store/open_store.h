// Picks the Store backend for a --db value: a PostgreSQL connection URL
// (postgresql://... or postgres://...) opens PostgresStore, anything else is
// a SQLite file path.
#ifndef LAYERFLOW_SERVER_STORE_OPEN_STORE_H_
#define LAYERFLOW_SERVER_STORE_OPEN_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/store.h"

namespace layerflow::server {

// True for a postgresql:// or postgres:// URL (the schemes libpq accepts).
bool IsPostgresUrl(const std::string& db);

// Opens (creating and migrating if needed) the store `db` names.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& db);

// `db` fit for a log line: a URL as "PostgreSQL at host:port/db (user u)",
// never its password; a path as is.
std::string DescribeStoreLocation(const std::string& db);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_STORE_OPEN_STORE_H_
