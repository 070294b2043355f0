// Warp-level tensor-core products with the operands in registers: PTX
// mma.sync m16n8k16 (bf16 / fp16 inputs, float32 accumulators) and ldmatrix
// (8 x 8 tiles of 16-bit values from shared memory into the fragment
// layouts the product expects). Unlike WMMA, whose fragment layout is
// opaque, these layouts are specified (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"), so a product's float32 accumulators can be scaled,
// masked and rounded to the next product's A operand in place, without a
// trip through shared memory (as FlashAttention-2 keeps its scores).
//
// Layouts, for lane L of the warp, g = L / 4, t = L % 4 (rows, columns):
//   A (16 x 16, row-major), 4 registers of two values each:
//     a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B (16 x 8, k x n), 2 registers: b[0] = (2t..2t+1, g), b[1] = (2t+8..2t+9, g)
//   C / D (16 x 8, float32): c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
// So the C of two adjacent n-tiles j, j + 1 is, rounded pairwise, the A of
// one 16-wide k step: {c_j[0..1], c_j[2..3], c_{j+1}[0..1], c_{j+1}[2..3]}.
// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of tile i; register i
// of lane L holds tile i's (g, 2t..2t+1), or with .trans its (2t..2t+1, g).
//
// In the CPU emulation (LF_CUDA_EMULATION) each call gathers the warp's
// registers (or row addresses) and computes its own lane's values from the
// whole tiles, so the fragment bookkeeping of a kernel is checked in CI.
#ifndef LAYERFLOW_WORKER_KERNELS_MMA_CUH_
#define LAYERFLOW_WORKER_KERNELS_MMA_CUH_

#include <cstdint>
#include <cstring>
#include <type_traits>
#ifdef LF_CUDA_EMULATION
#include <array>
#include <bit>
#endif

#include "worker/kernels/act_types.cuh"

namespace layerflow::worker::cuda_kernels {

// Two values rounded to T, the first in the low half (the lower column).
template <typename T>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  const T v[2] = {FromFloat<T>(lo), FromFloat<T>(hi)};
  uint32_t r;
  memcpy(&r, v, sizeof(r));
  return r;
}

#ifdef LF_CUDA_EMULATION
namespace mma_emu {
template <typename T>
inline void Unpack(uint32_t r, float* out) {
  const auto v = std::bit_cast<std::array<T, 2>>(r);
  out[0] = ToFloat(v[0]);
  out[1] = ToFloat(v[1]);
}
// The four (tile, or transposed tile) registers of this lane from the row
// addresses of all lanes (tile i's rows from lanes 8i..8i+7).
template <int kTiles>
inline void LdMatrix(uint32_t* r, const void* row, bool trans) {
  const auto rows = ::lf_emu::AllGather(row);
  const unsigned lane = ::lf_emu::Lane(), g = lane / 4, t = lane % 4;
  for (int i = 0; i < kTiles; ++i) {
    uint16_t v[2];
    for (int e = 0; e < 2; ++e) {
      const unsigned rr = trans ? 2 * t + e : g, cc = trans ? g : 2 * t + e;
      std::memcpy(&v[e], static_cast<const unsigned char*>(rows[8 * i + rr]) + 2 * cc, 2);
    }
    std::memcpy(&r[i], v, sizeof(uint32_t));
  }
}
}  // namespace mma_emu
#endif

// r[0..4) = four 8 x 8 tiles of 16-bit values, each transposed when
// kTrans; `row` is this lane's row address (16-byte aligned, shared memory).
template <bool kTrans = false>
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* row) {
#if defined(__CUDA_ARCH__)
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  }
#elif defined(LF_CUDA_EMULATION)
  mma_emu::LdMatrix<4>(r, row, kTrans);
#else
  (void)row;
  r[0] = r[1] = r[2] = r[3] = 0;
#endif
}

// d += a b for one 16 x 8 x 16 tile (T = __nv_bfloat16 or __half).
template <typename T>
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#elif defined(LF_CUDA_EMULATION)
  struct Regs {
    uint32_t a[4], b[2];
  };
  const auto all = ::lf_emu::AllGather(Regs{{a[0], a[1], a[2], a[3]}, {b0, b1}});
  float A[16][16], B[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane / 4, t = lane % 4;
    const Regs& r = all[lane];
    mma_emu::Unpack<T>(r.a[0], &A[g][2 * t]);
    mma_emu::Unpack<T>(r.a[1], &A[g + 8][2 * t]);
    mma_emu::Unpack<T>(r.a[2], &A[g][2 * t + 8]);
    mma_emu::Unpack<T>(r.a[3], &A[g + 8][2 * t + 8]);
    float b[4];
    mma_emu::Unpack<T>(r.b[0], b);
    mma_emu::Unpack<T>(r.b[1], b + 2);
    B[2 * t][g] = b[0], B[2 * t + 1][g] = b[1], B[2 * t + 8][g] = b[2], B[2 * t + 9][g] = b[3];
  }
  const unsigned lane = ::lf_emu::Lane(), g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const unsigned row = e < 2 ? g : g + 8, col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    d[e] = acc;
  }
#else
  (void)d, (void)a, (void)b0, (void)b1;
#endif
}

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_KERNELS_MMA_CUH_
