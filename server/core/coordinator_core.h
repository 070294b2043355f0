// CoordinatorCore: the coordinator's business logic, between the gRPC
// services (which only translate) and the Store (which only persists).
//
// It validates requests, stamps time from an injectable clock, keeps
// metrics, runs the reaper that requeues lapsed leases, and publishes a
// change version so that watchers (WatchSweep) wake on every state change.
// Thread-safe.
#ifndef LAYERFLOW_SERVER_CORE_COORDINATOR_CORE_H_
#define LAYERFLOW_SERVER_CORE_COORDINATOR_CORE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "layerflow/v1/coordinator.pb.h"
#include "layerflow/v1/worker.pb.h"
#include "server/metrics/metrics.h"
#include "server/store/store.h"

namespace layerflow::server {

// Unix time in milliseconds. Tests inject a fake one.
using Clock = std::function<int64_t()>;
int64_t SystemUnixMillis();

struct CoreOptions {
  int64_t lease_ttl_ms = 30000;
  int64_t heartbeat_interval_ms = 5000;
  int64_t reaper_interval_ms = 1000;
  // Leases per job, whatever ended them (host errors, lapsed leases).
  int32_t max_attempts = 3;
  // A requeued job waits retry_backoff_ms * 2^(attempts-1), at most
  // retry_backoff_cap_ms after a host error (common/job_failures.h).
  int64_t retry_backoff_ms = 1000;
  int64_t retry_backoff_cap_ms = 60000;
  // A worker whose last this-many attempts were all host errors is
  // quarantined: leased nothing until an admin releases it (0: never).
  int32_t quarantine_after = 3;
  // The deadline of a job whose sweep sets no max_job_seconds (0: none):
  // past it under one lease, counted from the worker's first heartbeat
  // reporting progress, the job FAILS with DEADLINE_EXCEEDED.
  int64_t max_job_seconds = 0;
  // The progress watchdog: a lease whose heartbeats report the same
  // progress for this long is not renewed; its job is retried elsewhere as
  // a host error (0: off). Counted from the lease's grant, or from the
  // coordinator's start for a lease granted before it.
  int64_t progress_timeout_ms = 0;
  // A gap this long between two signs of the coordinator's own life (reaper
  // passes, RPCs) is a stall (SIGSTOP, a frozen VM, a swapped-out host): the
  // recovery pass extends every running lease by lease_ttl_ms before
  // anything is reaped, so the stall costs no attempt (0: no detection;
  // CoordinatorServer sets it).
  int64_t stall_threshold_ms = 0;
  // Limits on submissions (0: none). SubmitSweep is RESOURCE_EXHAUSTED,
  // naming the limit, when the sweep would take the QUEUED jobs of all
  // users past max_queued_jobs or its user's past max_queued_jobs_per_user
  // (checked in the store's transaction), or when its user submitted
  // max_submissions_per_minute sweeps in the last 60 s.
  int64_t max_queued_jobs = 0;
  int64_t max_queued_jobs_per_user = 0;
  int32_t max_submissions_per_minute = 0;
  // A user with this many RUNNING jobs is leased nothing more until one
  // ends (0: no quota).
  int64_t max_running_jobs_per_user = 0;
};

class CoordinatorCore {
 public:
  // `metrics` may be null; otherwise it must outlive the core.
  CoordinatorCore(std::unique_ptr<Store> store, CoreOptions options, Clock clock = SystemUnixMillis,
                  Metrics* metrics = nullptr);
  ~CoordinatorCore();  // calls Shutdown()

  CoordinatorCore(const CoordinatorCore&) = delete;
  CoordinatorCore& operator=(const CoordinatorCore&) = delete;

  // --- Coordinator service -------------------------------------------------
  // Validate -> defaults -> expand -> store in one transaction.
  // `user` (the caller; "" with nobody in particular) is the sweep's unit
  // of fair share (Store::LeaseNextJob).
  absl::StatusOr<layerflow::v1::SubmitSweepResponse> SubmitSweep(
      const layerflow::v1::SweepSpec& spec, const std::string& user = "");
  absl::StatusOr<layerflow::v1::Sweep> GetSweep(const std::string& sweep_id);
  absl::StatusOr<layerflow::v1::ListJobsResponse> ListJobs(
      const layerflow::v1::ListJobsRequest& request);
  absl::StatusOr<layerflow::v1::Sweep> CancelSweep(const std::string& sweep_id);
  // Store::RetrySweep (`layerflow retry SWEEP`).
  absl::StatusOr<layerflow::v1::Sweep> RetrySweep(const std::string& sweep_id);
  absl::StatusOr<layerflow::v1::QueryResultsResponse> QueryResults(
      const layerflow::v1::QueryResultsRequest& request);

  // --- Worker protocol -----------------------------------------------------
  // LeaseJob never hands out a job whose dependency (Job.depends_on) has not
  // SUCCEEDED; a dependency that FAILS or is CANCELLED fails its dependents
  // (Store::LeaseNextJob says how). LeaseJob prefers, within the sweep the
  // primary order picks, a job of a model the worker lists in
  // resident_models (Store::LeaseNextJob's locality rule).
  absl::StatusOr<layerflow::v1::RegisterWorkerResponse> RegisterWorker(
      const layerflow::v1::RegisterWorkerRequest& request);
  absl::StatusOr<layerflow::v1::LeaseJobResponse> LeaseJob(
      const layerflow::v1::LeaseJobRequest& request);
  // An empty job_id is an idle heartbeat: it only marks the worker alive.
  absl::StatusOr<layerflow::v1::HeartbeatResponse> Heartbeat(
      const layerflow::v1::HeartbeatRequest& request);
  absl::StatusOr<CommitResult> CommitChunk(const layerflow::v1::ResultChunk& chunk);
  absl::Status CompleteJob(const layerflow::v1::CompleteJobRequest& request);
  // Classifies the reported code and text (ClassifyJobError): bad input
  // (or no code) fails the job; a host error retries it on another worker
  // (Store::RetryJob) and may quarantine the reporting worker.
  // INVALID_ARGUMENT for a code that is no status code.
  absl::Status FailJob(const layerflow::v1::FailJobRequest& request);
  // Store::ReleaseLease; INVALID_ARGUMENT when job_id or lease_id is
  // missing.
  absl::Status ReleaseJob(const layerflow::v1::ReleaseJobRequest& request);
  // The lease check of every call made under a lease, for calls outside
  // the store (artifact uploads): OK for the live lease of job_id, ABORTED
  // when it lapsed, was replaced or the job was cancelled,
  // INVALID_ARGUMENT when a field is missing, NOT_FOUND for an unknown job.
  absl::Status CheckLease(const std::string& job_id, const std::string& lease_id);
  // Ends a worker's quarantine (layerflow-coordinator --release-worker):
  // NOT_FOUND for an unknown worker, FAILED_PRECONDITION for one not
  // quarantined.
  absl::Status ReleaseWorker(const std::string& worker_id);
  // Every registered worker with its quarantine state.
  absl::StatusOr<std::vector<WorkerRecord>> ListWorkers();
  // Marks a registered worker alive (an idle heartbeat); NOT_FOUND for an
  // unregistered one, INVALID_ARGUMENT for an empty id.
  absl::Status TouchWorker(const std::string& worker_id);

  // --- Background work -----------------------------------------------------
  // The recovery pass (CoordinatorServer runs it at start-up): every
  // RUNNING lease is extended to now + lease_ttl_ms, so that the time the
  // coordinator was down is never charged to a worker as a lapsed lease;
  // workers that held them renew them (re-attach) by their next heartbeat.
  // Returns how many leases were extended.
  absl::StatusOr<int64_t> Recover();
  // One reaper pass: requeues lapsed leases (returns how many) and
  // refreshes the gauges. The reaper thread calls this; tests call it
  // directly with a fake clock.
  absl::StatusOr<int64_t> ReapOnce();
  // Starts the thread running ReapOnce every reaper_interval_ms.
  void StartReaper();
  // Stops the reaper and wakes every WaitForChange. Idempotent.
  void Shutdown();
  bool is_shut_down() const;

  // --- Change notification -------------------------------------------------
  // Bumped after every committed state change.
  uint64_t version() const;
  // Blocks until version() != seen, Shutdown(), or the timeout; returns
  // version() at wake-up.
  uint64_t WaitForChange(uint64_t seen, absl::Duration timeout) const;

  const CoreOptions& options() const { return options_; }

 private:
  void NotifyChanged();
  void RefreshGauges();
  // Runs Recover() when the last sign of life is stall_threshold_ms old or
  // more; records `now` as the latest. Called before every lease check.
  void RecoverIfStalled(int64_t now);

  // What the deadline and the watchdog know of a live lease (in memory: a
  // restart starts both clocks again, never charging the job its downtime).
  struct LeaseClock {
    std::string job_id;
    int64_t started_ms = 0;
    int64_t limit_ms = 0;  // 0: no deadline
    bool has_progress = false;
    int64_t progress = 0;
    int64_t progress_ms = 0;  // when `progress` last changed
    int64_t seen_ms = 0;      // the last heartbeat
  };
  // The effective deadline of a job (its spec's, else the default).
  int64_t LimitMs(const layerflow::v1::JobSpec& spec) const;
  void ForgetLease(const std::string& lease_id);
  // Ends a lease the deadline or the watchdog judged; returns the reason
  // the worker is told.
  absl::StatusOr<std::string> EndLeaseIfDue(const layerflow::v1::HeartbeatRequest& request,
                                            int64_t now);

  const std::unique_ptr<Store> store_;
  const CoreOptions options_;
  const Clock clock_;
  Metrics* const metrics_;

  mutable absl::Mutex change_mu_;
  mutable absl::CondVar changed_;
  uint64_t version_ ABSL_GUARDED_BY(change_mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(change_mu_) = false;

  absl::Mutex leases_mu_;
  absl::flat_hash_map<std::string, LeaseClock> leases_ ABSL_GUARDED_BY(leases_mu_);

  // When each user's sweeps of the last minute were submitted, oldest
  // first (max_submissions_per_minute).
  absl::Mutex submit_mu_;
  absl::flat_hash_map<std::string, std::deque<int64_t>> submitted_ms_ ABSL_GUARDED_BY(submit_mu_);
  absl::Mutex alive_mu_;
  int64_t alive_ms_ ABSL_GUARDED_BY(alive_mu_) = 0;  // 0: not yet

  absl::Notification stop_reaper_;
  std::thread reaper_;
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_CORE_COORDINATOR_CORE_H_
