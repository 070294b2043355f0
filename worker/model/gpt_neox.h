// GPT-NeoX (Pythia), one to one with Hugging Face transformers'
// models/gpt_neox/modeling_gpt_neox.py (GPTNeoXForCausalLM, 5.x): same
// parameter names and layouts, same operations in the same order, so the two
// can be read side by side. Inference only (no dropout, no KV cache).
#ifndef LAYERFLOW_WORKER_MODEL_GPT_NEOX_H_
#define LAYERFLOW_WORKER_MODEL_GPT_NEOX_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "worker/model/language_model.h"
#include "worker/model/parameter_map.h"

namespace layerflow::worker {

class GptNeoXModel final : public LanguageModel {
 public:
  // Use CreateRandomModel / CreateEmptyModel (language_model.h).
  explicit GptNeoXModel(ModelConfig config) : LanguageModel(std::move(config)) {}

  const GptNeoXConfig& neox() const { return config().gpt_neox; }

  int64_t spectrum_groups() const override { return neox().num_attention_heads; }

  // INVALID_ARGUMENT naming the field of an unbuildable config.
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

  // GPTNeoXForCausalLM's parameters (HF names), with GPTNeoXLayer's.
  std::vector<ParameterSlot> ParameterSlots() override;
  std::vector<LayerParam<Layer>> LayerParams() const;
  void RunForward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                  const SpectrumSink* spectra, int64_t& point) const override;
  PointModules point_modules() const override;
  double ReferenceStd() const override { return neox().initializer_range; }
  std::vector<at::Tensor> QueryKeyValue(const Layer& layer, const at::Tensor& hidden,
                                        const at::Tensor& cos, const at::Tensor& sin) const;
  // With log_lambda, also this layer's spectrum (SpectrumSink).
  at::Tensor Attention(const Layer& layer, const at::Tensor& hidden, const at::Tensor& cos,
                       const at::Tensor& sin, at::Tensor* log_lambda = nullptr) const;
  at::Tensor Mlp(const Layer& layer, const at::Tensor& hidden) const;

  at::Tensor embed_in_;
  std::vector<Layer> layers_;
  at::Tensor final_layer_norm_weight_, final_layer_norm_bias_;
  at::Tensor embed_out_;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_GPT_NEOX_H_
