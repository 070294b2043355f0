#include "server/store/sqlite_store.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "catalog/results_version.h"
#include "common/job_failures.h"
#include "common/status_macros.h"
#include "server/store/sqlite_db.h"
#include "server/store/sqlite_schema.h"

namespace layerflow::server {
namespace {

using ::layerflow::v1::Job;
using ::layerflow::v1::JobState;
using ::layerflow::v1::MetricStat;
using ::layerflow::v1::ResultRow;
using ::layerflow::v1::Sweep;
using sqlite::Db;
using sqlite::Statement;
using sqlite::Transaction;

constexpr absl::string_view kJobColumns =
    "job_id, sweep_id, spec, state, attempts, chunks_committed, chunks_total, "
    "error, worker_id, created_ms, updated_ms, depends_on, phase_totals";

absl::StatusOr<Job> ReadJob(const Statement& row) {
  Job job;
  job.set_job_id(row.Text(0));
  job.set_sweep_id(row.Text(1));
  if (!job.mutable_spec()->ParseFromString(row.Blob(2))) {
    return absl::DataLossError(absl::StrCat("job ", job.job_id(), ": stored spec does not parse"));
  }
  job.set_state(static_cast<JobState>(row.Int(3)));
  job.set_attempts(static_cast<int32_t>(row.Int(4)));
  job.set_chunks_committed(row.Int(5));
  job.set_chunks_total(row.Int(6));
  job.set_error(row.Text(7));
  job.set_worker_id(row.Text(8));
  job.set_created_unix_ms(row.Int(9));
  job.set_updated_unix_ms(row.Int(10));
  job.set_depends_on(row.Text(11));
  Job phases;  // only its phase_totals (schema v6)
  if (!phases.ParseFromString(row.Blob(12))) {
    return absl::DataLossError(
        absl::StrCat("job ", job.job_id(), ": stored phase times do not parse"));
  }
  *job.mutable_phase_totals() = std::move(*phases.mutable_phase_totals());
  return job;
}

// What lease checks need of a job row.
struct LeaseRow {
  JobState state;
  std::string lease_id;
  int64_t lease_expires_ms;
  int64_t chunks_committed;
  int64_t chunks_total;
};

std::string NewLeaseId() {
  // Unguessable enough that a stale worker cannot collide with a new lease;
  // not a security token.
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return absl::StrCat("lease-", absl::Hex(absl::Uniform<uint64_t>(*gen), absl::kZeroPad16));
}

// A job's final error after its attempts ran out: every attempt's worker
// and error, oldest first.
std::string FailedAttemptsMessage(int64_t attempts, const std::vector<JobAttempt>& history) {
  std::vector<std::string> parts;
  for (const JobAttempt& a : history) {
    parts.push_back(absl::StrCat("attempt ", a.attempt, " on ", a.worker_id, ": ", a.error));
  }
  return absl::StrCat("failed on ", attempts, " attempts: ", absl::StrJoin(parts, "; "));
}

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(std::unique_ptr<Db> db) : db_(std::move(db)) {}

  // Checkpoints `checkpointer`'s database every interval_ms on a thread of
  // its own until the store is destroyed.
  void StartCheckpoints(std::unique_ptr<Db> checkpointer, int interval_ms) {
    checkpoint_thread_ = std::thread([this, db = std::move(checkpointer), interval_ms] {
      absl::MutexLock lock(&checkpoint_mu_);
      while (!stop_checkpoints_) {
        checkpoint_mu_.AwaitWithTimeout(absl::Condition(&stop_checkpoints_),
                                        absl::Milliseconds(interval_ms));
        if (stop_checkpoints_) break;
        checkpoint_mu_.Unlock();
        // PASSIVE: copies what no reader still needs, never waits for the
        // writer nor blocks it; a failure (busy) is retried next time.
        (void)db->Exec("PRAGMA wal_checkpoint(PASSIVE)");
        checkpoint_mu_.Lock();
      }
    });
  }

  ~SqliteStore() override {
    {
      absl::MutexLock lock(&checkpoint_mu_);
      stop_checkpoints_ = true;
    }
    if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  }

  absl::Status CreateSweep(const NewSweep& sweep) override {
    absl::MutexLock lock(&mu_);
    // A dependency must be an earlier job of the same sweep: no cycles, no
    // job waiting for something that never runs.
    {
      std::set<std::string> earlier;
      for (const NewJob& job : sweep.jobs) {
        if (!job.depends_on.empty() && earlier.count(job.depends_on) == 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("job ", job.job_id, " depends on ", job.depends_on,
                           ", which is not an earlier job of sweep ", sweep.sweep_id));
        }
        earlier.insert(job.job_id);
      }
    }
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    if (sweep.limits.max_queued_jobs > 0 || sweep.limits.max_queued_jobs_per_user > 0) {
      // The counters, read in the write transaction: two submissions cannot
      // both pass a bound that only one fits under.
      LF_ASSIGN_OR_RETURN(
          Statement queued,
          db_->Prepare("SELECT (SELECT n FROM job_state_counts WHERE state = ?1), "
                       "COALESCE((SELECT queued FROM user_shares WHERE owner = ?2), 0)"));
      queued.Bind(1, static_cast<int>(JobState::JOB_STATE_QUEUED)).Bind(2, sweep.user);
      LF_ASSIGN_OR_RETURN(bool row, queued.Step());
      if (!row) return absl::InternalError("no queued-job counters");
      LF_RETURN_IF_ERROR(CheckQueueLimits(sweep, queued.Int(0), queued.Int(1)));
    }
    {
      LF_ASSIGN_OR_RETURN(Statement insert,
                          db_->Prepare("INSERT INTO sweeps (sweep_id, spec, created_ms) "
                                       "VALUES (?1, ?2, ?3)"));
      insert.Bind(1, sweep.sweep_id)
          .BindBlob(2, sweep.spec.SerializeAsString())
          .Bind(3, sweep.created_unix_ms);
      LF_RETURN_IF_ERROR(insert.Run()) << "sweep " << sweep.sweep_id;
    }
    for (const NewJob& job : sweep.jobs) {
      LF_ASSIGN_OR_RETURN(
          Statement insert,
          db_->Prepare(
              "INSERT INTO jobs (job_id, sweep_id, model, spec, priority, state, "
              "chunks_total, created_ms, updated_ms, kind, depends_on, results_version, owner) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12)"));
      insert.Bind(1, job.job_id)
          .Bind(2, sweep.sweep_id)
          .Bind(3, job.spec.model())
          .BindBlob(4, job.spec.SerializeAsString())
          .Bind(5, sweep.spec.priority())
          .Bind(6, static_cast<int>(JobState::JOB_STATE_QUEUED))
          .Bind(7, job.chunks_total)
          .Bind(8, sweep.created_unix_ms)
          .Bind(9, static_cast<int>(job.spec.kind()))
          .Bind(10, job.depends_on)
          .Bind(11, catalog::kResultsVersion)
          .Bind(12, sweep.user);
      LF_RETURN_IF_ERROR(insert.Run()) << "job " << job.job_id;
    }
    return tx.Commit();
  }

  absl::StatusOr<Sweep> GetSweep(const std::string& sweep_id) override {
    absl::MutexLock lock(&mu_);
    return GetSweepLocked(sweep_id);
  }

  using Store::ListJobs;
  absl::StatusOr<std::vector<Job>> ListJobs(const JobFilter& filter) override {
    absl::MutexLock lock(&mu_);
    // An unknown after_job_id compares seq with NULL: no rows.
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare(absl::StrCat("SELECT ", kJobColumns,
                                  " FROM jobs WHERE (?1 = '' OR sweep_id = ?1) "
                                  "AND (?2 = 0 OR state = ?2) "
                                  "AND (?3 = '' OR seq > (SELECT seq FROM jobs WHERE job_id = ?3)) "
                                  "ORDER BY seq LIMIT ?4")));
    select.Bind(1, filter.sweep_id)
        .Bind(2, static_cast<int>(filter.state))
        .Bind(3, filter.after_job_id)
        .Bind(4, filter.limit > 0 ? filter.limit : int64_t{-1});
    std::vector<Job> jobs;
    while (true) {
      LF_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      LF_ASSIGN_OR_RETURN(Job job, ReadJob(select));
      jobs.push_back(std::move(job));
    }
    return jobs;
  }

  absl::StatusOr<Job> GetJob(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE job_id = ?1")));
    select.Bind(1, job_id);
    LF_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
    return ReadJob(select);
  }

  absl::StatusOr<Sweep> CancelSweep(const std::string& sweep_id, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(Sweep sweep, GetSweepLocked(sweep_id));
    if (sweep.jobs_queued() == 0 && sweep.jobs_running() == 0) {
      return absl::FailedPreconditionError(absl::StrCat("sweep ", sweep_id, " already finished"));
    }
    // The lease id stays so that the holder's next heartbeat learns of the
    // cancel instead of seeing a lapsed lease.
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET state = ?1, worker_id = '', "
                                     "updated_ms = ?2 WHERE sweep_id = ?3 AND state IN (?4, ?5)"));
    update.Bind(1, static_cast<int>(JobState::JOB_STATE_CANCELLED))
        .Bind(2, now_ms)
        .Bind(3, sweep_id)
        .Bind(4, static_cast<int>(JobState::JOB_STATE_QUEUED))
        .Bind(5, static_cast<int>(JobState::JOB_STATE_RUNNING));
    LF_RETURN_IF_ERROR(update.Run());
    LF_RETURN_IF_ERROR(FailDependentsLocked(now_ms));
    LF_ASSIGN_OR_RETURN(sweep, GetSweepLocked(sweep_id));
    LF_RETURN_IF_ERROR(tx.Commit());
    return sweep;
  }

  absl::StatusOr<Sweep> RetrySweep(const std::string& sweep_id, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_RETURN_IF_ERROR(GetSweepLocked(sweep_id).status());
    const int failed = static_cast<int>(JobState::JOB_STATE_FAILED);
    const int cancelled = static_cast<int>(JobState::JOB_STATE_CANCELLED);
    {
      // A retry is a fresh start: a host that failed the job may be fixed.
      LF_ASSIGN_OR_RETURN(
          Statement update,
          db_->Prepare("UPDATE job_attempts SET elsewhere = 0 WHERE job_id IN "
                       "(SELECT job_id FROM jobs WHERE sweep_id = ?1 AND state IN (?2, ?3))"));
      update.Bind(1, sweep_id).Bind(2, failed).Bind(3, cancelled);
      LF_RETURN_IF_ERROR(update.Run());
    }
    LF_ASSIGN_OR_RETURN(
        Statement update,
        db_->Prepare("UPDATE jobs SET state = ?1, attempts = 0, error = '', not_before_ms = 0, "
                     "worker_id = '', lease_id = '', lease_expires_ms = 0, updated_ms = ?2 "
                     "WHERE sweep_id = ?3 AND state IN (?4, ?5)"));
    update.Bind(1, static_cast<int>(JobState::JOB_STATE_QUEUED))
        .Bind(2, now_ms)
        .Bind(3, sweep_id)
        .Bind(4, failed)
        .Bind(5, cancelled);
    LF_RETURN_IF_ERROR(update.Run());
    if (db_->Changes() == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("sweep ", sweep_id, " has no failed or cancelled jobs to retry"));
    }
    LF_ASSIGN_OR_RETURN(Sweep sweep, GetSweepLocked(sweep_id));
    LF_RETURN_IF_ERROR(tx.Commit());
    return sweep;
  }

  using Store::LeaseNextJob;
  absl::StatusOr<std::optional<Lease>> LeaseNextJob(const std::string& worker_id, int64_t now_ms,
                                                    int64_t ttl_ms,
                                                    const std::vector<ResidentModelRef>& resident,
                                                    int64_t max_running_jobs_per_user) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    // The head: what the primary order (priority, then age) gives.
    // Not a job this worker failed with a host error while another worker
    // could take it (RetryJob's "elsewhere").
    static constexpr absl::string_view kRunnable =
        "j.state = ?1 AND j.not_before_ms <= ?2 AND (j.depends_on = '' OR EXISTS "
        "(SELECT 1 FROM jobs d WHERE d.job_id = j.depends_on AND d.state = ?3)) "
        "AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.job_id "
        "AND a.worker_id = ?4 AND a.elsewhere = 1)";
    // Fair share: each user with queued jobs, fewest running first, and
    // that user's head (priority, then age) sought on jobs_owner_runnable;
    // the first user who has a runnable one gets it.
    LF_ASSIGN_OR_RETURN(
        Statement pick,
        db_->Prepare(absl::StrCat(
            "WITH heads AS MATERIALIZED (SELECT (SELECT j.seq FROM jobs j WHERE "
            "j.owner = u.owner AND ",
            kRunnable,
            " ORDER BY j.priority DESC, j.seq LIMIT 1) AS seq, u.running AS running, "
            "u.owner AS owner FROM user_shares u WHERE u.queued > 0 "
            "AND (?5 <= 0 OR u.running < ?5)) "
            "SELECT h.seq, j.sweep_id, j.priority FROM heads h JOIN jobs j ON j.seq = h.seq "
            "ORDER BY h.running, h.owner LIMIT 1")));
    pick.Bind(1, static_cast<int>(JobState::JOB_STATE_QUEUED))
        .Bind(2, now_ms)
        .Bind(3, static_cast<int>(JobState::JOB_STATE_SUCCEEDED))
        .Bind(4, worker_id)
        .Bind(5, max_running_jobs_per_user);
    LF_ASSIGN_OR_RETURN(bool found, pick.Step());
    if (!found) return std::optional<Lease>();
    int64_t seq = pick.Int(0);
    if (!resident.empty()) {
      LF_ASSIGN_OR_RETURN(
          seq, LocalPickLocked(seq, pick.Text(1), pick.Int(2), now_ms, worker_id, resident));
    }

    Lease lease;
    lease.lease_id = NewLeaseId();
    lease.expires_unix_ms = now_ms + ttl_ms;
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET state = ?1, attempts = attempts + 1, "
                                     "worker_id = ?2, lease_id = ?3, lease_expires_ms = ?4, "
                                     "updated_ms = ?5 WHERE seq = ?6"));
    update.Bind(1, static_cast<int>(JobState::JOB_STATE_RUNNING))
        .Bind(2, worker_id)
        .Bind(3, lease.lease_id)
        .Bind(4, lease.expires_unix_ms)
        .Bind(5, now_ms)
        .Bind(6, seq);
    LF_RETURN_IF_ERROR(update.Run());
    LF_ASSIGN_OR_RETURN(Statement select, db_->Prepare(absl::StrCat("SELECT ", kJobColumns,
                                                                    " FROM jobs WHERE seq = ?1")));
    select.Bind(1, seq);
    LF_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::InternalError("leased job vanished");
    LF_ASSIGN_OR_RETURN(lease.job, ReadJob(select));
    lease.resume_from_sequence = lease.job.chunks_committed();
    LF_RETURN_IF_ERROR(tx.Commit());
    return std::optional<Lease>(std::move(lease));
  }

  // Store::LeaseNextJob's locality rule: the first of the head's sweep's
  // runnable jobs (same priority, from the head on, kLocalityWindow of
  // them) that is an EXTRACT job of a resident model; the head when none is.
  absl::StatusOr<int64_t> LocalPickLocked(int64_t head_seq, const std::string& sweep_id,
                                          int64_t priority, int64_t now_ms,
                                          const std::string& worker_id,
                                          const std::vector<ResidentModelRef>& resident)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT j.seq, j.model, j.kind, j.spec FROM jobs j WHERE j.state = ?1 "
                     "AND j.not_before_ms <= ?2 AND (j.depends_on = '' OR EXISTS "
                     "(SELECT 1 FROM jobs d WHERE d.job_id = j.depends_on AND d.state = ?3)) "
                     "AND j.sweep_id = ?4 AND j.priority = ?5 AND j.seq >= ?6 "
                     "AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.job_id "
                     "AND a.worker_id = ?8 AND a.elsewhere = 1) "
                     "ORDER BY j.seq LIMIT ?7"));
    select.Bind(1, static_cast<int>(JobState::JOB_STATE_QUEUED))
        .Bind(2, now_ms)
        .Bind(3, static_cast<int>(JobState::JOB_STATE_SUCCEEDED))
        .Bind(4, sweep_id)
        .Bind(5, priority)
        .Bind(6, head_seq)
        .Bind(7, kLocalityWindow)
        .Bind(8, worker_id);
    while (true) {
      LF_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      // Only EXTRACT jobs build a model (PROBE and TRAIN jobs name one but
      // never take it from the cache); the spec is parsed only for a job
      // whose model name is resident.
      if (select.Int(2) != static_cast<int>(layerflow::v1::JOB_KIND_EXTRACT)) continue;
      const std::string model = select.Text(1);
      if (std::none_of(resident.begin(), resident.end(),
                       [&](const ResidentModelRef& r) { return r.model == model; })) {
        continue;
      }
      layerflow::v1::JobSpec spec;
      if (!spec.ParseFromString(select.Blob(3))) {
        return absl::DataLossError(
            absl::StrCat("job seq ", select.Int(0), ": stored spec does not parse"));
      }
      for (const ResidentModelRef& r : resident) {
        if (r.model == spec.model() && r.init_scheme == spec.init_scheme() &&
            r.seed == spec.seed() && r.dtype == spec.dtype()) {
          return select.Int(0);
        }
      }
    }
    return head_seq;
  }

  absl::StatusOr<bool> RenewLease(const std::string& job_id, const std::string& lease_id,
                                  int64_t now_ms, int64_t ttl_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    if (row.state == JobState::JOB_STATE_CANCELLED && row.lease_id == lease_id) {
      return true;
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET lease_expires_ms = ?1 WHERE job_id = ?2"));
    update.Bind(1, now_ms + ttl_ms).Bind(2, job_id);
    LF_RETURN_IF_ERROR(update.Run());
    LF_RETURN_IF_ERROR(tx.Commit());
    return false;
  }

  absl::StatusOr<CommitResult> CommitChunk(const std::string& job_id, const std::string& lease_id,
                                           int64_t sequence, const std::vector<MetricStat>& stats,
                                           const std::vector<int32_t>& prompt_tokens,
                                           int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    if (sequence < 0 || sequence >= row.chunks_total) {
      return absl::InvalidArgumentError(absl::StrCat("chunk.sequence: ", sequence,
                                                     " is outside [0, ", row.chunks_total,
                                                     ") for job ", job_id));
    }
    CommitResult result;
    {
      LF_ASSIGN_OR_RETURN(Statement insert,
                          db_->Prepare("INSERT OR IGNORE INTO chunks (job_id, sequence, "
                                       "prompt_tokens, committed_ms) VALUES (?1, ?2, ?3, ?4)"));
      insert.Bind(1, job_id)
          .Bind(2, sequence)
          .Bind(3, absl::StrJoin(prompt_tokens, ","))
          .Bind(4, now_ms);
      LF_RETURN_IF_ERROR(insert.Run());
      result.newly_committed = db_->Changes() == 1;
    }
    if (!result.newly_committed) {
      // A repeat (worker retry, or a resumed job resending): acknowledged,
      // and the first commit's statistics stand.
      result.job_chunks_committed = row.chunks_committed;
      return result;  // nothing written; the transaction rolls back
    }
    for (const MetricStat& stat : stats) {
      LF_ASSIGN_OR_RETURN(Statement insert,
                          db_->Prepare("INSERT INTO chunk_stats (job_id, sequence, metric, "
                                       "layer, sum, sum_sq, count, layer_b, head, position) "
                                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
      // Unset optional key fields are stored as -1 (schema v3).
      insert.Bind(1, job_id)
          .Bind(2, sequence)
          .Bind(3, stat.metric())
          .Bind(4, stat.layer())
          .Bind(5, stat.sum())
          .Bind(6, stat.sum_sq())
          .Bind(7, stat.count())
          .Bind(8, stat.has_layer_b() ? int64_t{stat.layer_b()} : int64_t{-1})
          .Bind(9, stat.has_head() ? int64_t{stat.head()} : int64_t{-1})
          .Bind(10, stat.has_position() ? int64_t{stat.position()} : int64_t{-1});
      LF_RETURN_IF_ERROR(insert.Run()) << "chunk " << sequence << " of job " << job_id;
    }
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET chunks_committed = chunks_committed + 1, "
                                     "updated_ms = ?1 WHERE job_id = ?2"));
    update.Bind(1, now_ms).Bind(2, job_id);
    LF_RETURN_IF_ERROR(update.Run());
    LF_RETURN_IF_ERROR(tx.Commit());
    result.job_chunks_committed = row.chunks_committed + 1;
    return result;
  }

  absl::Status AddPhaseTimes(const std::string& job_id,
                             const std::vector<layerflow::v1::PhaseTime>& times) override {
    if (times.empty()) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(Statement select,
                        db_->Prepare("SELECT phase_totals FROM jobs WHERE job_id = ?1"));
    select.Bind(1, job_id);
    LF_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
    Job totals;
    if (!totals.ParseFromString(select.Blob(0))) {
      return absl::DataLossError(absl::StrCat("job ", job_id, ": stored phase times do not parse"));
    }
    for (const layerflow::v1::PhaseTime& t : times) {
      layerflow::v1::PhaseTime* into = nullptr;
      for (layerflow::v1::PhaseTime& have : *totals.mutable_phase_totals()) {
        if (have.phase() == t.phase()) into = &have;
      }
      if (into == nullptr) {
        into = totals.add_phase_totals();
        into->set_phase(t.phase());
      }
      into->set_seconds(into->seconds() + t.seconds());
      into->set_count(into->count() + t.count());
    }
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET phase_totals = ?1 WHERE job_id = ?2"));
    update.BindBlob(1, totals.SerializeAsString()).Bind(2, job_id);
    LF_RETURN_IF_ERROR(update.Run());
    return tx.Commit();
  }

  absl::Status CheckLease(const std::string& job_id, const std::string& lease_id,
                          int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    return CheckLiveLease(job_id, lease_id, row, now_ms);
  }

  absl::Status CompleteJob(const std::string& job_id, const std::string& lease_id,
                           int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    // A repeated CompleteJob (the first reply was lost) is acknowledged.
    if (row.state == JobState::JOB_STATE_SUCCEEDED && row.lease_id == lease_id) {
      return absl::OkStatus();
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    if (row.chunks_committed < row.chunks_total) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has ",
                                                        row.chunks_committed, " of ",
                                                        row.chunks_total, " chunks committed"));
    }
    LF_RETURN_IF_ERROR(RecordAttemptLocked(job_id, AttemptOutcome::kSucceeded, "", now_ms));
    LF_RETURN_IF_ERROR(Finish(job_id, JobState::JOB_STATE_SUCCEEDED, "", now_ms));
    return tx.Commit();
  }

  absl::Status FailJob(const std::string& job_id, const std::string& lease_id,
                       const std::string& error, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    if (row.state == JobState::JOB_STATE_FAILED && row.lease_id == lease_id) {
      return absl::OkStatus();
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    LF_RETURN_IF_ERROR(RecordAttemptLocked(job_id, AttemptOutcome::kBadInput, error, now_ms));
    LF_RETURN_IF_ERROR(Finish(job_id, JobState::JOB_STATE_FAILED, error, now_ms));
    LF_RETURN_IF_ERROR(FailDependentsLocked(now_ms));
    return tx.Commit();
  }

  absl::Status ReleaseLease(const std::string& job_id, const std::string& lease_id,
                            int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    // The lease id goes with it, as when a lease lapses: the old holder's
    // commits and heartbeats are ABORTED from here on.
    LF_ASSIGN_OR_RETURN(
        Statement update,
        db_->Prepare("UPDATE jobs SET state = ?1, attempts = MAX(attempts - 1, 0), "
                     "not_before_ms = ?2, worker_id = '', lease_id = '', updated_ms = ?2 "
                     "WHERE job_id = ?3"));
    update.Bind(1, static_cast<int>(JobState::JOB_STATE_QUEUED)).Bind(2, now_ms).Bind(3, job_id);
    LF_RETURN_IF_ERROR(update.Run());
    return tx.Commit();
  }

  absl::StatusOr<int64_t> ExtendRunningLeases(int64_t now_ms, int64_t ttl_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET lease_expires_ms = ?1 "
                                     "WHERE state = ?2 AND lease_expires_ms < ?1"));
    update.Bind(1, now_ms + ttl_ms).Bind(2, static_cast<int>(JobState::JOB_STATE_RUNNING));
    LF_RETURN_IF_ERROR(update.Run());
    return static_cast<int64_t>(db_->Changes());
  }

  absl::StatusOr<int64_t> RequeueLapsedLeases(int64_t now_ms, int32_t max_attempts,
                                              int64_t backoff_base_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    std::vector<std::pair<int64_t, int64_t>> lapsed;  // (seq, attempts)
    {
      LF_ASSIGN_OR_RETURN(Statement select,
                          db_->Prepare("SELECT seq, attempts FROM jobs "
                                       "WHERE state = ?1 AND lease_expires_ms < ?2"));
      select.Bind(1, static_cast<int>(JobState::JOB_STATE_RUNNING)).Bind(2, now_ms);
      while (true) {
        LF_ASSIGN_OR_RETURN(bool row, select.Step());
        if (!row) break;
        lapsed.emplace_back(select.Int(0), select.Int(1));
      }
    }
    for (const auto& [seq, attempts] : lapsed) {
      {
        // In the attempt history, so that a job failing later lists it.
        LF_ASSIGN_OR_RETURN(
            Statement insert,
            db_->Prepare("INSERT INTO job_attempts (job_id, attempt, worker_id, outcome, "
                         "error, ended_ms) SELECT job_id, attempts, worker_id, ?1, "
                         "'lease lapsed', ?2 FROM jobs WHERE seq = ?3"));
        insert.Bind(1, static_cast<int>(AttemptOutcome::kLeaseLapsed)).Bind(2, now_ms).Bind(3, seq);
        LF_RETURN_IF_ERROR(insert.Run());
      }
      const bool exhausted = attempts >= max_attempts;
      std::string error;
      if (exhausted) {
        error = absl::StrCat("lease lapsed ", attempts, " times");
        // Some attempts ended otherwise (host errors): list them all, as
        // RetryJob does.
        LF_ASSIGN_OR_RETURN(Statement id, db_->Prepare("SELECT job_id FROM jobs WHERE seq = ?1"));
        id.Bind(1, seq);
        LF_ASSIGN_OR_RETURN(bool found, id.Step());
        if (found) {
          LF_ASSIGN_OR_RETURN(std::vector<JobAttempt> history, ListAttemptsLocked(id.Text(0)));
          if (std::any_of(history.begin(), history.end(), [](const JobAttempt& a) {
                return a.outcome != AttemptOutcome::kLeaseLapsed;
              })) {
            error = FailedAttemptsMessage(attempts, history);
          }
        }
      }
      // base * 2^(attempts-1), with the shift capped so it cannot overflow.
      const int shift = static_cast<int>(std::clamp<int64_t>(attempts - 1, 0, 20));
      const int64_t not_before = now_ms + (backoff_base_ms << shift);
      LF_ASSIGN_OR_RETURN(Statement update,
                          db_->Prepare("UPDATE jobs SET state = ?1, error = ?2, "
                                       "not_before_ms = ?3, worker_id = '', lease_id = '', "
                                       "updated_ms = ?4 WHERE seq = ?5"));
      update
          .Bind(1, static_cast<int>(exhausted ? JobState::JOB_STATE_FAILED
                                              : JobState::JOB_STATE_QUEUED))
          .Bind(2, error)
          .Bind(3, exhausted ? int64_t{0} : not_before)
          .Bind(4, now_ms)
          .Bind(5, seq);
      LF_RETURN_IF_ERROR(update.Run());
    }
    LF_RETURN_IF_ERROR(FailDependentsLocked(now_ms));
    LF_RETURN_IF_ERROR(tx.Commit());
    return static_cast<int64_t>(lapsed.size());
  }

  absl::StatusOr<std::vector<ResultRow>> QueryResults(const ResultFilter& filter) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(GetSweepLocked(filter.sweep_id).status());
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT j.job_id, j.spec, s.metric, s.layer, SUM(s.sum), "
                     "SUM(s.sum_sq), SUM(s.count), s.layer_b, s.head, s.position "
                     "FROM chunk_stats s JOIN jobs j ON j.job_id = s.job_id "
                     "WHERE j.sweep_id = ?1 AND (?2 = '' OR j.model = ?2) "
                     "AND (?3 = '' OR s.metric = ?3) AND (?4 = '' OR j.job_id = ?4) "
                     // The keyset: later jobs, or later keys of after_job_id.
                     "AND (?5 = '' OR j.seq > (SELECT seq FROM jobs WHERE job_id = ?5) "
                     "     OR (?6 = 1 AND j.job_id = ?5 AND "
                     "         (s.metric, s.layer, s.layer_b, s.head, s.position) > "
                     "         (?7, ?8, ?9, ?10, ?11))) "
                     "GROUP BY j.seq, s.metric, s.layer, s.layer_b, s.head, s.position "
                     "ORDER BY j.seq, s.metric, s.layer, s.layer_b, s.head, s.position "
                     "LIMIT ?12"));
    select.Bind(1, filter.sweep_id)
        .Bind(2, filter.model)
        .Bind(3, filter.metric)
        .Bind(4, filter.job_id)
        .Bind(5, filter.after_job_id);
    const ResultKey key = filter.after_key.value_or(ResultKey{});
    select.Bind(6, filter.after_key.has_value() ? 1 : 0)
        .Bind(7, key.metric)
        .Bind(8, key.layer)
        .Bind(9, key.layer_b)
        .Bind(10, key.head)
        .Bind(11, key.position)
        .Bind(12, filter.row_limit > 0 ? filter.row_limit : int64_t{-1});
    std::vector<ResultRow> rows;
    std::map<std::string, layerflow::v1::JobSpec> specs;
    while (true) {
      LF_ASSIGN_OR_RETURN(bool more, select.Step());
      if (!more) break;
      ResultRow& row = rows.emplace_back();
      row.set_sweep_id(filter.sweep_id);
      row.set_job_id(select.Text(0));
      auto [it, inserted] = specs.try_emplace(row.job_id());
      if (inserted && !it->second.ParseFromString(select.Blob(1))) {
        return absl::DataLossError(
            absl::StrCat("job ", row.job_id(), ": stored spec does not parse"));
      }
      const layerflow::v1::JobSpec& spec = it->second;
      row.set_model(spec.model());
      row.set_init_scheme(spec.init_scheme());
      row.set_seed(spec.seed());
      row.set_dataset(spec.dataset().name());
      row.set_context_length(spec.context_length());
      row.set_metric(select.Text(2));
      row.set_layer(static_cast<int32_t>(select.Int(3)));
      // -1 in the store: not applicable, left unset in the row.
      if (select.Int(7) >= 0) row.set_layer_b(static_cast<int32_t>(select.Int(7)));
      if (select.Int(8) >= 0) row.set_head(static_cast<int32_t>(select.Int(8)));
      if (select.Int(9) >= 0) row.set_position(static_cast<int32_t>(select.Int(9)));
      const double sum = select.Double(4);
      const double sum_sq = select.Double(5);
      const int64_t count = select.Int(6);
      row.set_count(count);
      if (count > 0) {
        const double mean = sum / static_cast<double>(count);
        // Population variance; clamped because rounding can take E[x^2] -
        // E[x]^2 slightly below zero when all values are equal.
        const double var = std::max(0.0, sum_sq / static_cast<double>(count) - mean * mean);
        row.set_value(mean);
        row.set_std(std::sqrt(var));
      }
    }
    return rows;
  }

  absl::Status RegisterWorker(const std::string& worker_id, const std::string& name,
                              const std::string& capabilities_bytes, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Statement insert,
                        db_->Prepare("INSERT INTO workers (worker_id, name, capabilities, "
                                     "registered_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)"));
    insert.Bind(1, worker_id).Bind(2, name).BindBlob(3, capabilities_bytes).Bind(4, now_ms);
    return insert.Run();
  }

  absl::Status TouchWorker(const std::string& worker_id, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE workers SET last_seen_ms = MAX(last_seen_ms, ?1) "
                                     "WHERE worker_id = ?2"));
    update.Bind(1, now_ms).Bind(2, worker_id);
    LF_RETURN_IF_ERROR(update.Run());
    if (db_->Changes() == 0) {
      return absl::NotFoundError(absl::StrCat("unknown worker ", worker_id, "; register first"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> CountLiveWorkers(int64_t since_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Statement select,
                        db_->Prepare("SELECT COUNT(*) FROM workers WHERE last_seen_ms >= ?1"));
    select.Bind(1, since_ms);
    LF_ASSIGN_OR_RETURN(bool row, select.Step());
    return row ? select.Int(0) : 0;
  }

  absl::StatusOr<JobStateCounts> CountJobsByState() override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Statement select, db_->Prepare("SELECT state, n FROM job_state_counts"));
    JobStateCounts counts{};
    while (true) {
      LF_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      const int64_t state = select.Int(0);
      if (state >= 0 && state < static_cast<int64_t>(counts.size())) {
        counts[static_cast<size_t>(state)] = select.Int(1);
      }
    }
    return counts;
  }

  absl::StatusOr<RetryResult> RetryJob(const std::string& job_id, const std::string& lease_id,
                                       const std::string& error, int64_t now_ms,
                                       int64_t live_since_ms, const RetryPolicy& policy) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    // A repeat (the first reply was lost): the job keeps the lease id it
    // was retried or failed under until it is leased again.
    if ((row.state == JobState::JOB_STATE_QUEUED || row.state == JobState::JOB_STATE_FAILED) &&
        row.lease_id == lease_id) {
      return RetryResult{row.state == JobState::JOB_STATE_QUEUED, false, 0};
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    LF_ASSIGN_OR_RETURN(Statement select,
                        db_->Prepare("SELECT attempts, worker_id FROM jobs WHERE job_id = ?1"));
    select.Bind(1, job_id);
    LF_ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found) return absl::InternalError(absl::StrCat("job ", job_id, " vanished"));
    const int64_t attempts = select.Int(0);
    const std::string worker_id = select.Text(1);
    // Elsewhere only while somewhere else exists: a lone worker (the
    // embedded default) retries its own host errors.
    bool elsewhere = false;
    {
      LF_ASSIGN_OR_RETURN(Statement other,
                          db_->Prepare("SELECT EXISTS (SELECT 1 FROM workers WHERE worker_id != ?1 "
                                       "AND quarantined = 0 AND last_seen_ms >= ?2)"));
      other.Bind(1, worker_id).Bind(2, live_since_ms);
      LF_ASSIGN_OR_RETURN(bool r, other.Step());
      elsewhere = r && other.Int(0) != 0;
    }
    LF_RETURN_IF_ERROR(
        RecordAttemptLocked(job_id, AttemptOutcome::kHostError, error, now_ms, elsewhere));
    RetryResult result;
    if (attempts >= policy.max_attempts) {
      LF_ASSIGN_OR_RETURN(std::vector<JobAttempt> history, ListAttemptsLocked(job_id));
      LF_RETURN_IF_ERROR(Finish(job_id, JobState::JOB_STATE_FAILED,
                                FailedAttemptsMessage(attempts, history), now_ms));
      LF_RETURN_IF_ERROR(FailDependentsLocked(now_ms));
    } else {
      result.requeued = true;
      result.not_before_unix_ms =
          now_ms + RetryBackoffMs(attempts, policy.backoff_base_ms, policy.backoff_cap_ms);
      LF_ASSIGN_OR_RETURN(
          Statement update,
          db_->Prepare("UPDATE jobs SET state = ?1, error = ?2, not_before_ms = ?3, "
                       "worker_id = '', updated_ms = ?4 WHERE job_id = ?5"));
      update.Bind(1, static_cast<int>(JobState::JOB_STATE_QUEUED))
          .Bind(2, absl::StrCat("attempt ", attempts, " on ", worker_id,
                                " failed (host error, retrying): ", error))
          .Bind(3, result.not_before_unix_ms)
          .Bind(4, now_ms)
          .Bind(5, job_id);
      LF_RETURN_IF_ERROR(update.Run());
    }
    // Never the last live worker: quarantining it would stop the pool (the
    // embedded default's one worker, a typo'd repo id), while its failures
    // stay bounded by max_attempts.
    if (policy.quarantine_after > 0 && !worker_id.empty() && elsewhere) {
      // The worker's latest attempts since its last release, newest first.
      LF_ASSIGN_OR_RETURN(Statement latest,
                          db_->Prepare("SELECT a.outcome, a.job_id, a.error FROM job_attempts a "
                                       "JOIN workers w ON w.worker_id = a.worker_id "
                                       "WHERE a.worker_id = ?1 AND a.id > w.released_after "
                                       "ORDER BY a.id DESC LIMIT ?2"));
      latest.Bind(1, worker_id).Bind(2, int64_t{policy.quarantine_after});
      int64_t host_errors = 0;
      std::vector<std::string> reasons;
      while (true) {
        LF_ASSIGN_OR_RETURN(bool r, latest.Step());
        if (!r) break;
        if (latest.Int(0) != static_cast<int>(AttemptOutcome::kHostError)) break;
        ++host_errors;
        reasons.push_back(absl::StrCat(latest.Text(1), ": ", latest.Text(2)));
      }
      if (host_errors >= policy.quarantine_after) {
        std::reverse(reasons.begin(), reasons.end());
        LF_ASSIGN_OR_RETURN(
            Statement update,
            db_->Prepare("UPDATE workers SET quarantined = 1, quarantine_reason = ?1 "
                         "WHERE worker_id = ?2 AND quarantined = 0"));
        update
            .Bind(1, absl::StrCat(host_errors,
                                  " host errors in a row: ", absl::StrJoin(reasons, "; ")))
            .Bind(2, worker_id);
        LF_RETURN_IF_ERROR(update.Run());
        result.worker_quarantined = db_->Changes() == 1;
      }
    }
    LF_RETURN_IF_ERROR(tx.Commit());
    return result;
  }

  absl::StatusOr<std::vector<JobAttempt>> ListAttempts(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(LoadLeaseRow(job_id).status());
    return ListAttemptsLocked(job_id);
  }

  absl::StatusOr<WorkerRecord> GetWorker(const std::string& worker_id) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(std::vector<WorkerRecord> found, ReadWorkersLocked(worker_id));
    if (found.empty()) {
      return absl::NotFoundError(absl::StrCat("unknown worker ", worker_id));
    }
    return found.front();
  }

  absl::StatusOr<std::vector<WorkerRecord>> ListWorkers() override {
    absl::MutexLock lock(&mu_);
    return ReadWorkersLocked("");
  }

  absl::Status ReleaseWorker(const std::string& worker_id) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(std::vector<WorkerRecord> found, ReadWorkersLocked(worker_id));
    if (found.empty()) {
      return absl::NotFoundError(absl::StrCat("worker_id: unknown worker ", worker_id));
    }
    if (!found.front().quarantined) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", worker_id, " is not quarantined"));
    }
    LF_ASSIGN_OR_RETURN(
        Statement update,
        db_->Prepare("UPDATE workers SET quarantined = 0, quarantine_reason = '', "
                     "released_after = (SELECT COALESCE(MAX(id), 0) FROM job_attempts) "
                     "WHERE worker_id = ?1"));
    update.Bind(1, worker_id);
    LF_RETURN_IF_ERROR(update.Run());
    return tx.Commit();
  }

 private:
  absl::StatusOr<Sweep> GetSweepLocked(const std::string& sweep_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT s.spec, s.created_ms, COUNT(j.seq), "
                     "COALESCE(SUM(j.state = 1), 0), COALESCE(SUM(j.state = 2), 0), "
                     "COALESCE(SUM(j.state = 3), 0), COALESCE(SUM(j.state = 4), 0), "
                     "COALESCE(SUM(j.state = 5), 0), "
                     "COALESCE(SUM(j.chunks_committed), 0), "
                     "COALESCE(SUM(j.chunks_total), 0) "
                     "FROM sweeps s LEFT JOIN jobs j ON j.sweep_id = s.sweep_id "
                     "WHERE s.sweep_id = ?1 GROUP BY s.sweep_id"));
    select.Bind(1, sweep_id);
    LF_ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found) {
      return absl::NotFoundError(absl::StrCat("unknown sweep '", sweep_id, "'"));
    }
    Sweep sweep;
    sweep.set_sweep_id(sweep_id);
    if (!sweep.mutable_spec()->ParseFromString(select.Blob(0))) {
      return absl::DataLossError(absl::StrCat("sweep ", sweep_id, ": stored spec does not parse"));
    }
    sweep.set_created_unix_ms(select.Int(1));
    sweep.set_jobs_total(static_cast<int32_t>(select.Int(2)));
    sweep.set_jobs_queued(static_cast<int32_t>(select.Int(3)));
    sweep.set_jobs_running(static_cast<int32_t>(select.Int(4)));
    sweep.set_jobs_succeeded(static_cast<int32_t>(select.Int(5)));
    sweep.set_jobs_failed(static_cast<int32_t>(select.Int(6)));
    sweep.set_jobs_cancelled(static_cast<int32_t>(select.Int(7)));
    sweep.set_chunks_committed(select.Int(8));
    sweep.set_chunks_total(select.Int(9));
    sweep.set_state(DeriveSweepState(sweep));
    return sweep;
  }

  absl::StatusOr<LeaseRow> LoadLeaseRow(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(Statement select, db_->Prepare("SELECT state, lease_id, lease_expires_ms, "
                                                       "chunks_committed, chunks_total FROM jobs "
                                                       "WHERE job_id = ?1"));
    select.Bind(1, job_id);
    LF_ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found) {
      return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
    }
    return LeaseRow{static_cast<JobState>(select.Int(0)), select.Text(1), select.Int(2),
                    select.Int(3), select.Int(4)};
  }

  // Invariant: a lease is live iff the job is RUNNING under that lease id
  // and now <= lease_expires_ms. The reaper's "lapsed" is exactly the
  // negation of the time part, so a lease never counts as both.
  static absl::Status CheckLiveLease(const std::string& job_id, const std::string& lease_id,
                                     const LeaseRow& row, int64_t now_ms) {
    if (row.lease_id == lease_id && row.state == JobState::JOB_STATE_CANCELLED) {
      return absl::AbortedError(absl::StrCat("job ", job_id, " was cancelled"));
    }
    if (row.lease_id != lease_id || row.state != JobState::JOB_STATE_RUNNING) {
      return absl::AbortedError(absl::StrCat("lease ", lease_id, " of job ", job_id,
                                             " lapsed; the job was requeued or reassigned"));
    }
    if (row.lease_expires_ms < now_ms) {
      return absl::AbortedError(absl::StrCat("lease ", lease_id, " of job ", job_id, " lapsed ",
                                             now_ms - row.lease_expires_ms, " ms ago"));
    }
    return absl::OkStatus();
  }

  // Every QUEUED job whose dependency is FAILED or CANCELLED fails with the
  // reason, repeated until nothing changes (chains of dependencies). Runs
  // inside the caller's transaction. Dependents are never RUNNING: they
  // are leased only after their dependency SUCCEEDED, which is final.
  absl::Status FailDependentsLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (true) {
      LF_ASSIGN_OR_RETURN(
          Statement update,
          db_->Prepare("UPDATE jobs SET state = ?1, worker_id = '', updated_ms = ?2, "
                       "error = (SELECT CASE WHEN d.state = ?3 THEN "
                       "'dependency ' || d.job_id || ' was cancelled' ELSE "
                       "'dependency ' || d.job_id || ' failed: ' || d.error END "
                       "FROM jobs d WHERE d.job_id = jobs.depends_on) "
                       "WHERE state = ?4 AND depends_on != '' AND EXISTS (SELECT 1 "
                       "FROM jobs d WHERE d.job_id = jobs.depends_on AND d.state IN (?1, ?3))"));
      update.Bind(1, static_cast<int>(JobState::JOB_STATE_FAILED))
          .Bind(2, now_ms)
          .Bind(3, static_cast<int>(JobState::JOB_STATE_CANCELLED))
          .Bind(4, static_cast<int>(JobState::JOB_STATE_QUEUED));
      LF_RETURN_IF_ERROR(update.Run());
      if (db_->Changes() == 0) return absl::OkStatus();
    }
  }

  // Appends the end of the job's current lease (its attempts count and
  // worker) to the attempt history; before Finish, which clears worker_id.
  absl::Status RecordAttemptLocked(const std::string& job_id, AttemptOutcome outcome,
                                   const std::string& error, int64_t now_ms, bool elsewhere = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Statement insert,
        db_->Prepare("INSERT INTO job_attempts (job_id, attempt, worker_id, outcome, error, "
                     "ended_ms, elsewhere) SELECT job_id, attempts, worker_id, ?1, ?2, ?3, ?5 "
                     "FROM jobs WHERE job_id = ?4"));
    insert.Bind(1, static_cast<int>(outcome))
        .Bind(2, error)
        .Bind(3, now_ms)
        .Bind(4, job_id)
        .Bind(5, int64_t{elsewhere ? 1 : 0});
    return insert.Run();
  }

  absl::StatusOr<std::vector<JobAttempt>> ListAttemptsLocked(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT attempt, worker_id, outcome, error, ended_ms FROM job_attempts "
                     "WHERE job_id = ?1 ORDER BY id"));
    select.Bind(1, job_id);
    std::vector<JobAttempt> attempts;
    while (true) {
      LF_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      attempts.push_back(JobAttempt{static_cast<int32_t>(select.Int(0)), select.Text(1),
                                    static_cast<AttemptOutcome>(select.Int(2)), select.Text(3),
                                    select.Int(4)});
    }
    return attempts;
  }

  // One worker (worker_id not empty) or all, oldest registration first.
  absl::StatusOr<std::vector<WorkerRecord>> ReadWorkersLocked(const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare("SELECT worker_id, name, registered_ms, last_seen_ms, quarantined, "
                     "quarantine_reason, capabilities FROM workers "
                     "WHERE (?1 = '' OR worker_id = ?1) "
                     "ORDER BY registered_ms, worker_id"));
    select.Bind(1, worker_id);
    std::vector<WorkerRecord> workers;
    while (true) {
      LF_ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      workers.push_back(WorkerRecord{select.Text(0), select.Text(1), select.Int(2), select.Int(3),
                                     select.Int(4) != 0, select.Text(5), select.Blob(6)});
    }
    return workers;
  }

  absl::Status Finish(const std::string& job_id, JobState state, const std::string& error,
                      int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE jobs SET state = ?1, error = ?2, worker_id = '', "
                                     "updated_ms = ?3 WHERE job_id = ?4"));
    update.Bind(1, static_cast<int>(state)).Bind(2, error).Bind(3, now_ms).Bind(4, job_id);
    return update.Run();
  }

  absl::Mutex mu_;
  // One connection per store object; mu_ serialises its transactions.
  std::unique_ptr<Db> db_ ABSL_GUARDED_BY(mu_);
  absl::Mutex checkpoint_mu_;
  bool stop_checkpoints_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  std::thread checkpoint_thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                       const SqliteStoreOptions& options) {
  LF_ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(path, options.busy_timeout_ms));
  // WAL: readers do not block the writer and vice versa; a property of the
  // file, so any connection may set it (it is a no-op once set).
  LF_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode = WAL")) << "database '" << path << "'";
  LF_RETURN_IF_ERROR(db->Exec("PRAGMA synchronous = NORMAL"));
  LF_RETURN_IF_ERROR(sqlite::Migrate(*db)) << "database '" << path << "'";
  if (options.checkpoint_interval_ms <= 0) {
    return std::unique_ptr<Store>(new SqliteStore(std::move(db)));
  }
  LF_ASSIGN_OR_RETURN(std::unique_ptr<Db> checkpointer, Db::Open(path, options.busy_timeout_ms));
  LF_RETURN_IF_ERROR(db->Exec("PRAGMA wal_autocheckpoint = 0"));
  auto store = std::make_unique<SqliteStore>(std::move(db));
  store->StartCheckpoints(std::move(checkpointer), options.checkpoint_interval_ms);
  return std::unique_ptr<Store>(std::move(store));
}

int SqliteSchemaVersion() { return sqlite::LatestSchemaVersion(); }

}  // namespace layerflow::server
