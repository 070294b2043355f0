// Small statistics of the probe report (METHODS.md, "Probing"): the Wilson
// interval of an accuracy, a quantile of the permutation null and its
// p-value. Plain C++, no LibTorch, so that they are tested by hand-worked
// values on their own.
#ifndef LAYERFLOW_WORKER_PROBE_PROBE_STATS_H_
#define LAYERFLOW_WORKER_PROBE_PROBE_STATS_H_

#include <cstdint>
#include <vector>

namespace layerflow::worker {

// The two-sided 95% normal quantile, Phi^-1(0.975).
inline constexpr double kZ95 = 1.959963984540054;

struct Interval {
  double lo = 0;
  double hi = 0;
};

// Wilson score interval of a proportion p_hat observed on n trials:
//   (p_hat + z^2 / 2n -+ z sqrt(p_hat (1 - p_hat) / n + z^2 / 4n^2)) / (1 + z^2 / n),
// clamped to [0, 1] (it lies there mathematically; the clamp absorbs
// rounding). Unlike p_hat -+ z sigma it stays inside [0, 1] and does not
// collapse to a point at p_hat = 0 or 1, which is where small test sets
// put a probe's accuracy. p_hat is clamped to [0, 1]; n < 1 gives [0, 1].
Interval WilsonInterval(double p_hat, int64_t n, double z = kZ95);

// The q-quantile of `values` by linear interpolation between order
// statistics (numpy's default, "linear"): with v sorted ascending and
// h = q (K - 1), v[floor(h)] + (h - floor(h)) (v[floor(h) + 1] - v[floor(h)]).
// q is clamped to [0, 1]; an empty list gives 0.
double Quantile(std::vector<double> values, double q);

// One-sided permutation p-value of `observed` against the K null values:
//   (1 + #{k : null_values[k] >= observed}) / (K + 1).
// The observed labeling counts as one of the K + 1 equally likely ones, so
// the p-value is never 0 and P(p <= a) <= a under the null; ties count
// against the observation (conservative). Values within 1e-9 of `observed`
// are ties: the statistics are means of the same fractions summed in
// different orders, equal in exact arithmetic but not always in the last
// bit. An empty null gives 1.
double PermutationPValue(double observed, const std::vector<double>& null_values);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_PROBE_PROBE_STATS_H_
