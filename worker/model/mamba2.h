// Mamba-2, one to one with Hugging Face transformers'
// models/mamba2/modeling_mamba2.py (Mamba2ForCausalLM, 5.x, the pure-torch
// path): pre-RMSNorm residual blocks whose mixer is in_proj -> (gate, xBC,
// dt); xBC -> causal depthwise conv1d -> SiLU -> (x, B, C) with n_groups
// groups of B and C shared by num_heads / n_groups heads each; the SSD scan
// with a scalar decay per head, h_t = exp(dt_t A_h) h_{t-1} + dt_t B_t x_t^T,
// y_t = C_t h_t + D_h x_t, computed chunk by chunk (chunk_size) exactly as
// mamba2_chunk_scan's torch fallback: an intra-chunk quadratic form plus
// states passed between chunks; then the gated RMSNorm
// norm(y * SiLU(gate)) (over the whole intermediate width, as HF 5.x) and
// out_proj.
#ifndef LAYERFLOW_WORKER_MODEL_MAMBA2_H_
#define LAYERFLOW_WORKER_MODEL_MAMBA2_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "worker/model/language_model.h"
#include "worker/model/parameter_map.h"
#include "worker/model/ssm_family.h"

namespace layerflow::worker {

// One layer of Mamba2Model: the block's norm and Mamba2Mixer's parameters.
struct Mamba2Layer {
  at::Tensor norm_weight;
  at::Tensor dt_bias, A_log, D;
  at::Tensor conv1d_weight, conv1d_bias;  // [conv_dim, 1, K]
  at::Tensor in_proj_weight, in_proj_bias;
  at::Tensor gated_norm_weight;
  at::Tensor out_proj_weight, out_proj_bias;
};

class Mamba2Model final : public SsmFamilyModel<Mamba2Layer, Mamba2Config> {
 public:
  // Use CreateRandomModel / CreateEmptyModel (language_model.h).
  explicit Mamba2Model(ModelConfig config) : SsmFamilyModel(std::move(config)) {}

  const Mamba2Config& mamba2() const { return config().mamba2; }

  int64_t spectrum_groups() const override { return mamba2().num_heads; }

  // The SSD scan in float32: x [B, L, H, P], dt [B, L, H] (after softplus
  // and clamp), A [H], B and C [B, L, H, N] (groups already repeated), D [H].
  // Returns y [B, L, H, P]. Exposed so tests can hold it against the
  // sequential recurrence.
  static at::Tensor ChunkScan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                              int64_t chunk_size);

  static absl::Status Validate(const Mamba2Config& config);

 private:
  using Layer = Mamba2Layer;

  const Mamba2Config& ssm_config() const override { return mamba2(); }
  std::vector<LayerParam<Layer>> MixerParams() const override;
  at::Tensor Mixer(const Layer& layer, const at::Tensor& hidden,
                   at::Tensor* log_lambda) const override;
  // Δ of every head from in_proj's dt slice (both mixers).
  at::Tensor TimeStep(const Layer& layer, const at::Tensor& raw) const;
  // Mixer on the fused CUDA kernels (ssm::SsdKernelSupports).
  at::Tensor MixerCuda(const Layer& layer, const at::Tensor& hidden, at::Tensor* log_lambda) const;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_MAMBA2_H_
