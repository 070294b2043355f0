// Operations Mamba and Mamba-2 share, each matching its Hugging Face
// counterpart (modeling_mamba / modeling_mamba2) in dtype handling.
#ifndef LAYERFLOW_WORKER_MODEL_SSM_OPS_H_
#define LAYERFLOW_WORKER_MODEL_SSM_OPS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/Tensor.h>

#include "worker/model/init.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"

namespace layerflow::worker::ssm {

// MambaRMSNorm / Mamba2RMSNorm: float32 variance, the weight times the
// normalised input cast back to the input dtype.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// causal_conv1d_fn without the kernel: depthwise conv1d over [B, C, L] with
// K - 1 left padding, cut to L, then SiLU.
at::Tensor CausalConv1dSilu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// ---- The fused CUDA path (worker/kernels/ssm_kernels.h) ------------------
// Whether a mixer on `hidden` runs the fused CUDA kernels: a CUDA tensor in
// float32, bf16 or fp16, a build with CUDA, and the kernels not switched off
// (SetSsmKernelsEnabled; the ATen path stays the reference: tests and the
// benches compare the two on the GPU). Every other device and dtype runs the
// ATen path.
bool UseSsmKernels(const at::Tensor& hidden);
void SetSsmKernelsEnabled(bool enabled);

// CausalConv1dSilu on token-major rows: x [B, L, C] (a strided view, such as
// a slice of the input projection, is read in place), weight [C, 1, K],
// bias [C] or undefined; returns [B, L, C] contiguous in x's dtype. The
// fused kernel on CUDA, else the ATen form through transposes.
at::Tensor CausalConv1dSiluRows(const at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias);

// Mamba's selective scan with softplus(dt + dt_bias), the D skip and the
// SiLU(z) gate fused (ssm_kernels.h, SelectiveScanArgs): u, dt, z [B, L, E]
// and B, C [B, L, N] token-major views in the model dtype, A [E, N] float32,
// dt_bias [E], D [E] (may be undefined) as the model stores them. Returns
// y [B, L, E] in the dtype; with `delta`, also softplus(dt + dt_bias) as
// float32 [B, L, E] (the spectra's Δ). CUDA only (UseSsmKernels), N in
// {16, 32, 64} (SelectiveScanKernelSupports).
bool SelectiveScanKernelSupports(int64_t states);
at::Tensor SelectiveScanCuda(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& z,
                             const at::Tensor& B, const at::Tensor& C, const at::Tensor& A,
                             const at::Tensor& dt_bias, const at::Tensor& D, at::Tensor* delta);

// Mamba-2's SSD scan and gated RMSNorm fused (ssm_kernels.h, SsdArgs):
// xbc [B, L, E + 2 G N] the conv output (contiguous), dt [B, L, H] after
// softplus and clamp, A [H] float32, D [H] (may be undefined), gate
// [B, L, E] (a view), norm_weight [E]. Returns norm(y * SiLU(gate)) as
// [B, L, E] in the dtype. CUDA only, bf16 / fp16, head_dim 64, N 64 or 128,
// chunk a multiple of 64 (SsdKernelSupports).
bool SsdKernelSupports(const at::Tensor& hidden, int64_t head_dim, int64_t states, int64_t chunk);
at::Tensor SsdGatedNormCuda(const at::Tensor& xbc, const at::Tensor& dt, const at::Tensor& A,
                            const at::Tensor& D, const at::Tensor& gate,
                            const at::Tensor& norm_weight, int64_t heads, int64_t head_dim,
                            int64_t groups, int64_t states, int64_t chunk, double eps);

// The boundary between two blocks with residual_in_fp32, fused
// (ssm_kernels.h, LaunchAddRmsNorm): returns (residual + mixer in float32,
// RmsNorm(that sum in the dtype, weight)), the same values as the ATen ops
// up to the variance's summation order. residual float32, mixer bf16 / fp16
// of the same shape on CUDA, width a multiple of 8 up to 8192.
bool AddRmsNormKernelSupports(const at::Tensor& residual, const at::Tensor& mixer);
std::pair<at::Tensor, at::Tensor> AddRmsNormCuda(const at::Tensor& residual,
                                                 const at::Tensor& mixer, const at::Tensor& weight,
                                                 double eps);

// The parameters every scheme leaves at the architecture's own init
// (init_mamba_weights / init_mamba2_weights), and the reference scheme's
// special cases (kaiming_uniform(a = sqrt 5) conv1d and out_proj, uniform
// dt_proj), their random values from the parameter's counter draws
// (init.h): the same bits on every device. Returns false for a parameter
// the scheme draws.
struct SsmInitSpec {
  double time_step_min = 0.001, time_step_max = 0.1, time_step_floor = 1e-4;
  double dt_init_std = 0;  // Mamba's dt_proj.weight bound; 0 = none
};
bool InitSsmParameter(const std::string& name, at::Tensor& tensor, const InitScheme& scheme,
                      const SsmInitSpec& spec, const ParameterDraws& draws);

}  // namespace layerflow::worker::ssm

#endif  // LAYERFLOW_WORKER_MODEL_SSM_OPS_H_
