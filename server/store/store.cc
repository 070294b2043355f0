#include "server/store/store.h"

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

}  // namespace layerflow::server
