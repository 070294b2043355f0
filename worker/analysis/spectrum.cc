#include "worker/analysis/spectrum.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"

namespace layerflow::worker {

std::vector<std::string> SpectrumAccumulator::MetricNames(const std::string& prefix) {
  std::vector<std::string> names;
  for (int k = 0; k < kSpectrumBins; ++k) names.push_back(absl::StrCat(prefix, "_frac_", k));
  names.push_back(prefix + "_mean_log");
  for (const char* q : {"_min", "_q01", "_q50", "_q99", "_max"}) names.push_back(prefix + q);
  return names;
}

std::vector<StatKey> SpectrumAccumulator::Keys(const std::string& prefix, int64_t num_layers,
                                               int64_t groups) {
  const std::vector<std::string> names = MetricNames(prefix);
  std::vector<StatKey> keys;
  for (int64_t l = 1; l <= num_layers; ++l) {
    for (int64_t g = 0; g < groups; ++g) {
      for (const std::string& name : names) {
        StatKey key;
        key.metric = name;
        key.layer = static_cast<int32_t>(l);
        key.head = static_cast<int32_t>(g);
        keys.push_back(std::move(key));
      }
    }
  }
  return keys;
}

SpectrumAccumulator::SpectrumAccumulator(std::string prefix, int64_t num_layers, int64_t groups,
                                         c10::Device device)
    : num_layers_(num_layers), groups_(groups), keys_(Keys(prefix, num_layers, groups)) {
  c10::InferenceMode guard;
  sums_ = at::zeros({static_cast<int64_t>(keys_.size()), 3},
                    at::TensorOptions().dtype(at::kDouble).device(device));
}

void SpectrumAccumulator::Observe(int64_t layer, const at::Tensor& log_lambda) {
  c10::InferenceMode guard;
  TORCH_CHECK(layer >= 1 && layer <= num_layers_, "spectrum: layer ", layer, " outside 1..",
              num_layers_);
  TORCH_CHECK(log_lambda.dim() == 4 && log_lambda.size(1) == groups_,
              "spectrum: expected log_lambda [B, ", groups_, ", T, K], got ", log_lambda.sizes());
  const int64_t batch = log_lambda.size(0);
  const int64_t n = log_lambda.size(2) * log_lambda.size(3);
  if (batch == 0 || n == 0) return;
  const int64_t per_group = kSpectrumMetrics;
  const auto dev = sums_.device();
  // [B, G, n] on the accumulator's device; comparisons in the input dtype,
  // sums in float64.
  at::Tensor v = log_lambda.to(dev).reshape({batch, groups_, n}).contiguous();

  std::vector<at::Tensor> columns;  // each [B, G], float64
  std::vector<double> log_edges;
  for (double e : kSpectrumBinEdges) log_edges.push_back(std::log(e));
  at::Tensor edges = at::tensor(log_edges, at::TensorOptions().dtype(v.scalar_type()).device(dev));
  // Bin k holds edges[k-1] <= |λ| < edges[k] (right = true).
  at::Tensor bins = at::bucketize(v, edges, /*out_int32=*/false, /*right=*/true);
  for (int k = 0; k < kSpectrumBins; ++k) {
    columns.push_back((bins == k).sum(-1, false, at::kDouble) / static_cast<double>(n));
  }
  columns.push_back(v.sum(-1, false, at::kDouble) / static_cast<double>(n));
  // One sort per (prompt, group), then the order statistics: CUDA's
  // kthvalue selects within one thread block per slice, far too slow for
  // Mamba's 10^8 values per prompt.
  const at::Tensor sorted = std::get<0>(at::sort(v, -1));
  for (double q : kSpectrumQuantiles) {
    const int64_t rank = static_cast<int64_t>(std::floor(q * static_cast<double>(n - 1)));
    columns.push_back(at::exp(sorted.select(-1, rank).to(at::kDouble)));
  }
  at::Tensor per_prompt = at::stack(columns, -1);  // [B, G, M]
  // Rows of this layer: ((layer - 1) G + g) M + m.
  at::Tensor add = at::stack({per_prompt.sum(0), per_prompt.pow(2).sum(0),
                              at::full_like(per_prompt.sum(0), static_cast<double>(batch))},
                             -1)
                       .reshape({groups_ * per_group, 3});
  sums_.narrow(0, (layer - 1) * groups_ * per_group, groups_ * per_group).add_(add);
}

}  // namespace layerflow::worker
