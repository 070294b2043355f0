#include "worker/runtime/model_loader.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/config_json.h"
#include "worker/model/model_checkpoint.h"
#include "worker/tokenizer/bpe_tokenizer.h"
#include "worker/tokenizer/byte_tokenizer.h"

namespace layerflow::worker {
namespace {

// A parser's NOT_FOUND / INVALID_ARGUMENT as INVALID_ARGUMENT naming the
// request field; PERMISSION_DENIED (outside the roots) keeps its code.
absl::Status AsFieldError(const absl::Status& status, absl::string_view field) {
  const std::string message = absl::StrCat(field, ": ", status.message());
  return absl::IsPermissionDenied(status) ? absl::PermissionDeniedError(message)
                                          : absl::InvalidArgumentError(message);
}

}  // namespace

absl::StatusOr<ModelPlan> PlanModel(const ModelRequest& request, const ModelFilePolicy& files) {
  ModelPlan plan;
  plan.request = request;
  absl::StatusOr<ModelSource> source = ResolveModelSource(request.model, files);
  if (!source.ok()) return AsFieldError(source.status(), "model");
  plan.source = *std::move(source);
  absl::StatusOr<InitScheme> scheme = ParseInitScheme(request.init_scheme);
  if (!scheme.ok()) return AsFieldError(scheme.status(), "init_scheme");
  plan.scheme = *scheme;
  if (plan.from_checkpoint() && plan.scheme.kind != InitScheme::Kind::kReference) {
    return absl::InvalidArgumentError(absl::StrCat("init_scheme: '", request.init_scheme,
                                                   "' applies to presets only; the checkpoint '",
                                                   request.model, "' brings its own weights"));
  }
  plan.tokenizer = std::make_shared<ByteTokenizer>();
  std::string tokenizer_name = "byte";
  if (plan.from_checkpoint()) {
    absl::StatusOr<CheckpointConfig> read =
        ReadCheckpointConfig(plan.source.folder, files.limits.max_metadata_bytes);
    if (!read.ok()) return AsFieldError(read.status(), "model");
    plan.config = read->model;
    absl::StatusOr<std::unique_ptr<Tokenizer>> own =
        LoadCheckpointTokenizer(plan.source.folder, files.limits.max_metadata_bytes);
    if (!own.ok()) return AsFieldError(own.status(), "model");
    if (*own != nullptr) {
      plan.tokenizer = std::shared_ptr<const Tokenizer>(*std::move(own));
      tokenizer_name = plan.source.folder.path() + "/tokenizer.json";
    }
    plan.metadata = {{"source", plan.source.folder.path()}, {"tokenizer", tokenizer_name}};
  } else {
    plan.config = plan.source.preset.config;
    plan.metadata = {{"source", absl::StrCat("preset ", plan.source.preset.name)},
                     {"init", request.init_scheme},
                     {"seed", absl::StrCat(request.seed)},
                     {"tokenizer", tokenizer_name}};
  }
  return plan;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> BuildModel(const ModelPlan& plan,
                                                          c10::ScalarType dtype, c10::Device device,
                                                          const ModelFilePolicy& files) {
  absl::StatusOr<std::unique_ptr<LanguageModel>> model =
      plan.from_checkpoint()
          ? LoadModelCheckpoint(plan.source.folder, dtype, device, files.limits)
          : CreateRandomModel(plan.config, plan.scheme, plan.request.seed, device, dtype);
  if (!model.ok()) {
    return absl::Status(model.status().code(),
                        absl::StrCat("model ", plan.request.model, ": ", model.status().message()));
  }
  return model;
}

}  // namespace layerflow::worker
