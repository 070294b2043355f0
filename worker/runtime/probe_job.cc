// PROBE jobs on LibTorch: the EXTRACT job's per-chunk feature files stacked
// into [N, P, d], the batched probe trainer (worker/probe), and its report
// as result rows (job_runner.h, RunProbeJob).
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <cstring>
#include <numeric>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/analysis/layer_metrics.h"
#include "worker/model/checkpoint.h"
#include "worker/model/torch_status.h"
#include "worker/probe/probe_trainer.h"
#include "worker/runtime/feature_file.h"
#include "worker/runtime/job_runner.h"

namespace layerflow::worker {
namespace {

absl::Status Invalid(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

void AddRow(ChunkResult& out, const std::string& metric, int32_t layer,
            const std::vector<double>& values, int32_t position = -1, int32_t layer_b = -1) {
  MetricStat stat;
  stat.metric = metric;
  stat.layer = layer;
  stat.position = position;
  stat.layer_b = layer_b;
  for (double v : values) {
    stat.sum += v;
    stat.sum_sq += v * v;
  }
  stat.count = static_cast<int64_t>(values.size());
  out.stats.push_back(std::move(stat));
}

absl::StatusOr<ChunkResult> RunProbeJobOrThrow(const JobConfig& config,
                                               const std::vector<std::string>& files,
                                               const DeviceConfig& device) {
  if (files.empty()) {
    return absl::FailedPreconditionError("probe: the extraction job stored no feature artifacts");
  }
  std::vector<FeatureFile> chunks;
  for (const std::string& path : files) {
    absl::StatusOr<FeatureFile> chunk = ReadFeatureFile(path);
    if (!chunk.ok()) return chunk.status();
    if (!chunks.empty() && chunk->points != chunks[0].points) {
      return Invalid(path, "points do not match the other chunks'");
    }
    if (!chunks.empty() &&
        chunk->features.sizes().slice(1) != chunks[0].features.sizes().slice(1)) {
      return Invalid(path,
                     absl::StrCat("features ",
                                  ShapeString(std::vector<int64_t>(chunk->features.sizes().begin(),
                                                                   chunk->features.sizes().end())),
                                  " do not match the other chunks'"));
    }
    chunks.push_back(*std::move(chunk));
  }
  // Prompt order, whatever order the files came in (retries may reorder).
  std::vector<std::pair<int64_t, std::pair<size_t, int64_t>>> order;
  for (size_t c = 0; c < chunks.size(); ++c) {
    for (size_t i = 0; i < chunks[c].prompt_index.size(); ++i) {
      order.push_back({chunks[c].prompt_index[i], {c, static_cast<int64_t>(i)}});
    }
  }
  std::sort(order.begin(), order.end());
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i].first == order[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat("probe: prompt ", order[i].first, " appears in two feature files"));
    }
  }
  // One dtype for all: fp16 files of one job may sit beside fp32 ones (a
  // chunk whose states exceed fp16's range is stored in fp32,
  // feature_file.h); fp16 -> fp32 is exact.
  at::ScalarType dtype = at::kHalf;
  for (const FeatureFile& chunk : chunks) {
    if (chunk.features.scalar_type() != at::kHalf) dtype = at::kFloat;
  }
  c10::InferenceMode guard;
  std::vector<at::Tensor> rows;
  std::vector<int32_t> labels;
  for (const auto& [index, where] : order) {
    rows.push_back(chunks[where.first].features[where.second].to(dtype));
    labels.push_back(chunks[where.first].labels[where.second]);
  }
  at::Tensor features = at::stack(rows, 0);

  const c10::Device dev = device.device_type == "cuda" && at::hasCUDA() ? c10::Device(c10::kCUDA, 0)
                                                                        : c10::Device(c10::kCPU);
  // The true point of feature column p: the extraction job kept every point
  // (column p is point p) or those of its `layers` (the file's points).
  std::vector<int32_t> points = chunks[0].points;
  int64_t num_layers = chunks[0].num_layers;
  if (points.empty()) {
    num_layers = features.size(1) - 2;
    for (int64_t p = 0; p < features.size(1); ++p) points.push_back(static_cast<int32_t>(p));
  }
  ChunkResult out;
  out.sequence = 0;
  if (config.probe.train) {
    ProbeOptions options;
    options.num_classes = config.probe.classes > 0 ? config.probe.classes : config.num_classes;
    options.train_fraction = config.probe.train_fraction;
    options.val_fraction = config.probe.val_fraction;
    options.permutations = config.probe.permutations;
    options.seeds.assign(config.probe.seeds.begin(), config.probe.seeds.end());
    options.epochs = config.probe.epochs;
    options.learning_rate = config.probe.lr;
    options.weight_decay = config.probe.weight_decay;
    absl::StatusOr<ProbeReport> report = TrainProbes(features, labels, options, dev);
    if (!report.ok()) return report.status();

    // Per-seed values go in as one value per seed (value = mean over seeds,
    // std = their population std, count = seeds), single figures as one
    // value (count 1), the null as one value per permutation (value = the
    // null mean, std = its spread, count = K): every row merges like the
    // layer metrics' rows, by adding sum, sum_sq and count.
    const size_t seeds = options.seeds.size();
    for (size_t p = 0; p < report->points.size(); ++p) {
      const ProbePointReport& r = report->points[p];
      const int32_t layer = points[p];
      AddRow(out, "probe_test_acc", layer, r.test_accuracy_per_seed);
      AddRow(out, "probe_test_acc_lo", layer, {r.test_accuracy_lo});
      AddRow(out, "probe_test_acc_hi", layer, {r.test_accuracy_hi});
      AddRow(out, "probe_val_acc", layer, r.val_accuracy_per_seed);
      std::vector<double> chosen(seeds, 0.0);
      for (size_t s = 0; s < seeds; ++s) {
        chosen[s] = report->best_point_per_seed[s] == static_cast<int64_t>(p);
      }
      AddRow(out, "probe_chosen", layer, chosen);
      // Train accuracy from its mean and sample std: sum and sum of squares.
      const double n = static_cast<double>(seeds);
      MetricStat train;
      train.metric = "probe_train_acc";
      train.layer = layer;
      train.sum = r.train_accuracy_mean * n;
      train.sum_sq = r.train_accuracy_std * r.train_accuracy_std * (n - 1) +
                     n * r.train_accuracy_mean * r.train_accuracy_mean;
      train.count = static_cast<int64_t>(seeds);
      out.stats.push_back(train);
      AddRow(out, "probe_mae", layer, {r.test_mae_mean});
      for (size_t c = 0; c < r.per_class_test_accuracy.size(); ++c) {
        if (r.per_class_test_accuracy[c] < 0) continue;  // no test example of c
        AddRow(out, "probe_class_acc", layer, {r.per_class_test_accuracy[c]},
               static_cast<int32_t>(c));
      }
    }
    AddRow(out, "probe_chance", 0, {report->chance});
    AddRow(out, "probe_num_train", 0, {static_cast<double>(report->num_train)});
    AddRow(out, "probe_num_val", 0, {static_cast<double>(report->num_val)});
    AddRow(out, "probe_num_test", 0, {static_cast<double>(report->num_test)});
    AddRow(out, "probe_best_layer", 0, {static_cast<double>(points[report->best_point])});
    AddRow(out, "probe_best_acc", 0, report->best_test_accuracy_per_seed);
    AddRow(out, "probe_final_acc", 0, report->points.back().test_accuracy_per_seed);
    AddRow(out, "probe_drop", 0, report->drop_per_seed);
    if (report->permutations > 0) {
      AddRow(out, "probe_null_best_acc", 0, report->best_null.values);
      AddRow(out, "probe_null_best_acc_p95", 0, {report->best_null.p95});
      AddRow(out, "probe_best_acc_pvalue", 0, {report->best_null.p_value});
      AddRow(out, "probe_null_drop", 0, report->drop_null.values);
      AddRow(out, "probe_null_drop_p95", 0, {report->drop_null.p95});
      AddRow(out, "probe_drop_pvalue", 0, {report->drop_null.p_value});
    }
  }

  // Linear CKA in the example view (METHODS.md): the N examples' last-token
  // vectors at points l < l' (residual points 0..L, `final` left out as in
  // the token view). That is the token view's all-pair CKA of one "prompt"
  // whose tokens are the examples, so the accumulator computes it: one Gram
  // per point, shared by every pair and both estimators.
  // With `layers`, the kept residual points stand in for 0..L' (so every
  // pair of them gets its CKA, the same numbers as in a full job's) and the
  // final point, kept or not, for L' + 1: it is never paired.
  std::vector<int64_t> residual;  // feature columns of residual points
  for (size_t p = 0; p < points.size(); ++p) {
    if (points[p] <= num_layers) residual.push_back(static_cast<int64_t>(p));
  }
  if (residual.size() < 2) return out;  // no pair of residual points
  std::vector<LayerMetric> cka = {LayerMetric::kCkaAllBiased};
  if (features.size(0) >= 4) cka.push_back(LayerMetric::kCkaAllUnbiased);
  LayerMetricAccumulator examples(cka, static_cast<int64_t>(residual.size()) - 1, dev);
  for (size_t k = 0; k < residual.size(); ++k) {
    examples.Observe(static_cast<int64_t>(k), features.select(1, residual[k]).unsqueeze(0).to(dev));
  }
  examples.Observe(static_cast<int64_t>(residual.size()),
                   features.select(1, features.size(1) - 1).unsqueeze(0).to(dev));
  examples.EndBatch();
  // The token view's names, renamed to the example view's (its baseline:
  // the estimator on Gaussian matrices of shape [N, d]).
  const std::map<std::string, std::string> example_names = {
      {"cka_all_biased", "cka_example_biased"},
      {"cka_all_unbiased", "cka_example_unbiased"},
      {kCkaBaselineBiased, "cka_example_baseline_biased"},
      {kCkaBaselineUnbiased, "cka_example_baseline_unbiased"}};
  const at::Tensor sums = examples.sums().cpu();
  const auto stat = sums.accessor<double, 2>();
  for (size_t i = 0; i < examples.keys().size(); ++i) {
    const StatKey& key = examples.keys()[i];
    if (stat[i][LayerMetricAccumulator::kCount] == 0) continue;
    // Baselines sit at layer 0 whatever the points; pairs at true points.
    const bool pair = key.layer_b >= 0;
    AddRow(out, example_names.at(key.metric), pair ? points[residual[key.layer]] : key.layer,
           {stat[i][LayerMetricAccumulator::kSum]}, -1,
           pair ? points[residual[key.layer_b]] : key.layer_b);
  }
  return out;
}

}  // namespace

absl::StatusOr<ChunkResult> RunProbeJob(const JobConfig& config,
                                        const std::vector<std::string>& feature_files,
                                        const DeviceConfig& device) {
  // The worker's one exception edge (torch_status.h): std::bad_alloc is
  // RESOURCE_EXHAUSTED here as in every other job (it escaped as INTERNAL).
  return GuardTorch(absl::StrCat("probe ", config.model),
                    [&] { return RunProbeJobOrThrow(config, feature_files, device); });
}

}  // namespace layerflow::worker
