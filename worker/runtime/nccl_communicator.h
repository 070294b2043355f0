// Sum-reduction of per-device statistics across the GPUs of one worker.
//
// A CPU build (or a single device) uses the same interface with one rank, so
// the executor has one code path. The NCCL implementation is single-process:
// one communicator per local GPU from ncclCommInitAll.
#ifndef LAYERFLOW_WORKER_RUNTIME_NCCL_COMMUNICATOR_H_
#define LAYERFLOW_WORKER_RUNTIME_NCCL_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerflow::worker {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int world_size() const = 0;
  // In place: afterwards every buffers[r] holds the sum over ranks.
  // buffers[r] lives on rank r's device; all float64, contiguous, same shape.
  // Work is queued on each device's current stream and waited for.
  virtual absl::Status AllReduceSum(const std::vector<at::Tensor>& buffers) = 0;
};

// One rank: AllReduceSum only checks its argument.
std::unique_ptr<Communicator> CreateSingleRankCommunicator();

// One rank per CUDA device index. UNIMPLEMENTED in a build without CUDA.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const std::vector<int>& cuda_devices);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_RUNTIME_NCCL_COMMUNICATOR_H_
