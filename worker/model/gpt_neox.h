// GPT-NeoX (Pythia), one to one with Hugging Face transformers'
// models/gpt_neox/modeling_gpt_neox.py (GPTNeoXForCausalLM, 5.x): same
// parameter names and layouts, same operations in the same order, so the two
// can be read side by side. Inference only (no dropout, no KV cache).
#ifndef LAYERFLOW_WORKER_MODEL_GPT_NEOX_H_
#define LAYERFLOW_WORKER_MODEL_GPT_NEOX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "worker/model/model_config.h"
#include "worker/model/parameter_map.h"

namespace layerflow::worker {

// Thrown by Forward when anything inside a block (or a layer callback)
// throws: carries the representation point so the job boundary can name it.
class LayerError : public std::runtime_error {
 public:
  LayerError(int64_t layer, const std::string& message)
      : std::runtime_error(message), layer_(layer) {}
  // 0 = embedding, 1..L = block, L + 1 = final norm.
  int64_t layer() const { return layer_; }

 private:
  int64_t layer_;
};

class GptNeoXModel {
 public:
  // Called with the residual stream [batch, seq, hidden] after the embedding
  // (point 0), after each block (points 1..L) and the final-norm output
  // (point L + 1), in that order, as the forward goes: no layer is kept.
  using LayerCallback =
      std::function<void(int64_t point, const at::Tensor& hidden)>;

  // Seeded random init (worker/model/init.h) on the CPU in float32, then
  // moved to `device` and `dtype`. INVALID_ARGUMENT for an inconsistent
  // config or an unsupported dtype, INTERNAL for a LibTorch failure.
  static absl::StatusOr<std::unique_ptr<GptNeoXModel>> CreateRandom(
      const GptNeoXConfig& config, const InitScheme& scheme, uint64_t seed,
      c10::Device device, c10::ScalarType dtype);

  // Every parameter allocated (uninitialised) on `device` in `dtype`, for a
  // checkpoint loader to copy_ into (worker/model/gpt_neox_checkpoint.h).
  // Same errors as CreateRandom.
  static absl::StatusOr<std::unique_ptr<GptNeoXModel>> CreateEmpty(
      const GptNeoXConfig& config, c10::Device device, c10::ScalarType dtype);

  // A copy of every parameter on `device` (same dtype): the per-GPU replica.
  std::unique_ptr<GptNeoXModel> Replicate(c10::Device device) const;

  const GptNeoXConfig& config() const { return config_; }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }
  int64_t num_layers() const { return config_.num_hidden_layers; }
  // HF names: gpt_neox.embed_in.weight, gpt_neox.layers.N.*,
  // gpt_neox.final_layer_norm.*, embed_out.weight (the checkpoint name that
  // transformers 5 renames to lm_head.weight on load).
  // Invariant: a loader must write INTO these tensors (copy_), never replace
  // them, because the per-layer views below share them.
  const ParameterMap& parameters() const { return params_; }
  ParameterMap& mutable_parameters() { return params_; }

  // input_ids: integer [batch, seq] on any device. Throws LayerError.
  void Forward(const at::Tensor& input_ids, const LayerCallback& on_layer) const;
  // embed_out(final hidden): [batch, seq, vocab].
  at::Tensor Logits(const at::Tensor& final_hidden) const;

  // Checks that the config describes a buildable model; INVALID_ARGUMENT
  // naming the field otherwise.
  static absl::Status Validate(const GptNeoXConfig& config);

 private:
  // GPTNeoXLayer's parameters.
  struct Layer {
    at::Tensor input_layernorm_weight, input_layernorm_bias;
    at::Tensor post_attention_layernorm_weight, post_attention_layernorm_bias;
    at::Tensor query_key_value_weight, query_key_value_bias;  // [3d, d]
    at::Tensor dense_weight, dense_bias;
    at::Tensor dense_h_to_4h_weight, dense_h_to_4h_bias;
    at::Tensor dense_4h_to_h_weight, dense_4h_to_h_bias;
  };

  explicit GptNeoXModel(const GptNeoXConfig& config);
  void AddParameters();  // float32 CPU, HF named_parameters() order
  void Bind();           // points the fields below at params_
  at::Tensor Attention(const Layer& layer, const at::Tensor& hidden,
                       const at::Tensor& cos, const at::Tensor& sin) const;
  at::Tensor Mlp(const Layer& layer, const at::Tensor& hidden) const;

  GptNeoXConfig config_;
  c10::Device device_ = c10::Device(c10::kCPU);
  c10::ScalarType dtype_ = c10::kFloat;
  ParameterMap params_;
  at::Tensor embed_in_;
  std::vector<Layer> layers_;
  at::Tensor final_layer_norm_weight_, final_layer_norm_bias_;
  at::Tensor embed_out_;
};

// "fp32" | "bf16" | "fp16" -> dtype; INVALID_ARGUMENT naming `dtype`.
absl::StatusOr<c10::ScalarType> ParseDtype(const std::string& text);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_GPT_NEOX_H_
