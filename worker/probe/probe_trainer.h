// Batched linear-probe trainer (METHODS.md, "Probing"; docs/metrics.md,
// "Probing"): one linear probe d -> C per representation point, all P
// points trained at once as one batched model.
//
// Per seed:
//   1. StratifiedSplit (below): each class split train / validation / test
//      in the same proportions, shuffled with an explicit CPU generator
//      seeded by the seed.
//   2. z-scoring of every point's features with the TRAIN mean and
//      population std (divisor n_train), std floored at options.std_floor;
//      validation and test features use the same train statistics.
//   3. W [P, d, C] = 0, b [P, C] = 0 (deterministic init; W is stored as
//      W^T [P, C, d] so that logits come out [P, C, n], see TrainGroup);
//      logits = X W + b via baddbmm; loss = mean over train examples of the
//      cross entropy; gradient written by hand: dL/dlogits =
//      (softmax - onehot) / n_train; no autograd (runs under InferenceMode).
//   4. options.epochs full-batch Adam steps exactly as torch.optim.Adam
//      (foreach form): g += weight_decay * param (W and b both); m =
//      lerp(m, g, 1 - 0.9); v = 0.999 v + 0.001 g^2; param -= lr / (1 -
//      0.9^t) * m / (sqrt(v) / sqrt(1 - 0.999^t) + 1e-8).
//   5. argmax predictions on train, validation and test; the best point of
//      the seed is the one with the highest validation accuracy, and its
//      test accuracy is the seed's best accuracy.
// Then the same for each of options.permutations label permutations (the
// null, probe_report.h). Every (seed, labeling) run is an independent set
// of P probes; runs are trained side by side as one batched model of
// R x P probes, R as many as fit a 1 GiB working set (at least one).
// All in float32 on `device` (features of any floating dtype are cast).
// Reports: see probe_report.h.
#ifndef LAYERFLOW_WORKER_PROBE_PROBE_TRAINER_H_
#define LAYERFLOW_WORKER_PROBE_PROBE_TRAINER_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/probe/probe_report.h"

namespace layerflow::worker {

// Example indices of one split, each list ascending; disjoint, and together
// they cover every example.
struct ProbeSplit {
  std::vector<int64_t> train;
  std::vector<int64_t> val;
  std::vector<int64_t> test;
};

// Stratified shuffled three-way split. Class c with n_c >= 3 examples puts
//   a_c = clamp(floor(train_fraction * n_c + 0.5), 1, n_c - 2)
//   b_c = clamp(floor((train_fraction + val_fraction) * n_c + 0.5), a_c + 1, n_c - 1)
// examples 0..a_c-1 of a shuffled order into train, a_c..b_c-1 into
// validation and the rest into test: the two cut points rounded half up,
// every part holds at least one example of the class (60/20/20 of 20
// examples: 12/4/4; of 8: 5/1/2). The shuffled order: the class's example
// indices in ascending order, permuted by at::randperm(n_c) drawn from ONE
// CPU generator seeded with `seed`, classes drawn in the order 0..C-1. A
// class with no examples is skipped. INVALID_ARGUMENT (naming the field)
// for a label outside [0, num_classes), num_classes < 2, a fraction not in
// (0, 1) or fractions summing to 1 or more (no test set), or a class with
// one or two examples (it cannot be split three ways).
absl::StatusOr<ProbeSplit> StratifiedSplit(const std::vector<int32_t>& labels, int num_classes,
                                           double train_fraction, double val_fraction,
                                           uint64_t seed);

// Trains the probes of features [N, P, d] (float16, bfloat16, float32 or
// float64, any device; finite) against labels (N entries in [0, C)) on
// `device`, once per seed of options.seeds and labeling (the given labels,
// then options.permutations permuted ones). Never throws: bad input is
// INVALID_ARGUMENT naming the field; a LibTorch failure is INTERNAL, an
// out-of-memory RESOURCE_EXHAUSTED.
absl::StatusOr<ProbeReport> TrainProbes(const at::Tensor& features,
                                        const std::vector<int32_t>& labels,
                                        const ProbeOptions& options, c10::Device device);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_PROBE_PROBE_TRAINER_H_
