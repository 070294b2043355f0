// Operations Mamba and Mamba-2 share, each matching its Hugging Face
// counterpart (modeling_mamba / modeling_mamba2) in dtype handling.
#ifndef LAYERFLOW_WORKER_MODEL_SSM_OPS_H_
#define LAYERFLOW_WORKER_MODEL_SSM_OPS_H_

#include <cstdint>
#include <string>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

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
