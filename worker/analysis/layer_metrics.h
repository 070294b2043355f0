// Layer-wise representation metrics (METHODS.md, "Metrics"), accumulated as
// the forward goes (one layer held at a time) into mergeable sums.
//
// Representation points: p = 0 embedding, p = 1..L after each block, and
// p = L + 1 the final-norm output (`final`). Our choices for `final`:
//   - metrics of a layer PAIR or STEP (adjacent_cos, step_energy,
//     cka_unbiased, cka_biased) use residual points l and l + 1 only,
//     l = 0..L-1; the final-norm output is NOT paired with block L (a
//     LayerNorm of the same stream, not a step of the residual flow).
//   - metrics of ONE point (intertoken_cos, intertoken_cos_nofirst,
//     token_dispersion): l = 0..L, and l = L + 1 for `final`.
//   - path_energy is one scalar per prompt, stored at layer 0.
// (docs/metrics.md says the same.)
//
// Per prompt of n tokens, on the states' device (precision: below):
//   adjacent_cos(l)   = mean_t cos(h_t^(l), h_t^(l+1))
//   intertoken_cos(l) = (||sum_t h^_t||^2 - n) / (n (n - 1)), h^ = h / ||h||
//                       (mean cos over unordered pairs; needs n >= 2: a
//                       prompt of one token adds nothing to it)
//   intertoken_cos_nofirst(l) = the same over tokens 1..n-1 (position 0,
//                       the attention sink, left out); needs n >= 3
//   token_dispersion(l) = mean_t ||h_t - mean_t h||^2 / mean_t ||h_t||^2
//                       (0 when all tokens are one vector; 0 when all are 0)
//   step_energy(l)    = mean_t ||h_t^(l+1) - h_t^(l)||^2 / ||h_t^(l)||^2
//   path_energy       = sum_{l=0..L-1} step_energy(l)
//   cka_biased(l)     = linear CKA of H^(l), H^(l+1) ([n, d] each), biased
//                       HSIC (Kornblith et al. 2019); needs n >= 2
//   cka_unbiased(l)   = the same with the unbiased HSIC (Song et al. 2012);
//                       needs n >= 4
//   cka_all_biased(l, l'), cka_all_unbiased(l, l'): the same two estimators
//                       for EVERY pair of residual points 0 <= l < l' <= L
//                       (row layer = l, layer_b = l'; `final` excluded)
//   adjacent_cos_tokens(l, t) = cos(h_t^(l), h_t^(l+1)) per token position
//                       t, for the first kTokenExamplePrompts prompts of the
//                       JOB only (row layer = l, position = t): a token x
//                       layer heat map, the mean over those prompts
// A zero vector (never seen in practice) has unit vector 0: cos 0 in
// adjacent_cos; intertoken_cos does not special-case it; a token whose
// h^(l) is 0 adds 0 to step_energy(l). A CKA whose self-HSIC is not
// > 1e-20 tr(K)^2 (a constant representation up to rounding) is 0.
// CKA runs on the token-centred states X - 1 mean_t X (both estimators are
// invariant to it; the Gram of the centred states IS H K H, and the unbiased
// HSIC is unchanged, the U-centring annihilating a_i + b_j terms): one Gram
// per point (float64, or float32 on the fused path) serves both estimators
// and every pair.
// Precision, chosen per batch at point 0 from its device, its dtype and
// the model's (SetModelDtype; never by architecture; TakesFusedPath in
// half_state_ops.h):
//   - float64 path: float64 states, and a float32 model's states on the
//     CPU, are analysed on a float64 copy, float64 Grams;
//   - fused path: half-precision states (bf16/fp16 models) on any device,
//     float32 states on CUDA, and a half model's float32 states (the SSM
//     models' residual stream; their CKA Gram from a bf16 rounding) on any
//     device, are
//     read as they are, by fused float64 passes (half_state_ops.h; every
//     bf16/fp16/float32 value and product of two is exact in float64) and,
//     for the CKA Grams, half GEMMs with float32 accumulation (every product
//     of two halves is exact in float32) or, for float32 states, ONE bf16
//     GEMM of the split x = hi + lo ([hi|hi|lo] . [lo|hi|hi]^T, the lo lo'
//     term dropped, the diagonal set from the exact norms; error analysis in
//     half_state_ops.h). On the GPU ~2e-6 of each value from the float64
//     path on the same half states (bench/RESULTS.md), at a fraction of its
//     cost.
//   A later point of another dtype: the float64 path upcasts it (exact);
//   the fused path takes bf16/fp16/float32 points (a pair of two dtypes is
//   upcast, exactly, to a common one for the per-token pass; each point's
//   Gram by its own dtype) and refuses others with an error naming both
//   points' dtypes. (A bf16 Mamba's embedding is bf16, its float32-residual
//   blocks float32.)
// Each point leaves per-token and per-prompt vectors; the metric values are
// formed from them once per batch.
// Memory: adjacent CKA holds two B x n x n Grams at a time; the all-pair
// CKA holds the Grams of all L + 1 residual points of the batch,
// B x (L + 1) x n^2 (float64: 8 B (L + 1) n^2 bytes, e.g. 6.7 GB for
// pythia-1.4b, 8 x 2048 tokens; fused path: half that), freed at EndBatch;
// with it, the adjacent-pair CKA is read off the all-pair matrices.
// Stats: per (metric, layer) the sum over prompts of the value, of its
// square, and the prompt count; they merge across GPUs, chunks and workers
// by addition.
#ifndef LAYERFLOW_WORKER_ANALYSIS_LAYER_METRICS_H_
#define LAYERFLOW_WORKER_ANALYSIS_LAYER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/TensorOptions.h>

#include "absl/status/statusor.h"
#include "catalog/analyses.h"
#include "worker/analysis/half_state_ops.h"

namespace layerflow::worker {

// The layer-metric analyses of JobConfig.analyses, in the order of their
// names in catalog::kLayerMetricNames; each emits stats under its own name.
enum class LayerMetric {
  kAdjacentCos,
  kIntertokenCos,
  kIntertokenCosNoFirst,
  kTokenDispersion,
  kStepEnergy,
  kPathEnergy,
  kCkaUnbiased,
  kCkaBiased,
  kCkaAllUnbiased,
  kCkaAllBiased,
  kAdjacentCosTokens,
};
inline constexpr int kNumLayerMetrics = static_cast<int>(catalog::kLayerMetricNames.size());
static_assert(static_cast<int>(LayerMetric::kAdjacentCosTokens) + 1 == kNumLayerMetrics,
              "one LayerMetric per name of catalog::kLayerMetricNames, in its order");

// adjacent_cos_tokens is kept for the job's prompts 0..K-1 only (K example
// prompts, METHODS.md "a few example prompts").
inline constexpr int64_t kTokenExamplePrompts = 4;

// cka_baseline (METHODS.md): the CKA estimator on two independent standard
// Gaussian matrices of the prompt's shape [n, d], per prompt, stored with
// every CKA analysis of that estimator (rows at layer 0). The biased
// estimator is ~d/(n+d) there, the unbiased ~0: the level a CKA must beat.
// The draws of the job's prompt i come from seed kCkaBaselineSeed + i on the
// states' device, so sharded and unsharded runs draw the same matrices.
inline constexpr const char* kCkaBaselineBiased = "cka_baseline_biased";
inline constexpr const char* kCkaBaselineUnbiased = "cka_baseline_unbiased";
inline constexpr uint64_t kCkaBaselineSeed = 0x6c66636b61ull;  // "lfcka"
// The two draws [2, n, d] of prompt `prompt` (job index), dtype and device
// of `options`.
at::Tensor CkaBaselineStates(int64_t prompt, int64_t n, int64_t d,
                             const at::TensorOptions& options);

// catalog::kLayerMetricNames[metric].
const char* LayerMetricName(LayerMetric metric);
// The names of catalog::kLayerMetricNames -> metrics; INVALID_ARGUMENT
// naming `analyses` for an empty list, an unknown or a repeated name.
absl::StatusOr<std::vector<LayerMetric>> ParseLayerMetrics(const std::vector<std::string>& names);

enum class CkaEstimator { kBiased, kUnbiased };

// Linear CKA of X [n, d1] and Y [n, d2] (same rows) through the Gram
// matrices K = X X^T, L = Y Y^T, in float64 whatever the inputs' dtype:
//   biased:   HSIC = <HKH, HLH>_F (H the centring matrix; its 1/(n-1)^2
//             cancels in CKA), needs n >= 2;
//   unbiased: K~, L~ = K, L with zeroed diagonals,
//             HSIC = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2))
//                     - 2/(n-2) 1'K~L~1] / (n(n-3)), needs n >= 4.
// CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); 0 when a self-HSIC is not
// > 1e-20 tr(K)^2 (a constant representation up to rounding). Throws
// c10::Error on bad shapes or too few rows. The accumulator's CKA metrics
// run this same code (batched).
double LinearCka(const at::Tensor& x, const at::Tensor& y, CkaEstimator estimator);

// Per-prompt Gram quantities of one representation point for the CKA
// metrics, batched over B prompts, float64. C = Gram of the token-centred
// states = H K H; C~ = C with zeroed diagonal. With them
//   biased HSIC(a, b)   = <C_a, C_b>_F
//   unbiased HSIC(a, b) = [<C_a, C_b>_F - <diag C_a, diag C_b>
//                          + 1'C~_a1 1'C~_b1 / ((n-1)(n-2))
//                          - 2/(n-2) <C~_a 1, C~_b 1>] / (n(n-3))
// (Song et al.'s formula on C~, equal to it on K~): one n x n inner product
// per pair for both estimators.
struct CkaGramStats {
  at::Tensor centred;  // C = H K H               [B, n, n]
  // Fused path, adjacent pairs only: K's lower block triangle, centred on
  // the fly (half_state_ops.h); `centred` is then undefined.
  RawGram raw;
  at::Tensor diagonal;       // diag C                  [B, n]
  at::Tensor row_sums;       // C~ 1                    [B, n]
  at::Tensor total;          // 1' C~ 1                 [B]
  at::Tensor biased_self;    // <C, C>_F                [B]
  at::Tensor unbiased_self;  // unbiased HSIC(K, K)     [B] (n >= 4; set where used)
  at::Tensor scale;          // tr(K)^2 (the zero test) [B]
};

struct StatKey {
  std::string metric;
  int32_t layer = 0;
  // -1 = not applicable (MetricStat in worker/runtime/job_runner.h).
  int32_t layer_b = -1;
  int32_t head = -1;
  int32_t position = -1;
  bool operator==(const StatKey& other) const = default;
};

class MetricObserver;
class MetricRows;
class PointStage;

// A composer: one shared per-point stage that reads each point once for
// what the asked metrics need, and one observer per metric family that
// forms its rows from it (metric_observers.h).
class LayerMetricAccumulator {
 public:
  static constexpr int kSum = 0, kSumSq = 1, kCount = 2;

  // num_layers = L (blocks). Sums live on `device`. max_positions: the
  // longest prompt adjacent_cos_tokens has rows for (positions
  // 0..max_positions-1; the runner passes the job's context_length); must be
  // >= 1 when adjacent_cos_tokens is asked for.
  LayerMetricAccumulator(std::vector<LayerMetric> metrics, int64_t num_layers, c10::Device device,
                         int64_t max_positions = 0);
  ~LayerMetricAccumulator();
  LayerMetricAccumulator(LayerMetricAccumulator&&) noexcept;
  LayerMetricAccumulator& operator=(LayerMetricAccumulator&&) noexcept;

  // The keys() of an accumulator of these arguments, from the shape alone
  // (no tensors, no device): each metric's rows as its family declares
  // them, in the order of `metrics`, then the cka_baseline rows.
  static std::vector<StatKey> Keys(const std::vector<LayerMetric>& metrics, int64_t num_layers,
                                   int64_t max_positions = 0);

  // The index within the job of the next batch's first prompt (the batch's
  // prompts are consecutive); advances by B at each EndBatch. Starts at 0.
  // adjacent_cos_tokens (prompts < kTokenExamplePrompts) and the
  // cka_baseline draws (seeded per prompt) depend on it.
  void SetNextPrompt(int64_t index) { next_prompt_ = index; }

  // The dtype the model computes in. A half-precision model's float32
  // states (the SSMs' residual_in_fp32 stream, point 0 included) have their
  // CKA Gram formed from their bf16 rounding (metric_observers.cc,
  // round_gram). Unset: point 0's dtype stands for it.
  void SetModelDtype(c10::ScalarType dtype) { model_dtype_ = dtype; }

  // One representation point of a batch of B prompts of n tokens each,
  // hidden [B, n, d]; points 0..L+1 in order (LanguageModel's callback).
  // Point 0's device and dtype choose the batch's path (header comment).
  // Throws c10::Error on a shape or order mismatch, or a point whose dtype
  // the batch's path cannot take.
  void Observe(int64_t point, const at::Tensor& hidden);
  // Drops the held layer(s); call after the batch's last point.
  void EndBatch();

  // Row i = keys()[i]; columns kSum, kSumSq, kCount; float64 on the device;
  // complete after EndBatch (a batch's rows are added there). The keys are
  // built on the first call: adjacent_cos_tokens has L x max_positions of
  // them (49k for 24 layers and 2048 tokens, ~3 ms of allocations), and a
  // job's runner builds one accumulator per chunk and rank but takes its
  // keys once, from Keys.
  const std::vector<StatKey>& keys() const;
  const at::Tensor& sums() const;

 private:
  // What an earlier batch left (one that threw part-way included) dropped.
  void ClearBatch();

  std::vector<LayerMetric> metrics_;
  int64_t num_layers_;
  int64_t max_positions_;
  mutable std::vector<StatKey> keys_;  // built by keys()
  std::unique_ptr<MetricRows> rows_;
  std::unique_ptr<PointStage> stage_;
  // The asked families, in the order they see each point: the all-pair CKA
  // before the adjacent-pair one that reads its matrices, the baseline (at
  // point 0, before the stage's pass) after the step metrics' check of the
  // batch's length.
  std::vector<std::unique_ptr<MetricObserver>> observers_;
  int64_t next_point_ = 0;
  int64_t next_prompt_ = 0;
  int64_t batch_size_ = 0;  // B of the current batch
  // The current batch's path, chosen at point 0 (header comment), and point
  // 0's dtype (for errors).
  bool fused_ = false;
  c10::ScalarType first_type_ = c10::ScalarType::Undefined;
  c10::ScalarType model_dtype_ = c10::ScalarType::Undefined;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_LAYER_METRICS_H_
