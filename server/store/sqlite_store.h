// The SQLite backend of Store: one connection per object, WAL journal (so
// readers never block the writer), a busy timeout for writers from other
// connections or processes, foreign keys on, and a versioned schema
// (sqlite_schema.h). Several SqliteStore objects may open one file.
#ifndef LAYERFLOW_SERVER_STORE_SQLITE_STORE_H_
#define LAYERFLOW_SERVER_STORE_SQLITE_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/store.h"

namespace layerflow::server {

struct SqliteStoreOptions {
  // How long a write waits for another connection's write lock.
  int busy_timeout_ms = 10000;
  // How often a background thread checkpoints the write-ahead log (a
  // second connection, PRAGMA wal_checkpoint(PASSIVE)). The store's own
  // connection never does: SQLite's automatic checkpoint ran inside the
  // commit that crossed 1000 pages, with two fsyncs, holding the store's
  // lock (bench_pool on a machine with busy disks: leases stalled up to
  // 1.4 s). 0: SQLite's automatic checkpoints, in the commit.
  int checkpoint_interval_ms = 100;
};

// Opens or creates the database at `path` and migrates it to the latest
// schema. Never throws.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                       const SqliteStoreOptions& options = {});

// The schema version OpenSqliteStore leaves a database at.
int SqliteSchemaVersion();

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_STORE_SQLITE_STORE_H_
