#include "worker/model/mamba.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {
absl::Status MambaModel::Validate(const MambaConfig& c) {
  if (absl::Status s = CheckPositive({{"vocab_size", c.vocab_size},
                                      {"hidden_size", c.hidden_size},
                                      {"state_size", c.state_size},
                                      {"num_hidden_layers", c.num_hidden_layers},
                                      {"expand", c.expand},
                                      {"conv_kernel", c.conv_kernel}});
      !s.ok()) {
    return s;
  }
  if (c.time_step_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("time_step_rank: must be positive or \"auto\", got ", c.time_step_rank));
  }
  return ValidateBackbone(c);
}

std::vector<LayerParam<MambaLayer>> MambaModel::MixerParams() const {
  const int64_t d = mamba().hidden_size;
  const int64_t e = mamba().intermediate_size();
  const int64_t n = mamba().state_size;
  const int64_t r = mamba().dt_rank();
  // Module registration order of MambaMixer.
  return {
      {"mixer.A_log", {e, n}, &Layer::A_log},
      {"mixer.D", {e}, &Layer::D},
      {"mixer.conv1d.weight", {e, 1, mamba().conv_kernel}, &Layer::conv1d_weight},
      {"mixer.conv1d.bias", {e}, &Layer::conv1d_bias, mamba().use_conv_bias},
      {"mixer.in_proj.weight", {2 * e, d}, &Layer::in_proj_weight},
      {"mixer.in_proj.bias", {2 * e}, &Layer::in_proj_bias, mamba().use_bias},
      {"mixer.x_proj.weight", {r + 2 * n, e}, &Layer::x_proj_weight},
      {"mixer.dt_proj.weight", {e, r}, &Layer::dt_proj_weight},
      {"mixer.dt_proj.bias", {e}, &Layer::dt_proj_bias},
      {"mixer.out_proj.weight", {d, e}, &Layer::out_proj_weight},
      {"mixer.out_proj.bias", {d}, &Layer::out_proj_bias, mamba().use_bias},
  };
}

// MambaMixer's dt_init_std = dt_rank ** -0.5 * time_step_scale.
double MambaModel::dt_init_std() const {
  return std::pow(static_cast<double>(mamba().dt_rank()), -0.5) * mamba().time_step_scale;
}

at::Tensor MambaModel::ParallelScan(at::Tensor a, at::Tensor b) {
  // Hillis-Steele: after the step with offset k, (a_t, b_t) composes the
  // 2k steps ending at t; composing (a1, b1) then (a2, b2) is
  // (a2 a1, a2 b1 + b2). Terms before t = 1 act as the identity (1, 0).
  const int64_t len = a.size(2);
  for (int64_t offset = 1; offset < len; offset *= 2) {
    const int64_t rest = len - offset;
    at::Tensor a_hi = a.narrow(2, offset, rest);
    at::Tensor b_new = at::cat({b.narrow(2, 0, offset),
                                at::addcmul(b.narrow(2, offset, rest), a_hi, b.narrow(2, 0, rest))},
                               2);
    if (2 * offset < len) {  // the last step needs no new a
      a = at::cat({a.narrow(2, 0, offset), a_hi * a.narrow(2, 0, rest)}, 2);
    }
    b = std::move(b_new);
  }
  return b;
}

// The same mixer on the fused CUDA kernels (ssm_ops.h): token-major
// throughout, the conv and the scan reading slices of the projections in
// place; y leaves the scan gated and in the model dtype, ready for out_proj.
at::Tensor MambaModel::MixerCuda(const Layer& layer, const at::Tensor& hidden,
                                 at::Tensor* log_lambda) const {
  const int64_t e = mamba().intermediate_size();
  const int64_t n = mamba().state_size;
  const int64_t r = mamba().dt_rank();
  const at::Tensor projected =
      at::linear(hidden, layer.in_proj_weight, layer.in_proj_bias);  // [B, L, 2E]
  const at::Tensor x = ssm::CausalConv1dSiluRows(projected.narrow(-1, 0, e), layer.conv1d_weight,
                                                 layer.conv1d_bias);  // [B, L, E]
  const at::Tensor params = at::linear(x, layer.x_proj_weight);       // [B, L, R + 2N]
  const at::Tensor dt = at::linear(params.narrow(-1, 0, r), layer.dt_proj_weight);
  const at::Tensor A = -at::exp(layer.A_log.to(at::kFloat));  // [E, N]
  at::Tensor delta;
  at::Tensor y = ssm::SelectiveScanCuda(x, dt, projected.narrow(-1, e, e), params.narrow(-1, r, n),
                                        params.narrow(-1, r + n, n), A, layer.dt_proj_bias, layer.D,
                                        log_lambda != nullptr ? &delta : nullptr);
  if (log_lambda != nullptr) {  // log λ = Δ A from the scan's own Δ: [B, 1, L - 1, E N]
    const int64_t batch = y.size(0), len = y.size(1);
    *log_lambda =
        (delta.narrow(1, 1, len - 1).unsqueeze(-1) * A).reshape({batch, 1, len - 1, e * n});
  }
  return at::linear(y, layer.out_proj_weight, layer.out_proj_bias);
}

// MambaMixer.forward (no cache) with mamba_selective_scan's torch path.
at::Tensor MambaModel::Mixer(const Layer& layer, const at::Tensor& hidden,
                             at::Tensor* log_lambda) const {
  if (!RecordsGraph() && ssm::UseSsmKernels(hidden) &&
      ssm::SelectiveScanKernelSupports(mamba().state_size)) {
    return MixerCuda(layer, hidden, log_lambda);
  }
  const int64_t e = mamba().intermediate_size();
  const int64_t n = mamba().state_size;
  const int64_t r = mamba().dt_rank();
  const at::ScalarType dtype = hidden.scalar_type();

  // 1. in_proj -> [B, 2E, L]; (x, gate).
  at::Tensor projected =
      at::linear(hidden, layer.in_proj_weight, layer.in_proj_bias).transpose(1, 2);
  std::vector<at::Tensor> halves = projected.chunk(2, 1);
  // 2. Causal depthwise conv + SiLU: x [B, E, L].
  at::Tensor x = ssm::CausalConv1dSilu(halves[0], layer.conv1d_weight, layer.conv1d_bias);
  const at::Tensor& gate = halves[1];
  // 3. x_proj -> (time_step [B, L, R], B [B, L, N], C [B, L, N]).
  std::vector<at::Tensor> ssm_parameters =
      at::linear(x.transpose(1, 2), layer.x_proj_weight).split({r, n, n}, -1);
  // time_step = dt_proj.weight @ time_step^T: [B, E, L] (bias added below).
  at::Tensor dt = at::matmul(layer.dt_proj_weight, ssm_parameters[0].transpose(1, 2));
  dt = at::softplus(dt + layer.dt_proj_bias.to(dt.scalar_type()).unsqueeze(-1));
  const at::Tensor A = -at::exp(AtLeastFloat32(layer.A_log));  // [E, N]
  // Discretise: [B, E, L, N], in float32.
  at::Tensor dt_A = A.unsqueeze(0).unsqueeze(2) * dt.unsqueeze(-1);
  if (log_lambda != nullptr) {  // log λ = Δ A: [B, E, L, N] -> [B, 1, L - 1, E N]
    const int64_t len = dt_A.size(2);
    *log_lambda =
        dt_A.narrow(2, 1, len - 1).permute({0, 2, 1, 3}).reshape({dt_A.size(0), 1, len - 1, e * n});
  }
  at::Tensor discrete_A = at::exp(dt_A);
  at::Tensor deltaB_u = dt.unsqueeze(-1) * AtLeastFloat32(ssm_parameters[1].unsqueeze(1)) *
                        AtLeastFloat32(x.unsqueeze(-1));
  at::Tensor states = ParallelScan(std::move(discrete_A), std::move(deltaB_u));
  // y_t = C_t h_t (the state in the run dtype, as HF's matmul), + D x.
  at::Tensor y = at::matmul(states.to(dtype).transpose(1, 2),  // [B, L, E, N]
                            ssm_parameters[2].unsqueeze(-1))   // [B, L, N, 1]
                     .squeeze(-1)
                     .transpose(1, 2);  // [B, E, L]
  y = y + x * AtLeastFloat32(layer.D).unsqueeze(0).unsqueeze(-1);
  y = y * at::silu(gate);
  // 4. out_proj.
  return at::linear(y.transpose(1, 2).to(dtype), layer.out_proj_weight, layer.out_proj_bias);
}

}  // namespace layerflow::worker
