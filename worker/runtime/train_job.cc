// RunTrainJob on the trainer (worker/train/trainer.h).
#include "worker/runtime/train_job.h"

#include <cstdio>
#include <memory>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/train/trainer.h"

namespace layerflow::worker {
namespace {

// Sums over the values of one row (MetricStat's sufficient statistics).
struct RowSum {
  double sum = 0, sum_sq = 0;
  int64_t count = 0;
  void Add(double v) {
    sum += v;
    sum_sq += v * v;
    ++count;
  }
};

void AddRow(ChunkResult& chunk, const char* metric, int64_t step, const RowSum& row) {
  if (row.count == 0) return;
  MetricStat stat;
  stat.metric = metric;
  stat.layer = 0;
  stat.position = static_cast<int32_t>(step);
  stat.sum = row.sum;
  stat.sum_sq = row.sum_sq;
  stat.count = row.count;
  chunk.stats.push_back(std::move(stat));
}

}  // namespace

std::string TrainStatePrefix(const std::string& job_id) {
  return absl::StrCat(job_id, "/train_state/");
}

std::string TrainStateArtifactName(const std::string& job_id, int64_t step) {
  return absl::StrFormat("%s%012d", TrainStatePrefix(job_id), step);
}

std::string TrainModelPrefix(const std::string& job_id) {
  return absl::StrCat(job_id, "/", catalog::kTrainedModelFolder, "/");
}

std::string TrainInitModelPrefix(const std::string& job_id) {
  return absl::StrCat(job_id, "/", catalog::kInitModelFolder, "/");
}

std::string SelectTrainState(const std::vector<std::string>& names, const std::string& job_id,
                             const catalog::TrainSettings& settings, int64_t resume_from_sequence) {
  if (resume_from_sequence <= 0) return "";
  const int64_t limit = catalog::TrainChunkEndStep(settings, resume_from_sequence - 1);
  const catalog::TrainSettings s = catalog::WithTrainDefaults(settings);
  std::string best;
  int64_t best_step = -1;
  for (const std::string& name : names) {
    absl::string_view rest = name;
    if (!absl::ConsumePrefix(&rest, TrainStatePrefix(job_id))) continue;
    int64_t step = 0;
    if (rest.size() != 12 || !absl::SimpleAtoi(rest, &step)) continue;
    // Only chunk ends: a state elsewhere would not line up with the chunks.
    if (step <= 0 || step > limit || step % s.eval_every != 0) continue;
    if (step > best_step) {
      best_step = step;
      best = name;
    }
  }
  return best;
}

absl::StatusOr<TrainJobOutcome> RunTrainJob(const TrainJobConfig& config,
                                            const DeviceConfig& device,
                                            const std::string& state_path,
                                            const TrainJobHooks& hooks) {
  train::TrainRun run;
  run.architecture = config.architecture;
  run.init_scheme = config.init_scheme;
  run.seed = config.seed;
  run.settings = config.settings;
  if (device.device_type == "cuda") {
    // One GPU: the models are small enough that data parallelism would
    // only add a reduction to every step.
    run.device = c10::Device(c10::kCUDA, 0);
  } else if (device.device_type != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("device_type: unknown '", device.device_type, "'; known: cpu, cuda"));
  }
  LF_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer, train::Trainer::Create(run));
  const catalog::TrainSettings& s = trainer->settings();
  if (state_path.empty() && hooks.save_init_model) {
    LF_ASSIGN_OR_RETURN(const std::string init_dir, MakeTempPath("layerflow-init", true));
    absl::Status saved = trainer->ExportHuggingFace(init_dir);
    if (saved.ok()) saved = hooks.save_init_model(init_dir);
    RemoveTree(init_dir);
    LF_RETURN_IF_ERROR(saved) << "init model";
  }
  if (!state_path.empty()) {
    LF_RETURN_IF_ERROR(trainer->LoadState(state_path));
    if (trainer->step() % s.eval_every != 0) {
      return absl::FailedPreconditionError(absl::StrCat("training state at step ", trainer->step(),
                                                        " is not at a chunk end (eval_every ",
                                                        s.eval_every, ")"));
    }
  }
  const int64_t chunks = catalog::TrainChunkCount(s);
  for (int64_t k = trainer->step() / s.eval_every; k < chunks; ++k) {
    const int64_t end = catalog::TrainChunkEndStep(s, k);
    RowSum loss, accuracy, grad_norm, lr, penalty;
    while (trainer->step() < end) {
      if (hooks.stopped && hooks.stopped()) {
        return absl::AbortedError(absl::StrCat("stopped at step ", trainer->step()));
      }
      LF_ASSIGN_OR_RETURN(const train::StepStats step, trainer->Step());
      loss.Add(step.loss);
      accuracy.Add(step.accuracy);
      grad_norm.Add(step.grad_norm);
      penalty.Add(step.penalty);
    }
    lr.Add(catalog::TrainLearningRate(s, end));
    LF_ASSIGN_OR_RETURN(const train::EvalStats eval, trainer->Evaluate());
    RowSum eval_loss, eval_acc;
    for (double v : eval.loss) eval_loss.Add(v);
    for (double v : eval.accuracy) eval_acc.Add(v);
    ChunkResult chunk;
    chunk.sequence = k;
    AddRow(chunk, "train_loss", end, loss);
    AddRow(chunk, "train_acc", end, accuracy);
    AddRow(chunk, "grad_norm", end, grad_norm);
    if (s.has_penalty()) AddRow(chunk, "train_penalty", end, penalty);
    AddRow(chunk, "lr", end, lr);
    AddRow(chunk, "eval_loss", end, eval_loss);
    AddRow(chunk, "eval_acc", end, eval_acc);
    const bool reached = eval.mean_accuracy() >= s.target_accuracy;
    if (reached || k + 1 == chunks) {
      TrainJobOutcome outcome;
      outcome.steps = end;
      outcome.early_stopped = reached && k + 1 < chunks;
      if (reached) {
        RowSum stopped;
        stopped.Add(static_cast<double>(end));
        AddRow(chunk, "train_stopped", end, stopped);
      }
      LF_ASSIGN_OR_RETURN(outcome.model_dir, MakeTempPath("layerflow-trained", true));
      if (absl::Status st = trainer->ExportHuggingFace(outcome.model_dir); !st.ok()) {
        RemoveTree(outcome.model_dir);
        return st;
      }
      outcome.final_chunk = std::move(chunk);
      return outcome;
    }
    if (end % s.save_every == 0 && hooks.save_state) {
      LF_ASSIGN_OR_RETURN(const std::string path, MakeTempPath("layerflow-train-state", false));
      absl::Status saved = trainer->SaveState(path);
      if (saved.ok()) saved = hooks.save_state(end, path);
      std::remove(path.c_str());
      LF_RETURN_IF_ERROR(saved) << "training state at step " << end;
    }
    if (hooks.stream) {
      LF_RETURN_IF_ERROR(hooks.stream(chunk));
    }
  }
  return absl::InternalError("training ended without a last chunk");
}

}  // namespace layerflow::worker
