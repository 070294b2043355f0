// A real PostgreSQL server for the tests: initdb into a temporary folder,
// postgres listening on 127.0.0.1 only (a free port) and on a unix socket in
// that folder, trust authentication for the test user. Never reaches beyond
// loopback.
//
// PostgreSQL refuses to run as root: when the tests do (CI on a fresh
// machine), initdb and postgres run as an unprivileged user ($LAYERFLOW_PG_USER,
// default `nobody`) that owns the temporary folder.
//
// The binaries are looked for in $LAYERFLOW_PG_BINDIR, the newest
// /usr/lib/postgresql/*/bin (the Debian package scripts/bootstrap.sh
// installs), /usr/local/bin, then $PATH.
#ifndef LAYERFLOW_TESTS_SERVER_POSTGRES_HARNESS_H_
#define LAYERFLOW_TESTS_SERVER_POSTGRES_HARNESS_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerflow::server::testing {

class PostgresServer {
 public:
  // Ready to accept connections when it returns.
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start();
  // Stops the server (fast shutdown) and removes its folder.
  ~PostgresServer();

  int port() const { return port_; }
  // postgresql://lf@127.0.0.1:PORT/database
  std::string Url(const std::string& database) const;
  absl::Status CreateDatabase(const std::string& name);
  // Runs `sql` on `database`; the first column of the first row ("" when
  // none), for tests that look behind the store.
  absl::StatusOr<std::string> Query(const std::string& database, const std::string& sql);
  // What initdb and the server logged so far.
  std::string Log() const;

 private:
  PostgresServer() = default;
  std::string dir_;
  std::string bindir_;
  int port_ = 0;
  pid_t pid_ = -1;
  pid_t owner_ = -1;  // the process that started it (not a forked child)
};

// The test process's one server, started on first use and stopped at exit.
// A status when it cannot start (the message says why: no binaries, ...).
absl::StatusOr<PostgresServer*> SharedPostgres();

// A URL of a database of the shared server, fresh on the first call with a
// given key (the conformance suite's per-test directory; the first key gets
// the new cluster's empty `postgres` database, later ones a created one),
// the same one again for the same key.
absl::StatusOr<std::string> PostgresUrlFor(const std::string& key);

}  // namespace layerflow::server::testing

#endif  // LAYERFLOW_TESTS_SERVER_POSTGRES_HARNESS_H_
