// PostgreSQL-specific behaviour: the versioned schema, concurrent first
// opens, connection errors, and OpenStore choosing the backend by --db.
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "server/store/open_store.h"
#include "server/store/postgres_store.h"
#include "tests/server/postgres_harness.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::server::testing::FreeLoopbackPort;
using ::layerflow::server::testing::PostgresServer;
using ::layerflow::server::testing::SharedPostgres;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;

PostgresServer& Server() {
  absl::StatusOr<PostgresServer*> server = SharedPostgres();
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) std::abort();
  return **server;
}

TEST(PostgresStore, CreatesAVersionedSchemaAndReopeningIsANoOp) {
  PostgresServer& pg = Server();
  LF_ASSERT_OK(pg.CreateDatabase("schema_db"));
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenPostgresStore(pg.Url("schema_db")));
  EXPECT_EQ(PostgresSchemaVersion(), 7);
  EXPECT_THAT(pg.Query("schema_db", "SELECT string_agg(version::text, ',') FROM layerflow_schema"),
              ::testing::Eq(absl::StatusOr<std::string>("7")));
  // v3: the jobs per state kept by triggers (an empty database: zeros) and
  // the partial index of "not on this worker again" attempts.
  EXPECT_THAT(pg.Query("schema_db",
                       "SELECT string_agg(state || ':' || n, ' ' ORDER BY state) "
                       "FROM job_state_counts"),
              ::testing::Eq(absl::StatusOr<std::string>("0:0 1:0 2:0 3:0 4:0 5:0")));
  EXPECT_THAT(
      pg.Query("schema_db",
               "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'job_attempts_elsewhere'"),
      ::testing::Eq(absl::StatusOr<std::string>("1")));
  // v4: a lease and a failure in one call each; the unused index gone.
  EXPECT_THAT(pg.Query("schema_db",
                       "SELECT string_agg(proname, ' ' ORDER BY proname) FROM "
                       "pg_proc WHERE proname IN ('lf_lease_head', 'lf_fail_job')"),
              ::testing::Eq(absl::StatusOr<std::string>("lf_fail_job lf_lease_head")));
  EXPECT_THAT(pg.Query("schema_db",
                       "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'jobs_by_depends_on'"),
              ::testing::Eq(absl::StatusOr<std::string>("0")));
  EXPECT_THAT(
      pg.Query("schema_db",
               "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'jobs_dependents_by_state'"),
      ::testing::Eq(absl::StatusOr<std::string>("1")));
  EXPECT_THAT(pg.Query("schema_db",
                       "SELECT COUNT(*) FROM information_schema.tables WHERE table_name IN "
                       "('sweeps', 'jobs', 'chunks', 'chunk_stats', 'workers', 'job_attempts')"),
              ::testing::Eq(absl::StatusOr<std::string>("6")));
  // v5: fair share; an empty database has one user '' with nothing queued.
  EXPECT_THAT(pg.Query("schema_db",
                       "SELECT owner || ':' || queued || ':' || running FROM "
                       "user_shares"),
              ::testing::Eq(absl::StatusOr<std::string>(":0:0")));
  // v7: one trigger on a change of state.
  EXPECT_THAT(pg.Query("schema_db",
                       "SELECT string_agg(tgname, ' ' ORDER BY tgname) FROM "
                       "pg_trigger WHERE tgrelid = 'jobs'::regclass AND NOT tgisinternal"),
              ::testing::Eq(absl::StatusOr<std::string>(
                  "jobs_count_delete jobs_count_insert jobs_share_delete jobs_share_insert "
                  "jobs_state_change")));
  LF_ASSERT_OK(store->RegisterWorker("w", "host", "", 5));
  store.reset();
  LF_ASSERT_OK_AND_ASSIGN(store, OpenPostgresStore(pg.Url("schema_db")));
  EXPECT_THAT(pg.Query("schema_db", "SELECT COUNT(*) FROM layerflow_schema"),
              ::testing::Eq(absl::StatusOr<std::string>("1")));
  LF_ASSERT_OK_AND_ASSIGN(int64_t live, store->CountLiveWorkers(0));
  EXPECT_EQ(live, 1);
}

TEST(PostgresStore, RefusesADatabaseFromANewerBuild) {
  PostgresServer& pg = Server();
  LF_ASSERT_OK(pg.CreateDatabase("newer_db"));
  LF_ASSERT_OK(pg.Query("newer_db",
                        "CREATE TABLE layerflow_schema (version INTEGER NOT NULL); "
                        "INSERT INTO layerflow_schema VALUES (99)")
                   .status());
  EXPECT_THAT(OpenPostgresStore(pg.Url("newer_db")).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "schema version 99 is newer than this build's 7"));
}

// Two coordinators starting at once on a fresh database: one migrates, the
// other waits for it and finds the schema in place.
TEST(PostgresStore, ConcurrentFirstOpensMigrateOnce) {
  PostgresServer& pg = Server();
  LF_ASSERT_OK(pg.CreateDatabase("race_db"));
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = OpenPostgresStore(pg.Url("race_db")).status(); });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(pg.Query("race_db", "SELECT COUNT(*) FROM layerflow_schema"),
              ::testing::Eq(absl::StatusOr<std::string>("1")));
}

TEST(PostgresStore, UnreachableServerIsUnavailableNamingHostAndPortButNotThePassword) {
  // A loopback port nothing listens on (the kernel's pick for port 0,
  // closed again).
  PostgresServer& pg = Server();
  const int closed = FreeLoopbackPort();
  ASSERT_GT(closed, 0);
  const std::string url =
      absl::StrCat("postgresql://lf:s3cret-pw@127.0.0.1:", closed, "/nowhere?connect_timeout=2");
  const absl::Status status = OpenPostgresStore(url).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable,
                               absl::StrCat("PostgreSQL at 127.0.0.1:", closed, "/nowhere")));
  EXPECT_THAT(std::string(status.message()), ::testing::Not(::testing::HasSubstr("s3cret")));
  // A database that does not exist on a live server: UNAVAILABLE too, and
  // the message says which.
  EXPECT_THAT(OpenPostgresStore(pg.Url("no_such_db")).status(),
              StatusIs(absl::StatusCode::kUnavailable, "no_such_db"));
}

// A PostgreSQL restart or a dropped connection between calls: the next
// call reconnects and works, nothing lost. A transaction the drop cut short
// is rolled back by the server, so it never half-happened.
TEST(PostgresStore, ReconnectsAfterTheServerDroppedTheConnection) {
  PostgresServer& pg = Server();
  LF_ASSERT_OK(pg.CreateDatabase("drop_db"));
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenPostgresStore(pg.Url("drop_db")));
  LF_ASSERT_OK(store->RegisterWorker("w1", "host", "", 5));
  auto drop = [&] {
    LF_ASSERT_OK(pg.Query("drop_db",
                          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = 'drop_db' AND pid <> pg_backend_pid()")
                     .status());
  };
  drop();
  // A read outside a transaction, then a write (a transaction).
  LF_ASSERT_OK_AND_ASSIGN(auto workers, store->ListWorkers());
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].worker_id, "w1");
  drop();
  LF_ASSERT_OK(store->RegisterWorker("w2", "host", "", 6));
  LF_ASSERT_OK_AND_ASSIGN(int64_t live, store->CountLiveWorkers(0));
  EXPECT_EQ(live, 2);
}

// Regression test (issue 14, bench_pool on a new database): with no
// statistics PostgreSQL planned the lease as "every queued job, then sort",
// 1.9 ms a lease at 10,000 queued jobs, where reading the head of
// jobs_runnable takes 0.1 ms. A large sweep refreshes the statistics, and
// the lease's plan then walks the index.
TEST(PostgresStore, ALargeSweepRefreshesStatisticsSoTheLeaseReadsTheQueueHead) {
  PostgresServer& pg = Server();
  LF_ASSERT_OK(pg.CreateDatabase("analyze_db"));
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenPostgresStore(pg.Url("analyze_db")));
  NewSweep sweep;
  sweep.sweep_id = "big";
  sweep.spec.set_name("big");
  for (int i = 0; i < 2000; ++i) {
    NewJob& job = sweep.jobs.emplace_back();
    job.job_id = "big-" + std::to_string(i);
    job.spec.set_model("pythia-tiny");
    job.spec.set_seed(i);
    job.chunks_total = 1;
  }
  LF_ASSERT_OK(store->CreateSweep(sweep));
  EXPECT_THAT(
      pg.Query("analyze_db", "SELECT reltuples::bigint FROM pg_class WHERE relname = 'jobs'"),
      ::testing::Eq(absl::StatusOr<std::string>("2000")));
  // The plan of the lease's pick (as lf_lease_head runs it) reads the
  // index in order and stops at the first row; no sort.
  LF_ASSERT_OK_AND_ASSIGN(
      std::string plan,
      pg.Query("analyze_db",
               "PREPARE pick(text, bigint) AS SELECT j.seq FROM jobs j WHERE j.state = 1 "
               "AND j.not_before_ms <= $2 AND (j.depends_on = '' OR (SELECT d.state FROM jobs d "
               "WHERE d.job_id = j.depends_on) = 3) AND NOT EXISTS (SELECT 1 FROM job_attempts a "
               "WHERE a.job_id = j.job_id AND a.worker_id = $1 AND a.elsewhere = 1) "
               "ORDER BY j.priority DESC, j.seq LIMIT 1; SET plan_cache_mode = force_generic_plan; "
               "EXPLAIN (FORMAT JSON) EXECUTE pick('w', 10)"));
  EXPECT_THAT(plan, ::testing::HasSubstr("\"Index Name\": \"jobs_runnable\""));
  EXPECT_THAT(plan, ::testing::Not(::testing::HasSubstr("Sort")));
  LF_ASSERT_OK_AND_ASSIGN(auto lease, store->LeaseNextJob("w", 10, 100));
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job.job_id(), "big-0");
}

TEST(OpenStore, ChoosesTheBackendByTheDbValue) {
  EXPECT_TRUE(IsPostgresUrl("postgresql://lf@127.0.0.1/db"));
  EXPECT_TRUE(IsPostgresUrl("postgres://lf@127.0.0.1/db"));
  EXPECT_TRUE(IsPostgresUrl("PostgreSQL://host/db"));
  EXPECT_FALSE(IsPostgresUrl("layerflow.db"));
  EXPECT_FALSE(IsPostgresUrl("/var/lib/postgresql://odd/file.db"));
  EXPECT_EQ(DescribeStoreLocation("postgresql://lf:pw@db.lab:6543/results"),
            "PostgreSQL at db.lab:6543/results (user lf)");
  EXPECT_EQ(DescribeStoreLocation("postgres://db.lab/results"),
            "PostgreSQL at db.lab:5432/results");
  EXPECT_EQ(DescribeStoreLocation("/data/layerflow.db"), "/data/layerflow.db");

  TempDir dir;
  LF_ASSERT_OK_AND_ASSIGN(auto sqlite, OpenStore(dir.File("lf.db")));
  LF_ASSERT_OK(sqlite->RegisterWorker("sqlite-worker", "h", "", 1));
  EXPECT_TRUE(std::filesystem::exists(dir.File("lf.db")));

  PostgresServer& pg = Server();
  LF_ASSERT_OK(pg.CreateDatabase("open_store_db"));
  for (const std::string scheme : {"postgresql", "postgres"}) {
    const std::string url = absl::StrCat(scheme, "://lf@127.0.0.1:", pg.port(), "/open_store_db");
    LF_ASSERT_OK_AND_ASSIGN(auto store, OpenStore(url));
    LF_ASSERT_OK(store->RegisterWorker(scheme + "-worker", "h", "", 1));
  }
  EXPECT_THAT(pg.Query("open_store_db",
                       "SELECT string_agg(worker_id, ',' ORDER BY worker_id) "
                       "FROM workers"),
              ::testing::Eq(absl::StatusOr<std::string>("postgres-worker,postgresql-worker")));
}

}  // namespace
}  // namespace layerflow::server
