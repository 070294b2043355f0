#include "server/store/postgres_schema.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace layerflow::server::pg {
namespace {

// v1: every table of SQLite's schema v8 (sqlite_schema.cc says what each
// column means). Differences: BIGINT and BYTEA types, identity columns for
// seq and job_attempts.id, and COLLATE "C" on the text columns results and
// workers are ordered by, so that rows come back in SQLite's (bytewise)
// order whatever the database's locale is.
constexpr absl::string_view kV1 = R"sql(
CREATE TABLE sweeps (
  sweep_id   TEXT PRIMARY KEY,
  spec       BYTEA NOT NULL,
  created_ms BIGINT NOT NULL
);
CREATE TABLE jobs (
  seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id           TEXT NOT NULL UNIQUE,
  sweep_id         TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,
  model            TEXT NOT NULL,
  spec             BYTEA NOT NULL,
  priority         BIGINT NOT NULL DEFAULT 0,
  state            INTEGER NOT NULL,
  attempts         BIGINT NOT NULL DEFAULT 0,
  chunks_committed BIGINT NOT NULL DEFAULT 0,
  chunks_total     BIGINT NOT NULL,
  error            TEXT NOT NULL DEFAULT '',
  worker_id        TEXT NOT NULL DEFAULT '',
  lease_id         TEXT NOT NULL DEFAULT '',
  lease_expires_ms BIGINT NOT NULL DEFAULT 0,
  created_ms       BIGINT NOT NULL,
  updated_ms       BIGINT NOT NULL,
  not_before_ms    BIGINT NOT NULL DEFAULT 0,
  kind             INTEGER NOT NULL DEFAULT 0,
  depends_on       TEXT NOT NULL DEFAULT '',
  phase_totals     BYTEA NOT NULL DEFAULT ''::bytea,
  results_version  INTEGER NOT NULL
);
CREATE INDEX jobs_by_sweep ON jobs(sweep_id, seq);
CREATE INDEX jobs_runnable ON jobs(state, priority DESC, seq);
CREATE INDEX jobs_by_depends_on ON jobs(depends_on);
CREATE TABLE chunks (
  job_id        TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
  sequence      BIGINT NOT NULL,
  prompt_tokens TEXT NOT NULL,
  committed_ms  BIGINT NOT NULL,
  PRIMARY KEY (job_id, sequence)
);
CREATE TABLE chunk_stats (
  job_id   TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  metric   TEXT COLLATE "C" NOT NULL,
  layer    BIGINT NOT NULL,
  layer_b  BIGINT NOT NULL DEFAULT -1,
  head     BIGINT NOT NULL DEFAULT -1,
  position BIGINT NOT NULL DEFAULT -1,
  sum      DOUBLE PRECISION NOT NULL,
  sum_sq   DOUBLE PRECISION NOT NULL,
  count    BIGINT NOT NULL,
  PRIMARY KEY (job_id, sequence, metric, layer, layer_b, head, position),
  FOREIGN KEY (job_id, sequence) REFERENCES chunks(job_id, sequence) ON DELETE CASCADE
);
CREATE INDEX chunk_stats_by_key ON chunk_stats(job_id, metric, layer, layer_b, head, position);
CREATE TABLE workers (
  worker_id         TEXT COLLATE "C" PRIMARY KEY,
  name              TEXT NOT NULL,
  capabilities      BYTEA NOT NULL,
  registered_ms     BIGINT NOT NULL,
  last_seen_ms      BIGINT NOT NULL,
  quarantined       INTEGER NOT NULL DEFAULT 0,
  quarantine_reason TEXT NOT NULL DEFAULT '',
  released_after    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX workers_by_last_seen ON workers(last_seen_ms);
CREATE TABLE job_attempts (
  id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id    TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
  attempt   BIGINT NOT NULL,
  worker_id TEXT NOT NULL,
  outcome   INTEGER NOT NULL,
  error     TEXT NOT NULL,
  ended_ms  BIGINT NOT NULL,
  elsewhere INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_attempts_by_job ON job_attempts(job_id, id);
CREATE INDEX job_attempts_by_worker ON job_attempts(worker_id, id);
)sql";

// v2: as the SQLite schema's v9, a partial index over the queued jobs that
// have a dependency, so that failing dependents (after every failure or
// cancel) does not scan every queued job.
constexpr absl::string_view kV2 = R"sql(
CREATE INDEX jobs_dependents_by_state ON jobs(state) WHERE depends_on != '';
)sql";

// v3: as the SQLite schema's v10 (sqlite_schema.cc says why): the jobs per
// state kept in job_state_counts by triggers, and the partial index of the
// attempts that keep a job off a worker. The counters are updated inside
// the transaction that changes a job, which holds the writers' advisory
// lock (pg_db.h), so no two transactions update them at once. An INSERT or
// DELETE updates them once per statement (its transition table); an
// UPDATE once per row whose state changes.
constexpr absl::string_view kV3 = R"sql(
CREATE TABLE job_state_counts (
  state INTEGER PRIMARY KEY,
  n     BIGINT NOT NULL
);
INSERT INTO job_state_counts (state, n)
  SELECT s, (SELECT COUNT(*) FROM jobs WHERE state = s) FROM generate_series(0, 5) AS s;
CREATE FUNCTION lf_count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_state_counts c SET n = c.n + d.k
    FROM (SELECT state, COUNT(*) AS k FROM new_jobs GROUP BY state) d WHERE c.state = d.state;
  RETURN NULL;
END $$;
CREATE FUNCTION lf_count_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_state_counts c SET n = c.n - d.k
    FROM (SELECT state, COUNT(*) AS k FROM old_jobs GROUP BY state) d WHERE c.state = d.state;
  RETURN NULL;
END $$;
CREATE FUNCTION lf_count_job_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_state_counts SET n = n - 1 WHERE state = OLD.state;
  UPDATE job_state_counts SET n = n + 1 WHERE state = NEW.state;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION lf_count_inserted_jobs();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION lf_count_deleted_jobs();
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION lf_count_job_state_change();
CREATE INDEX job_attempts_elsewhere ON job_attempts(job_id, worker_id) WHERE elsewhere = 1;
)sql";

// v4: the two calls every job makes, each one round trip. A plpgsql
// function takes the writers' advisory lock itself (pg_db.h's key, checked
// below) and then runs its statements, each with a snapshot taken after the
// lock, as a Transaction would; called outside a transaction, the lock ends
// with the call's own commit. Before, a lease was BEGIN + lock, the lease
// statement, COMMIT (three round trips) and a failure five.
//
// lf_lease_head: Store::LeaseNextJob without resident models: the head of
// the queue (priority, then creation) that is runnable for the worker,
// leased; no row when none is. The dependency is a scalar subquery, looked
// up by key for the candidate, where EXISTS let the planner hash every
// SUCCEEDED job once per lease.
//
// lf_fail_job: Store::FailJob. Returns the job's row as it was (found =
// false for an unknown job) and whether it was failed: only under the live
// lease (RUNNING, that lease id, not expired), when the attempt is
// recorded, the job FAILS with the error and its queued dependents fail
// with it, transitively. The caller turns a row it did not fail into the
// same errors as the other calls under a lease.
//
// jobs_by_depends_on goes: no statement looks jobs up by depends_on (the
// dependency is found by its job_id, dependents by the partial index), and
// PostgreSQL writes an entry into every index of jobs at each change of
// state (state is indexed, so no update is HOT), two a job.
constexpr absl::string_view kV4 = R"sql(
CREATE FUNCTION lf_lease_head(p_worker TEXT, p_now BIGINT, p_lease TEXT, p_expires BIGINT)
RETURNS SETOF jobs LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7811057547643872513);
  RETURN QUERY
    UPDATE jobs SET state = 2, attempts = attempts + 1, worker_id = p_worker,
                    lease_id = p_lease, lease_expires_ms = p_expires, updated_ms = p_now
    WHERE seq = (
      SELECT j.seq FROM jobs j
      WHERE j.state = 1 AND j.not_before_ms <= p_now
        AND (j.depends_on = '' OR
             (SELECT d.state FROM jobs d WHERE d.job_id = j.depends_on) = 3)
        AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.job_id
                        AND a.worker_id = p_worker AND a.elsewhere = 1)
      ORDER BY j.priority DESC, j.seq LIMIT 1)
    RETURNING jobs.*;
END $$;
CREATE FUNCTION lf_fail_job(p_job TEXT, p_lease TEXT, p_error TEXT, p_now BIGINT,
                            OUT o_found BOOLEAN, OUT o_failed BOOLEAN, OUT o_state INTEGER,
                            OUT o_lease_id TEXT, OUT o_lease_expires_ms BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7811057547643872513);
  SELECT j.state, j.lease_id, j.lease_expires_ms INTO o_state, o_lease_id, o_lease_expires_ms
    FROM jobs j WHERE j.job_id = p_job;
  o_found := FOUND;
  o_failed := o_found AND o_state = 2 AND o_lease_id = p_lease AND o_lease_expires_ms >= p_now;
  IF NOT o_failed THEN RETURN; END IF;
  INSERT INTO job_attempts (job_id, attempt, worker_id, outcome, error, ended_ms, elsewhere)
    SELECT j.job_id, j.attempts, j.worker_id, 2, p_error, p_now, 0
    FROM jobs j WHERE j.job_id = p_job;
  UPDATE jobs SET state = 4, error = p_error, worker_id = '', updated_ms = p_now
    WHERE job_id = p_job;
  LOOP
    UPDATE jobs SET state = 4, worker_id = '', updated_ms = p_now,
      error = (SELECT CASE WHEN d.state = 5 THEN 'dependency ' || d.job_id || ' was cancelled'
                           ELSE 'dependency ' || d.job_id || ' failed: ' || d.error END
               FROM jobs d WHERE d.job_id = jobs.depends_on)
    WHERE jobs.state = 1 AND jobs.depends_on <> ''
      AND (SELECT d.state FROM jobs d WHERE d.job_id = jobs.depends_on) IN (4, 5);
    EXIT WHEN NOT FOUND;
  END LOOP;
END $$;
DROP INDEX jobs_by_depends_on;
)sql";
// The functions' literal key.
static_assert(kWriterLockKey == 7811057547643872513, "lf_lease_head and lf_fail_job lock it");

// v5: fair share among users, as the SQLite schema's v11 (sqlite_schema.cc
// says why): jobs.owner, user_shares kept by triggers, jobs_owner_runnable;
// lf_lease_head now walks the users with queued jobs, fewest running first,
// and leases the first runnable head it finds.
constexpr absl::string_view kV5 = R"sql(
ALTER TABLE jobs ADD COLUMN owner TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE TABLE user_shares (
  owner   TEXT COLLATE "C" PRIMARY KEY,
  queued  BIGINT NOT NULL DEFAULT 0,
  running BIGINT NOT NULL DEFAULT 0
);
INSERT INTO user_shares (owner, queued, running)
  SELECT '', COUNT(*) FILTER (WHERE state = 1), COUNT(*) FILTER (WHERE state = 2) FROM jobs;
CREATE FUNCTION lf_share_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO user_shares (owner, queued, running)
    SELECT owner, COUNT(*) FILTER (WHERE state = 1), COUNT(*) FILTER (WHERE state = 2)
    FROM new_jobs WHERE state IN (1, 2) GROUP BY owner
  ON CONFLICT (owner) DO UPDATE SET queued = user_shares.queued + EXCLUDED.queued,
                                    running = user_shares.running + EXCLUDED.running;
  RETURN NULL;
END $$;
CREATE FUNCTION lf_share_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE user_shares u SET queued = u.queued - d.q, running = u.running - d.r
    FROM (SELECT owner, COUNT(*) FILTER (WHERE state = 1) AS q,
                 COUNT(*) FILTER (WHERE state = 2) AS r
          FROM old_jobs WHERE state IN (1, 2) GROUP BY owner) d
    WHERE u.owner = d.owner;
  RETURN NULL;
END $$;
CREATE FUNCTION lf_share_job_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO user_shares (owner, queued, running)
    VALUES (NEW.owner, (NEW.state = 1)::int - (OLD.state = 1)::int,
            (NEW.state = 2)::int - (OLD.state = 2)::int)
  ON CONFLICT (owner) DO UPDATE SET queued = user_shares.queued + EXCLUDED.queued,
                                    running = user_shares.running + EXCLUDED.running;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_share_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION lf_share_inserted_jobs();
CREATE TRIGGER jobs_share_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION lf_share_deleted_jobs();
CREATE TRIGGER jobs_share_update AFTER UPDATE OF state ON jobs
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND
                     (OLD.state IN (1, 2) OR NEW.state IN (1, 2)))
  EXECUTE FUNCTION lf_share_job_state_change();
CREATE INDEX jobs_owner_runnable ON jobs(owner, state, priority DESC, seq);
CREATE OR REPLACE FUNCTION lf_lease_head(p_worker TEXT, p_now BIGINT, p_lease TEXT,
                                         p_expires BIGINT)
RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE
  u RECORD;
BEGIN
  PERFORM pg_advisory_xact_lock(7811057547643872513);
  FOR u IN SELECT s.owner FROM user_shares s WHERE s.queued > 0 ORDER BY s.running, s.owner LOOP
    RETURN QUERY
      UPDATE jobs SET state = 2, attempts = attempts + 1, worker_id = p_worker,
                      lease_id = p_lease, lease_expires_ms = p_expires, updated_ms = p_now
      WHERE seq = (
        SELECT j.seq FROM jobs j
        WHERE j.owner = u.owner AND j.state = 1 AND j.not_before_ms <= p_now
          AND (j.depends_on = '' OR
               (SELECT d.state FROM jobs d WHERE d.job_id = j.depends_on) = 3)
          AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.job_id
                          AND a.worker_id = p_worker AND a.elsewhere = 1)
        ORDER BY j.priority DESC, j.seq LIMIT 1)
      RETURNING jobs.*;
    IF FOUND THEN RETURN; END IF;
  END LOOP;
END $$;
)sql";

// v6: the per-user quota of running jobs (Store::LeaseNextJob): lf_lease_head
// takes it (0: none) and passes over the users at it.
constexpr absl::string_view kV6 = R"sql(
DROP FUNCTION lf_lease_head(TEXT, BIGINT, TEXT, BIGINT);
CREATE FUNCTION lf_lease_head(p_worker TEXT, p_now BIGINT, p_lease TEXT, p_expires BIGINT,
                              p_max_running BIGINT)
RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE
  u RECORD;
BEGIN
  PERFORM pg_advisory_xact_lock(7811057547643872513);
  FOR u IN SELECT s.owner FROM user_shares s
           WHERE s.queued > 0 AND (p_max_running <= 0 OR s.running < p_max_running)
           ORDER BY s.running, s.owner LOOP
    RETURN QUERY
      UPDATE jobs SET state = 2, attempts = attempts + 1, worker_id = p_worker,
                      lease_id = p_lease, lease_expires_ms = p_expires, updated_ms = p_now
      WHERE seq = (
        SELECT j.seq FROM jobs j
        WHERE j.owner = u.owner AND j.state = 1 AND j.not_before_ms <= p_now
          AND (j.depends_on = '' OR
               (SELECT d.state FROM jobs d WHERE d.job_id = j.depends_on) = 3)
          AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.job_id
                          AND a.worker_id = p_worker AND a.elsewhere = 1)
        ORDER BY j.priority DESC, j.seq LIMIT 1)
      RETURNING jobs.*;
    IF FOUND THEN RETURN; END IF;
  END LOOP;
END $$;
)sql";

// v7: one row trigger for a job's change of state, not two: v3's counters
// and v5's shares each ran a plpgsql trigger (v5's an UPSERT) for every
// state change, which made a lease and a failure 1.5-1.7 times slower in
// pgbench than at v4. Now one call updates both with plain UPDATEs (every
// owner's row exists from the job's INSERT).
constexpr absl::string_view kV7 = R"sql(
DROP TRIGGER jobs_count_update ON jobs;
DROP TRIGGER jobs_share_update ON jobs;
DROP FUNCTION lf_count_job_state_change();
DROP FUNCTION lf_share_job_state_change();
CREATE FUNCTION lf_job_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_state_counts SET n = n + CASE WHEN state = NEW.state THEN 1 ELSE -1 END
    WHERE state IN (OLD.state, NEW.state);
  IF OLD.state IN (1, 2) OR NEW.state IN (1, 2) THEN
    UPDATE user_shares SET queued = queued + (NEW.state = 1)::int - (OLD.state = 1)::int,
                           running = running + (NEW.state = 2)::int - (OLD.state = 2)::int
      WHERE owner = NEW.owner;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_state_change AFTER UPDATE OF state ON jobs
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION lf_job_state_change();
)sql";

}  // namespace

const std::vector<Migration>& Migrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{
      {1, "the SQLite schema v8: sweeps, jobs, chunks, chunk_stats, workers, job_attempts", kV1},
      {2, "jobs_dependents_by_state partial index (failing dependents)", kV2},
      {3, "job_state_counts, job_attempts_elsewhere (the lease path)", kV3},
      {4, "lf_lease_head, lf_fail_job (a lease and a failure in one round trip)", kV4},
      {5, "jobs.owner, user_shares, jobs_owner_runnable, a fair lf_lease_head", kV5},
      {6, "lf_lease_head with a per-user quota of running jobs", kV6},
      {7, "one trigger for a job's change of state (counters and shares)", kV7},
  };
  return *migrations;
}

int LatestSchemaVersion() { return Migrations().back().version; }

absl::Status Migrate(Connection& db) {
  // Under the writers' lock: no other migration and no write runs meanwhile.
  LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(db));
  LF_RETURN_IF_ERROR(
      db.ExecScript("CREATE TABLE IF NOT EXISTS layerflow_schema (version INTEGER NOT NULL)"));
  LF_ASSIGN_OR_RETURN(Result r, db.Exec("SELECT COALESCE(MAX(version), 0) FROM layerflow_schema"));
  const int version = static_cast<int>(r.Int(0, 0));
  if (version > LatestSchemaVersion()) {
    return absl::FailedPreconditionError(absl::StrCat("database schema version ", version,
                                                      " is newer than this build's ",
                                                      LatestSchemaVersion()));
  }
  for (const Migration& migration : Migrations()) {
    if (version >= migration.version) continue;
    LF_RETURN_IF_ERROR(db.ExecScript(migration.sql))
        << "schema migration to v" << migration.version;
  }
  if (version < LatestSchemaVersion()) {
    LF_RETURN_IF_ERROR(db.ExecScript("DELETE FROM layerflow_schema"));
    LF_RETURN_IF_ERROR(
        db.Exec("INSERT INTO layerflow_schema (version) VALUES ($1::int)", {LatestSchemaVersion()})
            .status());
  }
  return tx.Commit();
}

}  // namespace layerflow::server::pg
