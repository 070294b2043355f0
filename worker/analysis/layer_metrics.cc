#include "worker/analysis/layer_metrics.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/analysis/metric_observers.h"

namespace layerflow::worker {
namespace {

constexpr LayerMetric kAllMetrics[kNumLayerMetrics] = {
    LayerMetric::kAdjacentCos,          LayerMetric::kIntertokenCos,
    LayerMetric::kIntertokenCosNoFirst, LayerMetric::kTokenDispersion,
    LayerMetric::kStepEnergy,           LayerMetric::kPathEnergy,
    LayerMetric::kCkaUnbiased,          LayerMetric::kCkaBiased,
    LayerMetric::kCkaAllUnbiased,       LayerMetric::kCkaAllBiased,
    LayerMetric::kAdjacentCosTokens};

}  // namespace

const char* LayerMetricName(LayerMetric metric) {
  const int i = static_cast<int>(metric);
  // The catalog's names are literals: NUL-terminated.
  return i >= 0 && i < kNumLayerMetrics ? catalog::kLayerMetricNames[i].data() : "?";
}

absl::StatusOr<std::vector<LayerMetric>> ParseLayerMetrics(const std::vector<std::string>& names) {
  if (names.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("analyses: empty; known: ", catalog::LayerMetricList()));
  }
  std::vector<LayerMetric> metrics;
  for (const std::string& name : names) {
    const LayerMetric* found =
        std::find_if(std::begin(kAllMetrics), std::end(kAllMetrics),
                     [&name](LayerMetric m) { return name == LayerMetricName(m); });
    if (found == std::end(kAllMetrics)) {
      return absl::InvalidArgumentError(
          absl::StrCat("analyses: unknown '", name, "'; known: ", catalog::LayerMetricList()));
    }
    if (std::find(metrics.begin(), metrics.end(), *found) != metrics.end()) {
      return absl::InvalidArgumentError(absl::StrCat("analyses: '", name, "' listed twice"));
    }
    metrics.push_back(*found);
  }
  return metrics;
}

LayerMetricAccumulator::LayerMetricAccumulator(std::vector<LayerMetric> metrics, int64_t num_layers,
                                               c10::Device device, int64_t max_positions)
    : metrics_(std::move(metrics)), num_layers_(num_layers), max_positions_(max_positions) {
  const MetricShape shape{num_layers_, max_positions_};
  rows_ = std::make_unique<MetricRows>(metrics_, shape, device);
  stage_ = std::make_unique<PointStage>(num_layers_);
  auto asks = [this](bool (*writes)(LayerMetric)) {
    return std::any_of(metrics_.begin(), metrics_.end(), writes);
  };
  if (asks(&OnePointObserver::Writes)) {
    observers_.push_back(std::make_unique<OnePointObserver>(*rows_));
  }
  AllPairCkaObserver* all_pairs = nullptr;
  if (asks(&AllPairCkaObserver::Writes)) {
    auto observer = std::make_unique<AllPairCkaObserver>(*rows_);
    all_pairs = observer.get();
    observers_.push_back(std::move(observer));
  }
  if (asks(&PairCkaObserver::Writes)) {
    observers_.push_back(std::make_unique<PairCkaObserver>(*rows_, all_pairs));
  }
  if (asks(&StepObserver::Writes)) {
    observers_.push_back(std::make_unique<StepObserver>(*rows_, shape));
  }
  if (!CkaBaselineObserver::Estimators(metrics_).empty()) {
    observers_.push_back(std::make_unique<CkaBaselineObserver>(*rows_));
  }
}

LayerMetricAccumulator::~LayerMetricAccumulator() = default;
LayerMetricAccumulator::LayerMetricAccumulator(LayerMetricAccumulator&&) noexcept = default;
LayerMetricAccumulator& LayerMetricAccumulator::operator=(LayerMetricAccumulator&&) noexcept =
    default;

std::vector<StatKey> LayerMetricAccumulator::Keys(const std::vector<LayerMetric>& metrics,
                                                  int64_t num_layers, int64_t max_positions) {
  const MetricShape shape{num_layers, max_positions};
  std::vector<StatKey> keys;
  for (LayerMetric metric : metrics) DeclareMetricRows(metric, shape, &keys);
  for (CkaEstimator estimator : CkaBaselineObserver::Estimators(metrics)) {
    keys.push_back(CkaBaselineObserver::Key(estimator));
  }
  return keys;
}

const std::vector<StatKey>& LayerMetricAccumulator::keys() const {
  if (!keys_.empty() || rows_->size() == 0) return keys_;
  keys_ = Keys(metrics_, num_layers_, max_positions_);
  TORCH_CHECK(static_cast<int64_t>(keys_.size()) == rows_->size(), "analysis: ", keys_.size(),
              " keys for ", rows_->size(), " rows");
  return keys_;
}

const at::Tensor& LayerMetricAccumulator::sums() const { return rows_->sums(); }

void LayerMetricAccumulator::ClearBatch() {
  stage_->DropHeld();
  for (const std::unique_ptr<MetricObserver>& observer : observers_) observer->Clear();
}

void LayerMetricAccumulator::Observe(int64_t point, const at::Tensor& hidden) {
  c10::InferenceMode guard;
  TORCH_CHECK(point == next_point_, "analysis: expected representation point ", next_point_,
              ", got ", point);
  TORCH_CHECK(hidden.dim() == 3, "analysis: hidden must be [batch, seq, d], got ", hidden.sizes());
  next_point_ = point + 1;
  if (point == 0) {
    // Nothing of an earlier batch is held (one that threw part-way included).
    ClearBatch();
    batch_size_ = hidden.size(0);
    // The batch's path, once, from point 0's device and dtype: every point
    // of a batch must take the same one (a point's Gram statistics are
    // paired with the next point's, and the two paths keep different ones).
    TORCH_CHECK(at::isFloatingType(hidden.scalar_type()),
                "analysis: representation point 0 must be floating point, got ",
                hidden.scalar_type());
    // A half model's float32 states take the fused path on every device
    // (their Gram a bf16 one: round_gram in metric_observers.cc).
    fused_ = TakesFusedPath(hidden.device(), hidden.scalar_type(), model_dtype_);
    first_type_ = hidden.scalar_type();
  }
  // A later point of another dtype (the SSM models keep the residual in
  // float32, so a bf16 model's embedding can be bf16 and its blocks
  // float32): the float64 path upcasts every point to float64, exactly; the
  // fused path takes bf16, fp16 and float32 points (the per-token pass
  // upcasts a pair of different dtypes, exactly, to a common one) and
  // refuses any other, naming both points.
  TORCH_CHECK(!fused_ || IsFusedStateType(hidden.scalar_type()), "analysis: representation point ",
              point, " is ", hidden.scalar_type(), " but point 0 was ", first_type_, " on ",
              hidden.device(),
              ": the batch's fused path (chosen at point 0) takes bf16, fp16 and float32 "
              "points only");
  TORCH_CHECK(fused_ || at::isFloatingType(hidden.scalar_type()), "analysis: representation point ",
              point, " must be floating point, got ", hidden.scalar_type());
  if (point == 0) {
    const BatchInfo batch{.batch = batch_size_,
                          .n = hidden.size(1),
                          .first_prompt = next_prompt_,
                          .fused = fused_,
                          .point0 = &hidden};
    for (const std::unique_ptr<MetricObserver>& observer : observers_) {
      observer->BeginBatch(batch, *rows_);
    }
    stage_->BeginBatch(fused_,
                       model_dtype_ != c10::ScalarType::Undefined ? model_dtype_ : first_type_);
  }
  // What the point is read for: the union of the observers' needs (which
  // depend on its n, and on the batch's place in the job).
  PointNeeds needs;
  for (const std::unique_ptr<MetricObserver>& observer : observers_) {
    needs |= observer->NeedsAt(hidden.size(1));
  }
  const PointStats& stats = stage_->Observe(point, hidden, needs);
  for (const std::unique_ptr<MetricObserver>& observer : observers_) {
    observer->Observe(stats, *rows_);
  }
  stage_->EndPoint(point);
}

void LayerMetricAccumulator::EndBatch() {
  TORCH_CHECK(next_point_ == num_layers_ + 2, "analysis: batch ended after point ", next_point_ - 1,
              ", expected ", num_layers_ + 1);
  next_point_ = 0;
  if (batch_size_ > 0) next_prompt_ += batch_size_;
  rows_->Flush();
  ClearBatch();
}

}  // namespace layerflow::worker
