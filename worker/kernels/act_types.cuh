// Device helpers the SSM kernels share: the model dtypes read as float32 and
// rounded back exactly as ATen does (round to nearest even).
#ifndef LAYERFLOW_WORKER_KERNELS_ACT_TYPES_CUH_
#define LAYERFLOW_WORKER_KERNELS_ACT_TYPES_CUH_

#include <type_traits>

#include "worker/kernels/launch.cuh"
#include "worker/kernels/ssm_kernels.h"

#ifndef LF_CUDA_EMULATION
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace layerflow::worker::cuda_kernels {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}

// x rounded to T and read back: where the ATen path stores a T.
template <typename T>
__device__ __forceinline__ float RoundTo(float x) {
  return ToFloat(FromFloat<T>(x));
}

// ATen's softplus (beta 1, threshold 20) and SiLU, in float32.
__device__ __forceinline__ float Softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float Silu(float x) { return x / (1.f + expf(-x)); }

// The sum of x over a block of kThreads threads (a multiple of 32), for
// every thread: warp shuffles, then the warps' partials through shared
// memory. Once per kernel: a second call would race on the partials.
template <int kThreads>
__device__ float BlockSum(float x) {
  static_assert(kThreads % 32 == 0, "whole warps");
  __shared__ float partial[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  return total;
}

// Calls f with a null pointer of the element type of `type`.
template <typename F>
cudaError_t DispatchAct(ActType type, F&& f) {
  switch (type) {
    case ActType::kFloat32:
      return f(static_cast<float*>(nullptr));
    case ActType::kBFloat16:
      return f(static_cast<__nv_bfloat16*>(nullptr));
    case ActType::kFloat16:
      return f(static_cast<__half*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_KERNELS_ACT_TYPES_CUH_
