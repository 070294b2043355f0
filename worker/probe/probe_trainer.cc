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
#include "worker/model/torch_status.h"
#include "worker/probe/probe_stats.h"

namespace layerflow::worker {
namespace {

// torch.optim.Adam's defaults.
constexpr double kBeta1 = 0.9;
constexpr double kBeta2 = 0.999;
constexpr double kAdamEps = 1e-8;

// Working set of one batched group of runs (float32): per run its
// features about three times over (the gathered parts, the gather's
// temporary, the transposed train copy), W^T and b five times (parameters,
// gradient, two Adam moments, denominator) and the [C, n_train] logits
// twice. 1 GiB fits any worker; a 49-point, d = 1024, N = 220 job (147 MB
// a run) trains its 63 runs (3 seeds x 21 labelings) in 9 groups of 7.
constexpr int64_t kGroupBytes = int64_t{1} << 30;

absl::Status ValidateClassCount(int num_classes) {
  if (num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_classes: ", num_classes, "; need at least 2"));
  }
  return absl::OkStatus();
}

absl::Status ValidateFractions(double train, double val) {
  if (!(train > 0.0 && train < 1.0)) {  // NaN fails too
    return absl::InvalidArgumentError(
        absl::StrCat("train_fraction: ", train, " is outside (0, 1)"));
  }
  if (!(val > 0.0 && val < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("val_fraction: ", val, " is outside (0, 1)"));
  }
  if (!(train + val < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("val_fraction: train_fraction ", train,
                                                   " + val_fraction ", val, " = ", train + val,
                                                   " leaves no test set; the sum must be below 1"));
  }
  return absl::OkStatus();
}

// Labels in range and every class with 0 or >= 3 examples; the per-class
// example counts.
absl::StatusOr<std::vector<int64_t>> ValidateLabels(const std::vector<int32_t>& labels,
                                                    int num_classes) {
  std::vector<int64_t> counts(num_classes, 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels[", i, "]: ", labels[i], " is outside [0, ", num_classes, ")"));
    }
    ++counts[labels[i]];
  }
  for (int c = 0; c < num_classes; ++c) {
    if (counts[c] == 1 || counts[c] == 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "labels: class ", c, " has ", counts[c], counts[c] == 1 ? " example" : " examples",
          "; a stratified split needs at least 3 per class (train, validation, "
          "test) or none"));
    }
  }
  return counts;
}

absl::Status ValidateOptions(const ProbeOptions& o) {
  if (absl::Status s = ValidateClassCount(o.num_classes); !s.ok()) return s;
  if (absl::Status s = ValidateFractions(o.train_fraction, o.val_fraction); !s.ok()) {
    return s;
  }
  if (o.seeds.empty()) {
    return absl::InvalidArgumentError("seeds: empty; need at least one seed");
  }
  if (o.permutations < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("permutations: ", o.permutations, "; need at least 0"));
  }
  if (o.epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("epochs: ", o.epochs, "; need at least 1"));
  }
  if (!(std::isfinite(o.learning_rate) && o.learning_rate > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning_rate: ", o.learning_rate, "; need a finite value > 0"));
  }
  if (!(std::isfinite(o.weight_decay) && o.weight_decay >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight_decay: ", o.weight_decay, "; need a finite value >= 0"));
  }
  if (!(std::isfinite(o.std_floor) && o.std_floor > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("std_floor: ", o.std_floor, "; need a finite value > 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateFeatures(const at::Tensor& features, size_t num_labels) {
  if (!features.defined()) {
    return absl::InvalidArgumentError("features: undefined tensor; expected [N, P, d]");
  }
  if (features.dim() != 3) {
    return absl::InvalidArgumentError(absl::StrCat("features: expected [N, P, d], got ",
                                                   features.dim(), " dimensions [",
                                                   absl::StrJoin(features.sizes(), ", "), "]"));
  }
  if (features.size(0) < 1 || features.size(1) < 1 || features.size(2) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: expected [N, P, d] with N, P, d >= 1, got [",
                     absl::StrJoin(features.sizes(), ", "), "]"));
  }
  const c10::ScalarType t = features.scalar_type();
  if (t != at::kHalf && t != at::kBFloat16 && t != at::kFloat && t != at::kDouble) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: dtype ", c10::toString(t),
                     " not supported (float16, bfloat16, float32, float64)"));
  }
  if (static_cast<int64_t>(num_labels) != features.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat("labels: ", num_labels,
                                                   " entries for N = ", features.size(0),
                                                   " examples (features.size(0))"));
  }
  return absl::OkStatus();
}

// Throws c10::Error (callers convert). Inputs validated.
ProbeSplit SplitUnchecked(const std::vector<int32_t>& labels, int num_classes,
                          double train_fraction, double val_fraction, uint64_t seed) {
  std::vector<std::vector<int64_t>> members(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) {
    members[labels[i]].push_back(static_cast<int64_t>(i));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  // Round half up; cut points, not part sizes, so that the test share is
  // rounded like the other two (n_c - round((f_train + f_val) n_c)).
  auto cut = [](double f, int64_t n) {
    return static_cast<int64_t>(std::floor(f * static_cast<double>(n) + 0.5));
  };
  ProbeSplit split;
  for (int c = 0; c < num_classes; ++c) {
    const int64_t n = static_cast<int64_t>(members[c].size());
    if (n == 0) continue;
    const int64_t a = std::clamp<int64_t>(cut(train_fraction, n), 1, n - 2);
    const int64_t b = std::clamp<int64_t>(cut(train_fraction + val_fraction, n), a + 1, n - 1);
    at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    const int64_t* pp = perm.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      (k < a ? split.train : k < b ? split.val : split.test).push_back(members[c][pp[k]]);
    }
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.val.begin(), split.val.end());
  std::sort(split.test.begin(), split.test.end());
  return split;
}

// Labeling 0 is `labels`; labeling k = 1..K gives example i the label
// labels[pi_k(i)], pi_k = at::randperm(N) drawn in order k = 1..K from one
// CPU generator seeded with `seed`. A permutation keeps every class count,
// so each labeling's splits have the same part sizes as the observed one.
std::vector<std::vector<int32_t>> Labelings(const std::vector<int32_t>& labels, int permutations,
                                            uint64_t seed) {
  std::vector<std::vector<int32_t>> out(1 + permutations);
  out[0] = labels;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t n = static_cast<int64_t>(labels.size());
  for (int k = 1; k <= permutations; ++k) {
    at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    const int64_t* pp = perm.data_ptr<int64_t>();
    out[k].resize(n);
    for (int64_t i = 0; i < n; ++i) out[k][i] = labels[pp[i]];
  }
  return out;
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

// Argmax predictions [B, n] (CPU, int64) of the probes W^T [B, C, d],
// b [B, C, 1] on z-scored x [B, n, d]; ties to the smaller class.
at::Tensor Predict(const at::Tensor& x, const at::Tensor& wt, const at::Tensor& b) {
  return at::baddbmm(b, wt, x.transpose(1, 2)).argmax(1).to(at::kCPU, at::kLong).contiguous();
}

// One training run: the P probes of one seed's split of one labeling.
struct Run {
  const ProbeSplit* split;
  const std::vector<int32_t>* labels;
};

// Per-point results of one run.
struct RunResult {
  std::vector<double> train_acc, val_acc, test_acc, test_mae;  // [P]
  std::vector<int64_t> class_correct;                          // [P * C]
  std::vector<int64_t> class_total;                            // [C]
};

// pred: the run's [P, n] block of predictions on the examples idx.
std::vector<double> Accuracy(const int64_t* pred, const std::vector<int32_t>& y,
                             const std::vector<int64_t>& idx, int64_t P) {
  const int64_t n = static_cast<int64_t>(idx.size());
  std::vector<double> acc(P);
  for (int64_t p = 0; p < P; ++p) {
    int64_t correct = 0;
    for (int64_t k = 0; k < n; ++k) correct += pred[p * n + k] == y[idx[k]];
    acc[p] = static_cast<double>(correct) / static_cast<double>(n);
  }
  return acc;
}

RunResult Score(const int64_t* pred_train, const int64_t* pred_val, const int64_t* pred_test,
                const Run& run, int64_t P, int C) {
  const std::vector<int32_t>& y = *run.labels;
  const ProbeSplit& split = *run.split;
  RunResult r;
  r.train_acc = Accuracy(pred_train, y, split.train, P);
  r.val_acc = Accuracy(pred_val, y, split.val, P);
  r.test_acc = Accuracy(pred_test, y, split.test, P);
  r.test_mae.resize(P);
  r.class_correct.assign(P * C, 0);
  r.class_total.assign(C, 0);
  for (int64_t i : split.test) ++r.class_total[y[i]];
  const int64_t nte = static_cast<int64_t>(split.test.size());
  for (int64_t p = 0; p < P; ++p) {
    int64_t abs_err = 0;
    for (int64_t k = 0; k < nte; ++k) {
      const int64_t truth = y[split.test[k]];
      const int64_t yhat = pred_test[p * nte + k];
      r.class_correct[p * C + truth] += yhat == truth;
      abs_err += yhat > truth ? yhat - truth : truth - yhat;
    }
    r.test_mae[p] = static_cast<double>(abs_err) / static_cast<double>(nte);
  }
  return r;
}

// Trains the runs side by side: probe r * P + p is point p of run r, its
// own W, b and Adam state, so no run sees another's numbers. x: [P, N, d]
// float32 on the device. Every run's parts have the same sizes (the
// labelings share their class counts). Throws c10::Error.
std::vector<RunResult> TrainGroup(const at::Tensor& x, const std::vector<Run>& runs,
                                  const ProbeOptions& o, c10::Device device) {
  const int64_t R = static_cast<int64_t>(runs.size());
  const int64_t P = x.size(0);
  const int64_t d = x.size(2);
  const int C = o.num_classes;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const int64_t ntr = static_cast<int64_t>(runs[0].split->train.size());

  // [R * P, n, d]: the runs' examples of one part, run-major.
  auto gather = [&](std::vector<int64_t> ProbeSplit::*part) {
    std::vector<int64_t> idx;
    for (const Run& run : runs) {
      const std::vector<int64_t>& v = run.split->*part;
      TORCH_CHECK(v.size() == (runs[0].split->*part).size(),
                  "probe runs with different part sizes");
      idx.insert(idx.end(), v.begin(), v.end());
    }
    const int64_t n = static_cast<int64_t>(idx.size()) / R;
    const at::Tensor t = at::tensor(at::ArrayRef<int64_t>(idx), i64).to(device);
    return x.index_select(1, t).view({P, R, n, d}).transpose(0, 1).reshape({R * P, n, d});
  };
  at::Tensor xtr = gather(&ProbeSplit::train);
  at::Tensor xva = gather(&ProbeSplit::val);
  at::Tensor xte = gather(&ProbeSplit::test);
  // z-scoring with each run's train statistics (population std, floored).
  {
    const at::Tensor mean = xtr.mean({1}, /*keepdim=*/true);
    const at::Tensor stdev = at::std(xtr, at::IntArrayRef{1}, /*unbiased=*/false, /*keepdim=*/true)
                                 .clamp_min_(o.std_floor);
    xtr.sub_(mean).div_(stdev);
    xva.sub_(mean).div_(stdev);
    xte.sub_(mean).div_(stdev);
  }
  // Classes in the middle, examples last: logits [B, C, n] = W^T X^T + b,
  // so that the softmax runs over a strided middle dimension of C, which
  // LibTorch's CPU kernel vectorises over the examples (over a contiguous
  // last dimension of C = 11 it was 6x slower and dominated an epoch).
  const at::Tensor xtr_t = xtr.transpose(1, 2).contiguous();  // [B, d, ntr]
  std::vector<int64_t> ytr_host;
  ytr_host.reserve(R * ntr);
  for (const Run& run : runs) {
    for (int64_t i : run.split->train) ytr_host.push_back((*run.labels)[i]);
  }
  const at::Tensor ytr =
      at::tensor(at::ArrayRef<int64_t>(ytr_host), i64).to(device).view({R, 1, ntr});
  // [R, 1, C, ntr]: one run's targets, shared by its P probes.
  const at::Tensor onehot = at::zeros({R, C, ntr}, f32).scatter_(1, ytr, 1.0).unsqueeze(1);

  // Parameters, gradients and Adam state as flat buffers (one kernel per
  // Adam op); W^T and b are views. Adam is elementwise, so the layout of
  // W does not change its arithmetic.
  const int64_t B = R * P;
  const int64_t nw = B * d * C;
  const int64_t nb = B * C;
  at::Tensor theta = at::zeros({nw + nb}, f32);
  at::Tensor grad = at::zeros({nw + nb}, f32);
  at::Tensor exp_avg = at::zeros({nw + nb}, f32);
  at::Tensor exp_avg_sq = at::zeros({nw + nb}, f32);
  at::Tensor denom = at::empty({nw + nb}, f32);
  const at::Tensor wt = theta.narrow(0, 0, nw).view({B, C, d});
  const at::Tensor b = theta.narrow(0, nw, nb).view({B, C, 1});
  at::Tensor gwt = grad.narrow(0, 0, nw).view({B, C, d});
  at::Tensor gb = grad.narrow(0, nw, nb).view({B, C});

  for (int t = 1; t <= o.epochs; ++t) {
    // dL/dlogits = (softmax - onehot) / n_train, L the mean cross entropy.
    at::Tensor g = at::softmax(at::baddbmm(b, wt, xtr_t), 1);  // [B, C, ntr]
    g.view({R, P, C, ntr}).sub_(onehot);
    g.div_(static_cast<double>(ntr));
    at::bmm_out(gwt, g, xtr);
    at::sum_out(gb, g, {2});
    if (o.weight_decay != 0) grad.add_(theta, o.weight_decay);
    exp_avg.lerp_(grad, 1.0 - kBeta1);
    exp_avg_sq.mul_(kBeta2).addcmul_(grad, grad, 1.0 - kBeta2);
    const double bias_correction1 = 1.0 - std::pow(kBeta1, t);
    const double bias_correction2 = 1.0 - std::pow(kBeta2, t);
    at::sqrt_out(denom, exp_avg_sq);
    denom.div_(std::sqrt(bias_correction2)).add_(kAdamEps);
    theta.addcdiv_(exp_avg, denom, -o.learning_rate / bias_correction1);
  }
  const at::Tensor ptr = Predict(xtr, wt, b);
  const at::Tensor pva = Predict(xva, wt, b);
  const at::Tensor pte = Predict(xte, wt, b);
  std::vector<RunResult> out;
  for (int64_t r = 0; r < R; ++r) {
    out.push_back(Score(ptr.data_ptr<int64_t>() + r * P * xtr.size(1),
                        pva.data_ptr<int64_t>() + r * P * xva.size(1),
                        pte.data_ptr<int64_t>() + r * P * xte.size(1), runs[r], P, C));
  }
  return out;
}

// Held-out choice of one run: the point with the highest validation
// accuracy (ties to the earliest), its test accuracy, and that minus the
// test accuracy of point P - 1.
struct Choice {
  int64_t point = 0;
  double test_accuracy = 0;
  double drop = 0;
};

Choice Choose(const RunResult& r) {
  Choice c;
  for (size_t p = 1; p < r.val_acc.size(); ++p) {
    if (r.val_acc[p] > r.val_acc[c.point]) c.point = static_cast<int64_t>(p);
  }
  c.test_accuracy = r.test_acc[c.point];
  c.drop = c.test_accuracy - r.test_acc.back();
  return c;
}

ProbeNull NullOf(std::vector<double> values, double observed) {
  ProbeNull null;
  null.mean = Mean(values);
  null.p95 = Quantile(values, 0.95);
  null.p_value = PermutationPValue(observed, values);
  null.values = std::move(values);
  return null;
}

// Throws c10::Error. Inputs validated.
absl::StatusOr<ProbeReport> TrainUnchecked(const at::Tensor& features,
                                           const std::vector<int32_t>& labels,
                                           const ProbeOptions& o, c10::Device device) {
  if (!at::isfinite(features).all().item<bool>()) {
    return absl::InvalidArgumentError("features: contains NaN or Inf");
  }
  const int64_t N = features.size(0);
  const int64_t P = features.size(1);
  const int64_t d = features.size(2);
  const int C = o.num_classes;
  const int64_t S = static_cast<int64_t>(o.seeds.size());
  const int K = o.permutations;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);

  // [P, N, d] float32 on the device: cast, move and transpose in one copy.
  at::Tensor x = at::empty({P, N, d}, f32);
  x.copy_(features.transpose(0, 1));

  // Runs (labeling k, seed s) at index k * S + s: the observed labels'
  // seeds first.
  const std::vector<std::vector<int32_t>> labelings = Labelings(labels, K, o.permutation_seed);
  std::vector<ProbeSplit> splits;
  splits.reserve((K + 1) * S);
  std::vector<Run> runs;
  for (int k = 0; k <= K; ++k) {
    for (int64_t s = 0; s < S; ++s) {
      splits.push_back(
          SplitUnchecked(labelings[k], C, o.train_fraction, o.val_fraction, o.seeds[s]));
    }
  }
  for (int k = 0; k <= K; ++k) {
    for (int64_t s = 0; s < S; ++s) runs.push_back({&splits[k * S + s], &labelings[k]});
  }

  ProbeReport report;
  report.num_classes = C;
  report.num_examples = N;
  report.num_points = P;
  report.dim = d;
  report.num_train = static_cast<int64_t>(splits[0].train.size());
  report.num_val = static_cast<int64_t>(splits[0].val.size());
  report.num_test = static_cast<int64_t>(splits[0].test.size());
  report.chance = 1.0 / C;
  report.permutations = K;

  const int64_t bytes_per_run = 4 * P * (3 * N * d + 6 * d * C + 2 * report.num_train * C);
  const size_t group = static_cast<size_t>(std::max<int64_t>(1, kGroupBytes / bytes_per_run));
  std::vector<RunResult> results;
  for (size_t first = 0; first < runs.size(); first += group) {
    const std::vector<Run> part(runs.begin() + first,
                                runs.begin() + std::min(runs.size(), first + group));
    for (RunResult& r : TrainGroup(x, part, o, device)) results.push_back(std::move(r));
  }

  report.points.resize(P);
  for (int64_t p = 0; p < P; ++p) {
    ProbePointReport& pr = report.points[p];
    std::vector<double> te(S), va(S), tr(S), mae(S);
    for (int64_t s = 0; s < S; ++s) {
      te[s] = results[s].test_acc[p];
      va[s] = results[s].val_acc[p];
      tr[s] = results[s].train_acc[p];
      mae[s] = results[s].test_mae[p];
    }
    pr.test_accuracy_mean = Mean(te);
    pr.test_accuracy_std = SampleStd(te);
    const Interval wilson = WilsonInterval(pr.test_accuracy_mean, report.num_test);
    pr.test_accuracy_lo = wilson.lo;
    pr.test_accuracy_hi = wilson.hi;
    pr.val_accuracy_mean = Mean(va);
    pr.val_accuracy_std = SampleStd(va);
    pr.train_accuracy_mean = Mean(tr);
    pr.train_accuracy_std = SampleStd(tr);
    pr.test_mae_mean = Mean(mae);
    pr.test_accuracy_per_seed = te;
    pr.val_accuracy_per_seed = va;
    pr.per_class_test_accuracy.assign(C, -1.0);
    for (int c = 0; c < C; ++c) {
      double sum = 0;
      int seen = 0;
      for (int64_t s = 0; s < S; ++s) {
        const int64_t total = results[s].class_total[c];
        if (total == 0) continue;
        sum +=
            static_cast<double>(results[s].class_correct[p * C + c]) / static_cast<double>(total);
        ++seen;
      }
      if (seen > 0) pr.per_class_test_accuracy[c] = sum / seen;
    }
  }
  for (int64_t s = 0; s < S; ++s) {
    const Choice c = Choose(results[s]);
    report.best_point_per_seed.push_back(c.point);
    report.best_test_accuracy_per_seed.push_back(c.test_accuracy);
    report.drop_per_seed.push_back(c.drop);
    ++report.points[c.point].times_chosen;
  }
  report.best_point = 0;
  for (int64_t p = 1; p < P; ++p) {
    if (report.points[p].times_chosen > report.points[report.best_point].times_chosen) {
      report.best_point = p;
    }
  }
  report.best_test_accuracy = Mean(report.best_test_accuracy_per_seed);
  report.best_test_accuracy_std = SampleStd(report.best_test_accuracy_per_seed);
  report.final_test_accuracy = report.points[P - 1].test_accuracy_mean;
  report.drop = Mean(report.drop_per_seed);
  report.drop_std = SampleStd(report.drop_per_seed);

  if (K > 0) {
    // The statistic of labeling k is computed exactly as the observed one:
    // the mean over seeds of the per-seed held-out choice.
    std::vector<double> best(K), drop(K);
    for (int k = 1; k <= K; ++k) {
      std::vector<double> b(S), dr(S);
      for (int64_t s = 0; s < S; ++s) {
        const Choice c = Choose(results[k * S + s]);
        b[s] = c.test_accuracy;
        dr[s] = c.drop;
      }
      best[k - 1] = Mean(b);
      drop[k - 1] = Mean(dr);
    }
    report.best_null = NullOf(std::move(best), report.best_test_accuracy);
    report.drop_null = NullOf(std::move(drop), report.drop);
  }
  return report;
}

// Inference mode inside the worker's one exception edge (torch_status.h).
template <typename Fn>
auto Guarded(const char* what, Fn fn) -> decltype(fn()) {
  return GuardTorch(what, [&] {
    c10::InferenceMode guard;
    return fn();
  });
}

}  // namespace

absl::StatusOr<ProbeSplit> StratifiedSplit(const std::vector<int32_t>& labels, int num_classes,
                                           double train_fraction, double val_fraction,
                                           uint64_t seed) {
  if (absl::Status s = ValidateClassCount(num_classes); !s.ok()) return s;
  if (absl::Status s = ValidateFractions(train_fraction, val_fraction); !s.ok()) return s;
  if (auto counts = ValidateLabels(labels, num_classes); !counts.ok()) {
    return counts.status();
  }
  return Guarded("probe split", [&]() -> absl::StatusOr<ProbeSplit> {
    return SplitUnchecked(labels, num_classes, train_fraction, val_fraction, seed);
  });
}

absl::StatusOr<ProbeReport> TrainProbes(const at::Tensor& features,
                                        const std::vector<int32_t>& labels,
                                        const ProbeOptions& options, c10::Device device) {
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
