#include "worker/train/trainer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/kernels/kernel_switch.h"
#include "worker/model/checkpoint.h"
#include "worker/model/config_json.h"
#include "worker/model/ssm_ops.h"
#include "worker/model/torch_status.h"

namespace layerflow::worker::train {
namespace {

constexpr char kStateFormat[] = "layerflow-train-state-1";

// A CPU float32 contiguous copy and its safetensors entry (the copy must
// outlive the write).
SafetensorsWriteTensor EntryOf(const std::string& name, const at::Tensor& cpu) {
  SafetensorsWriteTensor t;
  t.name = name;
  t.dtype = SafetensorsDtype::kF32;
  t.shape = cpu.sizes().vec();
  t.data = cpu.data_ptr();
  t.nbytes = static_cast<size_t>(cpu.numel()) * sizeof(float);
  return t;
}

at::Tensor CpuFloat(const at::Tensor& t) {
  return t.detach().to(at::kCPU, at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

// The tensor `name` of a state file copied into `into` (same shape, F32).
absl::Status CopyInto(const SafetensorsFile& file, const std::string& name, at::Tensor& into) {
  const SafetensorsTensor* t = file.Find(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": no tensor '", name, "'"));
  }
  if (t->dtype != SafetensorsDtype::kF32 || t->shape != into.sizes().vec()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": tensor '", name, "' is ", SafetensorsDtypeName(t->dtype), " ",
                     ShapeString(t->shape), ", expected F32 ", ShapeString(into.sizes().vec())));
  }
  at::Tensor host = at::empty(t->shape, at::kFloat);
  std::memcpy(host.data_ptr(), t->data, t->nbytes);
  at::NoGradGuard no_grad;
  into.copy_(host);
  return absl::OkStatus();
}

// The mean over sequences of METHODS.md's inter-token cosine of hidden
// [B, T, d]: (||sum_t h_t / ||h_t|| ||^2 - T) / (T (T - 1)), in float64.
at::Tensor MeanIntertokenCos(const at::Tensor& hidden) {
  const at::Tensor h = hidden.to(at::kDouble);
  const double n = static_cast<double>(h.size(1));
  const at::Tensor unit = h / h.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-300);
  const at::Tensor sum = unit.sum(1);
  return ((sum * sum).sum(-1) - n).div(n * (n - 1)).mean();
}

// The mean over sequences and tokens of cos(a_t, b_t), in float64.
at::Tensor MeanAdjacentCos(const at::Tensor& a, const at::Tensor& b) {
  return at::cosine_similarity(a.to(at::kDouble), b.to(at::kDouble), -1, 1e-300).mean();
}

}  // namespace

double EvalStats::mean_accuracy() const {
  if (accuracy.empty()) return 0;
  double sum = 0;
  for (double a : accuracy) sum += a;
  return sum / static_cast<double>(accuracy.size());
}

Trainer::Trainer(TrainRun run, std::unique_ptr<LanguageModel> model, MqarDataset data,
                 std::vector<MqarDataset> segments)
    : run_(std::move(run)),
      model_(std::move(model)),
      data_(std::move(data)),
      segments_(std::move(segments)) {}

Trainer::~Trainer() {
  if (kernels_switched_off_) ssm::SetSsmKernelsEnabled(SsmKernelsRequested());
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainRun& given) {
  TrainRun run = given;
  LF_RETURN_IF_ERROR(catalog::ValidateTrainSettings(run.settings));
  run.settings = catalog::WithTrainDefaults(run.settings);
  LF_ASSIGN_OR_RETURN(const ModelConfig config,
                      catalog::TrainModelConfig(run.architecture, run.settings));
  LF_ASSIGN_OR_RETURN(const InitScheme scheme, ParseInitScheme(run.init_scheme));
  if (run.seed < 0) {
    return absl::InvalidArgumentError(absl::StrCat("seed: ", run.seed, " is negative"));
  }
  MqarOptions options;
  options.seed = run.seed;
  options.vocab_size = run.settings.vocab;
  options.seq_len = run.settings.length;
  options.num_kv_pairs = run.settings.pairs;
  options.alpha = run.settings.alpha;
  LF_ASSIGN_OR_RETURN(MqarDataset data, MqarDataset::Create(options));
  std::vector<MqarDataset> segments;
  for (const catalog::TrainSegment& g : catalog::TrainSegments(run.settings)) {
    MqarOptions part = options;
    part.seq_len = g.length;
    part.num_kv_pairs = g.pairs;
    absl::StatusOr<MqarDataset> made = MqarDataset::Create(part);
    if (!made.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("curriculum: segment of ", g.length,
                                                     " tokens and ", g.pairs,
                                                     " pairs: ", made.status().message()));
    }
    segments.push_back(*std::move(made));
  }
  LF_ASSIGN_OR_RETURN(
      std::unique_ptr<LanguageModel> model,
      CreateRandomModel(config, scheme, static_cast<uint64_t>(run.seed), run.device, at::kFloat));
  LF_RETURN_IF_ERROR(model->MakeTrainable());
  std::unique_ptr<Trainer> trainer(
      new Trainer(run, std::move(model), std::move(data), std::move(segments)));
  // The fused SSM kernels have no backward: the ATen path trains.
  if (run.device.is_cuda() && (run.architecture == "mamba" || run.architecture == "mamba2")) {
    ssm::SetSsmKernelsEnabled(false);
    trainer->kernels_switched_off_ = true;
  }
  trainer->penalty_ = catalog::PenaltyPointsOf(run.settings);
  if (run.settings.penalty == catalog::kTrainPenaltyVLoc) {
    LF_RETURN_IF_ERROR(GuardTorch("penalty", [&]() -> absl::Status {
      const int64_t n = static_cast<int64_t>(trainer->penalty_.points.size()) -
                        (trainer->penalty_.adjacent ? 1 : 0);
      at::Tensor x = at::arange(n, at::kDouble).div(static_cast<double>(run.settings.layers));
      const at::Tensor vandermonde = at::stack({at::ones_like(x), x, x * x, x * x * x}, 1);
      // Orthonormal columns spanning the cubics: R = I - Q Q^T.
      const at::Tensor q = std::get<0>(at::linalg_qr(vandermonde, "reduced"));
      trainer->residual_projection_ =
          (at::eye(n, at::kDouble) - q.matmul(q.t())).to(run.device);
      return absl::OkStatus();
    }));
  }
  std::vector<bool> decay;
  for (auto& [name, tensor] : trainer->model_->mutable_parameters().items()) {
    trainer->names_.push_back(name);
    trainer->params_.push_back(tensor);
    decay.push_back(tensor.dim() >= 2);
  }
  AdamWOptions adam;
  adam.weight_decay = run.settings.weight_decay;
  LF_RETURN_IF_ERROR(GuardTorch("optimizer", [&]() -> absl::Status {
    trainer->optimizer_ = std::make_unique<AdamW>(trainer->params_, decay, adam);
    return absl::OkStatus();
  }));
  return trainer;
}

absl::Status Trainer::Batch(const MqarDataset& data, int64_t begin, int64_t end, at::Tensor* ids,
                            at::Tensor* targets) const {
  LF_ASSIGN_OR_RETURN(const std::vector<MqarExample> examples, data.GenerateRange(begin, end));
  const int64_t len = data.options().seq_len;
  at::Tensor id_host = at::empty({end - begin, len}, at::kLong);
  at::Tensor target_host = at::empty({end - begin, len}, at::kLong);
  int64_t* id_out = id_host.data_ptr<int64_t>();
  int64_t* target_out = target_host.data_ptr<int64_t>();
  for (const MqarExample& e : examples) {
    id_out = std::copy(e.token_ids.begin(), e.token_ids.end(), id_out);
    target_out = std::copy(e.targets.begin(), e.targets.end(), target_out);
  }
  *ids = id_host.to(run_.device);
  *targets = target_host.to(run_.device);
  return absl::OkStatus();
}

void Trainer::KeepPenaltyState(int64_t point, const at::Tensor& hidden,
                               std::vector<at::Tensor>& states) const {
  for (size_t i = 0; i < states.size(); ++i) {
    if (penalty_.points[i] == point) states[i] = hidden;
  }
}

at::Tensor Trainer::PenaltyOf(const std::vector<at::Tensor>& states) const {
  std::vector<at::Tensor> series;
  if (penalty_.adjacent) {
    for (size_t l = 0; l + 1 < states.size(); ++l) {
      series.push_back(MeanAdjacentCos(states[l], states[l + 1]));
    }
  } else {
    for (const at::Tensor& state : states) series.push_back(MeanIntertokenCos(state));
  }
  const at::Tensor y = at::stack(series);
  if (!residual_projection_.defined()) return y.mean();  // intertoken_cos at the points
  return y.dot(residual_projection_.mv(y)).div(static_cast<double>(y.size(0)));
}

at::Tensor Trainer::QueryLogits(const at::Tensor& ids, const at::Tensor& targets,
                                at::Tensor* query_targets, at::Tensor* penalty) const {
  const int64_t final_point = model_->num_layers() + 1;
  at::Tensor final_hidden;
  std::vector<at::Tensor> states(penalty != nullptr ? penalty_.points.size() : 0);
  model_->Forward(ids, [&](int64_t point, const at::Tensor& hidden) {
    if (point == final_point) final_hidden = hidden;
    KeepPenaltyState(point, hidden, states);
  });
  if (penalty != nullptr) *penalty = PenaltyOf(states);
  const at::Tensor mask = targets >= 0;
  *query_targets = targets.masked_select(mask);
  // Only the query rows go through the head: [B, T, vocab] would be the
  // largest tensor of the step by far.
  return model_->Logits(final_hidden.index({mask}));
}

absl::StatusOr<StepStats> Trainer::Step() {
  const int64_t s = step() + 1;
  const int64_t batch = run_.settings.batch;
  at::Tensor ids, targets;
  const MqarDataset& data = segments_[catalog::TrainSegmentOfStep(run_.settings, s)];
  LF_RETURN_IF_ERROR(Batch(data, (s - 1) * batch, s * batch, &ids, &targets));
  StepStats stats;
  stats.step = s;
  stats.lr = catalog::TrainLearningRate(run_.settings, s);
  LF_RETURN_IF_ERROR(GuardTorch(
      absl::StrCat("model ", run_.architecture, ", step ", s),
      [&]() -> absl::Status {
        at::Tensor query_targets, penalty;
        const at::Tensor logits = QueryLogits(ids, targets, &query_targets,
                                              penalty_.points.empty() ? nullptr : &penalty);
        const at::Tensor loss = at::cross_entropy_loss(logits, query_targets);
        for (at::Tensor& p : params_) {
          if (p.grad().defined()) p.mutable_grad() = at::Tensor();
        }
        if (penalty.defined()) {
          (loss + penalty.to(loss.scalar_type()) * run_.settings.penalty_weight).backward();
          stats.penalty = penalty.item<double>();
        } else {
          loss.backward();
        }
        stats.loss = loss.item<double>();
        {
          at::NoGradGuard no_grad;
          stats.accuracy =
              logits.argmax(-1).eq(query_targets).to(at::kDouble).mean().item<double>();
        }
        stats.grad_norm = ClipGradNorm(params_, run_.settings.clip);
        optimizer_->Step(stats.lr);
        return absl::OkStatus();
      },
      [this](int64_t point) { return model_->PointName(point); }));
  return stats;
}

absl::StatusOr<EvalStats> Trainer::Evaluate() const {
  EvalStats stats;
  const int64_t n = run_.settings.eval_examples;
  const int64_t batch = run_.settings.batch;
  for (int64_t begin = 0; begin < n; begin += batch) {
    const int64_t end = std::min(n, begin + batch);
    at::Tensor ids, targets;
    LF_RETURN_IF_ERROR(
        Batch(data_, kEvalIndexBase + begin, kEvalIndexBase + end, &ids, &targets));
    LF_RETURN_IF_ERROR(GuardTorch(
        absl::StrCat("model ", run_.architecture, ", evaluation"),
        [&]() -> absl::Status {
          c10::InferenceMode guard;
          at::Tensor query_targets;
          const at::Tensor logits = QueryLogits(ids, targets, &query_targets);
          // Every sequence has exactly `pairs` queries, in order.
          const int64_t rows = end - begin;
          const at::Tensor losses =
              at::cross_entropy_loss(logits, query_targets, {}, at::Reduction::None)
                  .view({rows, -1})
                  .to(at::kDouble)
                  .mean(1)
                  .cpu();
          const at::Tensor right =
              logits.argmax(-1).eq(query_targets).view({rows, -1}).to(at::kDouble).mean(1).cpu();
          for (int64_t i = 0; i < rows; ++i) {
            stats.loss.push_back(losses[i].item<double>());
            stats.accuracy.push_back(right[i].item<double>());
          }
          return absl::OkStatus();
        },
        [this](int64_t point) { return model_->PointName(point); }));
  }
  return stats;
}

absl::StatusOr<double> Trainer::Penalty(const at::Tensor& input_ids) const {
  if (penalty_.points.empty()) return 0.0;
  double value = 0;
  LF_RETURN_IF_ERROR(GuardTorch(
      absl::StrCat("model ", run_.architecture, ", penalty"),
      [&]() -> absl::Status {
        c10::InferenceMode guard;
        std::vector<at::Tensor> states(penalty_.points.size());
        model_->Forward(input_ids.to(run_.device), [&](int64_t point, const at::Tensor& hidden) {
          KeepPenaltyState(point, hidden, states);
        });
        value = PenaltyOf(states).item<double>();
        return absl::OkStatus();
      },
      [this](int64_t point) { return model_->PointName(point); }));
  return value;
}

absl::StatusOr<at::Tensor> Trainer::Logits(const at::Tensor& input_ids) const {
  return GuardTorch("logits", [&]() -> absl::StatusOr<at::Tensor> {
    c10::InferenceMode guard;
    const int64_t final_point = model_->num_layers() + 1;
    at::Tensor final_hidden;
    model_->Forward(input_ids.to(run_.device), [&](int64_t point, const at::Tensor& hidden) {
      if (point == final_point) final_hidden = hidden;
    });
    return model_->Logits(final_hidden).to(at::kCPU, at::kFloat);
  });
}

namespace {

// The penalty only when there is one (states saved before it existed).
std::string PenaltyFingerprint(const catalog::TrainSettings& s) {
  if (!s.has_penalty()) return "";
  std::string out = absl::StrCat(" penalty ", s.penalty, " weight ", s.penalty_weight);
  if (!s.penalty_layers.empty()) {
    absl::StrAppend(&out, " layers ", absl::StrJoin(s.penalty_layers, ","));
  }
  if (!s.penalty_series.empty()) absl::StrAppend(&out, " series ", s.penalty_series);
  return out;
}

}  // namespace

std::string Trainer::Fingerprint() const {
  const catalog::TrainSettings& s = run_.settings;
  // The curriculum only when there is one: states saved before it existed
  // are of "none" runs and still load.
  const std::string curriculum =
      s.curriculum == catalog::kTrainCurriculumNone ? "" : absl::StrCat(" curriculum ", s.curriculum);
  return absl::StrCat(run_.architecture, " init ", run_.init_scheme, " seed ", run_.seed, " task ",
                      s.task, " vocab ", s.vocab, " length ", s.length, " pairs ", s.pairs,
                      " alpha ", s.alpha, " layers ", s.layers, " width ", s.width, " heads ",
                      s.heads, " state_size ", s.state_size, " steps ", s.steps, " batch ", s.batch,
                      " lr ", s.lr, " warmup ", s.warmup, " weight_decay ", s.weight_decay,
                      " clip ", s.clip, curriculum, PenaltyFingerprint(s));
}

absl::Status Trainer::SaveState(const std::string& path) const {
  return GuardTorch("saving the training state", [&]() -> absl::Status {
    std::vector<at::Tensor> copies;  // alive until written
    std::vector<SafetensorsWriteTensor> entries;
    copies.reserve(3 * params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      copies.push_back(CpuFloat(params_[i]));
      entries.push_back(EntryOf("param." + names_[i], copies.back()));
      copies.push_back(CpuFloat(optimizer_->exp_avg()[i]));
      entries.push_back(EntryOf("exp_avg." + names_[i], copies.back()));
      copies.push_back(CpuFloat(optimizer_->exp_avg_sq()[i]));
      entries.push_back(EntryOf("exp_avg_sq." + names_[i], copies.back()));
    }
    return WriteSafetensors(
        path, entries,
        {{"format", kStateFormat}, {"step", absl::StrCat(step())}, {"run", Fingerprint()}});
  });
}

absl::Status Trainer::LoadState(const std::string& path) {
  LF_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  const std::map<std::string, std::string>& meta = file->metadata();
  auto value = [&](const std::string& key) {
    auto it = meta.find(key);
    return it == meta.end() ? std::string() : it->second;
  };
  if (value("format") != kStateFormat) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": format: not a training state (", kStateFormat, ")"));
  }
  if (value("run") != Fingerprint()) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": run: the state is of another run ('",
                                                      value("run"), "'), this one is '",
                                                      Fingerprint(), "'"));
  }
  int64_t saved_step = 0;
  if (!absl::SimpleAtoi(value("step"), &saved_step) || saved_step < 0 ||
      saved_step > run_.settings.steps) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": step: '", value("step"), "' is not a step of this run"));
  }
  return GuardTorch("loading the training state", [&]() -> absl::Status {
    for (size_t i = 0; i < params_.size(); ++i) {
      LF_RETURN_IF_ERROR(CopyInto(*file, "param." + names_[i], params_[i]));
      LF_RETURN_IF_ERROR(CopyInto(*file, "exp_avg." + names_[i], optimizer_->exp_avg()[i]));
      LF_RETURN_IF_ERROR(CopyInto(*file, "exp_avg_sq." + names_[i], optimizer_->exp_avg_sq()[i]));
    }
    optimizer_->set_steps(saved_step);
    return absl::OkStatus();
  });
}

absl::Status Trainer::ExportHuggingFace(const std::string& dir) const {
  const std::string json = CheckpointConfigJson(model_->config());
  {
    const std::string path = dir + "/config.json";
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
    const bool ok = std::fwrite(json.data(), 1, json.size(), f) == json.size();
    if (std::fclose(f) != 0 || !ok) return absl::InternalError(absl::StrCat("writing ", path));
  }
  return GuardTorch("saving the checkpoint", [&]() -> absl::Status {
    std::vector<at::Tensor> copies;
    std::vector<SafetensorsWriteTensor> entries;
    copies.reserve(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      copies.push_back(CpuFloat(params_[i]));
      entries.push_back(EntryOf(names_[i], copies.back()));
    }
    // transformers reads the format key to pick its loader.
    return WriteSafetensors(dir + "/model.safetensors", entries,
                            {{"format", "pt"},
                             {"layerflow_step", absl::StrCat(step())},
                             {"layerflow_run", Fingerprint()}});
  });
}

}  // namespace layerflow::worker::train
