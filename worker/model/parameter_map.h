// An ordered name -> tensor map with Hugging Face parameter names, so that a
// checkpoint (safetensors / pytorch_model.bin) maps onto it by name.
#ifndef LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_
#define LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/core/Tensor.h>

namespace layerflow::worker {

class ParameterMap {
 public:
  using Item = std::pair<std::string, at::Tensor>;

  // Throws c10::Error on a duplicate name.
  at::Tensor& Add(std::string name, at::Tensor tensor);
  // nullptr when absent.
  at::Tensor* Find(std::string_view name);
  const at::Tensor* Find(std::string_view name) const;
  // Throws c10::Error naming the missing parameter.
  const at::Tensor& Get(std::string_view name) const;
  // An optional parameter (a bias a config leaves out): undefined when
  // absent, which at::linear / at::conv1d take as none.
  at::Tensor GetOptional(std::string_view name) const;

  // Insertion order: the order of the reference's named_parameters(), which
  // is also the fixed order in which random init draws from its generator.
  std::vector<Item>& items() { return items_; }
  const std::vector<Item>& items() const { return items_; }
  size_t size() const { return items_.size(); }
  int64_t numel() const;

 private:
  std::vector<Item> items_;
};

// One parameter of an architecture's layer: its name after the layer's
// prefix, its shape, and the field of the architecture's Layer struct that
// it binds to; absent ones (a bias the config leaves out) are neither
// registered nor bound (the field stays undefined: no bias). One list per
// architecture, in the reference's registration order, serves both
// AddParameters and Bind, so every name is written once.
template <typename Layer>
struct LayerParam {
  std::string suffix;
  std::vector<int64_t> shape;
  at::Tensor Layer::*field;
  bool present = true;
};

// Registers the present parameters of `params` under prefix + suffix, as
// uninitialised float32 tensors (random init or a loader fills them).
template <typename Layer>
void AddLayerParams(ParameterMap& map, const std::string& prefix,
                    const std::vector<LayerParam<Layer>>& params) {
  for (const LayerParam<Layer>& p : params) {
    if (p.present) map.Add(prefix + p.suffix, at::empty(p.shape, at::kFloat));
  }
}

// Points each present parameter's field of `layer` at its tensor.
template <typename Layer>
void BindLayerParams(const ParameterMap& map, const std::string& prefix,
                     const std::vector<LayerParam<Layer>>& params, Layer& layer) {
  for (const LayerParam<Layer>& p : params) {
    if (p.present) layer.*p.field = map.Get(prefix + p.suffix);
  }
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_
