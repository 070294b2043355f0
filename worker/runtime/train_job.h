// A TRAIN job (docs/training.md), between the worker's gRPC service and
// the LibTorch trainer (worker/train/trainer.h). Plain structs only: the
// service includes this header (DESIGN.md, build rules).
//
// Chunk k of a job covers steps (k * eval_every, TrainChunkEndStep(k)] and
// holds, each at layer 0 and position = the chunk's end step:
//   train_loss, train_acc, grad_norm   one value per step of the chunk
//   lr                                 the end step's learning rate
//   eval_loss, eval_acc                one value per held-out sequence
//   train_stopped                      the stopping step (early stop only)
// A run from scratch hands its model before the first step (the random
// init it starts from) to hooks.save_init_model BEFORE any chunk, so a job
// with a committed chunk always has its init model too.
// At a chunk end that is a multiple of save_every the training state is
// handed to hooks.save_state BEFORE the chunk to hooks.stream, so a
// committed chunk's state (or an earlier one) always exists. The last chunk
// (the final step's, or the one where the held-out accuracy reached
// target_accuracy) is not streamed: it comes back in the outcome with the
// exported checkpoint, for the caller to store the checkpoint first.
#ifndef LAYERFLOW_WORKER_RUNTIME_TRAIN_JOB_H_
#define LAYERFLOW_WORKER_RUNTIME_TRAIN_JOB_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "catalog/train.h"
#include "worker/runtime/job_runner.h"

namespace layerflow::worker {

struct TrainJobConfig {
  std::string architecture;  // JobSpec.model
  std::string init_scheme = "reference";
  int64_t seed = 0;
  catalog::TrainSettings settings;  // defaults applied by the coordinator
};

struct TrainJobHooks {
  // A finished chunk, in order (never the last one).
  std::function<absl::Status(const ChunkResult& chunk)> stream;
  // A training state file at `step` (the caller uploads it; the file is
  // removed after the call).
  std::function<absl::Status(int64_t step, const std::string& path)> save_state;
  // A fresh local folder with config.json and model.safetensors of the
  // model before its first step (from scratch only; a resumed run stored it
  // in its first attempt). The folder is removed after the call.
  std::function<absl::Status(const std::string& dir)> save_init_model;
  // Polled between steps: true stops the run (ABORTED).
  std::function<bool()> stopped;
};

struct TrainJobOutcome {
  ChunkResult final_chunk;
  // A fresh local folder with config.json and model.safetensors (the
  // caller uploads and removes it).
  std::string model_dir;
  int64_t steps = 0;
  bool early_stopped = false;
};

// Trains from scratch, or from the state file `state_path` (one that
// hooks.save_state was handed by an earlier attempt of the same job; its
// step must be a chunk end). INVALID_ARGUMENT naming the field for a bad
// config, FAILED_PRECONDITION for a state of another run.
absl::StatusOr<TrainJobOutcome> RunTrainJob(const TrainJobConfig& config,
                                            const DeviceConfig& device,
                                            const std::string& state_path,
                                            const TrainJobHooks& hooks);

// A TRAIN job's artifacts: its states "<job_id>/train_state/<step, 12
// digits>", its checkpoint "<job_id>/model/config.json" and
// "<job_id>/model/model.safetensors" (named as a model by later sweeps:
// "artifact:<job_id>/model"), and the same two files of its random init
// under "<job_id>/init_model/" ("artifact:<job_id>/init_model": the
// before-training side of a trained-vs-random comparison).
std::string TrainStatePrefix(const std::string& job_id);
std::string TrainStateArtifactName(const std::string& job_id, int64_t step);
std::string TrainModelPrefix(const std::string& job_id);
std::string TrainInitModelPrefix(const std::string& job_id);
using catalog::kArtifactModelScheme;  // "artifact:<job_id>/model" names a checkpoint

// Of the states named `names` (TrainStateArtifactName of this job), the one
// a lease resuming at chunk `resume_from_sequence` starts from: the latest
// at or before the last committed chunk's end step; "" for none (train from
// scratch). Names that are not states of the job are ignored.
std::string SelectTrainState(const std::vector<std::string>& names, const std::string& job_id,
                             const catalog::TrainSettings& settings, int64_t resume_from_sequence);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_RUNTIME_TRAIN_JOB_H_
