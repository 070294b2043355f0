// Hugging Face checkpoints without LibTorch: memory-mapped *.safetensors
// (single file or sharded with model.safetensors.index.json), a small
// safetensors writer, and the lookup of a model name in the local Hugging
// Face cache. config.json is worker/model/config_json.h; the tensor side
// (copying into a model's parameters) is worker/model/model_checkpoint.h.
//
// safetensors layout (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//    ..., "__metadata__": {"key": "value", ...}}
// then the data section; offsets are relative to its start. Every check
// below fails with INVALID_ARGUMENT naming the file (and the tensor).
#ifndef LAYERFLOW_WORKER_MODEL_CHECKPOINT_H_
#define LAYERFLOW_WORKER_MODEL_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/model_config.h"

namespace layerflow::worker {

// ---------------------------------------------------------------------------
// safetensors

enum class SafetensorsDtype {
  kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64,
  kU64, kF8E4M3, kF8E5M2,
};
// "F32" -> kF32, ...; INVALID_ARGUMENT for a name the format does not have.
absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name);
const char* SafetensorsDtypeName(SafetensorsDtype dtype);
size_t SafetensorsDtypeSize(SafetensorsDtype dtype);

std::string ShapeString(const std::vector<int64_t>& shape);  // "[3, 4]"

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping; may be unaligned
  size_t nbytes = 0;
  int64_t numel() const;
};

// One memory-mapped safetensors file. Tensor data stays valid while the
// object lives (read-only MAP_PRIVATE mapping: pages come in on first touch).
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Header order is not meaningful (JSON object); sorted by name.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(absl::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint folder's weights: model.safetensors, or the shards that
// model.safetensors.index.json's weight_map names (each shard must hold the
// tensors the index assigns to it).
class SafetensorsCheckpoint {
 public:
  // NOT_FOUND when the folder has neither file (pytorch_model.bin is read
  // by worker/model/model_checkpoint.h).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(
      const std::string& dir);

  // The file errors should name: model.safetensors or the index.
  const std::string& source() const { return source_; }
  struct Entry {
    const SafetensorsFile* file;
    const SafetensorsTensor* tensor;
  };
  // nullptr-filled Entry when absent.
  Entry Find(absl::string_view name) const;
  // Every tensor of every file.
  std::vector<Entry> All() const;

 private:
  std::string source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> index_;
};

struct SafetensorsWriteTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // little-endian, nbytes long
  size_t nbytes = 0;
};

// Writes `tensors` (in this order) and `metadata` to `path` (through a
// temporary file and a rename). The header is padded with spaces to a
// multiple of 8 bytes so every tensor starts 8-byte aligned. INVALID_ARGUMENT
// for a size that does not match the shape, or a duplicate name.
absl::Status WriteSafetensors(
    const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata = {});

// ---------------------------------------------------------------------------
// Where a model comes from.

// The hub caches searched, in order: $HF_HUB_CACHE, $HF_HOME/hub,
// ~/.cache/huggingface/hub (only those that are set).
std::vector<std::string> HfHubCacheDirs();

// "org/name" -> <cache>/models--org--name/snapshots/<rev> with <rev> from
// refs/main when present, else the only snapshot. No network. NOT_FOUND
// listing the places looked at; FAILED_PRECONDITION for several snapshots
// and no refs/main.
absl::StatusOr<std::string> ResolveHfCacheSnapshot(const std::string& repo_id);

struct ModelSource {
  enum class Kind { kCheckpoint, kPreset };
  Kind kind = Kind::kPreset;
  std::string dir;     // kCheckpoint: the folder with config.json
  ModelPreset preset;  // kPreset
};

// A folder (holding config.json), a built-in preset name, or a Hugging Face
// repo id found in the local cache, tried in that order.
absl::StatusOr<ModelSource> ResolveModelSource(const std::string& name);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_CHECKPOINT_H_
