// Layer-wise representation metrics (METHODS.md, "Metrics"), accumulated as
// the forward goes (one layer held at a time) into mergeable sums.
//
// Representation points: p = 0 embedding, p = 1..L after each block, and
// p = L + 1 the final-norm output (`final`). Our choice for `final`:
//   - adjacent_cos(l), l = 0..L-1: cos between residual points l and l + 1
//     only; the final-norm output is NOT paired with block L (a LayerNorm of
//     the same stream, not a step of the residual flow).
//   - intertoken_cos(l), l = 0..L, and l = L + 1 for `final`.
// (docs/metrics.md says the same.)
//
// Per prompt of n tokens, in float64 on the states' device:
//   adjacent_cos(l)   = mean_t cos(h_t^(l), h_t^(l+1))
//   intertoken_cos(l) = (||sum_t h^_t||^2 - n) / (n (n - 1)), h^ = h / ||h||
//                       (mean cos over unordered pairs; needs n >= 2: a
//                       prompt of one token adds nothing to it)
// A zero vector (never seen in practice) has unit vector 0: cos 0 in
// adjacent_cos; intertoken_cos does not special-case it.
// Stats: per (metric, layer) the sum over prompts of the value, of its
// square, and the prompt count; they merge across GPUs, chunks and workers
// by addition.
#ifndef LAYERFLOW_WORKER_ANALYSIS_LAYER_METRICS_H_
#define LAYERFLOW_WORKER_ANALYSIS_LAYER_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace layerflow::worker {

enum class LayerMetric { kAdjacentCos, kIntertokenCos };

const char* LayerMetricName(LayerMetric metric);
// "adjacent_cos", "intertoken_cos"; INVALID_ARGUMENT naming `analyses` for an
// empty list, an unknown or a repeated name.
absl::StatusOr<std::vector<LayerMetric>> ParseLayerMetrics(
    const std::vector<std::string>& names);

struct StatKey {
  std::string metric;
  int32_t layer = 0;
};

class LayerMetricAccumulator {
 public:
  static constexpr int kSum = 0, kSumSq = 1, kCount = 2;

  // num_layers = L (blocks). Sums live on `device`.
  LayerMetricAccumulator(std::vector<LayerMetric> metrics, int64_t num_layers,
                         c10::Device device);

  // One representation point of a batch of B prompts of n tokens each,
  // hidden [B, n, d]; points 0..L+1 in order (GptNeoXModel's callback).
  // Throws c10::Error on a shape or order mismatch.
  void Observe(int64_t point, const at::Tensor& hidden);
  // Drops the held layer; call after the batch's last point.
  void EndBatch();

  // Row i = keys()[i]; columns kSum, kSumSq, kCount; float64 on the device.
  const std::vector<StatKey>& keys() const { return keys_; }
  const at::Tensor& sums() const { return sums_; }
  at::Tensor& mutable_sums() { return sums_; }

 private:
  void Add(int64_t row, const at::Tensor& per_prompt);

  std::vector<LayerMetric> metrics_;
  int64_t num_layers_;
  std::vector<StatKey> keys_;
  int64_t adjacent_row_ = -1;    // first row of adjacent_cos, or -1
  int64_t intertoken_row_ = -1;  // first row of intertoken_cos, or -1
  at::Tensor sums_;
  int64_t next_point_ = 0;
  at::Tensor previous_;       // float64 [B, n, d] of the last residual point
  at::Tensor previous_norm_;  // [B, n]
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_LAYER_METRICS_H_
