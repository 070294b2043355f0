// The architecture registry and the factories shared by all architectures.
#include "worker/model/language_model.h"

#include <exception>
#include <new>
#include <optional>
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
    return absl::InvalidArgumentError(absl::StrCat("dtype: unsupported ", c10::toString(dtype)));
  }
  return absl::OkStatus();
}

// The architecture's name on a LibTorch failure at construction.
template <typename Fn>
absl::StatusOr<std::unique_ptr<LanguageModel>> Guarded(const ModelConfig& config, const char* what,
                                                       Fn fn) {
  return GuardTorch(absl::StrCat(config.architecture, " ", what),
                    [&]() -> absl::StatusOr<std::unique_ptr<LanguageModel>> {
                      c10::InferenceMode guard;
                      return fn();
                    });
}

// InferenceMode unless the model is trainable (LanguageModel::MakeTrainable):
// a trainable model's Forward / Logits record the graph unless their caller
// says otherwise (a NoGradGuard, an InferenceMode of its own).
class InferenceUnlessTrainable {
 public:
  explicit InferenceUnlessTrainable(bool trainable) {
    if (!trainable) mode_.emplace();
  }

 private:
  std::optional<c10::InferenceMode> mode_;
};

// The exception edge of Forward: runs body(point), which advances `point`
// (0 = embedding, 1..L = blocks, L + 1 = final norm) as it goes, and turns
// whatever it throws into a LayerError at the point reached.
template <typename Body>
void WithLayerErrors(Body&& body) {
  int64_t point = 0;
  try {
    body(point);
  } catch (const LayerError&) {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    throw LayerError(point, e.what_without_backtrace(), /*out_of_memory=*/true);
  } catch (const std::bad_alloc&) {
    throw LayerError(point, "out of memory", /*out_of_memory=*/true);
  } catch (const c10::Error& e) {
    throw LayerError(point, e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw LayerError(point, e.what());
  }
}

}  // namespace

absl::Status CheckPositive(std::initializer_list<std::pair<const char*, int64_t>> fields) {
  for (auto [field, value] : fields) {
    if (value <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": must be positive, got ", value));
    }
  }
  return absl::OkStatus();
}

void LanguageModel::AddParameters(c10::Device device, c10::ScalarType dtype) {
  // Straight on the device: no host copy of a large model (init.h fills it there).
  const auto options = at::TensorOptions().device(device).dtype(dtype);
  for (const ParameterSlot& slot : ParameterSlots()) {
    params_.Add(slot.name, at::empty(slot.shape, options));
  }
}

void LanguageModel::Bind() {
  for (const ParameterSlot& slot : ParameterSlots()) {
    *slot.field = params_.Get(slot.name);
    if (slot.role == ParameterSlot::Role::kInputEmbedding) embedding_name_ = slot.name;
    if (slot.role == ParameterSlot::Role::kOutputHead) {
      head_name_ = slot.name;
      head_ = *slot.field;
    }
  }
}

void LanguageModel::Forward(const at::Tensor& input_ids, const LayerCallback& on_layer,
                            const SpectrumSink* spectra) const {
  const InferenceUnlessTrainable guard(trainable());
  WithLayerErrors([&](int64_t& point) {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.sizes());
    RunForward(input_ids, on_layer, spectra, point);
  });
}

at::Tensor LanguageModel::Logits(const at::Tensor& final_hidden) const {
  const InferenceUnlessTrainable guard(trainable());
  return at::linear(final_hidden.to(head_.scalar_type()), head_);
}

std::string LanguageModel::PointName(int64_t point) const {
  const PointModules modules = point_modules();
  if (point == 0) return absl::StrCat("embedding (", modules.embedding, ")");
  if (point <= num_layers()) {
    return absl::StrCat("layer ", point, " (", modules.layers, ".", point - 1, ")");
  }
  return absl::StrCat("final norm (", modules.final_norm, ")");
}

bool LanguageModel::InitStructural(const std::string&, at::Tensor&, const InitScheme&,
                                   const ParameterDraws&) const {
  return false;
}

absl::Status ValidateModelConfig(const ModelConfig& config) {
  const std::string& arch = config.architecture;
  if (arch == "gpt_neox") return GptNeoXModel::Validate(config.gpt_neox);
  if (arch == "gpt_neo") return GptNeoModel::Validate(config.gpt_neo);
  if (arch == "mamba") return MambaModel::Validate(config.mamba);
  if (arch == "mamba2") return Mamba2Model::Validate(config.mamba2);
  return absl::InvalidArgumentError(absl::StrCat(
      "architecture: unknown '", arch, "'; known: ", absl::StrJoin(KnownArchitectures(), ", ")));
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateRandomModel(const ModelConfig& config,
                                                                 const InitScheme& scheme,
                                                                 uint64_t seed, c10::Device device,
                                                                 c10::ScalarType dtype) {
  if (absl::Status s = ValidateForRun(config, dtype); !s.ok()) return s;
  return Guarded(config, "init", [&]() -> std::unique_ptr<LanguageModel> {
    std::unique_ptr<LanguageModel> model = NewModel(config);
    model->AddParameters(device, dtype);
    const LanguageModel& m = *model;
    InitializeParameters(
        model->params_, scheme, model->ReferenceStd(), seed,
        [&m, &scheme](const std::string& name, at::Tensor& tensor, const ParameterDraws& draws) {
          return m.InitStructural(name, tensor, scheme, draws);
        });
    model->device_ = device;
    model->dtype_ = dtype;
    model->Bind();
    return model;
  });
}

absl::StatusOr<std::unique_ptr<LanguageModel>> CreateEmptyModel(const ModelConfig& config,
                                                                c10::Device device,
                                                                c10::ScalarType dtype) {
  if (absl::Status s = ValidateForRun(config, dtype); !s.ok()) return s;
  return Guarded(config, "alloc", [&]() -> std::unique_ptr<LanguageModel> {
    std::unique_ptr<LanguageModel> model = NewModel(config);
    model->AddParameters(device, dtype);
    model->device_ = device;
    model->dtype_ = dtype;
    model->Bind();
    return model;
  });
}

absl::Status LanguageModel::MakeTrainable() {
  if (dtype_ != c10::kFloat && dtype_ != c10::kDouble) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dtype: training needs fp32 parameters, the model is ", c10::toString(dtype_)));
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
