#include "server/store/sqlite_schema.h"

#include "absl/strings/str_cat.h"

namespace layerflow::server::sqlite {
namespace {

// v1: the initial schema. Specs are serialized protos (the API owns their
// shape); columns that queries filter or sort on are copied out of them.
constexpr absl::string_view kV1 = R"sql(
CREATE TABLE sweeps (
  sweep_id   TEXT PRIMARY KEY,
  spec       BLOB NOT NULL,          -- layerflow.v1.SweepSpec, defaults applied
  created_ms INTEGER NOT NULL
);
CREATE TABLE jobs (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order
  job_id           TEXT NOT NULL UNIQUE,
  sweep_id         TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,
  model            TEXT NOT NULL,
  spec             BLOB NOT NULL,    -- layerflow.v1.JobSpec
  priority         INTEGER NOT NULL DEFAULT 0,
  state            INTEGER NOT NULL, -- layerflow.v1.JobState
  attempts         INTEGER NOT NULL DEFAULT 0,
  chunks_committed INTEGER NOT NULL DEFAULT 0,  -- = COUNT(chunks of the job)
  chunks_total     INTEGER NOT NULL,
  error            TEXT NOT NULL DEFAULT '',
  worker_id        TEXT NOT NULL DEFAULT '',
  lease_id         TEXT NOT NULL DEFAULT '',
  lease_expires_ms INTEGER NOT NULL DEFAULT 0,
  created_ms       INTEGER NOT NULL,
  updated_ms       INTEGER NOT NULL
);
CREATE INDEX jobs_by_sweep ON jobs(sweep_id, seq);
CREATE TABLE chunks (
  job_id        TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
  sequence      INTEGER NOT NULL,
  prompt_tokens TEXT NOT NULL,       -- comma-separated token counts
  committed_ms  INTEGER NOT NULL,
  PRIMARY KEY (job_id, sequence)     -- the exactly-once key
);
CREATE TABLE chunk_stats (
  job_id   TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  metric   TEXT NOT NULL,
  layer    INTEGER NOT NULL,
  sum      REAL NOT NULL,
  sum_sq   REAL NOT NULL,
  count    INTEGER NOT NULL,
  PRIMARY KEY (job_id, sequence, metric, layer),
  FOREIGN KEY (job_id, sequence) REFERENCES chunks(job_id, sequence)
    ON DELETE CASCADE
);
)sql";

// v2: retry backoff (jobs.not_before_ms), the workers table for
// registration and liveness, and an index matching the lease query
// (state, priority DESC, seq) so leasing stays cheap with a long queue.
constexpr absl::string_view kV2 = R"sql(
ALTER TABLE jobs ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_runnable ON jobs(state, priority DESC, seq);
CREATE TABLE workers (
  worker_id     TEXT PRIMARY KEY,
  name          TEXT NOT NULL,
  capabilities  BLOB NOT NULL,       -- layerflow.v1.WorkerCapabilities
  registered_ms INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL
);
CREATE INDEX workers_by_last_seen ON workers(last_seen_ms);
)sql";

// v3: tidy rows. chunk_stats gains layer_b, head and position, -1 meaning
// "not applicable" (the proto's unset optional fields; NOT NULL so that
// they take part in the primary key and in GROUP BY like any value). The
// primary key changes, which SQLite cannot ALTER: the table is rebuilt and
// existing stats are copied with -1 in the new columns.
constexpr absl::string_view kV3 = R"sql(
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
)sql";

// v4: probing. jobs.kind (layerflow.v1.JobKind, copied out of the spec
// like model; 0 = EXTRACT for every existing job) and jobs.depends_on (the
// job that must succeed first; '' = none), indexed for the lease query's
// dependency check and for failing dependents.
constexpr absl::string_view kV4 = R"sql(
ALTER TABLE jobs ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN depends_on TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_by_depends_on ON jobs(depends_on);
)sql";

// v5: paged QueryResults. Result rows in their key order within a job, so
// a page (a keyset: the rows after a key, LIMIT n) reads its own rows
// instead of sorting the rest of the sweep.
constexpr absl::string_view kV5 = R"sql(
CREATE INDEX chunk_stats_by_key ON chunk_stats(job_id, metric, layer, layer_b, head, position);
)sql";

// v6: where a job's time went (issue 13): jobs.phase_totals, a serialized
// layerflow.v1.Job holding only its phase_totals ('' = none yet).
constexpr absl::string_view kV6 = R"sql(
ALTER TABLE jobs ADD COLUMN phase_totals BLOB NOT NULL DEFAULT x'';
)sql";

// v7: results versions (catalog/results_version.h). Version 2 made random
// init counter-based, which changes every random-init number: jobs already
// stored are version 1; an unfinished job of a preset (a model name without
// '/', the random-init ones) loses its version-1 chunks and starts again
// from chunk 0 under version 2, so no job mixes rows of both. Checkpoint
// jobs' numbers do not depend on the generator: they continue as version 2.
constexpr absl::string_view kV7 = R"sql(
ALTER TABLE jobs ADD COLUMN results_version INTEGER NOT NULL DEFAULT 1;
DELETE FROM chunk_stats WHERE job_id IN
  (SELECT job_id FROM jobs WHERE state IN (1, 2) AND instr(model, '/') = 0);
DELETE FROM chunks WHERE job_id IN
  (SELECT job_id FROM jobs WHERE state IN (1, 2) AND instr(model, '/') = 0);
UPDATE jobs SET chunks_committed = 0, state = 1, worker_id = '', lease_id = '',
                lease_expires_ms = 0
  WHERE state IN (1, 2) AND instr(model, '/') = 0;
UPDATE jobs SET results_version = 2 WHERE state IN (1, 2);
)sql";

// v8: failures (issue 14). job_attempts: how every lease of a job ended
// (AttemptOutcome: 1 succeeded, 2 bad input, 3 host error, 4 lease lapsed),
// for the error that lists every attempt and for quarantine, which looks
// at a worker's latest attempts. workers.quarantined/quarantine_reason;
// released_after is the last job_attempts.id at an admin's release, so the
// host errors before it no longer count.
constexpr absl::string_view kV8 = R"sql(
CREATE TABLE job_attempts (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- end order
  job_id    TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
  attempt   INTEGER NOT NULL,
  worker_id TEXT NOT NULL,
  outcome   INTEGER NOT NULL,
  error     TEXT NOT NULL,
  ended_ms  INTEGER NOT NULL,
  -- 1: a host error while another live, unquarantined worker existed; the
  -- job is not leased to this worker again (Store::RetryJob).
  elsewhere INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_attempts_by_job ON job_attempts(job_id, id);
CREATE INDEX job_attempts_by_worker ON job_attempts(worker_id, id);
ALTER TABLE workers ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN quarantine_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN released_after INTEGER NOT NULL DEFAULT 0;
)sql";

// v9: failing dependents (FailDependentsLocked, after every failure or
// cancel) looked at every QUEUED job (jobs_runnable's state prefix): 10,000
// queued jobs made each FailJob ~1 ms on a 2-core machine (bench_pool). A
// partial index over the queued jobs that have a dependency (PROBE jobs:
// few) makes that statement's scan as small as they are.
constexpr absl::string_view kV9 = R"sql(
CREATE INDEX jobs_dependents_by_state ON jobs(state) WHERE depends_on != '';
)sql";

// v10: the lease path at 10,000 queued jobs (bench_pool, issue 14).
// Measured per statement (SQLite's profile hook, 50 workers, 10,000 jobs):
// the jobs-by-state gauge that the coordinator refreshes after every
// FailJob (SELECT state, COUNT(*) ... GROUP BY state) walked every job,
// 650 us a call, a third of the run; the lease's candidate query, 200 us,
// probed the asking worker's whole attempt history (job_attempts_by_worker)
// for each candidate. job_state_counts keeps the jobs per state, maintained
// by triggers in the transaction that changes a job, so reading it is five
// rows; job_attempts_elsewhere holds only the "not on this worker again"
// attempts (few), which is all the lease's NOT EXISTS asks about.
constexpr absl::string_view kV10 = R"sql(
CREATE TABLE job_state_counts (
  state INTEGER PRIMARY KEY,  -- layerflow.v1.JobState
  n     INTEGER NOT NULL
);
INSERT INTO job_state_counts (state, n)
  WITH states(s) AS (VALUES (0), (1), (2), (3), (4), (5))
  SELECT s, (SELECT COUNT(*) FROM jobs WHERE state = s) FROM states;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
  UPDATE job_state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
  WHEN OLD.state != NEW.state BEGIN
  UPDATE job_state_counts SET n = n - 1 WHERE state = OLD.state;
  UPDATE job_state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
  UPDATE job_state_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE INDEX job_attempts_elsewhere ON job_attempts(job_id, worker_id) WHERE elsewhere = 1;
)sql";

// v11: fair share among users (Store::LeaseNextJob). jobs.owner is the
// submitting user ('' for every job before: one user); user_shares keeps
// each user's QUEUED and RUNNING jobs, maintained by triggers like
// job_state_counts, so that the lease orders the users with queued jobs by
// their running jobs (a few rows) and seeks each one's head on
// jobs_owner_runnable, never walking the queue.
constexpr absl::string_view kV11 = R"sql(
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE TABLE user_shares (
  owner   TEXT PRIMARY KEY,
  queued  INTEGER NOT NULL DEFAULT 0,
  running INTEGER NOT NULL DEFAULT 0
);
INSERT INTO user_shares (owner, queued, running)
  SELECT '', COALESCE(SUM(state = 1), 0), COALESCE(SUM(state = 2), 0) FROM jobs;
CREATE TRIGGER jobs_share_insert AFTER INSERT ON jobs WHEN NEW.state IN (1, 2) BEGIN
  INSERT OR IGNORE INTO user_shares (owner) VALUES (NEW.owner);
  UPDATE user_shares SET queued = queued + (NEW.state = 1), running = running + (NEW.state = 2)
    WHERE owner = NEW.owner;
END;
CREATE TRIGGER jobs_share_update AFTER UPDATE OF state ON jobs
  WHEN OLD.state != NEW.state AND (OLD.state IN (1, 2) OR NEW.state IN (1, 2)) BEGIN
  INSERT OR IGNORE INTO user_shares (owner) VALUES (NEW.owner);
  UPDATE user_shares SET queued = queued - (OLD.state = 1) + (NEW.state = 1),
                         running = running - (OLD.state = 2) + (NEW.state = 2)
    WHERE owner = NEW.owner;
END;
CREATE TRIGGER jobs_share_delete AFTER DELETE ON jobs WHEN OLD.state IN (1, 2) BEGIN
  UPDATE user_shares SET queued = queued - (OLD.state = 1), running = running - (OLD.state = 2)
    WHERE owner = OLD.owner;
END;
CREATE INDEX jobs_owner_runnable ON jobs(owner, state, priority DESC, seq);
)sql";

absl::StatusOr<int> UserVersion(Db& db) {
  absl::StatusOr<Statement> stmt = db.Prepare("PRAGMA user_version");
  if (!stmt.ok()) return stmt.status();
  absl::StatusOr<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  return *row ? static_cast<int>(stmt->Int(0)) : 0;
}

}  // namespace

const std::vector<Migration>& Migrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{
      {1, "sweeps, jobs, chunks, chunk_stats", kV1},
      {2, "jobs.not_before_ms, workers, jobs_runnable index", kV2},
      {3, "chunk_stats.layer_b/head/position (tidy rows)", kV3},
      {4, "jobs.kind, jobs.depends_on (probing)", kV4},
      {5, "chunk_stats_by_key index (paged QueryResults)", kV5},
      {6, "jobs.phase_totals (the workers' phase times)", kV6},
      {7, "jobs.results_version (counter-based random init)", kV7},
      {8, "job_attempts, workers.quarantined (failures)", kV8},
      {9, "jobs_dependents_by_state partial index (failing dependents)", kV9},
      {10, "job_state_counts, job_attempts_elsewhere (the lease path)", kV10},
      {11, "jobs.owner, user_shares, jobs_owner_runnable (fair share)", kV11},
  };
  return *migrations;
}

int LatestSchemaVersion() { return Migrations().back().version; }

absl::Status Migrate(Db& db) {
  for (const Migration& migration : Migrations()) {
    absl::StatusOr<Transaction> tx = Transaction::Begin(db);
    if (!tx.ok()) return tx.status();
    // Read inside the write transaction: another connection may have just
    // applied this migration.
    absl::StatusOr<int> version = UserVersion(db);
    if (!version.ok()) return version.status();
    if (*version > LatestSchemaVersion()) {
      return absl::FailedPreconditionError(absl::StrCat("database schema version ", *version,
                                                        " is newer than this build's ",
                                                        LatestSchemaVersion()));
    }
    if (*version >= migration.version) continue;
    if (absl::Status s = db.Exec(migration.sql); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat("schema migration to v", migration.version, ": ", s.message()));
    }
    if (absl::Status s = db.Exec(absl::StrCat("PRAGMA user_version = ", migration.version));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = tx->Commit(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace layerflow::server::sqlite
