// The interface every architecture implements (GPT-NeoX, GPT-Neo, Mamba,
// Mamba-2), and the factories that build one from a ModelConfig. A model is
// a ParameterMap with Hugging Face names plus a Forward that exposes the
// residual stream at every representation point (METHODS.md,
// "Representations"): 0 = after the embedding, 1..L = after block l,
// L + 1 = the final-norm output.
#ifndef LAYERFLOW_WORKER_MODEL_LANGUAGE_MODEL_H_
#define LAYERFLOW_WORKER_MODEL_LANGUAGE_MODEL_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "worker/model/init.h"
#include "worker/model/model_config.h"
#include "worker/model/parameter_map.h"

namespace layerflow::worker {

// Thrown by Forward when anything inside a block (or a layer callback)
// throws: carries the representation point so the job boundary can name it.
class LayerError : public std::runtime_error {
 public:
  LayerError(int64_t layer, const std::string& message, bool out_of_memory = false)
      : std::runtime_error(message), layer_(layer), out_of_memory_(out_of_memory) {}
  // 0 = embedding, 1..L = block, L + 1 = final norm.
  int64_t layer() const { return layer_; }
  // What was thrown was an out-of-memory error (device or host): a
  // RESOURCE_EXHAUSTED job (torch_status.h), not an INTERNAL one.
  bool out_of_memory() const { return out_of_memory_; }

 private:
  int64_t layer_;
  bool out_of_memory_;
};

// Eigenvalues of each block's mixer written as a dynamical system
// h_t = Λ_t h_{t-1} + B_t u_t (METHODS.md, "Spectra"); Λ_t is diagonal, so
// its entries are the eigenvalues. Forward hands the sink, per block l
// (1..L), log λ as [B, G, T - 1, K]: G groups (attention heads, Mamba-2
// heads; 1 for Mamba), time steps t = 2..T (1-based; attention has no λ_1),
// K values per group and step (1 for heads; channels x states for Mamba).
//   attention: log λ_t = LSE_{t-1} - LSE_t of the softmax normaliser the
//              model uses (its rotary q and k, its scale, its mask), in
//              float64;
//   Mamba:     log λ_t = Δ_t[c] A[c, s]; Mamba-2: log λ_t = Δ_t,h A_h
//              (float32, as the model computes them).
// on_layer_dsf gets the second paper's released code's variant for
// attention: no 1/sqrt(d) scaling, masked (future) keys counted in the
// normaliser, and q, k computed from the block's output instead of its
// input; SSMs hand both callbacks the same tensor. Either may be unset; one
// forward serves both.
struct SpectrumSink {
  using Callback = std::function<void(int64_t layer, const at::Tensor& log_lambda)>;
  Callback on_layer;
  Callback on_layer_dsf;
};

// t in float32, or kept in float64: where the reference computes a step in
// float32 whatever the run dtype (norms, scans, GPT-Neo's attention, rotary
// tables), a float64 model (the references of tests and of the GPU
// conformance suite) keeps float64 instead of being cut to float32.
inline at::Tensor AtLeastFloat32(const at::Tensor& t) {
  return t.to(c10::promoteTypes(t.scalar_type(), c10::kFloat));
}

// INVALID_ARGUMENT "<field>: must be positive, got <value>" for the first
// field that is not; OK when all are.
absl::Status CheckPositive(std::initializer_list<std::pair<const char*, int64_t>> fields);

class LanguageModel {
 public:
  // Called with the residual stream [batch, seq, hidden] at points 0..L+1,
  // in that order, as the forward goes: no layer is kept.
  using LayerCallback = std::function<void(int64_t point, const at::Tensor& hidden)>;

  virtual ~LanguageModel() = default;
  LanguageModel(const LanguageModel&) = delete;
  LanguageModel& operator=(const LanguageModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::string& architecture() const { return config_.architecture; }
  int64_t num_layers() const { return config_.num_layers(); }
  int64_t hidden_size() const { return config_.hidden_size(); }
  int64_t vocab_size() const { return config_.vocab_size(); }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }

  // HF parameter names in named_parameters() order. Invariant: a loader
  // writes INTO these tensors (copy_), never replaces them, because the
  // per-layer views of the architecture share them.
  const ParameterMap& parameters() const { return params_; }
  ParameterMap& mutable_parameters() { return params_; }
  // The input embedding's and the output head's names: with
  // tie_word_embeddings a checkpoint may leave the head out.
  const std::string& embedding_name() const { return embedding_name_; }
  const std::string& head_name() const { return head_name_; }

  // input_ids: integer [batch, seq] on any device. Throws LayerError.
  // With `spectra`, also hands every block's eigenvalues to it.
  void Forward(const at::Tensor& input_ids, const LayerCallback& on_layer,
               const SpectrumSink* spectra = nullptr) const;
  // G of the spectra: the groups eigenvalues are summarised by per layer.
  virtual int64_t spectrum_groups() const = 0;
  // The output head (a bias-free Linear in every architecture) on the
  // final-norm output: [batch, seq, vocab].
  at::Tensor Logits(const at::Tensor& final_hidden) const;
  // Where a representation point sits, in the reference's module names, e.g.
  // "layer 3 (gpt_neox.layers.2)".
  std::string PointName(int64_t point) const;

  // A copy of every parameter on `device` (same dtype): the per-GPU replica.
  std::unique_ptr<LanguageModel> Replicate(c10::Device device) const;

  // For training (worker/train): every parameter becomes an ordinary
  // tensor (models are built under InferenceMode, whose tensors autograd
  // refuses) that requires grad, and Forward / Logits record the graph
  // (callers that only evaluate put their own guard around them). Float32 or
  // float64 models only (INVALID_ARGUMENT "dtype: ..." otherwise).
  absl::Status MakeTrainable();
  bool trainable() const { return trainable_; }

 protected:
  explicit LanguageModel(ModelConfig config) : config_(std::move(config)) {}

  // Every parameter in HF named_parameters() order (the order random init
  // draws in) with the architecture's field it binds to: the one place an
  // architecture names its parameters. Sizes the per-layer storage first,
  // so the fields stay put until the next call.
  virtual std::vector<ParameterSlot> ParameterSlots() = 0;
  // The architecture's forward inside Forward's edge (InferenceMode unless
  // trainable, input_ids checked to be [batch, seq], exceptions turned into
  // LayerError at `point`): hands points 0..L + 1 to on_layer in order,
  // advancing `point` as it goes.
  virtual void RunForward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                          const SpectrumSink* spectra, int64_t& point) const = 0;
  // The reference's module names of the points, for PointName: the
  // embedding, the stack of blocks ("<layers>.<i>"), the final norm.
  struct PointModules {
    std::string embedding, layers, final_norm;
  };
  virtual PointModules point_modules() const = 0;
  // Parameters that keep the architecture's own init whatever the scheme
  // (Mamba's A_log, D, dt bias ...): fills `tensor` (on the model's device,
  // in its dtype) drawing from `draws`, and returns true, or returns false
  // to let the scheme draw it. Default: none.
  virtual bool InitStructural(const std::string& name, at::Tensor& tensor, const InitScheme& scheme,
                              const ParameterDraws& draws) const;
  // The reference std of Linear / Embedding weights (HF initializer_range).
  virtual double ReferenceStd() const = 0;

 private:
  friend absl::StatusOr<std::unique_ptr<LanguageModel>> CreateRandomModel(const ModelConfig&,
                                                                          const InitScheme&,
                                                                          uint64_t, c10::Device,
                                                                          c10::ScalarType);
  friend absl::StatusOr<std::unique_ptr<LanguageModel>> CreateEmptyModel(const ModelConfig&,
                                                                         c10::Device,
                                                                         c10::ScalarType);

  // params_ from ParameterSlots(): uninitialised, on `device` in `dtype`.
  void AddParameters(c10::Device device, c10::ScalarType dtype);
  // Points the architecture's fields (and head_) at params_.
  void Bind();

  ModelConfig config_;
  c10::Device device_ = c10::Device(c10::kCPU);
  c10::ScalarType dtype_ = c10::kFloat;
  bool trainable_ = false;
  ParameterMap params_;
  std::string embedding_name_, head_name_;
  at::Tensor head_;  // the kOutputHead slot's tensor, for Logits
};

// Checks that the config describes a buildable model of a known
// architecture; INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateModelConfig(const ModelConfig& config);

// Seeded random init (worker/model/init.h) straight on `device` in `dtype`,
// no host copy: every device makes the same weights (bit for bit; a dtype
// holds the float32 values rounded to it).
// INVALID_ARGUMENT for a bad config or dtype, INTERNAL for a LibTorch
// failure (naming the architecture).
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateRandomModel(const ModelConfig& config,
                                                                 const InitScheme& scheme,
                                                                 uint64_t seed, c10::Device device,
                                                                 c10::ScalarType dtype);

// Every parameter allocated (uninitialised) on `device` in `dtype`, for a
// checkpoint loader to copy_ into. Same errors as CreateRandomModel.
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateEmptyModel(const ModelConfig& config,
                                                                c10::Device device,
                                                                c10::ScalarType dtype);

// "fp32" | "bf16" | "fp16" -> dtype; INVALID_ARGUMENT naming `dtype`.
absl::StatusOr<c10::ScalarType> ParseDtype(const std::string& text);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_LANGUAGE_MODEL_H_
