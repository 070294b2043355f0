// The kernels of half_state_kernels.h. Memory-bound passes: each reads its
// inputs once, 16 bytes per load where the rows allow it (8 bf16 / fp16
// values or 4 float32 ones).
// launch.cuh first: under the CPU emulation (LF_CUDA_EMULATION) it must
// come before every CUDA header.
#include "worker/kernels/launch.cuh"

#include "worker/analysis/half_state_kernels.h"

#include <cstring>
#include <utility>

#ifndef LF_CUDA_EMULATION
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace layerflow::worker::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double ToDouble(__nv_bfloat16 x) {
  return static_cast<double>(__bfloat162float(x));
}
__device__ __forceinline__ double ToDouble(__half x) {
  return static_cast<double>(__half2float(x));
}
__device__ __forceinline__ double ToDouble(float x) { return static_cast<double>(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(float x) { return x; }

// Values of T in one 16-byte load.
template <typename T>
constexpr int kPerLoad = static_cast<int>(16 / sizeof(T));

__device__ __forceinline__ double WarpSum(double x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    x += __shfl_down_sync(0xffffffffu, x, offset);
  }
  return x;
}

// Butterfly reduce-scatter of M per-lane values: afterwards every lane holds
// the warp's sum of one of them (ReduceScatterSlot says which). Each step
// halves the values a lane carries: it keeps one half, sends the other to
// lane ^ offset, and adds what that lane sent. 10 values cost 12 double
// shuffles where 10 WarpSums cost 50: the point pass reduces 10
// statistics a token pair, and its shuffles were the largest share of its
// issued instructions (a shuffle issues at a warp a clock on sm_90).
template <int M, int kOffset>
__device__ __forceinline__ double ReduceScatter(const double (&a)[M], int lane) {
  if constexpr (M == 1) {  // one value left: a full butterfly over the lanes left
    double x = a[0];
#pragma unroll
    for (int offset = kOffset; offset > 0; offset /= 2) {
      x += __shfl_xor_sync(0xffffffffu, x, offset);  // commutative: both lanes' bits agree
    }
    return x;
  } else {
    static_assert(kOffset > 0, "at most 32 values a warp");
    constexpr int kHalf = (M + 1) / 2;
    const bool high = (lane & kOffset) != 0;
    double kept[kHalf];
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const double lo = a[i], hi = kHalf + i < M ? a[kHalf + i] : 0.0;
      kept[i] = (high ? hi : lo) + __shfl_xor_sync(0xffffffffu, high ? lo : hi, kOffset);
    }
    return ReduceScatter<kHalf, kOffset / 2>(kept, lane);
  }
}

// Which of ReduceScatter<M, 16>'s values lane holds: its index, or -1 for a
// lane that holds padding or shares its index with the lane below it.
template <int M>
__device__ __forceinline__ int ReduceScatterSlot(int lane) {
  int base = 0, size = M, valid = M;  // the lane's values: [base, base + valid) of M
  int offset = 16;
  for (; offset > 0 && size > 1; offset /= 2) {
    const int half = (size + 1) / 2;
    if (lane & offset) {
      base += half;
      valid = valid > half ? valid - half : 0;
    } else {
      valid = valid < half ? valid : half;
    }
    size = half;
  }
  const int duplicates = offset == 0 ? 0 : (offset * 2 - 1);  // lanes summed in full
  return valid > 0 && (lane & duplicates) == 0 ? base : -1;
}

// The block's sum of x, valid in thread 0 (fixed order: warps, then warp 0).
__device__ double BlockSum(double x) {
  __shared__ double warp_sums[kWarps];
  x = WarpSum(x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // warp_sums may still be read from a previous call
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = 0;
  if (warp == 0) {
    x = lane < kWarps ? warp_sums[lane] : 0.0;
    x = WarpSum(x);
  }
  return x;
}

// ---- Per-token statistics: one warp per kTokensPerWarp tokens --------------
// The tokens of a warp are of one prompt, so each lane loads its columns of v
// (float64, 8 bytes a column) once for all of them: with one token a warp,
// those loads made the pass L1-bound (94% L1, 26% DRAM on an H200).
constexpr int kTokensPerWarp = 4;

template <bool kPrev, bool kVec>
__device__ __forceinline__ void VisitToken(double x, double y, double v, double acc[4]) {
  acc[0] += x * x;
  if (kPrev) {
    acc[1] += x * y;
    const double step = x - y;  // exact: x, y are bf16 / fp16 / float32 values
    acc[2] += step * step;
  }
  if (kVec) acc[3] += x * v;
}

template <typename T, bool kPrev, bool kVec>
__global__ void TokenStatsKernel(const T* __restrict__ cur, const T* __restrict__ prev,
                                 const double* __restrict__ vec, int64_t batch, int64_t n,
                                 int64_t d, bool vector_loads, double* __restrict__ out) {
  // Warp -> (prompt b, tokens t0 .. t0 + kTokensPerWarp - 1 of it).
  const int64_t groups = (n + kTokensPerWarp - 1) / kTokensPerWarp;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= batch * groups) return;  // whole warps leave together
  const int64_t b = warp / groups, t0 = (warp % groups) * kTokensPerWarp;
  const int count = static_cast<int>(n - t0 < kTokensPerWarp ? n - t0 : kTokensPerWarp);
  const T* c = cur + (b * n + t0) * d;
  const T* p = kPrev ? prev + (b * n + t0) * d : nullptr;
  const double* v = kVec ? vec + b * d : nullptr;
  double acc[kTokensPerWarp][4] = {};
  constexpr int kValues = kPerLoad<T>;
  if (vector_loads) {  // d % kValues == 0, 16-byte aligned rows: kValues values a load
    for (int64_t j = lane * kValues; j < d; j += 32 * kValues) {
      uint4 cv[kTokensPerWarp], pv[kTokensPerWarp];
#pragma unroll
      for (int u = 0; u < kTokensPerWarp; ++u) {  // all loads first: in flight together
        cv[u] = u < count ? *reinterpret_cast<const uint4*>(c + u * d + j) : uint4{};
        pv[u] = kPrev && u < count ? *reinterpret_cast<const uint4*>(p + u * d + j) : cv[u];
      }
      double vv[kValues] = {};
      if (kVec) {
#pragma unroll
        for (int e = 0; e < kValues; e += 2) {
          const double2 pair = *reinterpret_cast<const double2*>(v + j + e);
          vv[e] = pair.x;
          vv[e + 1] = pair.y;
        }
      }
#pragma unroll
      for (int u = 0; u < kTokensPerWarp; ++u) {
        const T* cx = reinterpret_cast<const T*>(&cv[u]);
        const T* px = reinterpret_cast<const T*>(&pv[u]);
#pragma unroll
        for (int e = 0; e < kValues; ++e) {
          VisitToken<kPrev, kVec>(ToDouble(cx[e]), kPrev ? ToDouble(px[e]) : 0.0, vv[e], acc[u]);
        }
      }
    }
  } else {
    for (int64_t j = lane; j < d; j += 32) {
      const double vj = kVec ? v[j] : 0.0;
#pragma unroll
      for (int u = 0; u < kTokensPerWarp; ++u) {
        if (u < count) {
          VisitToken<kPrev, kVec>(ToDouble(c[u * d + j]), kPrev ? ToDouble(p[u * d + j]) : 0.0, vj,
                                  acc[u]);
        }
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kTokensPerWarp; ++u) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[u][i] = WarpSum(acc[u][i]);
    if (lane == 0 && u < count) {
#pragma unroll
      for (int i = 0; i < 4; ++i) out[(b * n + t0 + u) * 4 + i] = acc[u][i];
    }
  }
}

template <typename T>
cudaError_t TokenStatsOf(const void* cur, const void* prev, const double* v, int64_t tokens,
                         int64_t n, int64_t d, double* out, cudaStream_t stream) {
  const auto aligned = [](const void* ptr) {
    return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  };
  const bool vector_loads = d % kPerLoad<T> == 0 && aligned(cur) && aligned(prev) && aligned(v);
  const int64_t batch = tokens / n;
  const int64_t warps = batch * ((n + kTokensPerWarp - 1) / kTokensPerWarp);
  const dim3 grid(static_cast<unsigned>((warps + kWarps - 1) / kWarps));
  const T* c = static_cast<const T*>(cur);
  const T* p = static_cast<const T*>(prev);
  if (p != nullptr && v != nullptr) {
    LF_LAUNCH((&TokenStatsKernel<T, true, true>), grid, dim3(kThreads), 0, stream, c, p, v, batch,
              n, d, vector_loads, out);
  } else if (p != nullptr) {
    LF_LAUNCH((&TokenStatsKernel<T, true, false>), grid, dim3(kThreads), 0, stream, c, p, v, batch,
              n, d, vector_loads, out);
  } else if (v != nullptr) {
    LF_LAUNCH((&TokenStatsKernel<T, false, true>), grid, dim3(kThreads), 0, stream, c, p, v, batch,
              n, d, vector_loads, out);
  } else {
    LF_LAUNCH((&TokenStatsKernel<T, false, false>), grid, dim3(kThreads), 0, stream, c, p, v, batch,
              n, d, vector_loads, out);
  }
  return LF_LAUNCH_ERROR();
}

// ---- Weighted sums over tokens: one thread per 16 bytes of feature columns --
// Each load brings 16 bytes (8 bf16 / fp16 or 4 float32 columns) when rows
// allow it, and a thread keeps kTokenUnroll tokens' loads in flight: a loop
// of single dependent loads is latency-bound (measured ~5x slower on an
// H200).
constexpr int kTokenUnroll = 8;

template <typename T, int kWidth, int kRows>
__device__ __forceinline__ void AddWeighted(const double* wb, int64_t n, int64_t t, const T* x,
                                            double acc[][kRows]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const double weight = wb[r * n + t];
#pragma unroll
    for (int e = 0; e < kWidth; ++e) acc[e][r] += weight * ToDouble(x[e]);
  }
}

// kWidth = kPerLoad<T>: 16-byte loads (d % kWidth == 0, aligned rows); 1:
// element-wise.
// kRows = k, the weight rows, a template argument so that acc holds only
// those (8 x 4 float64 accumulators for any k cost the pass half its
// occupancy).
template <typename T, int kWidth, int kRows>
__global__ void WeightedTokenSumsKernel(const double* __restrict__ w, const T* __restrict__ h,
                                        int64_t n, int64_t d, int64_t tokens_per_split,
                                        double* __restrict__ partial) {
  // Columns j0 .. j0 + kWidth - 1 of prompt b, tokens t0 .. t1 - 1.
  const int64_t j0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kWidth;
  const int64_t split = blockIdx.y, b = blockIdx.z, splits = gridDim.y;
  if (j0 >= d) return;
  const int64_t t0 = split * tokens_per_split;
  const int64_t t1 = t0 + tokens_per_split < n ? t0 + tokens_per_split : n;
  const T* hb = h + b * n * d + j0;
  const double* wb = w + b * kRows * n;
  double acc[kWidth][kRows] = {};
  int64_t t = t0;
  if constexpr (kWidth > 1) {
    static_assert(kWidth * sizeof(T) == 16, "one 16-byte load of kWidth values");
    for (; t + kTokenUnroll <= t1; t += kTokenUnroll) {
      uint4 v[kTokenUnroll];
#pragma unroll
      for (int u = 0; u < kTokenUnroll; ++u)
        v[u] = *reinterpret_cast<const uint4*>(hb + (t + u) * d);
#pragma unroll
      for (int u = 0; u < kTokenUnroll; ++u) {
        AddWeighted<T, kWidth, kRows>(wb, n, t + u, reinterpret_cast<const T*>(&v[u]), acc);
      }
    }
    for (; t < t1; ++t) {
      const uint4 v = *reinterpret_cast<const uint4*>(hb + t * d);
      AddWeighted<T, kWidth, kRows>(wb, n, t, reinterpret_cast<const T*>(&v), acc);
    }
  } else {
    for (; t + kTokenUnroll <= t1; t += kTokenUnroll) {
      T v[kTokenUnroll];
#pragma unroll
      for (int u = 0; u < kTokenUnroll; ++u) v[u] = hb[(t + u) * d];
#pragma unroll
      for (int u = 0; u < kTokenUnroll; ++u)
        AddWeighted<T, kWidth, kRows>(wb, n, t + u, &v[u], acc);
    }
    for (; t < t1; ++t) AddWeighted<T, kWidth, kRows>(wb, n, t, hb + t * d, acc);
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    double* out = partial + ((b * splits + split) * kRows + r) * d + j0;
#pragma unroll
    for (int e = 0; e < kWidth; ++e) out[e] = acc[e][r];
  }
}

template <typename T, int kRows>
void LaunchWeightedTokenSumsOf(const dim3& grid, bool vector_loads, const double* w, const void* h,
                               int64_t n, int64_t d, int64_t per_split, double* partial,
                               cudaStream_t stream) {
  const T* x = static_cast<const T*>(h);
  if (vector_loads) {
    LF_LAUNCH((&WeightedTokenSumsKernel<T, kPerLoad<T>, kRows>), grid, dim3(kThreads), 0, stream, w,
              x, n, d, per_split, partial);
  } else {
    LF_LAUNCH((&WeightedTokenSumsKernel<T, 1, kRows>), grid, dim3(kThreads), 0, stream, w, x, n, d,
              per_split, partial);
  }
}

template <typename T>
void LaunchWeightedTokenSumsOf(int k, const dim3& grid, bool vector_loads, const double* w,
                               const void* h, int64_t n, int64_t d, int64_t per_split,
                               double* partial, cudaStream_t stream) {
  switch (k) {
    case 1:
      return LaunchWeightedTokenSumsOf<T, 1>(grid, vector_loads, w, h, n, d, per_split, partial,
                                             stream);
    case 2:
      return LaunchWeightedTokenSumsOf<T, 2>(grid, vector_loads, w, h, n, d, per_split, partial,
                                             stream);
    case 3:
      return LaunchWeightedTokenSumsOf<T, 3>(grid, vector_loads, w, h, n, d, per_split, partial,
                                             stream);
    default:
      return LaunchWeightedTokenSumsOf<T, 4>(grid, vector_loads, w, h, n, d, per_split, partial,
                                             stream);
  }
}

// ---- One pass over a point: per-token statistics and token sums together ---
// A block takes tokens [t0, t1) of one prompt, kPassTokens at a time. Each
// thread holds kSlots 16-byte slots of every row (slot tid + 256 s), so a
// token's row sits whole in the block's registers: the block reduces the
// token's |x|^2, x.p and |x - p|^2 (warp shuffles, then the 8 warps' sums
// in a fixed order, which every thread repeats, so all hold the same
// bits), and with the norm known adds the token's weighted values into its
// columns' float64 accumulators. The states are read once (the point before
// too), where separate passes read them once for the norms, again for the
// unit vectors' sums, again for the means, and a copy made the bf16
// rounding. The rows' layout is a template mask (below), so that the
// accumulators [kRows][kSlots][kValues] stay in registers and each value
// feeds only its rows. Up to 2 slots a thread (rows of <= 2048 float32 /
// 4096 bf16 values) two blocks an SM fit
// in the registers (<= 128 a thread; H200, ptxas: the metrics' variants
// 108-128, no spills, against 161 for 4 rows uncapped): the pass needs both
// blocks' loads in flight to approach the HBM rate.
constexpr int kPassTokens = 2;
constexpr int kPassMaxSlots = 4;
static_assert(kPassMaxSlots * kPerLoad<__nv_bfloat16> <= kPassThreadTerms,
              "the float32 partials' bound (half_state_kernels.h)");
static_assert(kPassStats * kPassTokens <= kThreads, "a thread per statistic of a group");

// The bf16 roundings of a 16-byte load of float32 values, packed as they
// are stored (two F2FP.BF16.F32.PACK_AB; the single F2F.BF16.F32 of
// __float2bfloat16_rn is a quarter-rate conversion on sm_90), and one of
// them read back as a float32 (a shift: bf16 is float32's top half).
__device__ __forceinline__ uint2 RoundLoad(const uint4& v) {
  const float* x = reinterpret_cast<const float*>(&v);
  const __nv_bfloat162 pairs[2] = {__floats2bfloat162_rn(x[0], x[1]),
                                   __floats2bfloat162_rn(x[2], x[3])};
  uint2 r;
  std::memcpy(&r, pairs, sizeof(r));  // __nv_bfloat162 is not trivially copyable
  return r;
}
__device__ __forceinline__ float RoundedValue(const uint2& r, int e) {
  const unsigned word = e < 2 ? r.x : r.y;
  const unsigned bits = e % 2 == 0 ? word << 16 : word & 0xffff0000u;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

// A pass's layout as template bits: which rows it sums (PassRows' order)
// and whether the point before's
// vector meets bf16(prev_t). Known at compile time, each value feeds only
// its rows: with the layout in a runtime struct every value paid a select
// and an add for every row it might feed (ncu at 8efc817, float32 states,
// 4 rows: 104.5M instructions, FSEL the most frequent, 201 us a launch
// where reading the two points takes ~65).
constexpr unsigned kRowUnit = 1, kRowUnitNoFirst = 2, kRowPlain = 4, kRowRounded = 8;
constexpr unsigned kRowBits = 15;
constexpr unsigned kVecRounded = 16;

__host__ __device__ constexpr int RowCount(unsigned mask) {
  int count = 0;
  for (unsigned bit = 1; bit <= kRowRounded; bit <<= 1) count += (mask & bit) != 0 ? 1 : 0;
  return count;
}
// Row r's kind: the r-th set row bit of mask.
__host__ __device__ constexpr unsigned RowKind(unsigned mask, int r) {
  for (unsigned bit = 1; bit <= kRowRounded; bit <<= 1) {
    if ((mask & bit) != 0 && r-- == 0) return bit;
  }
  return 0;
}

// The index of row kind `kind` among mask's rows.
__host__ __device__ constexpr int RowIndex(unsigned mask, unsigned kind) {
  return RowCount(mask & (kind - 1));
}

template <typename T, int kSlots, unsigned kMask>
__global__ void __launch_bounds__(kThreads, kSlots <= 2 ? 2 : 1)
    PointPassKernel(const T* __restrict__ cur, const T* __restrict__ prev,
                    const double* __restrict__ prev_vec, int64_t n, int64_t d,
                    int64_t tokens_per_split, double tiny, double* __restrict__ stats,
                    double* __restrict__ partial, __nv_bfloat16* __restrict__ rounded) {
  constexpr int kValues = kPerLoad<T>;
  constexpr int kRows = RowCount(kMask);
  constexpr bool prev_vec_rounded = (kMask & kVecRounded) != 0;
  const int64_t split = blockIdx.x, b = blockIdx.y, splits = gridDim.x;
  const int64_t tokens = static_cast<int64_t>(gridDim.y) * n;
  const int64_t t0 = split * tokens_per_split;
  const int64_t t1 = t0 + tokens_per_split < n ? t0 + tokens_per_split : n;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t slots = d / kValues;
  const bool with_prev = prev != nullptr;
  const bool with_vec = with_prev && prev_vec != nullptr;
  const bool rounded_norm = rounded != nullptr;
  const double* v = with_vec ? prev_vec + b * d : nullptr;
  // Rows of the states' rounding (summed in the first loop) and of the
  // states themselves (summed once the token's norm is known).
  constexpr bool any_rounded_row = (kMask & kRowRounded) != 0;
  constexpr bool any_plain_row = (kMask & (kRowBits & ~kRowRounded)) != 0;
  const bool rounding = rounded_norm || any_rounded_row;
  // Double-buffered by the parity of the token group: group g + 2 writes
  // the buffer group g read only after group g + 1's barrier, which every
  // thread passes after its reads of group g.
  __shared__ double warp_sums[2][kWarps][kPassStats * kPassTokens];
  // With both unit rows, unit_nofirst is the unit row less token 0's unit
  // vector, subtracted at the end: one accumulator row fewer (16 registers
  // at 2 slots; the 4-row variants spilled).
  constexpr bool kFold = (kMask & kRowUnit) != 0 && (kMask & kRowUnitNoFirst) != 0;
  constexpr unsigned kAccMask = kFold ? kMask & ~kRowUnitNoFirst : kMask;
  constexpr int kAccRows = RowCount(kAccMask);
  double acc[kAccRows > 0 ? kAccRows : 1][kSlots][kValues] = {};
  double first_unit = 0;  // kFold: token 0's 1 / |x| (split 0 only)
  const int sum_slot = ReduceScatterSlot<kPassTokens * kPassStats>(lane);
  int parity = 0;
  for (int64_t t = t0; t < t1; t += kPassTokens, parity ^= 1) {
    const int count = static_cast<int>(t1 - t < kPassTokens ? t1 - t : kPassTokens);
    uint4 cv[kPassTokens][kSlots], pv[kPassTokens][kSlots];
#pragma unroll
    for (int u = 0; u < kPassTokens; ++u) {  // every load first: in flight together
#pragma unroll
      for (int s = 0; s < kSlots; ++s) {
        const int64_t slot = tid + static_cast<int64_t>(s) * kThreads;
        const bool in = u < count && slot < slots;
        const int64_t offset = (b * n + t + u) * d + slot * kValues;
        cv[u][s] = in ? *reinterpret_cast<const uint4*>(cur + offset) : uint4{};
        pv[u][s] = in && with_prev ? *reinterpret_cast<const uint4*>(prev + offset) : uint4{};
      }
    }
    // Float32 states: the group's bf16 roundings, packed, made once for
    // the sums, the norms and the stored copy.
    constexpr int kRounded = sizeof(T) == 4 ? kPassTokens : 1;
    uint2 cr[kRounded][kSlots] = {};
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int u = 0; u < kPassTokens; ++u) {
#pragma unroll
        for (int s = 0; s < kSlots; ++s) {
          if (rounding) cr[u][s] = RoundLoad(cv[u][s]);
        }
      }
    }
    // The statistics' products in float32, a thread's kSlots x kValues
    // (<= kPassThreadTerms) of a token summed there, then float64 from the
    // warp shuffles on (the bound: kPassThreadTerms' comment). In float64
    // each value cost a conversion for x, p, bf16(x) and bf16(p), a
    // quarter-rate instruction (16 a clock an SM on sm_90), four a value.
    float part[kPassTokens][kPassStats] = {};
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int64_t slot = tid + static_cast<int64_t>(s) * kThreads;
#pragma unroll
      for (int e = 0; e < kValues; ++e) {
        // The vector's value, once for the group's tokens (L1 after the
        // first group: one prompt's d values a block).
        const float ve = with_vec && slot < slots ? static_cast<float>(v[slot * kValues + e]) : 0.f;
        // bf16(p) of the group's two tokens, one packed conversion (kept
        // for the whole group, as cr is, they spilled the 4-row variants).
        float yr[kPassTokens] = {};
        if constexpr (sizeof(T) == 4 && prev_vec_rounded) {
          static_assert(kPassTokens == 2, "a pair of tokens a conversion");
          if (with_vec) {
            const __nv_bfloat162 r = __floats2bfloat162_rn(
                ToFloat(reinterpret_cast<const T*>(&pv[0][s])[e]),
                ToFloat(reinterpret_cast<const T*>(&pv[1][s])[e]));
            yr[0] = __low2float(r);
            yr[1] = __high2float(r);
          }
        }
#pragma unroll
        for (int u = 0; u < kPassTokens; ++u) {
          const T* cx = reinterpret_cast<const T*>(&cv[u][s]);
          const T* px = reinterpret_cast<const T*>(&pv[u][s]);
          const float x = ToFloat(cx[e]), y = ToFloat(px[e]);
          part[u][0] = fmaf(x, x, part[u][0]);
          if (with_prev) {
            const float step = x - y;
            part[u][1] = fmaf(x, y, part[u][1]);
            part[u][2] = fmaf(step, step, part[u][2]);
          }
          if constexpr (sizeof(T) == 4) {
            if (with_vec) {
              part[u][3] = fmaf(prev_vec_rounded ? yr[u] : y, ve, part[u][3]);
            }
            if (rounding) {
              // The rounding's row (weight 1, no norm needed) is summed
              // here. A token past the group's end is zeros and adds +0;
              // each column's tokens are added in token order either way.
              const float xr = RoundedValue(cr[u][s], e);
              if (rounded_norm) part[u][4] = fmaf(xr, xr, part[u][4]);
#pragma unroll
              for (int r = 0; r < kAccRows; ++r) {
                if (RowKind(kAccMask, r) == kRowRounded) acc[r][s][e] += static_cast<double>(xr);
              }
            }
          } else {
            // Half states: the rounding is the value (and only float32
            // states have a rounded row: LaunchPointPass).
            if (with_vec) part[u][3] = fmaf(y, ve, part[u][3]);
            if (rounded_norm) part[u][4] = fmaf(x, x, part[u][4]);
          }
        }
      }
    }
    if constexpr (sizeof(T) == 4) {
      if (rounded != nullptr) {
#pragma unroll
        for (int u = 0; u < kPassTokens; ++u) {
#pragma unroll
          for (int s = 0; s < kSlots; ++s) {
            const int64_t slot = tid + static_cast<int64_t>(s) * kThreads;
            if (u < count && slot < slots) {
              *reinterpret_cast<uint2*>(rounded + (b * n + t + u) * d + slot * kValues) = cr[u][s];
            }
          }
        }
      }
    }
    double flat[kPassTokens * kPassStats];  // in warp_sums' order (a copy of registers)
#pragma unroll
    for (int u = 0; u < kPassTokens; ++u) {
#pragma unroll
      for (int i = 0; i < kPassStats; ++i) flat[u * kPassStats + i] = static_cast<double>(part[u][i]);
    }
    const double warp_sum = ReduceScatter<kPassTokens * kPassStats, 16>(flat, lane);
    if (sum_slot >= 0) warp_sums[parity][warp][sum_slot] = warp_sum;
    __syncthreads();
    if (tid < kPassStats * count) {  // one statistic of one token a thread
      double sum = 0;
      for (int w = 0; w < kWarps; ++w) sum += warp_sums[parity][w][tid];
      stats[(tid % kPassStats) * tokens + b * n + t + tid / kPassStats] = sum;
    }
    if constexpr (kRows > 0) {
      // Lane u forms token u's 1 / |x| and the warp shares it: a float64
      // square root and division are sequences of ~20 instructions each,
      // which every thread repeated for every token before. As the
      // metrics' float64 path: 1 / max(sqrt(|x|^2), tiny), each step
      // correctly rounded; |x|^2 summed in the order the stats' is.
      double lane_unit = 0;
      if (lane < count) {
        double norm_sq = 0;
        for (int w = 0; w < kWarps; ++w) norm_sq += warp_sums[parity][w][lane * kPassStats];
        lane_unit = 1.0 / fmax(sqrt(norm_sq), tiny);
      }
#pragma unroll
      for (int u = 0; u < kPassTokens; ++u) {
        if (u >= count) break;  // count is the block's: the warp leaves whole
        const double unit = __shfl_sync(0xffffffffu, lane_unit, u);
        if (kFold && t + u == 0) first_unit = unit;
        double weight[kAccRows];
#pragma unroll
        for (int r = 0; r < kAccRows; ++r) {
          const unsigned kind = RowKind(kAccMask, r);  // a constant once unrolled
          weight[r] = kind == kRowPlain || kind == kRowRounded ? 1.0
                      : kind == kRowUnitNoFirst && t + u == 0  ? 0.0
                                                               : unit;
        }
        if constexpr (sizeof(T) == 4 && !any_plain_row) {
          // The rounding's rows are summed already.
        } else if constexpr (sizeof(T) == 4) {
#pragma unroll
          for (int s = 0; s < kSlots; ++s) {
            const T* cx = reinterpret_cast<const T*>(&cv[u][s]);
#pragma unroll
            for (int e = 0; e < kValues; ++e) {
              const double x = ToDouble(cx[e]);
#pragma unroll
              for (int r = 0; r < kAccRows; ++r) {
                if (RowKind(kAccMask, r) != kRowRounded) acc[r][s][e] += weight[r] * x;
              }
            }
          }
        } else {
#pragma unroll
          for (int s = 0; s < kSlots; ++s) {
            const T* cx = reinterpret_cast<const T*>(&cv[u][s]);
#pragma unroll
            for (int e = 0; e < kValues; ++e) {
              const double x = ToDouble(cx[e]);
#pragma unroll
              for (int r = 0; r < kAccRows; ++r) acc[r][s][e] += weight[r] * x;
            }
          }
        }
      }
    }
  }
  if constexpr (kRows > 0) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int64_t slot = tid + static_cast<int64_t>(s) * kThreads;
      if (slot >= slots) continue;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const unsigned kind = RowKind(kMask, r);
        const bool folded = kFold && kind == kRowUnitNoFirst;
        const int from = RowIndex(kAccMask, folded ? kRowUnit : kind);
        double* out = partial + ((b * splits + split) * kRows + r) * d + slot * kValues;
        if (folded && t0 == 0) {
          const T* x0 = cur + b * n * d + slot * kValues;  // token 0, read again
#pragma unroll
          for (int e = 0; e < kValues; ++e) out[e] = acc[from][s][e] - first_unit * ToDouble(x0[e]);
        } else {
#pragma unroll
          for (int e = 0; e < kValues; ++e) out[e] = acc[from][s][e];
        }
      }
    }
  }
}

// One instantiation a layout: masks 0 .. 31 for float32 states, 0 .. 7
// for half ones (no rounded row; their rounding is the value itself, so
// kVecRounded is dropped before the dispatch).
template <typename T, int kSlots, unsigned... kMasks>
void LaunchPointPassMasks(unsigned mask, std::integer_sequence<unsigned, kMasks...>,
                          const dim3& grid, const T* c, const T* p, const double* vec, int64_t n,
                          int64_t d, int64_t per_split, double tiny, double* stats, double* partial,
                          __nv_bfloat16* r, cudaStream_t stream) {
  const auto launch_if = [&](auto kernel, unsigned kernel_mask) {
    if (mask == kernel_mask) {
      LF_LAUNCH(kernel, grid, dim3(kThreads), 0, stream, c, p, vec, n, d, per_split, tiny, stats,
                partial, r);
    }
  };
  (launch_if(&PointPassKernel<T, kSlots, kMasks>, kMasks), ...);
}

template <typename T>
void LaunchPointPassOf(unsigned mask, const dim3& grid, const void* cur, const void* prev,
                       const double* vec, int64_t n, int64_t d, int64_t per_split, double tiny,
                       double* stats, double* partial, void* rounded, cudaStream_t stream) {
  constexpr unsigned kMasks = sizeof(T) == 4 ? 32 : 8;
  if constexpr (sizeof(T) != 4) mask &= kRowBits & ~kRowRounded;
  const T* c = static_cast<const T*>(cur);
  const T* p = static_cast<const T*>(prev);
  auto* r = static_cast<__nv_bfloat16*>(rounded);
  const auto masks = std::make_integer_sequence<unsigned, kMasks>();
  // Slots a thread: 1, 2 or 4 (3 takes 4, its last slot predicated off).
  const int64_t slots = d / kPerLoad<T>;
  if (slots <= kThreads) {
    LaunchPointPassMasks<T, 1>(mask, masks, grid, c, p, vec, n, d, per_split, tiny, stats, partial,
                               r, stream);
  } else if (slots <= 2 * kThreads) {
    LaunchPointPassMasks<T, 2>(mask, masks, grid, c, p, vec, n, d, per_split, tiny, stats, partial,
                               r, stream);
  } else {
    LaunchPointPassMasks<T, kPassMaxSlots>(mask, masks, grid, c, p, vec, n, d, per_split, tiny,
                                           stats, partial, r, stream);
  }
}

// ---- Products of centred Grams: one warp per row ----------------------------
// Entry (i, j) of row i's columns [0, hi) (hi: the end of i's row block)
// adds w c_a c_b and w c_b c_b, c = k_ij - (r_i - g) - r_j, w = 2 left of the
// diagonal block (C is symmetric), else 1. A warp reads a row 16 bytes per
// lane and load (float4) with kGramUnroll loads of each Gram in flight: the
// pass is bound by reading the two Grams once.
constexpr int kGramUnroll = 4;

template <bool kWithA>
__device__ __forceinline__ void VisitGramEntry(float ka, float kb, double ra_i, double rb_i,
                                               double ra_j, double rb_j, bool twice, double& ab,
                                               double& bb) {
  const double cb = static_cast<double>(kb) - rb_i - rb_j;
  const double wcb = twice ? 2.0 * cb : cb;  // exact doubling
  bb += wcb * cb;
  if (kWithA) ab += wcb * (static_cast<double>(ka) - ra_i - ra_j);
}

// kVector: n % 4 == 0 and 16-byte aligned Grams and row means, so every
// row starts 16-byte aligned and 4 columns are one float4 (two double2).
template <bool kWithA, bool kVector>
__global__ void CentredGramProductsKernel(
    const float* __restrict__ ka, const double* __restrict__ ra, const double* __restrict__ ga,
    const float* __restrict__ kb, const double* __restrict__ rb, const double* __restrict__ gb,
    int64_t n, int64_t blocks, double* __restrict__ partial) {
  const int64_t b = blockIdx.y, group = blockIdx.x, groups = gridDim.x;
  const int lane = threadIdx.x % 32;
  // Warp w of W takes rows w, w + W, ...: rows grow longer with i, and
  // striding gives every warp rows from each part of the range (even work).
  const int64_t warps = static_cast<int64_t>(groups) * kWarps;
  const int64_t first = group * kWarps + threadIdx.x / 32;
  const float* KA = kWithA ? ka + b * n * n : nullptr;
  const float* KB = kb + b * n * n;
  const double* RA = kWithA ? ra + b * n : nullptr;
  const double* RB = rb + b * n;
  const double g_a = kWithA ? ga[b] : 0.0, g_b = gb[b];
  double ab = 0, bb = 0;
  for (int64_t i = first; i < n; i += warps) {
    int64_t block = i * blocks / n;
    while (n * (block + 1) / blocks <= i) ++block;
    while (n * block / blocks > i) --block;
    const int64_t lo = n * block / blocks, hi = n * (block + 1) / blocks;
    const double rb_i = RB[i] - g_b, ra_i = kWithA ? RA[i] - g_a : 0.0;
    const float* kb_i = KB + i * n;
    const float* ka_i = kWithA ? KA + i * n : nullptr;
    int64_t j0 = 0;
    if constexpr (kVector) {
      constexpr int64_t kStep = 32 * 4;  // columns a warp covers per load
      const int64_t hi4 = hi / 4 * 4;
      for (; j0 < hi4; j0 += kGramUnroll * kStep) {
        float4 kbv[kGramUnroll], kav[kGramUnroll];
#pragma unroll
        for (int u = 0; u < kGramUnroll; ++u) {
          const int64_t j = j0 + u * kStep + lane * 4;
          const bool in = j < hi4;
          kbv[u] = in ? *reinterpret_cast<const float4*>(kb_i + j) : float4{};
          if (kWithA) kav[u] = in ? *reinterpret_cast<const float4*>(ka_i + j) : float4{};
        }
#pragma unroll
        for (int u = 0; u < kGramUnroll; ++u) {
          const int64_t j = j0 + u * kStep + lane * 4;
          if (j >= hi4) break;
          const double2 rb01 = *reinterpret_cast<const double2*>(RB + j);
          const double2 rb23 = *reinterpret_cast<const double2*>(RB + j + 2);
          double2 ra01{}, ra23{};
          if (kWithA) {
            ra01 = *reinterpret_cast<const double2*>(RA + j);
            ra23 = *reinterpret_cast<const double2*>(RA + j + 2);
          }
          VisitGramEntry<kWithA>(kav[u].x, kbv[u].x, ra_i, rb_i, ra01.x, rb01.x, j < lo, ab, bb);
          VisitGramEntry<kWithA>(kav[u].y, kbv[u].y, ra_i, rb_i, ra01.y, rb01.y, j + 1 < lo, ab,
                                 bb);
          VisitGramEntry<kWithA>(kav[u].z, kbv[u].z, ra_i, rb_i, ra23.x, rb23.x, j + 2 < lo, ab,
                                 bb);
          VisitGramEntry<kWithA>(kav[u].w, kbv[u].w, ra_i, rb_i, ra23.y, rb23.y, j + 3 < lo, ab,
                                 bb);
        }
      }
      j0 = hi4;
    }
    for (int64_t j = j0 + lane; j < hi; j += 32) {  // the rest, one column a lane
      VisitGramEntry<kWithA>(kWithA ? ka_i[j] : 0.0f, kb_i[j], ra_i, rb_i, kWithA ? RA[j] : 0.0,
                             RB[j], j < lo, ab, bb);
    }
  }
  ab = BlockSum(ab);
  bb = BlockSum(bb);
  if (threadIdx.x == 0) {  // [B, 2, groups]: the caller's sum is contiguous
    partial[(b * 2 + 0) * groups + group] = ab;
    partial[(b * 2 + 1) * groups + group] = bb;
  }
}

// ---- Centring a whole Gram in place: one warp per row ----------------------
// k_ij <- float(k_ij - (r_i - g) - r_j), formed in float64, and the float64
// sum of the stored entries' squares (what products of the stored Grams see).
template <bool kVector>
__global__ void CentreGramKernel(float* __restrict__ k, const double* __restrict__ r,
                                 const double* __restrict__ g, int64_t n,
                                 double* __restrict__ partial) {
  const int64_t b = blockIdx.y, group = blockIdx.x, groups = gridDim.x;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(groups) * kWarps;
  float* K = k + b * n * n;
  const double* R = r + b * n;
  double self = 0;
  auto centre = [&](float kij, double r_i, double r_j) {
    const float c = static_cast<float>(static_cast<double>(kij) - r_i - r_j);
    self += static_cast<double>(c) * c;
    return c;
  };
  for (int64_t i = group * kWarps + threadIdx.x / 32; i < n; i += warps) {
    const double r_i = R[i] - g[b];
    float* k_i = K + i * n;
    int64_t j0 = 0;
    if constexpr (kVector) {
      constexpr int64_t kStep = 32 * 4;
      for (; j0 < n; j0 += kGramUnroll * kStep) {
        float4 v[kGramUnroll];
#pragma unroll
        for (int u = 0; u < kGramUnroll; ++u) {
          const int64_t j = j0 + u * kStep + lane * 4;
          v[u] = j < n ? *reinterpret_cast<const float4*>(k_i + j) : float4{};
        }
#pragma unroll
        for (int u = 0; u < kGramUnroll; ++u) {
          const int64_t j = j0 + u * kStep + lane * 4;
          if (j >= n) break;
          const double2 r01 = *reinterpret_cast<const double2*>(R + j);
          const double2 r23 = *reinterpret_cast<const double2*>(R + j + 2);
          const float4 c{centre(v[u].x, r_i, r01.x), centre(v[u].y, r_i, r01.y),
                         centre(v[u].z, r_i, r23.x), centre(v[u].w, r_i, r23.y)};
          *reinterpret_cast<float4*>(k_i + j) = c;
        }
      }
    } else {
      for (int64_t j = lane; j < n; j += 32) k_i[j] = centre(k_i[j], r_i, R[j]);
    }
  }
  self = BlockSum(self);
  if (threadIdx.x == 0) partial[b * groups + group] = self;
}

template <bool kWithA>
void LaunchCentredGramProductsOf(const dim3& grid, bool vector, const float* ka, const double* ra,
                                 const double* ga, const float* kb, const double* rb,
                                 const double* gb, int64_t n, int64_t blocks, double* partial,
                                 cudaStream_t stream) {
  if (vector) {
    LF_LAUNCH((&CentredGramProductsKernel<kWithA, true>), grid, dim3(kThreads), 0, stream, ka, ra,
              ga, kb, rb, gb, n, blocks, partial);
  } else {
    LF_LAUNCH((&CentredGramProductsKernel<kWithA, false>), grid, dim3(kThreads), 0, stream, ka, ra,
              ga, kb, rb, gb, n, blocks, partial);
  }
}

// ---- The split of float32 states into two bf16 parts -----------------------
// hi = bf16(x), lo = bf16(x - hi), both rounded to nearest even (as ATen's
// float -> bf16 conversion, so SplitBf16OperandsAten gives the same bits);
// x - hi is exact in float32 (hi is x rounded at its 8th significant bit,
// so the difference has at most 16 significant bits).
__device__ __forceinline__ void SplitValue(float x, __nv_bfloat16& hi, __nv_bfloat16& lo) {
  hi = __float2bfloat16_rn(x);
  lo = __float2bfloat16_rn(x - __bfloat162float(hi));
}

// Row r of x [rows, d] into out [rows, 4 d] = [lo | hi | hi | lo]. kVector:
// d % 4 == 0 and 16-byte aligned x, 8-byte aligned out: a thread takes 4
// columns (one float4 load, four 8-byte stores); else one column.
template <bool kVector>
__global__ void SplitBf16Kernel(const float* __restrict__ x, int64_t rows, int64_t d,
                                __nv_bfloat16* __restrict__ out) {
  constexpr int kWidth = kVector ? 4 : 1;
  const int64_t per_row = d / kWidth;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (index >= rows * per_row) return;
  const int64_t row = index / per_row, col = index % per_row * kWidth;
  __nv_bfloat16* o = out + row * 4 * d + col;
  if constexpr (kVector) {
    const float4 v = *reinterpret_cast<const float4*>(x + row * d + col);
    __align__(8) __nv_bfloat16 hi[4], lo[4];
    SplitValue(v.x, hi[0], lo[0]);
    SplitValue(v.y, hi[1], lo[1]);
    SplitValue(v.z, hi[2], lo[2]);
    SplitValue(v.w, hi[3], lo[3]);
    const uint2 h = *reinterpret_cast<const uint2*>(hi), l = *reinterpret_cast<const uint2*>(lo);
    *reinterpret_cast<uint2*>(o) = l;
    *reinterpret_cast<uint2*>(o + d) = h;
    *reinterpret_cast<uint2*>(o + 2 * d) = h;
    *reinterpret_cast<uint2*>(o + 3 * d) = l;
  } else {
    __nv_bfloat16 hi, lo;
    SplitValue(x[row * d + col], hi, lo);
    o[0] = lo;
    o[d] = hi;
    o[2 * d] = hi;
    o[3 * d] = lo;
  }
}

}  // namespace

cudaError_t LaunchTokenStats(StateType type, const void* cur, const void* prev, const double* v,
                             int64_t tokens, int64_t n, int64_t d, double* out,
                             cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  switch (type) {
    case StateType::kBFloat16:
      return TokenStatsOf<__nv_bfloat16>(cur, prev, v, tokens, n, d, out, stream);
    case StateType::kFloat16:
      return TokenStatsOf<__half>(cur, prev, v, tokens, n, d, out, stream);
    case StateType::kFloat32:
      return TokenStatsOf<float>(cur, prev, v, tokens, n, d, out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchWeightedTokenSums(StateType type, const double* w, int k, const void* h,
                                    int64_t batch, int64_t n, int64_t d, int64_t splits,
                                    double* partial, cudaStream_t stream) {
  if (k < 1 || k > kMaxWeightRows || splits < 1) return cudaErrorInvalidValue;
  if (batch == 0 || d == 0) return cudaSuccess;
  const int64_t per_split = (n + splits - 1) / splits;
  const int per_load = type == StateType::kFloat32 ? kPerLoad<float> : kPerLoad<__half>;
  const bool vector_loads = d % per_load == 0 && reinterpret_cast<uintptr_t>(h) % 16 == 0;
  const int64_t threads = vector_loads ? d / per_load : d;
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads),
                  static_cast<unsigned>(splits), static_cast<unsigned>(batch));
  switch (type) {
    case StateType::kBFloat16:
      LaunchWeightedTokenSumsOf<__nv_bfloat16>(k, grid, vector_loads, w, h, n, d, per_split,
                                               partial, stream);
      break;
    case StateType::kFloat16:
      LaunchWeightedTokenSumsOf<__half>(k, grid, vector_loads, w, h, n, d, per_split, partial,
                                        stream);
      break;
    case StateType::kFloat32:
      LaunchWeightedTokenSumsOf<float>(k, grid, vector_loads, w, h, n, d, per_split, partial,
                                       stream);
      break;
  }
  return LF_LAUNCH_ERROR();
}

bool PointPassFits(StateType type, int64_t d) {
  const int per_load = type == StateType::kFloat32 ? kPerLoad<float> : kPerLoad<__half>;
  return d > 0 && d % per_load == 0 && d / per_load <= kPassMaxSlots * kThreads;
}

int64_t PointPassSplits(int64_t batch, int64_t n) {
  // 132 SMs x 2 blocks; no split shorter than 16 tokens.
  const int64_t wanted = (264 + batch - 1) / (batch > 0 ? batch : 1);
  const int64_t most = n / 16 > 1 ? n / 16 : 1;
  return wanted < most ? (wanted > 1 ? wanted : 1) : most;
}

cudaError_t LaunchPointPass(StateType type, const void* cur, const void* prev,
                            const double* prev_vec, bool prev_vec_rounded, int64_t batch, int64_t n,
                            int64_t d, const PassRows& rows, double tiny, int64_t splits,
                            double* stats, double* partial, void* rounded, cudaStream_t stream) {
  const auto aligned = [](const void* ptr) {
    return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  };
  if (!PointPassFits(type, d) || splits < 1 || (rows.count() > 0 && partial == nullptr) ||
      stats == nullptr || ((rounded != nullptr || rows.rounded) && type != StateType::kFloat32) ||
      (prev_vec != nullptr && prev == nullptr) || !aligned(cur) || !aligned(prev) ||
      reinterpret_cast<uintptr_t>(rounded) % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  const unsigned mask = (rows.unit ? kRowUnit : 0) | (rows.unit_nofirst ? kRowUnitNoFirst : 0) |
                        (rows.plain ? kRowPlain : 0) | (rows.rounded ? kRowRounded : 0) |
                        (prev_vec_rounded ? kVecRounded : 0);
  if (batch == 0 || n == 0) return cudaSuccess;
  const int64_t per_split = (n + splits - 1) / splits;
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(batch));
  switch (type) {
    case StateType::kBFloat16:
      LaunchPointPassOf<__nv_bfloat16>(mask, grid, cur, prev, prev_vec, n, d, per_split, tiny,
                                       stats, partial, rounded, stream);
      break;
    case StateType::kFloat16:
      LaunchPointPassOf<__half>(mask, grid, cur, prev, prev_vec, n, d, per_split, tiny, stats,
                                partial, rounded, stream);
      break;
    case StateType::kFloat32:
      LaunchPointPassOf<float>(mask, grid, cur, prev, prev_vec, n, d, per_split, tiny, stats,
                               partial, rounded, stream);
      break;
  }
  return LF_LAUNCH_ERROR();
}

cudaError_t LaunchCentredGramProducts(const float* ka, const double* ra, const double* ga,
                                      const float* kb, const double* rb, const double* gb,
                                      int64_t batch, int64_t n, int64_t blocks, int64_t groups,
                                      double* partial, cudaStream_t stream) {
  if (blocks < 1 || groups < 1) return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  const auto aligned = [](const void* ptr) {
    return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  };
  const bool vector = n % 4 == 0 && aligned(ka) && aligned(ra) && aligned(kb) && aligned(rb);
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(batch));
  if (ka != nullptr) {
    LaunchCentredGramProductsOf<true>(grid, vector, ka, ra, ga, kb, rb, gb, n, blocks, partial,
                                      stream);
  } else {
    LaunchCentredGramProductsOf<false>(grid, vector, ka, ra, ga, kb, rb, gb, n, blocks, partial,
                                       stream);
  }
  return LF_LAUNCH_ERROR();
}

cudaError_t LaunchCentreGram(float* k, const double* r, const double* g, int64_t batch, int64_t n,
                             int64_t groups, double* partial, cudaStream_t stream) {
  if (groups < 1) return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  const bool vector = n % 4 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(r) % 16 == 0;
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(batch));
  if (vector) {
    LF_LAUNCH((&CentreGramKernel<true>), grid, dim3(kThreads), 0, stream, k, r, g, n, partial);
  } else {
    LF_LAUNCH((&CentreGramKernel<false>), grid, dim3(kThreads), 0, stream, k, r, g, n, partial);
  }
  return LF_LAUNCH_ERROR();
}

cudaError_t LaunchSplitBf16(const float* x, int64_t rows, int64_t d, void* out,
                            cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  const bool vector = d % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(out) % 8 == 0;
  const int64_t threads = rows * (vector ? d / 4 : d);
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads));
  auto* o = static_cast<__nv_bfloat16*>(out);
  if (vector) {
    LF_LAUNCH((&SplitBf16Kernel<true>), grid, dim3(kThreads), 0, stream, x, rows, d, o);
  } else {
    LF_LAUNCH((&SplitBf16Kernel<false>), grid, dim3(kThreads), 0, stream, x, rows, d, o);
  }
  return LF_LAUNCH_ERROR();
}

}  // namespace layerflow::worker::cuda_kernels
