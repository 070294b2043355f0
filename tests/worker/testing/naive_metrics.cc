#include "tests/worker/testing/naive_metrics.h"

#include <cmath>

namespace layerflow::worker::testing {
namespace {

using Matrix = std::vector<std::vector<double>>;

double Dot(const double* a, const double* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

Matrix Gram(const std::vector<double>& x, int64_t n, int64_t d) {
  Matrix k(n, std::vector<double>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) k[i][j] = Dot(&x[i * d], &x[j * d], d);
  }
  return k;
}

Matrix Multiply(const Matrix& a, const Matrix& b) {
  const size_t n = a.size();
  Matrix c(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < n; ++k) {
      for (size_t j = 0; j < n; ++j) c[i][j] += a[i][k] * b[k][j];
    }
  }
  return c;
}

double Sum(const Matrix& m) {
  double s = 0;
  for (const auto& row : m) {
    for (double v : row) s += v;
  }
  return s;
}

double Trace(const Matrix& m) {
  double s = 0;
  for (size_t i = 0; i < m.size(); ++i) s += m[i][i];
  return s;
}

double BiasedHsic(const Matrix& k, const Matrix& l) {
  const int64_t n = static_cast<int64_t>(k.size());
  Matrix h(n, std::vector<double>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) h[i][j] = (i == j ? 1.0 : 0.0) - 1.0 / n;
  }
  // tr(K H L H) / (n - 1)^2
  return Trace(Multiply(Multiply(k, h), Multiply(l, h))) / ((n - 1.0) * (n - 1.0));
}

double UnbiasedHsic(Matrix k, Matrix l) {
  const int64_t n = static_cast<int64_t>(k.size());
  for (int64_t i = 0; i < n; ++i) k[i][i] = l[i][i] = 0;
  const Matrix kl = Multiply(k, l);
  return (Trace(kl) + Sum(k) * Sum(l) / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * Sum(kl)) /
         (n * (n - 3.0));
}

}  // namespace

double NaiveIntertokenCosNoFirst(const std::vector<double>& h, int64_t n, int64_t d) {
  double total = 0;
  int64_t pairs = 0;
  for (int64_t i = 1; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      const double* a = &h[i * d];
      const double* b = &h[j * d];
      total += Dot(a, b, d) / std::sqrt(Dot(a, a, d) * Dot(b, b, d));
      ++pairs;
    }
  }
  return total / pairs;
}

double NaiveTokenDispersion(const std::vector<double>& h, int64_t n, int64_t d) {
  std::vector<double> mean(d, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < d; ++i) mean[i] += h[t * d + i] / n;
  }
  double spread = 0, energy = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < d; ++i) {
      spread += (h[t * d + i] - mean[i]) * (h[t * d + i] - mean[i]);
      energy += h[t * d + i] * h[t * d + i];
    }
  }
  return (spread / n) / (energy / n);
}

double NaiveStepEnergy(const std::vector<double>& a, const std::vector<double>& b, int64_t n,
                       int64_t d) {
  double total = 0;
  for (int64_t t = 0; t < n; ++t) {
    double step = 0;
    for (int64_t i = 0; i < d; ++i) {
      step += (b[t * d + i] - a[t * d + i]) * (b[t * d + i] - a[t * d + i]);
    }
    total += step / Dot(&a[t * d], &a[t * d], d);
  }
  return total / n;
}

std::vector<double> NaiveTokenCos(const std::vector<double>& a, const std::vector<double>& b,
                                  int64_t n, int64_t d) {
  std::vector<double> cos(n);
  for (int64_t t = 0; t < n; ++t) {
    const double* x = &a[t * d];
    const double* y = &b[t * d];
    cos[t] = Dot(x, y, d) / std::sqrt(Dot(x, x, d) * Dot(y, y, d));
  }
  return cos;
}

double NaiveLinearCka(const std::vector<double>& x, int64_t dx, const std::vector<double>& y,
                      int64_t dy, int64_t n, bool unbiased) {
  const Matrix k = Gram(x, n, dx), l = Gram(y, n, dy);
  auto hsic = [unbiased](const Matrix& a, const Matrix& b) {
    return unbiased ? UnbiasedHsic(a, b) : BiasedHsic(a, b);
  };
  return hsic(k, l) / std::sqrt(hsic(k, k) * hsic(l, l));
}

}  // namespace layerflow::worker::testing
