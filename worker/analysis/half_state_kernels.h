// CUDA kernels of the fused analysis path (half_state_ops.h: bf16 / fp16
// states, and float32 states on CUDA): raw device pointers and a stream, no
// LibTorch, so nvcc compiles this translation unit alone in seconds. Every
// sum is a float64 accumulation of exactly converted bf16 / fp16 / float32
// values (a product of two of them is exact in float64 too), but for the
// point pass's statistics, whose per-thread partials are float32
// (kPassThreadTerms), reduced in a fixed order (per-thread, then warp
// shuffles, then per-block partials that the caller sums): the same inputs
// give the same bits on every run.
#ifndef LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_KERNELS_H_
#define LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_KERNELS_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace layerflow::worker::cuda_kernels {

// The states' element type. 16-byte loads carry 8 bf16 / fp16 values or 4
// float32 ones.
enum class StateType { kBFloat16, kFloat16, kFloat32 };

// Per token t of cur [tokens, d] (row-major, prompts of n tokens):
// out[t] = {|cur_t|^2, prev_t . cur_t, |cur_t - prev_t|^2, cur_t . v_b},
// float64 [tokens, 4]; prev [tokens, d] and v [tokens / n, d] (float64) may
// be null (their columns are then 0); cur and prev of one type. One warp per
// 4 tokens of a prompt.
cudaError_t LaunchTokenStats(StateType type, const void* cur, const void* prev, const double* v,
                             int64_t tokens, int64_t n, int64_t d, double* out,
                             cudaStream_t stream);

// partial[b, s, r, :] = sum over the s-th of `splits` token ranges of
// w[b, r, t] h[b, t, :] for h [B, n, d] and float64 w [B, k, n], k <= 4:
// float64 [B, splits, k, d]; the caller sums over s.
inline constexpr int kMaxWeightRows = 4;
cudaError_t LaunchWeightedTokenSums(StateType type, const double* w, int k, const void* h,
                                    int64_t batch, int64_t n, int64_t d, int64_t splits,
                                    double* partial, cudaStream_t stream);

// One pass over a representation point: what the fused path of the
// metrics reads a point for, from one read of its states (and of the point
// before), instead of a pass per quantity. Per token t of prompt b of cur
// [B, n, d] (prev of the same shape and type, or null):
//   stats[0][b n + t] = |cur_t|^2, stats[1][..] = prev_t . cur_t,
//   stats[2][..] = |cur_t - prev_t|^2 (0 without prev),
//   stats[3][..] = prev_t . v_b for prev_vec v [B, d] float64 (bf16(prev_t)
//   . v_b with prev_vec_rounded; 0 without: the point before's Gram row
//   means, which need that point's token mean, known only after its pass),
//   stats[4][..] = |bf16(cur_t)|^2 where `rounded` is written (else 0),
//   float64 [kPassStats, B n];
// per prompt, the token sums of `rows` (PassRows: those set, in its order),
// as per-split partials partial[b, s, r, :] (float64
// [B, splits, rows.count(), d]; the caller sums over s); and, when `rounded`
// is not null (float32 cur only), rounded[b, t, :] = bf16(cur_t), rounded to
// nearest even as ATen's conversion. A thread block takes one split of one
// prompt's tokens with each row whole in its registers (16-byte loads), so
// it knows a token's norm before it adds the token's unit vector.
// A set, not a list: the kernel's row layout is a template mask, so the
// rows' order is fixed here rather than checked at each launch.
struct PassRows {
  bool unit = false;          // cur_t / max(|cur_t|, tiny)
  bool unit_nofirst = false;  // the same for t >= 1, 0 at t = 0
  bool plain = false;         // cur_t
  bool rounded = false;       // bf16(cur_t) (float32 cur only)
  constexpr int count() const { return int{unit} + unit_nofirst + plain + rounded; }
};
static_assert(PassRows{true, true, true, true}.count() == kMaxWeightRows);
// Whether LaunchPointPass takes rows of d values of `type` (d a multiple of
// a 16-byte load's values, at most 4 loads a thread: d <= 4096 float32 or
// 8192 bf16 / fp16). Pointers must be 16-byte aligned.
bool PointPassFits(StateType type, int64_t d);
// The token splits for B prompts of n tokens: ~2 thread blocks an SM of an
// H200, at least 16 tokens a split.
int64_t PointPassSplits(int64_t batch, int64_t n);
inline constexpr int kPassStats = 5;
// The stats' products a thread sums for a token in float32 before float64
// (at most 4 16-byte loads of 8 bf16 values; float32 states: 16): issuing a
// float64 conversion for each value made the pass compute-bound. A
// recursive float32 sum of k fused products is within k 2^-24 of
// sum_i |a_i b_i|; the float32 step x - p and the float32 copy of v_b add 2
// and 1 (HalfPointPassBounds, half_state_ops.h). METHODS: statistics
// accumulate in float32 or wider.
inline constexpr int kPassThreadTerms = 32;
cudaError_t LaunchPointPass(StateType type, const void* cur, const void* prev,
                            const double* prev_vec, bool prev_vec_rounded, int64_t batch, int64_t n,
                            int64_t d, const PassRows& rows, double tiny, int64_t splits,
                            double* stats, double* partial, void* rounded, cudaStream_t stream);

// The centred Grams C = K - r 1' - 1 r' + g of raw Grams K (float32
// [B, n, n], valid in the lower block triangle of `blocks` row blocks, row
// block i = rows n i / blocks .. n (i + 1) / blocks - 1), r [B, n] and g [B]
// float64: partial[b, :, q] = {<C_a, C_b>_F, <C_b, C_b>_F} over the rows
// of the q-th of `groups` thread blocks (a warp per row, rows strided over
// all groups' warps), the blocks below the diagonal counted twice (C is
// symmetric), float64 [B, 2, groups]. `a` may be null (row 0 is then 0).
cudaError_t LaunchCentredGramProducts(const float* ka, const double* ra, const double* ga,
                                      const float* kb, const double* rb, const double* gb,
                                      int64_t batch, int64_t n, int64_t blocks, int64_t groups,
                                      double* partial, cudaStream_t stream);

// Centres whole raw Grams k (float32 [B, n, n]) in place: k_ij <- the
// float32 rounding of k_ij - (r_i - g) - r_j, formed in float64 (r [B, n],
// g [B] float64); partial[b, q] = the float64 sum of the stored entries'
// squares over the rows of the q-th of `groups` thread blocks (a warp per
// row, rows strided), float64 [B, groups].
cudaError_t LaunchCentreGram(float* k, const double* r, const double* g, int64_t batch, int64_t n,
                             int64_t groups, double* partial, cudaStream_t stream);

// The split of float32 states x [rows, d] into two bf16 parts for the
// split-bf16 Gram (half_state_ops.h, SplitBf16Operands): hi = bf16(x), lo =
// bf16(x - hi) (x - hi is exact in float32; both roundings to nearest even),
// written as out [rows, 4 d] bf16 = [lo | hi | hi | lo] per row.
cudaError_t LaunchSplitBf16(const float* x, int64_t rows, int64_t d, void* out,
                            cudaStream_t stream);

}  // namespace layerflow::worker::cuda_kernels

#endif  // LAYERFLOW_WORKER_ANALYSIS_HALF_STATE_KERNELS_H_
