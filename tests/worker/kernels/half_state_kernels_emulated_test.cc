// The fused analysis kernels (worker/analysis/half_state_kernels.cu) run
// under the CPU emulation of CUDA against their ATen references (the *Aten
// functions of half_state_ops.h), for bf16, fp16 and float32 states (the
// float32 variants and the split-bf16 pass are new and have not yet run on
// a GPU), with row widths that take the 16-byte-load path and ones that do
// not, several prompts, and Gram sizes whose row blocks are uneven.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "worker/analysis/half_state_kernels.h"
#include "worker/analysis/half_state_ops.h"

namespace layerflow::worker {
namespace {

namespace ck = cuda_kernels;  // cuda_kernels_emulated in this target

ck::StateType TypeOf(at::ScalarType t) {
  return t == at::kBFloat16 ? ck::StateType::kBFloat16
         : t == at::kHalf   ? ck::StateType::kFloat16
                            : ck::StateType::kFloat32;
}

double MaxRel(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kDouble);
  const double scale = w.abs().max().item<double>();
  return (got.to(at::kDouble) - w).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

// Residual-stream-like states: a shared direction plus noise.
at::Tensor States(int64_t b, int64_t n, int64_t d, at::ScalarType type) {
  return (at::randn({b, n, d}) + 3 * at::randn({1, 1, d})).to(type);
}

int64_t GramRowGroups(int64_t n) { return std::clamp<int64_t>(n / 16, 1, 256); }

class HalfStateKernelsEmulated : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  c10::InferenceMode guard_;
};

TEST_P(HalfStateKernelsEmulated, TokenStatsEqualAten) {
  const at::ScalarType type = GetParam();
  at::manual_seed(4);
  for (int64_t d : {72, 70}) {  // 16-byte loads, and element-wise
    const at::Tensor cur = States(2, 37, d, type), prev = States(2, 37, d, type);
    const at::Tensor v = at::randn({2, d}, at::kDouble);
    at::Tensor out = at::empty({2 * 37, 4}, at::kDouble);
    ASSERT_EQ(ck::LaunchTokenStats(TypeOf(type), cur.data_ptr(), prev.data_ptr(),
                                   v.data_ptr<double>(), 2 * 37, 37, d, out.data_ptr<double>(),
                                   nullptr),
              cudaSuccess);
    const TokenStats want = HalfTokenStatsAten(cur, prev, v);
    const at::Tensor got = out.view({2, 37, 4});
    EXPECT_LE(MaxRel(got.select(2, 0), want.norm_sq), 1e-13) << type << " d " << d;
    EXPECT_LE(MaxRel(got.select(2, 1), want.prev_dot), 1e-13) << type << " d " << d;
    EXPECT_LE(MaxRel(got.select(2, 2), want.step_sq), 1e-13) << type << " d " << d;
    EXPECT_LE(MaxRel(got.select(2, 3), want.vec_dot), 1e-13) << type << " d " << d;
  }
}

TEST_P(HalfStateKernelsEmulated, WeightedTokenSumsEqualAten) {
  const at::ScalarType type = GetParam();
  at::manual_seed(5);
  for (int64_t d : {72, 70}) {
    const at::Tensor h = States(2, 45, d, type);
    for (int k = 1; k <= ck::kMaxWeightRows; ++k) {
      const at::Tensor w = at::rand({2, k, 45}, at::kDouble);
      const int64_t splits = 3;
      at::Tensor partial = at::empty({2, splits, k, d}, at::kDouble);
      ASSERT_EQ(ck::LaunchWeightedTokenSums(TypeOf(type), w.data_ptr<double>(), k, h.data_ptr(),
                                            2, 45, d, splits, partial.data_ptr<double>(),
                                            nullptr),
                cudaSuccess);
      EXPECT_LE(MaxRel(partial.sum(1), HalfWeightedTokenSumsAten(w, h)), 1e-13)
          << type << " d " << d << " k " << k;
    }
  }
}

TEST_P(HalfStateKernelsEmulated, GramPassesEqualAten) {
  const at::ScalarType type = GetParam();
  at::manual_seed(6);
  const int64_t n = 150;  // 2 row blocks of 75: uneven against the warps' rows
  const int64_t blocks = GramRowBlocks(n);
  ASSERT_GT(blocks, 1);
  auto raw = [&](const at::Tensor& h) {
    RawGram g;
    g.blocks = blocks;
    g.lower = HalfLowerBlockGram(h, blocks);
    const at::Tensor mean = h.to(at::kDouble).mean(1);
    g.row_means = at::bmm(h.to(at::kDouble), mean.unsqueeze(2)).squeeze(2).contiguous();
    g.grand = mean.square().sum(-1).contiguous();
    return g;
  };
  const RawGram a = raw(States(2, n, 40, type)), b = raw(States(2, n, 40, type));
  const int64_t groups = GramRowGroups(n);
  for (bool with_a : {true, false}) {
    at::Tensor partial = at::empty({2, 2, groups}, at::kDouble);
    ASSERT_EQ(ck::LaunchCentredGramProducts(
                  with_a ? a.lower.data_ptr<float>() : nullptr,
                  with_a ? a.row_means.data_ptr<double>() : nullptr,
                  with_a ? a.grand.data_ptr<double>() : nullptr, b.lower.data_ptr<float>(),
                  b.row_means.data_ptr<double>(), b.grand.data_ptr<double>(), 2, n, blocks,
                  groups, partial.data_ptr<double>(), nullptr),
              cudaSuccess);
    const at::Tensor want = CentredGramProductsAten(with_a ? a : RawGram(), b);
    EXPECT_LE(MaxRel(partial.sum(2).select(1, 1), want.select(1, 1)), 1e-11) << type;
    if (with_a) EXPECT_LE(MaxRel(partial.sum(2).select(1, 0), want.select(1, 0)), 1e-11) << type;
  }
  // The all-pair CKA's in-place centring of whole Grams.
  const at::Tensor h = States(2, n, 40, type);
  at::Tensor k = at::bmm(h.to(at::kFloat), h.to(at::kFloat).transpose(1, 2)).contiguous();
  const RawGram rg = raw(h);
  at::Tensor k_ref = k.clone();
  at::Tensor partial = at::empty({2, groups}, at::kDouble);
  ASSERT_EQ(ck::LaunchCentreGram(k.data_ptr<float>(), rg.row_means.data_ptr<double>(),
                                 rg.grand.data_ptr<double>(), 2, n, groups,
                                 partial.data_ptr<double>(), nullptr),
            cudaSuccess);
  const at::Tensor norm_sq = CentreGramAten(k_ref, rg.row_means, rg.grand);
  EXPECT_LE(MaxRel(k, k_ref), 1e-6) << type;  // one float32 rounding apart at most
  EXPECT_LE(MaxRel(partial.sum(1), norm_sq), 1e-6) << type;
}

TEST(HalfStateKernelsEmulatedSplit, SplitBf16EqualsAtenBitForBit) {
  c10::InferenceMode guard;
  at::manual_seed(7);
  for (int64_t d : {72, 70}) {
    const at::Tensor x = (at::randn({3, 11, d}) * 50).contiguous();
    at::Tensor out = at::empty({3, 11, 4 * d}, at::kBFloat16);
    ASSERT_EQ(ck::LaunchSplitBf16(x.data_ptr<float>(), 33, d, out.data_ptr(), nullptr),
              cudaSuccess);
    EXPECT_TRUE(at::equal(out, SplitBf16OperandsAten(x))) << "d " << d;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, HalfStateKernelsEmulated,
                         ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

}  // namespace
}  // namespace layerflow::worker
