// The single passes over half-precision (bf16 / fp16) states that the
// analysis path reads them with (layer_metrics.cc): per-token statistics,
// weighted sums over tokens, and the CKA Gram's lower block triangle with its
// centred inner products. On CUDA (a build with LF_WITH_CUDA) each is one
// fused kernel (half_state_kernels.cu) that reads its inputs once and
// accumulates in float64; elsewhere, and as those kernels' reference in
// tests, the same quantities from ATen operations (the *Aten functions, any
// device) on float64 copies. Half values are exact in float64 and so are
// their products, so both agree to float64 rounding.
//
// Why the raw Gram and not the centred one (the adjacent-pair CKA): C = H K H
// = K - r 1' - 1 r' + g (r = K's row means = X mean, g = |mean|^2) is formed
// on the fly in float64 from K's float32 entries, so the n x n matrix is
// written once by the GEMM and read once per pair, never centred in memory;
// and C is symmetric, so only the blocks on and below the diagonal of a
// `blocks` x `blocks` tiling are multiplied ((blocks + 1) / (2 blocks) of the
// GEMM) and read. The all-pair CKA keeps whole centred Grams instead
// (HalfCentredGram), centred in place once.
#ifndef LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_OPS_H_
#define LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_OPS_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace layerflow::worker {

// Per token of cur [B, n, d] (half), float64 [B, n] each: |cur_t|^2, and
// with prev [B, n, d] (same shape and dtype) prev_t . cur_t and
// |cur_t - prev_t|^2 (the exact difference: no cancellation for small steps),
// and with v [B, d] (float64) cur_t . v. Undefined where the input is.
struct TokenStats {
  at::Tensor norm_sq;
  at::Tensor prev_dot;
  at::Tensor step_sq;
  at::Tensor vec_dot;
};
TokenStats HalfTokenStats(const at::Tensor& cur, const at::Tensor& prev,
                          const at::Tensor& v);
TokenStats HalfTokenStatsAten(const at::Tensor& cur, const at::Tensor& prev,
                              const at::Tensor& v);

// sum_t w[b, r, t] h[b, t, :] for half h [B, n, d] and float64 w [B, k, n],
// 1 <= k <= 4: float64 [B, k, d].
at::Tensor HalfWeightedTokenSums(const at::Tensor& w, const at::Tensor& h);
at::Tensor HalfWeightedTokenSumsAten(const at::Tensor& w, const at::Tensor& h);

// The raw Gram of one point, centred on the fly.
struct RawGram {
  at::Tensor lower;      // K = X X^T, float32 [B, n, n]; only the lower block triangle is set
  at::Tensor row_means;  // r = X mean, float64 [B, n]
  at::Tensor grand;      // g = |mean|^2, float64 [B]
  int64_t blocks = 1;
};

// The row blocks of a Gram's lower block triangle (rows n i / blocks ..
// n (i + 1) / blocks - 1 for i < blocks): 4 blocks multiply 62.5% of the full
// product. Fewer when n is small (each block at least kMinGramBlockRows).
// The float64 path's Grams use the same tiling (layer_metrics.cc).
inline constexpr int64_t kGramRowBlocks = 4;
inline constexpr int64_t kMinGramBlockRows = 64;
int64_t GramRowBlocks(int64_t n);
// Row block i: rows [lo, hi), multiplied against columns [0, hi).
struct RowBlock {
  int64_t lo, hi;
};
RowBlock RowBlockOf(int64_t n, int64_t blocks, int64_t i);

// Whether t holds bf16 or fp16 values (what these functions take).
bool IsHalfPrecision(const at::Tensor& t);

// K = h h^T of half h [B, n, d] in its lower block triangle: half GEMMs with
// float32 accumulation and output (cuBLAS on CUDA; on the CPU the float32
// product of the exactly upcast states). The entries above the diagonal
// blocks are left unset.
at::Tensor HalfLowerBlockGram(const at::Tensor& h, int64_t blocks);

// The whole centred Gram of half h [B, n, d] into float32 out [B, n, n]
// (the all-pair CKA's Grams, kept for its products): K = h h^T the same
// way, then C = K - r 1' - 1 r' + g formed in float64 from K's float32
// entries (r [B, n] = K's row means = h mean, g [B] = |mean|^2, float64)
// and rounded to float32 in place, in one fused pass on CUDA that also
// returns ||C||_F^2 [B] (float64, of the stored entries).
at::Tensor HalfCentredGram(at::Tensor& out, const at::Tensor& h, const at::Tensor& r,
                           const at::Tensor& g);
// The centring step alone on any device: raw Grams k (float32) in place,
// the same float64 arithmetic; returns ||C||_F^2 [B]. The reference of the
// fused pass.
at::Tensor CentreGramAten(at::Tensor& k, const at::Tensor& r, const at::Tensor& g);

// {<C_a, C_b>_F, <C_b, C_b>_F} per prompt, float64 [B, 2], C = K - r 1' -
// 1 r' + g in float64; `a` may be empty (a.lower undefined; column 0 is then
// 0). Both Grams have the same shape and blocks.
at::Tensor CentredGramProducts(const RawGram& a, const RawGram& b);
at::Tensor CentredGramProductsAten(const RawGram& a, const RawGram& b);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_OPS_H_
