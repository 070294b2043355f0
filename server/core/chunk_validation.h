// Shape checks of a worker's ResultChunk, before it reaches the store.
#ifndef LAYERFLOW_SERVER_CORE_CHUNK_VALIDATION_H_
#define LAYERFLOW_SERVER_CORE_CHUNK_VALIDATION_H_

#include "absl/status/status.h"
#include <cstdint>

#include "layerflow/v1/experiment.pb.h"

namespace layerflow::server {

// INVALID_ARGUMENT naming the field, e.g. "chunk.stats[3].metric: empty".
// Checks: job_id and lease_id present, sequence >= 0, every stat has a
// metric name, layer >= 0, count >= 1, finite sum and sum_sq >= 0, no
// (metric, layer) twice, prompt_tokens >= 0. The sequence's upper bound
// depends on the job and is the store's to check.
// Also caps: ids at limits::kMaxIdBytes, stats at kMaxStatsPerChunk,
// metric names at kMaxShortNameBytes, prompt_tokens at 4096 entries.
absl::Status ValidateResultChunk(const layerflow::v1::ResultChunk& chunk);

// The chunk against the job it is committed to (INVALID_ARGUMENT naming the
// field; the job's own values are quoted, the chunk's only as numbers or
// names):
//  - metric: EXTRACT jobs: a layer metric of spec.analyses, or a row of one
//    of its spectra (<spectrum>_frac_<k>, _mean_log, _min, _q01, _q50,
//    _q99, _max); PROBE jobs: a probe row (probe_*, cka_example_*);
//  - layer and layer_b in [0, L + 1], L the preset's blocks (a checkpoint's
//    depth is only known to workers: [0, kMaxCheckpointLayers]);
//  - position < spec.context_length (EXTRACT);
//  - TRAIN: a kTrainRows row at layer 0 whose position (its step) is in
//    [1, the chunk's end step], count at most max(eval_every,
//    eval_examples), no prompt_tokens;
//  - EXTRACT: count at most the chunk's prompts, and prompt_tokens empty or
//    one entry per prompt of the chunk; PROBE: count at most
//    max(1, probe.seeds, probe.permutations) (a value per seed or per
//    label permutation).
absl::Status ValidateChunkForJob(const layerflow::v1::ResultChunk& chunk,
                                 const layerflow::v1::Job& job);

inline constexpr int32_t kMaxCheckpointLayers = 4096;

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_CORE_CHUNK_VALIDATION_H_
