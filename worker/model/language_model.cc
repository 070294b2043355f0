// The architecture registry and the factories shared by all architectures.
#include "worker/model/language_model.h"

#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "catalog/dtypes.h"
#include "worker/model/torch_status.h"
#include "worker/model/gpt_neo.h"
#include "worker/model/gpt_neox.h"
#include "worker/model/init.h"
#include "worker/model/mamba.h"
#include "worker/model/mamba2.h"

namespace layerflow::worker {
namespace {

// An architecture's model object with no parameters yet. The one place that
// maps an architecture name onto its class.
std::unique_ptr<LanguageModel> NewModel(const ModelConfig& config) {
  if (config.architecture == "gpt_neox") return std::make_unique<GptNeoXModel>(config);
  if (config.architecture == "gpt_neo") return std::make_unique<GptNeoModel>(config);
  if (config.architecture == "mamba") return std::make_unique<MambaModel>(config);
  if (config.architecture == "mamba2") return std::make_unique<Mamba2Model>(config);
  return nullptr;
}

absl::Status ValidateForRun(const ModelConfig& config, c10::ScalarType dtype) {
  if (absl::Status s = ValidateModelConfig(config); !s.ok()) return s;
  // float64: the references of tests and of the GPU conformance suite (a
  // job's dtype is one of the other three, ParseDtype).
  if (dtype != c10::kFloat && dtype != c10::kBFloat16 && dtype != c10::kHalf &&
      dtype != c10::kDouble) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype: unsupported ", c10::toString(dtype)));
  }
  return absl::OkStatus();
}

// The architecture's name on a LibTorch failure at construction.
template <typename Fn>
absl::StatusOr<std::unique_ptr<LanguageModel>> Guarded(const ModelConfig& config,
                                                       const char* what, Fn fn) {
  return GuardTorch(absl::StrCat(config.architecture, " ", what),
                    [&]() -> absl::StatusOr<std::unique_ptr<LanguageModel>> {
                      c10::InferenceMode guard;
                      return fn();
                    });
}

}  // namespace

bool LanguageModel::InitStructural(const std::string&, at::Tensor&,
                                   const InitScheme&, const ParameterDraws&) const {
  return false;
}

absl::Status ValidateModelConfig(const ModelConfig& config) {
  const std::string& arch = config.architecture;
  if (arch == "gpt_neox") return GptNeoXModel::Validate(config.gpt_neox);
  if (arch == "gpt_neo") return GptNeoModel::Validate(config.gpt_neo);
  if (arch == "mamba") return MambaModel::Validate(config.mamba);
  if (arch == "mamba2") return Mamba2Model::Validate(config.mamba2);
  return absl::InvalidArgumentError(
      absl::StrCat("architecture: unknown '", arch, "'; known: ",
                   absl::StrJoin(KnownArchitectures(), ", ")));
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateRandomModel(
    const ModelConfig& config, const InitScheme& scheme, uint64_t seed,
    c10::Device device, c10::ScalarType dtype) {
  if (absl::Status s = ValidateForRun(config, dtype); !s.ok()) return s;
  return Guarded(config, "init", [&]() -> std::unique_ptr<LanguageModel> {
    std::unique_ptr<LanguageModel> model = NewModel(config);
    model->AddParameters();
    // Made where they are used (init.h): no host copy of a large model.
    for (auto& [name, tensor] : model->params_.items()) {
      tensor = at::empty(tensor.sizes(),
                         at::TensorOptions().device(device).dtype(dtype));
    }
    const LanguageModel& m = *model;
    InitializeParameters(
        model->params_, scheme, model->ReferenceStd(), seed,
        [&m, &scheme](const std::string& name, at::Tensor& tensor,
                      const ParameterDraws& draws) {
          return m.InitStructural(name, tensor, scheme, draws);
        });
    model->device_ = device;
    model->dtype_ = dtype;
    model->Bind();
    return model;
  });
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateEmptyModel(
    const ModelConfig& config, c10::Device device, c10::ScalarType dtype) {
  if (absl::Status s = ValidateForRun(config, dtype); !s.ok()) return s;
  return Guarded(config, "alloc", [&]() -> std::unique_ptr<LanguageModel> {
    std::unique_ptr<LanguageModel> model = NewModel(config);
    model->AddParameters();
    // Straight on the device: no CPU float32 copy of a large model.
    for (auto& [name, tensor] : model->params_.items()) {
      tensor = at::empty(tensor.sizes(),
                         at::TensorOptions().device(device).dtype(dtype));
    }
    model->device_ = device;
    model->dtype_ = dtype;
    model->Bind();
    return model;
  });
}

absl::Status LanguageModel::MakeTrainable() {
  if (dtype_ != c10::kFloat && dtype_ != c10::kDouble) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype: training needs fp32 parameters, the model is ",
                     c10::toString(dtype_)));
  }
  return GuardTorch(absl::StrCat(config_.architecture, " trainable"), [&]() -> absl::Status {
    // Outside InferenceMode, a clone of an inference tensor is an ordinary one.
    for (auto& [name, tensor] : params_.items()) {
      tensor = tensor.clone().detach().requires_grad_(true);
    }
    Bind();
    trainable_ = true;
    return absl::OkStatus();
  });
}

std::unique_ptr<LanguageModel> LanguageModel::Replicate(c10::Device device) const {
  c10::InferenceMode guard;
  std::unique_ptr<LanguageModel> copy = NewModel(config_);
  for (const auto& [name, tensor] : params_.items()) {
    copy->params_.Add(name, tensor.to(device, /*non_blocking=*/false,
                                      /*copy=*/true));
  }
  copy->device_ = device;
  copy->dtype_ = dtype_;
  copy->Bind();
  return copy;
}

absl::StatusOr<c10::ScalarType> ParseDtype(const std::string& text) {
  if (text == "fp32") return c10::kFloat;
  if (text == "bf16") return c10::kBFloat16;
  if (text == "fp16") return c10::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: unknown '", text, "'; known: ", catalog::DtypeList()));
}

}  // namespace layerflow::worker
