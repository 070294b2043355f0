// The fused CUDA kernels of the analysis path's fused route
// (worker/analysis/half_state_kernels.cu: bf16 / fp16 states, and float32
// states with the split-bf16 Gram) against their ATen reference (the *Aten
// functions of half_state_ops.h, float64 on the CPU) and float64, and the
// whole accumulator on the GPU (bf16, fp16, float32 states, and a bf16 point
// 0 before float32 points) against the float64 path on the CPU.
// CI has no GPU: this executable is not registered with CTest. On a GPU
// machine run build-gpu/tests/worker/analysis/worker_half_state_ops_gpu_test
// (bench/gpu.sh overhead does, and bench/RESULTS.md records it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "worker/analysis/half_state_ops.h"
#include "worker/analysis/layer_metrics.h"
#include "tests/worker/testing/tensor_match.h"

namespace layerflow::worker {
namespace {

using testing::MaxRel;
using testing::WithinBounds;
constexpr auto& States = testing::ResidualLikeStates;

const c10::Device kGpu(c10::kCUDA, 0);

// Float32 states take the fused passes on CUDA only when switched on (off
// by default until this test has passed on a GPU: kernel_switch.h).
const bool kFloat32Fused = [] {
  SetFloat32FusedPath(true);
  return true;
}();




// The float64 references of a Gram's centring, on the CPU: the row means
// r = h mean, the grand mean g = |mean|^2, and the centred Gram itself.
struct Centring {
  at::Tensor row_means, grand, gram;
};
Centring CentringOf(const at::Tensor& h) {
  const at::Tensor x = h.to(at::kDouble);
  const at::Tensor mean = x.mean(1);
  const at::Tensor c = x - mean.unsqueeze(1);
  return {at::bmm(x, mean.unsqueeze(2)).squeeze(2), mean.square().sum(1),
          at::bmm(c, c.transpose(1, 2))};
}

struct Shape {
  int64_t n, d;
};
// d = 48: 16-byte loads; d = 45: the element-wise path. n = 512: 8 equal
// row blocks of whole 16-byte rows, so the Gram takes the tile GEMM
// (GemmLowerTiles); 300: 4 row blocks, 75 rows each (not 16-byte rows: the
// row-block GEMMs); 203: 3 uneven ones; 37: one.
const Shape kShapes[] = {{512, 48}, {300, 48}, {203, 45}, {37, 48}};

class HalfStateOpsGpu : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override { ASSERT_TRUE(at::hasCUDA()) << "this suite needs a CUDA device"; }
  bool Float32() const { return GetParam() == at::kFloat; }
};

// float64 accumulations of exact products (bf16 / fp16 / float32 values and
// their products are exact in float64): the two sides differ only in the
// order of float64 additions.
TEST_P(HalfStateOpsGpu, TokenStatsMatchAten) {
  c10::InferenceMode guard;
  at::manual_seed(41);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d);
    const at::Tensor cur = States(3, s.n, s.d, GetParam());
    const at::Tensor prev = States(3, s.n, s.d, GetParam());
    const at::Tensor v = at::randn({3, s.d}, at::kDouble);
    const TokenStats want = HalfTokenStatsAten(cur, prev, v);
    const TokenStats got = HalfTokenStats(cur.to(kGpu), prev.to(kGpu), v.to(kGpu));
    EXPECT_LT(MaxRel(got.norm_sq, want.norm_sq), 1e-13);
    EXPECT_LT(MaxRel(got.prev_dot, want.prev_dot), 1e-13);
    EXPECT_LT(MaxRel(got.step_sq, want.step_sq), 1e-13);
    EXPECT_LT(MaxRel(got.vec_dot, want.vec_dot), 1e-13);
    // Without the optional inputs, and from a row that is not 16-byte
    // aligned (states starting one element into a buffer).
    const at::Tensor shifted = at::cat({cur.reshape({-1}).narrow(0, 0, 1), cur.reshape({-1})})
                                   .to(kGpu)
                                   .narrow(0, 1, cur.numel())
                                   .view(cur.sizes());
    const TokenStats alone = HalfTokenStats(shifted, at::Tensor(), at::Tensor());
    EXPECT_LT(MaxRel(alone.norm_sq, want.norm_sq), 1e-13);
    EXPECT_FALSE(alone.prev_dot.defined());
    EXPECT_FALSE(alone.vec_dot.defined());
  }
}

TEST_P(HalfStateOpsGpu, WeightedTokenSumsMatchAten) {
  c10::InferenceMode guard;
  at::manual_seed(42);
  for (const Shape& s : kShapes) {
    for (int64_t k : {1, 2, 3, 4}) {  // each a kernel of its own (kRows)
      SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d << " k " << k);
      const at::Tensor h = States(3, s.n, s.d, GetParam());
      const at::Tensor w = at::rand({3, k, s.n}, at::kDouble);
      EXPECT_LT(
          MaxRel(HalfWeightedTokenSums(w.to(kGpu), h.to(kGpu)), HalfWeightedTokenSumsAten(w, h)),
          1e-13);
    }
  }
}

// The one-pass kernel (HalfPointPass) against its per-quantity Aten
// references: float64 sums of exact products in the references, float32
// partials of a thread's products of a token in the kernel's statistics
// (within HalfPointPassBounds), float64 sums of rows both sides. The
// shapes above (d 45: the composed passes, not the kernel) and rows of 2056
// values (two or three 16-byte slots a thread).
TEST_P(HalfStateOpsGpu, PointPassMatchesAten) {
  c10::InferenceMode guard;
  at::manual_seed(45);
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  shapes.push_back({129, 2056});
  for (const Shape& s : shapes) {
    for (bool with_prev : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d << " prev " << with_prev);
      const at::Tensor cur = States(3, s.n, s.d, GetParam());
      const at::Tensor prev = with_prev ? States(3, s.n, s.d, GetParam()) : at::Tensor();
      PointPassSpec spec;
      spec.unit = spec.unit_nofirst = spec.plain = true;
      spec.rounded = Float32();
      if (with_prev) {
        spec.prev_vec = at::randn({3, s.d}, at::kDouble);
        spec.prev_vec_rounded = Float32();
      }
      const PointPassResult want = HalfPointPassAten(cur, prev, spec);
      const PointPassResult bound = HalfPointPassBounds(cur, prev, spec);
      PointPassSpec gpu_spec = spec;
      if (with_prev) gpu_spec.prev_vec = spec.prev_vec.to(kGpu);
      const PointPassResult got =
          HalfPointPass(cur.to(kGpu), with_prev ? prev.to(kGpu) : at::Tensor(), gpu_spec);
      EXPECT_TRUE(WithinBounds(got.norm_sq, want.norm_sq, bound.norm_sq));
      EXPECT_EQ(got.prev_dot.defined(), with_prev);
      if (with_prev) {
        EXPECT_TRUE(WithinBounds(got.prev_dot, want.prev_dot, bound.prev_dot));
        EXPECT_TRUE(WithinBounds(got.step_sq, want.step_sq, bound.step_sq));
        EXPECT_TRUE(WithinBounds(got.prev_vec_dot, want.prev_vec_dot, bound.prev_vec_dot));
      }
      EXPECT_TRUE(WithinBounds(got.unit_sums, want.unit_sums, bound.unit_sums));
      EXPECT_LT(MaxRel(got.plain_sum, want.plain_sum), 1e-13);
      if (Float32()) {
        EXPECT_LT(MaxRel(got.rounded_sum, want.rounded_sum), 1e-13);
        EXPECT_TRUE(WithinBounds(got.rounded_norm_sq, want.rounded_norm_sq, bound.rounded_norm_sq));
        EXPECT_TRUE(at::equal(got.rounded.to(at::kCPU), want.rounded));
      }
    }
  }
}

// The Gram's lower block triangle against float64 (tensor-core float32
// accumulation: ~1e-6 of the largest entry for halves; float32 states
// through the split-bf16 GEMM, 2e-5: its 3 d float32 additions and the
// dropped lo lo', 4e-6 seen on the CPU, SplitBf16GramOfFloat32States), and
// the centred products on that same float32 Gram against the ATen reference
// (float64 both sides).
TEST_P(HalfStateOpsGpu, LowerBlockGramAndCentredProductsMatchAten) {
  c10::InferenceMode guard;
  at::manual_seed(43);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d);
    const int64_t blocks = GramRowBlocks(s.n);
    const at::Tensor x = States(3, s.n, s.d, GetParam());
    const at::Tensor y = States(3, s.n, s.d, GetParam());
    const at::Tensor exact = at::bmm(x.to(at::kDouble), x.to(at::kDouble).transpose(1, 2));
    const at::Tensor lower = HalfLowerBlockGram(x.to(kGpu), blocks).to(at::kCPU);
    for (int64_t i = 0; i < blocks; ++i) {
      const int64_t lo = s.n * i / blocks, hi = s.n * (i + 1) / blocks;
      EXPECT_LT(MaxRel(lower.narrow(1, lo, hi - lo).narrow(2, 0, hi),
                       exact.narrow(1, lo, hi - lo).narrow(2, 0, hi)),
                Float32() ? 2e-5 : 1e-5)
          << "row block " << i;
    }
    const Centring cx = CentringOf(x), cy = CentringOf(y);
    auto raw = [&](const at::Tensor& h, const Centring& c) {
      RawGram g;
      g.blocks = blocks;
      g.lower = HalfLowerBlockGram(h.to(kGpu), blocks).to(at::kCPU);
      g.row_means = c.row_means;
      g.grand = c.grand;
      return g;
    };
    const RawGram a = raw(x, cx), b = raw(y, cy);
    RawGram ga = a, gb = b;
    for (RawGram* g : {&ga, &gb}) {
      g->lower = g->lower.to(kGpu);
      g->row_means = g->row_means.to(kGpu);
      g->grand = g->grand.to(kGpu);
    }
    EXPECT_LT(MaxRel(CentredGramProducts(ga, gb), CentredGramProductsAten(a, b)), 1e-12);
    const at::Tensor self = CentredGramProducts(RawGram(), gb).to(at::kCPU);
    EXPECT_EQ(self.select(1, 0).abs().max().item<double>(), 0.0);
    EXPECT_LT(MaxRel(self.select(1, 1), CentredGramProductsAten(a, b).select(1, 1)), 1e-12);
    // And the biased HSIC itself: <C_x, C_y> against the float64 centred Grams.
    EXPECT_LT(MaxRel(CentredGramProducts(ga, gb).select(1, 0), (cx.gram * cy.gram).sum({1, 2})),
              1e-4);
  }
}

// Regression test: the tile GEMM went in (3974231) with every shape of this
// suite falling back to the row-block GEMMs, so only the conformance suite
// ran it. At n = 512 (8 blocks of 64 rows) the one batched GEMM of the
// triangle's tiles must give the row-block GEMMs' entries up to float32
// accumulation order, block by block, for halves and the split-bf16 Gram.
TEST_P(HalfStateOpsGpu, TileGemmEqualsRowBlockGemms) {
  c10::InferenceMode guard;
  at::manual_seed(44);
  const int64_t n = 512, d = 48;
  const int64_t blocks = GramRowBlocks(n);
  ASSERT_EQ(blocks, 8) << "the tiling this test is about";
  const at::Tensor x = States(3, n, d, GetParam()).to(kGpu);
  const at::Tensor tiles = HalfLowerBlockGram(x, blocks).to(at::kCPU);
  SetGramTileGemm(false);
  const at::Tensor rows = HalfLowerBlockGram(x, blocks).to(at::kCPU);
  SetGramTileGemm(true);
  const at::Tensor exact =
      at::bmm(x.to(at::kDouble), x.to(at::kDouble).transpose(1, 2)).to(at::kCPU);
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t lo = n * i / blocks, hi = n * (i + 1) / blocks;
    auto block = [&](const at::Tensor& k) { return k.narrow(1, lo, hi - lo).narrow(2, 0, hi); };
    // Both float32 accumulations of the same exact products: ~1e-7 apart.
    EXPECT_LT(MaxRel(block(tiles), block(rows)), 1e-6) << "row block " << i;
    EXPECT_LT(MaxRel(block(tiles), block(exact)), Float32() ? 2e-5 : 1e-5) << "row block " << i;
  }
}

// The all-pair CKA's centred Gram: the fused in-place centring against the
// same float64 arithmetic in ATen on the same raw Gram (equal entries, the
// squares' sum to float64 reordering), and against float64 centred states
// (1e-5 of the largest entry for halves; 1e-4 for float32 states, whose
// split-bf16 Gram errs ~4e-6 of K's largest entry, ~8x the centred ones
// here: 3.2e-5 seen on the CPU).
TEST_P(HalfStateOpsGpu, CentredGramMatchesAten) {
  c10::InferenceMode guard;
  at::manual_seed(47);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d);
    const at::Tensor x = States(3, s.n, s.d, GetParam());
    const Centring c = CentringOf(x);
    at::Tensor got = at::empty({3, s.n, s.n}, at::TensorOptions().dtype(at::kFloat).device(kGpu));
    const at::Tensor self =
        HalfCentredGram(got, x.to(kGpu), c.row_means.to(kGpu), c.grand.to(kGpu));
    // The same GEMM (one row block is the whole product), centred by ATen.
    at::Tensor want = HalfLowerBlockGram(x.to(kGpu), 1).to(at::kCPU);
    const at::Tensor want_self = CentreGramAten(want, c.row_means, c.grand);
    EXPECT_TRUE(at::equal(got.to(at::kCPU), want));
    EXPECT_LT(MaxRel(self, want_self), 1e-12);
    EXPECT_LT(MaxRel(got, c.gram), Float32() ? 1e-4 : 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, HalfStateOpsGpu,
                         ::testing::Values(at::kBFloat16, at::kHalf, at::kFloat),
                         [](const auto& info) {
                           return std::string(info.param == at::kBFloat16 ? "bf16"
                                              : info.param == at::kHalf   ? "fp16"
                                                                          : "fp32");
                         });

// The split of float32 states into bf16 parts: the CUDA kernel against
// ATen's conversions, bit for bit (both round to nearest even), with
// 16-byte loads (d = 48), element-wise (d = 45), and from a row that is not
// 16-byte aligned; and hi + lo within 2^-16 of each value.
TEST(SplitBf16Gpu, OperandsMatchAten) {
  ASSERT_TRUE(at::hasCUDA()) << "this suite needs a CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(48);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d);
    const at::Tensor x = States(3, s.n, s.d, at::kFloat);
    const at::Tensor want = SplitBf16OperandsAten(x);
    EXPECT_TRUE(at::equal(SplitBf16Operands(x.to(kGpu)).to(at::kCPU), want));
    const at::Tensor shifted = at::cat({x.reshape({-1}).narrow(0, 0, 1), x.reshape({-1})})
                                   .to(kGpu)
                                   .narrow(0, 1, x.numel())
                                   .view(x.sizes());
    EXPECT_TRUE(at::equal(SplitBf16Operands(shifted).to(at::kCPU), want));
    const at::Tensor lo = want.narrow(2, 0, s.d).to(at::kDouble);
    const at::Tensor hi = want.narrow(2, s.d, s.d).to(at::kDouble);
    EXPECT_TRUE(at::equal(want.narrow(2, s.d, s.d), want.narrow(2, 2 * s.d, s.d)));
    EXPECT_TRUE(at::equal(want.narrow(2, 0, s.d), want.narrow(2, 3 * s.d, s.d)));
    const at::Tensor xd = x.to(at::kDouble);
    EXPECT_TRUE(((hi + lo - xd).abs() <= std::ldexp(1.0, -16) * xd.abs()).all().item<bool>());
  }
}

// The split-bf16 Gram of float32 states on the GPU (cuBLAS's bf16 GEMM,
// float32 accumulation, K-dimension 3 d) against the float64 Gram: every
// entry within the worst-case bound (3 2^-16 + 3 d 2^-24) max_t K_tt
// (half_state_ops.h), and within 1e-5 max_t K_tt (the typical error: 4e-6
// on the CPU); the diagonal the float32 rounding of the exact norms (to
// 1 float32 ulp: the GPU's float64 norms may differ from ATen's in their
// last bit); with d = 2048 (a Mamba's width) too, where the bound is
// 3 2^-16 + 6144 2^-24 = 4.2e-4 but the error stays near 1e-6.
TEST(SplitBf16Gpu, GramMatchesFloat64) {
  ASSERT_TRUE(at::hasCUDA()) << "this suite needs a CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(49);
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  shapes.push_back({256, 2048});
  for (const Shape& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " d " << s.d);
    const at::Tensor x = States(2, s.n, s.d, at::kFloat);
    const at::Tensor xd = x.to(at::kDouble);
    const at::Tensor exact = at::bmm(xd, xd.transpose(1, 2));
    const double top = exact.diagonal(0, 1, 2).max().item<double>();
    const double bound = (3 * std::ldexp(1.0, -16) + 3 * s.d * std::ldexp(1.0, -24)) * top;
    const int64_t blocks = GramRowBlocks(s.n);
    const at::Tensor lower = HalfLowerBlockGram(x.to(kGpu), blocks).to(at::kCPU);
    double worst = 0;
    for (int64_t i = 0; i < blocks; ++i) {
      const RowBlock r = RowBlockOf(s.n, blocks, i);
      worst =
          std::max(worst, (lower.narrow(1, r.lo, r.hi - r.lo).narrow(2, 0, r.hi).to(at::kDouble) -
                           exact.narrow(1, r.lo, r.hi - r.lo).narrow(2, 0, r.hi))
                              .abs()
                              .max()
                              .item<double>());
    }
    EXPECT_LT(worst, bound);
    // Typical, not the bound: 1.14e-5 of the largest norm on an H200
    // (2026-12-01, cuBLAS's own accumulation order), 4e-6 on the CPU.
    EXPECT_LT(worst, 2e-5 * top);
    const at::Tensor norms = xd.square().sum(-1);
    EXPECT_LT(MaxRel(lower.diagonal(0, 1, 2), norms), 1.2e-7);
    // The norms handed over (as the accumulator does) give the same Gram.
    EXPECT_TRUE(
        at::equal(HalfLowerBlockGram(x.to(kGpu), 1, norms.to(kGpu)).to(at::kCPU).diagonal(0, 1, 2),
                  norms.to(at::kFloat)));
  }
}

// Every per-layer analysis on the fused path on the GPU against the float64
// path on the CPU on the same values (as HalfPrecisionStatesMatchFloat64 and
// MixedDtypeBatchMatchesFloat64 in analysis_suite_test.cc do on the CPU):
// bf16, fp16 and float32 states (the split-bf16 Grams), and a bf16 point 0
// before float32 points (a bf16 Mamba: issue 11's failed jobs). 1e-5 of each
// CKA row's scale, 4.2e-6 of every other row's (the point pass's bound).
TEST(HalfStateAccumulatorGpu, MetricsMatchFloat64OnTheCpu) {
  ASSERT_TRUE(at::hasCUDA()) << "this suite needs a CUDA device";
  c10::InferenceMode guard;
  const std::vector<LayerMetric> per_layer = {
      LayerMetric::kAdjacentCos,          LayerMetric::kIntertokenCos,
      LayerMetric::kIntertokenCosNoFirst, LayerMetric::kTokenDispersion,
      LayerMetric::kStepEnergy,           LayerMetric::kPathEnergy,
      LayerMetric::kCkaUnbiased,          LayerMetric::kCkaBiased};
  // And every analysis: the all-pair CKA's centred Grams, the heat map.
  const std::vector<LayerMetric> every = [&] {
    std::vector<LayerMetric> all = per_layer;
    all.insert(all.end(), {LayerMetric::kCkaAllUnbiased, LayerMetric::kCkaAllBiased,
                           LayerMetric::kAdjacentCosTokens});
    return all;
  }();
  const int64_t L = 3, B = 3, n = 300, d = 64;
  at::manual_seed(44);
  // Point 0's dtype and the other points'.
  const std::vector<std::pair<at::ScalarType, at::ScalarType>> types = {
      {at::kBFloat16, at::kBFloat16},
      {at::kHalf, at::kHalf},
      {at::kFloat, at::kFloat},
      {at::kBFloat16, at::kFloat}};
  for (auto [first, rest] : types) {
    for (const std::vector<LayerMetric>* metrics : {&per_layer, &every}) {
      SCOPED_TRACE(::testing::Message() << c10::toString(first) << " then " << c10::toString(rest)
                                        << (metrics == &every ? " every" : " per-layer"));
      std::vector<at::Tensor> halves;
      for (int p = 0; p < L + 2; ++p) {
        at::Tensor x = at::randn({B, n, d}) + 3 * at::randn({1, 1, d});
        x = p == 0 ? x : halves.back().to(at::kFloat) + 0.4 * x;
        halves.push_back(x.to(p == 0 ? first : rest));
      }
      LayerMetricAccumulator want(*metrics, L, c10::Device(c10::kCPU), n);
      LayerMetricAccumulator want_gram(*metrics, L, c10::Device(c10::kCPU), n);
      LayerMetricAccumulator got(*metrics, L, kGpu, n);
      // A half model's float32 points: their CKA Gram is formed from their
      // bf16 rounding (SetModelDtype; point 0's dtype here), so the CKA rows'
      // reference is float64 on that rounding.
      const bool rounded = first != at::kFloat && rest == at::kFloat;
      for (int p = 0; p < L + 2; ++p) {
        want.Observe(p, halves[p].to(at::kDouble));
        want_gram.Observe(p, (rounded ? halves[p].to(at::kBFloat16) : halves[p]).to(at::kDouble));
        got.Observe(p, halves[p].to(kGpu));
      }
      want.EndBatch();
      want_gram.EndBatch();
      got.EndBatch();
      const at::Tensor g = got.sums().to(at::kCPU);
      at::Tensor w = want.sums().clone();
      for (size_t i = 0; i < want.keys().size(); ++i) {
        if (want.keys()[i].metric.rfind("cka", 0) == 0) w[i].copy_(want_gram.sums()[i]);
      }
      at::Tensor diff = (g - w).abs();
      for (size_t i = 0; i < want.keys().size(); ++i) {
        // Gaussian draws in the states' dtype and device: not the same matrices.
        if (want.keys()[i].metric.rfind("cka_baseline", 0) == 0) diff[i].zero_();
      }
      // The CKA rows go through float32 Grams (1e-5); every other row comes
      // from the point pass's statistics, float32 partials within
      // (kPointPassThreadTerms + 3) 2^-24 of their absolute sums
      // (HalfPointPassBounds), a cosine's two norms and dot twice that.
      constexpr double kStatRows = 2 * (kPointPassThreadTerms + 3) * 0x1p-24;
      const at::Tensor ratio = std::get<0>((diff / (w.abs() + w.select(1, 2).unsqueeze(1))).max(1));
      for (size_t i = 0; i < want.keys().size(); ++i) {
        const bool cka = want.keys()[i].metric.rfind("cka", 0) == 0;
        EXPECT_LT(ratio[i].item<double>(), cka ? 1e-5 : kStatRows)
            << want.keys()[i].metric << " layer " << want.keys()[i].layer << " layer_b "
            << want.keys()[i].layer_b << " position " << want.keys()[i].position;
      }
      EXPECT_TRUE(at::equal(g.select(1, 2), w.select(1, 2)));
    }
  }
}

}  // namespace
}  // namespace layerflow::worker
