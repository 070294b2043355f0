#include "worker/analysis/layer_metrics.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace layerflow::worker {
namespace {

// Smallest norm product that counts as nonzero; below it cos is taken as 0.
constexpr double kTinyNorm = 1e-300;

}  // namespace

const char* LayerMetricName(LayerMetric metric) {
  switch (metric) {
    case LayerMetric::kAdjacentCos:
      return "adjacent_cos";
    case LayerMetric::kIntertokenCos:
      return "intertoken_cos";
  }
  return "?";
}

absl::StatusOr<std::vector<LayerMetric>> ParseLayerMetrics(
    const std::vector<std::string>& names) {
  if (names.empty()) {
    return absl::InvalidArgumentError(
        "analyses: empty; known: adjacent_cos, intertoken_cos");
  }
  std::vector<LayerMetric> metrics;
  for (const std::string& name : names) {
    LayerMetric metric;
    if (name == "adjacent_cos") {
      metric = LayerMetric::kAdjacentCos;
    } else if (name == "intertoken_cos") {
      metric = LayerMetric::kIntertokenCos;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("analyses: unknown '", name,
                       "'; known: adjacent_cos, intertoken_cos"));
    }
    if (std::find(metrics.begin(), metrics.end(), metric) != metrics.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("analyses: '", name, "' listed twice"));
    }
    metrics.push_back(metric);
  }
  return metrics;
}

LayerMetricAccumulator::LayerMetricAccumulator(std::vector<LayerMetric> metrics,
                                               int64_t num_layers,
                                               c10::Device device)
    : metrics_(std::move(metrics)), num_layers_(num_layers) {
  for (LayerMetric metric : metrics_) {
    const std::string name = LayerMetricName(metric);
    if (metric == LayerMetric::kAdjacentCos) {
      adjacent_row_ = static_cast<int64_t>(keys_.size());
      for (int64_t l = 0; l < num_layers_; ++l) {
        keys_.push_back({name, static_cast<int32_t>(l)});
      }
    } else {
      intertoken_row_ = static_cast<int64_t>(keys_.size());
      for (int64_t l = 0; l <= num_layers_ + 1; ++l) {
        keys_.push_back({name, static_cast<int32_t>(l)});
      }
    }
  }
  c10::InferenceMode guard;
  sums_ = at::zeros({static_cast<int64_t>(keys_.size()), 3},
                    at::TensorOptions().dtype(at::kDouble).device(device));
}

void LayerMetricAccumulator::Add(int64_t row, const at::Tensor& per_prompt) {
  // per_prompt: float64 [B]. Stays on the device (no host sync).
  at::Tensor r = sums_[row];
  r[kSum].add_(per_prompt.sum());
  r[kSumSq].add_(per_prompt.square().sum());
  r[kCount].add_(static_cast<double>(per_prompt.size(0)));
}

void LayerMetricAccumulator::Observe(int64_t point, const at::Tensor& hidden) {
  c10::InferenceMode guard;
  TORCH_CHECK(point == next_point_, "analysis: expected representation point ",
              next_point_, ", got ", point);
  TORCH_CHECK(hidden.dim() == 3, "analysis: hidden must be [batch, seq, d], got ",
              hidden.sizes());
  next_point_ = point + 1;
  const int64_t n = hidden.size(1);
  // Upcast: statistics in float64 whatever the model's dtype.
  at::Tensor h = hidden.to(at::kDouble);
  at::Tensor norm = at::linalg_vector_norm(h, 2, {-1});  // [B, n]

  if (intertoken_row_ >= 0 && n >= 2) {
    at::Tensor unit = h / norm.clamp_min(kTinyNorm).unsqueeze(-1);
    at::Tensor total = unit.sum(1);  // [B, d]
    at::Tensor value = (total.square().sum(-1) - static_cast<double>(n)) /
                       static_cast<double>(n * (n - 1));
    Add(intertoken_row_ + point, value);
  }
  if (adjacent_row_ >= 0 && point <= num_layers_) {
    if (point >= 1) {
      TORCH_CHECK(previous_.sizes() == h.sizes(),
                  "analysis: layer shapes differ: ", previous_.sizes(), " vs ",
                  h.sizes());
      at::Tensor cos = (previous_ * h).sum(-1) /
                       (previous_norm_ * norm).clamp_min(kTinyNorm);
      Add(adjacent_row_ + point - 1, cos.mean(-1));
    }
    // Held for the next point; the final-norm output is not paired.
    if (point < num_layers_) {
      previous_ = h;
      previous_norm_ = norm;
    } else {
      previous_ = at::Tensor();
      previous_norm_ = at::Tensor();
    }
  }
}

void LayerMetricAccumulator::EndBatch() {
  TORCH_CHECK(next_point_ == num_layers_ + 2,
              "analysis: batch ended after point ", next_point_ - 1,
              ", expected ", num_layers_ + 1);
  next_point_ = 0;
  previous_ = at::Tensor();
  previous_norm_ = at::Tensor();
}

}  // namespace layerflow::worker
