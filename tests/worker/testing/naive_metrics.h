// Naive float64 references for the analysis-suite metrics (METHODS.md,
// "Metrics"): plain loops over std::vector<double>, explicit token pairs and
// explicit n x n Gram matrices, no LibTorch, so they share no code path with
// worker/analysis/layer_metrics.cc and metric_observers.cc.
#ifndef LAYERFLOW_TESTS_WORKER_TESTING_NAIVE_METRICS_H_
#define LAYERFLOW_TESTS_WORKER_TESTING_NAIVE_METRICS_H_

#include <cstdint>
#include <vector>

namespace layerflow::worker::testing {

// h: [n, d] row-major.
// Mean cos over unordered pairs i < j of tokens 1..n-1 (position 0 left out).
double NaiveIntertokenCosNoFirst(const std::vector<double>& h, int64_t n, int64_t d);
// mean_t ||h_t - mean h||^2 / mean_t ||h_t||^2.
double NaiveTokenDispersion(const std::vector<double>& h, int64_t n, int64_t d);
// mean_t ||b_t - a_t||^2 / ||a_t||^2 (a = layer l, b = layer l + 1).
double NaiveStepEnergy(const std::vector<double>& a, const std::vector<double>& b, int64_t n,
                       int64_t d);
// cos(a_t, b_t) for every token t (a = layer l, b = layer l + 1), [n].
std::vector<double> NaiveTokenCos(const std::vector<double>& a, const std::vector<double>& b,
                                  int64_t n, int64_t d);
// Linear CKA of x [n, dx] and y [n, dy]: explicit Grams; biased HSIC with
// H K H built as an explicit matrix product with H = I - 11'/n, or the
// unbiased HSIC of Song et al. (2012) with explicit K~ L~ products.
double NaiveLinearCka(const std::vector<double>& x, int64_t dx, const std::vector<double>& y,
                      int64_t dy, int64_t n, bool unbiased);

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_TESTING_NAIVE_METRICS_H_
