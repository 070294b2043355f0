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

// One parameter of a model: its HF name, its shape, and the model's field
// that holds it. An architecture lists all of them once, in the reference's
// named_parameters() order (LanguageModel::ParameterSlots); the one list
// serves registration (the shapes) and binding (the fields).
struct ParameterSlot {
  // A loader's concern: with tie_word_embeddings a checkpoint may leave the
  // head out, which is then a copy of the input embedding.
  enum class Role { kPlain, kInputEmbedding, kOutputHead };
  std::string name;
  std::vector<int64_t> shape;
  at::Tensor* field;
  Role role = Role::kPlain;
};

// One parameter of an architecture's layer: its name after the layer's
// prefix, its shape, and the field of the architecture's Layer struct that
// it binds to; absent ones (a bias the config leaves out) get no slot (the
// field stays undefined: no bias).
template <typename Layer>
struct LayerParam {
  std::string suffix;
  std::vector<int64_t> shape;
  at::Tensor Layer::*field;
  bool present = true;
};

// Appends the slots of every layer of `layers`, layer i's named
// "<stack>.<i>.<suffix>", in layer order.
template <typename Layer>
void AppendLayerSlots(std::vector<ParameterSlot>& slots, const std::string& stack,
                      const std::vector<LayerParam<Layer>>& params, std::vector<Layer>& layers) {
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string prefix = stack + "." + std::to_string(i) + ".";
    for (const LayerParam<Layer>& p : params) {
      if (p.present) slots.push_back({prefix + p.suffix, p.shape, &(layers[i].*p.field)});
    }
  }
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_
