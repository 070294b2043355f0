// Mamba, one to one with Hugging Face transformers'
// models/mamba/modeling_mamba.py (MambaForCausalLM, 5.x, the pure-torch path
// of MambaMixer): pre-RMSNorm residual blocks whose mixer is in_proj ->
// (x, gate); x -> causal depthwise conv1d -> SiLU -> x_proj -> (dt, B, C);
// dt -> dt_proj -> softplus(. + bias); selective scan
// h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t;
// y * SiLU(gate) -> out_proj. The scan runs as a parallel (Hillis-Steele)
// prefix scan over the sequence in log2(L) tensor steps, no loop over tokens.
#ifndef LAYERFLOW_WORKER_MODEL_MAMBA_H_
#define LAYERFLOW_WORKER_MODEL_MAMBA_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "worker/model/language_model.h"

namespace layerflow::worker {

class MambaModel final : public LanguageModel {
 public:
  // Use CreateRandomModel / CreateEmptyModel (language_model.h).
  explicit MambaModel(ModelConfig config) : LanguageModel(std::move(config)) {}

  const MambaConfig& mamba() const { return config().mamba; }

  // HF names: backbone.embeddings.weight, backbone.layers.N.norm.weight,
  // backbone.layers.N.mixer.{A_log, D, conv1d.*, in_proj.*, x_proj.weight,
  // dt_proj.*, out_proj.*}, backbone.norm_f.weight, lm_head.weight.
  void Forward(const at::Tensor& input_ids, const LayerCallback& on_layer,
               const SpectrumSink* spectra = nullptr) const override;
  at::Tensor Logits(const at::Tensor& final_hidden) const override;
  std::string PointName(int64_t point) const override;
  // No heads: one group pooling every channel and state.
  int64_t spectrum_groups() const override { return 1; }

  // The linear recurrence h_t = a_t * h_{t-1} + b_t (h_0 = 0) along dim 2
  // of [B, E, L, N] tensors, as an inclusive parallel prefix scan; returns
  // every h_t. Exposed so tests can hold it against the sequential loop.
  static at::Tensor ParallelScan(at::Tensor a, at::Tensor b);

  static absl::Status Validate(const MambaConfig& config);

 private:
  struct Layer {
    at::Tensor norm_weight;
    at::Tensor A_log, D;
    at::Tensor conv1d_weight, conv1d_bias;  // [E, 1, K], [E]
    at::Tensor in_proj_weight, in_proj_bias;
    at::Tensor x_proj_weight;
    at::Tensor dt_proj_weight, dt_proj_bias;
    at::Tensor out_proj_weight, out_proj_bias;
  };

  void AddParameters() override;
  void Bind() override;
  double ReferenceStd() const override { return mamba().initializer_range; }
  bool InitStructural(const std::string& name, at::Tensor& tensor,
                      const InitScheme& scheme,
                      at::Generator& generator) const override;
  // With log_lambda, also this layer's spectrum (SpectrumSink).
  at::Tensor Mixer(const Layer& layer, const at::Tensor& hidden,
                   at::Tensor* log_lambda = nullptr) const;
  // Mixer on the fused CUDA kernels (ssm::UseSsmKernels).
  at::Tensor MixerCuda(const Layer& layer, const at::Tensor& hidden,
                       at::Tensor* log_lambda) const;

  at::Tensor embeddings_;
  std::vector<Layer> layers_;
  at::Tensor norm_f_weight_;
  at::Tensor lm_head_;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_MAMBA_H_
