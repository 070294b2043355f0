// Independent float64 reference for the probe trainer: multinomial logistic
// regression in plain C++ loops (no LibTorch), fitted by Newton's method to
// convergence. It shares nothing with worker/probe but the split, which the
// test takes from StratifiedSplit (tested on its own).
#ifndef LAYERFLOW_TESTS_WORKER_PROBE_PROBE_REFERENCE_H_
#define LAYERFLOW_TESTS_WORKER_PROBE_PROBE_REFERENCE_H_

#include <cstdint>
#include <vector>

namespace layerflow::worker::testing {

// Row-major [n, d] matrix.
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<double> v;
  double& at(int64_t i, int64_t j) { return v[i * cols + j]; }
  double at(int64_t i, int64_t j) const { return v[i * cols + j]; }
};

// z-scores train and test in place with the train column means and
// population stds (divisor rows), each std floored at `std_floor`.
void ZScoreWithTrainStats(Matrix& train, Matrix& test, double std_floor);

struct LogisticModel {
  int64_t dim = 0;
  int num_classes = 0;
  std::vector<double> w;  // [dim, C] row-major
  std::vector<double> b;  // [C]
  int iterations = 0;     // Newton steps taken
  double grad_norm = 0;   // max |gradient| at the end
};

// Minimises (1/n) sum_i CE(softmax(W^T x_i + b), y_i) + (l2 / 2)(|W|^2 + |b|^2)
// (the objective whose gradient torch.optim.Adam's weight_decay = l2 adds to)
// by damped Newton steps until max |gradient| < 1e-10.
LogisticModel FitLogistic(const Matrix& x, const std::vector<int>& y, int num_classes, double l2);

// argmax_c (W^T x_i + b)_c, ties to the smaller class.
std::vector<int> PredictLogistic(const LogisticModel& model, const Matrix& x);

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_PROBE_PROBE_REFERENCE_H_
