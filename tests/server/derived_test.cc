// The cubic fit behind v_loc / v_glob (server/derived), checked in float64
// against hand-worked cases and numpy.polyfit, and the derived rows built
// from merged results.
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/derived/cubic_fit.h"
#include "server/derived/derived_rows.h"
#include "tests/testing/status_matchers.h"

namespace layerflow::server::derived {
namespace {

using ::layerflow::testing::StatusIs;
using ::layerflow::v1::ResultRow;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;

TEST(CubicFitTest, ExactCubicIsRecoveredWithZeroResidual) {
  // p(x) = 0.5 - 2x + 3x^2 - 1.25x^3 at x = l/6, l = 0..6.
  std::vector<double> x, y;
  for (int l = 0; l <= 6; ++l) {
    const double t = l / 6.0;
    x.push_back(t);
    y.push_back(0.5 - 2 * t + 3 * t * t - 1.25 * t * t * t);
  }
  absl::StatusOr<CubicFit> fit = FitCubic(x, y);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_NEAR(fit->coefficients[0], 0.5, 1e-12);
  EXPECT_NEAR(fit->coefficients[1], -2.0, 1e-12);
  EXPECT_NEAR(fit->coefficients[2], 3.0, 1e-12);
  EXPECT_NEAR(fit->coefficients[3], -1.25, 1e-12);
  EXPECT_NEAR(fit->v_loc, 0.0, 1e-28);
  EXPECT_GT(fit->v_glob, 0.0);
}

TEST(CubicFitTest, ConstantSeriesHasZeroGlobalVariance) {
  const std::vector<double> x = {0, 0.2, 0.4, 0.6, 0.8};
  const std::vector<double> y(5, 0.75);
  absl::StatusOr<CubicFit> fit = FitCubic(x, y);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_EQ(fit->v_glob, 0.0);
  EXPECT_NEAR(fit->v_loc, 0.0, 1e-30);
  EXPECT_NEAR(fit->coefficients[0], 0.75, 1e-13);
  for (int k = 1; k < 4; ++k) EXPECT_NEAR(fit->coefficients[k], 0.0, 1e-11);
}

TEST(CubicFitTest, NoisySeriesMatchesNumpyPolyfit) {
  // Generated with numpy 2.4.6:
  //   x = np.arange(9) / 8.0
  //   y = np.array([0.91, 0.62, 0.55, 0.58, 0.49, 0.52, 0.61, 0.70, 0.93])
  //   c = np.polyfit(x, y, 3)[::-1]          # constant first
  //   r = y - np.polyval(c[::-1], x)
  //   print(c, np.mean(r**2), np.var(y))
  std::vector<double> x;
  for (int l = 0; l <= 8; ++l) x.push_back(l / 8.0);
  const std::vector<double> y = {0.91, 0.62, 0.55, 0.58, 0.49, 0.52, 0.61, 0.70, 0.93};
  absl::StatusOr<CubicFit> fit = FitCubic(x, y);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_NEAR(fit->coefficients[0], 0.870808080808081, 1e-12);
  EXPECT_NEAR(fit->coefficients[1], -1.6677825877825883, 1e-12);
  EXPECT_NEAR(fit->coefficients[2], 1.927849927849926, 1e-12);
  EXPECT_NEAR(fit->coefficients[3], -0.22410774410774098, 1e-12);
  EXPECT_NEAR(fit->v_loc, 0.0016461119127785806, 1e-15);
  EXPECT_NEAR(fit->v_glob, 0.02311111111111112, 1e-15);
}

TEST(CubicFitTest, RejectsTooFewPoints) {
  absl::StatusOr<CubicFit> fit = FitCubic({0, 0.25, 0.5, 0.75}, {1, 2, 3, 4});
  EXPECT_THAT(fit.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     Eq("cubic fit: 4 points, need at least 5")));
}

TEST(CubicFitTest, RejectsMismatchedSizes) {
  absl::StatusOr<CubicFit> fit = FitCubic({0, 1, 2, 3, 4}, {1, 2, 3, 4});
  EXPECT_THAT(fit.status(),
              StatusIs(absl::StatusCode::kInvalidArgument, Eq("cubic fit: 5 depths but 4 values")));
}

TEST(CubicFitTest, RejectsNonFiniteValue) {
  absl::StatusOr<CubicFit> fit = FitCubic({0, 1, 2, 3, 4}, {1, 2, NAN, 4, 5});
  EXPECT_THAT(fit.status(),
              StatusIs(absl::StatusCode::kInvalidArgument, Eq("cubic fit: point 2 is not finite")));
}

TEST(CubicFitTest, RejectsFewerThanFourDistinctDepths) {
  absl::StatusOr<CubicFit> fit = FitCubic({0, 0, 1, 1, 2}, {1, 2, 3, 4, 5});
  EXPECT_THAT(fit.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     Eq("cubic fit: depths have fewer than 4 distinct values")));
}

ResultRow Row(const std::string& job, const std::string& metric, int layer, double value) {
  ResultRow row;
  row.set_sweep_id("s");
  row.set_job_id(job);
  row.set_model("pythia-tiny");
  row.set_seed(7);
  row.set_metric(metric);
  row.set_layer(layer);
  row.set_value(value);
  row.set_count(3);
  return row;
}

std::vector<std::string> Names(const std::vector<ResultRow>& rows) {
  std::vector<std::string> names;
  for (const ResultRow& row : rows) {
    names.push_back(row.metric() + "@" + std::to_string(row.layer()));
  }
  return names;
}

TEST(DerivedMetricNameTest, ParsesOnlySeriesMetrics) {
  std::optional<DerivedMetricName> name = ParseDerivedMetric("v_loc(intertoken_cos)");
  ASSERT_TRUE(name.has_value());
  EXPECT_EQ(name->kind, DerivedKind::kVLoc);
  EXPECT_EQ(name->base, "intertoken_cos");
  EXPECT_EQ(ParseDerivedMetric("cubic(cka_biased)")->kind, DerivedKind::kCubic);
  EXPECT_EQ(ParseDerivedMetric("v_glob(adjacent_cos)")->kind, DerivedKind::kVGlob);
  EXPECT_FALSE(ParseDerivedMetric("intertoken_cos").has_value());
  EXPECT_FALSE(ParseDerivedMetric("v_loc(path_energy)").has_value());
  EXPECT_FALSE(ParseDerivedMetric("v_loc(intertoken_cos").has_value());
}

TEST(DerivedRowsTest, IntertokenSeriesDropsFinalNormAndUsesDepthOverBlocks) {
  // L = 4 blocks: residual points 0..4 follow p(x) = 1 - x^3 at x = l/4;
  // the final norm (layer 5) is far off the curve and must be ignored.
  std::vector<ResultRow> rows;
  for (int l = 0; l <= 4; ++l) {
    const double x = l / 4.0;
    rows.push_back(Row("j1", "intertoken_cos", l, 1 - x * x * x));
  }
  rows.push_back(Row("j1", "intertoken_cos", 5, 100.0));
  std::vector<ResultRow> out = AppendDerivedRows(rows);
  EXPECT_THAT(Names(out), ElementsAre("intertoken_cos@0", "intertoken_cos@1", "intertoken_cos@2",
                                      "intertoken_cos@3", "intertoken_cos@4", "intertoken_cos@5",
                                      "cubic(intertoken_cos)@0", "cubic(intertoken_cos)@1",
                                      "cubic(intertoken_cos)@2", "cubic(intertoken_cos)@3",
                                      "v_glob(intertoken_cos)@0", "v_loc(intertoken_cos)@0"));
  EXPECT_NEAR(out[6].value(), 1.0, 1e-12);
  EXPECT_NEAR(out[7].value(), 0.0, 1e-11);
  EXPECT_NEAR(out[8].value(), 0.0, 1e-11);
  EXPECT_NEAR(out[9].value(), -1.0, 1e-11);
  EXPECT_NEAR(out[11].value(), 0.0, 1e-25);
  EXPECT_EQ(out[11].count(), 5);  // series points, final norm excluded
  EXPECT_EQ(out[11].std(), 0.0);
  EXPECT_EQ(out[11].model(), "pythia-tiny");
  EXPECT_EQ(out[11].seed(), 7);
}

TEST(DerivedRowsTest, PairSeriesUsesAllLayersAndSkipsShortSeries) {
  // adjacent_cos at 0..4 (L = 5, x = l/5), constant -> v_glob 0;
  // cka_unbiased has 4 points only -> no derived rows.
  std::vector<ResultRow> rows;
  for (int l = 0; l < 5; ++l) rows.push_back(Row("j1", "adjacent_cos", l, 0.9));
  for (int l = 0; l < 4; ++l) rows.push_back(Row("j1", "cka_unbiased", l, 0.5 + l));
  rows.push_back(Row("j2", "adjacent_cos", 0, 0.1));
  std::vector<ResultRow> out = AppendDerivedRows(rows);
  ASSERT_EQ(out.size(), 10u + 6u);
  EXPECT_EQ(out[9].metric(), "cubic(adjacent_cos)");
  EXPECT_EQ(out[13].metric(), "v_glob(adjacent_cos)");
  EXPECT_EQ(out[13].value(), 0.0);
  EXPECT_EQ(out[13].count(), 5);
  EXPECT_EQ(out[15].job_id(), "j2");  // j2's one row, no derived rows
}

TEST(DerivedRowsTest, KeyedRowsAreNotPartOfTheSeries) {
  std::vector<ResultRow> rows;
  for (int l = 0; l < 5; ++l) rows.push_back(Row("j1", "adjacent_cos", l, 0.9));
  ResultRow keyed = Row("j1", "adjacent_cos", 2, 100.0);
  keyed.set_head(0);
  rows.push_back(keyed);
  std::vector<ResultRow> out =
      AppendDerivedRows(rows, DerivedMetricName{DerivedKind::kVGlob, "adjacent_cos"});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value(), 0.0);
  EXPECT_EQ(out[0].count(), 5);
}

TEST(DerivedRowsTest, OnlyKeepsTheNamedDerivedMetric) {
  std::vector<ResultRow> rows;
  for (int l = 0; l < 6; ++l) rows.push_back(Row("j1", "adjacent_cos", l, l * 0.1));
  std::vector<ResultRow> out =
      AppendDerivedRows(rows, DerivedMetricName{DerivedKind::kVGlob, "adjacent_cos"});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].metric(), "v_glob(adjacent_cos)");
  // population variance of 0, .1, ..., .5 = 0.01 * 35/12
  EXPECT_NEAR(out[0].value(), 0.01 * 35.0 / 12.0, 1e-15);
}

}  // namespace
}  // namespace layerflow::server::derived
