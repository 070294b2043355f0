// The single passes over the states that the analysis path's fused route
// reads them with (metric_observers.cc): per-token statistics, weighted sums
// over tokens, and the CKA Gram's lower block triangle with its centred inner
// products. The route takes half-precision (bf16 / fp16) states on any
// device and float32 states on CUDA (TakesFusedPath; float32 states on the
// CPU and float64 ones take the float64 path instead). The names say "Half"
// from when only bf16 / fp16 came here; every function below that takes
// states takes bf16, fp16 and float32 ones. On CUDA (a build with
// LF_WITH_CUDA) each pass is one fused kernel (half_state_kernels.cu) that
// reads its inputs once and accumulates in float64; elsewhere, and as those
// kernels' reference in tests, the same quantities from ATen operations (the
// *Aten functions, any device) on float64 copies. Bf16 / fp16 / float32
// values are exact in float64 and so are their products, so both agree to
// float64 rounding. The Gram alone is not exact: a half GEMM with float32
// accumulation (exact products of halves), for float32 states the
// split-bf16 GEMM below.
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
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace layerflow::worker {

// Per token of cur [B, n, d] (bf16, fp16 or float32), float64 [B, n] each:
// |cur_t|^2, and
// with prev [B, n, d] (same shape and dtype) prev_t . cur_t and
// |cur_t - prev_t|^2 (the exact difference: no cancellation for small steps),
// and with v [B, d] (float64) cur_t . v. Undefined where the input is.
struct TokenStats {
  at::Tensor norm_sq;
  at::Tensor prev_dot;
  at::Tensor step_sq;
  at::Tensor vec_dot;
};
TokenStats HalfTokenStats(const at::Tensor& cur, const at::Tensor& prev, const at::Tensor& v);
TokenStats HalfTokenStatsAten(const at::Tensor& cur, const at::Tensor& prev, const at::Tensor& v);

// sum_t w[b, r, t] h[b, t, :] for h [B, n, d] (bf16, fp16 or float32) and
// float64 w [B, k, n], 1 <= k <= 4: float64 [B, k, d].
at::Tensor HalfWeightedTokenSums(const at::Tensor& w, const at::Tensor& h);
at::Tensor HalfWeightedTokenSumsAten(const at::Tensor& w, const at::Tensor& h);

// Everything the metrics' fused path reads a point's states for, from one
// pass over cur [B, n, d] (bf16, fp16 or float32) and the point before, prev
// (same shape and dtype, or undefined): on CUDA one kernel
// (half_state_kernels.h, LaunchPointPass) where the rows fit it (d a
// multiple of 8 bf16 / fp16 or 4 float32 values, d <= 8192 / 4096);
// elsewhere HalfTokenStats and HalfWeightedTokenSums composed (the same
// quantities; HalfPointPassAten composes their Aten references).
struct PointPassSpec {
  bool unit = false;          // sum_t cur_t / max(|cur_t|, tiny)
  bool unit_nofirst = false;  // the same over t >= 1
  bool plain = false;         // sum_t cur_t
  bool rounded = false;       // float32 cur: bf16(cur) kept, and sum_t bf16(cur_t)
  double tiny = 1e-300;
  // With prev: prev_t . prev_vec_b (float64 [B, d]), of bf16(prev_t) when
  // prev_vec_rounded: the point before's Gram row means, from its mean.
  at::Tensor prev_vec;
  bool prev_vec_rounded = false;
};
struct PointPassResult {
  at::Tensor norm_sq, prev_dot, step_sq;  // float64 [B, n]; the prev ones undefined without prev
  at::Tensor prev_vec_dot;                // float64 [B, n], with prev_vec
  at::Tensor rounded_norm_sq;             // |bf16(cur_t)|^2 float64 [B, n], with rounded
  at::Tensor unit_sums;                   // float64 [B, k, d]: unit, then unit_nofirst, those asked
  at::Tensor plain_sum;                   // float64 [B, d]
  at::Tensor rounded;                     // bf16 [B, n, d]
  at::Tensor rounded_sum;                 // float64 [B, d]
};
PointPassResult HalfPointPass(const at::Tensor& cur, const at::Tensor& prev,
                              const PointPassSpec& spec);
PointPassResult HalfPointPassAten(const at::Tensor& cur, const at::Tensor& prev,
                                  const PointPassSpec& spec);
// How far HalfPointPass's kernel may be from HalfPointPassAten, per entry
// (float64, the shapes of PointPassResult; `rounded` undefined: it is
// exact): the kernel sums each thread's products of a token in float32
// (at most kPointPassThreadTerms, cuda_kernels::kPassThreadTerms), so a
// statistic sum_i a_i b_i is within
// e = (kPointPassThreadTerms + 3) 2^-24 + 2^-44 of sum_i |a_i b_i|, a unit row
// within e / 2 of sum_t |x_t| / |x_t| (1 / |x| from |x|^2 halves it), and
// the float64 sums of rows within 2^-44 of their absolute sums.
inline constexpr int kPointPassThreadTerms = 32;
PointPassResult HalfPointPassBounds(const at::Tensor& cur, const at::Tensor& prev,
                                    const PointPassSpec& spec);

// The raw Gram of one point, centred on the fly.
struct RawGram {
  at::Tensor lower;      // K = X X^T, float32 [B, n, n]; only the lower block triangle is set
  at::Tensor row_means;  // r = X mean, float64 [B, n]
  at::Tensor grand;      // g = |mean|^2, float64 [B]
  int64_t blocks = 1;
};

// The row blocks of a Gram's lower block triangle (rows n i / blocks ..
// n (i + 1) / blocks - 1 for i < blocks): 8 blocks multiply 56.25% of the
// full product, 4 blocks 62.5%. Fewer when n is small (each block at least
// kMinGramBlockRows) or when fewer give equal blocks of whole 16-byte
// float32 rows, which the tile GEMM needs (half_state_ops.cc). The float64
// path's Grams use the same tiling (metric_observers.cc).
inline constexpr int64_t kGramRowBlocks = 8;
inline constexpr int64_t kMinGramBlockRows = 64;
int64_t GramRowBlocks(int64_t n);
// The most blocks GramRowBlocks gives (kGramRowBlocks unless set; >= 1):
// for benchmarks comparing tilings, set before any batch.
void SetGramRowBlocks(int64_t blocks);
// Row block i: rows [lo, hi), multiplied against columns [0, hi).
struct RowBlock {
  int64_t lo, hi;
};
RowBlock RowBlockOf(int64_t n, int64_t blocks, int64_t i);

// Whether t holds bf16 or fp16 values.
bool IsHalfPrecision(const at::Tensor& t);
// Whether these functions take states of `type`: bf16, fp16, float32.
bool IsFusedStateType(at::ScalarType type);
// Whether the accumulator reads states of `type` on `device` through these
// functions (its fused path): bf16 / fp16 on any device, float32 on CUDA,
// and float32 states of a half-precision model (`model_dtype` bf16 or fp16:
// the SSMs' residual_in_fp32 stream) on any device, so that such a job
// gives the same rows on the CPU as on CUDA. Else (float32 on the CPU,
// float64) it analyses a float64 copy. By device and dtypes only, never by
// architecture. (Float32 only while SetFloat32FusedPath(true), the default
// unless LAYERFLOW_SSM_KERNELS=0: worker/kernels/kernel_switch.h.)
bool TakesFusedPath(c10::Device device, at::ScalarType type,
                    at::ScalarType model_dtype = at::ScalarType::Undefined);
void SetFloat32FusedPath(bool enabled);

// The split-bf16 Gram of float32 states (HalfLowerBlockGram and
// HalfCentredGram for float32 h): the bf16 tensor cores at the bf16 rate
// instead of a float64 GEMM (~10x slower on an H200 than a bf16 one of the
// same shape, so ~3x slower than this 3 d-deep one) or a float32 one
// without TF32 (no faster than float64 there).
//   x = hi + lo + e, hi = bf16(x), lo = bf16(x - hi), rounded to nearest:
//   |x - hi| <= 2^-8 |x| (bf16 keeps 8 significant bits), x - hi is exact in
//   float32, |lo| <= ~2^-8 |x| and |e| <= 2^-8 |lo| <= ~2^-16 |x|.
//   ONE bf16 GEMM with float32 accumulation of K-dimension 3 d,
//   [hi | hi | lo] . [lo | hi | hi]^T = hi lo' + hi hi' + lo hi'
//   = (hi + lo)(hi + lo)' - lo lo', both operands views of one buffer
//   [lo | hi | hi | lo] (SplitBf16Operands). Every product of two bf16 is
//   exact in float32 (8 + 8 significant bits), so the GEMM rounds only in
//   its float32 accumulation, as the half path's does (~2^-24 sqrt(3 d) of
//   sum_k |x_k y_k| typically). Against x y' per product: the dropped
//   lo lo' (<= 2^-16 |x_k y_k|) and the e terms (<= 2 2^-16 |x_k y_k|), so
//   |K_ij - x_i.x_j| <= (3 2^-16 + 3 d 2^-24) sum_k |x_ik x_jk|
//   <= (3 2^-16 + 3 d 2^-24) max_t K_tt (Cauchy-Schwarz): the worst case.
//   Typically far less: lo and e are rounding residues whose signs vary
//   over k and between tokens, so for two distinct tokens they average out
//   (~2^-16 / sqrt(d) of the entry). Not on the diagonal (and between
//   identical tokens): lo_tk^2 >= 0, so K_tt comes out low by sum_k lo_tk^2,
//   ~2e-6 of |x_t|^2, a bias that the unbiased HSIC turns into a CKA error
//   of ~1e-5 (n = d = 1024; 5e-4 with a shared offset 20 x the noise),
//   because it subtracts the exact float64 diagonals (from the per-token
//   norms) from the Gram's products. So the diagonal is overwritten with the
//   float32 rounding of the exact float64 |x_t|^2 (norm_sq when given, else
//   computed by HalfTokenStats). Measured on residual-like float32 states
//   (CPU emulation, n = d = 1024, against float64 CKA): 1.2e-7 (offset 3) and
//   1.5e-5 (offset 20, cancellation ~400x), as a plain float32 GEMM of the
//   float32 states (8e-8, 1.1e-5); with 64 distinct tokens repeated (an
//   embedding layer), whose off-diagonal lo lo' bias stays, 2.5e-7 and
//   9.5e-6 (float32 GEMM: 2e-8, 1.2e-6).
// [B, n, 4 d] bf16 = [lo | hi | hi | lo] per token of float32 h [B, n, d]:
// one fused pass on CUDA; the Aten variant (any device) gives the same bits
// (both round to nearest even).
at::Tensor SplitBf16Operands(const at::Tensor& h);
at::Tensor SplitBf16OperandsAten(const at::Tensor& h);

// K = h h^T of h [B, n, d] in its lower block triangle, float32: half h
// through half GEMMs with float32 accumulation and output (cuBLAS on CUDA;
// on the CPU the float32 product of the exactly upcast states), float32 h
// through the split-bf16 GEMM (above; on the CPU the float32 product of the
// upcast bf16 operands) with its diagonal set from norm_sq (|h_t|^2,
// float64 [B, n]; computed when undefined; unused for half h). The entries
// above the diagonal blocks are left unset.
at::Tensor HalfLowerBlockGram(const at::Tensor& h, int64_t blocks,
                              const at::Tensor& norm_sq = at::Tensor());
// On CUDA, where `blocks` divides n, HalfLowerBlockGram multiplies the
// triangle's tiles in one batched GEMM (half_state_ops.cc, GemmLowerTiles),
// else row block by row block. Off: always by row blocks (benchmarks' A/B).
void SetGramTileGemm(bool enabled);

// The whole centred Gram of h [B, n, d] into float32 out [B, n, n]
// (the all-pair CKA's Grams, kept for its products): K = h h^T the same
// way (norm_sq as there), then C = K - r 1' - 1 r' + g formed in float64
// from K's float32 entries (r [B, n] = K's row means = h mean, g [B] =
// |mean|^2, float64) and rounded to float32 in place, in one fused pass on
// CUDA that also returns ||C||_F^2 [B] (float64, of the stored entries).
at::Tensor HalfCentredGram(at::Tensor& out, const at::Tensor& h, const at::Tensor& r,
                           const at::Tensor& g, const at::Tensor& norm_sq = at::Tensor());
// HalfCentredGram's two steps apart, for a Gram whose row means are known
// only later (metric_observers.cc: a point's r comes from the next point's
// pass): K = h h^T into out (norm_sq as there), and C from K in place,
// returning ||C||_F^2 [B] (the fused pass on CUDA, CentreGramAten elsewhere).
void HalfGramInto(at::Tensor& out, const at::Tensor& h, const at::Tensor& norm_sq = at::Tensor());
at::Tensor CentreGram(at::Tensor& k, const at::Tensor& r, const at::Tensor& g);
// The centring step alone on any device: raw Grams k (float32) in place,
// the same float64 arithmetic; returns ||C||_F^2 [B]. The reference of the
// fused pass.
at::Tensor CentreGramAten(at::Tensor& k, const at::Tensor& r, const at::Tensor& g);

// {<C_a, C_b>_F, <C_b, C_b>_F} per prompt, float64 [B, 2], C = K - r 1' -
// 1 r' + g in float64; `a` may be empty (a.lower undefined; column 0 is then
// 0). Both Grams have the same shape and blocks.
at::Tensor CentredGramProducts(const RawGram& a, const RawGram& b);
// The same before its last sum: float64 [B, 2, G] whose sum over G is
// CentredGramProducts (G thread blocks' partials on CUDA, 1 elsewhere), so
// that a caller with many points sums them all in one reduction.
at::Tensor CentredGramProductPartials(const RawGram& a, const RawGram& b);
at::Tensor CentredGramProductsAten(const RawGram& a, const RawGram& b);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_OPS_H_
