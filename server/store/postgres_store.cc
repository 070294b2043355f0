// A port of sqlite_store.cc statement by statement: the same queries, the
// same order of checks and the same messages, so that both backends pass one
// conformance suite. Where the SQL differs it is PostgreSQL's spelling
// (ON CONFLICT DO NOTHING, GREATEST, COUNT(*) FILTER, casts on parameters).
#include "server/store/postgres_store.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "catalog/results_version.h"
#include "common/job_failures.h"
#include "common/status_macros.h"
#include "server/store/pg_db.h"
#include "server/store/postgres_schema.h"

namespace layerflow::server {
namespace {

using ::layerflow::v1::Job;
using ::layerflow::v1::JobState;
using ::layerflow::v1::MetricStat;
using ::layerflow::v1::ResultRow;
using ::layerflow::v1::Sweep;
using pg::Connection;
using pg::Param;
using pg::Result;
using pg::Transaction;

constexpr absl::string_view kJobColumns =
    "job_id, sweep_id, spec, state, attempts, chunks_committed, chunks_total, "
    "error, worker_id, created_ms, updated_ms, depends_on, phase_totals";

constexpr int kQueued = static_cast<int>(JobState::JOB_STATE_QUEUED);
constexpr int kRunning = static_cast<int>(JobState::JOB_STATE_RUNNING);
constexpr int kSucceeded = static_cast<int>(JobState::JOB_STATE_SUCCEEDED);
constexpr int kFailed = static_cast<int>(JobState::JOB_STATE_FAILED);
constexpr int kCancelled = static_cast<int>(JobState::JOB_STATE_CANCELLED);

// LIMIT n, or no limit (LIMIT NULL) for n <= 0.
Param Limit(int64_t n) { return n > 0 ? Param(n) : Param::Null(); }

absl::StatusOr<Job> ReadJob(const Result& r, int row) {
  Job job;
  job.set_job_id(r.Text(row, 0));
  job.set_sweep_id(r.Text(row, 1));
  if (!job.mutable_spec()->ParseFromString(r.Bytes(row, 2))) {
    return absl::DataLossError(absl::StrCat("job ", job.job_id(), ": stored spec does not parse"));
  }
  job.set_state(static_cast<JobState>(r.Int(row, 3)));
  job.set_attempts(static_cast<int32_t>(r.Int(row, 4)));
  job.set_chunks_committed(r.Int(row, 5));
  job.set_chunks_total(r.Int(row, 6));
  job.set_error(r.Text(row, 7));
  job.set_worker_id(r.Text(row, 8));
  job.set_created_unix_ms(r.Int(row, 9));
  job.set_updated_unix_ms(r.Int(row, 10));
  job.set_depends_on(r.Text(row, 11));
  Job phases;  // only its phase_totals
  if (!phases.ParseFromString(r.Bytes(row, 12))) {
    return absl::DataLossError(
        absl::StrCat("job ", job.job_id(), ": stored phase times do not parse"));
  }
  *job.mutable_phase_totals() = std::move(*phases.mutable_phase_totals());
  return job;
}

struct LeaseRow {
  JobState state;
  std::string lease_id;
  int64_t lease_expires_ms;
  int64_t chunks_committed;
  int64_t chunks_total;
};

std::string NewLeaseId() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return absl::StrCat("lease-", absl::Hex(absl::Uniform<uint64_t>(*gen), absl::kZeroPad16));
}

std::string FailedAttemptsMessage(int64_t attempts, const std::vector<JobAttempt>& history) {
  std::vector<std::string> parts;
  for (const JobAttempt& a : history) {
    parts.push_back(absl::StrCat("attempt ", a.attempt, " on ", a.worker_id, ": ", a.error));
  }
  return absl::StrCat("failed on ", attempts, " attempts: ", absl::StrJoin(parts, "; "));
}

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(std::unique_ptr<Connection> db) : db_(std::move(db)) {}

  absl::Status CreateSweep(const NewSweep& sweep) override {
    absl::MutexLock lock(&mu_);
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
      // Caught here, as the batched INSERT below could not say which job.
      std::set<std::string> seen;
      for (const NewJob& job : sweep.jobs) {
        if (!seen.insert(job.job_id).second) {
          return absl::AlreadyExistsError(
              absl::StrCat("job ", job.job_id, ": twice in sweep ", sweep.sweep_id));
        }
      }
    }
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    if (sweep.limits.max_queued_jobs > 0 || sweep.limits.max_queued_jobs_per_user > 0) {
      // Under the writers' lock: two submissions cannot both pass a bound
      // that only one fits under.
      LF_ASSIGN_OR_RETURN(
          Result queued,
          db_->Exec("SELECT (SELECT n FROM job_state_counts WHERE state = $1::int), "
                    "COALESCE((SELECT queued FROM user_shares WHERE owner = $2::text), 0)",
                    {kQueued, sweep.user}));
      LF_RETURN_IF_ERROR(CheckQueueLimits(sweep, queued.Int(0, 0), queued.Int(0, 1)));
    }
    LF_RETURN_IF_ERROR(db_->Exec("INSERT INTO sweeps (sweep_id, spec, created_ms) "
                                 "VALUES ($1::text, $2::bytea, $3::bigint)",
                                 {sweep.sweep_id, Param::Bytes(sweep.spec.SerializeAsString()),
                                  sweep.created_unix_ms})
                           .status())
        << "sweep " << sweep.sweep_id;
    // Multi-row INSERTs: a sweep of 10,000 jobs is 20 round trips, not
    // 10,000. The rows of one VALUES list take their seq in list order, so
    // creation order is kept.
    constexpr size_t kRowsPerInsert = 500;
    for (size_t first = 0; first < sweep.jobs.size(); first += kRowsPerInsert) {
      const size_t end = std::min(sweep.jobs.size(), first + kRowsPerInsert);
      // $1..$6 are the same for every job of the sweep.
      std::vector<Param> params = {sweep.sweep_id,        sweep.spec.priority(),    kQueued,
                                   sweep.created_unix_ms, catalog::kResultsVersion, sweep.user};
      std::string sql =
          "INSERT INTO jobs (job_id, sweep_id, model, spec, priority, state, chunks_total, "
          "created_ms, updated_ms, kind, depends_on, results_version, owner) VALUES ";
      for (size_t i = first; i < end; ++i) {
        const NewJob& job = sweep.jobs[i];
        const int b = static_cast<int>(params.size());
        absl::StrAppend(&sql, i == first ? "" : ", ", "($", b + 1, "::text, $1::text, $", b + 2,
                        "::text, $", b + 3, "::bytea, $2::bigint, $3::int, $", b + 4,
                        "::bigint, $4::bigint, $4::bigint, $", b + 5, "::int, $", b + 6,
                        "::text, $5::int, $6::text)");
        params.insert(params.end(),
                      {job.job_id, job.spec.model(), Param::Bytes(job.spec.SerializeAsString()),
                       job.chunks_total, static_cast<int>(job.spec.kind()), job.depends_on});
      }
      LF_RETURN_IF_ERROR(db_->Exec(sql, params).status()) << "jobs of sweep " << sweep.sweep_id;
    }
    LF_RETURN_IF_ERROR(tx.Commit());
    // Fresh statistics for the lease's plan. Without them (a new database,
    // or a queue that grew since autovacuum last looked) PostgreSQL
    // estimates a handful of queued jobs and plans the lease as "every
    // queued job, then sort" (12 ms at 10,000) instead of reading the
    // queue's head off jobs_runnable (0.1 ms); the statistics change
    // invalidates the cached plans. After the commit, outside the writers'
    // lock; best effort: the sweep is stored either way.
    if (sweep.jobs.size() >= kAnalyzeAfterJobs) (void)db_->ExecScript("ANALYZE jobs");
    return absl::OkStatus();
  }

  // A sweep of this many jobs or more refreshes the jobs table's statistics.
  static constexpr size_t kAnalyzeAfterJobs = 100;

  absl::StatusOr<Sweep> GetSweep(const std::string& sweep_id) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    return GetSweepLocked(sweep_id);
  }

  using Store::ListJobs;
  absl::StatusOr<std::vector<Job>> ListJobs(const JobFilter& filter) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(
        Result r,
        db_->Exec(absl::StrCat(
                      "SELECT ", kJobColumns,
                      " FROM jobs WHERE ($1::text = '' OR sweep_id = $1::text) "
                      "AND ($2::int = 0 OR state = $2::int) "
                      "AND ($3::text = '' OR seq > (SELECT seq FROM jobs WHERE job_id = $3::text)) "
                      "ORDER BY seq LIMIT $4::bigint"),
                  {filter.sweep_id, static_cast<int>(filter.state), filter.after_job_id,
                   Limit(filter.limit)}));
    std::vector<Job> jobs;
    for (int i = 0; i < r.rows(); ++i) {
      LF_ASSIGN_OR_RETURN(Job job, ReadJob(r, i));
      jobs.push_back(std::move(job));
    }
    return jobs;
  }

  absl::StatusOr<Job> GetJob(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(Result r, db_->Exec(absl::StrCat("SELECT ", kJobColumns,
                                                         " FROM jobs WHERE job_id = $1::text"),
                                            {job_id}));
    if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
    return ReadJob(r, 0);
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
    LF_RETURN_IF_ERROR(db_->Exec("UPDATE jobs SET state = $1::int, worker_id = '', "
                                 "updated_ms = $2::bigint WHERE sweep_id = $3::text "
                                 "AND state IN ($4::int, $5::int)",
                                 {kCancelled, now_ms, sweep_id, kQueued, kRunning})
                           .status());
    LF_RETURN_IF_ERROR(FailDependentsLocked(now_ms));
    LF_ASSIGN_OR_RETURN(sweep, GetSweepLocked(sweep_id));
    LF_RETURN_IF_ERROR(tx.Commit());
    return sweep;
  }

  absl::StatusOr<Sweep> RetrySweep(const std::string& sweep_id, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_RETURN_IF_ERROR(GetSweepLocked(sweep_id).status());
    // A retry is a fresh start: a host that failed the job may be fixed.
    LF_RETURN_IF_ERROR(db_->Exec("UPDATE job_attempts SET elsewhere = 0 WHERE job_id IN "
                                 "(SELECT job_id FROM jobs WHERE sweep_id = $1::text "
                                 "AND state IN ($2::int, $3::int))",
                                 {sweep_id, kFailed, kCancelled})
                           .status());
    LF_ASSIGN_OR_RETURN(
        Result update,
        db_->Exec("UPDATE jobs SET state = $1::int, attempts = 0, error = '', not_before_ms = 0, "
                  "worker_id = '', lease_id = '', lease_expires_ms = 0, updated_ms = $2::bigint "
                  "WHERE sweep_id = $3::text AND state IN ($4::int, $5::int)",
                  {kQueued, now_ms, sweep_id, kFailed, kCancelled}));
    if (update.affected() == 0) {
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
    if (resident.empty()) {
      // The head, picked and leased by lf_lease_head (schema v4) in one
      // round trip, its own transaction under the writers' lock.
      Lease lease;
      lease.lease_id = NewLeaseId();
      lease.expires_unix_ms = now_ms + ttl_ms;
      static const std::string* sql = new std::string(
          absl::StrCat("SELECT ", kJobColumns,
                       " FROM lf_lease_head($1::text, $2::bigint, $3::text, $4::bigint, "
                       "$5::bigint)"));
      LF_ASSIGN_OR_RETURN(
          Result r, db_->ExecOnce(*sql, {worker_id, now_ms, lease.lease_id, lease.expires_unix_ms,
                                         max_running_jobs_per_user}));
      if (r.rows() == 0) return std::optional<Lease>();
      LF_ASSIGN_OR_RETURN(lease.job, ReadJob(r, 0));
      lease.resume_from_sequence = lease.job.chunks_committed();
      return std::optional<Lease>(std::move(lease));
    }
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    // Fair share, as lf_lease_head: the users with queued jobs, fewest
    // running first, each one's head sought on jobs_owner_runnable.
    LF_ASSIGN_OR_RETURN(
        Result pick,
        db_->Exec(
            absl::StrCat("WITH heads AS MATERIALIZED (SELECT (SELECT j.seq FROM jobs j WHERE "
                         "j.owner = u.owner AND ",
                         kRunnable,
                         " ORDER BY j.priority DESC, j.seq LIMIT 1) AS seq, u.running, u.owner "
                         "FROM user_shares u WHERE u.queued > 0 "
                         "AND ($5::bigint <= 0 OR u.running < $5::bigint)) "
                         "SELECT h.seq, j.sweep_id, j.priority FROM heads h JOIN jobs j "
                         "ON j.seq = h.seq ORDER BY h.running, h.owner LIMIT 1"),
            {kQueued, now_ms, kSucceeded, worker_id, max_running_jobs_per_user}));
    if (pick.rows() == 0) return std::optional<Lease>();
    int64_t seq = pick.Int(0, 0);
    LF_ASSIGN_OR_RETURN(
        seq, LocalPickLocked(seq, pick.Text(0, 1), pick.Int(0, 2), now_ms, worker_id, resident));
    Lease lease;
    lease.lease_id = NewLeaseId();
    lease.expires_unix_ms = now_ms + ttl_ms;
    LF_ASSIGN_OR_RETURN(
        Result r,
        db_->Exec(absl::StrCat("UPDATE jobs SET state = $1::int, attempts = attempts + 1, "
                               "worker_id = $2::text, lease_id = $3::text, "
                               "lease_expires_ms = $4::bigint, updated_ms = $5::bigint "
                               "WHERE seq = $6::bigint RETURNING ",
                               kJobColumns),
                  {kRunning, worker_id, lease.lease_id, lease.expires_unix_ms, now_ms, seq}));
    if (r.rows() == 0) return absl::InternalError("leased job vanished");
    LF_ASSIGN_OR_RETURN(lease.job, ReadJob(r, 0));
    lease.resume_from_sequence = lease.job.chunks_committed();
    LF_RETURN_IF_ERROR(tx.Commit());
    return std::optional<Lease>(std::move(lease));
  }

  absl::StatusOr<bool> RenewLease(const std::string& job_id, const std::string& lease_id,
                                  int64_t now_ms, int64_t ttl_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    if (row.state == JobState::JOB_STATE_CANCELLED && row.lease_id == lease_id) return true;
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    LF_RETURN_IF_ERROR(
        db_->Exec("UPDATE jobs SET lease_expires_ms = $1::bigint WHERE job_id = $2::text",
                  {now_ms + ttl_ms, job_id})
            .status());
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
      LF_ASSIGN_OR_RETURN(
          Result insert,
          db_->Exec("INSERT INTO chunks (job_id, sequence, prompt_tokens, committed_ms) "
                    "VALUES ($1::text, $2::bigint, $3::text, $4::bigint) "
                    "ON CONFLICT (job_id, sequence) DO NOTHING",
                    {job_id, sequence, absl::StrJoin(prompt_tokens, ","), now_ms}));
      result.newly_committed = insert.affected() == 1;
    }
    if (!result.newly_committed) {
      // A repeat: acknowledged, the first commit's statistics stand.
      result.job_chunks_committed = row.chunks_committed;
      return result;  // nothing written; the transaction rolls back
    }
    if (!stats.empty()) {
      // One multi-row INSERT: a chunk of many stats is one round trip.
      std::string sql =
          "INSERT INTO chunk_stats (job_id, sequence, metric, layer, sum, sum_sq, count, "
          "layer_b, head, position) VALUES ";
      std::vector<Param> params = {job_id, sequence};
      for (size_t i = 0; i < stats.size(); ++i) {
        const MetricStat& stat = stats[i];
        const int base = static_cast<int>(params.size());
        absl::StrAppend(&sql, i == 0 ? "" : ", ", "($1::text, $2::bigint, $", base + 1, "::text, $",
                        base + 2, "::bigint, $", base + 3, "::double precision, $", base + 4,
                        "::double precision, $", base + 5, "::bigint, $", base + 6, "::bigint, $",
                        base + 7, "::bigint, $", base + 8, "::bigint)");
        // Unset optional key fields are stored as -1.
        params.insert(params.end(),
                      {stat.metric(), int64_t{stat.layer()}, stat.sum(), stat.sum_sq(),
                       stat.count(), stat.has_layer_b() ? int64_t{stat.layer_b()} : int64_t{-1},
                       stat.has_head() ? int64_t{stat.head()} : int64_t{-1},
                       stat.has_position() ? int64_t{stat.position()} : int64_t{-1}});
      }
      LF_RETURN_IF_ERROR(db_->Exec(sql, params).status())
          << "chunk " << sequence << " of job " << job_id;
    }
    LF_RETURN_IF_ERROR(db_->Exec("UPDATE jobs SET chunks_committed = chunks_committed + 1, "
                                 "updated_ms = $1::bigint WHERE job_id = $2::text",
                                 {now_ms, job_id})
                           .status());
    LF_RETURN_IF_ERROR(tx.Commit());
    result.job_chunks_committed = row.chunks_committed + 1;
    return result;
  }

  absl::Status AddPhaseTimes(const std::string& job_id,
                             const std::vector<layerflow::v1::PhaseTime>& times) override {
    if (times.empty()) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(
        Result r, db_->Exec("SELECT phase_totals FROM jobs WHERE job_id = $1::text", {job_id}));
    if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
    Job totals;
    if (!totals.ParseFromString(r.Bytes(0, 0))) {
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
    LF_RETURN_IF_ERROR(db_->Exec("UPDATE jobs SET phase_totals = $1::bytea WHERE job_id = $2::text",
                                 {Param::Bytes(totals.SerializeAsString()), job_id})
                           .status());
    return tx.Commit();
  }

  absl::Status CheckLease(const std::string& job_id, const std::string& lease_id,
                          int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    return CheckLiveLease(job_id, lease_id, row, now_ms);
  }

  absl::Status CompleteJob(const std::string& job_id, const std::string& lease_id,
                           int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    if (row.state == JobState::JOB_STATE_SUCCEEDED && row.lease_id == lease_id) {
      return absl::OkStatus();
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    if (row.chunks_committed < row.chunks_total) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has ",
                                                        row.chunks_committed, " of ",
                                                        row.chunks_total, " chunks committed"));
    }
    LF_RETURN_IF_ERROR(FinishWithAttemptLocked(job_id, JobState::JOB_STATE_SUCCEEDED,
                                               AttemptOutcome::kSucceeded, "", now_ms));
    return tx.Commit();
  }

  absl::Status FailJob(const std::string& job_id, const std::string& lease_id,
                       const std::string& error, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    // lf_fail_job (schema v4): the live-lease check, the attempt, the
    // failure and the dependents' in one round trip; it returns the row it
    // checked, from which a refusal gets the usual error.
    LF_ASSIGN_OR_RETURN(Result r,
                        db_->ExecOnce("SELECT o_found, o_failed, o_state, o_lease_id, "
                                      "o_lease_expires_ms FROM lf_fail_job($1::text, $2::text, "
                                      "$3::text, $4::bigint)",
                                      {job_id, lease_id, error, now_ms}));
    if (r.rows() != 1 || !r.Bool(0, 0)) {
      return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
    }
    if (r.Bool(0, 1)) return absl::OkStatus();
    const LeaseRow row{static_cast<JobState>(r.Int(0, 2)), r.Text(0, 3), r.Int(0, 4), 0, 0};
    // A repeat (the first reply was lost) is acknowledged.
    if (row.state == JobState::JOB_STATE_FAILED && row.lease_id == lease_id) {
      return absl::OkStatus();
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    return absl::InternalError(absl::StrCat("job ", job_id, ": lf_fail_job refused a live lease"));
  }

  absl::Status ReleaseLease(const std::string& job_id, const std::string& lease_id,
                            int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(LeaseRow row, LoadLeaseRow(job_id));
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    LF_RETURN_IF_ERROR(
        db_->Exec("UPDATE jobs SET state = $1::int, attempts = GREATEST(attempts - 1, 0), "
                  "not_before_ms = $2::bigint, worker_id = '', lease_id = '', "
                  "updated_ms = $2::bigint WHERE job_id = $3::text",
                  {kQueued, now_ms, job_id})
            .status());
    return tx.Commit();
  }

  absl::StatusOr<int64_t> ExtendRunningLeases(int64_t now_ms, int64_t ttl_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Result update,
                        db_->Exec("UPDATE jobs SET lease_expires_ms = $1::bigint "
                                  "WHERE state = $2::int AND lease_expires_ms < $1::bigint",
                                  {now_ms + ttl_ms, kRunning}));
    return update.affected();
  }

  absl::StatusOr<int64_t> RequeueLapsedLeases(int64_t now_ms, int32_t max_attempts,
                                              int64_t backoff_base_ms) override {
    absl::MutexLock lock(&mu_);
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_ASSIGN_OR_RETURN(Result lapsed,
                        db_->Exec("SELECT seq, attempts, job_id FROM jobs WHERE state = $1::int "
                                  "AND lease_expires_ms < $2::bigint ORDER BY seq",
                                  {kRunning, now_ms}));
    for (int i = 0; i < lapsed.rows(); ++i) {
      const int64_t seq = lapsed.Int(i, 0);
      const int64_t attempts = lapsed.Int(i, 1);
      const std::string job_id = lapsed.Text(i, 2);
      LF_RETURN_IF_ERROR(
          db_->Exec("INSERT INTO job_attempts (job_id, attempt, worker_id, outcome, error, "
                    "ended_ms) SELECT job_id, attempts, worker_id, $1::int, 'lease lapsed', "
                    "$2::bigint FROM jobs WHERE seq = $3::bigint",
                    {static_cast<int>(AttemptOutcome::kLeaseLapsed), now_ms, seq})
              .status());
      const bool exhausted = attempts >= max_attempts;
      std::string error;
      if (exhausted) {
        error = absl::StrCat("lease lapsed ", attempts, " times");
        LF_ASSIGN_OR_RETURN(std::vector<JobAttempt> history, ListAttemptsLocked(job_id));
        if (std::any_of(history.begin(), history.end(), [](const JobAttempt& a) {
              return a.outcome != AttemptOutcome::kLeaseLapsed;
            })) {
          error = FailedAttemptsMessage(attempts, history);
        }
      }
      // base * 2^(attempts-1), with the shift capped so it cannot overflow.
      const int shift = static_cast<int>(std::clamp<int64_t>(attempts - 1, 0, 20));
      const int64_t not_before = now_ms + (backoff_base_ms << shift);
      LF_RETURN_IF_ERROR(db_->Exec("UPDATE jobs SET state = $1::int, error = $2::text, "
                                   "not_before_ms = $3::bigint, worker_id = '', lease_id = '', "
                                   "updated_ms = $4::bigint WHERE seq = $5::bigint",
                                   {exhausted ? kFailed : kQueued, error,
                                    exhausted ? int64_t{0} : not_before, now_ms, seq})
                             .status());
    }
    LF_RETURN_IF_ERROR(FailDependentsLocked(now_ms));
    LF_RETURN_IF_ERROR(tx.Commit());
    return static_cast<int64_t>(lapsed.rows());
  }

  absl::StatusOr<std::vector<ResultRow>> QueryResults(const ResultFilter& filter) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_RETURN_IF_ERROR(GetSweepLocked(filter.sweep_id).status());
    const ResultKey key = filter.after_key.value_or(ResultKey{});
    LF_ASSIGN_OR_RETURN(
        Result r,
        db_->Exec("SELECT j.job_id, j.spec, s.metric, s.layer, SUM(s.sum), SUM(s.sum_sq), "
                  "SUM(s.count), s.layer_b, s.head, s.position "
                  "FROM chunk_stats s JOIN jobs j ON j.job_id = s.job_id "
                  "WHERE j.sweep_id = $1::text AND ($2::text = '' OR j.model = $2::text) "
                  "AND ($3::text = '' OR s.metric = $3::text) "
                  "AND ($4::text = '' OR j.job_id = $4::text) "
                  // The keyset: later jobs, or later keys of after_job_id.
                  "AND ($5::text = '' OR j.seq > (SELECT seq FROM jobs WHERE job_id = $5::text) "
                  "     OR ($6::int = 1 AND j.job_id = $5::text AND "
                  "         (s.metric, s.layer, s.layer_b, s.head, s.position) > "
                  "         ($7::text, $8::bigint, $9::bigint, $10::bigint, $11::bigint))) "
                  "GROUP BY j.seq, s.metric, s.layer, s.layer_b, s.head, s.position "
                  "ORDER BY j.seq, s.metric, s.layer, s.layer_b, s.head, s.position "
                  "LIMIT $12::bigint",
                  {filter.sweep_id, filter.model, filter.metric, filter.job_id, filter.after_job_id,
                   filter.after_key.has_value() ? 1 : 0, key.metric, int64_t{key.layer},
                   int64_t{key.layer_b}, int64_t{key.head}, int64_t{key.position},
                   Limit(filter.row_limit)}));
    std::vector<ResultRow> rows;
    std::map<std::string, layerflow::v1::JobSpec> specs;
    for (int i = 0; i < r.rows(); ++i) {
      ResultRow& row = rows.emplace_back();
      row.set_sweep_id(filter.sweep_id);
      row.set_job_id(r.Text(i, 0));
      auto [it, inserted] = specs.try_emplace(row.job_id());
      if (inserted && !it->second.ParseFromString(r.Bytes(i, 1))) {
        return absl::DataLossError(
            absl::StrCat("job ", row.job_id(), ": stored spec does not parse"));
      }
      const layerflow::v1::JobSpec& spec = it->second;
      row.set_model(spec.model());
      row.set_init_scheme(spec.init_scheme());
      row.set_seed(spec.seed());
      row.set_dataset(spec.dataset().name());
      row.set_context_length(spec.context_length());
      row.set_metric(r.Text(i, 2));
      row.set_layer(static_cast<int32_t>(r.Int(i, 3)));
      // -1 in the store: not applicable, left unset in the row.
      if (r.Int(i, 7) >= 0) row.set_layer_b(static_cast<int32_t>(r.Int(i, 7)));
      if (r.Int(i, 8) >= 0) row.set_head(static_cast<int32_t>(r.Int(i, 8)));
      if (r.Int(i, 9) >= 0) row.set_position(static_cast<int32_t>(r.Int(i, 9)));
      const double sum = r.Double(i, 4);
      const double sum_sq = r.Double(i, 5);
      const int64_t count = r.Int(i, 6);
      row.set_count(count);
      if (count > 0) {
        const double mean = sum / static_cast<double>(count);
        // Population variance, clamped: rounding can take it below zero.
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
    LF_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(*db_));
    LF_RETURN_IF_ERROR(db_->Exec("INSERT INTO workers (worker_id, name, capabilities, "
                                 "registered_ms, last_seen_ms) VALUES ($1::text, $2::text, "
                                 "$3::bytea, $4::bigint, $4::bigint)",
                                 {worker_id, name, Param::Bytes(capabilities_bytes), now_ms})
                           .status());
    return tx.Commit();
  }

  absl::Status TouchWorker(const std::string& worker_id, int64_t now_ms) override {
    absl::MutexLock lock(&mu_);
    // One statement, its own transaction: it reads nothing it then writes
    // (GREATEST keeps last_seen monotonic), so it needs no writers' lock,
    // and every LeaseJob and Heartbeat saves three round trips.
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(Result r,
                        db_->Exec("UPDATE workers SET last_seen_ms = GREATEST(last_seen_ms, "
                                  "$1::bigint) WHERE worker_id = $2::text",
                                  {now_ms, worker_id}));
    if (r.affected() == 0) {
      return absl::NotFoundError(absl::StrCat("unknown worker ", worker_id, "; register first"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> CountLiveWorkers(int64_t since_ms) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(
        Result r,
        db_->Exec("SELECT COUNT(*) FROM workers WHERE last_seen_ms >= $1::bigint", {since_ms}));
    return r.Int(0, 0);
  }

  absl::StatusOr<JobStateCounts> CountJobsByState() override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(Result r, db_->Exec("SELECT state, n FROM job_state_counts"));
    JobStateCounts counts{};
    for (int i = 0; i < r.rows(); ++i) {
      const int64_t state = r.Int(i, 0);
      if (state >= 0 && state < static_cast<int64_t>(counts.size())) {
        counts[static_cast<size_t>(state)] = r.Int(i, 1);
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
    // A repeat (the first reply was lost).
    if ((row.state == JobState::JOB_STATE_QUEUED || row.state == JobState::JOB_STATE_FAILED) &&
        row.lease_id == lease_id) {
      return RetryResult{row.state == JobState::JOB_STATE_QUEUED, false, 0};
    }
    LF_RETURN_IF_ERROR(CheckLiveLease(job_id, lease_id, row, now_ms));
    LF_ASSIGN_OR_RETURN(
        Result job,
        db_->Exec("SELECT attempts, worker_id FROM jobs WHERE job_id = $1::text", {job_id}));
    if (job.rows() == 0) return absl::InternalError(absl::StrCat("job ", job_id, " vanished"));
    const int64_t attempts = job.Int(0, 0);
    const std::string worker_id = job.Text(0, 1);
    // Elsewhere only while somewhere else exists.
    LF_ASSIGN_OR_RETURN(
        Result other, db_->Exec("SELECT EXISTS (SELECT 1 FROM workers WHERE worker_id <> $1::text "
                                "AND quarantined = 0 AND last_seen_ms >= $2::bigint)",
                                {worker_id, live_since_ms}));
    const bool elsewhere = other.Bool(0, 0);
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
      LF_RETURN_IF_ERROR(
          db_->Exec("UPDATE jobs SET state = $1::int, error = $2::text, "
                    "not_before_ms = $3::bigint, worker_id = '', updated_ms = $4::bigint "
                    "WHERE job_id = $5::text",
                    {kQueued,
                     absl::StrCat("attempt ", attempts, " on ", worker_id,
                                  " failed (host error, retrying): ", error),
                     result.not_before_unix_ms, now_ms, job_id})
              .status());
    }
    // Never the last live worker (sqlite_store.cc says why).
    if (policy.quarantine_after > 0 && !worker_id.empty() && elsewhere) {
      LF_ASSIGN_OR_RETURN(Result latest,
                          db_->Exec("SELECT a.outcome, a.job_id, a.error FROM job_attempts a "
                                    "JOIN workers w ON w.worker_id = a.worker_id "
                                    "WHERE a.worker_id = $1::text AND a.id > w.released_after "
                                    "ORDER BY a.id DESC LIMIT $2::bigint",
                                    {worker_id, int64_t{policy.quarantine_after}}));
      int64_t host_errors = 0;
      std::vector<std::string> reasons;
      for (int i = 0; i < latest.rows(); ++i) {
        if (latest.Int(i, 0) != static_cast<int>(AttemptOutcome::kHostError)) break;
        ++host_errors;
        reasons.push_back(absl::StrCat(latest.Text(i, 1), ": ", latest.Text(i, 2)));
      }
      if (host_errors >= policy.quarantine_after) {
        std::reverse(reasons.begin(), reasons.end());
        LF_ASSIGN_OR_RETURN(
            Result update,
            db_->Exec(
                "UPDATE workers SET quarantined = 1, quarantine_reason = $1::text "
                "WHERE worker_id = $2::text AND quarantined = 0",
                {absl::StrCat(host_errors, " host errors in a row: ", absl::StrJoin(reasons, "; ")),
                 worker_id}));
        result.worker_quarantined = update.affected() == 1;
      }
    }
    LF_RETURN_IF_ERROR(tx.Commit());
    return result;
  }

  absl::StatusOr<std::vector<JobAttempt>> ListAttempts(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_RETURN_IF_ERROR(LoadLeaseRow(job_id).status());
    return ListAttemptsLocked(job_id);
  }

  absl::StatusOr<WorkerRecord> GetWorker(const std::string& worker_id) override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
    LF_ASSIGN_OR_RETURN(std::vector<WorkerRecord> found, ReadWorkersLocked(worker_id));
    if (found.empty()) return absl::NotFoundError(absl::StrCat("unknown worker ", worker_id));
    return found.front();
  }

  absl::StatusOr<std::vector<WorkerRecord>> ListWorkers() override {
    absl::MutexLock lock(&mu_);
    LF_RETURN_IF_ERROR(db_->EnsureConnected());
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
    LF_RETURN_IF_ERROR(db_->Exec("UPDATE workers SET quarantined = 0, quarantine_reason = '', "
                                 "released_after = (SELECT COALESCE(MAX(id), 0) FROM job_attempts) "
                                 "WHERE worker_id = $1::text",
                                 {worker_id})
                           .status());
    return tx.Commit();
  }

 private:
  // The head's conditions; $1 QUEUED, $2 now, $3 SUCCEEDED, $4 the worker.
  static constexpr absl::string_view kRunnable =
      // The dependency as a scalar subquery (schema v4 says why).
      "j.state = $1::int AND j.not_before_ms <= $2::bigint AND (j.depends_on = '' OR "
      "(SELECT d.state FROM jobs d WHERE d.job_id = j.depends_on) = $3::int) "
      "AND NOT EXISTS (SELECT 1 FROM job_attempts a WHERE a.job_id = j.job_id "
      "AND a.worker_id = $4::text AND a.elsewhere = 1)";

  absl::StatusOr<int64_t> LocalPickLocked(int64_t head_seq, const std::string& sweep_id,
                                          int64_t priority, int64_t now_ms,
                                          const std::string& worker_id,
                                          const std::vector<ResidentModelRef>& resident)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Result r, db_->Exec(absl::StrCat("SELECT j.seq, j.model, j.kind, j.spec FROM jobs j WHERE ",
                                         kRunnable,
                                         " AND j.sweep_id = $5::text AND j.priority = $6::bigint "
                                         "AND j.seq >= $7::bigint ORDER BY j.seq LIMIT $8::bigint"),
                            {kQueued, now_ms, kSucceeded, worker_id, sweep_id, priority, head_seq,
                             kLocalityWindow}));
    for (int i = 0; i < r.rows(); ++i) {
      if (r.Int(i, 2) != static_cast<int>(layerflow::v1::JOB_KIND_EXTRACT)) continue;
      const std::string model = r.Text(i, 1);
      if (std::none_of(resident.begin(), resident.end(),
                       [&](const ResidentModelRef& ref) { return ref.model == model; })) {
        continue;
      }
      layerflow::v1::JobSpec spec;
      if (!spec.ParseFromString(r.Bytes(i, 3))) {
        return absl::DataLossError(
            absl::StrCat("job seq ", r.Int(i, 0), ": stored spec does not parse"));
      }
      for (const ResidentModelRef& ref : resident) {
        if (ref.model == spec.model() && ref.init_scheme == spec.init_scheme() &&
            ref.seed == spec.seed() && ref.dtype == spec.dtype()) {
          return r.Int(i, 0);
        }
      }
    }
    return head_seq;
  }

  absl::StatusOr<Sweep> GetSweepLocked(const std::string& sweep_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Result r,
        db_->Exec("SELECT s.spec, s.created_ms, COUNT(j.seq), "
                  "COUNT(*) FILTER (WHERE j.state = 1), COUNT(*) FILTER (WHERE j.state = 2), "
                  "COUNT(*) FILTER (WHERE j.state = 3), COUNT(*) FILTER (WHERE j.state = 4), "
                  "COUNT(*) FILTER (WHERE j.state = 5), "
                  "COALESCE(SUM(j.chunks_committed), 0), COALESCE(SUM(j.chunks_total), 0) "
                  "FROM sweeps s LEFT JOIN jobs j ON j.sweep_id = s.sweep_id "
                  "WHERE s.sweep_id = $1::text GROUP BY s.sweep_id",
                  {sweep_id}));
    if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("unknown sweep '", sweep_id, "'"));
    Sweep sweep;
    sweep.set_sweep_id(sweep_id);
    if (!sweep.mutable_spec()->ParseFromString(r.Bytes(0, 0))) {
      return absl::DataLossError(absl::StrCat("sweep ", sweep_id, ": stored spec does not parse"));
    }
    sweep.set_created_unix_ms(r.Int(0, 1));
    sweep.set_jobs_total(static_cast<int32_t>(r.Int(0, 2)));
    sweep.set_jobs_queued(static_cast<int32_t>(r.Int(0, 3)));
    sweep.set_jobs_running(static_cast<int32_t>(r.Int(0, 4)));
    sweep.set_jobs_succeeded(static_cast<int32_t>(r.Int(0, 5)));
    sweep.set_jobs_failed(static_cast<int32_t>(r.Int(0, 6)));
    sweep.set_jobs_cancelled(static_cast<int32_t>(r.Int(0, 7)));
    sweep.set_chunks_committed(r.Int(0, 8));
    sweep.set_chunks_total(r.Int(0, 9));
    sweep.set_state(DeriveSweepState(sweep));
    return sweep;
  }

  absl::StatusOr<LeaseRow> LoadLeaseRow(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(Result r,
                        db_->Exec("SELECT state, lease_id, lease_expires_ms, chunks_committed, "
                                  "chunks_total FROM jobs WHERE job_id = $1::text",
                                  {job_id}));
    if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
    return LeaseRow{static_cast<JobState>(r.Int(0, 0)), r.Text(0, 1), r.Int(0, 2), r.Int(0, 3),
                    r.Int(0, 4)};
  }

  // A lease is live iff the job is RUNNING under that lease id and now <=
  // lease_expires_ms (as SqliteStore::CheckLiveLease).
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
  // reason, repeated until nothing changes (each statement sees the last
  // one's changes, so chains fail one link per round).
  absl::Status FailDependentsLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (true) {
      LF_ASSIGN_OR_RETURN(
          Result r,
          db_->Exec("UPDATE jobs SET state = $1::int, worker_id = '', updated_ms = $2::bigint, "
                    "error = (SELECT CASE WHEN d.state = $3::int THEN "
                    "'dependency ' || d.job_id || ' was cancelled' ELSE "
                    "'dependency ' || d.job_id || ' failed: ' || d.error END "
                    "FROM jobs d WHERE d.job_id = jobs.depends_on) "
                    // A scalar subquery, not EXISTS: PostgreSQL made the
                    // semi-join a hash join over every failed job (0.3 ms
                    // at 5,000, growing); this way the statement reads
                    // only the queued dependents (the partial index).
                    "WHERE state = $4::int AND depends_on <> '' AND (SELECT d.state "
                    "FROM jobs d WHERE d.job_id = jobs.depends_on) IN ($1::int, $3::int)",
                    {kFailed, now_ms, kCancelled, kQueued}));
      if (r.affected() == 0) return absl::OkStatus();
    }
  }

  absl::Status RecordAttemptLocked(const std::string& job_id, AttemptOutcome outcome,
                                   const std::string& error, int64_t now_ms, bool elsewhere = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return db_
        ->Exec(
            "INSERT INTO job_attempts (job_id, attempt, worker_id, outcome, error, "
            "ended_ms, elsewhere) SELECT job_id, attempts, worker_id, $1::int, $2::text, "
            "$3::bigint, $5::int FROM jobs WHERE job_id = $4::text",
            {static_cast<int>(outcome), error, now_ms, job_id, elsewhere ? 1 : 0})
        .status();
  }

  // RecordAttemptLocked then Finish, as one statement: both parts see the
  // row as it was before the statement, so the attempt records the lease's
  // worker before the update clears it.
  absl::Status FinishWithAttemptLocked(const std::string& job_id, JobState state,
                                       AttemptOutcome outcome, const std::string& error,
                                       int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return db_
        ->Exec(
            "WITH attempt AS (INSERT INTO job_attempts (job_id, attempt, worker_id, outcome, "
            "error, ended_ms, elsewhere) SELECT job_id, attempts, worker_id, $1::int, "
            "$2::text, $3::bigint, 0 FROM jobs WHERE job_id = $4::text) "
            "UPDATE jobs SET state = $5::int, error = $2::text, worker_id = '', "
            "updated_ms = $3::bigint WHERE job_id = $4::text",
            {static_cast<int>(outcome), error, now_ms, job_id, static_cast<int>(state)})
        .status();
  }

  absl::StatusOr<std::vector<JobAttempt>> ListAttemptsLocked(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(Result r,
                        db_->Exec("SELECT attempt, worker_id, outcome, error, ended_ms FROM "
                                  "job_attempts WHERE job_id = $1::text ORDER BY id",
                                  {job_id}));
    std::vector<JobAttempt> attempts;
    for (int i = 0; i < r.rows(); ++i) {
      attempts.push_back(JobAttempt{static_cast<int32_t>(r.Int(i, 0)), r.Text(i, 1),
                                    static_cast<AttemptOutcome>(r.Int(i, 2)), r.Text(i, 3),
                                    r.Int(i, 4)});
    }
    return attempts;
  }

  absl::StatusOr<std::vector<WorkerRecord>> ReadWorkersLocked(const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LF_ASSIGN_OR_RETURN(
        Result r,
        // Two texts, not "$1 = '' OR worker_id = $1": a prepared
        // statement's generic plan cannot use the key for that.
        worker_id.empty()
            ? db_->Exec("SELECT worker_id, name, registered_ms, last_seen_ms, quarantined, "
                        "quarantine_reason, capabilities FROM workers "
                        "ORDER BY registered_ms, worker_id")
            : db_->Exec("SELECT worker_id, name, registered_ms, last_seen_ms, quarantined, "
                        "quarantine_reason, capabilities FROM workers WHERE worker_id = $1::text",
                        {worker_id}));
    std::vector<WorkerRecord> workers;
    for (int i = 0; i < r.rows(); ++i) {
      workers.push_back(WorkerRecord{r.Text(i, 0), r.Text(i, 1), r.Int(i, 2), r.Int(i, 3),
                                     r.Int(i, 4) != 0, r.Text(i, 5), r.Bytes(i, 6)});
    }
    return workers;
  }

  absl::Status Finish(const std::string& job_id, JobState state, const std::string& error,
                      int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return db_
        ->Exec(
            "UPDATE jobs SET state = $1::int, error = $2::text, worker_id = '', "
            "updated_ms = $3::bigint WHERE job_id = $4::text",
            {static_cast<int>(state), error, now_ms, job_id})
        .status();
  }

  absl::Mutex mu_;
  // One connection per store object; mu_ serialises its use.
  std::unique_ptr<Connection> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url) {
  LF_ASSIGN_OR_RETURN(std::unique_ptr<Connection> db, Connection::Open(url));
  LF_RETURN_IF_ERROR(pg::Migrate(*db)) << db->description();
  return std::unique_ptr<Store>(new PostgresStore(std::move(db)));
}

int PostgresSchemaVersion() { return pg::LatestSchemaVersion(); }

}  // namespace layerflow::server
