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
//
// Shared-memory tiles are padded by 8 elements a row (kPad): with rows of
// 64 or 128 16-bit values every row of a fragment started on the same bank,
// and the WMMA loads of the first version ran 8-16-way bank conflicted
// (3.65 ms a layer of Mamba-2-1.3B's output kernel at 8 x 2048 on an H200).
// Global rows are staged 8 values (16 bytes) a load: xbc rows are
// E + 2 G N values, a multiple of 8, so every staged row is 16-byte aligned.
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
constexpr int kPad = 8;        // 16 bytes of padding a shared row: no bank conflicts
constexpr int kVec = 8;        // 16-bit values a 16-byte global load carries

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
  for (int i = threadIdx.x; i < q; i += blockDim.x) {
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

// Issues the copies of dst[r][0, kCols) = row t0 + r of src (columns
// col0.., rows `stride` apart), zero past the sequence, 16 bytes each
// (CopyAsync16); the caller commits and waits.
template <typename T, int kCols>
__device__ void StageRowsAsync(T* dst, int ld, const T* __restrict__ src, int64_t stride,
                               int64_t t0, int64_t seq, int64_t col0) {
  constexpr int kVecs = kCols / kVec;
  for (int i = threadIdx.x; i < kRows * kVecs; i += blockDim.x) {
    const int r = i / kVecs, v = i % kVecs;
    const int64_t t = t0 + r;
    const bool valid = t < seq;
    CopyAsync16(dst + r * ld + v * kVec, src + (valid ? t : 0) * stride + col0 + v * kVec, valid);
  }
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
  constexpr int kXLd = kP + kPad, kBLd = kN + kPad;
  constexpr int kXTile = kRows * kXLd, kBTile = kRows * kBLd;
  LF_DYNAMIC_SMEM(smem);
  float* dts = reinterpret_cast<float*>(smem);
  float* acum = dts + d.chunk;
  T* xw = reinterpret_cast<T*>(acum + d.chunk);  // 2 x [64][kXLd]: x, then x w
  T* bt = xw + 2 * kXTile;                         // 2 x [64][kBLd]
  const int64_t h = blockIdx.x, b = blockIdx.y / d.chunks, c = blockIdx.y % d.chunks;
  const int64_t g = h / (d.heads / d.groups);
  const int warp = threadIdx.x / 32;
  const T* rows = xbc + b * d.seq * d.row;
  const int64_t t_chunk = c * d.chunk;
  const int tiles = static_cast<int>(d.chunk / kRows);
  // Two buffers: tile i + 1 loads (cp.async) while tile i is multiplied.
  auto issue = [&](int tile) {
    const int buf = tile % 2;
    StageRowsAsync<T, kP>(xw + buf * kXTile, kXLd, rows, d.row, t_chunk + tile * kRows, d.seq,
                          h * kP);
    StageRowsAsync<T, kN>(bt + buf * kBTile, kBLd, rows, d.row, t_chunk + tile * kRows, d.seq,
                          d.width + g * kN);
  };
  issue(0);
  CopyAsyncCommit();
  ChunkDecay(d, dt, A[h], b, c, h, dts, acum);
  const float end = acum[d.chunk - 1];
  // w_s = exp(Acum_end - Acum_s) dt_s, once a token (in place of dt_s).
  for (int i = threadIdx.x; i < d.chunk; i += kThreads) dts[i] *= expf(end - acum[i]);

  FragC acc[kN / 16];
#pragma unroll
  for (int f = 0; f < kN / 16; ++f) wmma::fill_fragment(acc[f], 0.f);
  for (int tile = 0; tile < tiles; ++tile) {
    if (tile + 1 < tiles) issue(tile + 1);
    CopyAsyncCommit();
    CopyAsyncWait<1>();  // this tile's group has landed
    __syncthreads();
    T* x = xw + (tile % 2) * kXTile;
    const T* bs = bt + (tile % 2) * kBTile;
    // x_s w_s rounded to T once, in place (zero rows stay zero).
    constexpr int kVecs = kP / kVec;
    for (int i = threadIdx.x; i < kRows * kVecs; i += kThreads) {
      const int r = i / kVecs, v = i % kVecs;
      uint4* p = reinterpret_cast<uint4*>(x + r * kXLd + v * kVec);
      uint4 val = *p;
      T* e = reinterpret_cast<T*>(&val);
      const float w = dts[tile * kRows + r];
#pragma unroll
      for (int k = 0; k < kVec; ++k) e[k] = FromFloat<T>(ToFloat(e[k]) * w);
      *p = val;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kRows; k += 16) {
      FragACol<T> a;  // (p, s) = xw[s][p]
      wmma::load_matrix_sync(a, x + k * kXLd + warp * 16, kXLd);
#pragma unroll
      for (int f = 0; f < kN / 16; ++f) {
        FragB<T> bf;
        wmma::load_matrix_sync(bf, bs + k * kBLd + f * 16, kBLd);
        wmma::mma_sync(acc[f], a, bf, acc[f]);
      }
    }
    __syncthreads();  // before the next issue overwrites this buffer
  }
  float* out = states + ((b * d.chunks + c) * d.heads + h) * kP * kN + warp * 16 * kN;
#pragma unroll
  for (int f = 0; f < kN / 16; ++f) {
    wmma::store_matrix_sync(out + f * 16, acc[f], kN, wmma::mem_row_major);
  }
  if (threadIdx.x == 0) chunk_sum[(b * d.chunks + c) * d.heads + h] = end;
}

// ---- 2. The states entering each chunk ------------------------------------
// H_0 = 0, H_{c+1} = exp(Acum_end,c) H_c + S_c in float32, four state
// entries a thread; H_c is written rounded to T (where the output kernel's
// tensor cores read it), so that kernel copies it as it stands. The
// chunks' own states are loaded kAhead at a time before the recurrence uses
// them: one load after another, each waiting on the last, ran this kernel
// at 0.66 TB/s (428 us a layer of Mamba-2-1.3B at 8 x 2048).
constexpr int kAhead = 8;

template <typename T>
__global__ void StatePassKernel(const Dims d, int64_t entries4, const float4* __restrict__ own,
                                const float* __restrict__ chunk_sum, T* __restrict__ enter) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  if (i >= entries4) return;
  float4 state = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c0 = 0; c0 < d.chunks; c0 += kAhead) {
    float4 s[kAhead];
    float decay[kAhead];
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      const int64_t head = (b * d.chunks + c0 + k) * d.heads + h;
      if (c0 + k < d.chunks) {
        s[k] = own[head * entries4 + i];
        decay[k] = expf(chunk_sum[head]);
      }
    }
#pragma unroll
    for (int k = 0; k < kAhead; ++k) {
      if (c0 + k >= d.chunks) break;
      const int64_t head = (b * d.chunks + c0 + k) * d.heads + h;
      T out[4] = {FromFloat<T>(state.x), FromFloat<T>(state.y), FromFloat<T>(state.z),
                  FromFloat<T>(state.w)};
      *reinterpret_cast<uint2*>(enter + (head * entries4 + i) * 4) =
          *reinterpret_cast<const uint2*>(out);
      state.x = fmaf(decay[k], state.x, s[k].x);
      state.y = fmaf(decay[k], state.y, s[k].y);
      state.z = fmaf(decay[k], state.z, s[k].z);
      state.w = fmaf(decay[k], state.w, s[k].w);
    }
  }
}

// ---- 3. The outputs of 64 rows of a chunk ----------------------------------
// y_l = sum_{s <= l} (C_l . B_s) exp(Acum_l - Acum_s) dt_s x_s
//       + exp(Acum_l) C_l H^T + D x_l, summed in float32 and stored in T
// (as the Mamba authors' chunk scan returns y in the dtype; a float32 y
// cost the norm kernel and this one 268 MB each way a layer at 8 x 2048).
//
// 8 warps: warp (rw, half) owns rows 16 rw .. 16 rw + 15 and, of each s
// tile, the columns 32 half .. 32 half + 31 (the products of C B^T it
// decays, and the k range of its share of M x); the two halves' partial y
// (and C H^T, split over N the same way) are summed once at the end. B and
// x of the s tiles sit in two buffers: tile i + 1 (after the last, the
// entering state H) loads by cp.async while tile i is multiplied.
// What it replaced, Mamba-2-1.3B at 8 x 2048 on an H200 (ncu): 4 warps and
// one buffer, 1.14 ms a layer; with the second buffer, 1.32 ms (99 KB of
// shared memory left 2 blocks, 8 warps, an SM: latency-bound at 1.4 IPC).
// The 8 warps keep that memory and double the warps an SM.
constexpr int kOutThreads = 256;

template <typename T, int kN>
__global__ void __launch_bounds__(kOutThreads, 2)
    ChunkOutputKernel(const Dims d, const T* __restrict__ xbc, const float* __restrict__ dt,
                      const float* __restrict__ A, const float* __restrict__ D,
                      const T* __restrict__ enter, T* __restrict__ y) {
  constexpr int kNLd = kN + kPad, kPLd = kP + kPad, kMLd = kRows + kPad;
  constexpr int kFLd = kRows + 4;  // float rows: 16 bytes of padding
  constexpr int kBTile = kRows * kNLd, kXTile = kRows * kPLd;
  constexpr int kHalf = kRows / 2;  // s columns (and N) a warp takes
  static_assert(kP == kRows, "the staging buffers assume 64-wide heads");
  LF_DYNAMIC_SMEM(smem);
  float* dts = reinterpret_cast<float*>(smem);
  float* acum = dts + d.chunk;
  T* ct = reinterpret_cast<T*>(acum + d.chunk);  // [64][kNLd]: C of the rows
  T* bt = ct + kBTile;                             // 2 x [64][kNLd]: B of s, or H [kP][kNLd]
  T* xt = bt + 2 * kBTile;                         // 2 x [64][kPLd]: x of s
  T* mt = xt + 2 * kXTile;                         // [64][kMLd]: the decayed C B^T
  float* sst = reinterpret_cast<float*>(mt + kRows * kMLd);  // [64][kFLd]: S, then y
  float* zst = reinterpret_cast<float*>(xt);  // [64][kFLd] over xt and mt, after the loop
  static_assert(kRows * kFLd * sizeof(float) <= (2 * kXTile + kRows * kMLd) * sizeof(T),
                "the carried-state tile must fit over x and the decayed products");

  const int64_t l0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t h = blockIdx.y, b = blockIdx.z / d.chunks, c = blockIdx.z % d.chunks;
  const int64_t g = h / (d.heads / d.groups);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rw = warp % 4, half = warp / 4;
  const T* rows = xbc + b * d.seq * d.row;
  const int64_t t_chunk = c * d.chunk;
  const int64_t c_col = d.width + d.groups * kN + g * kN, b_col = d.width + g * kN;
  const bool carry = c > 0;
  const int tiles = static_cast<int>(l0 / kRows) + 1;  // causal: s tiles up to the diagonal
  auto issue = [&](int tile) {
    const int buf = tile % 2;
    StageRowsAsync<T, kN>(bt + buf * kBTile, kNLd, rows, d.row, t_chunk + tile * kRows, d.seq,
                          b_col);
    StageRowsAsync<T, kP>(xt + buf * kXTile, kPLd, rows, d.row, t_chunk + tile * kRows, d.seq,
                          h * kP);
  };
  StageRowsAsync<T, kN>(ct, kNLd, rows, d.row, t_chunk + l0, d.seq, c_col);
  issue(0);
  CopyAsyncCommit();
  ChunkDecay(d, dt, A[h], b, c, h, dts, acum);

  const T* my_c = ct + rw * 16 * kNLd;
  FragC yacc[kP / 16];
#pragma unroll
  for (int f = 0; f < kP / 16; ++f) wmma::fill_fragment(yacc[f], 0.f);
  for (int tile = 0; tile < tiles; ++tile) {
    if (tile + 1 < tiles) {
      issue(tile + 1);
    } else if (carry) {  // H [kP][kN], already in T, into the free B buffer
      const T* h_enter = enter + ((b * d.chunks + c) * d.heads + h) * kP * kN;
      StageRowsAsync<T, kN>(bt + ((tile + 1) % 2) * kBTile, kNLd, h_enter, kN, 0, kP, 0);
    }
    CopyAsyncCommit();
    CopyAsyncWait<1>();  // this tile's group has landed
    __syncthreads();
    const int64_t s0 = static_cast<int64_t>(tile) * kRows;
    const T* bs = bt + (tile % 2) * kBTile + half * kHalf * kNLd;  // this warp's 32 s
    const T* xs = xt + (tile % 2) * kXTile + half * kHalf * kPLd;
    // S = C_rows B_s^T: this warp's 16 rows x 32 columns.
    FragC sacc[kHalf / 16];
#pragma unroll
    for (int f = 0; f < kHalf / 16; ++f) wmma::fill_fragment(sacc[f], 0.f);
#pragma unroll
    for (int k = 0; k < kN; k += 16) {
      FragA<T> a;
      wmma::load_matrix_sync(a, my_c + k, kNLd);
#pragma unroll
      for (int f = 0; f < kHalf / 16; ++f) {
        FragBCol<T> bf;  // (n, s) = B_s[n] = bt[s][n]
        wmma::load_matrix_sync(bf, bs + f * 16 * kNLd + k, kNLd);
        wmma::mma_sync(sacc[f], a, bf, sacc[f]);
      }
    }
    float* my_s = sst + rw * 16 * kFLd + half * kHalf;
    T* my_m = mt + rw * 16 * kMLd + half * kHalf;
#pragma unroll
    for (int f = 0; f < kHalf / 16; ++f) {
      wmma::store_matrix_sync(my_s + f * 16, sacc[f], kFLd, wmma::mem_row_major);
    }
    __syncwarp();
    // The decay and dt of each (l, s), 0 above the diagonal, rounded once.
    for (int i = lane; i < 16 * kHalf; i += 32) {
      const int r = i / kHalf, s = i % kHalf;
      const int64_t l = l0 + rw * 16 + r, sg = s0 + half * kHalf + s;
      const float v =
          sg <= l ? my_s[r * kFLd + s] * (expf(acum[l] - acum[sg]) * dts[sg]) : 0.f;
      my_m[r * kMLd + s] = FromFloat<T>(v);
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < kHalf; k += 16) {
      FragA<T> a;
      wmma::load_matrix_sync(a, my_m + k, kMLd);
#pragma unroll
      for (int f = 0; f < kP / 16; ++f) {
        FragB<T> bf;
        wmma::load_matrix_sync(bf, xs + k * kPLd + f * 16, kPLd);
        wmma::mma_sync(yacc[f], a, bf, yacc[f]);
      }
    }
    __syncthreads();  // before the next issue overwrites this buffer
  }
  CopyAsyncWait<0>();
  __syncthreads();

  // The state entering the chunk (zero for the first): C_rows H^T, this
  // warp's half of N.
  FragC zacc[kP / 16];
#pragma unroll
  for (int f = 0; f < kP / 16; ++f) wmma::fill_fragment(zacc[f], 0.f);
  if (carry) {
    const T* hs = bt + (tiles % 2) * kBTile;
#pragma unroll
    for (int k = half * (kN / 2); k < (half + 1) * (kN / 2); k += 16) {
      FragA<T> a;
      wmma::load_matrix_sync(a, my_c + k, kNLd);
#pragma unroll
      for (int f = 0; f < kP / 16; ++f) {
        FragBCol<T> bf;  // (n, p) = H[p][n]
        wmma::load_matrix_sync(bf, hs + f * 16 * kNLd + k, kNLd);
        wmma::mma_sync(zacc[f], a, bf, zacc[f]);
      }
    }
  }
  // The halves' partials summed: half 1 stores, half 0 adds and stores.
  float* row_y = sst + rw * 16 * kFLd;
  float* row_z = zst + rw * 16 * kFLd;
  if (half == 1) {
#pragma unroll
    for (int f = 0; f < kP / 16; ++f) {
      wmma::store_matrix_sync(row_y + f * 16, yacc[f], kFLd, wmma::mem_row_major);
      if (carry) wmma::store_matrix_sync(row_z + f * 16, zacc[f], kFLd, wmma::mem_row_major);
    }
  }
  __syncthreads();
  if (half == 0) {
#pragma unroll
    for (int f = 0; f < kP / 16; ++f) {
      FragC other;
      wmma::load_matrix_sync(other, row_y + f * 16, kFLd, wmma::mem_row_major);
      for (int i = 0; i < other.num_elements; ++i) yacc[f].x[i] += other.x[i];
      wmma::store_matrix_sync(row_y + f * 16, yacc[f], kFLd, wmma::mem_row_major);
      if (carry) {
        wmma::load_matrix_sync(other, row_z + f * 16, kFLd, wmma::mem_row_major);
        for (int i = 0; i < other.num_elements; ++i) zacc[f].x[i] += other.x[i];
        wmma::store_matrix_sync(row_z + f * 16, zacc[f], kFLd, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();
  const float d_skip = D != nullptr ? D[h] : 0.f;
  // Four outputs a thread and step: 8-byte reads of x and stores of y.
  for (int i = threadIdx.x; i < kRows * kP / 4; i += kOutThreads) {
    const int r = (4 * i) / kP, p = (4 * i) % kP;
    const int64_t l = l0 + r, t = t_chunk + l;
    if (t >= d.seq) continue;
    const uint2 xraw = *reinterpret_cast<const uint2*>(rows + t * d.row + h * kP + p);
    const T* xr = reinterpret_cast<const T*>(&xraw);
    const float decay = carry ? expf(acum[l]) : 0.f;
    uint2 yraw;
    T* yv = reinterpret_cast<T*>(&yraw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float v = sst[r * kFLd + p + k] + d_skip * ToFloat(xr[k]);
      if (carry) v = fmaf(decay, zst[r * kFLd + p + k], v);
      yv[k] = FromFloat<T>(v);
    }
    *reinterpret_cast<uint2*>(y + (b * d.seq + t) * d.width + h * kP + p) = yraw;
  }
}

// ---- 4. The gated RMSNorm of a token's row ---------------------------------
constexpr int kNormThreads = 256;

// 8 values a thread and step (16-byte loads of y, the gate, the weight and
// the output): width, gate_row and the pointers are multiples of 8 values
// (LaunchSsd checks). The second pass re-reads the row from L1/L2.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    GatedRmsNormKernel(const T* __restrict__ y, const T* __restrict__ gate, int64_t gate_row,
                       const T* __restrict__ weight, int64_t width, float eps,
                       T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const T* yr = y + row * width;
  const T* gr = gate + row * gate_row;
  auto gated = [&](int64_t j, float* v) {  // v[0..8) = y silu(gate) at j..j+7
    uint4 yraw = *reinterpret_cast<const uint4*>(yr + j);
    uint4 graw = *reinterpret_cast<const uint4*>(gr + j);
    const T* yv = reinterpret_cast<const T*>(&yraw);
    const T* g = reinterpret_cast<const T*>(&graw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = ToFloat(yv[k]) * Silu(ToFloat(g[k]));
  };
  float sum = 0.f;
  for (int64_t j = kVec * threadIdx.x; j < width; j += kVec * kNormThreads) {
    float v[kVec];
    gated(j, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum = fmaf(v[k], v[k], sum);
  }
  const float scale = rsqrtf(BlockSum<kNormThreads>(sum) / static_cast<float>(width) + eps);
  for (int64_t j = kVec * threadIdx.x; j < width; j += kVec * kNormThreads) {
    float v[kVec];
    gated(j, v);
    uint4 wraw = *reinterpret_cast<const uint4*>(weight + j);
    const T* w = reinterpret_cast<const T*>(&wraw);
    uint4 oraw;
    T* o = reinterpret_cast<T*>(&oraw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) o[k] = FromFloat<T>(ToFloat(w[k]) * (v[k] * scale));
    *reinterpret_cast<uint4*>(out + row * width + j) = oraw;
  }
}

// The workspace: the chunks' own states [B, c, H, P, N] float32, their total
// decays, y [B, L, E] in T, then the entering states in T; each part
// starts on a multiple of 64 floats (256 bytes).
struct Workspace {
  int64_t states, chunk_sum, y, enter, floats;
};

int64_t Up64(int64_t n) { return (n + 63) / 64 * 64; }

Workspace WorkspaceOf(const Dims& d) {
  const int64_t state_floats = d.batch * d.chunks * d.heads * kP * d.states;
  Workspace w;
  w.states = 0;
  w.chunk_sum = w.states + state_floats;
  w.y = w.chunk_sum + Up64(d.batch * d.chunks * d.heads);
  w.enter = w.y + Up64((d.batch * d.seq * d.width + 1) / 2);  // 16-bit values
  w.floats = w.enter + Up64((state_floats + 1) / 2);  // 16-bit entries
  return w;
}

template <typename T, int kN>
cudaError_t LaunchSsdOf(const SsdArgs& a, cudaStream_t stream) {
  const Dims d = DimsOf(a);
  const Workspace w = WorkspaceOf(d);
  const T* xbc = static_cast<const T*>(a.xbc);
  float* states = a.work + w.states;
  float* chunk_sum = a.work + w.chunk_sum;
  T* y = reinterpret_cast<T*>(a.work + w.y);
  T* enter = reinterpret_cast<T*>(a.work + w.enter);
  const size_t state_smem = 2 * d.chunk * sizeof(float) +
                            2 * (kRows * (kP + kPad) + kRows * (kN + kPad)) * sizeof(T);
  const size_t output_smem =
      2 * d.chunk * sizeof(float) +
      (3 * kRows * (kN + kPad) + 2 * kRows * (kP + kPad) + kRows * (kRows + kPad)) * sizeof(T) +
      kRows * (kRows + 4) * sizeof(float);
  auto* state_kernel = &ChunkStateKernel<T, kN>;
  auto* output_kernel = &ChunkOutputKernel<T, kN>;
  cudaError_t err = LF_SET_MAX_DYNAMIC_SMEM(state_kernel, state_smem);
  if (err != cudaSuccess) return err;
  err = LF_SET_MAX_DYNAMIC_SMEM(output_kernel, output_smem);
  if (err != cudaSuccess) return err;
  LF_LAUNCH(state_kernel, dim3(static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch * d.chunks)),
            dim3(kThreads), state_smem, stream, d, xbc, a.dt, a.A, states, chunk_sum);
  const int64_t entries4 = kP * kN / 4;
  auto* pass_kernel = &StatePassKernel<T>;
  LF_LAUNCH(pass_kernel,
            dim3(static_cast<unsigned>((entries4 + 255) / 256), static_cast<unsigned>(d.heads),
                 static_cast<unsigned>(d.batch)),
            dim3(256), 0, stream, d, entries4, reinterpret_cast<const float4*>(states),
            static_cast<const float*>(chunk_sum), enter);
  LF_LAUNCH(output_kernel,
            dim3(static_cast<unsigned>(d.chunk / kRows), static_cast<unsigned>(d.heads),
                 static_cast<unsigned>(d.batch * d.chunks)),
            dim3(kOutThreads), output_smem, stream, d, xbc, a.dt, a.A, a.D,
            static_cast<const T*>(enter), y);  // y in T
  auto* norm_kernel = &GatedRmsNormKernel<T>;
  LF_LAUNCH(norm_kernel, dim3(static_cast<unsigned>(d.batch * d.seq)), dim3(kNormThreads), 0,
            stream, static_cast<const T*>(y), static_cast<const T*>(a.gate), a.gate_row,
            static_cast<const T*>(a.norm_weight), d.width, static_cast<float>(a.eps),
            static_cast<T*>(a.out));
  return LF_LAUNCH_ERROR();
}

}  // namespace

bool SsdSupports(ActType type, int64_t head_dim, int64_t states, int64_t chunk) {
  return type != ActType::kFloat32 && head_dim == kP && (states == 64 || states == 128) &&
         chunk > 0 && chunk % kRows == 0 && chunk <= 1024;
}

int64_t SsdWorkspaceFloats(const SsdArgs& a) { return WorkspaceOf(DimsOf(a)).floats; }

cudaError_t LaunchSsd(const SsdArgs& a, cudaStream_t stream) {
  if (!SsdSupports(a.type, a.head_dim, a.states, a.chunk) || a.groups < 1 ||
      a.heads % a.groups != 0) {
    return cudaErrorInvalidValue;
  }
  // The 16-byte loads and stores (StageRowsAsync, GatedRmsNormKernel).
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!aligned(a.xbc) || !aligned(a.gate) || !aligned(a.norm_weight) || !aligned(a.out) ||
      !aligned(a.work) || a.gate_row % kVec != 0 || a.groups * a.states % kVec != 0) {
    return cudaErrorMisalignedAddress;
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
