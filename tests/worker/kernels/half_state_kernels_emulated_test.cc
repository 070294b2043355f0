// The fused analysis kernels (worker/analysis/half_state_kernels.cu) run
// under the CPU emulation of CUDA against their ATen references (the *Aten
// functions of half_state_ops.h), for bf16, fp16 and float32 states (the
// float32 variants and the split-bf16 pass are new and have not yet run on
// a GPU), with row widths that take the 16-byte-load path and ones that do
// not, several prompts, and Gram sizes whose row blocks are uneven.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"

#include "worker/analysis/half_state_kernels.h"
#include "worker/analysis/half_state_ops.h"
#include "tests/worker/testing/tensor_match.h"

namespace layerflow::worker {
namespace {

using testing::MaxRel;
using testing::WithinBounds;
constexpr auto& States = testing::ResidualLikeStates;

namespace ck = cuda_kernels;  // cuda_kernels_emulated in this target

ck::StateType TypeOf(at::ScalarType t) {
  return t == at::kBFloat16 ? ck::StateType::kBFloat16
         : t == at::kHalf   ? ck::StateType::kFloat16
                            : ck::StateType::kFloat32;
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
    ASSERT_EQ(
        ck::LaunchTokenStats(TypeOf(type), cur.data_ptr(), prev.data_ptr(), v.data_ptr<double>(),
                             2 * 37, 37, d, out.data_ptr<double>(), nullptr),
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
      ASSERT_EQ(ck::LaunchWeightedTokenSums(TypeOf(type), w.data_ptr<double>(), k, h.data_ptr(), 2,
                                            45, d, splits, partial.data_ptr<double>(), nullptr),
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
                  b.row_means.data_ptr<double>(), b.grand.data_ptr<double>(), 2, n, blocks, groups,
                  partial.data_ptr<double>(), nullptr),
              cudaSuccess);
    const at::Tensor want = CentredGramProductsAten(with_a ? a : RawGram(), b);
    EXPECT_LE(MaxRel(partial.sum(2).select(1, 1), want.select(1, 1)), 1e-11) << type;
    if (with_a) {
      EXPECT_LE(MaxRel(partial.sum(2).select(1, 0), want.select(1, 0)), 1e-11) << type;
    }
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

// The one-pass kernel against the per-quantity Aten references: rows whole
// in one slot a thread (d 72), in two and in three (float32 1032 / 2056,
// bf16 / fp16 2056 / 4104), with and without the point before, every row
// kind, and none.
TEST_P(HalfStateKernelsEmulated, PointPassEqualsAten) {
  const at::ScalarType type = GetParam();
  const bool f32 = type == at::kFloat;
  at::manual_seed(8);
  const std::vector<int64_t> widths =
      f32 ? std::vector<int64_t>{72, 1032, 2056} : std::vector<int64_t>{72, 2056, 4104};
  for (int64_t d : widths) {
    for (bool with_prev : {true, false}) {
      for (int rows_case = 0; rows_case < 3; ++rows_case) {
        // The wider rows (more slots a thread) once, with everything: each
        // emulated launch runs 256 OS threads a block.
        if (d > 72 && (!with_prev || rows_case > 0)) continue;
        PointPassSpec spec;
        if (rows_case == 0) {  // every row (the rounded one for float32 states)
          spec.unit = spec.unit_nofirst = spec.plain = true;
          spec.rounded = f32;
        } else if (rows_case == 1) {
          spec.unit_nofirst = true;
          spec.rounded = f32;
        }  // rows_case 2: the statistics alone
        const int64_t b = 2, n = 37, splits = 3;
        const at::Tensor cur = States(b, n, d, type), prev = States(b, n, d, type);
        // The point before's row means: with every row case, rounded for
        // float32 states in the first.
        if (with_prev && rows_case < 2) {
          spec.prev_vec = at::randn({b, d}, at::kDouble);
          spec.prev_vec_rounded = f32 && rows_case == 0;
        }
        const ck::PassRows rows{spec.unit, spec.unit_nofirst, spec.plain, spec.rounded};
        at::Tensor stats = at::empty({ck::kPassStats, b, n}, at::kDouble);
        at::Tensor partial = at::empty({b, splits, std::max(rows.count(), 1), d}, at::kDouble);
        at::Tensor rounded = at::empty({b, n, d}, at::kBFloat16);
        const std::string where = absl::StrCat(c10::toString(type), " d ", d, " prev ", with_prev,
                                               " rows ", rows.count());
        ASSERT_TRUE(ck::PointPassFits(TypeOf(type), d)) << where;
        ASSERT_EQ(
            ck::LaunchPointPass(
                TypeOf(type), cur.data_ptr(), with_prev ? prev.data_ptr() : nullptr,
                spec.prev_vec.defined() ? spec.prev_vec.data_ptr<double>() : nullptr,
                spec.prev_vec_rounded, b, n, d, rows, spec.tiny, splits, stats.data_ptr<double>(),
                partial.data_ptr<double>(), spec.rounded ? rounded.data_ptr() : nullptr, nullptr),
            cudaSuccess)
            << where;
        const at::Tensor no_prev = at::Tensor();
        const PointPassResult want = HalfPointPassAten(cur, with_prev ? prev : no_prev, spec);
        const PointPassResult bound = HalfPointPassBounds(cur, with_prev ? prev : no_prev, spec);
        EXPECT_TRUE(WithinBounds(stats[0], want.norm_sq, bound.norm_sq)) << where;
        if (with_prev) {
          EXPECT_TRUE(WithinBounds(stats[1], want.prev_dot, bound.prev_dot)) << where;
          EXPECT_TRUE(WithinBounds(stats[2], want.step_sq, bound.step_sq)) << where;
        } else {
          EXPECT_EQ(stats[1].abs().max().item<double>(), 0.0) << where;
          EXPECT_EQ(stats[2].abs().max().item<double>(), 0.0) << where;
        }
        if (spec.prev_vec.defined()) {
          EXPECT_TRUE(WithinBounds(stats[3], want.prev_vec_dot, bound.prev_vec_dot)) << where;
        } else {
          EXPECT_EQ(stats[3].abs().max().item<double>(), 0.0) << where;
        }
        if (spec.rounded) {
          EXPECT_TRUE(WithinBounds(stats[4], want.rounded_norm_sq, bound.rounded_norm_sq)) << where;
        } else {
          EXPECT_EQ(stats[4].abs().max().item<double>(), 0.0) << where;
        }
        const at::Tensor sums = partial.narrow(2, 0, rows.count()).sum(1);  // [b, k, d]
        int r = 0;
        if (spec.unit || spec.unit_nofirst) {
          const int64_t units = want.unit_sums.size(1);
          EXPECT_TRUE(WithinBounds(sums.narrow(1, 0, units), want.unit_sums, bound.unit_sums))
              << where;
          r += static_cast<int>(units);
        }
        if (spec.plain) {
          EXPECT_LE(MaxRel(sums.select(1, r++), want.plain_sum), 1e-13) << where;
        }
        if (spec.rounded) {
          EXPECT_LE(MaxRel(sums.select(1, r++), want.rounded_sum), 1e-13) << where;
          EXPECT_TRUE(at::equal(rounded, want.rounded)) << where;
        }
        EXPECT_EQ(r, rows.count()) << where;
      }
    }
  }
}

// Rows the kernel does not take are refused, not read out of bounds: a
// width that is not a whole number of 16-byte loads, one too wide, and a
// rounding of half-precision states.
TEST(HalfStateKernelsEmulatedPass, RefusesRowsItCannotTake) {
  EXPECT_FALSE(ck::PointPassFits(ck::StateType::kFloat32, 70));
  EXPECT_FALSE(ck::PointPassFits(ck::StateType::kFloat32, 4100));
  EXPECT_TRUE(ck::PointPassFits(ck::StateType::kFloat32, 4096));
  EXPECT_TRUE(ck::PointPassFits(ck::StateType::kBFloat16, 8192));
  EXPECT_FALSE(ck::PointPassFits(ck::StateType::kBFloat16, 8200));
  c10::InferenceMode guard;
  const at::Tensor x = at::zeros({1, 16, 8}, at::kBFloat16);  // allocations: 16-byte aligned
  at::Tensor stats = at::empty({ck::kPassStats, 16}, at::kDouble), out = at::empty_like(x);
  EXPECT_EQ(ck::LaunchPointPass(ck::StateType::kBFloat16, x.data_ptr(), nullptr, nullptr, false, 1,
                                16, 8, ck::PassRows(), 1e-300, 1, stats.data_ptr<double>(), nullptr,
                                out.data_ptr(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ck::LaunchPointPass(ck::StateType::kBFloat16, x.data_ptr(), nullptr, nullptr, false, 1,
                                16, 8, ck::PassRows(), 1e-300, 1, stats.data_ptr<double>(), nullptr,
                                nullptr, nullptr),
            cudaSuccess);
  // A rounded row is a sum of bf16(cur_t): float32 states only, as the
  // rounding itself.
  const at::Tensor f = at::zeros({1, 16, 8}, at::kFloat);
  at::Tensor partial = at::empty({1, 1, 1, 8}, at::kDouble);
  const ck::PassRows rounded_row{.rounded = true};
  EXPECT_EQ(ck::LaunchPointPass(ck::StateType::kBFloat16, x.data_ptr(), nullptr, nullptr, false, 1,
                                16, 8, rounded_row, 1e-300, 1, stats.data_ptr<double>(),
                                partial.data_ptr<double>(), nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ck::LaunchPointPass(ck::StateType::kFloat32, f.data_ptr(), nullptr, nullptr, false, 1,
                                16, 8, rounded_row, 1e-300, 1, stats.data_ptr<double>(),
                                partial.data_ptr<double>(), nullptr, nullptr),
            cudaSuccess);
  // The rounding of zeros: zeros.
  EXPECT_EQ(partial.abs().max().item<double>(), 0.0);
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
