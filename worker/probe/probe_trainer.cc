#include "worker/probe/probe_trainer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace layerflow::worker {
namespace {

// torch.optim.Adam's defaults.
constexpr double kBeta1 = 0.9;
constexpr double kBeta2 = 0.999;
constexpr double kAdamEps = 1e-8;

absl::Status ValidateClassCount(int num_classes) {
  if (num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes: ", num_classes, "; need at least 2"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTrainFraction(double f) {
  if (!(f > 0.0 && f < 1.0)) {  // NaN fails too
    return absl::InvalidArgumentError(
        absl::StrCat("train_fraction: ", f, " is outside (0, 1)"));
  }
  return absl::OkStatus();
}

// Labels in range and every class with 0 or >= 2 examples; the per-class
// example counts.
absl::StatusOr<std::vector<int64_t>> ValidateLabels(
    const std::vector<int32_t>& labels, int num_classes) {
  std::vector<int64_t> counts(num_classes, 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "labels[", i, "]: ", labels[i], " is outside [0, ", num_classes, ")"));
    }
    ++counts[labels[i]];
  }
  for (int c = 0; c < num_classes; ++c) {
    if (counts[c] == 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "labels: class ", c,
          " has 1 example; a stratified split needs at least 2 per class "
          "(one for train, one for test) or none"));
    }
  }
  return counts;
}

absl::Status ValidateOptions(const ProbeOptions& o) {
  if (absl::Status s = ValidateClassCount(o.num_classes); !s.ok()) return s;
  if (absl::Status s = ValidateTrainFraction(o.train_fraction); !s.ok()) return s;
  if (o.seeds.empty()) {
    return absl::InvalidArgumentError("seeds: empty; need at least one seed");
  }
  if (o.epochs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("epochs: ", o.epochs, "; need at least 1"));
  }
  if (!(std::isfinite(o.learning_rate) && o.learning_rate > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learning_rate: ", o.learning_rate, "; need a finite value > 0"));
  }
  if (!(std::isfinite(o.weight_decay) && o.weight_decay >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight_decay: ", o.weight_decay, "; need a finite value >= 0"));
  }
  if (!(std::isfinite(o.std_floor) && o.std_floor > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "std_floor: ", o.std_floor, "; need a finite value > 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateFeatures(const at::Tensor& features, size_t num_labels) {
  if (!features.defined()) {
    return absl::InvalidArgumentError(
        "features: undefined tensor; expected [N, P, d]");
  }
  if (features.dim() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: expected [N, P, d], got ", features.dim(),
                     " dimensions [", absl::StrJoin(features.sizes(), ", "), "]"));
  }
  if (features.size(0) < 1 || features.size(1) < 1 || features.size(2) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: expected [N, P, d] with N, P, d >= 1, got [",
                     absl::StrJoin(features.sizes(), ", "), "]"));
  }
  const c10::ScalarType t = features.scalar_type();
  if (t != at::kHalf && t != at::kBFloat16 && t != at::kFloat &&
      t != at::kDouble) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: dtype ", c10::toString(t),
                     " not supported (float16, bfloat16, float32, float64)"));
  }
  if (static_cast<int64_t>(num_labels) != features.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels: ", num_labels, " entries for N = ",
                     features.size(0), " examples (features.size(0))"));
  }
  return absl::OkStatus();
}

// Throws c10::Error (callers convert).
ProbeSplit SplitUnchecked(const std::vector<int32_t>& labels, int num_classes,
                          double train_fraction, uint64_t seed) {
  std::vector<std::vector<int64_t>> members(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) {
    members[labels[i]].push_back(static_cast<int64_t>(i));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  ProbeSplit split;
  for (int c = 0; c < num_classes; ++c) {
    const int64_t n = static_cast<int64_t>(members[c].size());
    if (n == 0) continue;
    int64_t n_train =
        static_cast<int64_t>(std::floor(train_fraction * static_cast<double>(n) + 0.5));
    n_train = std::min(std::max<int64_t>(n_train, 1), n - 1);
    at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    const int64_t* pp = perm.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      (k < n_train ? split.train : split.test).push_back(members[c][pp[k]]);
    }
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.test.begin(), split.test.end());
  return split;
}

double Mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return s / static_cast<double>(x.size());
}

// Sample std (n - 1); 0 for a single value.
double SampleStd(const std::vector<double>& x) {
  if (x.size() < 2) return 0.0;
  const double m = Mean(x);
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(x.size() - 1));
}

// Argmax predictions [P, n] (CPU, int64) of the probes on z-scored x.
at::Tensor Predict(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::baddbmm(b, x, w).argmax(2).to(at::kCPU, at::kLong).contiguous();
}

// Per-point results of one seed.
struct SeedResult {
  std::vector<double> test_acc, train_acc, test_mae;  // [P]
  std::vector<int64_t> class_correct;                 // [P * C]
  std::vector<int64_t> class_total;                   // [C]
};

SeedResult Score(const at::Tensor& pred_train, const at::Tensor& pred_test,
                 const std::vector<int32_t>& labels, const ProbeSplit& split,
                 int64_t P, int C) {
  SeedResult r;
  r.test_acc.resize(P);
  r.train_acc.resize(P);
  r.test_mae.resize(P);
  r.class_correct.assign(P * C, 0);
  r.class_total.assign(C, 0);
  for (int64_t i : split.test) ++r.class_total[labels[i]];
  const int64_t ntr = static_cast<int64_t>(split.train.size());
  const int64_t nte = static_cast<int64_t>(split.test.size());
  const int64_t* ptr = pred_train.data_ptr<int64_t>();
  const int64_t* pte = pred_test.data_ptr<int64_t>();
  for (int64_t p = 0; p < P; ++p) {
    int64_t correct = 0;
    for (int64_t k = 0; k < ntr; ++k) {
      correct += ptr[p * ntr + k] == labels[split.train[k]];
    }
    r.train_acc[p] = static_cast<double>(correct) / static_cast<double>(ntr);
    correct = 0;
    int64_t abs_err = 0;
    for (int64_t k = 0; k < nte; ++k) {
      const int64_t y = labels[split.test[k]];
      const int64_t yhat = pte[p * nte + k];
      correct += yhat == y;
      r.class_correct[p * C + y] += yhat == y;
      abs_err += yhat > y ? yhat - y : y - yhat;
    }
    r.test_acc[p] = static_cast<double>(correct) / static_cast<double>(nte);
    r.test_mae[p] = static_cast<double>(abs_err) / static_cast<double>(nte);
  }
  return r;
}

// Throws c10::Error. Inputs validated.
absl::StatusOr<ProbeReport> TrainUnchecked(const at::Tensor& features,
                                           const std::vector<int32_t>& labels,
                                           const ProbeOptions& o,
                                           c10::Device device) {
  if (!at::isfinite(features).all().item<bool>()) {
    return absl::InvalidArgumentError("features: contains NaN or Inf");
  }
  const int64_t N = features.size(0);
  const int64_t P = features.size(1);
  const int64_t d = features.size(2);
  const int C = o.num_classes;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto i64 = at::TensorOptions().dtype(at::kLong);

  // [P, N, d] float32 on the device: cast, move and transpose in one copy.
  at::Tensor x = at::empty({P, N, d}, f32);
  x.copy_(features.transpose(0, 1));

  ProbeReport report;
  report.num_classes = C;
  report.num_examples = N;
  report.num_points = P;
  report.dim = d;
  report.chance = 1.0 / C;
  std::vector<SeedResult> results;

  for (uint64_t seed : o.seeds) {
    const ProbeSplit split = SplitUnchecked(labels, C, o.train_fraction, seed);
    const int64_t ntr = static_cast<int64_t>(split.train.size());
    const int64_t nte = static_cast<int64_t>(split.test.size());
    report.num_train = ntr;
    report.num_test = nte;
    const at::Tensor train_idx =
        at::tensor(at::ArrayRef<int64_t>(split.train), i64).to(device);
    const at::Tensor test_idx =
        at::tensor(at::ArrayRef<int64_t>(split.test), i64).to(device);
    std::vector<int64_t> ytr_host(ntr);
    for (int64_t k = 0; k < ntr; ++k) ytr_host[k] = labels[split.train[k]];
    const at::Tensor ytr = at::tensor(at::ArrayRef<int64_t>(ytr_host), i64).to(device);

    // z-scoring with the train statistics (population std, floored).
    at::Tensor xtr = x.index_select(1, train_idx);  // [P, ntr, d]
    at::Tensor xte = x.index_select(1, test_idx);   // [P, nte, d]
    {
      const at::Tensor mean = xtr.mean({1}, /*keepdim=*/true);
      const at::Tensor stdev =
          at::std(xtr, at::IntArrayRef{1}, /*unbiased=*/false, /*keepdim=*/true)
              .clamp_min_(o.std_floor);
      xtr.sub_(mean).div_(stdev);
      xte.sub_(mean).div_(stdev);
    }
    const at::Tensor xtr_t = xtr.transpose(1, 2);  // [P, d, ntr]
    const at::Tensor onehot =
        at::zeros({ntr, C}, f32).scatter_(1, ytr.unsqueeze(1), 1.0);

    // Parameters, gradients and Adam state as flat buffers (one kernel per
    // Adam op); W and b are views.
    const int64_t nw = P * d * C;
    const int64_t nb = P * C;
    at::Tensor theta = at::zeros({nw + nb}, f32);
    at::Tensor grad = at::zeros({nw + nb}, f32);
    at::Tensor exp_avg = at::zeros({nw + nb}, f32);
    at::Tensor exp_avg_sq = at::zeros({nw + nb}, f32);
    at::Tensor denom = at::empty({nw + nb}, f32);
    const at::Tensor w = theta.narrow(0, 0, nw).view({P, d, C});
    const at::Tensor b = theta.narrow(0, nw, nb).view({P, 1, C});
    at::Tensor gw = grad.narrow(0, 0, nw).view({P, d, C});
    at::Tensor gb = grad.narrow(0, nw, nb).view({P, C});

    for (int t = 1; t <= o.epochs; ++t) {
      // dL/dlogits = (softmax - onehot) / n_train, L the mean cross entropy.
      at::Tensor g = at::softmax(at::baddbmm(b, xtr, w), 2);  // [P, ntr, C]
      g.sub_(onehot).div_(static_cast<double>(ntr));
      at::bmm_out(gw, xtr_t, g);
      at::sum_out(gb, g, {1});
      if (o.weight_decay != 0) grad.add_(theta, o.weight_decay);
      exp_avg.lerp_(grad, 1.0 - kBeta1);
      exp_avg_sq.mul_(kBeta2).addcmul_(grad, grad, 1.0 - kBeta2);
      const double bias_correction1 = 1.0 - std::pow(kBeta1, t);
      const double bias_correction2 = 1.0 - std::pow(kBeta2, t);
      at::sqrt_out(denom, exp_avg_sq);
      denom.div_(std::sqrt(bias_correction2)).add_(kAdamEps);
      theta.addcdiv_(exp_avg, denom, -o.learning_rate / bias_correction1);
    }
    results.push_back(Score(Predict(xtr, w, b), Predict(xte, w, b), labels,
                            split, P, C));
  }

  const size_t S = results.size();
  report.points.resize(P);
  for (int64_t p = 0; p < P; ++p) {
    ProbePointReport& pr = report.points[p];
    std::vector<double> te(S), tr(S), mae(S);
    for (size_t s = 0; s < S; ++s) {
      te[s] = results[s].test_acc[p];
      tr[s] = results[s].train_acc[p];
      mae[s] = results[s].test_mae[p];
    }
    pr.test_accuracy_mean = Mean(te);
    pr.test_accuracy_std = SampleStd(te);
    pr.train_accuracy_mean = Mean(tr);
    pr.train_accuracy_std = SampleStd(tr);
    pr.test_mae_mean = Mean(mae);
    pr.test_accuracy_per_seed = te;
    pr.per_class_test_accuracy.assign(C, -1.0);
    for (int c = 0; c < C; ++c) {
      double sum = 0;
      int seen = 0;
      for (size_t s = 0; s < S; ++s) {
        const int64_t total = results[s].class_total[c];
        if (total == 0) continue;
        sum += static_cast<double>(results[s].class_correct[p * C + c]) /
               static_cast<double>(total);
        ++seen;
      }
      if (seen > 0) pr.per_class_test_accuracy[c] = sum / seen;
    }
  }
  report.best_point = 0;
  for (int64_t p = 1; p < P; ++p) {
    if (report.points[p].test_accuracy_mean >
        report.points[report.best_point].test_accuracy_mean) {
      report.best_point = p;
    }
  }
  report.best_test_accuracy = report.points[report.best_point].test_accuracy_mean;
  report.final_test_accuracy = report.points[P - 1].test_accuracy_mean;
  report.drop = report.best_test_accuracy - report.final_test_accuracy;
  return report;
}

template <typename Fn>
auto Guarded(const char* what, Fn fn) -> decltype(fn()) {
  try {
    c10::InferenceMode guard;
    return fn();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace

absl::StatusOr<ProbeSplit> StratifiedSplit(const std::vector<int32_t>& labels,
                                           int num_classes,
                                           double train_fraction,
                                           uint64_t seed) {
  if (absl::Status s = ValidateClassCount(num_classes); !s.ok()) return s;
  if (absl::Status s = ValidateTrainFraction(train_fraction); !s.ok()) return s;
  if (auto counts = ValidateLabels(labels, num_classes); !counts.ok()) {
    return counts.status();
  }
  return Guarded("probe split", [&]() -> absl::StatusOr<ProbeSplit> {
    return SplitUnchecked(labels, num_classes, train_fraction, seed);
  });
}

absl::StatusOr<ProbeReport> TrainProbes(const at::Tensor& features,
                                        const std::vector<int32_t>& labels,
                                        const ProbeOptions& options,
                                        c10::Device device) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  if (absl::Status s = ValidateFeatures(features, labels.size()); !s.ok()) return s;
  if (auto counts = ValidateLabels(labels, options.num_classes); !counts.ok()) {
    return counts.status();
  }
  return Guarded("probe training", [&]() -> absl::StatusOr<ProbeReport> {
    return TrainUnchecked(features, labels, options, device);
  });
}

}  // namespace layerflow::worker
