#include "worker/analysis/metric_observers.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/TensorIndexing.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"

namespace layerflow::worker {
namespace {

// Smallest norm product that counts as nonzero; below it cos is taken as 0.
constexpr double kTinyNorm = 1e-300;
// A self-HSIC at most this fraction of ||K||_F^2 counts as 0 (a constant
// representation up to rounding: its centred Gram is ~1e-16 of K's entries).
constexpr double kTinyHsic = 1e-20;

std::string Describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  return absl::StrCat(c10::toString(t.scalar_type()), " ", c10::str(t.sizes()));
}

// <a_b, b_b>_F per prompt of two [B, n, n] float64 tensors, [B]: one BLAS
// dot product per prompt (no n x n temporary; faster than a batched
// [1, n^2] x [n^2, 1] product or a multiply-and-sum). (The fused path's
// pairs go through CentredGramProducts instead.) Both must be defined Grams
// of one shape and dtype: an undefined one (a point whose Gram the other
// path made) would otherwise give a garbage batch size.
at::Tensor FrobeniusDot(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.defined() && b.defined() && a.dim() == 3 && a.sizes() == b.sizes() &&
                  a.scalar_type() == b.scalar_type() && a.size(0) >= 1,
              "analysis: Frobenius inner product of centred Grams needs two defined [B, n, n] "
              "tensors of one shape and dtype, B >= 1; got ",
              Describe(a), " and ", Describe(b));
  const int64_t batch = a.size(0);
  std::vector<at::Tensor> dots;
  dots.reserve(batch);
  for (int64_t i = 0; i < batch; ++i) {
    dots.push_back(at::dot(a[i].reshape({-1}), b[i].reshape({-1})));
  }
  return at::stack(dots);
}

// ---- The fused path: half states (a bf16 or fp16 model) anywhere, float32
// states on CUDA (TakesFusedPath, by device and dtype) -----------------------
// Read as they are, never copied: single float64 passes over the states
// (half_state_ops.h) and, for the CKA Grams, half GEMMs with float32
// accumulation and output (every product of two halves is exact in
// float32) or, for float32 states, the split-bf16 GEMM (half_state_ops.h:
// hi hi' + hi lo' + lo hi' in one bf16 GEMM, the diagonal exact), instead of
// float64 copies of [B, n, d] and float64 n x n Grams (10x slower than the
// half GEMM on an H200). The float64 path stays for float64 states and for
// float32 states on the CPU. Accuracy against float64 on the same values:
// tests/worker/analysis/analysis_suite_test.cc (HalfPrecisionStatesMatchFloat64,
// MixedDtypeBatchMatchesFloat64), tests/worker/analysis/half_state_ops_gpu_test.cc,
// and on an H200 bench/RESULTS.md.

// Gram matrices x x^T of float64 x [B, n, d] into out [B, n, n]: the row
// blocks of the half path's tiling (GramRowBlocks) are multiplied only up to
// the diagonal and mirrored, (k + 1) / 2k of the full product's
// multiply-adds (62.5% for 4 blocks), each entry still one float64 dot
// product.
void SymmetricGram(const at::Tensor& x, at::Tensor& out) {
  const int64_t n = x.size(1), blocks = GramRowBlocks(n);
  if (blocks == 1) {
    at::bmm_out(out, x, x.transpose(1, 2));
    return;
  }
  for (int64_t i = 0; i < blocks; ++i) {
    const RowBlock r = RowBlockOf(n, blocks, i);
    const int64_t lo = r.lo, hi = r.hi;
    // Rows lo..hi against columns 0..hi: [B, hi - lo, hi].
    const at::Tensor block = at::bmm(x.narrow(1, lo, hi - lo), x.narrow(1, 0, hi).transpose(1, 2));
    out.narrow(1, lo, hi - lo).narrow(2, 0, hi).copy_(block);
    if (lo > 0) {
      out.narrow(1, 0, lo).narrow(2, lo, hi - lo).copy_(block.narrow(2, 0, lo).transpose(1, 2));
    }
  }
}

// Unbiased HSIC (Song et al. 2012) from its parts (CkaGramStats): inner =
// <C_a, C_b>_F, diag_dot = <diag C_a, diag C_b>, total_product =
// 1'C~_a1 1'C~_b1, row_dot = <C~_a 1, C~_b 1>. Any shape (pairs [B] or all
// pairs [B, P, P]).
at::Tensor UnbiasedHsic(const at::Tensor& inner, const at::Tensor& diag_dot,
                        const at::Tensor& total_product, const at::Tensor& row_dot, int64_t n) {
  const double nd = static_cast<double>(n);
  return ((inner - diag_dot) + total_product / ((nd - 1) * (nd - 2)) - row_dot * (2.0 / (nd - 2))) /
         (nd * (nd - 3));
}

// The same for one pair of points, [B].
at::Tensor UnbiasedHsic(const at::Tensor& inner, const CkaGramStats& a, const CkaGramStats& b,
                        int64_t n) {
  return UnbiasedHsic(inner, (a.diagonal * b.diagonal).sum(-1), a.total * b.total,
                      (a.row_sums * b.row_sums).sum(-1), n);
}

// unbiased HSIC(K, K) of points' stats, any leading shape ([B] or [B, P]):
// computed where the points are used (StackPoints, GramStatsOfStates), not
// per point, so the adjacent-pair CKA does this algebra once per batch.
at::Tensor UnbiasedSelf(const CkaGramStats& g, int64_t n) {
  return UnbiasedHsic(g.biased_self, g, g, n);
}

// The points' scalars stacked on dim 1 ([B, P, ...]), with their unbiased
// self-HSIC when n >= 4; no Gram matrices.
CkaGramStats StackPoints(const std::vector<CkaGramStats>& points, int64_t n) {
  auto stack = [&](at::Tensor CkaGramStats::*field) {
    std::vector<at::Tensor> parts;
    for (const CkaGramStats& point : points) parts.push_back(point.*field);
    return at::stack(parts, 1);
  };
  CkaGramStats s;
  s.diagonal = stack(&CkaGramStats::diagonal);
  s.row_sums = stack(&CkaGramStats::row_sums);
  s.total = stack(&CkaGramStats::total);
  s.biased_self = stack(&CkaGramStats::biased_self);
  s.scale = stack(&CkaGramStats::scale);
  if (n >= 4) s.unbiased_self = UnbiasedSelf(s, n);
  return s;
}

// Points begin .. begin + count - 1 of stacked stats (dim 1), a view.
CkaGramStats PointRange(const CkaGramStats& s, int64_t begin, int64_t count) {
  CkaGramStats r;
  for (auto field :
       {&CkaGramStats::diagonal, &CkaGramStats::row_sums, &CkaGramStats::total,
        &CkaGramStats::biased_self, &CkaGramStats::unbiased_self, &CkaGramStats::scale}) {
    if ((s.*field).defined()) r.*field = (s.*field).narrow(1, begin, count);
  }
  return r;
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
  CkaGramStats g;
  g.centred = out;
  g.diagonal = out.diagonal(0, 1, 2);
  // C 1 = 0 (C is centred) to ~1e-16: the row sums of C~ are C 1 - diag C.
  g.row_sums = out.sum(2) - g.diagonal;
  g.total = g.row_sums.sum(1);
  g.biased_self = FrobeniusDot(out, out);
  g.scale = trace_k.square();
  return g;
}

// The scalars of a fused-path point's centred Gram from its per-token
// pass: norm_sq [B, n] = |h_t|^2, r [B, n] = h_t . mean, grand [B] =
// |mean|^2, trace_k [B] = tr K, float64. diag C = |h_t|^2 - 2 r_t + g;
// C~ 1 = -diag C (C 1 = 0); 1' C~ 1 = -tr C = n g - tr K (sum_t r_t = n g):
// no pass over the n x n Gram.
void SetScalarsFromTokens(CkaGramStats& g, const at::Tensor& norm_sq, const at::Tensor& r,
                          const at::Tensor& grand, const at::Tensor& trace_k) {
  g.diagonal = norm_sq - 2.0 * r + grand.unsqueeze(-1);
  g.row_sums = -g.diagonal;
  g.total = static_cast<double>(norm_sq.size(-1)) * grand - trace_k;
  g.scale = trace_k.square();
}

// The same for fused-path states h [B, n, d] paired only with their
// neighbours (no all-pair matrices): the raw Gram's lower block triangle,
// centred on the fly in float64 by CentredGramProducts, which also gives
// <C_prev, C> with the point before (`previous`, may be null) into *inner.
// norm_sq, row_means, grand, trace_k as in SetScalarsFromTokens.
CkaGramStats MakeRawGramStats(const at::Tensor& h, const at::Tensor& norm_sq,
                              const at::Tensor& row_means, const at::Tensor& grand,
                              const at::Tensor& trace_k, const CkaGramStats* previous,
                              at::Tensor* inner) {
  const int64_t n = h.size(1);
  CkaGramStats g;
  g.raw.blocks = GramRowBlocks(n);
  g.raw.lower = HalfLowerBlockGram(h, g.raw.blocks, norm_sq);
  g.raw.row_means = row_means;
  g.raw.grand = grand;
  const at::Tensor products =
      CentredGramProducts(previous != nullptr ? previous->raw : RawGram(), g.raw);
  if (inner != nullptr) *inner = products.select(1, 0);
  g.biased_self = products.select(1, 1);
  SetScalarsFromTokens(g, norm_sq, row_means, grand, trace_k);
  return g;
}

// Token means of fused-path states h [B, n, d], float64 [B, d] (exact sums).
at::Tensor HalfTokenMean(const at::Tensor& h) {
  const at::Tensor ones = at::ones({h.size(0), 1, h.size(1)}, h.options().dtype(at::kDouble));
  return HalfWeightedTokenSums(ones, h).squeeze(1) / static_cast<double>(h.size(1));
}

// Centred states of float64 h [B, n, d] (one temporary [B, n, d]).
at::Tensor CentreTokens(const at::Tensor& h) { return h - h.mean(1, /*keepdim=*/true); }

// The CKA statistics of states h [B, n, d] on their own (their norms and
// means not shared with other metrics): the fused path where h's device and
// dtype take it, else float64; *inner = the biased HSIC with `previous` when
// given (which must come from the same path).
CkaGramStats GramStatsOfStates(const at::Tensor& h, const CkaGramStats* previous = nullptr,
                               at::Tensor* inner = nullptr) {
  if (TakesFusedPath(h.device(), h.scalar_type())) {
    const at::Tensor mean = HalfTokenMean(h);
    const TokenStats t = HalfTokenStats(h, at::Tensor(), mean);
    CkaGramStats g = MakeRawGramStats(h, t.norm_sq, t.vec_dot.contiguous(), mean.square().sum(1),
                                      t.norm_sq.sum(-1), previous, inner);
    if (h.size(1) >= 4) g.unbiased_self = UnbiasedSelf(g, h.size(1));
    return g;
  }
  const at::Tensor x = h.to(at::kDouble);
  CkaGramStats g = MakeGramStats(CentreTokens(x), x.square().sum({1, 2}));
  if (previous != nullptr) *inner = FrobeniusDot(previous->centred, g.centred);
  if (h.size(1) >= 4) g.unbiased_self = UnbiasedSelf(g, h.size(1));
  return g;
}

// HSIC(a, b) / sqrt(HSIC(a, a) HSIC(b, b)); 0 where a self-HSIC is not
// > kTinyHsic tr(K)^2. Broadcasts (pairs or all pairs).
at::Tensor Normalise(const at::Tensor& cross, const at::Tensor& self_a, const at::Tensor& self_b,
                     const at::Tensor& scale_a, const at::Tensor& scale_b) {
  const at::Tensor ok = (self_a > kTinyHsic * scale_a)
                            .logical_and(self_b > kTinyHsic * scale_b)
                            .logical_and(self_a > 0)
                            .logical_and(self_b > 0);
  const at::Tensor den = (self_a * self_b).clamp_min(kTinyNorm).sqrt();
  return at::where(ok, cross / den, at::zeros_like(cross));
}

// CKA of two points, [B]; inner = FrobeniusDot(a.centred, b.centred).
at::Tensor BiasedCka(const CkaGramStats& a, const CkaGramStats& b, const at::Tensor& inner) {
  return Normalise(inner, a.biased_self, b.biased_self, a.scale, b.scale);
}

at::Tensor UnbiasedCka(const CkaGramStats& a, const CkaGramStats& b, const at::Tensor& inner,
                       int64_t n) {
  return Normalise(UnbiasedHsic(inner, a, b, n), a.unbiased_self, b.unbiased_self, a.scale,
                   b.scale);
}

// Entries of each slice of the all-pair CKA's Gram products (AllPairCka).
// H200, 25 Grams of [8, 2048, 2048] (bench_half_ops): 64k entries a slice
// 2.79 ms, 16k 2.72 ms, one product per prompt 5.1 ms, 256k 7.9 ms (too few
// thread blocks).
constexpr int64_t kAllPairSliceEntries = 16384;

// Both CKAs of every pair of points at once, [B, P, P] each (undefined when
// not asked): `all` the P points' scalars stacked ([B, P, ...]: StackPoints
// or PointsStats), `grams` [P, B, n, n] their centred Grams.
std::pair<at::Tensor, at::Tensor> AllPairCka(const CkaGramStats& all, const at::Tensor& grams,
                                             int64_t n, bool biased, bool unbiased) {
  const int64_t p = grams.size(0), batch = grams.size(1);
  // inner[b] = G_b G_b^T, G_b [P, n^2] the flattened Grams of prompt b, as
  // one batched product over S slices of the n^2 entries (G viewed as
  // [B S, P, n^2 / S], strided, no copy) whose [B, S, P, P] partials are
  // summed in float64: 2x faster on an H200 than one product per prompt
  // (P = 25 rows leave a single product with too few thread blocks), and
  // float32 accumulates only n^2 / S entries.
  // Float32 Grams (the fused path): the float32 accumulation errs by
  // ~1e-7 of sum |C_a C_b| <= ||C_a|| ||C_b|| (the Grams are centred, so no
  // large common part cancels), ~1e-7 absolute in CKA.
  const int64_t entries = n * n;
  int64_t slices = 1;  // a power of two dividing n^2, ~16k entries a slice
  while (slices * 2 * kAllPairSliceEntries <= entries && entries % (slices * 2) == 0) {
    slices *= 2;
  }
  TORCH_CHECK(grams.is_contiguous(), "analysis: all-pair Grams must be contiguous");
  const at::Tensor g = grams.view({p, batch * slices, entries / slices}).transpose(0, 1);
  const at::Tensor inner =
      at::bmm(g, g.transpose(1, 2)).to(at::kDouble).view({batch, slices, p, p}).sum(1);
  const at::Tensor& scale = all.scale;
  std::pair<at::Tensor, at::Tensor> out;
  if (biased) {
    const at::Tensor& self = all.biased_self;
    out.first = Normalise(inner, self.unsqueeze(2), self.unsqueeze(1), scale.unsqueeze(2),
                          scale.unsqueeze(1));
  }
  if (unbiased) {
    const at::Tensor& diag = all.diagonal;  // [B, P, n]
    const at::Tensor& rows = all.row_sums;  // [B, P, n]
    const at::Tensor& total = all.total;    // [B, P]
    const at::Tensor& self = all.unbiased_self;
    const at::Tensor hsic = UnbiasedHsic(inner, at::bmm(diag, diag.transpose(1, 2)),
                                         total.unsqueeze(2) * total.unsqueeze(1),
                                         at::bmm(rows, rows.transpose(1, 2)), n);
    out.second = Normalise(hsic, self.unsqueeze(2), self.unsqueeze(1), scale.unsqueeze(2),
                           scale.unsqueeze(1));
  }
  return out;
}

// Mean cos over unordered pairs of m tokens from the sum of their unit
// vectors total [B, d], [B].
at::Tensor MeanPairCos(const at::Tensor& total, int64_t m) {
  return (total.square().sum(-1) - static_cast<double>(m)) / static_cast<double>(m * (m - 1));
}

}  // namespace

double LinearCka(const at::Tensor& x, const at::Tensor& y, CkaEstimator estimator) {
  c10::InferenceMode guard;
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0),
              "LinearCka: need X [n, d1] and Y [n, d2], got ", x.sizes(), " and ", y.sizes());
  const int64_t n = x.size(0);
  const bool biased = estimator == CkaEstimator::kBiased;
  TORCH_CHECK(n >= (biased ? 2 : 4), "LinearCka: ", n, " rows are too few");
  at::Tensor inner;
  const CkaGramStats a = GramStatsOfStates(x.to(at::kDouble).unsqueeze(0));
  const CkaGramStats b = GramStatsOfStates(y.to(at::kDouble).unsqueeze(0), &a, &inner);
  return (biased ? BiasedCka(a, b, inner) : UnbiasedCka(a, b, inner, n)).item<double>();
}

at::Tensor CkaBaselineStates(int64_t prompt, int64_t n, int64_t d,
                             const at::TensorOptions& options) {
  at::Generator generator = at::globalContext().defaultGenerator(options.device()).clone();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(kCkaBaselineSeed + static_cast<uint64_t>(prompt));
  }
  return at::randn({2, n, d}, generator, options);
}

PointNeeds& PointNeeds::operator|=(const PointNeeds& other) {
  unit_sums |= other.unit_sums;
  unit_sums_nofirst |= other.unit_sums_nofirst;
  spread |= other.spread;
  dots |= other.dots;
  steps |= other.steps;
  gram |= other.gram;
  pair_products |= other.pair_products;
  all_grams |= other.all_grams;
  return *this;
}

// ---- The batch's Grams -------------------------------------------------------

int64_t GramSeries::size() const {
  return static_cast<int64_t>(fused ? fused_points.size() : points.size());
}

CkaGramStats GramSeries::PointsStats(int64_t n, at::Tensor* inner) const {
  if (!fused) {
    CkaGramStats s = StackPoints(points, n);
    if (inner != nullptr) {
      TORCH_CHECK(size() >= 2 && static_cast<int64_t>(pair_inner.size()) == size() - 1,
                  "analysis: CKA of ", size(), " points with ", pair_inner.size(), " pairs");
      *inner = at::stack(pair_inner, 1);
    }
    return s;
  }
  // The fused path's scalars, formed here once for all points from their
  // per-token tensors (SetScalarsFromTokens on [B, P, ...]).
  auto stack = [&](at::Tensor FusedGramPoint::*field) {
    std::vector<at::Tensor> parts;
    for (const FusedGramPoint& point : fused_points) parts.push_back(point.*field);
    return at::stack(parts, 1);
  };
  CkaGramStats s;
  const at::Tensor norm_sq = stack(&FusedGramPoint::norm_sq);  // [B, P, n]
  SetScalarsFromTokens(s, norm_sq, stack(&FusedGramPoint::row_means), stack(&FusedGramPoint::grand),
                       norm_sq.sum(-1));
  if (fused_points.front().products.defined()) {
    // [B, P, 2]: {<C_p-1, C_p>, <C_p, C_p>} of each point p.
    const at::Tensor products = stack(&FusedGramPoint::products).sum(-1);
    s.biased_self = products.select(2, 1);
    if (inner != nullptr) *inner = products.select(2, 0).narrow(1, 1, products.size(1) - 1);
  } else {
    s.biased_self = stack(&FusedGramPoint::biased_self);
  }
  if (n >= 4) s.unbiased_self = UnbiasedSelf(s, n);
  return s;
}

void GramSeries::Clear() {
  points.clear();
  pair_inner.clear();
  fused_points.clear();
  all_grams = at::Tensor();
}

// ---- The per-point stage -----------------------------------------------------

void PointStage::BeginBatch(bool fused, c10::ScalarType gram_model_dtype) {
  DropHeld();
  fused_ = fused;
  gram_model_dtype_ = gram_model_dtype;
  grams_.fused = fused;
}

const PointStats& PointStage::Observe(int64_t point, const at::Tensor& hidden,
                                      const PointNeeds& needs) {
  if (point >= 1 && point <= num_layers_ && !previous_sizes_.empty()) {
    TORCH_CHECK(previous_sizes_ == hidden.sizes().vec(),
                "analysis: layer shapes differ: ", c10::IntArrayRef(previous_sizes_), " vs ",
                hidden.sizes());
  }
  needs_ = needs;
  stats_ = PointStats();
  stats_.point = point;
  stats_.n = hidden.size(1);
  stats_.fused = fused_;
  stats_.residual = point <= num_layers_;
  stats_.last_residual = point == num_layers_;
  stats_.last = point == num_layers_ + 1;
  if (fused_) {
    ObserveFused(point, hidden);
  } else {
    ObserveFloat64(point, hidden);
  }
  return stats_;
}

void PointStage::EndPoint(int64_t point) {
  // The float64 path pairs nothing with the final-norm output; the fused
  // one reads point L once more there, for its Gram's row means.
  if (point == (fused_ ? num_layers_ + 1 : num_layers_)) DropHeld();
}

void PointStage::ObserveFused(int64_t point, const at::Tensor& hidden) {
  // Half states, float32 states on CUDA, a half model's float32 states
  // anywhere (TakesFusedPath), read as they are: ONE pass over the point
  // (HalfPointPass: its per-token norms, the dot products and steps with the
  // point before, the token sums every metric needs, the bf16 rounding of a
  // half model's float32 states for the CKA Gram, and the point before's
  // Gram row means), then the Gram's GEMM. What is formed from those
  // per-token and per-prompt tensors (cosines, energies, dispersions, the
  // Grams' centring scalars) waits for the batch's last point, where it runs
  // once on [B, P, ...] tensors (the observers): a point costs ~7 kernels,
  // not ~35 small ones (on an H200 the small ones were ~4 ms of
  // Mamba-1.4B's ~25 ms of metrics at 8 x 2048).
  //
  // A Gram's row means r_t = x_t . mean need the point's token mean, known
  // only once its pass has ended; a pass of their own would read the states
  // again (24 us a point on an H200 for Mamba-1.4B's bf16 rounding). So
  // point p's Gram waits (pending_gram_) until point p + 1's pass, which
  // reads x_p anyway as its point before and adds r_p; its centred products
  // with point p - 1's follow there (the final point's pass reads point L
  // for that alone).
  const int64_t n = hidden.size(1);
  const bool residual = stats_.residual;
  const bool gram = residual && needs_.gram;
  const bool states = residual && (needs_.dots || needs_.steps);
  // Float32 states of a half-precision model (the SSMs' residual_in_fp32
  // stream: SetModelDtype, or else point 0 in a half dtype): the CKA Gram
  // is formed from their bf16 rounding, as a bf16 Transformer's states are,
  // with that rounding's own norms and means, so that the metrics' cost
  // follows the states' shape and the model's precision, not the
  // architecture (one bf16 GEMM where the split-bf16 one takes three: 49
  // such Grams were ~40% of Mamba-1.4B's metric time at 8 x 2048 on an
  // H200). Cosines, norms, steps and dispersion keep the float32 values.
  // A float32 model keeps the split-bf16 Gram.
  const bool round_gram = gram && hidden.scalar_type() == at::kFloat &&
                          (gram_model_dtype_ == at::kBFloat16 || gram_model_dtype_ == at::kHalf);
  const bool pending = pending_gram_.mean.defined();
  const bool pair_point = residual && point >= 1 && previous_.defined();
  // The pass reads one dtype: a pair of different ones (bf16 embedding,
  // float32 blocks) is upcast to their common type, exactly (bf16 and fp16
  // values are float32 values).
  at::Tensor cur = hidden, prev = pair_point || pending ? previous_ : at::Tensor();
  if (prev.defined() && prev.scalar_type() != cur.scalar_type()) {
    const at::ScalarType common = at::promote_types(prev.scalar_type(), cur.scalar_type());
    cur = cur.to(common);
    prev = prev.to(common);
  }
  PointPassSpec spec;
  spec.tiny = kTinyNorm;
  spec.unit = needs_.unit_sums;
  spec.unit_nofirst = needs_.unit_sums_nofirst;
  spec.plain = needs_.spread || (gram && !round_gram);
  spec.rounded = round_gram;
  if (pending) {
    spec.prev_vec = pending_gram_.mean;
    spec.prev_vec_rounded = pending_gram_.rounded;
  }
  const PointPassResult pass = HalfPointPass(cur, prev, spec);
  if (pending) FinishPendingGram(pass.prev_vec_dot);
  stats_.unit_sums = pass.unit_sums;  // [B, k, d]
  stats_.norm_sq = pass.norm_sq;
  stats_.plain_sum = pass.plain_sum;
  if (stats_.last) {
    // The CKAs' Grams, now that point L's has its row means.
    if (needs_.gram) stats_.grams = &grams_;
    return;
  }

  // Pair / step metrics: residual points 0..L.
  if (!states && !gram) return;
  if (gram) {
    // This point's Gram, of the states it is formed from (the bf16
    // rounding's where round_gram), with their own norms and mean; its row
    // means come with the next point's pass.
    const at::Tensor gram_states = round_gram ? pass.rounded : hidden;
    PendingGram& g = pending_gram_;
    g.point = point;
    g.rounded = round_gram;
    g.norm_sq = round_gram ? pass.rounded_norm_sq : pass.norm_sq;
    g.mean = (round_gram ? pass.rounded_sum : pass.plain_sum) / static_cast<double>(n);
    if (!needs_.all_grams) {
      g.raw.blocks = GramRowBlocks(n);
      g.raw.lower = HalfLowerBlockGram(gram_states, g.raw.blocks, g.norm_sq);
    } else {
      if (point == 0) {
        grams_.all_grams =
            at::empty({num_layers_ + 1, hidden.size(0), n, n}, hidden.options().dtype(at::kFloat));
      }
      at::Tensor out = grams_.all_grams[point];
      HalfGramInto(out, gram_states, g.norm_sq);
    }
  }
  if (point >= 1) {
    stats_.prev_dot = pass.prev_dot;
    stats_.step_sq = pass.step_sq;
  }
  // Held for the next point (point L's for its Gram's row means only); the
  // final-norm output is not paired. The model's own tensor, never written.
  previous_sizes_ = hidden.sizes().vec();
  previous_ = hidden;
}

void PointStage::FinishPendingGram(const at::Tensor& row_means) {
  PendingGram& p = pending_gram_;
  FusedGramPoint g;
  g.norm_sq = p.norm_sq;
  g.row_means = row_means;
  g.grand = row_means.mean(1);  // = |mean|^2: sum_t x_t . mean = n |mean|^2
  if (p.raw.lower.defined()) {
    p.raw.row_means = row_means;
    p.raw.grand = g.grand;
    // {<C_prev, C>, <C, C>} before their sum over thread blocks, which
    // GramSeries::PointsStats does for all points at once.
    g.products = CentredGramProductPartials(p.point >= 1 ? previous_gram_.raw : RawGram(), p.raw);
    previous_gram_.raw = std::move(p.raw);
  } else {
    at::Tensor out = grams_.all_grams[p.point];
    g.biased_self = CentreGram(out, row_means, g.grand);
  }
  grams_.fused_points.push_back(std::move(g));
  pending_gram_ = PendingGram();
}

void PointStage::ObserveFloat64(int64_t point, const at::Tensor& hidden) {
  // Statistics on a float64 copy (a float64 input is used as is and never
  // written to).
  const at::Tensor h = hidden.to(at::kDouble);
  const int64_t n = h.size(1);
  const bool residual = stats_.residual;
  const bool gram = residual && needs_.gram;
  const bool states = residual && (needs_.dots || needs_.steps);
  // Token-centred float64 states (token_dispersion and the CKA Grams share
  // them).
  at::Tensor centred;
  if (gram || needs_.spread) centred = CentreTokens(h);
  const at::Tensor norm = at::linalg_vector_norm(h, 2, {-1});  // [B, n]
  at::Tensor trace_k;                                          // sum_t ||h_t||^2 [B]
  if (gram || needs_.spread) trace_k = norm.square().sum(-1);
  stats_.norm = norm;

  // One-point metrics: points 0..L+1.
  if (needs_.unit_sums || needs_.unit_sums_nofirst) {
    // Sums of unit vectors as one [k, n] x [n, d] product per prompt (no
    // [B, n, d] unit-vector tensor): row 0 weights 1/||h_t||, row 1 the
    // same without position 0 (the mask [1, 2, n] zeroes it).
    if (point == 0) {
      unit_mask_ = at::ones({1, 2, n}, norm.options());
      unit_mask_.select(1, 1).select(1, 0).zero_();
      if (!needs_.unit_sums) unit_mask_ = unit_mask_.narrow(1, 1, 1);
      if (!needs_.unit_sums_nofirst) unit_mask_ = unit_mask_.narrow(1, 0, 1);
    }
    const at::Tensor w =  // [B, k, n]
        norm.clamp_min(kTinyNorm).reciprocal().unsqueeze(1) * unit_mask_;
    stats_.unit_sums = at::bmm(w, h);  // [B, k, d] float64
  }
  if (needs_.spread) {
    // sum_t ||h_t - mean||^2; the same reduction for the spread and tr(K),
    // so all tokens one vector gives exactly 0.
    stats_.spread = at::linalg_vector_norm(centred, 2, {-1}).square().sum(-1);
    stats_.trace_k = trace_k;
  }

  // Pair / step metrics: residual points 0..L only.
  if (!states && !gram) return;
  CkaGramStats g;
  if (gram) {
    at::Tensor out;
    if (needs_.all_grams) {
      if (point == 0) {
        grams_.all_grams = at::empty({num_layers_ + 1, h.size(0), n, n}, h.options());
      }
      out = grams_.all_grams[point];
    }
    g = MakeGramStats(centred, trace_k, out);
  }
  centred = at::Tensor();
  if (point >= 1) {
    if (needs_.dots) stats_.prev_dot = (previous_ * h).sum(-1);
    if (needs_.steps) {
      // From the difference of the states, not ||a||^2 + ||b||^2 - 2 a.b,
      // which cancels for small steps.
      stats_.step_sq = at::linalg_vector_norm(h - previous_, 2, {-1}).square();
    }
    if (gram && needs_.pair_products) {
      grams_.pair_inner.push_back(FrobeniusDot(previous_gram_.centred, g.centred));
    }
  }
  if (gram) {
    CkaGramStats scalars = g;  // without its n x n matrix
    scalars.centred = at::Tensor();
    grams_.points.push_back(std::move(scalars));
    if (point == num_layers_) stats_.grams = &grams_;
  }
  // Held for the next point; the final-norm output is not paired.
  if (point < num_layers_) {
    previous_sizes_ = h.sizes().vec();
    if (states) previous_ = h;
    previous_gram_ = std::move(g);
  }
}

void PointStage::DropHeld() {
  previous_ = at::Tensor();
  previous_sizes_.clear();
  previous_gram_ = CkaGramStats();
  pending_gram_ = PendingGram();
  grams_.Clear();
}

// ---- Rows --------------------------------------------------------------------

MetricRows::MetricRows(const std::vector<LayerMetric>& metrics, const MetricShape& shape,
                       c10::Device device) {
  row_.fill(-1);
  for (LayerMetric metric : metrics) {
    row_[static_cast<int>(metric)] = rows_;
    rows_ += DeclareMetricRows(metric, shape, nullptr);
  }
  for (CkaEstimator estimator : CkaBaselineObserver::Estimators(metrics)) {
    (estimator == CkaEstimator::kBiased ? baseline_biased_ : baseline_unbiased_) = rows_++;
  }
  c10::InferenceMode guard;
  sums_ = at::zeros({rows_, 3}, at::TensorOptions().dtype(at::kDouble).device(device));
}

void MetricRows::Add(int64_t row, const at::Tensor& per_prompt) {
  // per_prompt: float64 [B]. Held until the batch ends, then added with all
  // the others in a few kernels (Flush), not ~8 tiny ones per row.
  pending_rows_.push_back(row);
  pending_values_.push_back(per_prompt);
}

void MetricRows::Flush() {
  if (pending_rows_.empty()) return;
  const at::Tensor values = at::stack(pending_values_);  // [R, B]
  const at::Tensor update =
      at::stack({values.sum(1), values.square().sum(1),
                 at::full({values.size(0)}, static_cast<double>(values.size(1)), values.options())},
                1);  // [R, 3]
  at::Tensor rows = at::tensor(pending_rows_, at::TensorOptions().dtype(at::kLong));
  if (sums_.is_cuda()) {
    // From pinned memory the copy is queued, not waited for (no host sync).
    rows = rows.pin_memory().to(sums_.device(), /*non_blocking=*/true);
  }
  // Rows are distinct within a batch.
  sums_.index_add_(0, rows, update);
  pending_rows_.clear();
  pending_values_.clear();
}

void MetricRows::AddBlock(int64_t row, const at::Tensor& per_prompt) {
  AddToRows(sums_.narrow(0, row, per_prompt.size(1)), per_prompt);
}

void MetricRows::AddToRows(const at::Tensor& rows, const at::Tensor& per_prompt) {
  rows.select(-1, LayerMetricAccumulator::kSum).add_(per_prompt.sum(0));
  rows.select(-1, LayerMetricAccumulator::kSumSq).add_(per_prompt.square().sum(0));
  rows.select(-1, LayerMetricAccumulator::kCount).add_(static_cast<double>(per_prompt.size(0)));
}

// ---- Declared rows -------------------------------------------------------------

namespace {

// Rows {name, 0} .. {name, count - 1}, appended to *keys unless null;
// returns count.
int64_t DeclareLayerRows(LayerMetric metric, int64_t count, std::vector<StatKey>* keys) {
  if (keys != nullptr) {
    const std::string name = LayerMetricName(metric);
    for (int32_t l = 0; l < count; ++l) keys->push_back({name, l});
  }
  return count;
}

}  // namespace

int64_t DeclareMetricRows(LayerMetric metric, const MetricShape& shape,
                          std::vector<StatKey>* keys) {
  if (OnePointObserver::Writes(metric)) return OnePointObserver::DeclareRows(metric, shape, keys);
  if (StepObserver::Writes(metric)) return StepObserver::DeclareRows(metric, shape, keys);
  if (PairCkaObserver::Writes(metric)) return PairCkaObserver::DeclareRows(metric, shape, keys);
  return AllPairCkaObserver::DeclareRows(metric, shape, keys);
}

// ---- One-point metrics ---------------------------------------------------------

bool OnePointObserver::Writes(LayerMetric metric) {
  return metric == LayerMetric::kIntertokenCos || metric == LayerMetric::kIntertokenCosNoFirst ||
         metric == LayerMetric::kTokenDispersion;
}

int64_t OnePointObserver::DeclareRows(LayerMetric metric, const MetricShape& shape,
                                      std::vector<StatKey>* keys) {
  return DeclareLayerRows(metric, shape.num_layers + 2, keys);  // points 0..L and final (L + 1)
}

OnePointObserver::OnePointObserver(const MetricRows& rows)
    : intertoken_(rows.Has(LayerMetric::kIntertokenCos)),
      nofirst_(rows.Has(LayerMetric::kIntertokenCosNoFirst)),
      dispersion_(rows.Has(LayerMetric::kTokenDispersion)) {}

PointNeeds OnePointObserver::NeedsAt(int64_t n) const {
  PointNeeds needs;
  needs.unit_sums = intertoken_ && n >= 2;
  needs.unit_sums_nofirst = nofirst_ && n >= 3;
  needs.spread = dispersion_ && n >= 1;
  return needs;
}

void OnePointObserver::Observe(const PointStats& stats, MetricRows& rows) {
  if (stats.unit_sums.defined()) unit_sums_.push_back(stats.unit_sums);  // [B, k, d]
  if (NeedsAt(stats.n).spread) {
    if (stats.fused) {
      point_norm_sq_.push_back(stats.norm_sq);
      plain_sums_.push_back(stats.plain_sum);
    } else {
      spreads_.push_back(stats.spread);
      traces_.push_back(stats.trace_k);
    }
  }
  if (stats.last) AddValues(stats.n, rows);
}

void OnePointObserver::AddValues(int64_t n, MetricRows& rows) {
  if (!unit_sums_.empty()) {  // [B, P, k, d], P = L + 2 points
    const at::Tensor totals = at::stack(unit_sums_, 1);
    const bool all = intertoken_ && n >= 2;
    if (all) {
      rows.AddBlock(rows.RowOf(LayerMetric::kIntertokenCos), MeanPairCos(totals.select(2, 0), n));
    }
    if (nofirst_ && n >= 3) {
      rows.AddBlock(rows.RowOf(LayerMetric::kIntertokenCosNoFirst),
                    MeanPairCos(totals.select(2, all ? 1 : 0), n - 1));
    }
  }
  at::Tensor spread, trace_k;  // [B, P]
  if (!spreads_.empty()) {
    spread = at::stack(spreads_, 1);
    trace_k = at::stack(traces_, 1);
  } else if (!plain_sums_.empty()) {
    // Fused path: tr(K) minus n ||mean||^2 (clamped at 0 against rounding).
    trace_k = at::stack(point_norm_sq_, 1).sum(-1);
    const at::Tensor mean = at::stack(plain_sums_, 1) / static_cast<double>(n);
    spread = (trace_k - static_cast<double>(n) * mean.square().sum(-1)).clamp_min(0.0);
  }
  if (spread.defined()) {
    rows.AddBlock(
        rows.RowOf(LayerMetric::kTokenDispersion),
        at::where(trace_k > 0, spread / trace_k.clamp_min(kTinyNorm), at::zeros_like(spread)));
  }
  Clear();
}

void OnePointObserver::Clear() {
  unit_sums_.clear();
  spreads_.clear();
  traces_.clear();
  point_norm_sq_.clear();
  plain_sums_.clear();
}

// ---- Step metrics ----------------------------------------------------------------

bool StepObserver::Writes(LayerMetric metric) {
  return metric == LayerMetric::kAdjacentCos || metric == LayerMetric::kAdjacentCosTokens ||
         metric == LayerMetric::kStepEnergy || metric == LayerMetric::kPathEnergy;
}

int64_t StepObserver::DeclareRows(LayerMetric metric, const MetricShape& shape,
                                  std::vector<StatKey>* keys) {
  if (metric == LayerMetric::kPathEnergy) {
    return DeclareLayerRows(metric, 1, keys);  // one scalar per prompt, at layer 0
  }
  if (metric != LayerMetric::kAdjacentCosTokens) {
    return DeclareLayerRows(metric, shape.num_layers, keys);  // pairs (l, l + 1), l = 0..L-1
  }
  // Pairs (l, l + 1) x positions, l-major.
  if (keys != nullptr) {
    const std::string name = LayerMetricName(metric);
    for (int32_t l = 0; l < shape.num_layers; ++l) {
      for (int32_t t = 0; t < shape.max_positions; ++t) keys->push_back({name, l, -1, -1, t});
    }
  }
  return shape.num_layers * shape.max_positions;
}

StepObserver::StepObserver(const MetricRows& rows, const MetricShape& shape)
    : cos_(rows.Has(LayerMetric::kAdjacentCos)),
      tokens_(rows.Has(LayerMetric::kAdjacentCosTokens)),
      step_(rows.Has(LayerMetric::kStepEnergy)),
      path_(rows.Has(LayerMetric::kPathEnergy)),
      max_positions_(shape.max_positions) {
  TORCH_CHECK(!tokens_ || max_positions_ >= 1,
              "analysis: adjacent_cos_tokens needs max_positions >= 1");
}

void StepObserver::BeginBatch(const BatchInfo& batch, MetricRows&) {
  examples_ =
      tokens_ ? std::clamp<int64_t>(kTokenExamplePrompts - batch.first_prompt, 0, batch.batch) : 0;
  TORCH_CHECK(examples_ == 0 || batch.n <= max_positions_, "analysis: prompt of ", batch.n,
              " tokens is longer than adjacent_cos_tokens' ", max_positions_, " positions");
}

PointNeeds StepObserver::NeedsAt(int64_t) const {
  PointNeeds needs;
  needs.dots = cos_ || examples_ > 0;
  needs.steps = step_ || path_;
  return needs;
}

void StepObserver::Observe(const PointStats& stats, MetricRows& rows) {
  const PointNeeds needs = NeedsAt(stats.n);
  if (!stats.residual || (!needs.dots && !needs.steps)) return;
  // |h_t|^2 on the fused path (AddValues takes the roots of the stacked
  // points).
  norms_.push_back(stats.fused ? stats.norm_sq : stats.norm);
  if (stats.point >= 1) {
    if (needs.dots) dots_.push_back(stats.prev_dot);
    if (needs.steps) steps_.push_back(stats.step_sq);
  }
  if (stats.last_residual) AddValues(stats.fused, rows);
}

void StepObserver::AddValues(bool fused, MetricRows& rows) {
  // [B, L + 1, n]; the fused path holds |h_t|^2.
  const at::Tensor norms = fused ? at::stack(norms_, 1).sqrt() : at::stack(norms_, 1);
  const int64_t pairs = norms.size(1) - 1;
  const at::Tensor before = norms.narrow(1, 0, pairs), after = norms.narrow(1, 1, pairs);
  if (!dots_.empty()) {  // cos of the pairs (l, l + 1), [B, L, n]
    const at::Tensor cos = at::stack(dots_, 1) / (before * after).clamp_min(kTinyNorm);
    if (cos_) rows.AddBlock(rows.RowOf(LayerMetric::kAdjacentCos), cos.mean(-1));
    if (examples_ > 0) {
      // Rows l * max_positions + t (t < n) of the heat map: one strided
      // [L, n] block of the sums, all pairs at once.
      const int64_t n = cos.size(2);
      MetricRows::AddToRows(
          rows.sums()
              .narrow(0, rows.RowOf(LayerMetric::kAdjacentCosTokens), pairs * max_positions_)
              .view({pairs, max_positions_, 3})
              .narrow(1, 0, n),
          cos.narrow(0, 0, examples_));  // [examples, L, n]
    }
  }
  if (!steps_.empty()) {
    const at::Tensor step = at::stack(steps_, 1), base = before.square();
    const at::Tensor energy =  // [B, L]
        at::where(base > 0, step / base.clamp_min(kTinyNorm), at::zeros_like(step)).mean(-1);
    if (step_) rows.AddBlock(rows.RowOf(LayerMetric::kStepEnergy), energy);
    if (path_) rows.Add(rows.RowOf(LayerMetric::kPathEnergy), energy.sum(1));
  }
  Clear();
}

void StepObserver::Clear() {
  norms_.clear();
  dots_.clear();
  steps_.clear();
}

// ---- Layer-pair CKA ----------------------------------------------------------------

bool AllPairCkaObserver::Writes(LayerMetric metric) {
  return metric == LayerMetric::kCkaAllBiased || metric == LayerMetric::kCkaAllUnbiased;
}

int64_t AllPairCkaObserver::DeclareRows(LayerMetric metric, const MetricShape& shape,
                                        std::vector<StatKey>* keys) {
  if (keys != nullptr) {
    const std::string name = LayerMetricName(metric);
    // l-major, the order of at::triu_indices.
    for (int32_t l = 0; l < shape.num_layers; ++l) {
      for (int32_t lb = l + 1; lb <= shape.num_layers; ++lb) keys->push_back({name, l, lb});
    }
  }
  return shape.num_layers * (shape.num_layers + 1) / 2;  // pairs (l, l'), l < l' <= L
}

AllPairCkaObserver::AllPairCkaObserver(const MetricRows& rows)
    : all_biased_(rows.Has(LayerMetric::kCkaAllBiased)),
      all_unbiased_(rows.Has(LayerMetric::kCkaAllUnbiased)),
      pair_biased_(rows.Has(LayerMetric::kCkaBiased)),
      pair_unbiased_(rows.Has(LayerMetric::kCkaUnbiased)) {}

bool AllPairCkaObserver::RunsAt(int64_t n) const {
  return (all_biased_ && n >= 2) || (all_unbiased_ && n >= 4);
}

void AllPairCkaObserver::BeginBatch(const BatchInfo& batch, MetricRows&) {
  Clear();
  runs_ = RunsAt(batch.n);
}

PointNeeds AllPairCkaObserver::NeedsAt(int64_t) const {
  PointNeeds needs;
  needs.gram = needs.all_grams = runs_;
  return needs;
}

void AllPairCkaObserver::Observe(const PointStats& stats, MetricRows& rows) {
  if (!runs_ || stats.grams == nullptr) return;
  const int64_t n = stats.n;
  // The adjacent-pair CKAs (l, l + 1) are the matrices' first
  // super-diagonal (PairCkaObserver reads them off): formed here for them
  // too when all pairs are computed.
  const bool all_biased = all_biased_ && n >= 2;
  const bool all_unbiased = all_unbiased_ && n >= 4;
  const bool biased = all_biased || (pair_biased_ && n >= 2);
  const bool unbiased = all_unbiased || (pair_unbiased_ && n >= 4);
  const GramSeries& grams = *stats.grams;
  const int64_t p = grams.all_grams.size(0);
  matrices_ = AllPairCka(grams.PointsStats(n), grams.all_grams, n, biased, unbiased);
  const auto& [b, u] = matrices_;
  const at::Tensor pairs =
      at::triu_indices(p, p, 1, at::TensorOptions().dtype(at::kLong).device(rows.sums().device()));
  auto upper = [&](const at::Tensor& m) {  // [B, P, P] -> [B, pairs]
    return m.index({at::indexing::Slice(), pairs[0], pairs[1]});
  };
  if (all_biased) rows.AddBlock(rows.RowOf(LayerMetric::kCkaAllBiased), upper(b));
  if (all_unbiased) rows.AddBlock(rows.RowOf(LayerMetric::kCkaAllUnbiased), upper(u));
}

void AllPairCkaObserver::Clear() { matrices_ = {}; }

bool PairCkaObserver::Writes(LayerMetric metric) {
  return metric == LayerMetric::kCkaBiased || metric == LayerMetric::kCkaUnbiased;
}

int64_t PairCkaObserver::DeclareRows(LayerMetric metric, const MetricShape& shape,
                                     std::vector<StatKey>* keys) {
  return DeclareLayerRows(metric, shape.num_layers, keys);  // pairs (l, l + 1), l = 0..L-1
}

PairCkaObserver::PairCkaObserver(const MetricRows& rows, const AllPairCkaObserver* all_pairs)
    : biased_(rows.Has(LayerMetric::kCkaBiased)),
      unbiased_(rows.Has(LayerMetric::kCkaUnbiased)),
      all_pairs_(all_pairs) {}

void PairCkaObserver::BeginBatch(const BatchInfo& batch, MetricRows&) {
  const bool asked = (biased_ && batch.n >= 2) || (unbiased_ && batch.n >= 4);
  // With all pairs, the adjacent pairs come from the all-pair matrices;
  // else from one inner product per pair.
  from_matrices_ = asked && all_pairs_ != nullptr && all_pairs_->RunsAt(batch.n);
  runs_ = asked && !from_matrices_;
}

PointNeeds PairCkaObserver::NeedsAt(int64_t) const {
  PointNeeds needs;
  needs.gram = needs.pair_products = runs_;
  return needs;
}

void PairCkaObserver::Observe(const PointStats& stats, MetricRows& rows) {
  if (stats.grams == nullptr || (!runs_ && !from_matrices_)) return;
  const int64_t n = stats.n;
  const bool biased = biased_ && n >= 2, unbiased = unbiased_ && n >= 4;
  if (from_matrices_) {
    const auto& [b, u] = all_pairs_->Matrices();
    auto adjacent = [](const at::Tensor& m) {  // [B, P, P] -> [B, L]
      return m.diagonal(1, 1, 2);
    };
    if (biased) rows.AddBlock(rows.RowOf(LayerMetric::kCkaBiased), adjacent(b));
    if (unbiased) rows.AddBlock(rows.RowOf(LayerMetric::kCkaUnbiased), adjacent(u));
    return;
  }
  const GramSeries& grams = *stats.grams;
  const int64_t p = grams.size();  // points 0..L
  TORCH_CHECK(p >= 2, "analysis: CKA of ", p, " points");
  at::Tensor inner;                                       // [B, L]
  const CkaGramStats all = grams.PointsStats(n, &inner);  // [B, L + 1, ...]
  const CkaGramStats a = PointRange(all, 0, p - 1), b = PointRange(all, 1, p - 1);
  if (biased) rows.AddBlock(rows.RowOf(LayerMetric::kCkaBiased), BiasedCka(a, b, inner));
  if (unbiased) {
    rows.AddBlock(rows.RowOf(LayerMetric::kCkaUnbiased), UnbiasedCka(a, b, inner, n));
  }
}

// ---- CKA baselines ------------------------------------------------------------------

std::vector<CkaEstimator> CkaBaselineObserver::Estimators(const std::vector<LayerMetric>& metrics) {
  auto has = [&metrics](LayerMetric m) {
    return std::find(metrics.begin(), metrics.end(), m) != metrics.end();
  };
  // With any CKA of that estimator (METHODS.md: "every CKA result also
  // stores cka_baseline"), one row at layer 0.
  std::vector<CkaEstimator> estimators;
  if (has(LayerMetric::kCkaBiased) || has(LayerMetric::kCkaAllBiased)) {
    estimators.push_back(CkaEstimator::kBiased);
  }
  if (has(LayerMetric::kCkaUnbiased) || has(LayerMetric::kCkaAllUnbiased)) {
    estimators.push_back(CkaEstimator::kUnbiased);
  }
  return estimators;
}

StatKey CkaBaselineObserver::Key(CkaEstimator estimator) {
  return {estimator == CkaEstimator::kBiased ? kCkaBaselineBiased : kCkaBaselineUnbiased, 0};
}

CkaBaselineObserver::CkaBaselineObserver(const MetricRows& rows)
    : biased_row_(rows.BaselineRow(CkaEstimator::kBiased)),
      unbiased_row_(rows.BaselineRow(CkaEstimator::kUnbiased)) {}

void CkaBaselineObserver::BeginBatch(const BatchInfo& batch, MetricRows& rows) {
  const at::Tensor& hidden = *batch.point0;
  const int64_t n = hidden.size(1), d = hidden.size(2);
  const bool biased = biased_row_ >= 0 && n >= 2;
  const bool unbiased = unbiased_row_ >= 0 && n >= 4;
  if (!biased && !unbiased) return;
  // Point 0's dtype, so the baseline runs the same path (fused or float64)
  // as the CKA it is the baseline of.
  const at::TensorOptions options =
      hidden.options().dtype(batch.fused ? hidden.scalar_type() : at::kDouble);
  std::vector<at::Tensor> draws;
  for (int64_t b = 0; b < batch.batch; ++b) {
    draws.push_back(CkaBaselineStates(batch.first_prompt + b, n, d, options));
  }
  const at::Tensor x = at::stack(draws, 1);  // [2, B, n, d]
  at::Tensor inner;
  const CkaGramStats first = GramStatsOfStates(x[0]);
  const std::array<CkaGramStats, 2> stats = {first, GramStatsOfStates(x[1], &first, &inner)};
  if (biased) rows.Add(biased_row_, BiasedCka(stats[0], stats[1], inner));
  if (unbiased) rows.Add(unbiased_row_, UnbiasedCka(stats[0], stats[1], inner, n));
}

PointNeeds CkaBaselineObserver::NeedsAt(int64_t) const { return PointNeeds(); }

}  // namespace layerflow::worker
