// Copies a model's weights out of its parameter map into the naive reference.
#ifndef LAYERFLOW_TESTS_WORKER_TESTING_TORCH_EXPORT_H_
#define LAYERFLOW_TESTS_WORKER_TESTING_TORCH_EXPORT_H_

#include <vector>

#include <ATen/core/Tensor.h>

#include "tests/worker/testing/naive_reference.h"
#include "worker/model/language_model.h"

namespace layerflow::worker::testing {

NaiveGptNeoX ExportToNaive(const LanguageModel& model);
// Any tensor -> float64 values, row-major.
std::vector<double> ToDoubles(const at::Tensor& tensor);

}  // namespace layerflow::worker::testing

#endif  // LAYERFLOW_TESTS_WORKER_TESTING_TORCH_EXPORT_H_
