// The boundary between the worker's gRPC service and its LibTorch code.
//
// Plain structs only: this header is included by worker/service (which
// includes generated *.pb.h headers) and implemented by LibTorch code, and
// one translation unit must never see both (DESIGN.md, build rules).
#ifndef LAYERFLOW_WORKER_RUNTIME_JOB_RUNNER_H_
#define LAYERFLOW_WORKER_RUNTIME_JOB_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/checkpoint.h"  // ModelFilePolicy (plain C++)

namespace layerflow::worker {

// Mirrors layerflow.v1.ProbeSpec (defaults already applied by the coordinator).
struct ProbeConfig {
  std::string task;
  int32_t classes = 0;
  std::vector<int64_t> seeds = {0, 1, 2};
  int32_t epochs = 150;
  double lr = 5e-3;
  double weight_decay = 1e-3;
  double train_fraction = 0.6;
  double val_fraction = 0.2;
  int32_t permutations = 20;
  std::string feature_dtype = "fp16";  // "fp16" | "fp32"
  // false: no probes, only the example-view CKA (ProbeSpec.skip_training).
  bool train = true;
};

// Mirrors layerflow.v1.JobSpec (defaults already applied by the coordinator).
struct JobConfig {
  enum class Kind { kExtract, kProbe };
  Kind kind = Kind::kExtract;
  // EXTRACT: also write each chunk's last-token features (ChunkResult::
  // features_path); PROBE: the probe settings.
  bool has_probe = false;
  ProbeConfig probe;
  std::string model;        // preset name, e.g. "pythia-70m"
  std::string init_scheme;  // e.g. "reference", "normal(0.02)"
  int64_t seed = 0;
  std::string dataset = "kvpr";
  int32_t num_classes = 11;
  // "text": the file, relative to the worker's model roots, and the JSONL
  // key of each record's document ("" = "text").
  std::string dataset_path;
  std::string dataset_field;
  int32_t context_length = 256;  // target tokens per prompt
  // "adjacent_cos", "intertoken_cos", "intertoken_cos_nofirst",
  // "token_dispersion", "step_energy", "path_energy", "cka_unbiased",
  // "cka_biased", "cka_all_unbiased", "cka_all_biased", "adjacent_cos_tokens"
  // (worker/analysis/layer_metrics.h, docs/metrics.md)
  std::vector<std::string> analyses;
  int32_t num_prompts = 8;
  int32_t prompts_per_chunk = 2;
  // 0: each rank batches its share of the chunk up to kMaxBatchTokens.
  // k >= 1: fixed batches of k consecutive prompts, never split across ranks
  // (PlanRankPrompts, PlanBatches), so results do not depend on the rank
  // count.
  int32_t batch_prompts = 0;
  std::string dtype = "fp32";  // "fp32" | "bf16" | "fp16"
  // SweepSpec.layers as written: the representation points to analyse and
  // keep (negative = from the end, -1 the final point); empty: all. Resolved
  // against the model's depth by CreateJobRunner (catalog::ResolveLayers;
  // INVALID_ARGUMENT "layers[i]: ..." for an entry the model lacks). Rows of
  // points not listed are dropped on the device: a pair metric's row l
  // (adjacent_cos, step_energy, cka_*) is kept when l is listed, computed
  // from l and its true neighbour l + 1; cka_all_* rows when both l and
  // l' are listed; spectrum rows of block l when l is listed; path_energy
  // and the cka_baseline_* rows always (not rows of a point). The feature
  // file holds the listed points only (feature_file.h, `points`).
  std::vector<int32_t> layers;
};

// Sufficient statistics of one metric at one layer (see MetricStat).
struct MetricStat {
  std::string metric;
  int32_t layer = 0;
  // Further keys of the tidy row; -1 = not applicable (unset in the proto).
  int32_t layer_b = -1;
  int32_t head = -1;
  int32_t position = -1;
  double sum = 0;     // sum over prompts of the per-prompt value
  double sum_sq = 0;  // sum over prompts of its square
  int64_t count = 0;  // prompts
};

struct ChunkResult {
  int64_t sequence = 0;
  std::vector<MetricStat> stats;
  std::vector<int32_t> prompt_tokens;  // real token count of each prompt
  // EXTRACT jobs with a probe: a local feature file (the caller uploads it
  // as the artifact "<job_id>/features/<sequence>" and deletes it), the
  // safetensors format of worker/runtime/feature_file.h:
  //   features      F16/F32 [prompts, P, d]  h_T at the job's points (all
  //                 L + 2, or those of JobConfig::layers)
  //   points        I32 [P] (with JobConfig::layers only) the points' indices
  //   labels        I32 [prompts]                the gold class
  //   prompt_index  I64 [prompts]                index in the job
  // F16 when probe.feature_dtype is "fp16" and every value fits fp16's
  // range, F32 otherwise (its metadata says which and why).
  std::string features_path;
  // Seconds RunChunk waited for its prompts: made on its own thread when
  // not prefetched (JobRunner::PrefetchData), ~0 when they were ready.
  double data_seconds = 0;
};

// Where jobs run: "cpu", or "cuda" with the GPUs a batch is split across.
struct DeviceConfig {
  std::string device_type = "cpu";
  int32_t gpu_count = 0;
};

// Runs one job chunk by chunk. Chunk k covers prompts
// [k * prompts_per_chunk, min(num_prompts, (k + 1) * prompts_per_chunk)),
// generated deterministically from the seed, so any chunk can be computed
// on its own: a retried job starts at its first uncommitted chunk.
class JobRunner {
 public:
  virtual ~JobRunner() = default;
  virtual int64_t num_chunks() const = 0;
  // Never throws: LibTorch errors come back as a status naming the model
  // and, where known, the layer.
  virtual absl::StatusOr<ChunkResult> RunChunk(int64_t sequence) = 0;
  // Starts making chunk `sequence`'s prompts on a thread of its own: the data
  // sets are CPU work (generation, tokenisation) that would otherwise keep
  // the device idle before every chunk. RunChunk(sequence) takes them; each
  // RunChunk prefetches the chunk after it. Never changes a result.
  virtual void PrefetchData(int64_t sequence) { (void)sequence; }
};

// How a chunk's prompts (indices 0..count-1 of the chunk) become forward
// batches. Rank r of `ranks` runs PlanRankPrompts(count, ranks, r, k): a
// contiguous, balanced split, in whole groups of k = batch_prompts when
// k > 0. Its batches are PlanBatches(num_tokens, lo, hi, k): consecutive
// prompts of equal length, at most 16384 tokens (one prompt at least), and
// with k > 0 never across a multiple of k. So with k > 0 every rank count
// runs the same batches: the chunk's groups of k, split where the length
// changes or the token cap is reached.
std::pair<int64_t, int64_t> PlanRankPrompts(int64_t count, int64_t ranks, int64_t rank,
                                            int32_t batch_prompts);
std::vector<std::pair<int64_t, int64_t>> PlanBatches(const std::vector<int64_t>& num_tokens,
                                                     int64_t lo, int64_t hi, int32_t batch_prompts);

// The models a worker keeps between jobs (worker/runtime/model_cache.h,
// LibTorch; opaque here): random-init presets, keyed by preset, init
// scheme, seed, dtype and device, least recently used out within
// budget_bytes of parameters (0: keep none).
class ModelCache;
std::shared_ptr<ModelCache> CreateModelCache(int64_t budget_bytes);
struct ModelCacheStats {
  int64_t hits = 0, builds = 0, evictions = 0, models = 0, bytes = 0;
};
ModelCacheStats StatsOf(const ModelCache& cache);
// A kept model as the scheduler knows it (LeaseJobRequest.resident_models):
// the cache's key less the device.
struct ResidentModelKey {
  std::string model;
  std::string init_scheme;
  int64_t seed = 0;
  std::string dtype;
  bool operator==(const ResidentModelKey& other) const = default;
};
// The distinct models `cache` holds, most recently used first, at most
// `max_count` (a multi-GPU worker keeps one replica per device: one entry).
std::vector<ResidentModelKey> ResidentModels(const ModelCache& cache, size_t max_count);
// The default budget: a quarter of the smallest device's memory (each GPU
// of `device`, or the host's RAM for a CPU worker): room for the weights of
// the sweep's model while leaving the rest to a job's activations.
int64_t DefaultModelCacheBytes(const DeviceConfig& device);

// Validates the config and builds the model (seeded init, or a checkpoint
// found under `files`' roots and read within its limits) and data set.
// A preset's model comes from `models` when it holds it (and is kept there
// after it is built); checkpoints are read for each job (their files may
// change between jobs). INVALID_ARGUMENT names the offending field;
// PERMISSION_DENIED "model: ..." for a model path outside the roots
// (ResolveModelSource).
absl::StatusOr<std::unique_ptr<JobRunner>> CreateJobRunner(
    const JobConfig& config, const DeviceConfig& device,
    const ModelFilePolicy& files = ModelFilePolicy{}, ModelCache* models = nullptr);

// A PROBE job: trains the per-layer probes (worker/probe) on the feature
// files of its EXTRACT job's chunks (ChunkResult::features_path layout, any
// order) and returns one chunk (sequence 0) of result rows:
//   probe_test_acc, probe_val_acc   layer p: per seed (value = mean, std over seeds)
//   probe_test_acc_lo, probe_test_acc_hi   layer p: its Wilson 95% interval
//   probe_chosen     layer p: per seed 1 if its validation chose p, else 0
//   probe_train_acc  layer p;  probe_mae layer p (mean |predicted - true class|)
//   probe_class_acc  layer p, position c: test accuracy on class c
//   probe_chance, probe_num_train, probe_num_val, probe_num_test,
//   probe_best_layer (the layer most seeds chose)   layer 0: one value each
//   probe_best_acc, probe_final_acc, probe_drop   layer 0: per seed
//   probe_null_best_acc, probe_null_drop   layer 0: per permutation
//   probe_null_best_acc_p95, probe_best_acc_pvalue, probe_null_drop_p95,
//   probe_drop_pvalue   layer 0: one value each (with permutations > 0)
//   cka_example_biased, cka_example_unbiased   layer l, layer_b l' (l < l'
//                    <= L): linear CKA in the example view over the N
//                    examples' last-token vectors
// INVALID_ARGUMENT naming the file for a malformed feature file.
absl::StatusOr<ChunkResult> RunProbeJob(const JobConfig& config,
                                        const std::vector<std::string>& feature_files,
                                        const DeviceConfig& device);

// What this build can run on this machine, for worker registration.
DeviceConfig DetectDevices();
std::vector<std::string> SupportedArchitectures();

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_RUNTIME_JOB_RUNNER_H_
