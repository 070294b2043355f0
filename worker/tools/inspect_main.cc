// layerflow-inspect: runs one model on one text and writes every layer's
// hidden states to a safetensors file, for looking at representations
// outside layerflow (numpy, safetensors, torch) or checking them against
// another implementation (docs/models.md).
//
//   layerflow-inspect --model EleutherAI/pythia-160m --text "Hello" --out h.safetensors
//
// Output tensors (METHODS.md, "Representations"; one prompt, no batch dim):
//   input_ids  I64 [tokens]
//   layer.0    F32 [tokens, hidden]  embedding output
//   layer.l    F32 [tokens, hidden]  residual stream after block l (1..L)
//   final      F32 [tokens, hidden]  final-norm output
//   logits     F32 [tokens, vocab]   with --logits
// and __metadata__: model, source, dtype, tokenizer, init, seed, layers,
// layout. Linked with LibTorch, so it is its own binary: the `layerflow` CLI
// never links LibTorch (common/worker_process.h says why).

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "catalog/dtypes.h"
#include "worker/model/checkpoint.h"
#include "worker/model/language_model.h"
#include "worker/model/torch_status.h"
#include "worker/runtime/model_loader.h"
#include "worker/tokenizer/tokenizer.h"

namespace layerflow::worker {
namespace {

struct InspectOptions {
  std::string model;
  std::string init;  // empty: "reference" for presets; not allowed for checkpoints
  uint64_t seed = 0;
  std::string text;
  std::string out;
  std::string dtype = "fp32";
  std::string device = "cpu";
  bool logits = false;
};

// The loader's field names as this tool's flags: "model: ..." is --model's,
// "init_scheme: ..." --init's.
absl::Status AsFlagError(const absl::Status& status) {
  std::string message(status.message());
  for (auto [field, flag] :
       {std::pair{"model: ", "--model: "}, std::pair{"init_scheme: ", "--init: "}}) {
    if (message.rfind(field, 0) == 0) {
      message = flag + message.substr(std::string(field).size());
      break;
    }
  }
  return absl::Status(status.code(), message);
}

absl::Status Inspect(const InspectOptions& o) {
  absl::StatusOr<c10::ScalarType> dtype = ParseDtype(o.dtype);
  if (!dtype.ok()) return dtype.status();
  // The local user's own tool: any folder they name (relative to the
  // current folder, or absolute), and the Hugging Face cache.
  ModelFilePolicy files;
  if (char* cwd = getcwd(nullptr, 0); cwd != nullptr) {
    files.roots.push_back(cwd);
    free(cwd);
  }
  files.roots.push_back("/");
  std::string name = o.model;
  if (char* real = realpath(name.c_str(), nullptr); real != nullptr) {
    if (name.find('/') != std::string::npos) name = real;  // "../ckpt" as an absolute path
    free(real);
  }
  c10::Device device(c10::kCPU);
  if (o.device == "cuda") {
    if (!at::hasCUDA()) return absl::FailedPreconditionError("--device cuda: no CUDA device");
    device = c10::Device(c10::kCUDA, 0);
  }
  // The worker's one model loader (worker/runtime/model_loader.h); its
  // errors name the request's fields, which are this tool's flags.
  absl::StatusOr<ModelPlan> plan =
      PlanModel({name, o.init.empty() ? "reference" : o.init, o.seed}, files);
  if (!plan.ok()) return AsFlagError(plan.status());
  if (plan->from_checkpoint() && !o.init.empty()) {
    return absl::InvalidArgumentError(
        "--init applies to presets only; a checkpoint brings its own weights");
  }
  absl::StatusOr<std::unique_ptr<LanguageModel>> built = BuildModel(*plan, *dtype, device, files);
  if (!built.ok()) return built.status();
  std::unique_ptr<LanguageModel> model = *std::move(built);
  const std::shared_ptr<const Tokenizer> tokenizer = plan->tokenizer;
  std::vector<std::pair<std::string, std::string>> metadata = {{"model", o.model}};
  metadata.insert(metadata.end(), plan->metadata.begin(), plan->metadata.end());

  const std::vector<int32_t> ids32 = tokenizer->Encode(o.text);
  if (ids32.empty()) return absl::InvalidArgumentError("--text: encodes to no tokens");
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  for (int64_t id : ids) {
    if (id < 0 || id >= model->vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " (", tokenizer->name(),
                       " tokenizer) is outside the model's vocab_size ", model->vocab_size()));
    }
  }

  // Every point as float32 on the CPU, in order: layer.0 .. layer.L, final.
  const int64_t L = model->num_layers();
  std::vector<std::pair<std::string, at::Tensor>> states;
  at::Tensor logits;
  try {
    c10::InferenceMode guard;
    const at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
    at::Tensor final_hidden;
    model->Forward(input, [&](int64_t point, const at::Tensor& h) {
      const std::string name = point <= L ? absl::StrCat("layer.", point) : "final";
      states.emplace_back(name, h[0].to(at::kCPU, at::kFloat).contiguous());
      if (point == L + 1) final_hidden = h;
    });
    if (o.logits) logits = model->Logits(final_hidden)[0].to(at::kCPU, at::kFloat).contiguous();
  } catch (...) {
    return StatusOfCurrentException("forward",
                                    [&](int64_t point) { return model->PointName(point); });
  }

  metadata.emplace_back("dtype", o.dtype);
  metadata.emplace_back("layers", absl::StrCat(L));
  metadata.emplace_back("layout",
                        "layer.0 = embedding output; layer.l = residual stream after block l "
                        "(l = 1..L); final = final-norm output; each [tokens, hidden] float32 "
                        "(METHODS.md, Representations)");
  std::vector<SafetensorsWriteTensor> tensors;
  tensors.push_back({"input_ids",
                     SafetensorsDtype::kI64,
                     {static_cast<int64_t>(ids.size())},
                     ids.data(),
                     ids.size() * sizeof(int64_t)});
  auto add = [&](const std::string& name, const at::Tensor& t) {
    tensors.push_back({name, SafetensorsDtype::kF32,
                       std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.data_ptr(),
                       t.nbytes()});
  };
  for (const auto& [name, t] : states) add(name, t);
  if (logits.defined()) add("logits", logits);
  if (absl::Status s = WriteSafetensors(o.out, tensors, metadata); !s.ok()) return s;
  std::cerr << "layerflow-inspect: " << ids.size() << " tokens, " << states.size()
            << " points (layer.0..layer." << L << ", final) -> " << o.out << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace layerflow::worker

int main(int argc, char** argv) {
  layerflow::worker::InspectOptions o;
  CLI::App app{
      "layerflow-inspect: run a model on a text and write every layer's hidden "
      "states (layer.0..layer.L, final) and input_ids to a safetensors file"};
  app.add_option("--model", o.model,
                 "Checkpoint folder, Hugging Face repo id in the local cache "
                 "(e.g. EleutherAI/pythia-160m), or preset (e.g. pythia-70m)")
      ->required();
  app.add_option("--init", o.init, "Random-init scheme for a preset (default: reference)");
  app.add_option("--seed", o.seed, "Seed of the random init")->capture_default_str();
  app.add_option("--text", o.text, "The text to run")->required();
  app.add_option("--out", o.out, "Output .safetensors file")->required();
  app.add_option("--dtype", o.dtype, "Run precision (states are written as F32)")
      ->check(CLI::IsMember(std::vector<std::string>(layerflow::catalog::kDtypes.begin(),
                                                     layerflow::catalog::kDtypes.end())))
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_flag("--logits", o.logits, "Also write the logits [tokens, vocab]");
  CLI11_PARSE(app, argc, argv);
  if (absl::Status s = layerflow::worker::Inspect(o); !s.ok()) {
    std::cerr << "error: " << absl::StatusCodeToString(s.code()) << ": " << s.message() << "\n";
    return 1;
  }
  return 0;
}
