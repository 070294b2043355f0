// The one way a worker turns a model name into a model (issue 12): a job
// (job_runner.cc) and layerflow-inspect both go through it.
//
//   PlanModel   resolves the name (a preset, a checkpoint folder under the
//               policy's roots, a Hugging Face repo id in the hub cache),
//               checks the init scheme against it, reads a checkpoint's
//               config.json and tokenizer: everything a caller validates
//               before it spends time on weights.
//   BuildModel  the plan's weights on a device in a dtype: the seeded init
//               of a preset (CreateRandomModel) or the checkpoint's files.
//
// Errors name the request's field, as a JobConfig's: INVALID_ARGUMENT
// "model: ..." or "init_scheme: ..."; PERMISSION_DENIED "model: ..." for a
// path outside every root (ResolveModelSource). BuildModel's errors start
// "model NAME: ".
#ifndef LAYERFLOW_WORKER_RUNTIME_MODEL_LOADER_H_
#define LAYERFLOW_WORKER_RUNTIME_MODEL_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/checkpoint.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {

struct ModelRequest {
  std::string model;
  std::string init_scheme = "reference";  // a preset's; a checkpoint takes only "reference"
  uint64_t seed = 0;
};

struct ModelPlan {
  ModelRequest request;
  ModelSource source;
  InitScheme scheme;   // presets: the parsed init_scheme
  ModelConfig config;  // the preset's, or the checkpoint's config.json
  // The checkpoint's own tokenizer when it has one, else the byte tokenizer.
  std::shared_ptr<const Tokenizer> tokenizer;
  // What the plan is, for a file's metadata: source ("preset NAME" or the
  // checkpoint folder), tokenizer ("byte" or its file), and for presets
  // init and seed.
  std::vector<std::pair<std::string, std::string>> metadata;

  bool from_checkpoint() const { return source.kind == ModelSource::Kind::kCheckpoint; }
};

absl::StatusOr<ModelPlan> PlanModel(const ModelRequest& request, const ModelFilePolicy& files);

absl::StatusOr<std::unique_ptr<LanguageModel>> BuildModel(const ModelPlan& plan,
                                                          c10::ScalarType dtype, c10::Device device,
                                                          const ModelFilePolicy& files);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_RUNTIME_MODEL_LOADER_H_
