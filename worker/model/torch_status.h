// The one edge where LibTorch's exceptions become statuses (DESIGN.md,
// "Conventions": a failed job, never a crashed worker). Every LibTorch
// entry point of the worker (model construction and loading, a job's
// chunks, probes, inspect) runs its body through GuardTorch, so the same
// failure gets the same code everywhere:
//   out of memory (c10::OutOfMemoryError, std::bad_alloc)  RESOURCE_EXHAUSTED
//   anything else LibTorch or the standard library throws  INTERNAL
// The message is "<context>: <what>", with LibTorch's backtrace left out;
// a LayerError (language_model.h) adds the representation point it was
// thrown at, named by point_name when given (e.g. "layer 3 (gpt_neox.layers.2)").
#ifndef LAYERFLOW_WORKER_MODEL_TORCH_STATUS_H_
#define LAYERFLOW_WORKER_MODEL_TORCH_STATUS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerflow::worker {

using PointNamer = std::function<std::string(int64_t point)>;

// The exception in flight (call only inside a catch block) as a status.
absl::Status StatusOfCurrentException(absl::string_view context,
                                      const PointNamer& point_name = nullptr);

// body() (returning a Status or a StatusOr) with every exception it throws
// turned into a status by StatusOfCurrentException.
template <typename Body>
auto GuardTorch(absl::string_view context, Body&& body, const PointNamer& point_name = nullptr)
    -> decltype(body()) {
  try {
    return body();
  } catch (...) {
    return StatusOfCurrentException(context, point_name);
  }
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_TORCH_STATUS_H_
