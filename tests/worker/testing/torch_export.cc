#include "tests/worker/testing/torch_export.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

namespace layerflow::worker::testing {

std::vector<double> ToDoubles(const at::Tensor& tensor) {
  c10::InferenceMode guard;
  at::Tensor t = tensor.to(at::kCPU).to(at::kDouble).contiguous();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

NaiveGptNeoX ExportToNaive(const LanguageModel& model) {
  NaiveGptNeoX naive;
  naive.config = model.config().gpt_neox;
  for (const auto& [name, tensor] : model.parameters().items()) {
    naive.weights[name] = ToDoubles(tensor);
  }
  return naive;
}

}  // namespace layerflow::worker::testing
