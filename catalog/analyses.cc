#include "catalog/analyses.h"

#include "catalog/names.h"

namespace layerflow::catalog {

bool IsLayerMetric(std::string_view name) { return Contains(kLayerMetricNames, name); }

bool IsSpectrum(std::string_view name) { return Contains(kSpectrumNames, name); }

bool IsAnalysis(std::string_view name) { return IsLayerMetric(name) || IsSpectrum(name); }

std::string LayerMetricList() { return JoinNames(kLayerMetricNames); }

std::string AnalysisList() {
  return JoinNames(kLayerMetricNames) + ", " + JoinNames(kSpectrumNames);
}

}  // namespace layerflow::catalog
