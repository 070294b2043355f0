#include "worker/model/init.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"

namespace layerflow::worker {

InitDistribution WeightDistribution(const InitScheme& scheme, double reference_std, int64_t fan_in,
                                    int64_t fan_out) {
  using Kind = InitScheme::Kind;
  const double fans = static_cast<double>(fan_in + fan_out);
  switch (scheme.kind) {
    case Kind::kReference:
      return {false, reference_std};
    case Kind::kNormal:
      return {false, scheme.param};
    case Kind::kUniform:
      return {true, scheme.param};
    case Kind::kXavierUniform:
      return {true, std::sqrt(6.0 / fans)};
    case Kind::kXavierNormal:
      return {false, std::sqrt(2.0 / fans)};
    case Kind::kKaimingNormal:
      return {false, std::sqrt(2.0 / static_cast<double>(fan_in))};
  }
  return {false, reference_std};
}

ParameterDraws::ParameterDraws(uint64_t seed, const std::string& name)
    : key_(counter_rng::ParameterKey(seed, counter_rng::NameHash(name.data(), name.size()))) {}

void ParameterDraws::Uniform(at::Tensor& tensor, double lo, double hi) const {
  counter_rng::FillSpec spec;
  spec.key = key_;
  spec.distribution = counter_rng::Distribution::kUniform;
  spec.a = lo;
  spec.b = hi;
  CounterFill(tensor, spec);
}

void ParameterDraws::Normal(at::Tensor& tensor, double std) const {
  counter_rng::FillSpec spec;
  spec.key = key_;
  spec.distribution = counter_rng::Distribution::kNormal;
  spec.a = std;
  CounterFill(tensor, spec);
}

void InitializeParameters(ParameterMap& params, const InitScheme& scheme, double reference_std,
                          uint64_t seed, const StructuralInit& structural) {
  c10::InferenceMode guard;
  for (auto& [name, tensor] : params.items()) {
    const ParameterDraws draws(seed, name);
    if (structural && structural(name, tensor, draws)) {
      continue;
    } else if (absl::EndsWith(name, ".bias")) {
      tensor.zero_();
    } else if (tensor.dim() == 1 && absl::EndsWith(name, ".weight")) {
      // The only 1-D weights are norms (LayerNorm, RMSNorm, ln_*).
      tensor.fill_(1.0);
    } else {
      TORCH_CHECK(tensor.dim() == 2 || tensor.dim() == 3, "init: weight ", name,
                  " is not 2-D or 3-D");
      const int64_t receptive = tensor.dim() == 3 ? tensor.size(2) : 1;
      const InitDistribution dist = WeightDistribution(
          scheme, reference_std, tensor.size(1) * receptive, tensor.size(0) * receptive);
      if (dist.uniform) {
        draws.Uniform(tensor, -dist.scale, dist.scale);
      } else {
        draws.Normal(tensor, dist.scale);
      }
    }
  }
}

}  // namespace layerflow::worker
