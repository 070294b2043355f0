#include "worker/model/mamba.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {
namespace {

std::string LayerPrefix(int64_t i) { return absl::StrCat("backbone.layers.", i, "."); }

}  // namespace

absl::Status MambaModel::Validate(const MambaConfig& c) {
  for (auto [field, value] : {std::pair{"vocab_size", c.vocab_size},
                              std::pair{"hidden_size", c.hidden_size},
                              std::pair{"state_size", c.state_size},
                              std::pair{"num_hidden_layers", c.num_hidden_layers},
                              std::pair{"expand", c.expand},
                              std::pair{"conv_kernel", c.conv_kernel}}) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": must be positive, got ", value));
    }
  }
  if (c.time_step_rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time_step_rank: must be positive or \"auto\", got ", c.time_step_rank));
  }
  if (c.hidden_act != "silu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden_act: '", c.hidden_act, "' is not supported (only silu)"));
  }
  if (!(c.layer_norm_epsilon > 0)) {
    return absl::InvalidArgumentError("layer_norm_epsilon: must be positive");
  }
  return absl::OkStatus();
}

void MambaModel::AddParameters() {
  const int64_t d = mamba().hidden_size;
  const int64_t e = mamba().intermediate_size();
  const int64_t n = mamba().state_size;
  const int64_t r = mamba().dt_rank();
  auto add = [&](std::string name, at::IntArrayRef shape) {
    mutable_parameters().Add(std::move(name), at::empty(shape, at::kFloat));
  };
  // Module registration order of MambaModel / MambaBlock / MambaMixer.
  add("backbone.embeddings.weight", {mamba().vocab_size, d});
  for (int64_t i = 0; i < mamba().num_hidden_layers; ++i) {
    const std::string p = LayerPrefix(i);
    add(p + "norm.weight", {d});
    add(p + "mixer.A_log", {e, n});
    add(p + "mixer.D", {e});
    add(p + "mixer.conv1d.weight", {e, 1, mamba().conv_kernel});
    if (mamba().use_conv_bias) add(p + "mixer.conv1d.bias", {e});
    add(p + "mixer.in_proj.weight", {2 * e, d});
    if (mamba().use_bias) add(p + "mixer.in_proj.bias", {2 * e});
    add(p + "mixer.x_proj.weight", {r + 2 * n, e});
    add(p + "mixer.dt_proj.weight", {e, r});
    add(p + "mixer.dt_proj.bias", {e});
    add(p + "mixer.out_proj.weight", {d, e});
    if (mamba().use_bias) add(p + "mixer.out_proj.bias", {d});
  }
  add("backbone.norm_f.weight", {d});
  add("lm_head.weight", {mamba().vocab_size, d});
}

void MambaModel::Bind() {
  const ParameterMap& params = parameters();
  embeddings_ = params.Get("backbone.embeddings.weight");
  layers_.assign(mamba().num_hidden_layers, Layer{});
  for (int64_t i = 0; i < mamba().num_hidden_layers; ++i) {
    const std::string p = LayerPrefix(i);
    Layer& l = layers_[i];
    l.norm_weight = params.Get(p + "norm.weight");
    l.A_log = params.Get(p + "mixer.A_log");
    l.D = params.Get(p + "mixer.D");
    l.conv1d_weight = params.Get(p + "mixer.conv1d.weight");
    l.conv1d_bias = params.GetOptional(p + "mixer.conv1d.bias");
    l.in_proj_weight = params.Get(p + "mixer.in_proj.weight");
    l.in_proj_bias = params.GetOptional(p + "mixer.in_proj.bias");
    l.x_proj_weight = params.Get(p + "mixer.x_proj.weight");
    l.dt_proj_weight = params.Get(p + "mixer.dt_proj.weight");
    l.dt_proj_bias = params.Get(p + "mixer.dt_proj.bias");
    l.out_proj_weight = params.Get(p + "mixer.out_proj.weight");
    l.out_proj_bias = params.GetOptional(p + "mixer.out_proj.bias");
  }
  norm_f_weight_ = params.Get("backbone.norm_f.weight");
  lm_head_ = params.Get("lm_head.weight");
}

bool MambaModel::InitStructural(const std::string& name, at::Tensor& tensor,
                                const InitScheme& scheme,
                                at::Generator& generator) const {
  ssm::SsmInitSpec spec;
  spec.time_step_min = mamba().time_step_min;
  spec.time_step_max = mamba().time_step_max;
  spec.time_step_floor = mamba().time_step_floor;
  spec.dt_init_std = std::pow(static_cast<double>(mamba().dt_rank()), -0.5) *
                     mamba().time_step_scale;
  return ssm::InitSsmParameter(name, tensor, scheme, spec, generator);
}

std::string MambaModel::PointName(int64_t point) const {
  if (point == 0) return "embedding (backbone.embeddings)";
  if (point <= num_layers()) {
    return absl::StrCat("layer ", point, " (backbone.layers.", point - 1, ")");
  }
  return "final norm (backbone.norm_f)";
}

at::Tensor MambaModel::ParallelScan(at::Tensor a, at::Tensor b) {
  // Hillis-Steele: after the step with offset k, (a_t, b_t) composes the
  // 2k steps ending at t; composing (a1, b1) then (a2, b2) is
  // (a2 a1, a2 b1 + b2). Terms before t = 1 act as the identity (1, 0).
  const int64_t len = a.size(2);
  for (int64_t offset = 1; offset < len; offset *= 2) {
    const int64_t rest = len - offset;
    at::Tensor a_hi = a.narrow(2, offset, rest);
    at::Tensor b_new = at::cat(
        {b.narrow(2, 0, offset), at::addcmul(b.narrow(2, offset, rest), a_hi,
                                             b.narrow(2, 0, rest))},
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
  const at::Tensor x =
      ssm::CausalConv1dSiluRows(projected.narrow(-1, 0, e), layer.conv1d_weight,
                                layer.conv1d_bias);                 // [B, L, E]
  const at::Tensor params = at::linear(x, layer.x_proj_weight);    // [B, L, R + 2N]
  const at::Tensor dt = at::linear(params.narrow(-1, 0, r), layer.dt_proj_weight);
  const at::Tensor A = -at::exp(layer.A_log.to(at::kFloat));       // [E, N]
  at::Tensor delta;
  at::Tensor y = ssm::SelectiveScanCuda(x, dt, projected.narrow(-1, e, e),
                                        params.narrow(-1, r, n), params.narrow(-1, r + n, n), A,
                                        layer.dt_proj_bias, layer.D,
                                        log_lambda != nullptr ? &delta : nullptr);
  if (log_lambda != nullptr) {  // log λ = Δ A from the scan's own Δ: [B, 1, L - 1, E N]
    const int64_t batch = y.size(0), len = y.size(1);
    *log_lambda = (delta.narrow(1, 1, len - 1).unsqueeze(-1) * A)
                      .reshape({batch, 1, len - 1, e * n});
  }
  return at::linear(y, layer.out_proj_weight, layer.out_proj_bias);
}

// MambaMixer.forward (no cache) with mamba_selective_scan's torch path.
at::Tensor MambaModel::Mixer(const Layer& layer, const at::Tensor& hidden,
                             at::Tensor* log_lambda) const {
  if (ssm::UseSsmKernels(hidden) && ssm::SelectiveScanKernelSupports(mamba().state_size)) {
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
    *log_lambda = dt_A.narrow(2, 1, len - 1)
                      .permute({0, 2, 1, 3})
                      .reshape({dt_A.size(0), 1, len - 1, e * n});
  }
  at::Tensor discrete_A = at::exp(dt_A);
  at::Tensor deltaB_u = dt.unsqueeze(-1) * AtLeastFloat32(ssm_parameters[1].unsqueeze(1)) *
                        AtLeastFloat32(x.unsqueeze(-1));
  at::Tensor states = ParallelScan(std::move(discrete_A), std::move(deltaB_u));
  // y_t = C_t h_t (the state in the run dtype, as HF's matmul), + D x.
  at::Tensor y = at::matmul(states.to(dtype).transpose(1, 2),      // [B, L, E, N]
                            ssm_parameters[2].unsqueeze(-1))        // [B, L, N, 1]
                     .squeeze(-1)
                     .transpose(1, 2);                              // [B, E, L]
  y = y + x * AtLeastFloat32(layer.D).unsqueeze(0).unsqueeze(-1);
  y = y * at::silu(gate);
  // 4. out_proj.
  return at::linear(y.transpose(1, 2).to(dtype), layer.out_proj_weight,
                    layer.out_proj_bias);
}

void MambaModel::Forward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                         const SpectrumSink* spectra) const {
  c10::InferenceMode guard;
  WithLayerErrors([&](int64_t& point) {
    ssm::ResidualStackForward(
        input_ids, embeddings_, layers_, norm_f_weight_, mamba().layer_norm_epsilon,
        mamba().residual_in_fp32, on_layer, spectra,
        [this](const Layer& layer, const at::Tensor& h, at::Tensor* log_lambda) {
          return Mixer(layer, h, log_lambda);
        },
        point);
  });
}

at::Tensor MambaModel::Logits(const at::Tensor& final_hidden) const {
  c10::InferenceMode guard;
  return at::linear(final_hidden.to(lm_head_.scalar_type()), lm_head_);
}

}  // namespace layerflow::worker
