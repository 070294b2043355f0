#include "catalog/analyses.h"

#include "catalog/names.h"

namespace layerflow::catalog {

bool IsLayerMetric(std::string_view name) { return Contains(kLayerMetricNames, name); }

bool IsSpectrum(std::string_view name) { return Contains(kSpectrumNames, name); }

bool IsAnalysis(std::string_view name) { return IsLayerMetric(name) || IsSpectrum(name); }

std::string_view CkaBaselineOf(std::string_view analysis) {
  if (analysis == "cka_unbiased" || analysis == "cka_all_unbiased") return "cka_baseline_unbiased";
  if (analysis == "cka_biased" || analysis == "cka_all_biased") return "cka_baseline_biased";
  return {};
}

bool IsRowOfLayerMetric(std::string_view metric, std::string_view analysis) {
  return metric == analysis ||
         (!CkaBaselineOf(analysis).empty() && metric == CkaBaselineOf(analysis));
}

std::string LayerMetricList() { return JoinNames(kLayerMetricNames); }

std::string AnalysisList() {
  return JoinNames(kLayerMetricNames) + ", " + JoinNames(kSpectrumNames);
}

}  // namespace layerflow::catalog
