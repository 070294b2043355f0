// How the SSM kernels are launched, and the few device intrinsics they use,
// in one place, so that the same kernel source also builds for the CPU
// emulation (cuda_emulation.h, LF_CUDA_EMULATION) that runs them in CI,
// where there is no GPU.
#ifndef LAYERFLOW_WORKER_KERNELS_LAUNCH_CUH_
#define LAYERFLOW_WORKER_KERNELS_LAUNCH_CUH_

#ifdef LF_CUDA_EMULATION
#include "worker/kernels/cuda_emulation.h"
// The block's dynamic shared memory.
#define LF_DYNAMIC_SMEM(name) unsigned char* name = ::lf_emu::DynamicSmem()
#define LF_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::lf_emu::Launch(grid, block, smem, kernel, __VA_ARGS__)
#define LF_LAUNCH_ERROR() cudaSuccess
#define LF_SET_MAX_DYNAMIC_SMEM(kernel, bytes) cudaSuccess
#else
#include <cuda_runtime.h>
#define LF_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#define LF_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define LF_LAUNCH_ERROR() cudaGetLastError()
#define LF_SET_MAX_DYNAMIC_SMEM(kernel, bytes) \
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes))
#endif

namespace layerflow::worker::cuda_kernels {

// 2^x by the multi-function unit (ex2.approx.ftz: ~2 ulp, one instruction).
__device__ __forceinline__ float FastExp2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_KERNELS_LAUNCH_CUH_
