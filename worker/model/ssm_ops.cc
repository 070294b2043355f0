#include "worker/model/ssm_ops.h"

#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/match.h"

namespace layerflow::worker::ssm {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::ScalarType input_dtype = x.scalar_type();
  at::Tensor h = x.to(at::kFloat);
  at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(input_dtype);
}

at::Tensor CausalConv1dSilu(const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
  const int64_t seq = x.size(-1);
  const int64_t kernel = weight.size(-1);
  at::Tensor out = at::conv1d(x.to(weight.scalar_type()), weight, bias,
                              /*stride=*/1, /*padding=*/kernel - 1,
                              /*dilation=*/1, /*groups=*/x.size(1));
  return at::silu(out.narrow(-1, 0, seq)).to(x.scalar_type());
}

bool InitSsmParameter(const std::string& name, at::Tensor& tensor,
                      const InitScheme& scheme, const SsmInitSpec& spec,
                      at::Generator& generator) {
  // S4D-real: A = -(1..N) per channel (Mamba, [E, N]) or -(1..H) (Mamba-2, [H]).
  if (absl::EndsWith(name, ".A_log")) {
    const int64_t n = tensor.size(-1);
    tensor.copy_(at::log(at::arange(1, n + 1, at::kFloat)).expand(tensor.sizes()));
    return true;
  }
  if (absl::EndsWith(name, ".D")) {
    tensor.fill_(1.0);
    return true;
  }
  // dt bias: inverse softplus of dt ~ log-uniform[min, max], floored.
  if (absl::EndsWith(name, ".dt_proj.bias") || absl::EndsWith(name, ".dt_bias")) {
    at::Tensor u = at::empty(tensor.sizes(), at::kFloat).uniform_(0.0, 1.0, generator);
    at::Tensor dt = at::exp(u * (std::log(spec.time_step_max) - std::log(spec.time_step_min)) +
                            std::log(spec.time_step_min))
                        .clamp_min(spec.time_step_floor);
    tensor.copy_(dt + at::log(-at::expm1(-dt)));
    return true;
  }
  if (scheme.kind != InitScheme::Kind::kReference) return false;
  if (absl::EndsWith(name, ".dt_proj.weight") && spec.dt_init_std > 0) {
    tensor.uniform_(-spec.dt_init_std, spec.dt_init_std, generator);
    return true;
  }
  if (absl::EndsWith(name, ".conv1d.weight") || absl::EndsWith(name, ".out_proj.weight")) {
    // kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + 5) * fan_in)).
    const int64_t receptive = tensor.dim() == 3 ? tensor.size(2) : 1;
    const double bound = 1.0 / std::sqrt(static_cast<double>(tensor.size(1) * receptive));
    tensor.uniform_(-bound, bound, generator);
    return true;
  }
  return false;
}

}  // namespace layerflow::worker::ssm
