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
//
// Files a job names are opened through common/confined_file.h only: a model
// folder must lie under one of the worker's model roots (ModelFilePolicy),
// every file name inside it is confined to it, every file is a regular file
// of bounded size, and errors name files relative to the checkpoint folder
// (never a worker's absolute path) without repeating their contents.
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
#include "common/confined_file.h"
#include "worker/model/model_config.h"

namespace layerflow::worker {

// The size limits of the files a job makes a worker read (worker flags,
// docs/operations.md). A larger file fails the job with INVALID_ARGUMENT
// naming the file, its size and the limit.
struct ModelFileLimits {
  // config.json, tokenizer.json and both index files.
  int64_t max_metadata_bytes = int64_t{64} << 20;
  // Each weights file: model.safetensors and its shards (memory-mapped),
  // pytorch_model.bin and its shards (read into memory).
  int64_t max_weights_file_bytes = int64_t{64} << 30;
  // A text data set's file (DatasetSpec.path), read into memory whole.
  int64_t max_data_file_bytes = int64_t{1} << 30;
};

// ---------------------------------------------------------------------------
// safetensors

enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
  kF8E4M3,
  kF8E5M2,
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
  // A file this process made or trusts (feature files, tests); errors name
  // `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // An opened checkpoint file (ConfinedDir::OpenFile); errors name
  // file.name(). The header may take at most kMaxSafetensorsHeaderBytes.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const ConfinedFile& file);
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
  // Maps `size` bytes of `fd` (the caller closes it) and parses the header;
  // errors name `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Map(int fd, size_t size,
                                                              const std::string& path);
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
  // by worker/model/model_checkpoint.h). The index's shard names must be
  // plain file names in the folder (INVALID_ARGUMENT naming the weight_map
  // key otherwise; PERMISSION_DENIED for a link leading outside).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const ConfinedDir& dir,
                                                                     const ModelFileLimits& limits);

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

// The safetensors format's own cap on the JSON header (the reference
// implementation refuses larger headers the same way).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// ---------------------------------------------------------------------------
// Where a model comes from.

// Where a worker may load models from (flags --model-root and
// --no-hf-cache-root of layerflow-worker).
struct ModelFilePolicy {
  // Folders whose checkpoint folders (at any depth) jobs may name: an
  // absolute path under one of them, or a path relative to one of them
  // (tried in order).
  std::vector<std::string> roots;
  // The Hugging Face hub caches (HfHubCacheDirs()) are roots too, and
  // ORG/NAME repo ids are looked up in them.
  bool hf_cache = true;
  ModelFileLimits limits;
};

// The roots a policy allows: policy.roots then the hub caches, each
// resolved with realpath; those that do not exist are left out.
struct ModelRoot {
  std::string given;     // lexically normalized, as configured
  std::string resolved;  // realpath
};
std::vector<ModelRoot> ResolveModelRoots(const ModelFilePolicy& policy);

// "a/./b/../c" -> "a/c", "/x/../.." -> "/", "" for a relative path that
// climbs above its start ("../x"). No file-system access.
std::string NormalizePathLexically(absl::string_view path);

// The hub caches searched, in order: $HF_HUB_CACHE, $HF_HOME/hub,
// ~/.cache/huggingface/hub (only those that are set).
std::vector<std::string> HfHubCacheDirs();

// "org/name" -> <cache>/models--org--name/snapshots/<rev> with <rev> from
// refs/main when present, else the only snapshot. No network. NOT_FOUND
// when absent (the message names no worker folder); FAILED_PRECONDITION
// for several snapshots and no refs/main.
struct HfSnapshot {
  std::string dir;   // the snapshot folder
  std::string repo;  // <cache>/models--org--name (the files' bound)
};
absl::StatusOr<HfSnapshot> ResolveHfCacheSnapshot(const std::string& repo_id);

struct ModelSource {
  enum class Kind { kCheckpoint, kPreset };
  Kind kind = Kind::kPreset;
  // kCheckpoint: the folder with config.json, its files confined to the
  // folder itself, or for a hub-cache snapshot to the repo's cache folder
  // (a snapshot's files are links into its blobs/).
  ConfinedDir folder;
  ModelPreset preset;  // kPreset
};

// A built-in preset name (no '/'), a checkpoint folder under one of the
// policy's roots (absolute, or relative to a root), or a Hugging Face repo
// id in the hub cache, tried in that order. Errors never name a resolved
// path:
//   PERMISSION_DENIED  an absolute path, a '../' or a symbolic link that
//                      leads outside every root (nothing outside is looked at)
//   NOT_FOUND          no such folder under the roots, not a preset, not in
//                      the cache; a folder without config.json
//   INVALID_ARGUMENT   a name with a NUL byte or longer than 4096 bytes
absl::StatusOr<ModelSource> ResolveModelSource(const std::string& name,
                                               const ModelFilePolicy& policy);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_CHECKPOINT_H_
