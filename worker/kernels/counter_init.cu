// Seeded random init on the device (worker/model/counter_init_cuda.h): every
// thread makes a block of 4 elements from one Philox call, so the values do
// not depend on the grid, the order or the device (counter_rng.h).
//
// Built with -fmad=false (CMakeLists.txt): a fused multiply-add rounds once
// where the host rounds twice, and the CPU fill must get the same bits.
#include "worker/kernels/launch.cuh"
#include "worker/model/counter_init_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace layerflow::worker::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kDefaultMaxBlocks = 8192;

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ double FromFloat<double>(float v) {
  return static_cast<double>(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    CounterFillKernel(counter_rng::FillSpec spec, T* __restrict__ out, int64_t numel) {
  const uint64_t blocks = (static_cast<uint64_t>(numel) + 3) / 4;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t g = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < blocks;
       g += stride) {
    float v[4];
    counter_rng::Values4(spec, g, v);
    const uint64_t base = 4 * g;
    const int n = base + 4 <= static_cast<uint64_t>(numel) ? 4 : static_cast<int>(numel - base);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < n) out[base + j] = FromFloat<T>(v[j]);
    }
  }
}

template <typename T>
cudaError_t Launch(const counter_rng::FillSpec& spec, void* out, int64_t numel, cudaStream_t stream,
                   int max_blocks) {
  const int64_t blocks = (numel + 3) / 4;
  const int64_t cap = max_blocks > 0 ? max_blocks : kDefaultMaxBlocks;
  int64_t grid = (blocks + kThreads - 1) / kThreads;
  if (grid > cap) grid = cap;
  LF_LAUNCH(CounterFillKernel<T>, dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0, stream,
            spec, static_cast<T*>(out), numel);
  return LF_LAUNCH_ERROR();
}

}  // namespace

cudaError_t LaunchCounterFill(const counter_rng::FillSpec& spec, FillType type, void* out,
                              int64_t numel, cudaStream_t stream, int max_blocks) {
  if (numel <= 0) return cudaSuccess;
  switch (type) {
    case FillType::kFloat32:
      return Launch<float>(spec, out, numel, stream, max_blocks);
    case FillType::kFloat64:
      return Launch<double>(spec, out, numel, stream, max_blocks);
    case FillType::kBFloat16:
      return Launch<__nv_bfloat16>(spec, out, numel, stream, max_blocks);
    case FillType::kFloat16:
      return Launch<__half>(spec, out, numel, stream, max_blocks);
  }
  return cudaErrorInvalidValue;
}

}  // namespace layerflow::worker::cuda_kernels
