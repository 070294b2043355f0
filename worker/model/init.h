// Seeded random initialisation (METHODS.md, "Models and initialisation").
//
// Every scheme draws from ONE CPU generator (at::CPUGeneratorImpl seeded with
// the job seed) into float32 CPU tensors, walking the parameters in the
// map's fixed order; the model is moved to its device and dtype afterwards.
// So every device and every dtype starts from the same draws, and replicas
// on several GPUs are identical.
//
// Per parameter, by name and shape:
//   - norm weights (1-D, name ends in ".weight"): 1
//   - biases (ends in ".bias"): 0
//   - parameters the model keeps at its own init whatever the scheme
//     (LanguageModel::InitStructural: Mamba's A_log, D, dt bias ...)
//   - other weights (2-D: linear [out, in], embedding [vocab, d]; 3-D: a
//     depthwise conv [channels, 1, kernel]):
//       reference       normal(0, reference_std)  (HF _init_weights:
//                       initializer_range for Linear and Embedding)
//       normal(s)       normal(0, s)
//       uniform(a)      uniform(-a, a)
//       xavier_uniform  uniform(-b, b), b = sqrt(6 / (fan_in + fan_out))
//       xavier_normal   normal(0, sqrt(2 / (fan_in + fan_out)))
//       kaiming_normal  normal(0, sqrt(2 / fan_in))  (torch defaults: a = 0,
//                       mode fan_in, gain sqrt(2))
//     with torch's fans: fan_in = size(1) * receptive, fan_out = size(0) *
//     receptive, receptive = the product of the dims after the second.
// Norms and biases consume no draws.
#ifndef LAYERFLOW_WORKER_MODEL_INIT_H_
#define LAYERFLOW_WORKER_MODEL_INIT_H_

#include <cstdint>
#include <functional>
#include <string>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "worker/model/model_config.h"
#include "worker/model/parameter_map.h"

namespace layerflow::worker {

// The std or bound a scheme uses for a 2-D weight of this shape; exposed for
// tests. `normal` reports a std, `uniform` a bound.
struct InitDistribution {
  bool uniform = false;
  double scale = 0;  // std (normal) or bound (uniform)
};
InitDistribution WeightDistribution(const InitScheme& scheme,
                                    double reference_std, int64_t fan_in,
                                    int64_t fan_out);

// Called first for every parameter: fills it and returns true when the
// architecture initialises it itself (drawing from `generator` if it must).
using StructuralInit = std::function<bool(
    const std::string& name, at::Tensor& tensor, at::Generator& generator)>;

// Fills every parameter in place. Parameters must be float32 on the CPU.
// Throws c10::Error (the caller converts at its boundary).
void InitializeParameters(ParameterMap& params, const InitScheme& scheme,
                          double reference_std, uint64_t seed,
                          const StructuralInit& structural = nullptr);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_INIT_H_
