// A small model trained on MQAR with autograd (METHODS.md, "Training";
// docs/training.md): the TRAIN job's LibTorch half (worker/runtime/
// train_job.cc drives it chunk by chunk).
//
//   data    step s (1-based) trains on MQAR sequences (s - 1) * batch ..
//           s * batch - 1 of the job's seed (worker/data/mqar.h), of the
//           step's segment (catalog::TrainSegmentOfStep: the task itself,
//           or a part of the Zoology curriculum); the held-out set is
//           eval_examples sequences of the task from index 2^40 on, never
//           reached by training. Every sequence depends only on (seed,
//           segment, index), so a resumed run sees the same data.
//   loss    cross entropy of the model's next-token logits at the query
//           positions only (Zoology's -100 elsewhere); accuracy there too.
//           With a penalty (catalog::PenaltyPointsOf), + penalty_weight * P,
//           P computed from the same forward's residual stream.
//   update  AdamW (worker/train/adamw.h; betas 0.9 / 0.999, eps 1e-8,
//           weight decay on parameters of two or more dimensions: matrices
//           and embeddings, not biases, norms or the SSMs' A_log, D, dt
//           bias), the global gradient norm clipped to `clip`, learning rate
//           catalog::TrainLearningRate (linear warmup, cosine decay to 0).
//   state   the parameters, both AdamW moments and the step in one
//           safetensors file (SaveState / LoadState).
//   export  the Hugging Face layout (ExportHuggingFace): config.json and
//           model.safetensors (float32, HF parameter names).
// The model runs its ATen path in float32 (the CUDA SSM kernels are
// forward-only: a forward that records the graph never takes them, and they
// are switched off while a trainer lives).
#ifndef LAYERFLOW_WORKER_TRAIN_TRAINER_H_
#define LAYERFLOW_WORKER_TRAIN_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "catalog/train.h"
#include "worker/data/mqar.h"
#include "worker/model/language_model.h"
#include "worker/train/adamw.h"

namespace layerflow::worker::train {

// The first held-out sequence's index.
inline constexpr int64_t kEvalIndexBase = int64_t{1} << 40;

struct TrainRun {
  std::string architecture;  // gpt_neox | gpt_neo | mamba | mamba2
  std::string init_scheme = "reference";
  int64_t seed = 0;
  catalog::TrainSettings settings;  // defaults are applied by Create
  c10::Device device = c10::Device(c10::kCPU);
};

struct StepStats {
  int64_t step = 0;  // the step just taken (1-based)
  double lr = 0;     // its learning rate
  double loss = 0;   // the batch's mean loss at query positions, before the update
  double accuracy = 0;
  double grad_norm = 0;  // before clipping
  double penalty = 0;    // P, unweighted (0 without a penalty)
};

struct EvalStats {
  // One value per held-out sequence: its mean loss and its accuracy over
  // its `pairs` queries.
  std::vector<double> loss;
  std::vector<double> accuracy;
  double mean_accuracy() const;
};

class Trainer {
 public:
  // Builds the model (catalog::TrainModelConfig, the seeded init scheme) and
  // the data. INVALID_ARGUMENT naming the field for bad settings.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainRun& run);
  ~Trainer();

  // Steps taken so far.
  int64_t step() const { return optimizer_->steps(); }
  const catalog::TrainSettings& settings() const { return run_.settings; }
  const LanguageModel& model() const { return *model_; }

  // One optimizer step.
  absl::StatusOr<StepStats> Step();
  // The held-out set, without gradients.
  absl::StatusOr<EvalStats> Evaluate() const;
  // The logits at every position of `input_ids` [batch, seq] (no
  // gradients): [batch, seq, vocab] on the CPU in float32.
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& input_ids) const;

  // P of the penalty on `input_ids` [batch, seq] (no gradients), in
  // float64 from the model's float32 states; 0 without a penalty.
  absl::StatusOr<double> Penalty(const at::Tensor& input_ids) const;

  // The state after step(): parameters, moments, step; metadata names the
  // run (architecture, init scheme, seed, settings) so that a state of
  // another run is refused on load (FAILED_PRECONDITION naming the key).
  absl::Status SaveState(const std::string& path) const;
  absl::Status LoadState(const std::string& path);

  // config.json and model.safetensors into the existing folder `dir`.
  absl::Status ExportHuggingFace(const std::string& dir) const;

 private:
  Trainer(TrainRun run, std::unique_ptr<LanguageModel> model, MqarDataset data,
          std::vector<MqarDataset> segments);
  // The batch's ids and targets ([B, T] int64 on the device) of `data`.
  absl::Status Batch(const MqarDataset& data, int64_t begin, int64_t end, at::Tensor* ids,
                     at::Tensor* targets) const;
  // Logits at the positions where targets >= 0: [queries, vocab], in
  // batch-major order, with the matching targets.
  // With `penalty`, also P of this forward (a scalar that records the
  // graph when the model does).
  at::Tensor QueryLogits(const at::Tensor& ids, const at::Tensor& targets,
                         at::Tensor* query_targets, at::Tensor* penalty = nullptr) const;
  // A forward's state at `point` into states[i] where penalty_.points[i] is
  // that point (states empty: nothing kept).
  void KeepPenaltyState(int64_t point, const at::Tensor& hidden,
                        std::vector<at::Tensor>& states) const;
  // P from the states at penalty_.points (in that order).
  at::Tensor PenaltyOf(const std::vector<at::Tensor>& states) const;
  std::string Fingerprint() const;

  TrainRun run_;
  std::unique_ptr<LanguageModel> model_;
  MqarDataset data_;                   // the task: held-out sequences
  std::vector<MqarDataset> segments_;  // catalog::TrainSegments, in order
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<AdamW> optimizer_;
  bool kernels_switched_off_ = false;
  catalog::TrainPenaltyPoints penalty_;
  // v_loc: R = I - V (V^T V)^-1 V^T of the series' Vandermonde V [N, 4]
  // (x = l / L), so that v_loc(y) = y^T R y / N (R is a projection).
  at::Tensor residual_projection_;
};

}  // namespace layerflow::worker::train

#endif  // LAYERFLOW_WORKER_TRAIN_TRAINER_H_
