// An ordered name -> tensor map with Hugging Face parameter names, so that a
// checkpoint (safetensors / pytorch_model.bin) maps onto it by name.
#ifndef LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_
#define LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_PARAMETER_MAP_H_
