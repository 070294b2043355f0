// What an empty axis or a zero field of a sweep means (experiment.proto,
// docs/sweep-file.md): the coordinator applies these at submit
// (server/spec WithDefaults), so a job always carries explicit values.
#ifndef LAYERFLOW_CATALOG_DEFAULTS_H_
#define LAYERFLOW_CATALOG_DEFAULTS_H_

#include <cstdint>
#include <string_view>

namespace layerflow::catalog {

inline constexpr std::string_view kDefaultInitScheme = "reference";
inline constexpr int64_t kDefaultSeed = 0;
inline constexpr std::string_view kDefaultDataset = "kvpr";
inline constexpr int32_t kDefaultNumClasses = 11;
// Tokens per prompt. 11 KVPR classes need 1082 with the byte tokenizer
// (MinContextLength in catalog/datasets.h).
inline constexpr int32_t kDefaultContextLength = 2048;
inline constexpr int32_t kDefaultNumPrompts = 8;
inline constexpr int32_t kDefaultPromptsPerChunk = 2;
// (The default analyses and dtypes: catalog/analyses.h, catalog/dtypes.h.)

// Probe defaults (ProbeSpec, METHODS.md "Probing").
inline constexpr int32_t kDefaultProbeEpochs = 150;
inline constexpr double kDefaultProbeLr = 5e-3;
inline constexpr double kDefaultProbeWeightDecay = 1e-3;
inline constexpr double kDefaultProbeTrainFraction = 0.6;
inline constexpr double kDefaultProbeValFraction = 0.2;
inline constexpr int32_t kDefaultProbePermutations = 20;
inline constexpr int64_t kDefaultProbeSeeds[] = {0, 1, 2};

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_DEFAULTS_H_
