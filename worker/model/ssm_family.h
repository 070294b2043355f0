// What Mamba and Mamba-2 share: transformers' MambaModel and Mamba2Model
// differ only in their mixer. The backbone's names (backbone.embeddings,
// backbone.layers.N.norm, backbone.norm_f, lm_head), the residual stack
// (MambaBlock / Mamba2Block: residual + mixer(RMSNorm(x)), the residual in
// float32 when residual_in_fp32), the final norm, the head, and the
// representation points' names live here once; an architecture supplies
// its mixer and the list of its mixer's parameters.
#ifndef LAYERFLOW_WORKER_MODEL_SSM_FAMILY_H_
#define LAYERFLOW_WORKER_MODEL_SSM_FAMILY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "worker/model/language_model.h"
#include "worker/model/parameter_map.h"
#include "worker/model/ssm_ops.h"

namespace layerflow::worker {

// Layer: the architecture's per-layer tensors, with the block's
// `norm_weight` (backbone.layers.N.norm.weight) among them.
template <typename Layer>
class SsmFamilyModel : public LanguageModel {
 public:
  void Forward(const at::Tensor& input_ids, const LayerCallback& on_layer,
               const SpectrumSink* spectra = nullptr) const final;
  at::Tensor Logits(const at::Tensor& final_hidden) const final;
  std::string PointName(int64_t point) const final;

 protected:
  // The backbone's sizes and the block's norm, from the architecture's config.
  struct Backbone {
    int64_t vocab_size, hidden_size, num_layers;
    double eps;
    bool residual_in_fp32;
  };

  explicit SsmFamilyModel(ModelConfig config) : LanguageModel(std::move(config)) {}

  virtual Backbone backbone() const = 0;
  // The mixer's parameters, "mixer.*" suffixes in the reference's order.
  virtual std::vector<LayerParam<Layer>> MixerParams() const = 0;
  // The mixer on the normed hidden state; with log_lambda, also the
  // layer's spectrum (SpectrumSink).
  virtual at::Tensor Mixer(const Layer& layer, const at::Tensor& hidden,
                           at::Tensor* log_lambda) const = 0;

  const std::vector<Layer>& layers() const { return layers_; }

  // Whether this forward records the graph: a trainable model outside
  // InferenceMode / NoGradGuard. The fused CUDA kernels have no backward, so
  // such a forward runs the ATen path whatever SetSsmKernelsEnabled says (the
  // trainer also switches them off for its run).
  bool RecordsGraph() const { return trainable() && at::GradMode::is_enabled(); }

 private:
  static std::string LayerPrefix(int64_t i) { return absl::StrCat("backbone.layers.", i, "."); }
  std::vector<LayerParam<Layer>> AllLayerParams() const {
    std::vector<LayerParam<Layer>> params = {
        {"norm.weight", {backbone().hidden_size}, &Layer::norm_weight}};
    for (LayerParam<Layer>& p : MixerParams()) params.push_back(std::move(p));
    return params;
  }
  void AddParameters() final;
  void Bind() final;

  at::Tensor embeddings_;
  std::vector<Layer> layers_;
  at::Tensor norm_f_weight_;
  at::Tensor lm_head_;
};

template <typename Layer>
void SsmFamilyModel<Layer>::AddParameters() {
  // Module registration order of MambaModel / Mamba2Model and their blocks.
  const Backbone b = backbone();
  ParameterMap& params = mutable_parameters();
  params.Add("backbone.embeddings.weight", at::empty({b.vocab_size, b.hidden_size}, at::kFloat));
  const std::vector<LayerParam<Layer>> layer = AllLayerParams();
  for (int64_t i = 0; i < b.num_layers; ++i) AddLayerParams(params, LayerPrefix(i), layer);
  params.Add("backbone.norm_f.weight", at::empty({b.hidden_size}, at::kFloat));
  params.Add("lm_head.weight", at::empty({b.vocab_size, b.hidden_size}, at::kFloat));
}

template <typename Layer>
void SsmFamilyModel<Layer>::Bind() {
  const ParameterMap& params = parameters();
  embeddings_ = params.Get("backbone.embeddings.weight");
  const std::vector<LayerParam<Layer>> layer = AllLayerParams();
  layers_.assign(backbone().num_layers, Layer{});
  for (int64_t i = 0; i < backbone().num_layers; ++i) {
    BindLayerParams(params, LayerPrefix(i), layer, layers_[i]);
  }
  norm_f_weight_ = params.Get("backbone.norm_f.weight");
  lm_head_ = params.Get("lm_head.weight");
}

template <typename Layer>
std::string SsmFamilyModel<Layer>::PointName(int64_t point) const {
  if (point == 0) return "embedding (backbone.embeddings)";
  if (point <= num_layers()) {
    return absl::StrCat("layer ", point, " (backbone.layers.", point - 1, ")");
  }
  return "final norm (backbone.norm_f)";
}

// MambaModel.forward / Mamba2Model.forward: the embedding (point 0), one
// block per layer (points 1..L, each block's log λ to `spectra` first), the
// final RMSNorm (point L + 1).
template <typename Layer>
void SsmFamilyModel<Layer>::Forward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                                    const SpectrumSink* spectra) const {
  // A trainable model records the graph (LanguageModel::MakeTrainable)
  // unless its caller says otherwise; the fused CUDA kernels below have no
  // backward, so a trainer switches them off (worker/train/trainer.h).
  std::optional<c10::InferenceMode> guard;
  if (!trainable()) guard.emplace();
  const Backbone b = backbone();
  WithLayerErrors([&](int64_t& point) {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.sizes());
    at::Tensor hidden = at::embedding(embeddings_, input_ids.to(embeddings_.device(), at::kLong));
    // With residual_in_fp32 the residual stream is float32 from the first
    // block's residual on (MambaBlock: residual.to(float32)), so point 0 is
    // handed over as that residual (an exact upcast): every point of a
    // forward then has one dtype. (Point 0 in the model dtype and points
    // 1..L + 1 in float32 sent the analysis down two paths within one batch:
    // issue 11's "stack expects a non-empty TensorList".)
    on_layer(point, b.residual_in_fp32 ? AtLeastFloat32(hidden) : hidden);
    auto norm_of = [&](const at::Tensor& h, const Layer& layer) {
      return ssm::RmsNorm(h.to(layer.norm_weight.scalar_type()), layer.norm_weight, b.eps);
    };
    at::Tensor normed = layers_.empty() ? at::Tensor() : norm_of(hidden, layers_.front());
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& layer = layers_[i];
      ++point;
      at::Tensor log_lambda;
      const at::Tensor residual = b.residual_in_fp32 ? AtLeastFloat32(hidden) : hidden;
      const at::Tensor mixed = Mixer(layer, normed, spectra != nullptr ? &log_lambda : nullptr);
      const bool next = i + 1 < layers_.size();
      // residual + mixer and the next block's norm in one pass on CUDA
      // (ssm::AddRmsNormCuda): the same values as the two lines below it.
      if (next && b.residual_in_fp32 && !RecordsGraph() &&
          ssm::AddRmsNormKernelSupports(residual, mixed)) {
        std::tie(hidden, normed) =
            ssm::AddRmsNormCuda(residual, mixed, layers_[i + 1].norm_weight, b.eps);
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
    on_layer(point, ssm::RmsNorm(hidden, norm_f_weight_, b.eps));
  });
}

template <typename Layer>
at::Tensor SsmFamilyModel<Layer>::Logits(const at::Tensor& final_hidden) const {
  std::optional<c10::InferenceMode> guard;  // as in Forward
  if (!trainable()) guard.emplace();
  return at::linear(final_hidden.to(lm_head_.scalar_type()), lm_head_);
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_SSM_FAMILY_H_
