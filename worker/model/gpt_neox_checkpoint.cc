#include "worker/model/gpt_neox_checkpoint.h"

#include <cstring>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/model/checkpoint.h"

namespace layerflow::worker {
namespace {

bool IsKnownBuffer(const std::string& name) {
  return absl::EndsWith(name, ".attention.bias") ||
         absl::EndsWith(name, ".attention.masked_bias") ||
         absl::EndsWith(name, "rotary_emb.inv_freq");
}

absl::StatusOr<at::ScalarType> TorchDtype(const SafetensorsFile& file,
                                          const SafetensorsTensor& t) {
  switch (t.dtype) {
    case SafetensorsDtype::kF32: return at::kFloat;
    case SafetensorsDtype::kF16: return at::kHalf;
    case SafetensorsDtype::kBF16: return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          file.path(), ": tensor '", t.name, "' has dtype ",
          SafetensorsDtypeName(t.dtype), "; weights must be F32, F16 or BF16"));
  }
}

// Copies one checkpoint tensor into `param` (whatever its device and dtype).
void CopyInto(const SafetensorsTensor& t, at::ScalarType dtype, at::Tensor& param) {
  // from_blob needs element alignment; the writer aligns, others may not.
  std::vector<uint8_t> aligned;
  const void* data = t.data;
  if (reinterpret_cast<uintptr_t>(data) % at::elementSize(dtype) != 0) {
    aligned.assign(t.data, t.data + t.nbytes);
    data = aligned.data();
  }
  at::Tensor source = at::from_blob(const_cast<void*>(data), t.shape,
                                    at::TensorOptions().dtype(dtype));
  // Synchronous (pageable memory), so the mapping may go right after.
  param.copy_(source);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GptNeoXModel>> LoadGptNeoXCheckpoint(
    const std::string& dir, c10::ScalarType dtype, c10::Device device) {
  const std::string config_path = dir + "/config.json";
  absl::StatusOr<GptNeoXConfig> config = ReadGptNeoXConfig(config_path);
  if (!config.ok()) return config.status();
  if (absl::Status s = GptNeoXModel::Validate(*config); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(config_path, ": ", s.message()));
  }
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> checkpoint =
      SafetensorsCheckpoint::Open(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  const std::string& source = (*checkpoint)->source();
  absl::StatusOr<bool> tied = ReadTieWordEmbeddings(config_path);
  if (!tied.ok()) return tied.status();

  absl::StatusOr<std::unique_ptr<GptNeoXModel>> model =
      GptNeoXModel::CreateEmpty(*config, device, dtype);
  if (!model.ok()) return model.status();

  // Shapes and presence first, so no copying happens for a bad checkpoint.
  struct Pending {
    const SafetensorsCheckpoint::Entry entry;
    at::ScalarType dtype;
    at::Tensor* param;
  };
  std::vector<Pending> pending;
  std::set<const SafetensorsTensor*> used;
  for (auto& [name, param] : (*model)->mutable_parameters().items()) {
    SafetensorsCheckpoint::Entry entry = (*checkpoint)->Find(name);
    if (entry.tensor == nullptr && name == "embed_out.weight") {
      entry = (*checkpoint)->Find("lm_head.weight");
      // Tied head, left out of the file: the embedding's values (a copy;
      // inference only, nothing trains them apart).
      if (entry.tensor == nullptr && *tied) entry = (*checkpoint)->Find("gpt_neox.embed_in.weight");
    }
    if (entry.tensor == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          source, ": tensor '", name, "' not found",
          name == "embed_out.weight" ? " (nor lm_head.weight)" : ""));
    }
    const std::vector<int64_t> expected(param.sizes().begin(), param.sizes().end());
    if (entry.tensor->shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          entry.file->path(), ": tensor '", entry.tensor->name, "' has shape ",
          ShapeString(entry.tensor->shape), ", expected ", ShapeString(expected),
          " (from ", config_path, ")"));
    }
    absl::StatusOr<at::ScalarType> file_dtype = TorchDtype(*entry.file, *entry.tensor);
    if (!file_dtype.ok()) return file_dtype.status();
    used.insert(entry.tensor);
    pending.push_back(Pending{entry, *file_dtype, &param});
  }
  for (const SafetensorsCheckpoint::Entry& entry : (*checkpoint)->All()) {
    if (used.count(entry.tensor) || IsKnownBuffer(entry.tensor->name)) continue;
    if (entry.tensor->name == "lm_head.weight" || entry.tensor->name == "embed_out.weight") {
      continue;  // both present: the other one was taken
    }
    return absl::InvalidArgumentError(absl::StrCat(
        entry.file->path(), ": unexpected tensor '", entry.tensor->name,
        "': not a parameter of GPT-NeoX with this config"));
  }

  const Pending* current = nullptr;
  try {
    c10::InferenceMode guard;
    for (const Pending& p : pending) {
      current = &p;
      CopyInto(*p.entry.tensor, p.dtype, *p.param);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(
        current ? current->entry.file->path() : source, ": tensor '",
        current ? current->entry.tensor->name : "", "': ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(
        current ? current->entry.file->path() : source, ": tensor '",
        current ? current->entry.tensor->name : "", "': ", e.what()));
  }
  return model;
}

}  // namespace layerflow::worker
