#include "server/derived/cubic_fit.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace layerflow::server::derived {

absl::StatusOr<CubicFit> FitCubic(absl::Span<const double> x, absl::Span<const double> y) {
  constexpr int kCols = 4;
  if (x.size() != y.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cubic fit: ", x.size(), " depths but ", y.size(), " values"));
  }
  const int n = static_cast<int>(x.size());
  if (n < kMinSeriesPoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("cubic fit: ", n, " points, need at least ", kMinSeriesPoints));
  }
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
      return absl::InvalidArgumentError(absl::StrCat("cubic fit: point ", i, " is not finite"));
    }
  }

  // a: n x 4 column-major Vandermonde; b: the right-hand side. Both are
  // overwritten by the Householder reflections: a's upper triangle becomes
  // R, b becomes Q^T y.
  std::vector<double> a(static_cast<size_t>(n) * kCols);
  auto at = [&](int i, int j) -> double& { return a[static_cast<size_t>(j) * n + i]; };
  double scale_sq = 0;  // for the rank test
  for (int i = 0; i < n; ++i) {
    double p = 1;
    for (int j = 0; j < kCols; ++j) {
      at(i, j) = p;
      scale_sq += p * p;
      p *= x[i];
    }
  }
  std::vector<double> b(y.begin(), y.end());

  for (int k = 0; k < kCols; ++k) {
    double norm = 0;
    for (int i = k; i < n; ++i) norm = std::hypot(norm, at(i, k));
    if (!(norm > 1e-12 * std::sqrt(scale_sq))) {
      return absl::InvalidArgumentError("cubic fit: depths have fewer than 4 distinct values");
    }
    // v = a[k:, k] - alpha e_1 with alpha = -sign(a_kk) ||a[k:, k]||, so
    // that no cancellation happens in v_0.
    const double alpha = at(k, k) > 0 ? -norm : norm;
    at(k, k) -= alpha;
    double v_sq = 0;
    for (int i = k; i < n; ++i) v_sq += at(i, k) * at(i, k);
    // Apply H = I - 2 v v^T / (v^T v) to the remaining columns and to b.
    for (int j = k + 1; j < kCols; ++j) {
      double dot = 0;
      for (int i = k; i < n; ++i) dot += at(i, k) * at(i, j);
      const double f = 2 * dot / v_sq;
      for (int i = k; i < n; ++i) at(i, j) -= f * at(i, k);
    }
    double dot = 0;
    for (int i = k; i < n; ++i) dot += at(i, k) * b[i];
    const double f = 2 * dot / v_sq;
    for (int i = k; i < n; ++i) b[i] -= f * at(i, k);
    at(k, k) = alpha;  // R's diagonal; below it is no longer needed
  }

  CubicFit fit;
  // Back substitution R c = (Q^T y)[0:4].
  for (int k = kCols - 1; k >= 0; --k) {
    double s = b[k];
    for (int j = k + 1; j < kCols; ++j) s -= at(k, j) * fit.coefficients[j];
    fit.coefficients[k] = s / at(k, k);
  }
  // Residuals evaluated directly (Horner) rather than from (Q^T y)[4:], so
  // that v_loc is exactly what one gets by evaluating the reported p.
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += y[i];
  mean /= n;
  double rss = 0, tss = 0;
  const auto& c = fit.coefficients;
  for (int i = 0; i < n; ++i) {
    const double p = c[0] + x[i] * (c[1] + x[i] * (c[2] + x[i] * c[3]));
    rss += (y[i] - p) * (y[i] - p);
    tss += (y[i] - mean) * (y[i] - mean);
  }
  fit.v_loc = rss / n;
  fit.v_glob = tss / n;
  return fit;
}

}  // namespace layerflow::server::derived
