// The analysis-suite metrics (intertoken_cos_nofirst, token_dispersion,
// step_energy, path_energy, cka_unbiased, cka_biased) against naive float64
// loops, hand-worked cases, CKA invariances and the METHODS.md golden
// values, and the merge-by-addition property of their statistics.
#include <cmath>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/worker/naive_metrics.h"
#include "tests/worker/torch_export.h"
#include "worker/analysis/layer_metrics.h"

namespace layerflow::worker {
namespace {

using testing::NaiveIntertokenCosNoFirst;
using testing::NaiveLinearCka;
using testing::NaiveStepEnergy;
using testing::NaiveTokenDispersion;
using testing::ToDoubles;

const std::vector<LayerMetric> kSuite = {
    LayerMetric::kIntertokenCosNoFirst, LayerMetric::kTokenDispersion,
    LayerMetric::kStepEnergy,           LayerMetric::kPathEnergy,
    LayerMetric::kCkaUnbiased,          LayerMetric::kCkaBiased};

std::vector<LayerMetric> AllMetrics() {
  std::vector<LayerMetric> all = {LayerMetric::kAdjacentCos,
                                  LayerMetric::kIntertokenCos};
  all.insert(all.end(), kSuite.begin(), kSuite.end());
  return all;
}

void FeedBatch(LayerMetricAccumulator& acc, const std::vector<at::Tensor>& points) {
  for (size_t p = 0; p < points.size(); ++p) acc.Observe(p, points[p]);
  acc.EndBatch();
}

int64_t Row(const LayerMetricAccumulator& acc, const std::string& metric,
            int layer) {
  for (size_t i = 0; i < acc.keys().size(); ++i) {
    if (acc.keys()[i].metric == metric && acc.keys()[i].layer == layer) return i;
  }
  ADD_FAILURE() << "no row " << metric << " " << layer;
  return 0;
}

double Stat(const LayerMetricAccumulator& acc, const std::string& metric,
            int layer, int column = LayerMetricAccumulator::kSum) {
  return acc.sums()[Row(acc, metric, layer)][column].item<double>();
}

int CountRows(const LayerMetricAccumulator& acc, const std::string& metric) {
  int count = 0;
  for (const StatKey& key : acc.keys()) count += key.metric == metric;
  return count;
}

TEST(AnalysisSuiteTest, KeysFollowTheLayerNumbering) {
  LayerMetricAccumulator acc(AllMetrics(), 3, c10::Device(c10::kCPU));
  EXPECT_EQ(CountRows(acc, "adjacent_cos"), 3);
  EXPECT_EQ(CountRows(acc, "intertoken_cos"), 5);
  EXPECT_EQ(CountRows(acc, "intertoken_cos_nofirst"), 5);  // 0..L, final
  EXPECT_EQ(CountRows(acc, "token_dispersion"), 5);
  EXPECT_EQ(CountRows(acc, "step_energy"), 3);  // residual steps 0..L-1
  EXPECT_EQ(CountRows(acc, "cka_unbiased"), 3);
  EXPECT_EQ(CountRows(acc, "cka_biased"), 3);
  ASSERT_EQ(CountRows(acc, "path_energy"), 1);
  EXPECT_EQ(acc.keys()[Row(acc, "path_energy", 0)].layer, 0);
  for (const StatKey& key : acc.keys()) EXPECT_GE(key.layer, 0);
  EXPECT_EQ(acc.keys().size(), 3u + 5 + 5 + 5 + 3 + 1 + 3 + 3);
}

// Every suite metric, sums and sums of squares, against the naive loops.
TEST(AnalysisSuiteTest, MatchesNaiveLoopsOnRandomStates) {
  c10::InferenceMode guard;
  const int64_t L = 3, B = 3;
  at::manual_seed(10);
  for (auto [n, d] : std::vector<std::pair<int64_t, int64_t>>{
           {4, 3}, {5, 16}, {17, 8}, {31, 5}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n << " d " << d);
    std::vector<at::Tensor> points;
    for (int p = 0; p < L + 2; ++p) {
      // A shared offset (cosines far from 0) and a growing residual.
      at::Tensor x = at::randn({B, n, d}, at::kDouble) + at::randn({1, 1, d}, at::kDouble);
      points.push_back(p == 0 ? x : points.back() + 0.5 * x);
    }
    LayerMetricAccumulator acc(kSuite, L, c10::Device(c10::kCPU));
    FeedBatch(acc, points);

    auto check = [&](const std::string& metric, int layer,
                     const std::vector<double>& values) {
      double sum = 0, sum_sq = 0;
      for (double v : values) {
        sum += v;
        sum_sq += v * v;
      }
      const double tol = 1e-11 * (1 + std::abs(sum_sq));
      EXPECT_NEAR(Stat(acc, metric, layer, 0), sum, tol) << metric << " " << layer;
      EXPECT_NEAR(Stat(acc, metric, layer, 1), sum_sq, tol) << metric << " " << layer;
      EXPECT_EQ(Stat(acc, metric, layer, 2), static_cast<double>(values.size()));
    };
    std::vector<double> path(B, 0.0);
    for (int p = 0; p < L + 2; ++p) {
      std::vector<double> nofirst, dispersion;
      for (int b = 0; b < B; ++b) {
        const std::vector<double> h = ToDoubles(points[p][b]);
        nofirst.push_back(NaiveIntertokenCosNoFirst(h, n, d));
        dispersion.push_back(NaiveTokenDispersion(h, n, d));
      }
      check("intertoken_cos_nofirst", p, nofirst);
      check("token_dispersion", p, dispersion);
    }
    for (int l = 0; l < L; ++l) {
      std::vector<double> step, biased, unbiased;
      for (int b = 0; b < B; ++b) {
        const std::vector<double> x = ToDoubles(points[l][b]);
        const std::vector<double> y = ToDoubles(points[l + 1][b]);
        step.push_back(NaiveStepEnergy(x, y, n, d));
        path[b] += step.back();
        biased.push_back(NaiveLinearCka(x, d, y, d, n, false));
        unbiased.push_back(NaiveLinearCka(x, d, y, d, n, true));
      }
      check("step_energy", l, step);
      check("cka_biased", l, biased);
      check("cka_unbiased", l, unbiased);
    }
    check("path_energy", 0, path);
  }
}

TEST(AnalysisSuiteTest, LinearCkaMatchesNaiveLoops) {
  c10::InferenceMode guard;
  at::manual_seed(11);
  for (auto [n, dx, dy] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {4, 2, 3}, {12, 5, 5}, {20, 30, 7}, {40, 3, 12}}) {
    at::Tensor x = at::randn({n, dx}, at::kDouble);
    at::Tensor y = at::randn({n, dy}, at::kDouble) + x.narrow(1, 0, 1);
    for (bool unbiased : {false, true}) {
      EXPECT_NEAR(LinearCka(x, y, unbiased ? CkaEstimator::kUnbiased
                                           : CkaEstimator::kBiased),
                  NaiveLinearCka(ToDoubles(x), dx, ToDoubles(y), dy, n, unbiased),
                  1e-12)
          << "n " << n << " dx " << dx << " dy " << dy << " unbiased " << unbiased;
    }
  }
}

// METHODS.md golden values: numpy seed 1337, X = randn(100, 10),
// Y = randn(100, 10) + X (tests/worker/fixtures/make_cka_golden.py).
TEST(AnalysisSuiteTest, LinearCkaGoldenValues) {
  std::ifstream in(std::string(LF_TEST_FIXTURES_DIR) + "/cka_golden.txt");
  ASSERT_TRUE(in.good()) << "missing " << LF_TEST_FIXTURES_DIR << "/cka_golden.txt";
  int64_t n = 0, d = 0;
  in >> n >> d;
  ASSERT_EQ(n, 100);
  ASSERT_EQ(d, 10);
  std::vector<double> x(n * d), y(n * d);
  for (double& v : x) in >> v;
  for (double& v : y) in >> v;
  ASSERT_FALSE(in.fail());
  c10::InferenceMode guard;
  const at::Tensor tx = at::tensor(x, at::kDouble).view({n, d});
  const at::Tensor ty = at::tensor(y, at::kDouble).view({n, d});
  EXPECT_NEAR(LinearCka(tx, ty, CkaEstimator::kBiased), 0.55761, 1e-5);
  EXPECT_NEAR(LinearCka(tx, ty, CkaEstimator::kUnbiased), 0.51346, 1e-5);
  EXPECT_NEAR(NaiveLinearCka(x, d, y, d, n, false), 0.55761, 1e-5);
  EXPECT_NEAR(NaiveLinearCka(x, d, y, d, n, true), 0.51346, 1e-5);
  // float32 inputs are upcast.
  EXPECT_NEAR(LinearCka(tx.to(at::kFloat), ty.to(at::kFloat), CkaEstimator::kBiased),
              0.55761, 1e-5);
}

TEST(AnalysisSuiteTest, CkaInvariances) {
  c10::InferenceMode guard;
  at::manual_seed(12);
  for (auto [n, d] : std::vector<std::pair<int64_t, int64_t>>{{30, 5}, {9, 20}}) {
    const at::Tensor x = at::randn({n, d}, at::kDouble) + 0.3;
    const at::Tensor q = std::get<0>(at::linalg_qr(at::randn({d, d}, at::kDouble)));
    ASSERT_TRUE(at::allclose(at::matmul(q.t(), q), at::eye(d, at::kDouble), 0, 1e-12));
    for (CkaEstimator e : {CkaEstimator::kBiased, CkaEstimator::kUnbiased}) {
      EXPECT_NEAR(LinearCka(x, x, e), 1.0, 1e-12);
      EXPECT_NEAR(LinearCka(x, at::matmul(x, q), e), 1.0, 1e-12);
      EXPECT_NEAR(LinearCka(x, 3.7 * x, e), 1.0, 1e-12);
      EXPECT_NEAR(LinearCka(at::matmul(x, q) * 0.01, x, e), 1.0, 1e-12);
    }
  }
  // Too few rows for the estimator.
  EXPECT_THROW(LinearCka(at::randn({3, 2}), at::randn({3, 2}), CkaEstimator::kUnbiased),
               c10::Error);
  EXPECT_THROW(LinearCka(at::randn({3, 2}), at::randn({4, 2}), CkaEstimator::kBiased),
               c10::Error);
}

TEST(AnalysisSuiteTest, HandWorkedCases) {
  c10::InferenceMode guard;
  const int64_t n = 6, d = 6;
  // Identical tokens: no dispersion, every pair has cos 1.
  const at::Tensor same = at::arange(1, d + 1, at::kDouble).repeat({n, 1});
  // Position 0 arbitrary, the others mutually orthogonal: cos 0 without it.
  at::Tensor orthogonal = at::diag(at::arange(1, n + 1, at::kDouble));
  orthogonal[0].fill_(1.0);
  // Two tokens +v, -v: mean zero, so dispersion 1.
  const at::Tensor opposite =
      at::ones({2, d}, at::kDouble) * at::tensor({1.0, -1.0}, at::kDouble).unsqueeze(1);

  LayerMetricAccumulator acc(kSuite, 1, c10::Device(c10::kCPU));
  // Points: same, same (identical layers: no step), orthogonal (final).
  FeedBatch(acc, {same.unsqueeze(0), same.unsqueeze(0), orthogonal.unsqueeze(0)});
  EXPECT_NEAR(Stat(acc, "token_dispersion", 0), 0.0, 1e-15);
  EXPECT_NEAR(Stat(acc, "intertoken_cos_nofirst", 0), 1.0, 1e-14);
  EXPECT_NEAR(Stat(acc, "intertoken_cos_nofirst", 2), 0.0, 1e-15);
  EXPECT_EQ(Stat(acc, "step_energy", 0), 0.0);
  EXPECT_EQ(Stat(acc, "path_energy", 0), 0.0);
  // The centred Grams of identical tokens are 0 (up to rounding): CKA is
  // defined as 0 there, not NaN or noise.
  EXPECT_EQ(Stat(acc, "cka_biased", 0, 2), 1.0);
  EXPECT_EQ(Stat(acc, "cka_biased", 0), 0.0);
  EXPECT_EQ(LinearCka(same, at::randn({n, d}), CkaEstimator::kBiased), 0.0);
  EXPECT_EQ(LinearCka(at::randn({n, d}), 2 * same, CkaEstimator::kUnbiased), 0.0);

  LayerMetricAccumulator acc2(kSuite, 2, c10::Device(c10::kCPU));
  // Layer 1 = 2 x layer 0: step energy 1; layer 2 = -layer 1: step 4.
  const at::Tensor x = at::randn({1, n, d}, at::kDouble);
  FeedBatch(acc2, {x, 2 * x, -2 * x, opposite.unsqueeze(0)});
  EXPECT_NEAR(Stat(acc2, "step_energy", 0), 1.0, 1e-14);
  EXPECT_NEAR(Stat(acc2, "step_energy", 1), 4.0, 1e-14);
  EXPECT_NEAR(Stat(acc2, "path_energy", 0), 5.0, 1e-14);
  EXPECT_NEAR(Stat(acc2, "path_energy", 0, 1), 25.0, 1e-13);
  EXPECT_NEAR(Stat(acc2, "token_dispersion", 3), 1.0, 1e-15);
  // Scaled copies: CKA 1 with both estimators.
  for (int l = 0; l < 2; ++l) {
    EXPECT_NEAR(Stat(acc2, "cka_biased", l), 1.0, 1e-12);
    EXPECT_NEAR(Stat(acc2, "cka_unbiased", l), 1.0, 1e-12);
  }
}

// The per-prompt CKA of the accumulator is LinearCka of that prompt.
TEST(AnalysisSuiteTest, AccumulatorCkaIsLinearCkaPerPrompt) {
  c10::InferenceMode guard;
  at::manual_seed(13);
  const at::Tensor a = at::randn({2, 11, 7});
  const at::Tensor b = a + at::randn({2, 11, 7});
  LayerMetricAccumulator acc({LayerMetric::kCkaBiased, LayerMetric::kCkaUnbiased},
                             1, c10::Device(c10::kCPU));
  FeedBatch(acc, {a, b, at::randn({2, 11, 7})});
  for (CkaEstimator e : {CkaEstimator::kBiased, CkaEstimator::kUnbiased}) {
    const double v0 = LinearCka(a[0], b[0], e), v1 = LinearCka(a[1], b[1], e);
    const std::string name =
        e == CkaEstimator::kBiased ? "cka_biased" : "cka_unbiased";
    EXPECT_NEAR(Stat(acc, name, 0), v0 + v1, 1e-12);
    EXPECT_NEAR(Stat(acc, name, 0, 1), v0 * v0 + v1 * v1, 1e-12);
  }
}

TEST(AnalysisSuiteTest, ChunkStatsMergeByAddition) {
  c10::InferenceMode guard;
  at::manual_seed(14);
  const int64_t L = 2;
  std::vector<std::vector<at::Tensor>> batches;
  for (int b = 0; b < 5; ++b) {
    std::vector<at::Tensor> points;
    const int64_t n = 2 + b;  // 2..6 tokens: some too short for some metrics
    for (int p = 0; p < L + 2; ++p) points.push_back(at::randn({2, n, 8}));
    batches.push_back(points);
  }
  LayerMetricAccumulator all(AllMetrics(), L, c10::Device(c10::kCPU));
  LayerMetricAccumulator first(AllMetrics(), L, c10::Device(c10::kCPU));
  LayerMetricAccumulator second(AllMetrics(), L, c10::Device(c10::kCPU));
  for (int b = 0; b < 5; ++b) {
    FeedBatch(all, batches[b]);
    FeedBatch(b < 2 ? first : second, batches[b]);
  }
  EXPECT_TRUE(at::allclose(first.sums() + second.sums(), all.sums(), 0, 1e-12));
  EXPECT_FALSE(at::isnan(all.sums()).any().item<bool>());
  EXPECT_EQ(Stat(all, "token_dispersion", 0, 2), 10);
  EXPECT_EQ(Stat(all, "path_energy", 0, 2), 10);
  EXPECT_EQ(Stat(all, "cka_biased", 1, 2), 10);       // n >= 2
  EXPECT_EQ(Stat(all, "intertoken_cos_nofirst", 3, 2), 8);  // n >= 3
  EXPECT_EQ(Stat(all, "cka_unbiased", 1, 2), 6);      // n >= 4
}

TEST(AnalysisSuiteTest, ParseKnowsTheSuite) {
  auto parsed = ParseLayerMetrics(
      {"intertoken_cos_nofirst", "token_dispersion", "step_energy",
       "path_energy", "cka_unbiased", "cka_biased", "adjacent_cos"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)[4], LayerMetric::kCkaUnbiased);
  auto bad = ParseLayerMetrics({"cka"});
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("cka_unbiased"), std::string::npos);
  EXPECT_NE(bad.status().message().find("intertoken_cos_nofirst"), std::string::npos);
}

}  // namespace
}  // namespace layerflow::worker
