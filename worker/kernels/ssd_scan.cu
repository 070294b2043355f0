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
#include "worker/kernels/mma.cuh"
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
  return {a.batch,
          a.seq,
          a.heads,
          a.groups,
          a.states,
          a.chunk,
          (a.seq + a.chunk - 1) / a.chunk,
          e + 2 * a.groups * a.states,
          e};
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
  T* bt = xw + 2 * kXTile;                       // 2 x [64][kBLd]
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
// y_l = exp(Acum_l) C_l H^T + sum_{s <= l} (C_l . B_s) exp(Acum_l - Acum_s) dt_s x_s
//       + D x_l, summed in float32 and stored in T (as the Mamba authors'
// chunk scan returns y in the dtype; a float32 y cost the norm kernel and
// this one 268 MB each way a layer at 8 x 2048).
//
// 4 warps; warp w owns rows 16 w .. 16 w + 15 of the block's 64 and every
// column, and keeps all of its products in registers (mma.cuh), as
// FlashAttention-2 keeps its scores: its rows of C as A fragments for the
// whole block (N / 16 k steps), y as 8 float32 accumulator tiles, and for
// each s tile the 16 x 64 products C B_s^T, decayed, masked and rounded to
// T in place to become the A operand of (C B^T) x_s. The entering state's
// term comes first, from H staged where tile 1's B goes, so that y's
// accumulators carry it and the loop adds the rest. B and x of the s tiles
// sit in two buffers: tile i + 1 loads by cp.async while tile i is
// multiplied. On the diagonal tile a warp skips the column tiles wholly
// above its rows.
// What it replaced (Mamba-2-1.3B at 8 x 2048 on an H200, ncu): WMMA with
// the products stored to shared memory as float32, read back to decay,
// stored again in T and reloaded, 8 warps, 1.14 ms a layer at 1.4 IPC (a
// chain of dependent loads, products and barriers).
constexpr int kOutThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

template <typename T, int kN>
__global__ void __launch_bounds__(kOutThreads, 3)
    ChunkOutputKernel(const Dims d, const T* __restrict__ xbc, const float* __restrict__ dt,
                      const float* __restrict__ A, const float* __restrict__ D,
                      const T* __restrict__ enter, T* __restrict__ y) {
  constexpr int kNLd = kN + kPad, kPLd = kP + kPad;
  constexpr int kBTile = kRows * kNLd, kXTile = kRows * kPLd;
  constexpr int kKSteps = kN / 16;    // k steps of C B^T (and of C H^T)
  constexpr int kSTiles = kRows / 8;  // n tiles of the products: 8 columns each
  constexpr int kPTiles = kP / 8;     // n tiles of y
  static_assert(kN % 32 == 0 && kP == kRows, "the fragment loops assume these shapes");
  LF_DYNAMIC_SMEM(smem);
  float* dts = reinterpret_cast<float*>(smem);
  float* acum = dts + d.chunk;
  T* ct = reinterpret_cast<T*>(acum + d.chunk);  // [64][kNLd]: C of the rows
  T* bt = ct + kBTile;                           // 2 x [64][kNLd]: B of s, or H [kP][kNLd]
  T* xt = bt + 2 * kBTile;                       // 2 x [64][kPLd]: x of s

  const int64_t l0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t h = blockIdx.y, b = blockIdx.z / d.chunks, c = blockIdx.z % d.chunks;
  const int64_t g = h / (d.heads / d.groups);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int fg = lane / 4, ft = lane % 4;  // the fragment's row group and column pair
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
  // Group 0: C of the rows and H (into buffer 1); group 1: tile 0.
  StageRowsAsync<T, kN>(ct, kNLd, rows, d.row, t_chunk + l0, d.seq, c_col);
  if (carry) {
    const T* h_enter = enter + ((b * d.chunks + c) * d.heads + h) * kP * kN;
    StageRowsAsync<T, kN>(bt + kBTile, kNLd, h_enter, kN, 0, kP, 0);
  }
  CopyAsyncCommit();
  issue(0);
  CopyAsyncCommit();
  ChunkDecay(d, dt, A[h], b, c, h, dts, acum);
  CopyAsyncWait<1>();
  __syncthreads();

  // This lane's rows (chunk positions) and their cumulative decays.
  const int r0 = warp * 16 + fg;               // row within the block, and r0 + 8
  const int64_t lr0 = l0 + r0, lr1 = lr0 + 8;  // rows within the chunk
  const float acum0 = acum[lr0], acum1 = acum[lr1];
  // ldmatrix row addresses: tile i of an x4 from lanes 8 i .. 8 i + 7.
  const int lrow = lane % 8, ltile = lane / 8;
  // C's A fragments: tiles (rows 0-7 | 8-15) x (k 0-7 | 8-15) of each k step.
  uint32_t cfrag[kKSteps][4];
#pragma unroll
  for (int k = 0; k < kKSteps; ++k) {
    LdMatrixX4(cfrag[k],
               ct + (warp * 16 + lrow + 8 * (ltile % 2)) * kNLd + 16 * k + 8 * (ltile / 2));
  }
  // B operands of rows `base` [s or p][n] (n contiguous): for n tile j (its
  // 8 rows) the k steps 2 q and 2 q + 1 of x4 number q.
  auto b_frags = [&](const T* base, int j, int q, uint32_t(&r)[4]) {
    LdMatrixX4(r, base + (8 * j + lrow) * kNLd + 32 * q + 8 * ltile);
  };

  float yacc[kPTiles][4];
#pragma unroll
  for (int f = 0; f < kPTiles; ++f) yacc[f][0] = yacc[f][1] = yacc[f][2] = yacc[f][3] = 0.f;
  if (carry) {  // exp(Acum_l) C_l H^T, H [p][n] in buffer 1
    const T* hs = bt + kBTile;
#pragma unroll
    for (int f = 0; f < kPTiles; ++f) {
#pragma unroll
      for (int q = 0; q < kKSteps / 2; ++q) {
        uint32_t r[4];
        b_frags(hs, f, q, r);
        Mma16816<T>(yacc[f], cfrag[2 * q], r[0], r[1]);
        Mma16816<T>(yacc[f], cfrag[2 * q + 1], r[2], r[3]);
      }
    }
    const float e0 = FastExp2(acum0 * kLog2e), e1 = FastExp2(acum1 * kLog2e);
#pragma unroll
    for (int f = 0; f < kPTiles; ++f) {
      yacc[f][0] *= e0, yacc[f][1] *= e0, yacc[f][2] *= e1, yacc[f][3] *= e1;
    }
  }
  __syncthreads();  // H read: buffer 1 may take tile 1

  for (int tile = 0; tile < tiles; ++tile) {
    if (tile + 1 < tiles) issue(tile + 1);
    CopyAsyncCommit();
    CopyAsyncWait<1>();  // this tile's group has landed
    __syncthreads();
    const int64_t s0 = static_cast<int64_t>(tile) * kRows;
    const T* bs = bt + (tile % 2) * kBTile;
    const T* xs = xt + (tile % 2) * kXTile;
    const bool diagonal = tile + 1 == tiles;
    // Column tiles j with 8 j > this warp's last row are wholly above the
    // diagonal on the diagonal tile: zero, skipped.
    const int jmax = diagonal ? 2 * warp + 2 : kSTiles;
    float sacc[kSTiles][4];
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
      sacc[j][0] = sacc[j][1] = sacc[j][2] = sacc[j][3] = 0.f;
      if (j >= jmax) continue;
#pragma unroll
      for (int q = 0; q < kKSteps / 2; ++q) {
        uint32_t r[4];
        b_frags(bs, j, q, r);
        Mma16816<T>(sacc[j], cfrag[2 * q], r[0], r[1]);
        Mma16816<T>(sacc[j], cfrag[2 * q + 1], r[2], r[3]);
      }
    }
    // Decay, dt and the causal mask in place, rounded to T: the A operand
    // of the product with x, one 16-wide k step per pair of column tiles.
    uint32_t pfrag[kSTiles / 2][4];
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
      const int64_t sc = s0 + 8 * j + 2 * ft;  // this lane's two columns: sc, sc + 1
      float w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t s = sc + (e & 1), l = e < 2 ? lr0 : lr1;
        const float al = e < 2 ? acum0 : acum1;
        w[e] = s <= l ? sacc[j][e] * (FastExp2((al - acum[s]) * kLog2e) * dts[s]) : 0.f;
      }
      pfrag[j / 2][2 * (j % 2)] = PackPair<T>(w[0], w[1]);
      pfrag[j / 2][2 * (j % 2) + 1] = PackPair<T>(w[2], w[3]);
    }
    // y += P x_s: x_s [s][p] row-major is k x n, so its tiles transposed.
    const int kmax = diagonal ? warp + 1 : kSTiles / 2;  // k steps (16 s) not all zero
#pragma unroll
    for (int k = 0; k < kSTiles / 2; ++k) {
      if (k >= kmax) continue;
#pragma unroll
      for (int f2 = 0; f2 < kPTiles / 2; ++f2) {
        uint32_t r[4];  // (s 0-7 | 8-15 of the k step) x (p tile 2 f2 | 2 f2 + 1)
        const T* tile = xs + (16 * k + lrow + 8 * (ltile % 2)) * kPLd + 16 * f2 + 8 * (ltile / 2);
        LdMatrixX4</*kTrans=*/true>(r, tile);
        Mma16816<T>(yacc[2 * f2], pfrag[k], r[0], r[1]);
        Mma16816<T>(yacc[2 * f2 + 1], pfrag[k], r[2], r[3]);
      }
    }
    __syncthreads();  // before the next issue overwrites this buffer
  }
  CopyAsyncWait<0>();

  // y = the sums + D x, this lane's two columns of each p tile in its rows.
  const float d_skip = D != nullptr ? D[h] : 0.f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t t = t_chunk + (half == 0 ? lr0 : lr1);
    if (t >= d.seq) continue;
    const T* xr = rows + t * d.row + h * kP;
    T* yr = y + (b * d.seq + t) * d.width + h * kP;
#pragma unroll
    for (int f = 0; f < kPTiles; ++f) {
      const int p = 8 * f + 2 * ft;
      const uint32_t xraw = *reinterpret_cast<const uint32_t*>(xr + p);
      const T* xv = reinterpret_cast<const T*>(&xraw);
      *reinterpret_cast<uint32_t*>(yr + p) =
          PackPair<T>(fmaf(d_skip, ToFloat(xv[0]), yacc[f][2 * half]),
                      fmaf(d_skip, ToFloat(xv[1]), yacc[f][2 * half + 1]));
    }
  }
}

// ---- 4. The gated RMSNorm of a token's row ---------------------------------
constexpr int kNormThreads = 256;
constexpr int kNormHeld = 4;  // 8-value steps a thread keeps in registers

// 8 values a thread and step (16-byte loads of y, the gate, the weight and
// the output): width, gate_row and the pointers are multiples of 8 values
// (LaunchSsd checks). The first kNormHeld steps' gated values stay in
// registers between the sum of squares and the output (rows up to 8192
// values: every preset); a wider row's later steps are re-read. Re-reading
// every step from L1/L2 ran this kernel at 160 us a layer of Mamba-2-1.3B
// at 8 x 2048 (H200), 1.6x its 400 MB at full bandwidth.
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
  constexpr int64_t kStep = kVec * kNormThreads;
  const int64_t j0 = kVec * threadIdx.x;
  float held[kNormHeld][kVec];
  float sum = 0.f;
#pragma unroll
  for (int s = 0; s < kNormHeld; ++s) {
    if (j0 + s * kStep < width) {
      gated(j0 + s * kStep, held[s]);
#pragma unroll
      for (int k = 0; k < kVec; ++k) sum = fmaf(held[s][k], held[s][k], sum);
    }
  }
  for (int64_t j = j0 + kNormHeld * kStep; j < width; j += kStep) {
    float v[kVec];
    gated(j, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum = fmaf(v[k], v[k], sum);
  }
  const float scale = rsqrtf(BlockSum<kNormThreads>(sum) / static_cast<float>(width) + eps);
  auto store = [&](int64_t j, const float* v) {
    uint4 wraw = *reinterpret_cast<const uint4*>(weight + j);
    const T* w = reinterpret_cast<const T*>(&wraw);
    uint4 oraw;
    T* o = reinterpret_cast<T*>(&oraw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) o[k] = FromFloat<T>(ToFloat(w[k]) * (v[k] * scale));
    *reinterpret_cast<uint4*>(out + row * width + j) = oraw;
  };
#pragma unroll
  for (int s = 0; s < kNormHeld; ++s) {
    if (j0 + s * kStep < width) store(j0 + s * kStep, held[s]);
  }
  for (int64_t j = j0 + kNormHeld * kStep; j < width; j += kStep) {
    float v[kVec];
    gated(j, v);
    store(j, v);
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
  w.floats = w.enter + Up64((state_floats + 1) / 2);          // 16-bit entries
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
  const size_t state_smem =
      2 * d.chunk * sizeof(float) + 2 * (kRows * (kP + kPad) + kRows * (kN + kPad)) * sizeof(T);
  const size_t output_smem =
      2 * d.chunk * sizeof(float) + (3 * kRows * (kN + kPad) + 2 * kRows * (kP + kPad)) * sizeof(T);
  auto* state_kernel = &ChunkStateKernel<T, kN>;
  auto* output_kernel = &ChunkOutputKernel<T, kN>;
  cudaError_t err = LF_SET_MAX_DYNAMIC_SMEM(state_kernel, state_smem);
  if (err != cudaSuccess) return err;
  err = LF_SET_MAX_DYNAMIC_SMEM(output_kernel, output_smem);
  if (err != cudaSuccess) return err;
  LF_LAUNCH(state_kernel,
            dim3(static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch * d.chunks)),
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
