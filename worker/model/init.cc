#include "worker/model/init.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/match.h"

namespace layerflow::worker {

InitDistribution WeightDistribution(const InitScheme& scheme,
                                    double reference_std, int64_t fan_in,
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

void InitializeParameters(ParameterMap& params, const InitScheme& scheme,
                          double reference_std, uint64_t seed,
                          const StructuralInit& structural) {
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, tensor] : params.items()) {
    TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat,
                "init: parameter ", name, " must be float32 on the CPU");
    if (structural && structural(name, tensor, gen)) {
      continue;
    } else if (absl::EndsWith(name, ".bias")) {
      tensor.zero_();
    } else if (tensor.dim() == 1 && absl::EndsWith(name, ".weight")) {
      // The only 1-D weights are norms (LayerNorm, RMSNorm, ln_*).
      tensor.fill_(1.0);
    } else {
      TORCH_CHECK(tensor.dim() == 2 || tensor.dim() == 3, "init: weight ",
                  name, " is not 2-D or 3-D");
      const int64_t receptive = tensor.dim() == 3 ? tensor.size(2) : 1;
      const InitDistribution dist =
          WeightDistribution(scheme, reference_std, tensor.size(1) * receptive,
                             tensor.size(0) * receptive);
      if (dist.uniform) {
        tensor.uniform_(-dist.scale, dist.scale, gen);
      } else {
        tensor.normal_(0.0, dist.scale, gen);
      }
    }
  }
}

}  // namespace layerflow::worker
