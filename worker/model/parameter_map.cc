#include "worker/model/parameter_map.h"

#include <c10/util/Exception.h>

namespace layerflow::worker {

at::Tensor& ParameterMap::Add(std::string name, at::Tensor tensor) {
  TORCH_CHECK(Find(name) == nullptr, "duplicate parameter ", name);
  items_.emplace_back(std::move(name), std::move(tensor));
  return items_.back().second;
}

at::Tensor* ParameterMap::Find(std::string_view name) {
  for (Item& item : items_) {
    if (item.first == name) return &item.second;
  }
  return nullptr;
}

const at::Tensor* ParameterMap::Find(std::string_view name) const {
  return const_cast<ParameterMap*>(this)->Find(name);
}

const at::Tensor& ParameterMap::Get(std::string_view name) const {
  const at::Tensor* tensor = Find(name);
  TORCH_CHECK(tensor != nullptr, "missing parameter ", name);
  return *tensor;
}

at::Tensor ParameterMap::GetOptional(std::string_view name) const {
  const at::Tensor* t = Find(name);
  return t == nullptr ? at::Tensor() : *t;
}

int64_t ParameterMap::numel() const {
  int64_t total = 0;
  for (const Item& item : items_) total += item.second.numel();
  return total;
}

}  // namespace layerflow::worker
