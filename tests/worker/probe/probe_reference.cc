#include "tests/worker/probe/probe_reference.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

namespace layerflow::worker::testing {
namespace {

// Softmax probabilities [n, C] of the model on x, and the mean cross entropy
// plus the L2 term.
double Objective(const Matrix& x, const std::vector<int>& y, int C,
                 const std::vector<double>& theta, double l2, std::vector<double>* probs) {
  const int64_t n = x.rows;
  const int64_t d = x.cols;
  probs->assign(n * C, 0.0);
  double loss = 0;
  std::vector<double> z(C);
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < C; ++c) {
      double s = theta[d * C + c];  // bias row
      for (int64_t j = 0; j < d; ++j) s += x.at(i, j) * theta[j * C + c];
      z[c] = s;
    }
    const double zmax = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (int c = 0; c < C; ++c) sum += std::exp(z[c] - zmax);
    const double lse = zmax + std::log(sum);
    loss += lse - z[y[i]];
    for (int c = 0; c < C; ++c) (*probs)[i * C + c] = std::exp(z[c] - lse);
  }
  double sq = 0;
  for (double t : theta) sq += t * t;
  return loss / static_cast<double>(n) + 0.5 * l2 * sq;
}

// Solves A u = r for symmetric positive definite A [K, K] (Cholesky).
std::vector<double> SolveSpd(std::vector<double> a, std::vector<double> r, int64_t K) {
  for (int64_t j = 0; j < K; ++j) {
    double s = a[j * K + j];
    for (int64_t k = 0; k < j; ++k) s -= a[j * K + k] * a[j * K + k];
    const double ljj = std::sqrt(s);
    a[j * K + j] = ljj;
    for (int64_t i = j + 1; i < K; ++i) {
      double t = a[i * K + j];
      for (int64_t k = 0; k < j; ++k) t -= a[i * K + k] * a[j * K + k];
      a[i * K + j] = t / ljj;
    }
  }
  for (int64_t i = 0; i < K; ++i) {  // L u' = r
    for (int64_t k = 0; k < i; ++k) r[i] -= a[i * K + k] * r[k];
    r[i] /= a[i * K + i];
  }
  for (int64_t i = K - 1; i >= 0; --i) {  // L^T u = u'
    for (int64_t k = i + 1; k < K; ++k) r[i] -= a[k * K + i] * r[k];
    r[i] /= a[i * K + i];
  }
  return r;
}

}  // namespace

void ZScoreWithTrainStats(Matrix& train, Matrix& test, double std_floor) {
  const int64_t n = train.rows;
  for (int64_t j = 0; j < train.cols; ++j) {
    double mean = 0;
    for (int64_t i = 0; i < n; ++i) mean += train.at(i, j);
    mean /= static_cast<double>(n);
    double var = 0;
    for (int64_t i = 0; i < n; ++i) {
      var += (train.at(i, j) - mean) * (train.at(i, j) - mean);
    }
    const double sd = std::max(std::sqrt(var / static_cast<double>(n)), std_floor);
    for (int64_t i = 0; i < n; ++i) train.at(i, j) = (train.at(i, j) - mean) / sd;
    for (int64_t i = 0; i < test.rows; ++i) test.at(i, j) = (test.at(i, j) - mean) / sd;
  }
}

LogisticModel FitLogistic(const Matrix& x, const std::vector<int>& y, int num_classes, double l2) {
  const int64_t n = x.rows;
  const int64_t d = x.cols;
  const int C = num_classes;
  const int64_t K = (d + 1) * C;  // theta[j * C + c], j = d the bias
  std::vector<double> theta(K, 0.0);
  std::vector<double> probs;
  double f = Objective(x, y, C, theta, l2, &probs);
  LogisticModel model;
  std::vector<double> xt(d + 1);
  for (int it = 0; it < 200; ++it) {
    std::vector<double> g(K, 0.0);
    std::vector<double> h(K * K, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < d; ++j) xt[j] = x.at(i, j);
      xt[d] = 1.0;
      const double* p = &probs[i * C];
      for (int64_t j = 0; j <= d; ++j) {
        for (int c = 0; c < C; ++c) {
          g[j * C + c] += xt[j] * (p[c] - (y[i] == c ? 1.0 : 0.0));
        }
      }
      for (int64_t j = 0; j <= d; ++j) {
        for (int c = 0; c < C; ++c) {
          for (int64_t k = 0; k <= d; ++k) {
            for (int c2 = 0; c2 < C; ++c2) {
              const double pc = p[c] * ((c == c2 ? 1.0 : 0.0) - p[c2]);
              h[(j * C + c) * K + k * C + c2] += xt[j] * xt[k] * pc;
            }
          }
        }
      }
    }
    double gmax = 0;
    for (int64_t k = 0; k < K; ++k) {
      g[k] = g[k] / static_cast<double>(n) + l2 * theta[k];
      gmax = std::max(gmax, std::fabs(g[k]));
      for (int64_t k2 = 0; k2 < K; ++k2) h[k * K + k2] /= static_cast<double>(n);
      h[k * K + k] += l2;
    }
    model.grad_norm = gmax;
    model.iterations = it;
    if (gmax < 1e-10) break;
    const std::vector<double> step = SolveSpd(h, g, K);
    double slope = 0;
    for (int64_t k = 0; k < K; ++k) slope += g[k] * step[k];
    double s = 1.0;
    std::vector<double> trial(K);
    std::vector<double> trial_probs;
    for (int back = 0; back < 60; ++back, s *= 0.5) {
      for (int64_t k = 0; k < K; ++k) trial[k] = theta[k] - s * step[k];
      const double ft = Objective(x, y, C, trial, l2, &trial_probs);
      // Near the optimum the Armijo decrease (~1e-4 |g|^2 / l2) is below
      // float64's resolution of f, so a full Newton step whose objective is
      // equal up to rounding is taken: rejecting it left the gradient at
      // ~6e-10 after 200 iterations on data drawn by another CPU's
      // vectorised randn (ATEN_CPU_CAPABILITY=default). "Up to rounding" is
      // that of f, a mean of n terms: n * DBL_EPSILON * |f| (8 eps left the
      // gradient at ~1e-9 on a 1200-example training set).
      const bool within_rounding =
          s == 1.0 && ft - f <= static_cast<double>(n) * DBL_EPSILON * std::fabs(f);
      if (ft <= f - 1e-4 * s * slope || within_rounding || back == 59) {
        theta = trial;
        probs = trial_probs;
        f = ft;
        break;
      }
    }
  }
  model.dim = d;
  model.num_classes = C;
  model.w.assign(theta.begin(), theta.begin() + d * C);
  model.b.assign(theta.begin() + d * C, theta.end());
  return model;
}

std::vector<int> PredictLogistic(const LogisticModel& model, const Matrix& x) {
  std::vector<int> out(x.rows);
  const int C = model.num_classes;
  for (int64_t i = 0; i < x.rows; ++i) {
    int best = 0;
    double best_z = 0;
    for (int c = 0; c < C; ++c) {
      double z = model.b[c];
      for (int64_t j = 0; j < model.dim; ++j) z += x.at(i, j) * model.w[j * C + c];
      if (c == 0 || z > best_z) {
        best = c;
        best_z = z;
      }
    }
    out[i] = best;
  }
  return out;
}

}  // namespace layerflow::worker::testing
