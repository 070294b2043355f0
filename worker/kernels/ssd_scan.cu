// Mamba-2's SSD scan on tensor cores, and its gated RMSNorm (ssm_kernels.h).
//
// Where the time goes in the ATen path (mamba2_chunk_scan's torch form):
// the decay matrix exp(segsum) as [B, H, c, Q, Q] float32, the C B^T
// products as [B, c, Q, Q, H], their product, and the states as einsums
// over float32 copies: about ten full passes over tensors larger than the
// layer's activations, on CUDA cores. Here each output tile is formed in
// shared memory and read by the tensor cores (bf16 / fp16 MMA, float32
// accumulation): C B^T for 64 x 64 tiles, the decay and dt applied to it in
// float32 and rounded once to the dtype, then multiplied by x; the chunk
// states [P, N] per head the same way. Only the states (P N floats per
// chunk and head) and y go through memory. The operands the MMA reads are
// the dtype's own values (x, B, C exactly) or, for the decayed products and
// the passed states, rounded to the dtype once, as the Mamba authors'
// kernels do.
#ifndef LF_CUDA_EMULATION
#include <mma.h>
#endif

#include "worker/kernels/act_types.cuh"
#include "worker/kernels/ssm_kernels.h"

namespace layerflow::worker::cuda_kernels {
namespace {

using namespace nvcuda;

constexpr int kThreads = 128;  // 4 warps, 16 rows of a 64-row tile each
constexpr int kRows = 64;      // rows of an l or s tile
constexpr int kP = 64;         // head_dim the kernels are built for

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragACol = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major>;
template <typename T>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

struct Dims {
  int64_t batch, seq, heads, groups, states, chunk, chunks, row, width;  // width = E
};

Dims DimsOf(const SsdArgs& a) {
  const int64_t e = a.heads * a.head_dim;
  return {a.batch, a.seq, a.heads, a.groups, a.states, a.chunk,
          (a.seq + a.chunk - 1) / a.chunk, e + 2 * a.groups * a.states, e};
}

// dts[i] = dt of token c Q + i of head h (0 past the sequence: no decay, no
// input), acum = the inclusive prefix sum of dt A_h over the chunk (warp 0,
// Q / 32 consecutive values a lane).
__device__ void ChunkDecay(const Dims& d, const float* __restrict__ dt, float A, int64_t b,
                           int64_t c, int64_t h, float* dts, float* acum) {
  const int q = static_cast<int>(d.chunk);
  for (int i = threadIdx.x; i < q; i += kThreads) {
    const int64_t t = c * d.chunk + i;
    const float v = t < d.seq ? dt[(b * d.seq + t) * d.heads + h] : 0.f;
    dts[i] = v;
    acum[i] = v * A;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, per = q / 32;
    float run = 0.f;
    for (int i = 0; i < per; ++i) acum[lane * per + i] = run += acum[lane * per + i];
    float offset = run;  // inclusive scan of the lanes' totals
    for (int k = 1; k < 32; k *= 2) {
      const float up = __shfl_up_sync(0xffffffffu, offset, k);
      if (lane >= k) offset += up;
    }
    offset -= run;
    for (int i = 0; i < per; ++i) acum[lane * per + i] += offset;
  }
  __syncthreads();
}

// ---- 1. Each chunk's own final state, and its total decay ------------------
// S[p, n] = sum_s x_s[p] w_s B_s[n], w_s = exp(Acum_end - Acum_s) dt_s: the
// weighted x^T (rounded to T) times B, 64 tokens at a time; warp w owns
// rows p = 16 w .. 16 w + 15 and all N columns.
template <typename T, int kN>
__global__ void __launch_bounds__(kThreads)
    ChunkStateKernel(const Dims d, const T* __restrict__ xbc, const float* __restrict__ dt,
                     const float* __restrict__ A, float* __restrict__ states,
                     float* __restrict__ chunk_sum) {
  LF_DYNAMIC_SMEM(smem);
  float* dts = reinterpret_cast<float*>(smem);
  float* acum = dts + d.chunk;
  T* xw = reinterpret_cast<T*>(acum + d.chunk);  // [64][kP]
  T* bt = xw + kRows * kP;                         // [64][kN]
  const int64_t h = blockIdx.x, b = blockIdx.y / d.chunks, c = blockIdx.y % d.chunks;
  const int64_t g = h / (d.heads / d.groups);
  const int warp = threadIdx.x / 32;
  ChunkDecay(d, dt, A[h], b, c, h, dts, acum);
  const float end = acum[d.chunk - 1];

  FragC acc[kN / 16];
#pragma unroll
  for (int f = 0; f < kN / 16; ++f) wmma::fill_fragment(acc[f], 0.f);
  for (int s0 = 0; s0 < d.chunk; s0 += kRows) {
    for (int i = threadIdx.x; i < kRows * kP; i += kThreads) {
      const int r = i / kP, p = i % kP;
      const int64_t t = c * d.chunk + s0 + r;
      float v = 0.f;
      if (t < d.seq) {
        v = ToFloat(xbc[(b * d.seq + t) * d.row + h * kP + p]) *
            (expf(end - acum[s0 + r]) * dts[s0 + r]);
      }
      xw[i] = FromFloat<T>(v);
    }
    for (int i = threadIdx.x; i < kRows * kN; i += kThreads) {
      const int r = i / kN, n = i % kN;
      const int64_t t = c * d.chunk + s0 + r;
      bt[i] = t < d.seq ? xbc[(b * d.seq + t) * d.row + d.width + g * kN + n] : FromFloat<T>(0.f);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kRows; k += 16) {
      FragACol<T> a;  // (p, s) = xw[s][p]
      wmma::load_matrix_sync(a, xw + k * kP + warp * 16, kP);
#pragma unroll
      for (int f = 0; f < kN / 16; ++f) {
        FragB<T> bf;
        wmma::load_matrix_sync(bf, bt + k * kN + f * 16, kN);
        wmma::mma_sync(acc[f], a, bf, acc[f]);
      }
    }
    __syncthreads();
  }
  float* out = states + ((b * d.chunks + c) * d.heads + h) * kP * kN + warp * 16 * kN;
#pragma unroll
  for (int f = 0; f < kN / 16; ++f) {
    wmma::store_matrix_sync(out + f * 16, acc[f], kN, wmma::mem_row_major);
  }
  if (threadIdx.x == 0) chunk_sum[(b * d.chunks + c) * d.heads + h] = end;
}

// ---- 2. The states entering each chunk, in place ---------------------------
// H_0 = 0, H_{c+1} = exp(Acum_end,c) H_c + S_c, one thread per state entry.
__global__ void StatePassKernel(const Dims d, int64_t entries, float* __restrict__ states,
                                const float* __restrict__ chunk_sum) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  if (i >= entries) return;
  float state = 0.f;
  for (int64_t c = 0; c < d.chunks; ++c) {
    const int64_t head = (b * d.chunks + c) * d.heads + h;
    float* s = states + head * entries + i;
    const float own = *s;
    *s = state;
    state = fmaf(expf(chunk_sum[head]), state, own);
  }
}

// ---- 3. The outputs of 64 rows of a chunk ----------------------------------
// y_l = sum_{s <= l} (C_l . B_s) exp(Acum_l - Acum_s) dt_s x_s
//       + exp(Acum_l) C_l H^T + D x_l, in float32 into y [B, L, E].
template <typename T, int kN>
__global__ void __launch_bounds__(kThreads)
    ChunkOutputKernel(const Dims d, const T* __restrict__ xbc, const float* __restrict__ dt,
                      const float* __restrict__ A, const float* __restrict__ D,
                      const float* __restrict__ states, float* __restrict__ y) {
  LF_DYNAMIC_SMEM(smem);
  float* dts = reinterpret_cast<float*>(smem);
  float* acum = dts + d.chunk;
  T* ct = reinterpret_cast<T*>(acum + d.chunk);  // [64][kN]: C of the rows
  T* bt = ct + kRows * kN;                         // [64][kN]: B of s, then H [kP][kN]
  T* xt = bt + kRows * kN;                         // [64][kP]: x of s
  T* mt = xt + kRows * kP;                         // [64][64]: the decayed C B^T
  float* sst = reinterpret_cast<float*>(mt + kRows * kRows);  // [64][64], then y [64][kP]
  float* zst = reinterpret_cast<float*>(xt);       // [64][kP] over xt and mt, after the loop
  static_assert(kP == kRows, "the staging buffers assume 64-wide heads");

  const int64_t l0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t h = blockIdx.y, b = blockIdx.z / d.chunks, c = blockIdx.z % d.chunks;
  const int64_t g = h / (d.heads / d.groups);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  ChunkDecay(d, dt, A[h], b, c, h, dts, acum);
  auto row_of = [&](int64_t t) { return xbc + (b * d.seq + t) * d.row; };
  const int64_t c_col = d.width + d.groups * kN + g * kN, b_col = d.width + g * kN;
  for (int i = threadIdx.x; i < kRows * kN; i += kThreads) {
    const int r = i / kN, n = i % kN;
    const int64_t t = c * d.chunk + l0 + r;
    ct[i] = t < d.seq ? row_of(t)[c_col + n] : FromFloat<T>(0.f);
  }

  FragC yacc[kP / 16];
#pragma unroll
  for (int f = 0; f < kP / 16; ++f) wmma::fill_fragment(yacc[f], 0.f);
  for (int64_t s0 = 0; s0 <= l0; s0 += kRows) {  // causal: s tiles up to the diagonal
    for (int i = threadIdx.x; i < kRows * kN; i += kThreads) {
      const int r = i / kN, n = i % kN;
      const int64_t t = c * d.chunk + s0 + r;
      bt[i] = t < d.seq ? row_of(t)[b_col + n] : FromFloat<T>(0.f);
    }
    for (int i = threadIdx.x; i < kRows * kP; i += kThreads) {
      const int r = i / kP, p = i % kP;
      const int64_t t = c * d.chunk + s0 + r;
      xt[i] = t < d.seq ? row_of(t)[h * kP + p] : FromFloat<T>(0.f);
    }
    __syncthreads();
    // S = C_rows B_s^T for this warp's 16 rows.
    FragC sacc[kRows / 16];
#pragma unroll
    for (int f = 0; f < kRows / 16; ++f) wmma::fill_fragment(sacc[f], 0.f);
#pragma unroll
    for (int k = 0; k < kN; k += 16) {
      FragA<T> a;
      wmma::load_matrix_sync(a, ct + warp * 16 * kN + k, kN);
#pragma unroll
      for (int f = 0; f < kRows / 16; ++f) {
        FragBCol<T> bf;  // (n, s) = B_s[n] = bt[s][n]
        wmma::load_matrix_sync(bf, bt + f * 16 * kN + k, kN);
        wmma::mma_sync(sacc[f], a, bf, sacc[f]);
      }
    }
#pragma unroll
    for (int f = 0; f < kRows / 16; ++f) {
      wmma::store_matrix_sync(sst + warp * 16 * kRows + f * 16, sacc[f], kRows,
                              wmma::mem_row_major);
    }
    __syncwarp();
    // The decay and dt of each (l, s), 0 above the diagonal, rounded once.
    for (int i = lane; i < 16 * kRows; i += 32) {
      const int r = warp * 16 + i / kRows, s = i % kRows;
      const int64_t l = l0 + r, sg = s0 + s;
      const float v = sg <= l ? sst[r * kRows + s] * (expf(acum[l] - acum[sg]) * dts[sg]) : 0.f;
      mt[r * kRows + s] = FromFloat<T>(v);
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < kRows; k += 16) {
      FragA<T> a;
      wmma::load_matrix_sync(a, mt + warp * 16 * kRows + k, kRows);
#pragma unroll
      for (int f = 0; f < kP / 16; ++f) {
        FragB<T> bf;
        wmma::load_matrix_sync(bf, xt + k * kP + f * 16, kP);
        wmma::mma_sync(yacc[f], a, bf, yacc[f]);
      }
    }
    __syncthreads();
  }

  // The state entering the chunk (zero for the first): C_rows H^T.
  const bool carry = c > 0;
  FragC zacc[kP / 16];
  if (carry) {
    const float* enter = states + ((b * d.chunks + c) * d.heads + h) * kP * kN;
    for (int i = threadIdx.x; i < kP * kN; i += kThreads) bt[i] = FromFloat<T>(enter[i]);
    __syncthreads();
#pragma unroll
    for (int f = 0; f < kP / 16; ++f) wmma::fill_fragment(zacc[f], 0.f);
#pragma unroll
    for (int k = 0; k < kN; k += 16) {
      FragA<T> a;
      wmma::load_matrix_sync(a, ct + warp * 16 * kN + k, kN);
#pragma unroll
      for (int f = 0; f < kP / 16; ++f) {
        FragBCol<T> bf;  // (n, p) = H[p][n] = bt[p][n]
        wmma::load_matrix_sync(bf, bt + f * 16 * kN + k, kN);
        wmma::mma_sync(zacc[f], a, bf, zacc[f]);
      }
    }
  }
#pragma unroll
  for (int f = 0; f < kP / 16; ++f) {
    wmma::store_matrix_sync(sst + warp * 16 * kP + f * 16, yacc[f], kP, wmma::mem_row_major);
    if (carry) {
      wmma::store_matrix_sync(zst + warp * 16 * kP + f * 16, zacc[f], kP, wmma::mem_row_major);
    }
  }
  __syncwarp();
  const float d_skip = D != nullptr ? D[h] : 0.f;
  for (int i = lane; i < 16 * kP; i += 32) {
    const int r = warp * 16 + i / kP, p = i % kP;
    const int64_t l = l0 + r, t = c * d.chunk + l;
    if (t >= d.seq) continue;
    float v = sst[r * kP + p] + d_skip * ToFloat(row_of(t)[h * kP + p]);
    if (carry) v = fmaf(expf(acum[l]), zst[r * kP + p], v);
    y[(b * d.seq + t) * d.width + h * kP + p] = v;
  }
}

// ---- 4. The gated RMSNorm of a token's row ---------------------------------
constexpr int kNormThreads = 256;

__device__ float BlockSumF(float x) {
  __shared__ float partial[kNormThreads / 32];
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; ++w) total += partial[w];
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    GatedRmsNormKernel(const float* __restrict__ y, const T* __restrict__ gate, int64_t gate_row,
                       const T* __restrict__ weight, int64_t width, float eps,
                       T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const float* yr = y + row * width;
  const T* gr = gate + row * gate_row;
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < width; j += kNormThreads) {
    const float v = yr[j] * Silu(ToFloat(gr[j]));
    sum = fmaf(v, v, sum);
  }
  const float scale = rsqrtf(BlockSumF(sum) / static_cast<float>(width) + eps);
  for (int64_t j = threadIdx.x; j < width; j += kNormThreads) {
    const float v = yr[j] * Silu(ToFloat(gr[j]));
    out[row * width + j] = FromFloat<T>(ToFloat(weight[j]) * (v * scale));
  }
}

template <typename T, int kN>
cudaError_t LaunchSsdOf(const SsdArgs& a, cudaStream_t stream) {
  const Dims d = DimsOf(a);
  const T* xbc = static_cast<const T*>(a.xbc);
  float* states = a.work;
  float* chunk_sum = states + d.batch * d.chunks * d.heads * kP * kN;
  float* y = chunk_sum + ((d.batch * d.chunks * d.heads + 63) / 64) * 64;
  const size_t state_smem =
      2 * d.chunk * sizeof(float) + (kRows * kP + kRows * kN) * sizeof(T);
  const size_t output_smem = 2 * d.chunk * sizeof(float) +
                             (2 * kRows * kN + kRows * kP + kRows * kRows) * sizeof(T) +
                             kRows * kRows * sizeof(float);
  auto* state_kernel = &ChunkStateKernel<T, kN>;
  auto* output_kernel = &ChunkOutputKernel<T, kN>;
  cudaError_t err = LF_SET_MAX_DYNAMIC_SMEM(state_kernel, state_smem);
  if (err != cudaSuccess) return err;
  err = LF_SET_MAX_DYNAMIC_SMEM(output_kernel, output_smem);
  if (err != cudaSuccess) return err;
  LF_LAUNCH(state_kernel, dim3(static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch * d.chunks)),
            dim3(kThreads), state_smem, stream, d, xbc, a.dt, a.A, states, chunk_sum);
  const int64_t entries = kP * kN;
  auto* pass_kernel = &StatePassKernel;
  LF_LAUNCH(pass_kernel,
            dim3(static_cast<unsigned>((entries + 255) / 256), static_cast<unsigned>(d.heads),
                 static_cast<unsigned>(d.batch)),
            dim3(256), 0, stream, d, entries, states, static_cast<const float*>(chunk_sum));
  LF_LAUNCH(output_kernel,
            dim3(static_cast<unsigned>(d.chunk / kRows), static_cast<unsigned>(d.heads),
                 static_cast<unsigned>(d.batch * d.chunks)),
            dim3(kThreads), output_smem, stream, d, xbc, a.dt, a.A, a.D,
            static_cast<const float*>(states), y);
  auto* norm_kernel = &GatedRmsNormKernel<T>;
  LF_LAUNCH(norm_kernel, dim3(static_cast<unsigned>(d.batch * d.seq)), dim3(kNormThreads), 0,
            stream, static_cast<const float*>(y), static_cast<const T*>(a.gate), a.gate_row,
            static_cast<const T*>(a.norm_weight), d.width, static_cast<float>(a.eps),
            static_cast<T*>(a.out));
  return LF_LAUNCH_ERROR();
}

}  // namespace

bool SsdSupports(ActType type, int64_t head_dim, int64_t states, int64_t chunk) {
  return type != ActType::kFloat32 && head_dim == kP && (states == 64 || states == 128) &&
         chunk > 0 && chunk % kRows == 0 && chunk <= 1024;
}

int64_t SsdWorkspaceFloats(const SsdArgs& a) {
  const Dims d = DimsOf(a);
  return d.batch * d.chunks * d.heads * kP * d.states +
         ((d.batch * d.chunks * d.heads + 63) / 64) * 64 + d.batch * d.seq * d.width;
}

cudaError_t LaunchSsd(const SsdArgs& a, cudaStream_t stream) {
  if (!SsdSupports(a.type, a.head_dim, a.states, a.chunk) || a.groups < 1 ||
      a.heads % a.groups != 0) {
    return cudaErrorInvalidValue;
  }
  if (a.batch == 0 || a.seq == 0) return cudaSuccess;
  auto by_states = [&](auto* tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    return a.states == 64 ? LaunchSsdOf<T, 64>(a, stream) : LaunchSsdOf<T, 128>(a, stream);
  };
  if (a.type == ActType::kBFloat16) return by_states(static_cast<__nv_bfloat16*>(nullptr));
  return by_states(static_cast<__half*>(nullptr));
}

}  // namespace layerflow::worker::cuda_kernels
