#include "worker/analysis/layer_metrics.h"

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/TensorIndexing.h>
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
    LayerMetric::kCkaUnbiased,     LayerMetric::kCkaBiased,
    LayerMetric::kCkaAllUnbiased,  LayerMetric::kCkaAllBiased,
    LayerMetric::kAdjacentCosTokens};

std::string KnownNames() {
  std::string out;
  for (LayerMetric m : kAllMetrics) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", LayerMetricName(m));
  }
  return out;
}

// <a_b, b_b>_F per prompt of two [B, n, n] tensors, float64 [B]. Float64
// Grams: one BLAS dot product per prompt (no n x n temporary; faster than a
// batched [1, n^2] x [n^2, 1] product or a multiply-and-sum). Float32 Grams
// (half-precision states): one multiply-and-sum, twice as fast on an H200 as
// the per-prompt dots (bench/analysis_ops_micro2.py).
at::Tensor FrobeniusDot(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != at::kDouble) {
    return (a * b).sum({1, 2}).to(at::kDouble);
  }
  const int64_t batch = a.size(0);
  std::vector<at::Tensor> dots;
  dots.reserve(batch);
  for (int64_t i = 0; i < batch; ++i) {
    dots.push_back(at::dot(a[i].reshape({-1}), b[i].reshape({-1})));
  }
  return at::stack(dots);
}

// ---- Half-precision states (a bf16 or fp16 model) --------------------------
// Their values are exact in float32 and every product of two of them is too
// (at most 11 significant bits each), so the statistics come from half GEMMs
// with float32 accumulation and float32 outputs, reading the states once,
// instead of float64 copies of [B, n, d] (several passes over 4x the bytes)
// and float64 n x n Grams (10x slower than the half GEMM on an H200). The
// float64 path stays for float32 / float64 states. Accuracy against float64
// on the same values: tests/worker/analysis_suite_test.cc
// (HalfPrecisionStatesMatchFloat64), and on an H200 bench/RESULTS.md.
bool IsHalf(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// x [B, m, k] x y [B, k, p] of half tensors, float32 [B, m, p]: cuBLAS's
// half GEMM with a float32 output on CUDA; on the CPU, which has no such
// kernel, the float32 product of the exactly upcast operands.
at::Tensor HalfBmm(const at::Tensor& x, const at::Tensor& y) {
  if (x.is_cuda()) return at::bmm(x, y, at::kFloat);
  return at::bmm(x.to(at::kFloat), y.to(at::kFloat));
}

// out = m + x y (m float32 [B, m, p], may be `out` itself), the same way.
void HalfBaddbmmOut(at::Tensor& out, const at::Tensor& m, const at::Tensor& x,
                    const at::Tensor& y) {
  if (x.is_cuda()) {
    at::baddbmm_out(out, m, x, y, at::kFloat);
  } else {
    at::baddbmm_out(out, m, x.to(at::kFloat), y.to(at::kFloat));
  }
}

// A float32 w [B, m, k] as three half parts [B, 3m, k] (consecutive m-row
// blocks): w = scale^-1 sum_i part_i 2^(-s i), s = the half type's
// significant bits, to float32 precision. Each part is the rounding error of
// the last, scaled back up by 2^s, so all three stay in the half range; fp16
// (max 65504, normal from 6e-5) also gets a power-of-two scale per prompt
// that puts max |w| in [1, 2), bf16 (float32's range) none. So a float32
// weight enters a half GEMM without being rounded. Returns the parts and
// the per-part factors scale^-1 2^(-s i), float64 [B, 3, 1].
std::pair<at::Tensor, at::Tensor> SplitToHalf(const at::Tensor& w,
                                              at::ScalarType half) {
  const bool fp16 = half == at::kHalf;
  const double step = fp16 ? 2048.0 : 256.0;  // 2^11, 2^8
  at::Tensor rest = w;
  at::Tensor scale;  // [B, 1, 1], fp16 only
  if (fp16) {
    const at::Tensor peak = w.abs().amax({1, 2}, /*keepdim=*/true);
    scale = at::exp2(-at::floor(at::log2(peak.clamp_min(1e-30))));
    rest = w * scale;
  }
  std::vector<at::Tensor> parts;
  for (int i = 0; i < 3; ++i) {
    parts.push_back(rest.to(half));
    if (i < 2) rest = (rest - parts.back().to(at::kFloat)) * step;
  }
  // 2^(-s i), made on the device (a tensor from host values would be a
  // blocking copy that stalls the forward's kernel queue).
  at::Tensor factors =
      at::pow(1.0 / step, at::arange(3, w.options().dtype(at::kDouble)))
          .view({1, 3, 1});
  if (fp16) factors = factors / scale.to(at::kDouble);
  return {at::cat(parts, 1), factors};
}

// w x for float32 weights w [B, m, k] and half x [B, k, p] (states or
// their transpose): float64 [B, m, p], each weight split so the product is
// float32-exact. Serves the sums of unit vectors (w = 1/||h_t||, x = h) and
// the Gram's row means (w = the token mean, x = h^T).
at::Tensor HalfWeightedProduct(const at::Tensor& w, const at::Tensor& x) {
  auto [parts, factors] = SplitToHalf(w, x.scalar_type());
  const int64_t batch = w.size(0), m = w.size(1);
  return (HalfBmm(parts, x).view({batch, 3, m, x.size(2)}).to(at::kDouble) *
          factors.unsqueeze(3))
      .sum(1);
}

// a_t . b_t for every token of half states a, b [B, n, d], float64 [B, n]:
// the diagonals of g x g blocks of A B^T, g tokens at a time, one GEMM that
// reads both once (g times the multiply-adds of the dots, still far from the
// GEMM's bound; 2x faster than a float32 multiply-and-sum on an H200).
at::Tensor TokenDots(const at::Tensor& a, const at::Tensor& b) {
  const int64_t rows = a.size(0) * a.size(1), d = a.size(2);
  int64_t g = 32;
  while (rows % g != 0) g /= 2;
  const at::Tensor blocks = HalfBmm(a.reshape({rows / g, g, d}),
                                    b.reshape({rows / g, g, d}).transpose(1, 2));
  return blocks.diagonal(0, 1, 2).reshape({a.size(0), a.size(1)}).to(at::kDouble);
}

// Gram matrices x x^T of float64 x [B, n, d] into out [B, n, n]: the row
// blocks of a kGramBlocks x kGramBlocks tiling are multiplied only up to the
// diagonal and mirrored, (k + 1) / 2k of the full product's multiply-adds
// (62.5% for 4 blocks), each entry still one float64 dot product.
constexpr int64_t kGramBlocks = 4;
constexpr int64_t kMinBlockRows = 64;  // below this, one product

void SymmetricGram(const at::Tensor& x, at::Tensor& out) {
  const int64_t n = x.size(1);
  if (n < kGramBlocks * kMinBlockRows) {
    at::bmm_out(out, x, x.transpose(1, 2));
    return;
  }
  for (int64_t i = 0; i < kGramBlocks; ++i) {
    const int64_t lo = n * i / kGramBlocks, hi = n * (i + 1) / kGramBlocks;
    // Rows lo..hi against columns 0..hi: [B, hi - lo, hi].
    const at::Tensor block =
        at::bmm(x.narrow(1, lo, hi - lo), x.narrow(1, 0, hi).transpose(1, 2));
    out.narrow(1, lo, hi - lo).narrow(2, 0, hi).copy_(block);
    if (lo > 0) {
      out.narrow(1, 0, lo).narrow(2, lo, hi - lo)
          .copy_(block.narrow(2, 0, lo).transpose(1, 2));
    }
  }
}

// Unbiased HSIC (Song et al. 2012) from its parts (CkaGramStats): inner =
// <C_a, C_b>_F, diag_dot = <diag C_a, diag C_b>, total_product =
// 1'C~_a1 1'C~_b1, row_dot = <C~_a 1, C~_b 1>. Any shape (pairs [B] or all
// pairs [B, P, P]).
at::Tensor UnbiasedHsic(const at::Tensor& inner, const at::Tensor& diag_dot,
                        const at::Tensor& total_product,
                        const at::Tensor& row_dot, int64_t n) {
  const double nd = static_cast<double>(n);
  return ((inner - diag_dot) + total_product / ((nd - 1) * (nd - 2)) -
          row_dot * (2.0 / (nd - 2))) /
         (nd * (nd - 3));
}

// The same for one pair of points, [B].
at::Tensor UnbiasedHsic(const at::Tensor& inner, const CkaGramStats& a,
                        const CkaGramStats& b, int64_t n) {
  return UnbiasedHsic(inner, (a.diagonal * b.diagonal).sum(-1),
                      a.total * b.total, (a.row_sums * b.row_sums).sum(-1), n);
}

// The CKA statistics of centred Grams C [B, n, n] (float64, or float32 for
// half-precision states; kept as `centred`); trace_k [B] = tr(K) of the raw
// states. The scalars are float64.
CkaGramStats StatsOfCentredGram(const at::Tensor& centred,
                                const at::Tensor& trace_k) {
  CkaGramStats g;
  const int64_t n = centred.size(1);
  g.centred = centred;
  const bool exact = centred.scalar_type() == at::kDouble;
  g.diagonal = centred.diagonal(0, 1, 2).to(at::kDouble);
  // C 1 = 0 (C is centred): float64 sums it to ~1e-16, a float32 C would
  // add its rounding, so there the row sums of C~ are -diag C exactly.
  g.row_sums = exact ? centred.sum(2) - g.diagonal : -g.diagonal;
  g.total = g.row_sums.sum(1);
  // ||C||_F^2: for float32 one fused norm reduction (no n x n temporary).
  g.biased_self =
      exact ? FrobeniusDot(centred, centred)
            : at::linalg_vector_norm(centred, 2, {1, 2}).to(at::kDouble).square();
  if (n >= 4) g.unbiased_self = UnbiasedHsic(g.biased_self, g, g, n);
  g.scale = trace_k.square();
  return g;
}

// Gram statistics of token-centred float64 states xc [B, n, d]; trace_k [B]
// = tr(K) of the raw states. The centred Gram goes into `out` when given
// ([B, n, n] float64, contiguous). Float64 throughout: a float32 Gram moves
// CKA by ~2e-9 on residual-stream-like float32 states, but its BLAS rounding
// then depends on the batch's composition (per-prompt values differ between
// batched and single-prompt runs by ~5e-9), and on an H200 a float32 GEMM
// without TF32 runs no faster than the float64 tensor-core one.
CkaGramStats MakeGramStats(const at::Tensor& xc, const at::Tensor& trace_k,
                           at::Tensor out = at::Tensor()) {
  if (!out.defined()) {
    out = at::empty({xc.size(0), xc.size(1), xc.size(1)}, xc.options());
  }
  SymmetricGram(xc, out);
  return StatsOfCentredGram(out, trace_k);
}

// The same for half-precision states h [B, n, d] with token means mean
// [B, d] (float32): C = H K H = K - r 1' - 1 r' + g, r = X mean (K's row
// means), g = |mean|^2, as ONE half GEMM with a float32 output that adds
// X X^T onto the rank-2 correction (no centred copy of the states, which a
// half GEMM could not take unrounded). float32 [B, n, n] into `out` when
// given.
CkaGramStats MakeHalfGramStats(const at::Tensor& h, const at::Tensor& mean,
                               const at::Tensor& trace_k,
                               at::Tensor out = at::Tensor()) {
  const int64_t batch = h.size(0), n = h.size(1);
  if (!out.defined()) {
    out = at::empty({batch, n, n}, h.options().dtype(at::kFloat));
  }
  const at::Tensor r =  // X mean, [B, n]
      HalfWeightedProduct(mean.unsqueeze(1), h.transpose(1, 2)).squeeze(1);
  const at::Tensor g = mean.to(at::kDouble).square().sum(1);  // [B]
  // g - r_i - r_j = u v' with u = [c, 1], v = [-1, -c], c = r - g/2: a
  // rank-2 float32 product (exact products, one rounding), 2x faster on an
  // H200 than a broadcast subtraction writing the same n x n.
  const at::Tensor c = (r - g.unsqueeze(1) / 2).to(at::kFloat);  // [B, n]
  const at::Tensor ones = at::ones_like(c);
  at::bmm_out(out, at::stack({c, ones}, 2), at::stack({-ones, -c}, 1));
  HalfBaddbmmOut(out, out, h, h.transpose(1, 2));
  return StatsOfCentredGram(out, trace_k);
}

// Centred states of float64 h [B, n, d] (one temporary [B, n, d]).
at::Tensor CentreTokens(const at::Tensor& h) {
  return h - h.mean(1, /*keepdim=*/true);
}

// The CKA statistics of states h [B, n, d] on their own (their norms and
// means not shared with other metrics): the half path for half states, else
// float64.
CkaGramStats GramStatsOfStates(const at::Tensor& h) {
  if (IsHalf(h)) {
    const at::Tensor trace_k = at::linalg_vector_norm(h, 2, {-1}, false, at::kFloat)
                                   .to(at::kDouble)
                                   .square()
                                   .sum(-1);
    return MakeHalfGramStats(h, h.sum(1, false, at::kFloat) / static_cast<double>(h.size(1)),
                             trace_k);
  }
  const at::Tensor x = h.to(at::kDouble);
  return MakeGramStats(CentreTokens(x), x.square().sum({1, 2}));
}

// HSIC(a, b) / sqrt(HSIC(a, a) HSIC(b, b)); 0 where a self-HSIC is not
// > kTinyHsic tr(K)^2. Broadcasts (pairs or all pairs).
at::Tensor Normalise(const at::Tensor& cross, const at::Tensor& self_a,
                     const at::Tensor& self_b, const at::Tensor& scale_a,
                     const at::Tensor& scale_b) {
  const at::Tensor ok = (self_a > kTinyHsic * scale_a)
                            .logical_and(self_b > kTinyHsic * scale_b)
                            .logical_and(self_a > 0)
                            .logical_and(self_b > 0);
  const at::Tensor den = (self_a * self_b).clamp_min(kTinyNorm).sqrt();
  return at::where(ok, cross / den, at::zeros_like(cross));
}

// CKA of two points, [B]; inner = FrobeniusDot(a.centred, b.centred).
at::Tensor BiasedCka(const CkaGramStats& a, const CkaGramStats& b,
                     const at::Tensor& inner) {
  return Normalise(inner, a.biased_self, b.biased_self, a.scale, b.scale);
}

at::Tensor UnbiasedCka(const CkaGramStats& a, const CkaGramStats& b,
                       const at::Tensor& inner, int64_t n) {
  return Normalise(UnbiasedHsic(inner, a, b, n), a.unbiased_self,
                   b.unbiased_self, a.scale, b.scale);
}

// Both CKAs of every pair of points at once, [B, P, P] each (undefined when
// not asked): `points` are P points' stats, `grams` [P, B, n, n] their
// centred Grams (the points' `centred` views).
std::pair<at::Tensor, at::Tensor> AllPairCka(
    const std::vector<CkaGramStats>& points, const at::Tensor& grams,
    int64_t n, bool biased, bool unbiased) {
  const int64_t p = grams.size(0), batch = grams.size(1);
  // inner[b] = G_b G_b^T, G_b [P, n^2] the flattened Grams of prompt b: one
  // matrix product per prompt, reading each Gram once.
  // Float32 Grams (half-precision states): the float32 accumulation errs by
  // ~1e-7 of sum |C_a C_b| <= ||C_a|| ||C_b|| (the Grams are centred, so no
  // large common part cancels), ~1e-7 absolute in CKA.
  at::Tensor inner = at::empty({batch, p, p}, grams.options());
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor g = grams.select(1, b).reshape({p, n * n});
    at::Tensor out = inner[b];
    at::mm_out(out, g, g.t());
  }
  inner = inner.to(at::kDouble);
  auto stack = [&](at::Tensor CkaGramStats::*field) {
    std::vector<at::Tensor> parts;
    for (const CkaGramStats& s : points) parts.push_back(s.*field);
    return at::stack(parts, 1);  // [B, P, ...]
  };
  const at::Tensor scale = stack(&CkaGramStats::scale);
  std::pair<at::Tensor, at::Tensor> out;
  if (biased) {
    const at::Tensor self = stack(&CkaGramStats::biased_self);
    out.first = Normalise(inner, self.unsqueeze(2), self.unsqueeze(1),
                          scale.unsqueeze(2), scale.unsqueeze(1));
  }
  if (unbiased) {
    const at::Tensor diag = stack(&CkaGramStats::diagonal);   // [B, P, n]
    const at::Tensor rows = stack(&CkaGramStats::row_sums);   // [B, P, n]
    const at::Tensor total = stack(&CkaGramStats::total);     // [B, P]
    const at::Tensor self = stack(&CkaGramStats::unbiased_self);
    const at::Tensor hsic = UnbiasedHsic(
        inner, at::bmm(diag, diag.transpose(1, 2)),
        total.unsqueeze(2) * total.unsqueeze(1),
        at::bmm(rows, rows.transpose(1, 2)), n);
    out.second = Normalise(hsic, self.unsqueeze(2), self.unsqueeze(1),
                           scale.unsqueeze(2), scale.unsqueeze(1));
  }
  return out;
}

// Mean cos over unordered pairs of m tokens from the sum of their unit
// vectors total [B, d], [B].
at::Tensor MeanPairCos(const at::Tensor& total, int64_t m) {
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
    case LayerMetric::kCkaAllUnbiased:
      return "cka_all_unbiased";
    case LayerMetric::kCkaAllBiased:
      return "cka_all_biased";
    case LayerMetric::kAdjacentCosTokens:
      return "adjacent_cos_tokens";
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
  const CkaGramStats a = GramStatsOfStates(x.to(at::kDouble).unsqueeze(0));
  const CkaGramStats b = GramStatsOfStates(y.to(at::kDouble).unsqueeze(0));
  const at::Tensor inner = FrobeniusDot(a.centred, b.centred);
  return (biased ? BiasedCka(a, b, inner) : UnbiasedCka(a, b, inner, n))
      .item<double>();
}

LayerMetricAccumulator::LayerMetricAccumulator(std::vector<LayerMetric> metrics,
                                               int64_t num_layers,
                                               c10::Device device,
                                               int64_t max_positions)
    : metrics_(std::move(metrics)),
      num_layers_(num_layers),
      max_positions_(max_positions) {
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
      case LayerMetric::kCkaAllUnbiased:
      case LayerMetric::kCkaAllBiased:
        // Pairs (l, l'), 0 <= l < l' <= L, l-major (the order of
        // at::triu_indices).
        for (int32_t l = 0; l < num_layers_; ++l) {
          for (int32_t lb = l + 1; lb <= num_layers_; ++lb) {
            keys_.push_back({name, l, lb});
          }
        }
        break;
      case LayerMetric::kAdjacentCosTokens:
        TORCH_CHECK(max_positions_ >= 1,
                    "analysis: adjacent_cos_tokens needs max_positions >= 1");
        // Pairs (l, l + 1) x positions 0..max_positions-1, l-major.
        for (int32_t l = 0; l < num_layers_; ++l) {
          for (int32_t t = 0; t < max_positions_; ++t) {
            keys_.push_back({name, l, -1, -1, t});
          }
        }
        break;
    }
    for (int64_t l = 0; l < layers; ++l) {
      keys_.push_back({name, static_cast<int32_t>(l)});
    }
  }
  // cka_baseline_*: with any CKA of that estimator (METHODS.md: "every CKA
  // result also stores cka_baseline"), one row at layer 0.
  if (Has(LayerMetric::kCkaBiased) || Has(LayerMetric::kCkaAllBiased)) {
    baseline_biased_row_ = static_cast<int64_t>(keys_.size());
    keys_.push_back({kCkaBaselineBiased, 0});
  }
  if (Has(LayerMetric::kCkaUnbiased) || Has(LayerMetric::kCkaAllUnbiased)) {
    baseline_unbiased_row_ = static_cast<int64_t>(keys_.size());
    keys_.push_back({kCkaBaselineUnbiased, 0});
  }
  c10::InferenceMode guard;
  sums_ = at::zeros({static_cast<int64_t>(keys_.size()), 3},
                    at::TensorOptions().dtype(at::kDouble).device(device));
}

void LayerMetricAccumulator::Add(int64_t row, const at::Tensor& per_prompt) {
  // per_prompt: float64 [B]. Held until the batch ends, then added with all
  // the others in a few kernels (Flush), not ~8 tiny ones per row.
  pending_rows_.push_back(row);
  pending_values_.push_back(per_prompt);
}

void LayerMetricAccumulator::Flush() {
  if (pending_rows_.empty()) return;
  const at::Tensor values = at::stack(pending_values_);  // [R, B]
  const at::Tensor update = at::stack(
      {values.sum(1), values.square().sum(1),
       at::full({values.size(0)}, static_cast<double>(values.size(1)),
                values.options())},
      1);  // [R, 3]
  at::Tensor rows =
      at::tensor(pending_rows_, at::TensorOptions().dtype(at::kLong));
  if (sums_.is_cuda()) {
    // From pinned memory the copy is queued, not waited for (no host sync).
    rows = rows.pin_memory().to(sums_.device(), /*non_blocking=*/true);
  }
  // Rows are distinct within a batch.
  sums_.index_add_(0, rows, update);
  pending_rows_.clear();
  pending_values_.clear();
}

void LayerMetricAccumulator::AddBlock(int64_t row, const at::Tensor& per_prompt) {
  at::Tensor block = sums_.narrow(0, row, per_prompt.size(1));
  block.select(1, kSum).add_(per_prompt.sum(0));
  block.select(1, kSumSq).add_(per_prompt.square().sum(0));
  block.select(1, kCount).add_(static_cast<double>(per_prompt.size(0)));
}

void LayerMetricAccumulator::AddAllPairCka(int64_t n) {
  // The adjacent-pair CKAs (l, l + 1) are the matrices' first
  // super-diagonal: taken from here when all pairs are computed.
  const bool all_biased = Has(LayerMetric::kCkaAllBiased) && n >= 2;
  const bool all_unbiased = Has(LayerMetric::kCkaAllUnbiased) && n >= 4;
  const bool pair_biased = Has(LayerMetric::kCkaBiased) && n >= 2;
  const bool pair_unbiased = Has(LayerMetric::kCkaUnbiased) && n >= 4;
  const bool biased = all_biased || pair_biased;
  const bool unbiased = all_unbiased || pair_unbiased;
  if (!biased && !unbiased) return;
  const int64_t p = num_layers_ + 1;
  auto [b, u] = AllPairCka(all_points_, all_grams_, n, biased, unbiased);
  const at::Tensor pairs = at::triu_indices(
      p, p, 1, at::TensorOptions().dtype(at::kLong).device(sums_.device()));
  auto upper = [&](const at::Tensor& m) {  // [B, P, P] -> [B, pairs]
    return m.index({at::indexing::Slice(), pairs[0], pairs[1]});
  };
  auto adjacent = [](const at::Tensor& m) {  // [B, P, P] -> [B, L]
    return m.diagonal(1, 1, 2);
  };
  if (all_biased) AddBlock(RowOf(LayerMetric::kCkaAllBiased), upper(b));
  if (all_unbiased) AddBlock(RowOf(LayerMetric::kCkaAllUnbiased), upper(u));
  if (pair_biased) AddBlock(RowOf(LayerMetric::kCkaBiased), adjacent(b));
  if (pair_unbiased) AddBlock(RowOf(LayerMetric::kCkaUnbiased), adjacent(u));
}

at::Tensor CkaBaselineStates(int64_t prompt, int64_t n, int64_t d,
                             const at::TensorOptions& options) {
  at::Generator generator =
      at::globalContext().defaultGenerator(options.device()).clone();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(kCkaBaselineSeed + static_cast<uint64_t>(prompt));
  }
  return at::randn({2, n, d}, generator, options);
}

void LayerMetricAccumulator::AddCkaBaseline(const at::Tensor& hidden) {
  const int64_t batch = hidden.size(0), n = hidden.size(1), d = hidden.size(2);
  const bool biased = baseline_biased_row_ >= 0 && n >= 2;
  const bool unbiased = baseline_unbiased_row_ >= 0 && n >= 4;
  if (!biased && !unbiased) return;
  // The states' dtype, so the baseline runs the same path (half or float64)
  // as the CKA it is the baseline of.
  const bool half = IsHalf(hidden);
  const at::TensorOptions options =
      hidden.options().dtype(half ? hidden.scalar_type() : at::kDouble);
  std::vector<at::Tensor> draws;
  for (int64_t b = 0; b < batch; ++b) {
    draws.push_back(CkaBaselineStates(next_prompt_ + b, n, d, options));
  }
  const at::Tensor x = at::stack(draws, 1);  // [2, B, n, d]
  const std::array<CkaGramStats, 2> stats = {GramStatsOfStates(x[0]),
                                             GramStatsOfStates(x[1])};
  const at::Tensor inner = FrobeniusDot(stats[0].centred, stats[1].centred);
  if (biased) Add(baseline_biased_row_, BiasedCka(stats[0], stats[1], inner));
  if (unbiased) Add(baseline_unbiased_row_, UnbiasedCka(stats[0], stats[1], inner, n));
}

void LayerMetricAccumulator::Observe(int64_t point, const at::Tensor& hidden) {
  c10::InferenceMode guard;
  TORCH_CHECK(point == next_point_, "analysis: expected representation point ",
              next_point_, ", got ", point);
  TORCH_CHECK(hidden.dim() == 3, "analysis: hidden must be [batch, seq, d], got ",
              hidden.sizes());
  next_point_ = point + 1;
  const int64_t batch = hidden.size(0);
  const int64_t n = hidden.size(1);
  if (point == 0) {
    batch_size_ = batch;
    examples_ = Has(LayerMetric::kAdjacentCosTokens)
                    ? std::clamp<int64_t>(kTokenExamplePrompts - next_prompt_,
                                          0, batch)
                    : 0;
    TORCH_CHECK(examples_ == 0 || n <= max_positions_, "analysis: prompt of ",
                n, " tokens is longer than adjacent_cos_tokens' ",
                max_positions_, " positions");
  }
  if (point == 0) AddCkaBaseline(hidden);
  // Float32/float64 states: statistics on a float64 copy (a float64 input
  // is used as is and never written to). Half-precision states: read as
  // they are, through half GEMMs with float32 accumulation (IsHalf).
  const bool half = IsHalf(hidden);
  const at::Tensor h = half ? hidden : hidden.to(at::kDouble);
  const at::Tensor norm =  // [B, n] float64
      half ? at::linalg_vector_norm(hidden, 2, {-1}, false, at::kFloat)
                 .to(at::kDouble)
           : at::linalg_vector_norm(h, 2, {-1});
  const at::Tensor trace_k = norm.square().sum(-1);  // sum_t ||h_t||^2 [B]
  const bool residual = point <= num_layers_;
  const bool want_biased = residual && n >= 2 &&
                           (Has(LayerMetric::kCkaBiased) ||
                            Has(LayerMetric::kCkaAllBiased));
  const bool want_unbiased = residual && n >= 4 &&
                             (Has(LayerMetric::kCkaUnbiased) ||
                              Has(LayerMetric::kCkaAllUnbiased));
  const bool want_all_pairs =
      (Has(LayerMetric::kCkaAllBiased) && n >= 2) ||
      (Has(LayerMetric::kCkaAllUnbiased) && n >= 4);
  const bool want_gram = want_biased || want_unbiased;
  const bool want_dispersion = Has(LayerMetric::kTokenDispersion) && n >= 1;
  // Token-centred float64 states (token_dispersion and the CKA Grams share
  // them), or for half states the token means (float32 [B, d]).
  at::Tensor centred, mean;
  if (want_gram || want_dispersion) {
    if (half) {
      mean = hidden.sum(1, /*keepdim=*/false, at::kFloat) / static_cast<double>(n);
    } else {
      centred = CentreTokens(h);
    }
  }

  // One-point metrics: points 0..L+1.
  const bool want_all = Has(LayerMetric::kIntertokenCos) && n >= 2;
  const bool want_nofirst = Has(LayerMetric::kIntertokenCosNoFirst) && n >= 3;
  if (want_all || want_nofirst) {
    // Sums of unit vectors as one [k, n] x [n, d] product per prompt (no
    // [B, n, d] unit-vector tensor): row 0 weights 1/||h_t||, row 1 the
    // same without position 0.
    const at::Tensor inverse = norm.clamp_min(kTinyNorm).reciprocal();
    std::vector<at::Tensor> weights;
    if (want_all) weights.push_back(inverse);
    if (want_nofirst) {
      at::Tensor w = inverse.clone();
      w.select(1, 0).zero_();
      weights.push_back(w);
    }
    const at::Tensor w = at::stack(weights, 1);  // [B, k, n]
    const at::Tensor totals = half ? HalfWeightedProduct(w.to(at::kFloat), hidden)
                                   : at::bmm(w, h);  // [B, k, d] float64
    if (want_all) {
      Add(RowOf(LayerMetric::kIntertokenCos) + point,
          MeanPairCos(totals.select(1, 0), n));
    }
    if (want_nofirst) {
      Add(RowOf(LayerMetric::kIntertokenCosNoFirst) + point,
          MeanPairCos(totals.select(1, want_all ? 1 : 0), n - 1));
    }
  }
  if (want_dispersion) {
    // sum_t ||h_t - mean||^2. Float64: same reduction for the spread and
    // tr(K), so all tokens one vector gives exactly 0. Half: tr(K) minus
    // n ||mean||^2 (clamped at 0 against rounding).
    const at::Tensor spread =
        half ? (trace_k - static_cast<double>(n) *
                             mean.to(at::kDouble).square().sum(-1))
                   .clamp_min(0.0)
             : at::linalg_vector_norm(centred, 2, {-1}).square().sum(-1);
    Add(RowOf(LayerMetric::kTokenDispersion) + point,
        at::where(trace_k > 0, spread / trace_k.clamp_min(kTinyNorm),
                  at::zeros_like(spread)));
  }

  // Pair / step metrics: residual points 0..L only.
  if (!residual) return;
  const bool want_cos = Has(LayerMetric::kAdjacentCos) || examples_ > 0;
  const bool want_states = want_cos || Has(LayerMetric::kStepEnergy) ||
                           Has(LayerMetric::kPathEnergy);
  if (!want_states && !want_gram) return;
  if (point >= 1) {
    TORCH_CHECK(previous_sizes_ == h.sizes().vec(),
                "analysis: layer shapes differ: ", c10::IntArrayRef(previous_sizes_), " vs ",
                h.sizes());
  }
  CkaGramStats gram;
  if (want_gram) {
    at::Tensor out;
    if (want_all_pairs) {
      if (point == 0) {
        all_grams_ = at::empty({num_layers_ + 1, batch, n, n},
                               h.options().dtype(half ? at::kFloat : at::kDouble));
        all_points_.clear();
      }
      out = all_grams_[point];
    }
    gram = half ? MakeHalfGramStats(hidden, mean, trace_k, out)
                : MakeGramStats(centred, trace_k, out);
    if (want_all_pairs) all_points_.push_back(gram);
  }
  centred = at::Tensor();
  if (point == 0 && Has(LayerMetric::kPathEnergy)) {
    path_ = at::zeros({batch}, norm.options());
  }
  if (point >= 1) {
    const int64_t l = point - 1;  // the pair (l, l + 1)
    if (want_cos) {
      const at::Tensor dots =
          half ? TokenDots(previous_, hidden) : (previous_ * h).sum(-1);
      const at::Tensor cos = dots / (previous_norm_ * norm).clamp_min(kTinyNorm);
      if (Has(LayerMetric::kAdjacentCos)) {
        Add(RowOf(LayerMetric::kAdjacentCos) + l, cos.mean(-1));
      }
      if (examples_ > 0) {
        AddBlock(RowOf(LayerMetric::kAdjacentCosTokens) + l * max_positions_,
                 cos.narrow(0, 0, examples_));
      }
    }
    if (Has(LayerMetric::kStepEnergy) || Has(LayerMetric::kPathEnergy)) {
      // Half: the float32 difference of the upcast states (exact up to one
      // rounding), not ||a||^2 + ||b||^2 - 2 a.b, which cancels for small
      // steps.
      const at::Tensor step =
          half ? at::linalg_vector_norm(hidden.to(at::kFloat) - previous_, 2,
                                        {-1})
                     .to(at::kDouble)
                     .square()
               : at::linalg_vector_norm(h - previous_, 2, {-1}).square();  // [B, n]
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
    // With all pairs, the adjacent pairs come from the all-pair matrices
    // (AddAllPairCka), not a second inner product per point.
    const bool pair_biased =
        Has(LayerMetric::kCkaBiased) && n >= 2 && !want_all_pairs;
    const bool pair_unbiased =
        Has(LayerMetric::kCkaUnbiased) && n >= 4 && !want_all_pairs;
    if (pair_biased || pair_unbiased) {
      const at::Tensor inner = FrobeniusDot(previous_gram_.centred, gram.centred);
      if (pair_biased) {
        Add(RowOf(LayerMetric::kCkaBiased) + l,
            BiasedCka(previous_gram_, gram, inner));
      }
      if (pair_unbiased) {
        Add(RowOf(LayerMetric::kCkaUnbiased) + l,
            UnbiasedCka(previous_gram_, gram, inner, n));
      }
    }
  }
  if (point == num_layers_ && Has(LayerMetric::kPathEnergy)) {
    Add(RowOf(LayerMetric::kPathEnergy), path_);
  }
  // Held for the next point; the final-norm output is not paired.
  if (point < num_layers_) {
    previous_sizes_ = h.sizes().vec();
    if (want_states) {
      previous_ = h;  // half states: the model's own tensor, never written
      previous_norm_ = norm;
    }
    previous_gram_ = std::move(gram);
  } else {
    if (want_all_pairs) AddAllPairCka(n);
    DropHeld();
  }
}

void LayerMetricAccumulator::DropHeld() {
  previous_ = at::Tensor();
  previous_norm_ = at::Tensor();
  previous_gram_ = CkaGramStats();
  all_grams_ = at::Tensor();
  all_points_.clear();
  path_ = at::Tensor();
}

void LayerMetricAccumulator::EndBatch() {
  TORCH_CHECK(next_point_ == num_layers_ + 2,
              "analysis: batch ended after point ", next_point_ - 1,
              ", expected ", num_layers_ + 1);
  next_point_ = 0;
  if (batch_size_ > 0) next_prompt_ += batch_size_;
  Flush();
  DropHeld();
  previous_sizes_.clear();
}

}  // namespace layerflow::worker
