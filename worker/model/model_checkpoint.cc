#include "worker/model/model_checkpoint.h"

#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/checkpoint.h"
#include "worker/model/config_json.h"
#include "worker/model/staged_upload.h"

namespace layerflow::worker {
namespace {

// One tensor of the checkpoint, whichever format it came from.
struct WeightEntry {
  std::string file;  // the file errors name
  std::string name;  // as written in the file
  std::vector<int64_t> shape;
  const SafetensorsTensor* mapped = nullptr;  // safetensors: into the mapping
  at::Tensor loaded;                          // pytorch_model.bin: in memory
};

// Every tensor of a checkpoint folder; keeps mappings / tensors alive.
struct Weights {
  std::string source;  // the file "missing tensor" errors name
  std::unique_ptr<SafetensorsCheckpoint> safetensors;
  std::vector<WeightEntry> entries;
};

absl::StatusOr<at::ScalarType> SafetensorsTorchDtype(const WeightEntry& e) {
  switch (e.mapped->dtype) {
    case SafetensorsDtype::kF32:
      return at::kFloat;
    case SafetensorsDtype::kF16:
      return at::kHalf;
    case SafetensorsDtype::kBF16:
      return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(e.file, ": tensor '", e.name, "' has dtype ",
                                                     SafetensorsDtypeName(e.mapped->dtype),
                                                     "; weights must be F32, F16 or BF16"));
  }
}

absl::Status ReadBinFile(const ConfinedFile& file, Weights* weights) {
  const std::string& path = file.name();
  absl::StatusOr<std::vector<char>> read = file.ReadAllBytes();
  if (!read.ok()) return read.status();
  std::vector<char> bytes = *std::move(read);
  c10::IValue value;
  try {
    c10::InferenceMode guard;
    value = torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a readable torch.save archive (corrupt or truncated?): ",
                     e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a readable torch.save archive (corrupt or truncated?): ", e.what()));
  }
  if (!value.isGenericDict()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a state dict (name -> tensor), got ", value.tagKind()));
  }
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": state dict key is not a string (", item.key().tagKind(), ")"));
    }
    const std::string name = item.key().toStringRef();
    if (!item.value().isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": '", name, "' is a ", item.value().tagKind(), ", not a tensor"));
    }
    WeightEntry entry;
    entry.file = path;
    entry.name = name;
    entry.loaded = item.value().toTensor();
    entry.shape.assign(entry.loaded.sizes().begin(), entry.loaded.sizes().end());
    weights->entries.push_back(std::move(entry));
  }
  return absl::OkStatus();
}

absl::StatusOr<Weights> OpenWeights(const ConfinedDir& dir, const ModelFileLimits& limits) {
  Weights weights;
  constexpr absl::string_view kBinSingle = "pytorch_model.bin";
  constexpr absl::string_view kBinIndex = "pytorch_model.bin.index.json";
  if (dir.Exists("model.safetensors") || dir.Exists("model.safetensors.index.json")) {
    absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> checkpoint =
        SafetensorsCheckpoint::Open(dir, limits);
    if (!checkpoint.ok()) return checkpoint.status();
    weights.source = (*checkpoint)->source();
    for (const SafetensorsCheckpoint::Entry& e : (*checkpoint)->All()) {
      WeightEntry entry;
      entry.file = e.file->path();
      entry.name = e.tensor->name;
      entry.shape = e.tensor->shape;
      entry.mapped = e.tensor;
      weights.entries.push_back(std::move(entry));
    }
    weights.safetensors = *std::move(checkpoint);
    return weights;
  }
  if (dir.Exists(kBinSingle)) {
    weights.source = dir.DisplayName(kBinSingle);
    absl::StatusOr<ConfinedFile> file = dir.OpenFile(kBinSingle, limits.max_weights_file_bytes);
    if (!file.ok()) return file.status();
    if (absl::Status s = ReadBinFile(*file, &weights); !s.ok()) return s;
    return weights;
  }
  if (dir.Exists(kBinIndex)) {
    const std::string index_name = dir.DisplayName(kBinIndex);
    weights.source = index_name;
    absl::StatusOr<std::string> text = dir.ReadFile(kBinIndex, limits.max_metadata_bytes);
    if (!text.ok()) return text.status();
    nlohmann::json index = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_name, ": not a JSON object with a weight_map"));
    }
    // Every shard name is checked before any shard is read.
    std::map<std::string, std::string> shards;  // file -> the field that named it first
    for (const auto& [name, file] : index["weight_map"].items()) {
      const std::string field =
          absl::StrCat(index_name, ": weight_map['",
                       name.size() > 120 ? name.substr(0, 120) + "..." : name, "']");
      if (!file.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": must be a file name, got a JSON ", file.type_name()));
      }
      const std::string shard = file.get<std::string>();
      if (absl::Status s = CheckPlainFileName(shard, field); !s.ok()) return s;
      shards.emplace(shard, field);
    }
    for (const auto& [shard, field] : shards) {
      absl::StatusOr<ConfinedFile> opened = dir.OpenFile(shard, limits.max_weights_file_bytes);
      if (!opened.ok()) {
        return absl::Status(opened.status().code(),
                            absl::StrCat(field, ": ", opened.status().message()));
      }
      if (absl::Status s = ReadBinFile(*opened, &weights); !s.ok()) return s;
    }
    return weights;
  }
  return absl::NotFoundError(
      absl::StrCat(dir.display().empty() ? std::string("checkpoint folder") : dir.display(),
                   ": no weights (looked for model.safetensors, model.safetensors.index.json, "
                   "pytorch_model.bin, pytorch_model.bin.index.json)"));
}

// The model's parameter name for a checkpoint name; "" for a known buffer
// that is not a parameter.
std::string CanonicalName(const std::string& architecture, const std::string& name) {
  if (architecture == "gpt_neox") {
    if (absl::EndsWith(name, ".attention.bias") || absl::EndsWith(name, ".attention.masked_bias") ||
        absl::EndsWith(name, "rotary_emb.inv_freq")) {
      return "";
    }
    if (name == "lm_head.weight") return "embed_out.weight";
  } else if (architecture == "gpt_neo") {
    if (absl::EndsWith(name, ".attn.attention.bias") ||
        absl::EndsWith(name, ".attn.attention.masked_bias")) {
      return "";
    }
  } else if (name == "backbone.embedding.weight") {  // mamba, mamba2
    return "backbone.embeddings.weight";
  }
  return name;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadModelCheckpoint(const std::string& dir,
                                                                   c10::ScalarType dtype,
                                                                   c10::Device device) {
  absl::StatusOr<ConfinedDir> folder = ConfinedDir::Open(dir, dir, dir);
  if (!folder.ok()) return folder.status();
  return LoadModelCheckpoint(*folder, dtype, device, ModelFileLimits{});
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadModelCheckpoint(const ConfinedDir& dir,
                                                                   c10::ScalarType dtype,
                                                                   c10::Device device,
                                                                   const ModelFileLimits& limits) {
  const std::string config_path = dir.DisplayName("config.json");
  absl::StatusOr<CheckpointConfig> config = ReadCheckpointConfig(dir, limits.max_metadata_bytes);
  if (!config.ok()) return config.status();
  if (absl::Status s = ValidateModelConfig(config->model); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(config_path, ": ", s.message()));
  }
  absl::StatusOr<Weights> weights = OpenWeights(dir, limits);
  if (!weights.ok()) return weights.status();
  const std::string& arch = config->model.architecture;

  std::map<std::string, const WeightEntry*> by_name;
  for (const WeightEntry& e : weights->entries) {
    const std::string canonical = CanonicalName(arch, e.name);
    if (canonical.empty()) continue;
    auto [it, inserted] = by_name.emplace(canonical, &e);
    if (!inserted && canonical != e.name) continue;  // both spellings: keep the model's own
    if (!inserted) it->second = &e;
  }

  absl::StatusOr<std::unique_ptr<LanguageModel>> model =
      CreateEmptyModel(config->model, device, dtype);
  if (!model.ok()) return model.status();

  // Shapes and presence first, so no copying happens for a bad checkpoint.
  struct Pending {
    const WeightEntry* entry;
    at::ScalarType file_dtype;
    at::Tensor* param;
  };
  std::vector<Pending> pending;
  std::set<const WeightEntry*> used;
  const std::string& head = (*model)->head_name();
  for (auto& [name, param] : (*model)->mutable_parameters().items()) {
    auto it = by_name.find(name);
    const WeightEntry* entry = it == by_name.end() ? nullptr : it->second;
    if (entry == nullptr && name == head && config->tie_word_embeddings) {
      // Tied head left out of the file: the embedding's values (a copy;
      // inference only, nothing trains them apart).
      auto emb = by_name.find((*model)->embedding_name());
      if (emb != by_name.end()) entry = emb->second;
    }
    if (entry == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(weights->source, ": tensor '", name, "' not found",
                       name == "embed_out.weight" ? " (nor lm_head.weight)" : "",
                       name == head && !config->tie_word_embeddings
                           ? " (config.json does not tie it to the embedding)"
                           : ""));
    }
    const std::vector<int64_t> expected(param.sizes().begin(), param.sizes().end());
    if (entry->shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          entry->file, ": tensor '", entry->name, "' has shape ", ShapeString(entry->shape),
          ", expected ", ShapeString(expected), " (from ", config_path, ")"));
    }
    at::ScalarType file_dtype = at::kFloat;
    if (entry->mapped != nullptr) {
      absl::StatusOr<at::ScalarType> d = SafetensorsTorchDtype(*entry);
      if (!d.ok()) return d.status();
      file_dtype = *d;
    } else {
      file_dtype = entry->loaded.scalar_type();
      if (file_dtype != at::kFloat && file_dtype != at::kHalf && file_dtype != at::kBFloat16) {
        return absl::InvalidArgumentError(absl::StrCat(
            entry->file, ": tensor '", entry->name, "' has dtype ", c10::toString(file_dtype),
            "; weights must be float32, float16 or bfloat16"));
      }
    }
    used.insert(entry);
    pending.push_back(Pending{entry, file_dtype, &param});
  }
  for (const WeightEntry& e : weights->entries) {
    const std::string canonical = CanonicalName(arch, e.name);
    if (canonical.empty() || used.count(&e)) continue;
    if (by_name.count(canonical) && by_name[canonical] != &e) continue;  // other spelling taken
    return absl::InvalidArgumentError(absl::StrCat(e.file, ": unexpected tensor '", e.name,
                                                   "': not a parameter of ", arch,
                                                   " with this config"));
  }

  // Mapped tensors go to the device through pinned slots (staged_upload.h);
  // pytorch_model.bin's tensors are already in memory and are copied as they are.
  std::vector<HostTensorCopy> mapped;
  std::vector<const Pending*> mapped_of;
  const Pending* current = nullptr;
  try {
    c10::InferenceMode guard;
    for (const Pending& p : pending) {
      current = &p;
      if (p.entry->loaded.defined()) {
        p.param->copy_(p.entry->loaded);
      } else {
        mapped.push_back(HostTensorCopy{p.entry->mapped->data, p.file_dtype, p.param});
        mapped_of.push_back(&p);
      }
    }
    size_t failed = 0;
    current = nullptr;
    try {
      UploadStaged(mapped, &failed);
    } catch (...) {
      if (failed < mapped_of.size()) current = mapped_of[failed];
      throw;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(current ? current->entry->file : weights->source,
                                            ": tensor '", current ? current->entry->name : "",
                                            "': ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(current ? current->entry->file : weights->source,
                                            ": tensor '", current ? current->entry->name : "",
                                            "': ", e.what()));
  }
  return model;
}

}  // namespace layerflow::worker
