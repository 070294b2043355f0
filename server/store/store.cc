#include "server/store/store.h"

#include "absl/strings/str_cat.h"

namespace layerflow::server {

layerflow::v1::SweepState DeriveSweepState(const layerflow::v1::Sweep& sweep) {
  using layerflow::v1::SweepState;
  if (sweep.jobs_queued() > 0 || sweep.jobs_running() > 0) {
    return SweepState::SWEEP_STATE_ACTIVE;
  }
  // Every job is terminal from here on. A user's cancel outranks failures:
  // the sweep did not run to its end.
  if (sweep.jobs_cancelled() > 0) return SweepState::SWEEP_STATE_CANCELLED;
  if (sweep.jobs_failed() > 0) return SweepState::SWEEP_STATE_FAILED;
  return SweepState::SWEEP_STATE_SUCCEEDED;
}

absl::Status CheckQueueLimits(const NewSweep& sweep, int64_t queued_total, int64_t queued_of_user) {
  const int64_t adds = static_cast<int64_t>(sweep.jobs.size());
  const SubmitLimits& limits = sweep.limits;
  if (limits.max_queued_jobs > 0 && queued_total + adds > limits.max_queued_jobs) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue full: ", queued_total, " jobs queued and this sweep adds ", adds,
        "; the coordinator queues at most ", limits.max_queued_jobs, " (--max-queued-jobs)"));
  }
  if (limits.max_queued_jobs_per_user > 0 &&
      queued_of_user + adds > limits.max_queued_jobs_per_user) {
    return absl::ResourceExhaustedError(
        absl::StrCat("user '", sweep.user, "' has ", queued_of_user,
                     " jobs queued and this sweep adds ", adds, "; a user may queue at most ",
                     limits.max_queued_jobs_per_user, " (--max-queued-jobs-per-user)"));
  }
  return absl::OkStatus();
}

}  // namespace layerflow::server
