// Linear-probe options and reports (METHODS.md, "Probing"): plain C++ structs
// with no LibTorch types, so that a gRPC translation unit can include this
// header (DESIGN.md, Build rules). The trainer is in probe_trainer.h.
#ifndef LAYERFLOW_WORKER_PROBE_PROBE_REPORT_H_
#define LAYERFLOW_WORKER_PROBE_PROBE_REPORT_H_

#include <cstdint>
#include <vector>

namespace layerflow::worker {

struct ProbeOptions {
  // C: labels are in [0, C). Classes are ordered (gold positions), which is
  // what the mean absolute error of the predicted index measures.
  int num_classes = 0;
  // Shares of each class that go to the training set and to the validation
  // set (where the best point is chosen); the rest is the test set (where
  // every reported accuracy is measured). Each in (0, 1), their sum < 1.
  double train_fraction = 0.6;
  double val_fraction = 0.2;
  // One stratified split and one training run per seed; at least one.
  std::vector<uint64_t> seeds = {0, 1, 2};
  // K: label permutations for the null distribution of the best-point
  // accuracy and of the drop (the whole pipeline, every seed, per
  // permutation); 0: none. The permutations are drawn from one CPU
  // generator seeded with permutation_seed, independent of `seeds`.
  int permutations = 20;
  uint64_t permutation_seed = 0;
  int epochs = 150;             // full-batch Adam steps, >= 1
  double learning_rate = 5e-3;  // > 0
  double weight_decay = 1e-3;   // >= 0, added to the gradient (torch.optim.Adam)
  double std_floor = 1e-6;      // z-scoring divides by max(train std, floor), > 0
};

// Results of one representation point p (mean and std over seeds; std is
// the sample std with n - 1 over seeds, 0 for a single seed).
struct ProbePointReport {
  double test_accuracy_mean = 0;
  double test_accuracy_std = 0;
  // Wilson 95% interval of test_accuracy_mean over the num_test examples
  // that one seed's test accuracy rests on (probe_stats.h). Not over
  // seeds x num_test: the seeds' test sets overlap (each is a share of the
  // same N examples), so pooling them would overstate the evidence.
  double test_accuracy_lo = 0;
  double test_accuracy_hi = 0;
  // Validation accuracy: what the best point is chosen on.
  double val_accuracy_mean = 0;
  double val_accuracy_std = 0;
  double train_accuracy_mean = 0;
  double train_accuracy_std = 0;
  // Mean over seeds of the test-set mean |predicted class - true class|.
  double test_mae_mean = 0;
  // Per class c: test accuracy on the examples of class c, mean over the
  // seeds whose test set holds c; -1 for a class that no test set holds
  // (a class with no examples at all). C entries.
  std::vector<double> per_class_test_accuracy;
  // Test and validation accuracy of each seed, in the order of
  // ProbeOptions::seeds.
  std::vector<double> test_accuracy_per_seed;
  std::vector<double> val_accuracy_per_seed;
  // Seeds whose validation accuracy chose this point (0..S).
  int times_chosen = 0;
};

// The null distribution of one statistic over the K label permutations.
struct ProbeNull {
  std::vector<double> values;  // K entries, in permutation order
  double mean = 0;
  double p95 = 0;      // Quantile(values, 0.95) (probe_stats.h)
  double p_value = 1;  // PermutationPValue(observed, values)
};

struct ProbeReport {
  int num_classes = 0;
  int64_t num_examples = 0;  // N
  int64_t num_points = 0;    // P
  int64_t dim = 0;           // d
  // Examples in each seed's training, validation and test set (equal for
  // every seed and every permutation: they depend on the class counts only).
  int64_t num_train = 0;
  int64_t num_val = 0;
  int64_t num_test = 0;
  double chance = 0;                     // 1 / C
  std::vector<ProbePointReport> points;  // P entries

  // Held-out selection, per seed s: best_point_per_seed[s] is the point
  // with the highest VALIDATION accuracy of seed s (ties to the earliest);
  // best_test_accuracy_per_seed[s] its TEST accuracy in seed s, and
  // drop_per_seed[s] that minus seed s's test accuracy at point P - 1. The
  // validation set picks, the test set measures: choosing and measuring on
  // the same examples would make the best accuracy the maximum of P noisy
  // values, above chance and above the final point with no signal at all.
  std::vector<int64_t> best_point_per_seed;
  std::vector<double> best_test_accuracy_per_seed;
  std::vector<double> drop_per_seed;
  // The point most seeds chose (ties to the earliest): the one to name.
  int64_t best_point = 0;
  // Means (and sample stds) over seeds of the per-seed values above.
  double best_test_accuracy = 0;
  double best_test_accuracy_std = 0;
  double final_test_accuracy = 0;  // point P - 1 (e.g. `final`), test mean
  double drop = 0;                 // best_test_accuracy - final_test_accuracy; can be < 0
  double drop_std = 0;

  // The label-permutation baseline (ProbeOptions::permutations = K; empty
  // nulls for K = 0): permutation k relabels example i with y[pi_k(i)] and
  // reruns the whole pipeline (stratified splits of the new labels, every
  // seed, training, validation choice, test accuracy); the null values are
  // that run's best_test_accuracy and drop.
  int permutations = 0;
  ProbeNull best_null;
  ProbeNull drop_null;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_PROBE_PROBE_REPORT_H_
