// The analyses a sweep may ask for (SweepSpec.analyses, JobSpec.analyses):
// one list for the coordinator's validation and the worker's dispatch.
// Definitions: docs/metrics.md (the layer metrics), docs/spectra.md (the
// eigenvalue spectra).
#ifndef LAYERFLOW_CATALOG_ANALYSES_H_
#define LAYERFLOW_CATALOG_ANALYSES_H_

#include <array>
#include <string>
#include <string_view>

namespace layerflow::catalog {

// The per-layer metrics, in the order of worker::LayerMetric (its
// LayerMetricName indexes this array).
inline constexpr std::array<std::string_view, 11> kLayerMetricNames = {
    "adjacent_cos",     "intertoken_cos", "intertoken_cos_nofirst", "token_dispersion",
    "step_energy",      "path_energy",    "cka_unbiased",           "cka_biased",
    "cka_all_unbiased", "cka_all_biased", "adjacent_cos_tokens"};
// The eigenvalue spectra (worker/analysis/spectrum.h): each name is also the
// prefix of its result rows.
inline constexpr std::array<std::string_view, 2> kSpectrumNames = {"spectrum", "spectrum_dsf"};
// What an empty `analyses` means.
inline constexpr std::array<std::string_view, 2> kDefaultAnalyses = {"adjacent_cos",
                                                                     "intertoken_cos"};

bool IsLayerMetric(std::string_view name);
bool IsSpectrum(std::string_view name);
// A layer metric or a spectrum.
bool IsAnalysis(std::string_view name);
// Whether a result row named `metric` belongs to `analysis`: the metric's
// own rows, a spectrum's prefixed rows (spectrum_median, spectrum_frac_3,
// ...: `spectrum_row` decides those), and the random baseline every CKA
// stores with it: cka_baseline_unbiased with cka_unbiased or
// cka_all_unbiased, cka_baseline_biased with the biased two (METHODS.md,
// docs/metrics.md).
std::string_view CkaBaselineOf(std::string_view analysis);  // "" for a non-CKA
bool IsRowOfLayerMetric(std::string_view metric, std::string_view analysis);

// ", "-joined, for error messages: the layer metrics; all analyses (layer
// metrics, then spectra).
std::string LayerMetricList();
std::string AnalysisList();

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_ANALYSES_H_
