#include "worker/runtime/nccl_communicator.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#ifdef LF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>
#endif

namespace layerflow::worker {
namespace {

absl::Status CheckBuffers(const std::vector<at::Tensor>& buffers, int world_size) {
  if (static_cast<int>(buffers.size()) != world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("all-reduce: ", buffers.size(), " buffers for ", world_size, " ranks"));
  }
  for (const at::Tensor& b : buffers) {
    if (!b.defined() || b.scalar_type() != at::kDouble || !b.is_contiguous() ||
        b.sizes() != buffers[0].sizes()) {
      return absl::InvalidArgumentError(
          "all-reduce: buffers must be contiguous float64 of one shape");
    }
  }
  return absl::OkStatus();
}

class SingleRankCommunicator final : public Communicator {
 public:
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(const std::vector<at::Tensor>& buffers) override {
    return CheckBuffers(buffers, 1);
  }
};

#ifdef LF_WITH_CUDA
absl::Status NcclStatus(ncclResult_t result, const char* what) {
  if (result == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("nccl ", what, ": ", ncclGetErrorString(result)));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::vector<int> devices, std::vector<ncclComm_t> comms)
      : devices_(std::move(devices)), comms_(std::move(comms)) {}
  ~NcclCommunicator() override {
    for (ncclComm_t comm : comms_) ncclCommDestroy(comm);
  }

  int world_size() const override { return static_cast<int>(comms_.size()); }

  absl::Status AllReduceSum(const std::vector<at::Tensor>& buffers) override {
    if (absl::Status s = CheckBuffers(buffers, world_size()); !s.ok()) return s;
    for (int r = 0; r < world_size(); ++r) {
      if (!buffers[r].is_cuda() || buffers[r].get_device() != devices_[r]) {
        return absl::InvalidArgumentError(
            absl::StrCat("all-reduce: buffer ", r, " is not on cuda:", devices_[r]));
      }
    }
    // One thread drives every rank, so the calls must form one group.
    if (auto s = NcclStatus(ncclGroupStart(), "group start"); !s.ok()) return s;
    for (int r = 0; r < world_size(); ++r) {
      c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(devices_[r]));
      cudaStream_t stream = c10::cuda::getCurrentCUDAStream(devices_[r]).stream();
      void* data = buffers[r].data_ptr();
      ncclResult_t result = ncclAllReduce(data, data, static_cast<size_t>(buffers[r].numel()),
                                          ncclFloat64, ncclSum, comms_[r], stream);
      if (result != ncclSuccess) {
        ncclGroupEnd();
        return NcclStatus(result, "all-reduce");
      }
    }
    if (auto s = NcclStatus(ncclGroupEnd(), "group end"); !s.ok()) return s;
    for (int r = 0; r < world_size(); ++r) {
      c10::cuda::getCurrentCUDAStream(devices_[r]).synchronize();
    }
    return absl::OkStatus();
  }

 private:
  std::vector<int> devices_;
  std::vector<ncclComm_t> comms_;
};
#endif  // LF_WITH_CUDA

}  // namespace

std::unique_ptr<Communicator> CreateSingleRankCommunicator() {
  return std::make_unique<SingleRankCommunicator>();
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const std::vector<int>& cuda_devices) {
#ifdef LF_WITH_CUDA
  if (cuda_devices.empty()) {
    return absl::InvalidArgumentError("nccl: no devices");
  }
  std::vector<ncclComm_t> comms(cuda_devices.size());
  std::vector<int> devices = cuda_devices;
  if (auto s = NcclStatus(
          ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()), "init");
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(devices), std::move(comms)));
#else
  (void)cuda_devices;
  return absl::UnimplementedError("nccl: this worker was built without CUDA");
#endif
}

}  // namespace layerflow::worker
