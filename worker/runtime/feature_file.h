// The probe's last-token feature file: the one definition of its format.
// EXTRACT chunks write one (job_runner.cc, ChunkResult::features_path); the
// PROBE job (probe_job.cc) and bench_gpu_conformance read them.
//
// A safetensors file (worker/model/checkpoint.h) with the tensors
//   features      F16 or F32 [prompts, P, d]  h_T at each kept point
//   labels        I32 [prompts]                    the gold class
//   prompt_index  I64 [prompts]                    index in the job
//   points        I32 [P] (optional)               the kept points' indices,
//                 ascending, for a job with `layers` (JobConfig::layers);
//                 absent: all L + 2 points 0..L+1
// and the __metadata__ keys
//   layout           "features[prompt, point 0..L+1, d] = h_T at each point"
//   feature_dtype    the dtype the features are stored in: "fp16" | "fp32"
//   requested_dtype  the job's probe.feature_dtype: "fp16" | "fp32"
//   max_abs          the largest |value| of the chunk's finite features
//   num_layers       L, the model's blocks (with `points` only: whether the
//                    final point L + 1 is among them)
//
// A job asks for fp16 (the default: half the bytes) or fp32. fp16 is stored
// only when every finite value fits its range (|x| <= 65504, kFp16Max);
// otherwise the file is stored in fp32 and feature_dtype says so. States
// that large are real: random-init Mamba-1.4B grows its float32 residual
// stream to ~1e6 (bench/RESULTS.md, 2026-12-01), and an fp16 file turned
// them into inf. Non-finite values that the model itself produced (an fp16
// model that overflowed) are stored as they are; the probe trainer rejects
// them with a clear error.
//
// Readers go by each tensor's own dtype, so files written before the
// metadata keys existed (fp16 or fp32, no fallback) read the same way.
#ifndef LAYERFLOW_WORKER_RUNTIME_FEATURE_FILE_H_
#define LAYERFLOW_WORKER_RUNTIME_FEATURE_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace layerflow::worker {

// The largest finite IEEE half-precision value.
inline constexpr double kFp16Max = 65504.0;

// One feature file's contents, copied out of the mapping.
struct FeatureFile {
  at::Tensor features;  // [n, P, d] on the CPU, kHalf or kFloat as stored
  // The P points' indices (METHODS.md layout); empty: 0..P-1, every point.
  std::vector<int32_t> points;
  int64_t num_layers = -1;  // L when `points` is set; -1 otherwise
  std::vector<int32_t> labels;
  std::vector<int64_t> prompt_index;
  std::string stored_dtype;     // "fp16" | "fp32" (from the tensor's dtype)
  std::string requested_dtype;  // the metadata's; empty in older files
};

// The dtype a file of `features` (any floating dtype, any device) is stored
// in when the job asks for `requested` ("fp16" | "fp32"): kFloat for "fp32",
// and for "fp16" when some finite value exceeds kFp16Max; else kHalf.
at::ScalarType FeatureStorageDtype(const at::Tensor& features, const std::string& requested);

// Writes a feature file at `path`. `features` is [n, P, d] of any
// floating dtype (the job runner hands over float32); labels and
// prompt_index have n entries; `points` is empty (P = L + 2, every point)
// or has P ascending entries in [0, num_layers + 1]. INVALID_ARGUMENT on
// inconsistent shapes or an unknown requested dtype.
absl::Status WriteFeatureFile(const std::string& path, const at::Tensor& features,
                              const std::vector<int32_t>& labels,
                              const std::vector<int64_t>& prompt_index,
                              const std::string& requested_dtype,
                              const std::vector<int32_t>& points = {}, int64_t num_layers = -1);

// Reads a feature file; INVALID_ARGUMENT naming the path when it is not one
// (missing tensors, inconsistent shapes, wrong dtypes).
absl::StatusOr<FeatureFile> ReadFeatureFile(const std::string& path);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_RUNTIME_FEATURE_FILE_H_
