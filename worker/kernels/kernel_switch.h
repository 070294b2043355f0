// The switch of the kernels that were written and tested without a GPU (the
// SSM mixers of this folder, and the analysis of float32 states through the
// fused passes of worker/analysis): LAYERFLOW_SSM_KERNELS=1 in the
// environment turns them on. Until tests/worker/ssm_kernels_gpu_test.cc,
// tests/worker/half_state_ops_gpu_test.cc and bench/gpu.sh conformance have
// passed on a GPU machine, CUDA runs take the ATen and float64 paths, whose
// results on the GPU are recorded in bench/RESULTS.md (docs/operations.md).
// Plain C++, header only: read by LibTorch code in two libraries.
#ifndef LAYERFLOW_WORKER_KERNELS_KERNEL_SWITCH_H_
#define LAYERFLOW_WORKER_KERNELS_KERNEL_SWITCH_H_

#include <cstdlib>
#include <string_view>

namespace layerflow::worker {

inline bool SsmKernelsRequested() {
  const char* value = std::getenv("LAYERFLOW_SSM_KERNELS");
  return value != nullptr && std::string_view(value) == "1";
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_KERNELS_KERNEL_SWITCH_H_
