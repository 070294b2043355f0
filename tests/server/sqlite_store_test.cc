// SQLite-specific behaviour: schema migrations and connection settings.
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "catalog/results_version.h"
#include "server/store/sqlite_store.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;
using ::layerflow::v1::JobState;

// Raw SQL on a path, independent of the code under test.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
  }
  ~RawDb() { sqlite3_close(db_); }
  void Exec(const std::string& sql) {
    char* error = nullptr;
    ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
        << (error ? error : "") << "\n"
        << sql;
  }
  std::string Scalar(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
    std::string value;
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      value = text ? reinterpret_cast<const char*>(text) : "";
    }
    sqlite3_finalize(stmt);
    return value;
  }

 private:
  sqlite3* db_ = nullptr;
};

// The v1 schema exactly as released (sqlite_schema.cc, migration 1). Kept
// verbatim here so that an edit to a released migration fails this test.
constexpr char kV1Schema[] = R"sql(
CREATE TABLE sweeps (
  sweep_id TEXT PRIMARY KEY, spec BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE,
  sweep_id TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,
  model TEXT NOT NULL, spec BLOB NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
  state INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  chunks_committed INTEGER NOT NULL DEFAULT 0, chunks_total INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '', worker_id TEXT NOT NULL DEFAULT '',
  lease_id TEXT NOT NULL DEFAULT '', lease_expires_ms INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX jobs_by_sweep ON jobs(sweep_id, seq);
CREATE TABLE chunks (
  job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
  sequence INTEGER NOT NULL, prompt_tokens TEXT NOT NULL,
  committed_ms INTEGER NOT NULL, PRIMARY KEY (job_id, sequence));
CREATE TABLE chunk_stats (
  job_id TEXT NOT NULL, sequence INTEGER NOT NULL, metric TEXT NOT NULL,
  layer INTEGER NOT NULL, sum REAL NOT NULL, sum_sq REAL NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY (job_id, sequence, metric, layer),
  FOREIGN KEY (job_id, sequence) REFERENCES chunks(job_id, sequence)
    ON DELETE CASCADE);
PRAGMA user_version = 1;
)sql";

std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

TEST(SqliteStore, MigratesAVersion1DatabaseKeepingItsData) {
  TempDir dir;
  const std::string path = dir.File("old.db");
  {
    RawDb raw(path);
    raw.Exec(kV1Schema);
    layerflow::v1::SweepSpec sweep_spec;
    sweep_spec.set_name("legacy");
    // A checkpoint: its half-done job resumes across every migration
    // (v7 restarts unfinished random-init jobs instead: test below).
    layerflow::v1::JobSpec job_spec;
    job_spec.set_model("EleutherAI/pythia-14m");
    job_spec.set_seed(7);
    raw.Exec("INSERT INTO sweeps VALUES ('old', x'" + Hex(sweep_spec.SerializeAsString()) +
             "', 500)");
    // One job half done (1 of 2 chunks), one queued.
    raw.Exec(
        "INSERT INTO jobs (job_id, sweep_id, model, spec, state, "
        "chunks_committed, chunks_total, created_ms, updated_ms) VALUES "
        "('old-0', 'old', 'EleutherAI/pythia-14m', x'" +
        Hex(job_spec.SerializeAsString()) +
        "', 1, 1, 2, 500, 500), "
        "('old-1', 'old', 'EleutherAI/pythia-14m', x'" +
        Hex(job_spec.SerializeAsString()) + "', 1, 0, 2, 500, 500)");
    raw.Exec("INSERT INTO chunks VALUES ('old-0', 0, '10,11', 600)");
    raw.Exec(
        "INSERT INTO chunk_stats VALUES "
        "('old-0', 0, 'adjacent_cos', 2, 1.5, 1.25, 2)");
  }
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenSqliteStore(path));
  {
    RawDb raw(path);
    EXPECT_EQ(raw.Scalar("PRAGMA user_version"), std::to_string(SqliteSchemaVersion()));
    EXPECT_EQ(SqliteSchemaVersion(), 11);
    // v11: fair share. The jobs there belong to user '' (two queued).
    EXPECT_EQ(raw.Scalar("SELECT owner || ':' || queued || ':' || running FROM user_shares"),
              ":2:0");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM jobs WHERE owner = ''"), "2");
    // v10: jobs per state kept by triggers, seeded from the jobs there (two
    // queued), and the partial index of "not on this worker again" attempts.
    EXPECT_EQ(raw.Scalar("SELECT group_concat(state || ':' || n, ' ') FROM "
                         "(SELECT state, n FROM job_state_counts ORDER BY state)"),
              "0:0 1:2 2:0 3:0 4:0 5:0");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE "
                         "name IN ('job_attempts_elsewhere', 'jobs_count_insert', "
                         "'jobs_count_update', 'jobs_count_delete')"),
              "4");
    // v9: the partial index that keeps failing dependents from scanning
    // every queued job.
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND "
                         "name = 'jobs_dependents_by_state'"),
              "1");
    // v8 (failures): the attempt history and the workers' quarantine.
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM job_attempts"), "0");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM pragma_table_info('workers') WHERE "
                         "name IN ('quarantined', 'quarantine_reason', 'released_after')"),
              "3");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE "
                         "name IN ('workers', 'jobs_runnable')"),
              "2");
  }
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, store->GetSweep("old"));
  EXPECT_EQ(sweep.spec().name(), "legacy");
  EXPECT_EQ(sweep.jobs_total(), 2);
  EXPECT_EQ(sweep.chunks_committed(), 1);
  EXPECT_EQ(sweep.chunks_total(), 4);
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store->QueryResults({"old", "", "", ""}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].value(), 0.75);
  EXPECT_DOUBLE_EQ(rows[0].std(), 0.25);  // sqrt(1.25/2 - 0.75^2)
  EXPECT_EQ(rows[0].seed(), 7);
  // The v2 columns work on migrated rows: old jobs are runnable at once and
  // resume after their committed chunks.
  LF_ASSERT_OK_AND_ASSIGN(auto lease, store->LeaseNextJob("w", 0, 100));
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job.job_id(), "old-0");
  EXPECT_EQ(lease->resume_from_sequence, 1);
  LF_ASSERT_OK(store->RegisterWorker("w", "host", "", 0));
  // Reopening a current database is a no-op.
  store.reset();
  LF_ASSERT_OK_AND_ASSIGN(store, OpenSqliteStore(path));
  LF_ASSERT_OK_AND_ASSIGN(auto live, store->CountLiveWorkers(0));
  EXPECT_EQ(live, 1);
}

// Migration 2 exactly as released, applied on top of kV1Schema.
constexpr char kV2Migration[] = R"sql(
ALTER TABLE jobs ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_runnable ON jobs(state, priority DESC, seq);
CREATE TABLE workers (
  worker_id TEXT PRIMARY KEY, name TEXT NOT NULL, capabilities BLOB NOT NULL,
  registered_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
CREATE INDEX workers_by_last_seen ON workers(last_seen_ms);
PRAGMA user_version = 2;
)sql";

TEST(SqliteStore, MigratesAVersion2DatabaseToTidyRowsKeepingItsData) {
  TempDir dir;
  const std::string path = dir.File("v2.db");
  {
    RawDb raw(path);
    raw.Exec(kV1Schema);
    raw.Exec(kV2Migration);
    layerflow::v1::SweepSpec sweep_spec;
    sweep_spec.set_name("v2");
    // A checkpoint, so that v7 lets the half-done job resume.
    layerflow::v1::JobSpec job_spec;
    job_spec.set_model("EleutherAI/pythia-14m");
    raw.Exec("INSERT INTO sweeps VALUES ('old', x'" + Hex(sweep_spec.SerializeAsString()) +
             "', 500)");
    raw.Exec(
        "INSERT INTO jobs (job_id, sweep_id, model, spec, state, "
        "chunks_committed, chunks_total, created_ms, updated_ms) VALUES "
        "('old-0', 'old', 'EleutherAI/pythia-14m', x'" +
        Hex(job_spec.SerializeAsString()) + "', 1, 1, 2, 500, 500)");
    raw.Exec("INSERT INTO chunks VALUES ('old-0', 0, '10,11', 600)");
    raw.Exec(
        "INSERT INTO chunk_stats VALUES "
        "('old-0', 0, 'adjacent_cos', 0, 1.5, 1.25, 2), "
        "('old-0', 0, 'adjacent_cos', 1, 1.0, 0.5, 2)");
    raw.Exec("INSERT INTO workers VALUES ('w0', 'host', x'', 1, 2)");
  }
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenSqliteStore(path));
  {
    RawDb raw(path);
    EXPECT_EQ(raw.Scalar("PRAGMA user_version"), "11");
    // A v2 worker row migrates unquarantined.
    EXPECT_EQ(raw.Scalar("SELECT quarantined FROM workers WHERE worker_id = 'w0'"), "0");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM chunk_stats WHERE layer_b = -1 "
                         "AND head = -1 AND position = -1"),
              "2");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE "
                         "name = 'chunk_stats_v3'"),
              "0");
  }
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store->QueryResults({"old", "", "", ""}));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_DOUBLE_EQ(rows[0].value(), 0.75);
  EXPECT_DOUBLE_EQ(rows[0].std(), 0.25);
  EXPECT_FALSE(rows[0].has_layer_b());
  EXPECT_FALSE(rows[0].has_head());
  EXPECT_FALSE(rows[0].has_position());
  EXPECT_EQ(rows[1].layer(), 1);
  LF_ASSERT_OK_AND_ASSIGN(auto live, store->CountLiveWorkers(0));
  EXPECT_EQ(live, 1);
  // The migrated job resumes and commits keyed stats beside the old ones,
  // and the rebuilt table's foreign key holds.
  LF_ASSERT_OK_AND_ASSIGN(auto lease, store->LeaseNextJob("w0", 0, 100));
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->resume_from_sequence, 1);
  layerflow::v1::MetricStat stat;
  stat.set_metric("adjacent_cos");
  stat.set_layer(0);
  stat.set_head(3);
  stat.set_sum(0.5);
  stat.set_sum_sq(0.25);
  stat.set_count(1);
  LF_ASSERT_OK(store->CommitChunk("old-0", lease->lease_id, 1, {stat}, {5}, 10).status());
  LF_ASSERT_OK_AND_ASSIGN(rows, store->QueryResults({"old", "", "", ""}));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_FALSE(rows[0].has_head());
  EXPECT_EQ(rows[0].count(), 2);
  EXPECT_EQ(rows[1].head(), 3);
  EXPECT_EQ(rows[1].count(), 1);
  {
    RawDb raw(path);
    EXPECT_EQ(raw.Scalar("PRAGMA foreign_key_check"), "");
  }
}

// Migration 3 exactly as released, applied on top of kV2Migration.
constexpr char kV3Migration[] = R"sql(
CREATE TABLE chunk_stats_v3 (
  job_id   TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  metric   TEXT NOT NULL,
  layer    INTEGER NOT NULL,
  layer_b  INTEGER NOT NULL DEFAULT -1,
  head     INTEGER NOT NULL DEFAULT -1,
  position INTEGER NOT NULL DEFAULT -1,
  sum      REAL NOT NULL,
  sum_sq   REAL NOT NULL,
  count    INTEGER NOT NULL,
  PRIMARY KEY (job_id, sequence, metric, layer, layer_b, head, position),
  FOREIGN KEY (job_id, sequence) REFERENCES chunks(job_id, sequence)
    ON DELETE CASCADE
);
INSERT INTO chunk_stats_v3 (job_id, sequence, metric, layer, sum, sum_sq, count)
  SELECT job_id, sequence, metric, layer, sum, sum_sq, count FROM chunk_stats;
DROP TABLE chunk_stats;
ALTER TABLE chunk_stats_v3 RENAME TO chunk_stats;
PRAGMA user_version = 3;
)sql";

TEST(SqliteStore, MigratesAVersion3DatabaseToProbingKeepingItsData) {
  TempDir dir;
  const std::string path = dir.File("v3.db");
  {
    RawDb raw(path);
    raw.Exec(kV1Schema);
    raw.Exec(kV2Migration);
    raw.Exec(kV3Migration);
    layerflow::v1::SweepSpec sweep_spec;
    sweep_spec.set_name("v3");
    layerflow::v1::JobSpec job_spec;
    job_spec.set_model("pythia-tiny");
    raw.Exec("INSERT INTO sweeps VALUES ('old', x'" + Hex(sweep_spec.SerializeAsString()) +
             "', 500)");
    // One job done, one queued.
    raw.Exec(
        "INSERT INTO jobs (job_id, sweep_id, model, spec, state, "
        "chunks_committed, chunks_total, created_ms, updated_ms) VALUES "
        "('old-0', 'old', 'pythia-tiny', x'" +
        Hex(job_spec.SerializeAsString()) +
        "', 3, 1, 1, 500, 500), "
        "('old-1', 'old', 'pythia-tiny', x'" +
        Hex(job_spec.SerializeAsString()) + "', 1, 0, 1, 500, 500)");
    raw.Exec("INSERT INTO chunks VALUES ('old-0', 0, '10', 600)");
    raw.Exec(
        "INSERT INTO chunk_stats VALUES "
        "('old-0', 0, 'adjacent_cos', 0, -1, 2, -1, 1.5, 1.25, 2)");
  }
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenSqliteStore(path));
  {
    RawDb raw(path);
    EXPECT_EQ(raw.Scalar("PRAGMA user_version"), "11");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'chunk_stats_by_key'"),
              "1");
    // Existing jobs are EXTRACT jobs without a dependency.
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM jobs WHERE kind = 0 AND "
                         "depends_on = ''"),
              "2");
    EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE "
                         "name = 'jobs_by_depends_on'"),
              "1");
  }
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, store->ListJobs("old", JobState::JOB_STATE_UNSPECIFIED));
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].depends_on(), "");
  EXPECT_EQ(jobs[0].spec().kind(), layerflow::v1::JOB_KIND_EXTRACT);
  LF_ASSERT_OK_AND_ASSIGN(auto rows, store->QueryResults({"old", "", "", ""}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].head(), 2);
  // The migrated queued job is runnable, and new sweeps with dependencies
  // go into the migrated table.
  LF_ASSERT_OK_AND_ASSIGN(auto lease, store->LeaseNextJob("w0", 0, 100));
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job.job_id(), "old-1");
  layerflow::v1::JobSpec job_spec;
  job_spec.set_model("pythia-tiny");
  NewSweep sweep;
  sweep.sweep_id = "new";
  sweep.spec.set_name("new");
  sweep.jobs.push_back({"new-0", job_spec, 1, ""});
  NewJob probe{"new-1", job_spec, 1, "new-0"};
  probe.spec.set_kind(layerflow::v1::JOB_KIND_PROBE);
  sweep.jobs.push_back(probe);
  LF_ASSERT_OK(store->CreateSweep(sweep));
  {
    RawDb raw(path);
    EXPECT_EQ(raw.Scalar("SELECT kind || ',' || depends_on FROM jobs WHERE "
                         "job_id = 'new-1'"),
              "1,new-0");
  }
}

// Results version 2 (catalog/results_version.h) changed every random-init
// number: a job that committed chunks under version 1 must not continue
// them under 2. Migration 7 on a database at v6 (v1 and the released v2
// and v3 texts, then the columns v4 and v6 add; v5 is an index).
TEST(SqliteStore, ResultsVersion2RestartsUnfinishedRandomInitJobs) {
  TempDir dir;
  const std::string path = dir.File("v6.db");
  {
    RawDb raw(path);
    raw.Exec(kV1Schema);
    raw.Exec(kV2Migration);
    raw.Exec(kV3Migration);
    raw.Exec(
        "ALTER TABLE jobs ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE jobs ADD COLUMN depends_on TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE jobs ADD COLUMN phase_totals BLOB NOT NULL DEFAULT x'';"
        "PRAGMA user_version = 6;");
    layerflow::v1::SweepSpec sweep_spec;
    sweep_spec.set_name("v6");
    raw.Exec("INSERT INTO sweeps VALUES ('old', x'" + Hex(sweep_spec.SerializeAsString()) +
             "', 500)");
    auto job = [&](const std::string& id, const std::string& model, int state, int committed) {
      layerflow::v1::JobSpec spec;
      spec.set_model(model);
      raw.Exec(
          "INSERT INTO jobs (job_id, sweep_id, model, spec, state, chunks_committed, "
          "chunks_total, worker_id, lease_id, lease_expires_ms, created_ms, updated_ms) "
          "VALUES ('" +
          id + "', 'old', '" + model + "', x'" + Hex(spec.SerializeAsString()) + "', " +
          std::to_string(state) + ", " + std::to_string(committed) +
          ", 2, 'w', 'lease', 9999, 500, 500)");
      for (int k = 0; k < committed; ++k) {
        raw.Exec("INSERT INTO chunks VALUES ('" + id + "', " + std::to_string(k) + ", '10', 600)");
        raw.Exec("INSERT INTO chunk_stats VALUES ('" + id + "', " + std::to_string(k) +
                 ", 'adjacent_cos', 0, -1, -1, -1, 1.5, 1.25, 2)");
      }
    };
    job("done", "pythia-tiny", 3, 2);            // finished random init: kept, version 1
    job("running", "pythia-tiny", 2, 1);         // half done random init: restarts
    job("queued", "mamba-tiny", 1, 1);           // half done random init: restarts
    job("ckpt", "EleutherAI/pythia-14m", 2, 1);  // checkpoint: resumes
  }
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenSqliteStore(path));
  RawDb raw(path);
  auto row = [&](const std::string& id) {
    return raw.Scalar(
        "SELECT state || ',' || chunks_committed || ',' || results_version || ',' "
        "|| lease_id || ',' || (SELECT COUNT(*) FROM chunks c WHERE c.job_id = "
        "jobs.job_id) || ',' || (SELECT COUNT(*) FROM chunk_stats s WHERE "
        "s.job_id = jobs.job_id) FROM jobs WHERE job_id = '" +
        id + "'");
  };
  const std::string v = std::to_string(catalog::kResultsVersion);
  EXPECT_EQ(row("done"), "3,2,1,lease,2,2");
  EXPECT_EQ(row("running"), "1,0," + v + ",,0,0");
  EXPECT_EQ(row("queued"), "1,0," + v + ",,0,0");
  EXPECT_EQ(row("ckpt"), "2,1," + v + ",lease,1,1");
  EXPECT_EQ(raw.Scalar("PRAGMA foreign_key_check"), "");
  // New jobs carry this build's version.
  layerflow::v1::JobSpec spec;
  spec.set_model("pythia-tiny");
  NewSweep sweep;
  sweep.sweep_id = "new";
  sweep.spec.set_name("new");
  sweep.jobs.push_back({"new-0", spec, 1, ""});
  LF_ASSERT_OK(store->CreateSweep(sweep));
  EXPECT_EQ(raw.Scalar("SELECT results_version FROM jobs WHERE job_id = 'new-0'"), v);
}

// Regression test (issue 14, bench_pool): SQLite checkpointed the
// write-ahead log inside the commit that crossed 1000 pages, with two
// fsyncs, under the store's lock: on a machine with busy disks every lease
// waited, up to 1.4 s. The store's connection no longer checkpoints; a
// thread with its own connection does, every checkpoint_interval_ms. Seen
// from outside: a commit far below 1000 pages reaches the database file
// within moments, where before it stayed in the log.
TEST(SqliteStore, ABackgroundThreadCheckpointsTheLogNotTheCommit) {
  auto main_file_after_a_small_commit = [](const std::string& path,
                                           const SqliteStoreOptions& options) {
    auto store = OpenSqliteStore(path, options);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return uintmax_t{0};
    const uintmax_t before = std::filesystem::file_size(path);
    NewSweep sweep;
    sweep.sweep_id = "s";
    for (int i = 0; i < 200; ++i) {  // ~40 pages, far below 1000
      NewJob& job = sweep.jobs.emplace_back();
      job.job_id = "s-" + std::to_string(i);
      job.spec.set_model("pythia-tiny");
      job.chunks_total = 1;
    }
    EXPECT_TRUE((*store)->CreateSweep(sweep).ok());
    for (int i = 0; i < 40 && std::filesystem::file_size(path) == before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return std::filesystem::file_size(path) - before;
  };
  TempDir dir;
  SqliteStoreOptions background;  // the default: every 100 ms
  EXPECT_GT(main_file_after_a_small_commit(dir.File("bg.db"), background), 0u);
  SqliteStoreOptions in_commit;
  in_commit.checkpoint_interval_ms = 0;  // SQLite's own, at 1000 pages
  EXPECT_EQ(main_file_after_a_small_commit(dir.File("auto.db"), in_commit), 0u);
}

TEST(SqliteStore, RefusesADatabaseFromANewerBuild) {
  TempDir dir;
  const std::string path = dir.File("new.db");
  { RawDb(path).Exec("PRAGMA user_version = 99"); }
  EXPECT_THAT(OpenSqliteStore(path).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "schema version 99 is newer than this build's 11"));
}

TEST(SqliteStore, UsesWalJournalAndDeclaresForeignKeys) {
  TempDir dir;
  const std::string path = dir.File("lf.db");
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenSqliteStore(path));
  RawDb raw(path);
  EXPECT_EQ(raw.Scalar("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM pragma_foreign_key_list('jobs')"), "1");
  EXPECT_EQ(raw.Scalar("SELECT COUNT(*) FROM pragma_foreign_key_list('chunks')"), "1");
}

TEST(SqliteStore, UnopenablePathIsAStatusNotACrash) {
  // A missing folder (a mistyped --db) is named, not SQLite's "unable to
  // open database file".
  EXPECT_THAT(OpenSqliteStore("/nonexistent-dir/sub/lf.db").status(),
              StatusIs(absl::StatusCode::kNotFound,
                       "cannot open database '/nonexistent-dir/sub/lf.db': its folder "
                       "'/nonexistent-dir/sub' does not exist (create it first)"));
  {
    TempDir dir;
    EXPECT_THAT(OpenSqliteStore(dir.File("lf.db") + "/x.db").status(),
                StatusIs(absl::StatusCode::kNotFound, "does not exist"));
  }
  TempDir dir;
  const std::string path = dir.File("garbage.db");
  {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("this is not a database, just some text that is long enough....", f);
    fclose(f);
  }
  const absl::Status status = OpenSqliteStore(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
}

}  // namespace
}  // namespace layerflow::server
