// The one list of analysis names (layer metrics, spectra) and the name
// helpers.
#include "catalog/analyses.h"

#include <array>
#include <string_view>

#include "catalog/names.h"
#include "gtest/gtest.h"

namespace layerflow::catalog {
namespace {

TEST(AnalysesTest, LayerMetricsThenSpectra) {
  EXPECT_EQ(LayerMetricList(),
            "adjacent_cos, intertoken_cos, intertoken_cos_nofirst, token_dispersion, "
            "step_energy, path_energy, cka_unbiased, cka_biased, cka_all_unbiased, "
            "cka_all_biased, adjacent_cos_tokens");
  EXPECT_EQ(AnalysisList(), LayerMetricList() + ", spectrum, spectrum_dsf");
}

TEST(AnalysesTest, ClassifiesNames) {
  EXPECT_TRUE(IsLayerMetric("cka_all_biased"));
  EXPECT_FALSE(IsLayerMetric("spectrum"));
  EXPECT_TRUE(IsSpectrum("spectrum_dsf"));
  EXPECT_FALSE(IsSpectrum("adjacent_cos"));
  EXPECT_TRUE(IsAnalysis("spectrum"));
  EXPECT_TRUE(IsAnalysis("token_dispersion"));
  // Result-row names are not analyses one can ask for.
  EXPECT_FALSE(IsAnalysis("cka_baseline_biased"));
  EXPECT_FALSE(IsAnalysis("cka"));
  EXPECT_FALSE(IsAnalysis(""));
}

TEST(AnalysesTest, DefaultsAreLayerMetrics) {
  ASSERT_EQ(kDefaultAnalyses.size(), 2u);
  EXPECT_EQ(kDefaultAnalyses[0], "adjacent_cos");
  EXPECT_EQ(kDefaultAnalyses[1], "intertoken_cos");
  for (std::string_view name : kDefaultAnalyses) EXPECT_TRUE(IsLayerMetric(name)) << name;
}

TEST(NamesTest, ContainsAndJoin) {
  constexpr std::array<std::string_view, 3> kNames = {"a", "bc", "d"};
  EXPECT_TRUE(Contains(kNames, "bc"));
  EXPECT_FALSE(Contains(kNames, "b"));
  EXPECT_EQ(JoinNames(kNames), "a, bc, d");
  EXPECT_EQ(JoinNames(std::array<std::string_view, 0>{}), "");
}

}  // namespace
}  // namespace layerflow::catalog
