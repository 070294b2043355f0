// Least-squares cubic fit of a layer series and the variance metrics of
// METHODS.md ("Variance metrics"): v_loc = mean squared residual of the
// cubic, v_glob = population variance of the series. Float64 throughout.
#ifndef LAYERFLOW_SERVER_DERIVED_CUBIC_FIT_H_
#define LAYERFLOW_SERVER_DERIVED_CUBIC_FIT_H_

#include <array>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace layerflow::server::derived {

// Fewest points for which the variance metrics are defined: with 4 a cubic
// interpolates any series and v_loc is 0 by construction.
inline constexpr int kMinSeriesPoints = 5;

struct CubicFit {
  // p(x) = c[0] + c[1] x + c[2] x^2 + c[3] x^3 (constant first).
  std::array<double, 4> coefficients{};
  // (1/N) sum_i (y_i - p(x_i))^2.
  double v_loc = 0;
  // (1/N) sum_i (y_i - mean(y))^2.
  double v_glob = 0;
};

// Fits p by least squares through Householder QR of the N x 4 Vandermonde
// matrix [1, x, x^2, x^3] (no normal equations: their condition number is
// the square of the Vandermonde's). INVALID_ARGUMENT when x and y differ in
// size, when there are fewer than kMinSeriesPoints points, when a value is
// not finite, or when x has fewer than 4 distinct values (rank-deficient).
absl::StatusOr<CubicFit> FitCubic(absl::Span<const double> x, absl::Span<const double> y);

}  // namespace layerflow::server::derived

#endif  // LAYERFLOW_SERVER_DERIVED_CUBIC_FIT_H_
