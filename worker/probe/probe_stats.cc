#include "worker/probe/probe_stats.h"

#include <algorithm>
#include <cmath>

namespace layerflow::worker {

Interval WilsonInterval(double p_hat, int64_t n, double z) {
  if (n < 1) return {0.0, 1.0};
  const double p = std::clamp(p_hat, 0.0, 1.0);
  const double nn = static_cast<double>(n);
  const double z2 = z * z;
  const double denom = 1.0 + z2 / nn;
  const double center = (p + z2 / (2.0 * nn)) / denom;
  const double half = z * std::sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn)) / denom;
  return {std::clamp(center - half, 0.0, 1.0), std::clamp(center + half, 0.0, 1.0)};
}

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double h = std::clamp(q, 0.0, 1.0) * static_cast<double>(values.size() - 1);
  const size_t i = static_cast<size_t>(std::floor(h));
  if (i + 1 >= values.size()) return values.back();
  return values[i] + (h - static_cast<double>(i)) * (values[i + 1] - values[i]);
}

double PermutationPValue(double observed, const std::vector<double>& null_values) {
  constexpr double kTie = 1e-9;
  int64_t at_least = 0;
  for (double v : null_values) at_least += v >= observed - kTie;
  return static_cast<double>(1 + at_least) / static_cast<double>(1 + null_values.size());
}

}  // namespace layerflow::worker
