// Feeding a LayerMetricAccumulator and finding its rows, for the tests of
// worker/analysis (analysis_test.cc, analysis_suite_test.cc).
#ifndef LAYERFLOW_TESTS_WORKER_ANALYSIS_ACCUMULATOR_ROWS_H_
#define LAYERFLOW_TESTS_WORKER_ANALYSIS_ACCUMULATOR_ROWS_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "gtest/gtest.h"
#include "worker/analysis/layer_metrics.h"

namespace layerflow::worker::testing {

// Feeds points 0..L+1 of a batch [B, n, d] per point.
inline void FeedBatch(LayerMetricAccumulator& acc, const std::vector<at::Tensor>& points) {
  for (size_t p = 0; p < points.size(); ++p) acc.Observe(p, points[p]);
  acc.EndBatch();
}

// The row of (metric, layer) in the accumulator's stats; a test failure
// (and row 0) when there is none.
inline int64_t Row(const LayerMetricAccumulator& acc, const std::string& metric, int layer) {
  for (size_t i = 0; i < acc.keys().size(); ++i) {
    if (acc.keys()[i].metric == metric && acc.keys()[i].layer == layer) return i;
  }
  ADD_FAILURE() << "no row " << metric << " " << layer;
  return 0;
}

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_ANALYSIS_ACCUMULATOR_ROWS_H_
