// What the pool looks like now, read through CoordinatorCore (jobs,
// registered workers) and the Authorizer (sweep owners): the answers of
// ListWorkers and GetQueue (`layerflow workers`, `layerflow watch`) and the
// pool gauges of /metrics (Metrics::SetPoolSource). The queued and running
// jobs (in lease order) are read again only when the core's change version
// moved since the last read, so many watchers of a quiet queue cost one
// read; workers are read on every call (liveness is a matter of the clock).
// Jobs are read in pages of kPageSize, short transactions between which
// leases go on. Thread-safe.
#ifndef LAYERFLOW_SERVER_METRICS_POOL_VIEW_H_
#define LAYERFLOW_SERVER_METRICS_POOL_VIEW_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "layerflow/v1/coordinator.pb.h"
#include "server/auth/authorizer.h"
#include "server/core/coordinator_core.h"
#include "server/metrics/metrics.h"

namespace layerflow::server {

// A worker counts as connected when seen within this many heartbeat
// intervals (the same rule as layerflow_workers_connected).
inline constexpr int kLiveHeartbeats = 3;

class PoolView {
 public:
  // `core` must outlive the view; `auth` and `metrics` may be null (no
  // owners: "anonymous"; no recent durations: expected starts unknown)
  // and otherwise must outlive it too.
  PoolView(CoordinatorCore* core, const auth::Authorizer* auth, const Metrics* metrics,
           Clock clock = SystemUnixMillis);

  // Every registered worker, oldest registration first, with the job it
  // holds and its state (WorkerState); quarantine reasons only when
  // `include_reasons` (admins).
  absl::StatusOr<layerflow::v1::ListWorkersResponse> ListWorkers(bool include_reasons);

  // The sweep's queued jobs in lease order with their position among all
  // queued jobs and the expected start. The order is Store::LeaseNextJob's
  // played forward as if no job ended meanwhile: fair share (the next lease
  // goes to the user with the fewest running jobs, ties by name, counting
  // the leases played so far), and within a user priority, then age. The
  // expected start: with W connected unquarantined workers of which I hold
  // no lease, and D the mean of the recent successful jobs' durations, a
  // job with p queued jobs ahead starts now when p < I and otherwise after
  // (p - I + 1) * D / W seconds (W jobs end every D seconds); -1 when W is
  // 0, or p >= I and no job has finished yet. INVALID_ARGUMENT for an empty
  // sweep id, NOT_FOUND for an unknown one.
  absl::StatusOr<layerflow::v1::GetQueueResponse> GetQueue(const std::string& sweep_id);

  // The pool gauges: queued and running jobs by the owner of their sweep,
  // busy workers, and GPUs total and busy over connected workers.
  absl::StatusOr<PoolSnapshot> Snapshot();

  static constexpr int32_t kPageSize = 500;

 private:
  // The pool's queued jobs in lease order, its running jobs and the owner
  // of every sweep they belong to, as of core version `version`.
  struct Jobs {
    uint64_t version = 0;
    std::vector<layerflow::v1::Job> queued;
    std::vector<layerflow::v1::Job> running;
    absl::flat_hash_map<std::string, std::string> owner_of;
  };
  absl::StatusOr<std::shared_ptr<const Jobs>> CurrentJobs();
  // Every job in `state` (all sweeps when sweep_id is empty), creation order.
  absl::StatusOr<std::vector<layerflow::v1::Job>> AllJobs(const std::string& sweep_id,
                                                          layerflow::v1::JobState state);
  absl::StatusOr<layerflow::v1::ListWorkersResponse> Workers(
      bool include_reasons, const std::vector<layerflow::v1::Job>& running);

  CoordinatorCore* const core_;
  const auth::Authorizer* const auth_;
  const Metrics* const metrics_;
  const Clock clock_;
  absl::Mutex mu_;
  std::shared_ptr<const Jobs> jobs_ ABSL_GUARDED_BY(mu_);
};

// "gpu-host-3:4127" -> "gpu-host-3" (a trailing ":<digits>" is the worker's
// pid, the default name's); any other name is the host itself.
std::string HostOfWorkerName(absl::string_view name);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_METRICS_POOL_VIEW_H_
