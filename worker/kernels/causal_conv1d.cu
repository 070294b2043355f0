// Causal depthwise conv1d + SiLU over token-major rows (ssm_kernels.h).
// Memory-bound: each thread owns one channel over a run of kTokensPerThread
// tokens and slides the K-tap window along it in registers, so every input
// value is read from memory once per run (plus K - 1 values of overlap);
// consecutive threads take consecutive channels, so a warp's loads and
// stores of a token row are contiguous.
#include "worker/kernels/act_types.cuh"
#include "worker/kernels/ssm_kernels.h"

namespace layerflow::worker::cuda_kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kTokensPerThread = 64;
constexpr int kMaxTaps = 8;

template <typename T>
__global__ void CausalConv1dSiluKernel(const T* __restrict__ x, int64_t x_row,
                                       const T* __restrict__ w, const T* __restrict__ bias,
                                       int64_t seq, int64_t channels, int taps,
                                       T* __restrict__ out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t b = blockIdx.z;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTokensPerThread;
  if (c >= channels) return;
  float weight[kMaxTaps], window[kMaxTaps];
#pragma unroll
  for (int k = 0; k < kMaxTaps; ++k) {
    weight[k] = k < taps ? ToFloat(w[c * taps + k]) : 0.f;
    window[k] = 0.f;
  }
  const float b0 = bias != nullptr ? ToFloat(bias[c]) : 0.f;
  const T* xb = x + b * seq * x_row + c;
  // window[taps - 1] is token t; window[k] token t - (taps - 1 - k).
  for (int k = 0; k < taps - 1; ++k) {
    const int64_t t = t0 - (taps - 1) + k;
    window[k] = t >= 0 ? ToFloat(xb[t * x_row]) : 0.f;
  }
  const int64_t t1 = t0 + kTokensPerThread < seq ? t0 + kTokensPerThread : seq;
  T* ob = out + b * seq * channels + c;
  for (int64_t t = t0; t < t1; ++t) {
    window[taps - 1] = ToFloat(xb[t * x_row]);
    float acc = b0;
#pragma unroll
    for (int k = 0; k < kMaxTaps; ++k) {
      if (k < taps) acc = fmaf(weight[k], window[k], acc);
    }
    ob[t * channels] = FromFloat<T>(Silu(RoundTo<T>(acc)));
#pragma unroll
    for (int k = 0; k + 1 < kMaxTaps; ++k) {
      if (k + 1 < taps) window[k] = window[k + 1];
    }
  }
}

}  // namespace

cudaError_t LaunchCausalConv1dSilu(ActType type, const void* x, int64_t x_row,
                                   const void* w, const void* bias, int64_t batch,
                                   int64_t seq, int64_t channels, int kernel,
                                   void* out, cudaStream_t stream) {
  if (kernel < 1 || kernel > kMaxTaps) return cudaErrorInvalidValue;
  if (batch == 0 || seq == 0 || channels == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((channels + kThreads - 1) / kThreads),
                  static_cast<unsigned>((seq + kTokensPerThread - 1) / kTokensPerThread),
                  static_cast<unsigned>(batch));
  return DispatchAct(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto* conv = &CausalConv1dSiluKernel<T>;
    LF_LAUNCH(conv, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), x_row,
              static_cast<const T*>(w), static_cast<const T*>(bias), seq, channels, kernel,
              static_cast<T*>(out));
    return LF_LAUNCH_ERROR();
  });
}

}  // namespace layerflow::worker::cuda_kernels
