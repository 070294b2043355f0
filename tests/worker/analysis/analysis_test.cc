// Layer metrics against naive float64 loops, hand-worked cases, and the
// merge-by-addition property of their statistics.
#include <cmath>
#include <iterator>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/worker/analysis/accumulator_rows.h"
#include "tests/worker/testing/naive_reference.h"
#include "tests/worker/testing/torch_export.h"
#include "worker/analysis/layer_metrics.h"

namespace layerflow::worker {
namespace {

using testing::FeedBatch;
using testing::NaiveAdjacentCos;
using testing::NaiveIntertokenCos;
using testing::Row;
using testing::ToDoubles;

const std::vector<LayerMetric> kBoth = {LayerMetric::kAdjacentCos, LayerMetric::kIntertokenCos};

TEST(LayerMetricsTest, KeysCoverLayersAndFinal) {
  LayerMetricAccumulator acc(kBoth, 3, c10::Device(c10::kCPU));
  ASSERT_EQ(acc.keys().size(), 3u + 5u);  // adjacent 0..2, intertoken 0..4
  EXPECT_EQ(acc.keys()[0].metric, "adjacent_cos");
  EXPECT_EQ(acc.keys()[2].layer, 2);
  EXPECT_EQ(acc.keys()[3].metric, "intertoken_cos");
  EXPECT_EQ(acc.keys()[7].layer, 4);  // `final` = L + 1
}

TEST(LayerMetricsTest, MatchesNaiveLoopsOnRandomStates) {
  c10::InferenceMode guard;
  const int64_t L = 2, B = 3, n = 17, d = 8;
  at::manual_seed(0);
  std::vector<at::Tensor> points;
  for (int p = 0; p < L + 2; ++p) {
    // Shared offset: cosines far from 0, like real residual streams.
    points.push_back(at::randn({B, n, d}) + at::randn({1, 1, d}));
  }
  LayerMetricAccumulator acc(kBoth, L, c10::Device(c10::kCPU));
  FeedBatch(acc, points);
  const at::Tensor sums = acc.sums();

  for (int p = 0; p < L + 2; ++p) {
    double sum = 0, sum_sq = 0;
    for (int b = 0; b < B; ++b) {
      const double v = NaiveIntertokenCos(ToDoubles(points[p][b]), n, d);
      sum += v;
      sum_sq += v * v;
    }
    const int64_t row = Row(acc, "intertoken_cos", p);
    EXPECT_NEAR(sums[row][0].item<double>(), sum, 1e-12);
    EXPECT_NEAR(sums[row][1].item<double>(), sum_sq, 1e-12);
    EXPECT_EQ(sums[row][2].item<double>(), B);
  }
  for (int l = 0; l < L; ++l) {
    double sum = 0, sum_sq = 0;
    for (int b = 0; b < B; ++b) {
      const double v = NaiveAdjacentCos(ToDoubles(points[l][b]), ToDoubles(points[l + 1][b]), n, d);
      sum += v;
      sum_sq += v * v;
    }
    const int64_t row = Row(acc, "adjacent_cos", l);
    EXPECT_NEAR(sums[row][0].item<double>(), sum, 1e-12);
    EXPECT_NEAR(sums[row][1].item<double>(), sum_sq, 1e-12);
    EXPECT_EQ(sums[row][2].item<double>(), B);
  }
}

TEST(LayerMetricsTest, HandWorkedCases) {
  c10::InferenceMode guard;
  const int64_t d = 6, n = 6;
  // Identical tokens (up to positive scale): every pair has cos 1.
  at::Tensor same = at::arange(1, d + 1, at::kFloat).repeat({n, 1}) *
                    at::arange(1, n + 1, at::kFloat).unsqueeze(1);
  // Mutually orthogonal tokens: scaled basis vectors, cos 0.
  at::Tensor orthogonal = at::diag(at::arange(1, n + 1, at::kFloat));
  // Alternating sign (3 tokens +v, 3 tokens -v): of the 15 pairs, 6 are
  // equal (cos 1) and 9 opposite (cos -1): mean (6 - 9) / 15 = -0.2.
  at::Tensor alternating =
      at::ones({n, d}) * at::tensor({1.f, -1.f, 1.f, -1.f, 1.f, -1.f}).unsqueeze(1);
  LayerMetricAccumulator acc(kBoth, 1, c10::Device(c10::kCPU));
  // Points: same, same (identical layers), orthogonal (final).
  FeedBatch(acc, {same.unsqueeze(0), same.unsqueeze(0) * 3, orthogonal.unsqueeze(0)});
  const at::Tensor s = acc.sums();
  EXPECT_NEAR(s[Row(acc, "adjacent_cos", 0)][0].item<double>(), 1.0, 1e-15);
  EXPECT_NEAR(s[Row(acc, "intertoken_cos", 0)][0].item<double>(), 1.0, 1e-14);
  EXPECT_NEAR(s[Row(acc, "intertoken_cos", 1)][0].item<double>(), 1.0, 1e-14);
  EXPECT_NEAR(s[Row(acc, "intertoken_cos", 2)][0].item<double>(), 0.0, 1e-15);

  LayerMetricAccumulator acc2({LayerMetric::kIntertokenCos, LayerMetric::kAdjacentCos}, 1,
                              c10::Device(c10::kCPU));
  // Orthogonal layers: token t of layer 0 is e_t, of layer 1 is e_{t+1}.
  at::Tensor shifted = at::roll(orthogonal, 1, 1);
  FeedBatch(acc2, {alternating.unsqueeze(0), shifted.unsqueeze(0), alternating.unsqueeze(0)});
  const at::Tensor s2 = acc2.sums();
  EXPECT_NEAR(s2[Row(acc2, "intertoken_cos", 0)][0].item<double>(), -0.2, 1e-15);
  EXPECT_NEAR(s2[Row(acc2, "adjacent_cos", 0)][0].item<double>(), 0.0, 1e-15);
}

TEST(LayerMetricsTest, ChunkStatsMergeByAddition) {
  c10::InferenceMode guard;
  at::manual_seed(2);
  const int64_t L = 2;
  std::vector<std::vector<at::Tensor>> batches;
  for (int b = 0; b < 4; ++b) {
    std::vector<at::Tensor> points;
    const int64_t n = 5 + b;  // different lengths per batch
    for (int p = 0; p < L + 2; ++p) points.push_back(at::randn({2, n, 8}));
    batches.push_back(points);
  }
  LayerMetricAccumulator all(kBoth, L, c10::Device(c10::kCPU));
  LayerMetricAccumulator first(kBoth, L, c10::Device(c10::kCPU));
  LayerMetricAccumulator second(kBoth, L, c10::Device(c10::kCPU));
  for (int b = 0; b < 4; ++b) {
    FeedBatch(all, batches[b]);
    FeedBatch(b < 1 ? first : second, batches[b]);
  }
  EXPECT_TRUE(at::allclose(first.sums() + second.sums(), all.sums(), 0, 1e-13));
  EXPECT_EQ(all.sums()[0][2].item<double>(), 8);
}

TEST(LayerMetricsTest, ParseNamesTheField) {
  EXPECT_TRUE(ParseLayerMetrics({"intertoken_cos", "adjacent_cos"}).ok());
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{}, std::vector<std::string>{"cka"},
        std::vector<std::string>{"adjacent_cos", "adjacent_cos"}}) {
    auto parsed = ParseLayerMetrics(bad);
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("analyses"), std::string::npos);
  }
}

// The enum indexes the catalog's name list: each metric keeps its own name,
// and every catalog layer-metric name parses back to its metric.
TEST(LayerMetricsTest, NamesAreTheCatalogsInEnumOrder) {
  const std::pair<LayerMetric, const char*> expected[] = {
      {LayerMetric::kAdjacentCos, "adjacent_cos"},
      {LayerMetric::kIntertokenCos, "intertoken_cos"},
      {LayerMetric::kIntertokenCosNoFirst, "intertoken_cos_nofirst"},
      {LayerMetric::kTokenDispersion, "token_dispersion"},
      {LayerMetric::kStepEnergy, "step_energy"},
      {LayerMetric::kPathEnergy, "path_energy"},
      {LayerMetric::kCkaUnbiased, "cka_unbiased"},
      {LayerMetric::kCkaBiased, "cka_biased"},
      {LayerMetric::kCkaAllUnbiased, "cka_all_unbiased"},
      {LayerMetric::kCkaAllBiased, "cka_all_biased"},
      {LayerMetric::kAdjacentCosTokens, "adjacent_cos_tokens"}};
  ASSERT_EQ(std::size(expected), static_cast<size_t>(kNumLayerMetrics));
  for (const auto& [metric, name] : expected) {
    EXPECT_STREQ(LayerMetricName(metric), name);
    auto parsed = ParseLayerMetrics({name});
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->at(0), metric) << name;
  }
  EXPECT_EQ(ParseLayerMetrics({"spectrum"}).status().message(),
            "analyses: unknown 'spectrum'; known: adjacent_cos, intertoken_cos, "
            "intertoken_cos_nofirst, token_dispersion, step_energy, path_energy, "
            "cka_unbiased, cka_biased, cka_all_unbiased, cka_all_biased, "
            "adjacent_cos_tokens");
}

TEST(LayerMetricsTest, OutOfOrderPointsThrow) {
  c10::InferenceMode guard;
  LayerMetricAccumulator acc(kBoth, 1, c10::Device(c10::kCPU));
  EXPECT_THROW(acc.Observe(1, at::randn({1, 3, 4})), c10::Error);
}

}  // namespace
}  // namespace layerflow::worker
