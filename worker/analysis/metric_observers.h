// The machinery behind LayerMetricAccumulator (layer_metrics.h, whose header
// comment defines the metrics, the two precision paths and the memory they
// hold): a shared per-point stage that reads each representation point ONCE
// for the union of what the batch's observers need, and one observer per
// metric family that turns the stage's per-point statistics into its rows.
//
// Each family declares its rows from the model's shape alone (no tensors,
// no device), so that a job's keys are known without an accumulator; at a
// batch's point 0 each observer sets up for the batch (B, n, its place in
// the job), at each point it declares what the point must be read for
// (PointNeeds), the stage reads the point for their union, and each
// observer adds its values once per batch, at the
// last point it needs, on [B, P, ...] tensors (not as a dozen small kernels
// per point).
#ifndef LAYERFLOW_WORKER_ANALYSIS_METRIC_OBSERVERS_H_
#define LAYERFLOW_WORKER_ANALYSIS_METRIC_OBSERVERS_H_

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "worker/analysis/half_state_ops.h"
#include "worker/analysis/layer_metrics.h"

namespace layerflow::worker {

// What a family's rows depend on.
struct MetricShape {
  int64_t num_layers = 0;     // L (blocks)
  int64_t max_positions = 0;  // adjacent_cos_tokens' positions
};

// What a point is read for: each observer's (NeedsAt), the stage reads for
// their union. Only what some observer needs is computed (one-point needs
// at points 0..L+1, the others at the residual points 0..L).
struct PointNeeds {
  bool unit_sums = false;          // sum_t h^_t (intertoken_cos)
  bool unit_sums_nofirst = false;  // the same over t >= 1 (intertoken_cos_nofirst)
  bool spread = false;             // the token spread and tr K (token_dispersion)
  bool dots = false;               // h_t^(l) . h_t^(l+1) with the norms (adjacent_cos)
  bool steps = false;              // |h_t^(l+1) - h_t^(l)|^2 with the norms (step energies)
  bool gram = false;               // each point's centred Gram's scalars (CKA)
  // With gram: <C_l, C_l+1> of each adjacent pair (on the fused path from
  // the raw lower block Grams, centred on the fly), or instead every
  // point's centred Gram kept to the batch's end (all pairs).
  bool pair_products = false;
  bool all_grams = false;

  PointNeeds& operator|=(const PointNeeds& other);
};

// A fused-path point's Gram quantities, from which GramSeries::PointsStats
// forms the scalars once for all points: |x_t|^2 and r_t = x_t . mean
// [B, n], g = |mean|^2 and <C, C>_F [B] of the states its Gram is of.
// Adjacent pairs: `products` [B, 2, G], CentredGramProductPartials with
// the point before; all pairs: `biased_self` [B] from the centring.
struct FusedGramPoint {
  at::Tensor norm_sq, row_means, grand, products, biased_self;
};

// The CKA Gram quantities of a batch's residual points, collected by the
// stage point by point and read by the CKA observers once complete: each
// point's Gram scalars (no n x n matrix), so that the HSIC algebra runs
// once per batch on [B, L + 1] tensors, not as dozens of small kernels per
// point (each a few microseconds of GPU time); with all pairs the centred
// Grams of points 0..L, [L + 1, B, n, n], else each adjacent pair's
// <C_l, C_l+1>.
struct GramSeries {
  bool fused = false;
  std::vector<CkaGramStats> points;    // float64 path
  std::vector<at::Tensor> pair_inner;  // float64 path, adjacent pairs [B] each
  // The fused path keeps each point's per-token tensors instead.
  std::vector<FusedGramPoint> fused_points;
  at::Tensor all_grams;

  // How many points the series has.
  int64_t size() const;
  // The CKA scalars of the points, [B, P, ...], with their unbiased
  // self-HSIC when n >= 4; with adjacent pairs also *inner = <C_p-1, C_p>
  // [B, P - 1].
  CkaGramStats PointsStats(int64_t n, at::Tensor* inner = nullptr) const;
  void Clear();
};

// What the stage computed for one point: read-only, valid until the
// stage's next point. Undefined where no observer needed it.
struct PointStats {
  int64_t point = 0;
  int64_t n = 0;
  bool fused = false;          // the batch's path
  bool residual = false;       // points 0..L (not the final-norm output)
  bool last_residual = false;  // point L
  bool last = false;           // the final-norm output, L + 1
  // Points 0..L+1.
  at::Tensor unit_sums;  // [B, k, d] float64: the sums asked, unit then unit_nofirst
  at::Tensor norm;       // float64 path: |h_t| [B, n]
  at::Tensor norm_sq;    // fused path: |h_t|^2 [B, n]
  at::Tensor spread;     // float64 path: sum_t |h_t - mean|^2 [B]
  at::Tensor trace_k;    // float64 path: tr K = sum_t |h_t|^2 [B]
  at::Tensor plain_sum;  // fused path: sum_t h_t [B, d]
  // Residual points >= 1, with the point before.
  at::Tensor prev_dot;  // h_t^(l-1) . h_t^(l) [B, n]
  at::Tensor step_sq;   // |h_t^(l) - h_t^(l-1)|^2 [B, n]
  // The batch's Grams, at the point where they are complete (point L on
  // the float64 path, L + 1 on the fused one, whose point L's Gram waits
  // for the next pass); else null.
  const GramSeries* grams = nullptr;
};

// The per-point stage: reads each point once for a batch's needs (the
// fused path's one HalfPointPass, then the Gram's GEMM; the float64 path's
// copy and its reductions) and holds what later points pair with.
class PointStage {
 public:
  explicit PointStage(int64_t num_layers) : num_layers_(num_layers) {}

  // A batch's point 0 comes next. gram_model_dtype: the dtype the model
  // computes in (its float32 states' Grams then from their bf16 rounding).
  void BeginBatch(bool fused, c10::ScalarType gram_model_dtype);
  // Point `point` of the batch (0..L+1 in order, checked by the caller),
  // read for `needs`; throws c10::Error where its shape differs from the
  // held point's.
  const PointStats& Observe(int64_t point, const at::Tensor& hidden, const PointNeeds& needs);
  // After the observers saw `point`: what the batch no longer needs freed.
  void EndPoint(int64_t point);
  // Drops the held point(s) and Grams.
  void DropHeld();

 private:
  void ObserveFused(int64_t point, const at::Tensor& hidden);
  void ObserveFloat64(int64_t point, const at::Tensor& hidden);
  // The held point's Gram, with its row means (from the next point's pass).
  void FinishPendingGram(const at::Tensor& row_means);

  int64_t num_layers_;
  bool fused_ = false;
  c10::ScalarType gram_model_dtype_ = c10::ScalarType::Undefined;
  PointNeeds needs_;  // the current point's
  PointStats stats_;
  at::Tensor previous_;                  // [B, n, d] of the last residual point
  std::vector<int64_t> previous_sizes_;  // [B, n, d] of the held point
  CkaGramStats previous_gram_;           // of the last residual point (CKA only)
  // The last residual point's Gram until the next point's pass gives its
  // row means (ObserveFused): raw lower blocks (adjacent pairs) or
  // grams_.all_grams[point] uncentred (all pairs), its states' |x_t|^2
  // [B, n] and token mean [B, d] (of their bf16 rounding where `rounded`).
  struct PendingGram {
    int64_t point = -1;
    bool rounded = false;
    RawGram raw;
    at::Tensor norm_sq, mean;
  };
  PendingGram pending_gram_;
  GramSeries grams_;
  at::Tensor unit_mask_;  // [1, k, n]: which tokens each unit sum takes (float64 path)
};

// The accumulator's rows: the first row of each metric (-1 where not
// asked) and of each cka_baseline row, and the sums they add to.
class MetricRows {
 public:
  // The layout of `metrics`' rows, in their order, then the baselines
  // (CkaBaselineObserver); sums on `device`.
  MetricRows(const std::vector<LayerMetric>& metrics, const MetricShape& shape, c10::Device device);

  bool Has(LayerMetric metric) const { return row_[static_cast<int>(metric)] >= 0; }
  int64_t RowOf(LayerMetric metric) const { return row_[static_cast<int>(metric)]; }
  int64_t BaselineRow(CkaEstimator estimator) const {
    return estimator == CkaEstimator::kBiased ? baseline_biased_ : baseline_unbiased_;
  }
  int64_t size() const { return rows_; }

  // per_prompt [B] into row `row`, held until Flush.
  void Add(int64_t row, const at::Tensor& per_prompt);
  // per_prompt [B, m] into rows row .. row + m - 1.
  void AddBlock(int64_t row, const at::Tensor& per_prompt);
  // per_prompt [B, ...] into rows [..., 3] (LayerMetricAccumulator's
  // columns), a view of sums() of that shape.
  static void AddToRows(const at::Tensor& rows, const at::Tensor& per_prompt);
  // The pending Add rows into the sums.
  void Flush();
  at::Tensor& sums() { return sums_; }
  const at::Tensor& sums() const { return sums_; }

 private:
  std::array<int64_t, kNumLayerMetrics> row_;
  int64_t baseline_biased_ = -1, baseline_unbiased_ = -1;
  int64_t rows_ = 0;
  at::Tensor sums_;
  std::vector<int64_t> pending_rows_;       // Add()ed this batch
  std::vector<at::Tensor> pending_values_;  // their per-prompt values [B]
};

// A batch as its observers see it at point 0.
struct BatchInfo {
  int64_t batch = 0, n = 0;            // B prompts of n tokens
  int64_t first_prompt = 0;            // the job's index of the batch's prompt 0
  bool fused = false;                  // the batch's path
  const at::Tensor* point0 = nullptr;  // point 0's states [B, n, d]
};

// One metric family. Its class declares its rows by metric, from the shape
// alone (static DeclareRows: their count, and their keys appended to *keys
// unless it is null); it writes those rows only.
class MetricObserver {
 public:
  virtual ~MetricObserver() = default;
  // At a batch's point 0, before the stage reads it.
  virtual void BeginBatch(const BatchInfo&, MetricRows&) {}
  // What a point of the batch of n tokens must be read for.
  virtual PointNeeds NeedsAt(int64_t n) const = 0;
  // Each point's statistics, points 0..L+1 in order; the family's values go
  // into `rows` at the last point it needs.
  virtual void Observe(const PointStats&, MetricRows&) {}
  // Drops what it holds of a batch (one that threw part-way included).
  virtual void Clear() {}
};

// intertoken_cos, intertoken_cos_nofirst, token_dispersion: points 0..L+1.
class OnePointObserver : public MetricObserver {
 public:
  static bool Writes(LayerMetric metric);
  static int64_t DeclareRows(LayerMetric metric, const MetricShape& shape,
                             std::vector<StatKey>* keys);

  explicit OnePointObserver(const MetricRows& rows);
  PointNeeds NeedsAt(int64_t n) const override;
  void Observe(const PointStats& stats, MetricRows& rows) override;
  void Clear() override;

 private:
  void AddValues(int64_t n, MetricRows& rows);

  bool intertoken_, nofirst_, dispersion_;
  std::vector<at::Tensor> unit_sums_;  // sums of unit vectors [B, k, d], points
  std::vector<at::Tensor> spreads_;    // sum_t |h_t - mean|^2 [B], points
  std::vector<at::Tensor> traces_;     // tr(K) [B], points
  // token_dispersion on the fused path: |h_t|^2 [B, n] and sum_t h_t [B, d].
  std::vector<at::Tensor> point_norm_sq_;
  std::vector<at::Tensor> plain_sums_;
};

// adjacent_cos, adjacent_cos_tokens, step_energy, path_energy: pairs of
// residual points (l, l + 1), l = 0..L-1.
class StepObserver : public MetricObserver {
 public:
  static bool Writes(LayerMetric metric);
  static int64_t DeclareRows(LayerMetric metric, const MetricShape& shape,
                             std::vector<StatKey>* keys);

  StepObserver(const MetricRows& rows, const MetricShape& shape);
  void BeginBatch(const BatchInfo& batch, MetricRows& rows) override;
  PointNeeds NeedsAt(int64_t n) const override;
  void Observe(const PointStats& stats, MetricRows& rows) override;
  void Clear() override;

 private:
  void AddValues(bool fused, MetricRows& rows);

  bool cos_, tokens_, step_, path_;
  int64_t max_positions_;
  int64_t examples_ = 0;  // adjacent_cos_tokens prompts of this batch
  // Per-point quantities of the batch, turned into metric values at its
  // last residual point.
  std::vector<at::Tensor> norms_;  // |h_t| [B, n] (fused path: |h_t|^2), residual points
  std::vector<at::Tensor> dots_;   // h_t^(l) . h_t^(l+1) [B, n], pairs
  std::vector<at::Tensor> steps_;  // |h_t^(l+1) - h_t^(l)|^2 [B, n], pairs
};

// cka_all_biased, cka_all_unbiased: every pair of residual points. While
// it runs (an all-pair metric the batch's n allows), the adjacent-pair
// CKAs asked are read off its matrices (their first super-diagonal), so it
// forms those estimators too (Matrices).
class AllPairCkaObserver : public MetricObserver {
 public:
  static bool Writes(LayerMetric metric);
  static int64_t DeclareRows(LayerMetric metric, const MetricShape& shape,
                             std::vector<StatKey>* keys);

  explicit AllPairCkaObserver(const MetricRows& rows);
  // Whether a batch of n-token prompts runs it.
  bool RunsAt(int64_t n) const;
  void BeginBatch(const BatchInfo& batch, MetricRows& rows) override;
  PointNeeds NeedsAt(int64_t n) const override;
  void Observe(const PointStats& stats, MetricRows& rows) override;
  void Clear() override;
  // The batch's CKA of every pair of points, [B, P, P] per estimator
  // (undefined where not formed), once its Grams were complete.
  const std::pair<at::Tensor, at::Tensor>& Matrices() const { return matrices_; }

 private:
  bool all_biased_, all_unbiased_, pair_biased_, pair_unbiased_;
  bool runs_ = false;
  std::pair<at::Tensor, at::Tensor> matrices_;  // biased, unbiased
};

// cka_biased, cka_unbiased: adjacent pairs of residual points, from one
// inner product per pair, or from the all-pair matrices while `all_pairs`
// (may be null) runs.
class PairCkaObserver : public MetricObserver {
 public:
  static bool Writes(LayerMetric metric);
  static int64_t DeclareRows(LayerMetric metric, const MetricShape& shape,
                             std::vector<StatKey>* keys);

  PairCkaObserver(const MetricRows& rows, const AllPairCkaObserver* all_pairs);
  void BeginBatch(const BatchInfo& batch, MetricRows& rows) override;
  PointNeeds NeedsAt(int64_t n) const override;
  void Observe(const PointStats& stats, MetricRows& rows) override;

 private:
  bool biased_, unbiased_;
  const AllPairCkaObserver* all_pairs_;
  bool runs_ = false;           // from its own pair products this batch
  bool from_matrices_ = false;  // from all_pairs_'s matrices this batch
};

// cka_baseline_biased, cka_baseline_unbiased (layer_metrics.h): with any
// CKA metric of that estimator, one row at layer 0, from point 0's shape.
class CkaBaselineObserver : public MetricObserver {
 public:
  // The estimators `metrics` bring a baseline row of, and its key.
  static std::vector<CkaEstimator> Estimators(const std::vector<LayerMetric>& metrics);
  static StatKey Key(CkaEstimator estimator);

  explicit CkaBaselineObserver(const MetricRows& rows);
  void BeginBatch(const BatchInfo& batch, MetricRows& rows) override;
  PointNeeds NeedsAt(int64_t n) const override;

 private:
  int64_t biased_row_, unbiased_row_;
};

// The rows of `metric`, declared by the family that writes them
// (DeclareRows).
int64_t DeclareMetricRows(LayerMetric metric, const MetricShape& shape, std::vector<StatKey>* keys);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_METRIC_OBSERVERS_H_
