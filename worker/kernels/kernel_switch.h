// The switch of the SSM kernels (the fused mixers of this folder, and the
// analysis of float32 states through the fused passes of worker/analysis):
// on by default since their GPU tests passed on an H200 (bench/RESULTS.md,
// 2026-12-01); LAYERFLOW_SSM_KERNELS=0 in the environment turns them off,
// so that a run takes the ATen and float64 paths they replace (the
// references, also for comparing the two on a GPU). Plain C++, header only:
// read by LibTorch code in two libraries.
#ifndef LAYERFLOW_WORKER_KERNELS_KERNEL_SWITCH_H_
#define LAYERFLOW_WORKER_KERNELS_KERNEL_SWITCH_H_

#include <cstdlib>
#include <string_view>

namespace layerflow::worker {

inline bool SsmKernelsRequested() {
  const char* value = std::getenv("LAYERFLOW_SSM_KERNELS");
  return value == nullptr || std::string_view(value) != "0";
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_KERNELS_KERNEL_SWITCH_H_
