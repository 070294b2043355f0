// TRAIN jobs (METHODS.md, "Training"; docs/training.md): the settings of a
// training run, their documented defaults and ranges, the small model an
// architecture name and the settings describe, and the learning-rate
// schedule. Plain C++: the coordinator validates sweeps with it, the worker
// trains with it.
#ifndef LAYERFLOW_CATALOG_TRAIN_H_
#define LAYERFLOW_CATALOG_TRAIN_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "catalog/model_config.h"

namespace layerflow::catalog {

// Defaults: the Zoology MQAR benchmark's task (vocab 8192, length 512, 64
// pairs, power_a 0.01) on the small models (2 layers, width 128).
inline constexpr std::string_view kDefaultTrainTask = "mqar";
inline constexpr int32_t kDefaultTrainVocab = 8192;
inline constexpr int32_t kDefaultTrainLength = 512;
inline constexpr int32_t kDefaultTrainPairs = 64;
inline constexpr double kDefaultTrainAlpha = 0.01;
inline constexpr int32_t kDefaultTrainLayers = 2;
inline constexpr int32_t kDefaultTrainWidth = 128;
inline constexpr int32_t kDefaultTrainAttentionHeads = 2;
inline constexpr int32_t kDefaultTrainMambaStateSize = 16;
inline constexpr int32_t kDefaultTrainMamba2StateSize = 64;
inline constexpr int32_t kTrainMamba2HeadDim = 64;
inline constexpr int64_t kDefaultTrainSteps = 20000;
inline constexpr int32_t kDefaultTrainBatch = 64;
inline constexpr double kDefaultTrainLr = 1e-3;
inline constexpr double kDefaultTrainWeightDecay = 0.1;
inline constexpr double kDefaultTrainClip = 1.0;
inline constexpr double kDefaultTrainTargetAccuracy = 0.99;
inline constexpr int64_t kDefaultTrainEvalEvery = 500;
inline constexpr int32_t kDefaultTrainEvalExamples = 256;
// What the training batches are drawn from: "none" (default), every step on
// the task as set; "zoology", the Zoology benchmark's training mixture of
// shorter, easier MQAR segments next to the task itself (TrainSegments).
inline constexpr std::string_view kTrainCurriculumNone = "none";
inline constexpr std::string_view kTrainCurriculumZoology = "zoology";
// The similarity penalty (METHODS.md, "Beyond the papers"): "none"
// (default); "intertoken_cos", the batch's inter-token cosine at chosen
// representation points; "v_loc", the local roughness of a series over
// depth, of "intertoken_cos" (default) or "adjacent_cos".
inline constexpr std::string_view kTrainPenaltyNone = "none";
inline constexpr std::string_view kTrainPenaltyIntertokenCos = "intertoken_cos";
inline constexpr std::string_view kTrainPenaltyVLoc = "v_loc";
inline constexpr std::string_view kTrainPenaltySeriesAdjacentCos = "adjacent_cos";
inline constexpr double kMaxTrainPenaltyWeight = 1000;
// Relative defaults: warmup = steps / 20 (5%), eval_every = min(500, steps),
// save_every = 2 * eval_every.

// Mirrors layerflow.v1.TrainSpec. 0 / "" mean the default until
// WithTrainDefaults; heads and state_size stay 0 ("the architecture's
// default", resolved by TrainModelConfig) because one sweep trains several
// architectures.
struct TrainSettings {
  std::string task;
  int32_t vocab = 0;
  int32_t length = 0;
  int32_t pairs = 0;
  double alpha = 0;
  int32_t layers = 0;
  int32_t width = 0;
  int32_t heads = 0;
  int32_t state_size = 0;
  int64_t steps = 0;
  int32_t batch = 0;
  double lr = 0;
  int64_t warmup = 0;
  double weight_decay = 0;
  double clip = 0;
  double target_accuracy = 0;
  int64_t eval_every = 0;
  int64_t save_every = 0;
  int32_t eval_examples = 0;
  std::string curriculum;
  // loss = cross entropy + penalty_weight * P (TrainPenaltyPoints).
  std::string penalty;
  double penalty_weight = 0;
  std::vector<int32_t> penalty_layers;  // intertoken_cos: points, negative from the end
  std::string penalty_series;           // v_loc: intertoken_cos | adjacent_cos
  bool has_penalty() const { return !penalty.empty() && penalty != kTrainPenaltyNone; }
};

// One kind of training sequence: MQAR at `length` tokens with `pairs`
// key-value pairs, drawn for `weight` of every TrainSegmentCycle steps.
struct TrainSegment {
  int32_t length = 0;
  int32_t pairs = 0;
  int32_t weight = 1;
  friend bool operator==(const TrainSegment& a, const TrainSegment& b) {
    return a.length == b.length && a.pairs == b.pairs && a.weight == b.weight;
  }
};

// Every zero field set to its default (above). Idempotent.
TrainSettings WithTrainDefaults(TrainSettings settings);

// The settings as submitted (zeros allowed: they mean the defaults) against
// their ranges; INVALID_ARGUMENT whose message starts with the field's
// name ("steps: ...", "pairs: ..."), for the caller to prefix.
absl::Status ValidateTrainSettings(const TrainSettings& settings);

// What the penalty reads (defaults applied, settings valid), as
// representation points of the layers-block model (0 the embedding, 1..L
// the blocks, L + 1 the final norm):
//   intertoken_cos  P = mean over `points` of the batch's inter-token
//                   cosine (METHODS.md's formula, mean over sequences);
//   v_loc           P = v_loc (server/derived/cubic_fit.h) of the batch-mean
//                   series over x = l / L: intertoken_cos at points 0..L
//                   (the final norm dropped, as the derived rows do), or
//                   adjacent_cos between points l and l + 1, l = 0..L-1.
// Empty for no penalty.
struct TrainPenaltyPoints {
  std::vector<int32_t> points;
  bool adjacent = false;  // v_loc of adjacent_cos: pairs (l, l + 1)
};
TrainPenaltyPoints PenaltyPointsOf(const TrainSettings& settings);

// The architectures a TRAIN job can build ("gpt_neox", "gpt_neo", "mamba",
// "mamba2").
bool IsTrainArchitecture(absl::string_view name);

// The model `architecture` names with the sizes of `settings` (defaults
// applied): vocab_size = vocab, hidden = width, blocks = layers, positions =
// length; gpt_neox: heads, intermediate 4 * width, rotary_pct 0.25, parallel
// residual; gpt_neo: heads, every layer global attention; mamba: expand 2,
// state_size (16); mamba2: expand 2, head_dim 64, 2 * width / 64 heads,
// state_size (64), one group. INVALID_ARGUMENT naming the settings' field
// ("width: ...", "heads: ...") when the shape does not build.
absl::StatusOr<ModelConfig> TrainModelConfig(absl::string_view architecture,
                                             const TrainSettings& settings);

// The segments training draws from (defaults applied). "none": the task
// itself, {length, pairs, 1}. "zoology": Zoology's mixture for 512 tokens
// and 64 pairs, (64, 4) x 5, (128, 8), (256, 16), (256, 32), written
// relative to the task, (length / 8, pairs / 16) x 5, (length / 4,
// pairs / 8), (length / 2, pairs / 4), (length / 2, pairs / 2), then the
// task itself (length, pairs) where Zoology has (256, 64): the held-out set
// is the task, so training sees it too. Each segment has at least one pair
// and at least 4 * pairs tokens. The weights are Zoology's example counts
// (100k, then 20k each).
std::vector<TrainSegment> TrainSegments(const TrainSettings& settings);

// The segment (index into TrainSegments) of optimizer step `step`
// (1-based): the steps cycle through sum(weight) slots, segment k taking
// weight_k consecutive slots, so every batch holds one segment's
// sequences (no padding) and a resumed run draws the same ones.
size_t TrainSegmentOfStep(const TrainSettings& settings, int64_t step);

// Result chunks of a TRAIN job: ceil(steps / eval_every); chunk k ends at
// step TrainChunkEndStep(k) = min((k + 1) * eval_every, steps).
int64_t TrainChunkCount(const TrainSettings& settings);
int64_t TrainChunkEndStep(const TrainSettings& settings, int64_t chunk);

// The learning rate of optimizer step `step` (1-based): lr * step / warmup
// for step <= warmup, then cosine decay from lr to 0 at `steps`:
// lr * (1 + cos(pi * (step - warmup) / (steps - warmup))) / 2.
double TrainLearningRate(const TrainSettings& settings, int64_t step);

// The rows a TRAIN chunk may hold (docs/training.md): at layer 0, position
// = the step the row ends at. All but train_stopped (the stopping step) are
// curves over the step.
// train_penalty (P, unweighted) only with a penalty; train_loss is the
// cross entropy alone, comparable between runs with and without one.
inline constexpr const char* kTrainRows[] = {"train_loss", "train_acc",     "grad_norm",
                                             "lr",         "eval_loss",     "eval_acc",
                                             "train_stopped", "train_penalty"};
inline constexpr char kTrainStoppedRow[] = "train_stopped";

// A TRAIN job's stored checkpoints as a model name (docs/training.md):
// "artifact:<job_id>/model", the trained one, and
// "artifact:<job_id>/init_model", the random init it started from. The
// artifacts themselves are "<job_id>/<folder>/config.json" and
// "<job_id>/<folder>/model.safetensors".
inline constexpr char kArtifactModelScheme[] = "artifact:";
inline constexpr char kTrainedModelFolder[] = "model";
inline constexpr char kInitModelFolder[] = "init_model";
std::string TrainedModelName(absl::string_view train_job_id, bool init);
// The TRAIN job id and which checkpoint of a TrainedModelName; false for
// any other model name.
bool ParseTrainedModelName(absl::string_view model, std::string* train_job_id, bool* init);

}  // namespace layerflow::catalog

#endif  // LAYERFLOW_CATALOG_TRAIN_H_
