// Operations Mamba and Mamba-2 share, each matching its Hugging Face
// counterpart (modeling_mamba / modeling_mamba2) in dtype handling.
#ifndef LAYERFLOW_WORKER_MODEL_SSM_OPS_H_
#define LAYERFLOW_WORKER_MODEL_SSM_OPS_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "worker/model/language_model.h"
#include "worker/model/model_config.h"

namespace layerflow::worker::ssm {

// MambaRMSNorm / Mamba2RMSNorm: float32 variance, the weight times the
// normalised input cast back to the input dtype.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// causal_conv1d_fn without the kernel: depthwise conv1d over [B, C, L] with
// K - 1 left padding, cut to L, then SiLU.
at::Tensor CausalConv1dSilu(const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias);

// The Mamba block (MambaBlock / Mamba2Block): residual + mixer(norm(x)),
// the residual kept in float32 when residual_in_fp32.
template <typename Mixer>
at::Tensor ResidualBlock(const at::Tensor& hidden, const at::Tensor& norm_weight,
                         double eps, bool residual_in_fp32, const Mixer& mixer) {
  at::Tensor residual = hidden;
  at::Tensor h = RmsNorm(hidden.to(norm_weight.scalar_type()), norm_weight, eps);
  if (residual_in_fp32) residual = residual.to(at::kFloat);
  return residual + mixer(h);
}

// MambaModel.forward / Mamba2Model.forward (they differ only in the mixer):
// the embedding (point 0), one ResidualBlock per layer (points 1..L, each
// block's log λ to `spectra` first), the final RMSNorm (point L + 1).
// mixer(layer, normed, log_lambda or nullptr) is the block's mixer. Runs
// inside WithLayerErrors, advancing `point`.
template <typename Layer, typename Mixer>
void ResidualStackForward(const at::Tensor& input_ids, const at::Tensor& embeddings,
                          const std::vector<Layer>& layers, const at::Tensor& norm_f_weight,
                          double eps, bool residual_in_fp32,
                          const LanguageModel::LayerCallback& on_layer,
                          const SpectrumSink* spectra, const Mixer& mixer, int64_t& point) {
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.sizes());
  at::Tensor hidden =
      at::embedding(embeddings, input_ids.to(embeddings.device(), at::kLong));
  on_layer(point, hidden);
  for (const Layer& layer : layers) {
    ++point;
    at::Tensor log_lambda;
    hidden = ResidualBlock(hidden, layer.norm_weight, eps, residual_in_fp32,
                           [&](const at::Tensor& h) {
                             return mixer(layer, h, spectra ? &log_lambda : nullptr);
                           });
    if (spectra != nullptr) {  // an SSM's eigenvalues have no dsf variant
      if (spectra->on_layer) spectra->on_layer(point, log_lambda);
      if (spectra->on_layer_dsf) spectra->on_layer_dsf(point, log_lambda);
    }
    on_layer(point, hidden);
  }
  ++point;
  on_layer(point, RmsNorm(hidden, norm_f_weight, eps));
}

// The parameters every scheme leaves at the architecture's own init
// (init_mamba_weights / init_mamba2_weights), and the reference scheme's
// special cases (kaiming_uniform(a = sqrt 5) conv1d and out_proj, uniform
// dt_proj). Returns false for a parameter the scheme draws.
struct SsmInitSpec {
  double time_step_min = 0.001, time_step_max = 0.1, time_step_floor = 1e-4;
  double dt_init_std = 0;  // Mamba's dt_proj.weight bound; 0 = none
};
bool InitSsmParameter(const std::string& name, at::Tensor& tensor,
                      const InitScheme& scheme, const SsmInitSpec& spec,
                      at::Generator& generator);

}  // namespace layerflow::worker::ssm

#endif  // LAYERFLOW_WORKER_MODEL_SSM_OPS_H_
