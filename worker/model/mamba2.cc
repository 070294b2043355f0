#include "worker/model/mamba2.h"

#include <limits>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {
namespace {

// segment_sum: out[..., i, j] = x[..., j+1] + ... + x[..., i] for j <= i,
// -inf above the diagonal; by masked cumulative sums (HF's stable form).
at::Tensor SegmentSum(const at::Tensor& x) {
  const int64_t n = x.size(-1);
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.push_back(n);
  at::Tensor t = x.unsqueeze(-1).expand(sizes);  // t[..., i, j] = x[..., i]
  const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(x.device());
  at::Tensor strict = at::ones({n, n}, bool_opts).tril(-1);
  t = t.masked_fill(strict.logical_not(), 0);
  at::Tensor segsum = at::cumsum(t, -2);
  at::Tensor lower = at::ones({n, n}, bool_opts).tril(0);
  return segsum.masked_fill(lower.logical_not(), -std::numeric_limits<float>::infinity());
}

// [B, L, ...] zero-padded to a multiple of chunk, then [B, c, chunk, ...].
at::Tensor IntoChunks(const at::Tensor& t, int64_t pad, int64_t chunk) {
  at::Tensor padded = t;
  if (pad > 0) {
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    shape[1] = pad;
    padded = at::cat({t, at::zeros(shape, t.options())}, 1);
  }
  std::vector<int64_t> shape(padded.sizes().begin(), padded.sizes().end());
  shape[1] = padded.size(1) / chunk;
  shape.insert(shape.begin() + 2, chunk);
  return padded.reshape(shape);
}

}  // namespace

absl::Status Mamba2Model::Validate(const Mamba2Config& c) {
  if (absl::Status s = CheckPositive({{"vocab_size", c.vocab_size},
                                      {"hidden_size", c.hidden_size},
                                      {"state_size", c.state_size},
                                      {"num_hidden_layers", c.num_hidden_layers},
                                      {"num_heads", c.num_heads},
                                      {"head_dim", c.head_dim},
                                      {"n_groups", c.n_groups},
                                      {"chunk_size", c.chunk_size},
                                      {"expand", c.expand},
                                      {"conv_kernel", c.conv_kernel}});
      !s.ok()) {
    return s;
  }
  if (c.num_heads * c.head_dim != c.intermediate_size()) {
    return absl::InvalidArgumentError(absl::StrCat("num_heads: ", c.num_heads, " x head_dim ",
                                                   c.head_dim, " must equal expand x ",
                                                   "hidden_size = ", c.intermediate_size()));
  }
  if (c.num_heads % c.n_groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_groups: ", c.n_groups, " does not divide num_heads ", c.num_heads));
  }
  return ValidateBackbone(c);
}

std::vector<LayerParam<Mamba2Layer>> Mamba2Model::MixerParams() const {
  const Mamba2Config& c = mamba2();
  const int64_t d = c.hidden_size;
  const int64_t e = c.intermediate_size();
  const int64_t proj = e + c.conv_dim() + c.num_heads;
  // Module registration order of Mamba2Mixer.
  return {
      {"mixer.conv1d.weight", {c.conv_dim(), 1, c.conv_kernel}, &Layer::conv1d_weight},
      {"mixer.conv1d.bias", {c.conv_dim()}, &Layer::conv1d_bias, c.use_conv_bias},
      {"mixer.in_proj.weight", {proj, d}, &Layer::in_proj_weight},
      {"mixer.in_proj.bias", {proj}, &Layer::in_proj_bias, c.use_bias},
      {"mixer.dt_bias", {c.num_heads}, &Layer::dt_bias},
      {"mixer.A_log", {c.num_heads}, &Layer::A_log},
      {"mixer.norm.weight", {e}, &Layer::gated_norm_weight},
      {"mixer.D", {c.num_heads}, &Layer::D},
      {"mixer.out_proj.weight", {d, e}, &Layer::out_proj_weight},
      {"mixer.out_proj.bias", {d}, &Layer::out_proj_bias, c.use_bias},
  };
}

// mamba2_chunk_scan's torch fallback, with its broadcast-and-sum products
// written as einsums (same sums, without [.., l, s, h, p] temporaries).
at::Tensor Mamba2Model::ChunkScan(const at::Tensor& x_in, const at::Tensor& dt,
                                  const at::Tensor& A_in, const at::Tensor& B_in,
                                  const at::Tensor& C_in, const at::Tensor& D, int64_t chunk) {
  const int64_t batch = x_in.size(0);
  const int64_t seq = x_in.size(1);
  const int64_t heads = x_in.size(2);
  const int64_t head_dim = x_in.size(3);
  const int64_t pad = (chunk - seq % chunk) % chunk;
  at::Tensor x = AtLeastFloat32(x_in);
  at::Tensor D_residual;
  if (D.defined()) {
    D_residual = AtLeastFloat32(D).unsqueeze(-1) *
                 (pad > 0 ? at::cat({x, x.new_zeros({batch, pad, heads, head_dim})}, 1) : x);
  }
  // Discretise x and A.
  x = x * AtLeastFloat32(dt.unsqueeze(-1));
  at::Tensor A = AtLeastFloat32(A_in) * AtLeastFloat32(dt);     // [B, L, H]
  x = IntoChunks(x, pad, chunk);                                // [B, c, l, H, P]
  A = IntoChunks(A, pad, chunk).permute({0, 3, 1, 2});          // [B, H, c, l]
  at::Tensor B = IntoChunks(AtLeastFloat32(B_in), pad, chunk);  // [B, c, l, H, N]
  at::Tensor C = IntoChunks(AtLeastFloat32(C_in), pad, chunk);
  at::Tensor A_cumsum = at::cumsum(A, -1);

  // 1. Intra-chunk (diagonal blocks): Y_diag = (C B^T * L) x.
  at::Tensor L = at::exp(SegmentSum(A));                    // [B, H, c, l, s]
  at::Tensor G = at::einsum("bclhn,bcshn->bclsh", {C, B});  // [B, c, l, s, H]
  at::Tensor M = G * L.permute({0, 2, 3, 4, 1});
  at::Tensor Y_diag = at::einsum("bclsh,bcshp->bclhp", {M, x});
  // 2. Each chunk's final state from its own inputs.
  at::Tensor decay_states = at::exp(A_cumsum.narrow(-1, chunk - 1, 1) - A_cumsum);
  at::Tensor B_decay = B * decay_states.permute({0, 2, 3, 1}).unsqueeze(-1);
  at::Tensor states = at::einsum("bclhn,bclhp->bchpn", {B_decay, x});  // [B, c, H, P, N]
  // 3. States passed between chunks (zero initial state).
  states = at::cat({at::zeros_like(states.narrow(1, 0, 1)), states}, 1);
  at::Tensor chunk_ends = at::constant_pad_nd(A_cumsum.select(-1, chunk - 1), {1, 0});
  at::Tensor decay_chunk = at::exp(SegmentSum(chunk_ends));  // [B, H, z, c]
  at::Tensor new_states = at::einsum("bhzc,bchpn->bzhpn", {decay_chunk, states});
  states = new_states.narrow(1, 0, new_states.size(1) - 1);
  // 4. State -> output within each chunk.
  at::Tensor state_decay_out = at::exp(A_cumsum);  // [B, H, c, l]
  at::Tensor Y_off = at::einsum("bclhn,bchpn->bclhp", {C, states}) *
                     state_decay_out.permute({0, 2, 3, 1}).unsqueeze(-1);
  at::Tensor y = (Y_diag + Y_off).reshape({batch, -1, heads, head_dim});
  if (D_residual.defined()) y = y + D_residual;
  return y.narrow(1, 0, seq);
}

// softplus(raw + dt_bias) in the run dtype, then time_step_limit's clamp
// (HF's default (0, inf) changes nothing): [B, L, H].
at::Tensor Mamba2Model::TimeStep(const Layer& layer, const at::Tensor& raw) const {
  at::Tensor dt = at::softplus(raw + layer.dt_bias.to(raw.scalar_type()));
  if (mamba2().time_step_limit_min > 0.0) dt = dt.clamp_min(mamba2().time_step_limit_min);
  if (mamba2().time_step_limit_max < 1e300) dt = dt.clamp_max(mamba2().time_step_limit_max);
  return dt;
}

// The same mixer on the fused CUDA kernels (ssm_ops.h): the conv reads the
// xBC slice of the projection in place, dt is formed as in the ATen path
// (it is [B, L, H], small), and the SSD scan with the gated RMSNorm returns
// the normed output in the model dtype, ready for out_proj.
at::Tensor Mamba2Model::MixerCuda(const Layer& layer, const at::Tensor& hidden,
                                  at::Tensor* log_lambda) const {
  const Mamba2Config& c = mamba2();
  const int64_t seq = hidden.size(1);
  const int64_t e = c.intermediate_size();
  const at::Tensor projected = at::linear(hidden, layer.in_proj_weight, layer.in_proj_bias);
  const at::Tensor xbc = ssm::CausalConv1dSiluRows(projected.narrow(-1, e, c.conv_dim()),
                                                   layer.conv1d_weight, layer.conv1d_bias);
  const at::Tensor A = -at::exp(layer.A_log.to(at::kFloat));  // [H]
  const at::Tensor dt = TimeStep(layer, projected.narrow(-1, e + c.conv_dim(), c.num_heads));
  const at::Tensor dtf = dt.to(at::kFloat).contiguous();  // [B, L, H]
  if (log_lambda != nullptr) {  // log λ = Δ_h A_h: [B, L, H] -> [B, H, L - 1, 1]
    *log_lambda = (dtf * A).narrow(1, 1, seq - 1).permute({0, 2, 1}).unsqueeze(-1);
  }
  const at::Tensor normed = ssm::SsdGatedNormCuda(
      xbc, dtf, A, layer.D, projected.narrow(-1, 0, e), layer.gated_norm_weight, c.num_heads,
      c.head_dim, c.n_groups, c.state_size, c.chunk_size, c.layer_norm_epsilon);
  return at::linear(normed, layer.out_proj_weight, layer.out_proj_bias);
}

// Mamba2Mixer.forward (no cache) with the torch fallbacks of
// causal_conv1d_fn and mamba2_chunk_scan.
at::Tensor Mamba2Model::Mixer(const Layer& layer, const at::Tensor& hidden,
                              at::Tensor* log_lambda) const {
  const Mamba2Config& c = mamba2();
  const int64_t batch = hidden.size(0);
  const int64_t seq = hidden.size(1);
  const int64_t e = c.intermediate_size();
  const int64_t gn = c.n_groups * c.state_size;
  const at::ScalarType dtype = hidden.scalar_type();

  if (!RecordsGraph() && ssm::SsdKernelSupports(hidden, c.head_dim, c.state_size, c.chunk_size)) {
    return MixerCuda(layer, hidden, log_lambda);
  }
  at::Tensor projected = at::linear(hidden, layer.in_proj_weight, layer.in_proj_bias);
  std::vector<at::Tensor> parts = projected.split({e, c.conv_dim(), c.num_heads}, -1);
  const at::Tensor& gate = parts[0];
  at::Tensor xBC =
      ssm::CausalConv1dSilu(parts[1].transpose(1, 2), layer.conv1d_weight, layer.conv1d_bias)
          .transpose(1, 2);
  std::vector<at::Tensor> xbc = xBC.split({e, gn, gn}, -1);
  const at::Tensor A = -at::exp(AtLeastFloat32(layer.A_log));  // [H]

  const at::Tensor dt = TimeStep(layer, parts[2]);
  if (log_lambda != nullptr) {  // log λ = Δ_h A_h: [B, L, H] -> [B, H, L - 1, 1]
    *log_lambda = (AtLeastFloat32(dt) * A).narrow(1, 1, seq - 1).permute({0, 2, 1}).unsqueeze(-1);
  }
  const int64_t repeat = c.num_heads / c.n_groups;
  auto per_head = [&](const at::Tensor& t) {  // [B, L, G*N] -> [B, L, H, N]
    return t.view({batch, seq, c.n_groups, c.state_size})
        .to(A.scalar_type())
        .repeat_interleave(repeat, 2);
  };
  at::Tensor y = ChunkScan(xbc[0].view({batch, seq, c.num_heads, c.head_dim}), dt, A,
                           per_head(xbc[1]), per_head(xbc[2]), layer.D, c.chunk_size);
  y = y.reshape({batch, seq, -1});
  // MambaRMSNormGated(y, gate): float32, y * SiLU(gate), RMS over all of E.
  at::Tensor g = AtLeastFloat32(y) * at::silu(AtLeastFloat32(gate));
  g = g * at::rsqrt(g.pow(2).mean(-1, /*keepdim=*/true) + c.layer_norm_epsilon);
  at::Tensor normed = layer.gated_norm_weight * g.to(y.scalar_type());
  return at::linear(normed.to(dtype), layer.out_proj_weight, layer.out_proj_bias);
}

}  // namespace layerflow::worker
