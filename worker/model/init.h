// Seeded random initialisation (METHODS.md, "Models and initialisation").
//
// Every random value comes from the counter-based generator of
// counter_rng.h: element i of parameter `name` under `seed` is a pure
// function of (seed, name, i). Parameters are filled where they live, in
// their dtype (float32 values rounded once to it), on the CPU by a parallel
// loop and on CUDA by worker/kernels/counter_init.cu, which make the same
// bits: the same preset and seed give the same weights on every device, in
// any parameter order, and a parameter's values do not depend on which
// other parameters the model has.
//
// Per parameter, by name and shape:
//   - parameters the model keeps at its own init whatever the scheme
//     (LanguageModel::InitStructural: Mamba's A_log, D, dt bias ...)
//   - biases (ends in ".bias"): 0
//   - norm weights (1-D, name ends in ".weight"): 1
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
// No scheme truncates its normal (METHODS.md has none that does).
#ifndef LAYERFLOW_WORKER_MODEL_INIT_H_
#define LAYERFLOW_WORKER_MODEL_INIT_H_

#include <cstdint>
#include <functional>
#include <string>

#include <ATen/core/Tensor.h>

#include "worker/model/counter_rng.h"
#include "worker/model/model_config.h"
#include "worker/model/parameter_map.h"

namespace layerflow::worker {

// The std or bound a scheme uses for a 2-D weight of this shape; exposed for
// tests. `normal` reports a std, `uniform` a bound.
struct InitDistribution {
  bool uniform = false;
  double scale = 0;  // std (normal) or bound (uniform)
};
InitDistribution WeightDistribution(const InitScheme& scheme, double reference_std, int64_t fan_in,
                                    int64_t fan_out);

// Fills `tensor` in place with counter_rng::ValueAt(spec, i) at row-major
// element i, rounded to the tensor's dtype: float32, float64, bfloat16 or
// float16, contiguous, on the CPU or (in a CUDA build) a CUDA device, where
// it runs on the current stream. Throws c10::Error otherwise.
void CounterFill(at::Tensor& tensor, const counter_rng::FillSpec& spec);

// The draws of one parameter under one seed.
class ParameterDraws {
 public:
  ParameterDraws(uint64_t seed, const std::string& name);
  // The parameter's Philox key (counter_rng::ParameterKey).
  uint64_t key() const { return key_; }
  // uniform in [lo, hi]; normal(0, std). In place, as CounterFill.
  void Uniform(at::Tensor& tensor, double lo, double hi) const;
  void Normal(at::Tensor& tensor, double std) const;

 private:
  uint64_t key_;
};

// Called first for every parameter: fills it and returns true when the
// architecture initialises it itself (drawing from `draws` if it must).
using StructuralInit =
    std::function<bool(const std::string& name, at::Tensor& tensor, const ParameterDraws& draws)>;

// Fills every parameter in place, on its device and in its dtype.
// Throws c10::Error (the caller converts at its boundary).
void InitializeParameters(ParameterMap& params, const InitScheme& scheme, double reference_std,
                          uint64_t seed, const StructuralInit& structural = nullptr);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_INIT_H_
