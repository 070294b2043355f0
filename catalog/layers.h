// SweepSpec.layers: which representation points a job analyses and keeps.
//
// Points follow METHODS.md: 0 the embedding, 1..L after each block, L + 1
// the final-norm output, so a model of L blocks has L + 2 points. An entry
// i >= 0 is point i; a negative one counts from the end (-1 = L + 1, the
// final point; -(L + 2) = 0). The coordinator resolves the entries against
// a preset's depth at submission, the worker against a checkpoint's when it
// loads it: both go through ResolveLayers, so they agree.
#ifndef LAYERFLOW_CATALOG_LAYERS_H_
#define LAYERFLOW_CATALOG_LAYERS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerflow::catalog {

// The points `layers` names for a model of `num_layers` blocks, ascending.
// INVALID_ARGUMENT naming "<field>[i]" and `model` (how the message names
// the model, e.g. "spec.models[0] 'pythia-70m'") for an entry outside
// [-(L + 2), L + 1], or one that lands on the same point as an earlier
// entry (8 and -1 for a model of 7 blocks). An empty list is all points.
absl::StatusOr<std::vector<int32_t>> ResolveLayers(const std::vector<int32_t>& layers,
                                                   int64_t num_layers, absl::string_view field,
                                                   absl::string_view model);

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_LAYERS_H_
