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
// The emulation runs the kernel at once: the stream is not needed.
#define LF_LAUNCH(kernel, grid, block, smem, stream, ...) \
  (static_cast<void>(stream), ::lf_emu::Launch(grid, block, smem, kernel, __VA_ARGS__))
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

// 16 bytes from global to shared memory without passing through registers
// (cp.async, sm_80 on), zero-filled when `valid` is false: the copies of a
// tile are issued, committed as one group, and waited for only when the
// tile is needed, so a block's next tile loads while it computes on this
// one. The emulation (and a host pass) copies at once; the waits are no-ops.
__device__ __forceinline__ void CopyAsync16(void* smem, const void* gmem, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
#else
  struct alignas(16) Bytes16 {
    unsigned v[4];
  };
  *static_cast<Bytes16*>(smem) = valid ? *static_cast<const Bytes16*>(gmem) : Bytes16{};
#endif
}
__device__ __forceinline__ void CopyAsyncCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void CopyAsyncWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_KERNELS_LAUNCH_CUH_
