// GPT-Neo, one to one with Hugging Face transformers'
// models/gpt_neo/modeling_gpt_neo.py (GPTNeoForCausalLM, 5.x): learned
// position embeddings added to the token embeddings (point 0 holds both),
// pre-LN blocks with separate q/k/v projections (no bias) and an out_proj
// (bias), NO 1/sqrt(d) attention scaling, attention computed in float32,
// layers alternating "global" (causal) and "local" (causal within the last
// window_size tokens) attention, a gelu_new MLP. Inference only.
#ifndef LAYERFLOW_WORKER_MODEL_GPT_NEO_H_
#define LAYERFLOW_WORKER_MODEL_GPT_NEO_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "worker/model/language_model.h"
#include "worker/model/parameter_map.h"

namespace layerflow::worker {

class GptNeoModel final : public LanguageModel {
 public:
  // Use CreateRandomModel / CreateEmptyModel (language_model.h).
  explicit GptNeoModel(ModelConfig config) : LanguageModel(std::move(config)) {}

  const GptNeoConfig& neo() const { return config().gpt_neo; }

  int64_t spectrum_groups() const override { return neo().num_heads; }

  // The boolean [seq, seq] mask HF's GPTNeoSelfAttention uses: key j is
  // visible from query i iff j <= i, and for "local" also i - j < window.
  static at::Tensor AttentionMask(int64_t seq, bool local, int64_t window, c10::Device device);

  static absl::Status Validate(const GptNeoConfig& config);

 private:
  struct Layer {
    bool local = false;
    at::Tensor ln_1_weight, ln_1_bias;
    at::Tensor q_proj_weight, k_proj_weight, v_proj_weight;
    at::Tensor out_proj_weight, out_proj_bias;
    at::Tensor ln_2_weight, ln_2_bias;
    at::Tensor c_fc_weight, c_fc_bias, c_proj_weight, c_proj_bias;
  };

  // GPTNeoForCausalLM's parameters (HF names), with GPTNeoBlock's.
  std::vector<ParameterSlot> ParameterSlots() override;
  std::vector<LayerParam<Layer>> LayerParams() const;
  void RunForward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                  const SpectrumSink* spectra, int64_t& point) const override;
  PointModules point_modules() const override;
  double ReferenceStd() const override { return neo().initializer_range; }
  std::vector<at::Tensor> QueryKeyValue(const Layer& layer, const at::Tensor& hidden) const;
  // With log_lambda, also this layer's spectrum (SpectrumSink).
  at::Tensor Attention(const Layer& layer, const at::Tensor& hidden, const at::Tensor& mask,
                       at::Tensor* log_lambda = nullptr) const;
  at::Tensor Mlp(const Layer& layer, const at::Tensor& hidden) const;

  at::Tensor wte_, wpe_;
  std::vector<Layer> layers_;
  at::Tensor ln_f_weight_, ln_f_bias_;
  at::Tensor lm_head_;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_GPT_NEO_H_
