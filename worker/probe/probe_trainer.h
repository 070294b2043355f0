// Batched linear-probe trainer (METHODS.md, "Probing"; docs/metrics.md,
// "Probing"): one linear probe d -> C per representation point, all P
// points trained at once as one batched model.
//
// Per seed:
//   1. StratifiedSplit (below): each class split train/test in the same
//      proportion, shuffled with an explicit CPU generator seeded by the seed.
//   2. z-scoring of every point's features with the TRAIN mean and
//      population std (divisor n_train), std floored at options.std_floor;
//      test features use the same train statistics.
//   3. W [P, d, C] = 0, b [P, C] = 0 (deterministic init);
//      logits = X W + b via baddbmm; loss = mean over train examples of the
//      cross entropy; gradient written by hand: dL/dlogits =
//      (softmax - onehot) / n_train; no autograd (runs under InferenceMode).
//   4. options.epochs full-batch Adam steps exactly as torch.optim.Adam
//      (foreach form): g += weight_decay * param (W and b both); m =
//      lerp(m, g, 1 - 0.9); v = 0.999 v + 0.001 g^2; param -= lr / (1 -
//      0.9^t) * m / (sqrt(v) / sqrt(1 - 0.999^t) + 1e-8).
//   5. argmax predictions on train and test.
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
  std::vector<int64_t> test;
};

// Stratified shuffled split. Class c with n_c >= 2 examples puts
//   n_train_c = clamp(floor(train_fraction * n_c + 0.5), 1, n_c - 1)
// examples (round half up, at least one on each side) into train and the
// rest into test; which ones: the class's example indices in ascending
// order, permuted by at::randperm(n_c) drawn from ONE CPU generator seeded
// with `seed`, classes drawn in the order 0..C-1; the first n_train_c of
// the permutation go to train. A class with no examples is skipped.
// INVALID_ARGUMENT (naming the field) for a label outside [0, num_classes),
// num_classes < 2, train_fraction not in (0, 1), or a class with exactly one
// example (it cannot be split).
absl::StatusOr<ProbeSplit> StratifiedSplit(const std::vector<int32_t>& labels,
                                           int num_classes,
                                           double train_fraction,
                                           uint64_t seed);

// Trains the probes of features [N, P, d] (float16, bfloat16, float32 or
// float64, any device; finite) against labels (N entries in [0, C)) on
// `device`, once per seed of options.seeds. Never throws: bad input is
// INVALID_ARGUMENT naming the field; a LibTorch failure is INTERNAL, an
// out-of-memory RESOURCE_EXHAUSTED.
absl::StatusOr<ProbeReport> TrainProbes(const at::Tensor& features,
                                        const std::vector<int32_t>& labels,
                                        const ProbeOptions& options,
                                        c10::Device device);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_PROBE_PROBE_TRAINER_H_
