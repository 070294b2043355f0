// The coordinator on a PostgreSQL --db: it starts, the admin's worker
// listing reads the same database, artifacts default to the working
// directory, and logs never show the password.
#include <string>

#include "server/coordinator_server.h"
#include "tests/server/postgres_harness.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::server::testing::PostgresServer;
using ::layerflow::server::testing::SharedPostgres;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;

TEST(CoordinatorOnPostgres, StartsOnAUrlAndAdministersTheSameDatabase) {
  LF_ASSERT_OK_AND_ASSIGN(PostgresServer * pg, SharedPostgres());
  LF_ASSERT_OK(pg->CreateDatabase("coordinator_db"));
  TempDir dir;
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.db_path = pg->Url("coordinator_db");
  options.artifact_dir = dir.File("artifacts");
  LF_ASSERT_OK_AND_ASSIGN(auto server, CoordinatorServer::Start(options));
  EXPECT_GT(server->port(), 0);
  // The schema is there, made by the coordinator's store.
  EXPECT_THAT(pg->Query("coordinator_db", "SELECT version FROM layerflow_schema"),
              ::testing::Eq(absl::StatusOr<std::string>("7")));  // the latest, v7
  LF_ASSERT_OK(pg->Query("coordinator_db",
                         "INSERT INTO workers (worker_id, name, capabilities, registered_ms, "
                         "last_seen_ms, quarantined, quarantine_reason) VALUES "
                         "('w1', 'gpu-host', ''::bytea, 0, 0, 1, '3 host errors in a row')")
                   .status());
  LF_ASSERT_OK_AND_ASSIGN(std::string listing, AdministerWorkers(options.db_path, ""));
  EXPECT_THAT(listing, ::testing::StartsWith("w1 gpu-host quarantined last seen "));
  EXPECT_THAT(listing, ::testing::EndsWith(": 3 host errors in a row\n"));
  LF_ASSERT_OK_AND_ASSIGN(listing, AdministerWorkers(options.db_path, "w1"));
  EXPECT_THAT(listing, ::testing::StartsWith("w1 gpu-host active last seen "));
  server->Shutdown();
  server->Wait();
}

TEST(CoordinatorOnPostgres, DbValuesForLogsAndArtifacts) {
  EXPECT_EQ(DefaultArtifactDir("postgresql://lf:pw@db.lab:5433/results"), "artifacts");
  EXPECT_EQ(DefaultArtifactDir("/var/lib/layerflow/lf.db"), "/var/lib/layerflow/artifacts");
  EXPECT_EQ(DescribeDb("postgresql://lf:pw@db.lab:5433/results"),
            "PostgreSQL at db.lab:5433/results (user lf)");
  EXPECT_EQ(DescribeDb("lf.db"), "lf.db");
}

TEST(CoordinatorOnPostgres, UnreachableDatabaseFailsTheStartWithUnavailable) {
  CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  TempDir dir;
  options.artifact_dir = dir.File("artifacts");
  // Port 1 on loopback: nothing listens there.
  options.db_path = "postgresql://lf:hunter2@127.0.0.1:1/lab?connect_timeout=2";
  const absl::Status status = CoordinatorServer::Start(options).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, "PostgreSQL at 127.0.0.1:1/lab"));
  EXPECT_THAT(std::string(status.message()), ::testing::Not(::testing::HasSubstr("hunter2")));
}

}  // namespace
}  // namespace layerflow::server
