// The block boundary of Mamba / Mamba-2 with residual_in_fp32 in one pass
// (ssm_kernels.h): residual + mixer output, then the next block's RMSNorm.
//
// Why: in ATen this boundary is eight element-wise kernels (the float32
// add, the cast to the dtype, the upcast, pow, mean, rsqrt, the product,
// the cast, the weight) that move ~1.6 GB a layer at 8 x 2048 x 2048 and
// took ~0.6 ms of each of the 48 layers of Mamba-1.4B on an H200 (ncu,
// bench/gpu.sh profile): more than the selective scan's memory traffic.
// Here one block owns a token's row, holds it in registers (8 values a
// thread and step, at most kMaxSteps steps), reads the residual and the
// mixer output once and writes the sum and the normed row once.
//
// Rounding follows MambaBlock / MambaRMSNorm exactly: the sum in float32
// (ATen's promoting add), the norm of the sum rounded to the dtype, its
// variance in float32, h rsqrt(var + eps) rounded to the dtype, then the
// dtype product with the weight (float32, rounded once).
#include "worker/kernels/act_types.cuh"
#include "worker/kernels/ssm_kernels.h"

namespace layerflow::worker::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;       // values a thread loads at a time (16 bytes of the dtype)
constexpr int kMaxSteps = 4;  // width <= 8 x 256 x 4 = 8192

template <typename T>
__global__ void __launch_bounds__(kThreads)
    AddRmsNormKernel(const float* __restrict__ residual, const T* __restrict__ mixer,
                     const T* __restrict__ weight, int64_t width, float eps,
                     float* __restrict__ sum, T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  float v[kMaxSteps][kVec];  // the sum rounded to T, read back
  float sq = 0.f;
#pragma unroll
  for (int step = 0; step < kMaxSteps; ++step) {
    const int64_t j = (static_cast<int64_t>(step) * kThreads + threadIdx.x) * kVec;
    if (j >= width) break;
    const float* r = residual + row * width + j;
    const float4 r0 = *reinterpret_cast<const float4*>(r);
    const float4 r1 = *reinterpret_cast<const float4*>(r + 4);
    uint4 mraw = *reinterpret_cast<const uint4*>(mixer + row * width + j);
    const T* m = reinterpret_cast<const T*>(&mraw);
    const float rv[kVec] = {r0.x, r0.y, r0.z, r0.w, r1.x, r1.y, r1.z, r1.w};
    float s[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      s[k] = rv[k] + ToFloat(m[k]);
      v[step][k] = RoundTo<T>(s[k]);
      sq = fmaf(v[step][k], v[step][k], sq);
    }
    const float4 s0 = {s[0], s[1], s[2], s[3]}, s1 = {s[4], s[5], s[6], s[7]};
    *reinterpret_cast<float4*>(sum + row * width + j) = s0;
    *reinterpret_cast<float4*>(sum + row * width + j + 4) = s1;
  }
  const float scale = rsqrtf(BlockSum<kThreads>(sq) / static_cast<float>(width) + eps);
#pragma unroll
  for (int step = 0; step < kMaxSteps; ++step) {
    const int64_t j = (static_cast<int64_t>(step) * kThreads + threadIdx.x) * kVec;
    if (j >= width) break;
    uint4 wraw = *reinterpret_cast<const uint4*>(weight + j);
    const T* w = reinterpret_cast<const T*>(&wraw);
    uint4 oraw;
    T* o = reinterpret_cast<T*>(&oraw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      o[k] = FromFloat<T>(ToFloat(w[k]) * RoundTo<T>(v[step][k] * scale));
    }
    *reinterpret_cast<uint4*>(out + row * width + j) = oraw;
  }
}

}  // namespace

bool AddRmsNormSupports(ActType type, int64_t width) {
  return type != ActType::kFloat32 && width > 0 && width % kVec == 0 &&
         width <= static_cast<int64_t>(kVec) * kThreads * kMaxSteps;
}

cudaError_t LaunchAddRmsNorm(ActType type, const float* residual, const void* mixer,
                             const void* weight, int64_t rows, int64_t width, double eps,
                             float* sum, void* out, cudaStream_t stream) {
  if (!AddRmsNormSupports(type, width)) return cudaErrorInvalidValue;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!aligned(residual) || !aligned(mixer) || !aligned(weight) || !aligned(sum) || !aligned(out)) {
    return cudaErrorMisalignedAddress;
  }
  if (rows == 0) return cudaSuccess;
  auto launch = [&](auto* tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto* kernel = &AddRmsNormKernel<T>;
    LF_LAUNCH(kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, residual,
              static_cast<const T*>(mixer), static_cast<const T*>(weight), width,
              static_cast<float>(eps), sum, static_cast<T*>(out));
    return LF_LAUNCH_ERROR();
  };
  if (type == ActType::kBFloat16) return launch(static_cast<__nv_bfloat16*>(nullptr));
  return launch(static_cast<__half*>(nullptr));
}

}  // namespace layerflow::worker::cuda_kernels
