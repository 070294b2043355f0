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
  // Fraction of each class that goes to the training set, in (0, 1).
  double train_fraction = 0.8;
  // One stratified split and one training run per seed; at least one.
  std::vector<uint64_t> seeds = {0, 1, 2};
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
  double train_accuracy_mean = 0;
  double train_accuracy_std = 0;
  // Mean over seeds of the test-set mean |predicted class - true class|.
  double test_mae_mean = 0;
  // Per class c: test accuracy on the examples of class c, mean over the
  // seeds whose test set holds c; -1 for a class that no test set holds
  // (a class with no examples at all). C entries.
  std::vector<double> per_class_test_accuracy;
  // Test accuracy of each seed, in the order of ProbeOptions::seeds.
  std::vector<double> test_accuracy_per_seed;
};

struct ProbeReport {
  int num_classes = 0;
  int64_t num_examples = 0;  // N
  int64_t num_points = 0;    // P
  int64_t dim = 0;           // d
  int64_t num_train = 0;     // examples in each seed's training set
  int64_t num_test = 0;      // and test set (equal for every seed)
  double chance = 0;         // 1 / C
  std::vector<ProbePointReport> points;  // P entries
  // Highest test_accuracy_mean; ties go to the earliest point.
  int64_t best_point = 0;
  double best_test_accuracy = 0;
  // Point P - 1 (the last representation point, e.g. `final`).
  double final_test_accuracy = 0;
  double drop = 0;  // best_test_accuracy - final_test_accuracy (>= 0)
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_PROBE_PROBE_REPORT_H_
