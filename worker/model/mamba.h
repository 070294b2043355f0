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
#include "worker/model/parameter_map.h"
#include "worker/model/ssm_family.h"

namespace layerflow::worker {

// One layer of MambaModel: the block's norm and MambaMixer's parameters.
struct MambaLayer {
  at::Tensor norm_weight;
  at::Tensor A_log, D;
  at::Tensor conv1d_weight, conv1d_bias;  // [E, 1, K], [E]
  at::Tensor in_proj_weight, in_proj_bias;
  at::Tensor x_proj_weight;
  at::Tensor dt_proj_weight, dt_proj_bias;
  at::Tensor out_proj_weight, out_proj_bias;
};

class MambaModel final : public SsmFamilyModel<MambaLayer, MambaConfig> {
 public:
  // Use CreateRandomModel / CreateEmptyModel (language_model.h).
  explicit MambaModel(ModelConfig config) : SsmFamilyModel(std::move(config)) {}

  const MambaConfig& mamba() const { return config().mamba; }

  // No heads: one group pooling every channel and state.
  int64_t spectrum_groups() const override { return 1; }

  // The linear recurrence h_t = a_t * h_{t-1} + b_t (h_0 = 0) along dim 2
  // of [B, E, L, N] tensors, as an inclusive parallel prefix scan; returns
  // every h_t. Exposed so tests can hold it against the sequential loop.
  static at::Tensor ParallelScan(at::Tensor a, at::Tensor b);

  static absl::Status Validate(const MambaConfig& config);

 private:
  using Layer = MambaLayer;

  const MambaConfig& ssm_config() const override { return mamba(); }
  std::vector<LayerParam<Layer>> MixerParams() const override;
  double dt_init_std() const override;
  at::Tensor Mixer(const Layer& layer, const at::Tensor& hidden,
                   at::Tensor* log_lambda) const override;
  // Mixer on the fused CUDA kernels (ssm::UseSsmKernels).
  at::Tensor MixerCuda(const Layer& layer, const at::Tensor& hidden, at::Tensor* log_lambda) const;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_MAMBA_H_
