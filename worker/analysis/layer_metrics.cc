#include "worker/analysis/layer_metrics.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace layerflow::worker {
namespace {

// Smallest norm product that counts as nonzero; below it cos is taken as 0.
constexpr double kTinyNorm = 1e-300;
// A self-HSIC at most this fraction of ||K||_F^2 counts as 0 (a constant
// representation up to rounding: its centred Gram is ~1e-16 of K's entries).
constexpr double kTinyHsic = 1e-20;

constexpr LayerMetric kAllMetrics[kNumLayerMetrics] = {
    LayerMetric::kAdjacentCos,     LayerMetric::kIntertokenCos,
    LayerMetric::kIntertokenCosNoFirst, LayerMetric::kTokenDispersion,
    LayerMetric::kStepEnergy,      LayerMetric::kPathEnergy,
    LayerMetric::kCkaUnbiased,     LayerMetric::kCkaBiased};

std::string KnownNames() {
  std::string out;
  for (LayerMetric m : kAllMetrics) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", LayerMetricName(m));
  }
  return out;
}

// Gram statistics of a batch of states h [B, n, d] (float64).
CkaGramStats MakeGramStats(const at::Tensor& h, bool biased, bool unbiased) {
  CkaGramStats g;
  at::Tensor k = at::matmul(h, h.transpose(1, 2));  // [B, n, n]
  g.gram_energy = k.square().sum({1, 2});
  if (biased) {
    g.centred = k - k.mean(2, /*keepdim=*/true) - k.mean(1, /*keepdim=*/true) +
                k.mean({1, 2}, /*keepdim=*/true);
    g.centred_self = g.centred.square().sum({1, 2});
  }
  if (unbiased) {
    k.diagonal(0, 1, 2).zero_();  // k is ours: zero its diagonal in place
    g.zeroed = k;
    g.row_sums = k.sum(2);
    g.total = g.row_sums.sum(1);
  }
  return g;
}

// Unbiased HSIC (Song et al. 2012) of two points' Grams, [B].
at::Tensor UnbiasedHsic(const CkaGramStats& a, const CkaGramStats& b,
                        int64_t n) {
  const double nd = static_cast<double>(n);
  return ((a.zeroed * b.zeroed).sum({1, 2}) +
          a.total * b.total / ((nd - 1) * (nd - 2)) -
          (a.row_sums * b.row_sums).sum(1) * (2.0 / (nd - 2))) /
         (nd * (nd - 3));
}

void FinishGramStats(CkaGramStats& g, int64_t n) {
  if (g.zeroed.defined()) g.unbiased_self = UnbiasedHsic(g, g, n);
}

// HSIC(a, b) / sqrt(HSIC(a, a) HSIC(b, b)); 0 where a self-HSIC is not
// > kTinyHsic ||K||_F^2.
at::Tensor Normalise(const at::Tensor& cross, const at::Tensor& self_a,
                     const at::Tensor& self_b, const CkaGramStats& a,
                     const CkaGramStats& b) {
  const at::Tensor ok = (self_a > kTinyHsic * a.gram_energy)
                            .logical_and(self_b > kTinyHsic * b.gram_energy)
                            .logical_and(self_a > 0)
                            .logical_and(self_b > 0);
  const at::Tensor den = (self_a * self_b).clamp_min(kTinyNorm).sqrt();
  return at::where(ok, cross / den, at::zeros_like(cross));
}

at::Tensor BiasedCka(const CkaGramStats& a, const CkaGramStats& b) {
  return Normalise((a.centred * b.centred).sum({1, 2}), a.centred_self,
                   b.centred_self, a, b);
}

at::Tensor UnbiasedCka(const CkaGramStats& a, const CkaGramStats& b,
                       int64_t n) {
  return Normalise(UnbiasedHsic(a, b, n), a.unbiased_self, b.unbiased_self, a,
                   b);
}

// Mean cos over unordered pairs of the tokens of unit [B, m, d], [B].
at::Tensor MeanPairCos(const at::Tensor& unit) {
  const int64_t m = unit.size(1);
  const at::Tensor total = unit.sum(1);  // [B, d]
  return (total.square().sum(-1) - static_cast<double>(m)) /
         static_cast<double>(m * (m - 1));
}

}  // namespace

const char* LayerMetricName(LayerMetric metric) {
  switch (metric) {
    case LayerMetric::kAdjacentCos:
      return "adjacent_cos";
    case LayerMetric::kIntertokenCos:
      return "intertoken_cos";
    case LayerMetric::kIntertokenCosNoFirst:
      return "intertoken_cos_nofirst";
    case LayerMetric::kTokenDispersion:
      return "token_dispersion";
    case LayerMetric::kStepEnergy:
      return "step_energy";
    case LayerMetric::kPathEnergy:
      return "path_energy";
    case LayerMetric::kCkaUnbiased:
      return "cka_unbiased";
    case LayerMetric::kCkaBiased:
      return "cka_biased";
  }
  return "?";
}

absl::StatusOr<std::vector<LayerMetric>> ParseLayerMetrics(
    const std::vector<std::string>& names) {
  if (names.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("analyses: empty; known: ", KnownNames()));
  }
  std::vector<LayerMetric> metrics;
  for (const std::string& name : names) {
    const LayerMetric* found =
        std::find_if(std::begin(kAllMetrics), std::end(kAllMetrics),
                     [&name](LayerMetric m) { return name == LayerMetricName(m); });
    if (found == std::end(kAllMetrics)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "analyses: unknown '", name, "'; known: ", KnownNames()));
    }
    if (std::find(metrics.begin(), metrics.end(), *found) != metrics.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("analyses: '", name, "' listed twice"));
    }
    metrics.push_back(*found);
  }
  return metrics;
}

double LinearCka(const at::Tensor& x, const at::Tensor& y,
                 CkaEstimator estimator) {
  c10::InferenceMode guard;
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0),
              "LinearCka: need X [n, d1] and Y [n, d2], got ", x.sizes(),
              " and ", y.sizes());
  const int64_t n = x.size(0);
  const bool biased = estimator == CkaEstimator::kBiased;
  TORCH_CHECK(n >= (biased ? 2 : 4), "LinearCka: ", n, " rows are too few");
  CkaGramStats a = MakeGramStats(x.to(at::kDouble).unsqueeze(0), biased, !biased);
  CkaGramStats b = MakeGramStats(y.to(at::kDouble).unsqueeze(0), biased, !biased);
  FinishGramStats(a, n);
  FinishGramStats(b, n);
  return (biased ? BiasedCka(a, b) : UnbiasedCka(a, b, n)).item<double>();
}

LayerMetricAccumulator::LayerMetricAccumulator(std::vector<LayerMetric> metrics,
                                               int64_t num_layers,
                                               c10::Device device)
    : metrics_(std::move(metrics)), num_layers_(num_layers) {
  row_.fill(-1);
  for (LayerMetric metric : metrics_) {
    const std::string name = LayerMetricName(metric);
    row_[static_cast<int>(metric)] = static_cast<int64_t>(keys_.size());
    int64_t layers = 0;
    switch (metric) {
      case LayerMetric::kAdjacentCos:
      case LayerMetric::kStepEnergy:
      case LayerMetric::kCkaUnbiased:
      case LayerMetric::kCkaBiased:
        layers = num_layers_;  // pairs (l, l + 1), l = 0..L-1
        break;
      case LayerMetric::kIntertokenCos:
      case LayerMetric::kIntertokenCosNoFirst:
      case LayerMetric::kTokenDispersion:
        layers = num_layers_ + 2;  // points 0..L and final (L + 1)
        break;
      case LayerMetric::kPathEnergy:
        layers = 1;  // one scalar per prompt, at layer 0
        break;
    }
    for (int64_t l = 0; l < layers; ++l) {
      keys_.push_back({name, static_cast<int32_t>(l)});
    }
  }
  c10::InferenceMode guard;
  sums_ = at::zeros({static_cast<int64_t>(keys_.size()), 3},
                    at::TensorOptions().dtype(at::kDouble).device(device));
}

void LayerMetricAccumulator::Add(int64_t row, const at::Tensor& per_prompt) {
  // per_prompt: float64 [B]. Stays on the device (no host sync).
  at::Tensor r = sums_[row];
  r[kSum].add_(per_prompt.sum());
  r[kSumSq].add_(per_prompt.square().sum());
  r[kCount].add_(static_cast<double>(per_prompt.size(0)));
}

void LayerMetricAccumulator::Observe(int64_t point, const at::Tensor& hidden) {
  c10::InferenceMode guard;
  TORCH_CHECK(point == next_point_, "analysis: expected representation point ",
              next_point_, ", got ", point);
  TORCH_CHECK(hidden.dim() == 3, "analysis: hidden must be [batch, seq, d], got ",
              hidden.sizes());
  next_point_ = point + 1;
  const int64_t n = hidden.size(1);
  // Upcast: statistics in float64 whatever the model's dtype.
  at::Tensor h = hidden.to(at::kDouble);
  at::Tensor norm = at::linalg_vector_norm(h, 2, {-1});  // [B, n]

  // One-point metrics: points 0..L+1.
  const bool want_all = Has(LayerMetric::kIntertokenCos) && n >= 2;
  const bool want_nofirst = Has(LayerMetric::kIntertokenCosNoFirst) && n >= 3;
  if (want_all || want_nofirst) {
    at::Tensor unit = h / norm.clamp_min(kTinyNorm).unsqueeze(-1);
    if (want_all) Add(RowOf(LayerMetric::kIntertokenCos) + point, MeanPairCos(unit));
    if (want_nofirst) {
      Add(RowOf(LayerMetric::kIntertokenCosNoFirst) + point,
          MeanPairCos(unit.slice(1, 1)));
    }
  }
  if (Has(LayerMetric::kTokenDispersion) && n >= 1) {
    const at::Tensor spread =
        (h - h.mean(1, /*keepdim=*/true)).square().sum(-1).mean(-1);  // [B]
    const at::Tensor energy = norm.square().mean(-1);                  // [B]
    Add(RowOf(LayerMetric::kTokenDispersion) + point,
        at::where(energy > 0, spread / energy.clamp_min(kTinyNorm),
                  at::zeros_like(spread)));
  }

  // Pair / step metrics: residual points 0..L only.
  if (point > num_layers_) return;
  const bool want_states = Has(LayerMetric::kAdjacentCos) ||
                           Has(LayerMetric::kStepEnergy) ||
                           Has(LayerMetric::kPathEnergy);
  const bool want_biased = Has(LayerMetric::kCkaBiased) && n >= 2;
  const bool want_unbiased = Has(LayerMetric::kCkaUnbiased) && n >= 4;
  if (!want_states && !Has(LayerMetric::kCkaBiased) &&
      !Has(LayerMetric::kCkaUnbiased)) {
    return;
  }
  if (point >= 1) {
    TORCH_CHECK(previous_sizes_ == h.sizes().vec(),
                "analysis: layer shapes differ: ", c10::IntArrayRef(previous_sizes_), " vs ",
                h.sizes());
  }
  CkaGramStats gram;
  if (want_biased || want_unbiased) {
    gram = MakeGramStats(h, want_biased, want_unbiased);
    FinishGramStats(gram, n);
  }
  if (point == 0 && Has(LayerMetric::kPathEnergy)) {
    path_ = at::zeros({h.size(0)}, h.options());
  }
  if (point >= 1) {
    const int64_t l = point - 1;  // the pair (l, l + 1)
    if (Has(LayerMetric::kAdjacentCos)) {
      at::Tensor cos = (previous_ * h).sum(-1) /
                       (previous_norm_ * norm).clamp_min(kTinyNorm);
      Add(RowOf(LayerMetric::kAdjacentCos) + l, cos.mean(-1));
    }
    if (Has(LayerMetric::kStepEnergy) || Has(LayerMetric::kPathEnergy)) {
      const at::Tensor step = (h - previous_).square().sum(-1);  // [B, n]
      const at::Tensor base = previous_norm_.square();
      const at::Tensor energy =
          at::where(base > 0, step / base.clamp_min(kTinyNorm),
                    at::zeros_like(step))
              .mean(-1);  // [B]
      if (Has(LayerMetric::kStepEnergy)) {
        Add(RowOf(LayerMetric::kStepEnergy) + l, energy);
      }
      if (Has(LayerMetric::kPathEnergy)) path_.add_(energy);
    }
    if (want_biased) {
      Add(RowOf(LayerMetric::kCkaBiased) + l, BiasedCka(previous_gram_, gram));
    }
    if (want_unbiased) {
      Add(RowOf(LayerMetric::kCkaUnbiased) + l,
          UnbiasedCka(previous_gram_, gram, n));
    }
  }
  if (point == num_layers_ && Has(LayerMetric::kPathEnergy)) {
    Add(RowOf(LayerMetric::kPathEnergy), path_);
  }
  // Held for the next point; the final-norm output is not paired.
  if (point < num_layers_) {
    previous_sizes_ = h.sizes().vec();
    if (want_states) {
      previous_ = h;
      previous_norm_ = norm;
    }
    previous_gram_ = std::move(gram);
  } else {
    previous_ = at::Tensor();
    previous_norm_ = at::Tensor();
    previous_gram_ = CkaGramStats();
    path_ = at::Tensor();
  }
}

void LayerMetricAccumulator::EndBatch() {
  TORCH_CHECK(next_point_ == num_layers_ + 2,
              "analysis: batch ended after point ", next_point_ - 1,
              ", expected ", num_layers_ + 1);
  next_point_ = 0;
  previous_ = at::Tensor();
  previous_norm_ = at::Tensor();
  previous_gram_ = CkaGramStats();
  previous_sizes_.clear();
  path_ = at::Tensor();
}

}  // namespace layerflow::worker
