// Summaries of the mixers' eigenvalues (METHODS.md, "Spectra"), accumulated
// from the log λ tensors a model hands its SpectrumSink
// (worker/model/language_model.h) into mergeable sums.
//
// Per block l = 1..L and group g (attention head, Mamba-2 head; Mamba's one
// group pools every channel and state), per prompt, over the prompt's time
// steps t >= 2 (and the K values of each step):
//   <prefix>_frac_k  fraction of |λ| in bin k of
//                    [0,0.1) [0.1,0.5) [0.5,0.9) [0.9,1) [1,10) [10,100) [100,inf)
//   <prefix>_mean_log  mean log|λ|
//   <prefix>_min, _q01, _q50, _q99, _max   quantiles of |λ| (lower order
//                    statistic: the value of rank floor(q (n - 1)))
// and stats over prompts (sum, sum of squares, count) as for every metric,
// so each row merges across GPUs, chunks and workers by addition. Rows use
// layer = l and head = g.
//
// Our choice where METHODS.md pools over prompts: bin fractions and mean
// log|λ| are per-prompt values averaged over prompts (equal to pooling for
// equal-length prompts); quantiles are per prompt, then mean ± std over
// prompts — pooled order statistics are not mergeable sums.
#ifndef LAYERFLOW_WORKER_ANALYSIS_SPECTRUM_H_
#define LAYERFLOW_WORKER_ANALYSIS_SPECTRUM_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "worker/analysis/layer_metrics.h"

namespace layerflow::worker {

inline constexpr std::array<double, 6> kSpectrumBinEdges = {0.1, 0.5, 0.9, 1.0, 10.0, 100.0};
inline constexpr int kSpectrumBins = 7;
inline constexpr std::array<double, 5> kSpectrumQuantiles = {0.0, 0.01, 0.5, 0.99, 1.0};
// Rows per (layer, group): the bin fractions, mean log|λ|, the quantiles.
inline constexpr int kSpectrumMetrics = kSpectrumBins + 1 + kSpectrumQuantiles.size();

class SpectrumAccumulator {
 public:
  // prefix: "spectrum" or "spectrum_dsf"; groups: LanguageModel::spectrum_groups().
  SpectrumAccumulator(std::string prefix, int64_t num_layers, int64_t groups, c10::Device device);

  // log_lambda [B, G, T, K] of block `layer` (1..L). A prompt with T K = 0
  // values (one token) adds nothing. Throws c10::Error on a shape mismatch.
  void Observe(int64_t layer, const at::Tensor& log_lambda);

  // Row i = keys()[i]; columns kSum, kSumSq, kCount (LayerMetricAccumulator's).
  const std::vector<StatKey>& keys() const { return keys_; }
  const at::Tensor& sums() const { return sums_; }

  // The metric names of one (layer, group), in row order.
  static std::vector<std::string> MetricNames(const std::string& prefix);
  // keys() of an accumulator of these arguments, from the shape alone.
  static std::vector<StatKey> Keys(const std::string& prefix, int64_t num_layers, int64_t groups);

 private:
  int64_t num_layers_, groups_;
  std::vector<StatKey> keys_;
  at::Tensor sums_;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_ANALYSIS_SPECTRUM_H_
