// Shape checks of a worker's ResultChunk, before it reaches the store.
#ifndef LAYERFLOW_SERVER_CORE_CHUNK_VALIDATION_H_
#define LAYERFLOW_SERVER_CORE_CHUNK_VALIDATION_H_

#include "absl/status/status.h"
#include "layerflow/v1/experiment.pb.h"

namespace layerflow::server {

// INVALID_ARGUMENT naming the field, e.g. "chunk.stats[3].metric: empty".
// Checks: job_id and lease_id present, sequence >= 0, every stat has a
// metric name, layer >= 0, count >= 1, finite sum and sum_sq >= 0, no
// (metric, layer) twice, prompt_tokens >= 0. The sequence's upper bound
// depends on the job and is the store's to check.
absl::Status ValidateResultChunk(const layerflow::v1::ResultChunk& chunk);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_CORE_CHUNK_VALIDATION_H_
