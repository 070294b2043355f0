// Causal depthwise conv1d + SiLU over token-major rows (ssm_kernels.h).
// Memory-bound: each thread owns one channel over a run of kTokensPerThread
// tokens and slides the K-tap window along it in registers, so every input
// value is read from memory once per run (plus K - 1 values of overlap);
// consecutive threads take consecutive channels, so a warp's loads and
// stores of a token row are contiguous.
//
// The common case (K = 4, rows and pointers 16-byte aligned, C a multiple
// of 8: every preset) takes 8 channels a thread, one 16-byte load and store
// a token: one channel a thread moved 2 bytes a load and ran Mamba-1.4B's
// conv at 240 us a layer at 8 x 2048 on an H200 (ncu), ~1.2 TB/s for
// 268 MB; its floor, memory-bound, is ~80 us.
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

constexpr int kVecThreads = 64;
constexpr int kVec = 8;
constexpr int kVecTaps = 4;
constexpr int kVecTokens = 32;  // a block's run of tokens
constexpr int kTileRows = kVecTokens + kVecTaps - 1;

// A block copies its whole tile (the run's rows and the K - 1 before it, 512
// channels: 35 KB) into shared memory with cp.async, every row in flight at
// once, then each thread slides its window down its own 16-byte column of
// the tile. A thread reads back only what it copied itself, so no barrier
// is needed (cp.async.wait_group orders a thread's own copies). (Measured:
// the staging alone did not change the kernel's time, 170 against 169 us
// with rows loaded four at a time into registers; the SiLU below did.)
// SiLU by the multi-function unit (ex2 and rcp approximations, a few ulp
// of float32, far below the bf16 / fp16 rounding that follows): with the
// accurate expf and IEEE division this kernel was issue-bound, 162 us a
// layer of Mamba-2-1.3B at 8 x 2048 on an H200 (ncu: 40% SM, 31% DRAM at
// 12 warps an SM); with these, 103 us (49% DRAM). Its output is bf16 / fp16
// (the vector kernel takes no float32), so the ATen path's accurate SiLU
// and this one differ by at most one rounding of the half type.
__device__ __forceinline__ float FastSilu(float x) { return __fdividef(x, 1.f + __expf(-x)); }

template <typename T>
__global__ void __launch_bounds__(kVecThreads)
    CausalConv1dSiluVecKernel(const T* __restrict__ x, int64_t x_row, const T* __restrict__ w,
                              const T* __restrict__ bias, int64_t seq, int64_t channels,
                              T* __restrict__ out) {
  __shared__ uint4 tile[kTileRows][kVecThreads];
  const int tid = threadIdx.x;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * kVecThreads + tid) * kVec;
  const int64_t b = blockIdx.z;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kVecTokens;
  if (c >= channels) return;
  const T* xb = x + b * seq * x_row + c;
  // tile[r] is token t0 - (K - 1) + r; rows before 0 or past seq are zeros.
#pragma unroll
  for (int r = 0; r < kTileRows; ++r) {
    const int64_t t = t0 - (kVecTaps - 1) + r;
    const bool valid = t >= 0 && t < seq;
    CopyAsync16(&tile[r][tid], valid ? xb + t * x_row : xb, valid);
  }
  CopyAsyncCommit();
  // The weights while the copies are in flight.
  float weight[kVecTaps][kVec], window[kVecTaps][kVec], b0[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
#pragma unroll
    for (int k = 0; k < kVecTaps; ++k) weight[k][j] = ToFloat(w[(c + j) * kVecTaps + k]);
    b0[j] = bias != nullptr ? ToFloat(bias[c + j]) : 0.f;
  }
  auto unpack = [&](const uint4& raw, float* v) {
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = ToFloat(e[j]);
  };
  CopyAsyncWait<0>();
  // window[kVecTaps - 1] is token t; window[k] token t - (kVecTaps - 1 - k).
#pragma unroll
  for (int k = 0; k < kVecTaps - 1; ++k) unpack(tile[k][tid], window[k]);
  const int rows = static_cast<int>(t0 + kVecTokens < seq ? kVecTokens : seq - t0);
  T* ob = out + (b * seq + t0) * channels + c;
#pragma unroll 4
  for (int u = 0; u < rows; ++u) {
    unpack(tile[u + kVecTaps - 1][tid], window[kVecTaps - 1]);
    uint4 raw;
    T* o = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      float acc = b0[j];
#pragma unroll
      for (int k = 0; k < kVecTaps; ++k) acc = fmaf(weight[k][j], window[k][j], acc);
      const float a = RoundTo<T>(acc);
      o[j] = FromFloat<T>(FastSilu(a));
    }
    *reinterpret_cast<uint4*>(ob + u * channels) = raw;
#pragma unroll
    for (int k = 0; k + 1 < kVecTaps; ++k) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) window[k][j] = window[k + 1][j];
    }
  }
}

}  // namespace

cudaError_t LaunchCausalConv1dSilu(ActType type, const void* x, int64_t x_row, const void* w,
                                   const void* bias, int64_t batch, int64_t seq, int64_t channels,
                                   int kernel, void* out, cudaStream_t stream) {
  if (kernel < 1 || kernel > kMaxTaps) return cudaErrorInvalidValue;
  if (batch == 0 || seq == 0 || channels == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((channels + kThreads - 1) / kThreads),
                  static_cast<unsigned>((seq + kTokensPerThread - 1) / kTokensPerThread),
                  static_cast<unsigned>(batch));
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = type != ActType::kFloat32 && kernel == kVecTaps && channels % kVec == 0 &&
                   x_row % kVec == 0 && aligned(x) && aligned(out);
  if (vec) {
    const dim3 vgrid(static_cast<unsigned>((channels / kVec + kVecThreads - 1) / kVecThreads),
                     static_cast<unsigned>((seq + kVecTokens - 1) / kVecTokens),
                     static_cast<unsigned>(batch));
    auto launch = [&](auto* tag) -> cudaError_t {
      using T = std::remove_pointer_t<decltype(tag)>;
      auto* conv = &CausalConv1dSiluVecKernel<T>;
      LF_LAUNCH(conv, vgrid, dim3(kVecThreads), 0, stream, static_cast<const T*>(x), x_row,
                static_cast<const T*>(w), static_cast<const T*>(bias), seq, channels,
                static_cast<T*>(out));
      return LF_LAUNCH_ERROR();
    };
    if (type == ActType::kBFloat16) return launch(static_cast<__nv_bfloat16*>(nullptr));
    return launch(static_cast<__half*>(nullptr));
  }
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
