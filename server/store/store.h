// The coordinator's durable state behind one abstract interface, so that a
// PostgreSQL backend can sit beside SqliteStore (tests/server runs the same
// conformance suite over every backend).
//
// Contract shared by every backend:
//  - Every method is one transaction: it happens entirely or not at all.
//  - Time is passed in (unix milliseconds), never read from a clock, so that
//    leases and backoff are testable without sleeping.
//  - Ids of sweeps and jobs are chosen by the caller; lease ids by the store.
//  - Methods are thread-safe; several Store objects may share one database.
//  - Errors: NOT_FOUND for an unknown id, ABORTED for a lapsed or replaced
//    lease, FAILED_PRECONDITION for a call the current state forbids,
//    INVALID_ARGUMENT for out-of-range input, ALREADY_EXISTS for a duplicate
//    id, UNAVAILABLE/INTERNAL for the database itself.
#ifndef LAYERFLOW_SERVER_STORE_STORE_H_
#define LAYERFLOW_SERVER_STORE_STORE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::server {

struct NewJob {
  std::string job_id;
  layerflow::v1::JobSpec spec;  // spec.kind and spec.probe are stored with it
  int64_t chunks_total = 0;
  // A job of the same sweep, earlier in `jobs`, that must SUCCEED before
  // this one is leased (Job.depends_on); empty: none.
  std::string depends_on;
};

// Bounds CreateSweep checks in its transaction (0: none). Past one, the
// sweep is refused with RESOURCE_EXHAUSTED naming the bound and nothing is
// stored.
struct SubmitLimits {
  // QUEUED jobs of every user, this sweep's included.
  int64_t max_queued_jobs = 0;
  // QUEUED jobs of the submitting user (NewSweep::user), this sweep's
  // included.
  int64_t max_queued_jobs_per_user = 0;
};

struct NewSweep {
  std::string sweep_id;
  layerflow::v1::SweepSpec spec;  // as stored and returned (defaults applied)
  int64_t created_unix_ms = 0;
  // Who submitted it: the unit of fair share (LeaseNextJob). Empty: nobody
  // in particular (authentication off), one user like any other.
  std::string user;
  SubmitLimits limits;
  // In creation order: the scheduler and QueryResults keep this order.
  std::vector<NewJob> jobs;
};

// A granted lease.
struct Lease {
  layerflow::v1::Job job;  // state RUNNING, attempts already incremented
  std::string lease_id;
  // First chunk to compute: equals the job's committed chunks.
  int64_t resume_from_sequence = 0;
  int64_t expires_unix_ms = 0;
};

// A model a worker holds resident (LeaseJobRequest.resident_models): it
// matches an EXTRACT job whose spec has these four values.
struct ResidentModelRef {
  std::string model;
  std::string init_scheme;
  int64_t seed = 0;
  std::string dtype;
};

struct CommitResult {
  // False when (job, sequence) was already committed: acknowledged, not
  // counted again.
  bool newly_committed = false;
  int64_t job_chunks_committed = 0;
};

// The key of a merged result row within its job, in the order QueryResults
// returns rows (an unset optional field is -1, before 0).
struct ResultKey {
  std::string metric;
  int32_t layer = 0;
  int32_t layer_b = -1;
  int32_t head = -1;
  int32_t position = -1;
};

struct ResultFilter {
  std::string sweep_id;  // required
  std::string model;     // empty: any
  std::string metric;    // empty: any
  std::string job_id;    // empty: any
  // Paging (the core's page tokens), a keyset: only rows after this point
  // of the order. Empty after_job_id: from the first row. Otherwise the
  // rows of after_job_id whose key is greater than after_key (none when
  // after_key is unset: the whole job is behind), then every row of the
  // jobs created after it.
  std::string after_job_id;
  std::optional<ResultKey> after_key;
  // > 0: at most this many rows.
  int64_t row_limit = 0;
};

struct JobFilter {
  std::string sweep_id;                                                  // empty: every sweep
  layerflow::v1::JobState state = layerflow::v1::JOB_STATE_UNSPECIFIED;  // every state
  // Only jobs created after this one (empty: from the first).
  std::string after_job_id;
  int64_t limit = 0;  // > 0: at most this many
};

// Jobs per state, indexed by layerflow::v1::JobState (index 0 unused).
using JobStateCounts = std::array<int64_t, 6>;

// How one lease of a job ended (the attempt history, schema v8).
enum class AttemptOutcome {
  kSucceeded = 1,
  kBadInput = 2,     // FailJob: the job failed for good
  kHostError = 3,    // RetryJob: retried elsewhere
  kLeaseLapsed = 4,  // RequeueLapsedLeases
};

struct JobAttempt {
  int32_t attempt = 0;  // 1-based: the job's attempts count at that lease
  std::string worker_id;
  AttemptOutcome outcome = AttemptOutcome::kSucceeded;
  std::string error;  // empty for kSucceeded
  int64_t ended_unix_ms = 0;
};

// What RetryJob does with a host error.
struct RetryPolicy {
  // Leases per job, all outcomes together; the attempt that reaches it
  // fails the job with every attempt's worker and error.
  int32_t max_attempts = 3;
  // Runnable again after RetryBackoffMs(attempts, base, cap)
  // (common/job_failures.h).
  int64_t backoff_base_ms = 1000;
  int64_t backoff_cap_ms = 60000;
  // A worker whose last this-many attempts all ended in host errors is
  // quarantined (0: never).
  int32_t quarantine_after = 3;
};

struct RetryResult {
  bool requeued = false;            // false: the job FAILED (attempts spent)
  bool worker_quarantined = false;  // this failure quarantined the worker
  int64_t not_before_unix_ms = 0;   // when requeued
};

struct WorkerRecord {
  std::string worker_id;
  std::string name;
  int64_t registered_unix_ms = 0;
  int64_t last_seen_unix_ms = 0;
  bool quarantined = false;
  std::string quarantine_reason;  // the host errors that caused it
  // RegisterWorker's layerflow.v1.WorkerCapabilities, serialized.
  std::string capabilities_bytes;
};

class Store {
 public:
  virtual ~Store() = default;

  // Stores the sweep and all its jobs (QUEUED) atomically. INVALID_ARGUMENT
  // when a job depends on a job that is not earlier in the same sweep;
  // RESOURCE_EXHAUSTED past sweep.limits (CheckQueueLimits).
  virtual absl::Status CreateSweep(const NewSweep& sweep) = 0;
  // The sweep with its job counts by state, chunk totals and derived state.
  virtual absl::StatusOr<layerflow::v1::Sweep> GetSweep(const std::string& sweep_id) = 0;
  // Jobs in creation order (JobFilter); unknown sweep or after_job_id:
  // empty list.
  virtual absl::StatusOr<std::vector<layerflow::v1::Job>> ListJobs(const JobFilter& filter) = 0;
  // Every job of a sweep (empty: all sweeps) in a state (UNSPECIFIED: all).
  absl::StatusOr<std::vector<layerflow::v1::Job>> ListJobs(const std::string& sweep_id,
                                                           layerflow::v1::JobState state) {
    return ListJobs(JobFilter{sweep_id, state, "", 0});
  }
  // One job; NOT_FOUND for an unknown id.
  virtual absl::StatusOr<layerflow::v1::Job> GetJob(const std::string& job_id) = 0;
  // QUEUED and RUNNING jobs become CANCELLED. FAILED_PRECONDITION when every
  // job is already terminal. Returns the updated sweep.
  virtual absl::StatusOr<layerflow::v1::Sweep> CancelSweep(const std::string& sweep_id,
                                                           int64_t now_ms) = 0;
  // FAILED and CANCELLED jobs become QUEUED, runnable at once, with
  // attempts 0, no error, and no worker excluded by their earlier host
  // errors; their committed chunks stay (the next lease resumes after
  // them). FAILED_PRECONDITION when the sweep has none. Returns the
  // updated sweep.
  virtual absl::StatusOr<layerflow::v1::Sweep> RetrySweep(const std::string& sweep_id,
                                                          int64_t now_ms) = 0;

  // Leases a runnable QUEUED job (not_before <= now, and its dependency,
  // if any, SUCCEEDED); nullopt when none.
  //
  // Fair share (issue 14): the job goes to the user (NewSweep::user) with
  // the fewest RUNNING jobs among those with a runnable job, ties by user
  // name; among that user's runnable jobs, the highest priority
  // (SweepSpec.priority), oldest first. So a priority orders one user's
  // sweeps and never lets one user take the pool from another, and a user
  // who submits 10,000 jobs does not delay another's first job. With one
  // user it is the plain order: highest priority, oldest first.
  //
  // Locality (issue 13): that job (the head) fixes the sweep and priority.
  // When `resident` is not empty, the oldest runnable QUEUED EXTRACT job of
  // the head's sweep and priority whose model, init scheme, seed and dtype
  // equal one of `resident` is leased instead (the head itself when it
  // matches). So a job is passed over only by later jobs of its own sweep
  // whose model the asking worker already holds, never by another sweep's
  // job or a lower priority, and a worker holding none of the sweep's
  // models takes the head. Only the first kLocalityWindow runnable jobs of
  // the sweep from the head on are looked at.
  //
  // Dependencies: whenever a job becomes FAILED or CANCELLED (FailJob,
  // RequeueLapsedLeases, CancelSweep), every QUEUED job depending on it
  // FAILS in the same transaction with "dependency <id> failed: <error>"
  // ("dependency <id> was cancelled"), transitively. CancelSweep cancels
  // dependents like every other queued job.
  //
  // Quota: a user with max_running_jobs_per_user RUNNING jobs or more (0: no
  // quota) is passed over, as if nothing of theirs were runnable.
  virtual absl::StatusOr<std::optional<Lease>> LeaseNextJob(
      const std::string& worker_id, int64_t now_ms, int64_t ttl_ms,
      const std::vector<ResidentModelRef>& resident, int64_t max_running_jobs_per_user) = 0;
  absl::StatusOr<std::optional<Lease>> LeaseNextJob(const std::string& worker_id, int64_t now_ms,
                                                    int64_t ttl_ms,
                                                    const std::vector<ResidentModelRef>& resident) {
    return LeaseNextJob(worker_id, now_ms, ttl_ms, resident, 0);
  }
  absl::StatusOr<std::optional<Lease>> LeaseNextJob(const std::string& worker_id, int64_t now_ms,
                                                    int64_t ttl_ms) {
    return LeaseNextJob(worker_id, now_ms, ttl_ms, {}, 0);
  }
  // How many runnable jobs of the head's sweep locality looks at: bounds
  // the lease query's cost on a sweep of thousands of jobs.
  static constexpr int64_t kLocalityWindow = 256;
  // Extends a live lease to now + ttl. Returns true when the job was
  // cancelled (the worker should stop); ABORTED when the lease lapsed or the
  // job was given to someone else.
  virtual absl::StatusOr<bool> RenewLease(const std::string& job_id, const std::string& lease_id,
                                          int64_t now_ms, int64_t ttl_ms) = 0;
  // Commits chunk `sequence` of a job under a live lease, exactly once per
  // (job_id, sequence). INVALID_ARGUMENT for a sequence outside
  // [0, chunks_total).
  virtual absl::StatusOr<CommitResult> CommitChunk(
      const std::string& job_id, const std::string& lease_id, int64_t sequence,
      const std::vector<layerflow::v1::MetricStat>& stats,
      const std::vector<int32_t>& prompt_tokens, int64_t now_ms) = 0;
  // Adds a worker's phase times to the job's totals (Job.phase_totals):
  // seconds and counts summed per phase, new phases appended. NOT_FOUND for
  // an unknown job. Outside the chunk's commit: diagnostics, not results.
  virtual absl::Status AddPhaseTimes(const std::string& job_id,
                                     const std::vector<layerflow::v1::PhaseTime>& times) = 0;
  // OK when lease_id is the live lease of job_id (the check every call
  // under a lease makes: ABORTED when lapsed, replaced or cancelled,
  // NOT_FOUND for an unknown job). For calls outside the store that act
  // under a lease (artifact uploads).
  virtual absl::Status CheckLease(const std::string& job_id, const std::string& lease_id,
                                  int64_t now_ms) = 0;
  // RUNNING -> SUCCEEDED; FAILED_PRECONDITION when chunks are missing.
  virtual absl::Status CompleteJob(const std::string& job_id, const std::string& lease_id,
                                   int64_t now_ms) = 0;
  // RUNNING -> FAILED with the worker's error.
  virtual absl::Status FailJob(const std::string& job_id, const std::string& lease_id,
                               const std::string& error, int64_t now_ms) = 0;
  // Gives a live lease back (WorkerProtocol.ReleaseJob): RUNNING -> QUEUED,
  // runnable at once, attempts - 1 (a lease given back is no attempt, so
  // it never spends max_attempts), committed chunks kept (the next lease
  // resumes after them). ABORTED when the lease is not live (lapsed,
  // replaced, cancelled, or already given back), NOT_FOUND for an unknown
  // job.
  virtual absl::Status ReleaseLease(const std::string& job_id, const std::string& lease_id,
                                    int64_t now_ms) = 0;
  // Every RUNNING job whose lease expired before now goes back to QUEUED,
  // runnable after backoff_base_ms * 2^(attempts-1); a job that has had
  // max_attempts leases FAILS with "lease lapsed N times" (or, when an
  // earlier attempt ended otherwise, RetryJob's list of every attempt).
  // Each lapse is recorded in the attempt history. Returns how many leases
  // lapsed.
  virtual absl::StatusOr<int64_t> RequeueLapsedLeases(int64_t now_ms, int32_t max_attempts,
                                                      int64_t backoff_base_ms) = 0;
  // The coordinator's recovery pass (at start-up, after a stall): every
  // RUNNING job's lease expires no earlier than now + ttl_ms, so that time
  // the coordinator was down or frozen is never charged to a worker as a
  // lapsed lease. Attempts and lease ids are untouched. Returns how many
  // leases were extended.
  virtual absl::StatusOr<int64_t> ExtendRunningLeases(int64_t now_ms, int64_t ttl_ms) = 0;

  // Merged rows per (job, metric, layer, layer_b, head, position), in job
  // creation order, then metric, layer, layer_b, head, position (an unset
  // optional key field sorts before 0), from the filter's keyset point on,
  // at most row_limit rows. NOT_FOUND for an unknown sweep.
  virtual absl::StatusOr<std::vector<layerflow::v1::ResultRow>> QueryResults(
      const ResultFilter& filter) = 0;

  virtual absl::Status RegisterWorker(const std::string& worker_id, const std::string& name,
                                      const std::string& capabilities_bytes, int64_t now_ms) = 0;
  // Records a sign of life; NOT_FOUND for an unregistered worker.
  virtual absl::Status TouchWorker(const std::string& worker_id, int64_t now_ms) = 0;
  // Workers seen at or after since_ms.
  virtual absl::StatusOr<int64_t> CountLiveWorkers(int64_t since_ms) = 0;
  virtual absl::StatusOr<JobStateCounts> CountJobsByState() = 0;

  // --- Failures (issue 14) -------------------------------------------------
  // A host error under a live lease (ABORTED otherwise; a repeat of the
  // same call is acknowledged): the attempt is recorded; the job goes back
  // to QUEUED, runnable after the policy's backoff and not leased again by
  // a worker that already failed it with a host error while another live
  // (seen within live_since_ms), unquarantined worker exists; or, once
  // attempts >= max_attempts, FAILS with "failed on N attempts: attempt 1
  // on <worker>: <error>; ..." (and its dependents fail). The worker is
  // quarantined when its last quarantine_after attempts were host errors
  // and another live, unquarantined worker exists (never the last one).
  virtual absl::StatusOr<RetryResult> RetryJob(const std::string& job_id,
                                               const std::string& lease_id,
                                               const std::string& error, int64_t now_ms,
                                               int64_t live_since_ms,
                                               const RetryPolicy& policy) = 0;
  // Every ended attempt of a job, oldest first (CompleteJob, FailJob,
  // RetryJob and lapsed leases record them). NOT_FOUND for an unknown job.
  virtual absl::StatusOr<std::vector<JobAttempt>> ListAttempts(const std::string& job_id) = 0;
  // NOT_FOUND for an unregistered worker.
  virtual absl::StatusOr<WorkerRecord> GetWorker(const std::string& worker_id) = 0;
  // Registered workers, oldest registration first.
  virtual absl::StatusOr<std::vector<WorkerRecord>> ListWorkers() = 0;
  // Ends a quarantine (an admin's call): the worker leases again and its
  // earlier host errors no longer count towards the next one. NOT_FOUND
  // for an unregistered worker, FAILED_PRECONDITION when not quarantined.
  virtual absl::Status ReleaseWorker(const std::string& worker_id) = 0;
};

// CreateSweep's check of sweep.limits given the QUEUED jobs of all users
// and of the sweep's user before it: OK, or RESOURCE_EXHAUSTED naming the
// bound. Shared by the backends, so that both say the same.
absl::Status CheckQueueLimits(const NewSweep& sweep, int64_t queued_total, int64_t queued_of_user);

// The sweep state that a set of job counts implies (experiment.proto).
layerflow::v1::SweepState DeriveSweepState(const layerflow::v1::Sweep& sweep);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_STORE_STORE_H_
