// What Mamba and Mamba-2 share: transformers' MambaModel and Mamba2Model
// differ only in their mixer. The backbone's names (backbone.embeddings,
// backbone.layers.N.norm, backbone.norm_f, lm_head), the residual stack
// (MambaBlock / Mamba2Block: residual + mixer(RMSNorm(x)), the residual in
// float32 when residual_in_fp32), the final norm, the head, and the
// representation points' names, the config checks and init both configs
// share (MambaConfig and Mamba2Config spell those fields alike) live here
// once; an architecture supplies its mixer and the list of its mixer's
// parameters.
#ifndef LAYERFLOW_WORKER_MODEL_SSM_FAMILY_H_
#define LAYERFLOW_WORKER_MODEL_SSM_FAMILY_H_

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/language_model.h"
#include "worker/model/parameter_map.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {

// Layer: the architecture's per-layer tensors, with the block's
// `norm_weight` (backbone.layers.N.norm.weight) among them. Config:
// MambaConfig or Mamba2Config.
template <typename Layer, typename Config>
class SsmFamilyModel : public LanguageModel {
 protected:
  explicit SsmFamilyModel(ModelConfig config) : LanguageModel(std::move(config)) {}

  // The architecture's config (ModelConfig::mamba / ::mamba2).
  virtual const Config& ssm_config() const = 0;
  // The mixer's parameters, "mixer.*" suffixes in the reference's order.
  virtual std::vector<LayerParam<Layer>> MixerParams() const = 0;
  // The mixer on the normed hidden state; with log_lambda, also the
  // layer's spectrum (SpectrumSink).
  virtual at::Tensor Mixer(const Layer& layer, const at::Tensor& hidden,
                           at::Tensor* log_lambda) const = 0;
  // Mamba's dt_proj.weight init bound (0: none, Mamba-2 has no dt_proj).
  virtual double dt_init_std() const { return 0; }

  // The checks both configs share, after the architecture's own.
  static absl::Status ValidateBackbone(const Config& c) {
    if (c.hidden_act != "silu") {
      return absl::InvalidArgumentError(
          absl::StrCat("hidden_act: '", c.hidden_act, "' is not supported (only silu)"));
    }
    if (!(c.layer_norm_epsilon > 0)) {
      return absl::InvalidArgumentError("layer_norm_epsilon: must be positive");
    }
    return absl::OkStatus();
  }

  const std::vector<Layer>& layers() const { return layers_; }

  // Whether this forward records the graph: a trainable model outside
  // InferenceMode / NoGradGuard. The fused CUDA kernels have no backward, so
  // such a forward runs the ATen path whatever SetSsmKernelsEnabled says (the
  // trainer also switches them off for its run).
  bool RecordsGraph() const { return trainable() && at::GradMode::is_enabled(); }

 private:
  static constexpr char kLayers[] = "backbone.layers";

  std::vector<ParameterSlot> ParameterSlots() final;
  void RunForward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                  const SpectrumSink* spectra, int64_t& point) const final;
  PointModules point_modules() const final {
    return {"backbone.embeddings", kLayers, "backbone.norm_f"};
  }
  double ReferenceStd() const final { return ssm_config().initializer_range; }
  bool InitStructural(const std::string& name, at::Tensor& tensor, const InitScheme& scheme,
                      const ParameterDraws& draws) const final {
    ssm::SsmInitSpec spec;
    spec.time_step_min = ssm_config().time_step_min;
    spec.time_step_max = ssm_config().time_step_max;
    spec.time_step_floor = ssm_config().time_step_floor;
    spec.dt_init_std = dt_init_std();
    return ssm::InitSsmParameter(name, tensor, scheme, spec, draws);
  }

  at::Tensor embeddings_;
  std::vector<Layer> layers_;
  at::Tensor norm_f_weight_;
  at::Tensor lm_head_;
};

template <typename Layer, typename Config>
std::vector<ParameterSlot> SsmFamilyModel<Layer, Config>::ParameterSlots() {
  using Role = ParameterSlot::Role;
  const Config& c = ssm_config();
  const int64_t d = c.hidden_size;
  layers_.assign(c.num_hidden_layers, Layer{});
  // Module registration order of MambaForCausalLM / Mamba2ForCausalLM and
  // their blocks (norm, then mixer).
  std::vector<LayerParam<Layer>> layer = {{"norm.weight", {d}, &Layer::norm_weight}};
  for (LayerParam<Layer>& p : MixerParams()) layer.push_back(std::move(p));
  std::vector<ParameterSlot> slots = {
      {"backbone.embeddings.weight", {c.vocab_size, d}, &embeddings_, Role::kInputEmbedding}};
  AppendLayerSlots(slots, kLayers, layer, layers_);
  slots.push_back({"backbone.norm_f.weight", {d}, &norm_f_weight_});
  slots.push_back({"lm_head.weight", {c.vocab_size, d}, &lm_head_, Role::kOutputHead});
  return slots;
}

// MambaModel.forward / Mamba2Model.forward: the embedding (point 0), one
// block per layer (points 1..L, each block's log λ to `spectra` first), the
// final RMSNorm (point L + 1).
template <typename Layer, typename Config>
void SsmFamilyModel<Layer, Config>::RunForward(const at::Tensor& input_ids,
                                               const LayerCallback& on_layer,
                                               const SpectrumSink* spectra, int64_t& point) const {
  // A trainable model's forward records the graph (LanguageModel::Forward);
  // the fused CUDA kernels below have no backward, so a trainer switches
  // them off (worker/train/trainer.h).
  const Config& c = ssm_config();
  const double eps = c.layer_norm_epsilon;
  const bool residual_in_fp32 = c.residual_in_fp32;
  at::Tensor hidden = at::embedding(embeddings_, input_ids.to(embeddings_.device(), at::kLong));
  // With residual_in_fp32 the residual stream is float32 from the first
  // block's residual on (MambaBlock: residual.to(float32)), so point 0 is
  // handed over as that residual (an exact upcast): every point of a
  // forward then has one dtype. (Point 0 in the model dtype and points
  // 1..L + 1 in float32 sent the analysis down two paths within one batch:
  // issue 11's "stack expects a non-empty TensorList".)
  on_layer(point, residual_in_fp32 ? AtLeastFloat32(hidden) : hidden);
  auto norm_of = [&](const at::Tensor& h, const Layer& layer) {
    return ssm::RmsNorm(h.to(layer.norm_weight.scalar_type()), layer.norm_weight, eps);
  };
  at::Tensor normed = layers_.empty() ? at::Tensor() : norm_of(hidden, layers_.front());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    ++point;
    at::Tensor log_lambda;
    const at::Tensor residual = residual_in_fp32 ? AtLeastFloat32(hidden) : hidden;
    const at::Tensor mixed = Mixer(layer, normed, spectra != nullptr ? &log_lambda : nullptr);
    const bool next = i + 1 < layers_.size();
    // residual + mixer and the next block's norm in one pass on CUDA
    // (ssm::AddRmsNormCuda): the same values as the two lines below it.
    if (next && residual_in_fp32 && !RecordsGraph() &&
        ssm::AddRmsNormKernelSupports(residual, mixed)) {
      std::tie(hidden, normed) =
          ssm::AddRmsNormCuda(residual, mixed, layers_[i + 1].norm_weight, eps);
    } else {
      hidden = residual + mixed;
      if (next) normed = norm_of(hidden, layers_[i + 1]);
    }
    if (spectra != nullptr) {  // an SSM's eigenvalues have no dsf variant
      if (spectra->on_layer) spectra->on_layer(point, log_lambda);
      if (spectra->on_layer_dsf) spectra->on_layer_dsf(point, log_lambda);
    }
    on_layer(point, hidden);
  }
  ++point;
  on_layer(point, ssm::RmsNorm(hidden, norm_f_weight_, eps));
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_SSM_FAMILY_H_
