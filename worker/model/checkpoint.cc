#include "worker/model/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

// safetensors data is little-endian; we hand the bytes to LibTorch as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors reading assumes a little-endian host");

namespace layerflow::worker {
namespace {

using Json = nlohmann::json;

// Not std::filesystem: this file links into LibTorch binaries, and
// libtorch.so exports incompatible std::filesystem symbols (DESIGN.md).
bool IsDirectory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// A key of a checkpoint file (a tensor name) as errors show it: cut short,
// since it comes from the file.
std::string ShownKey(absl::string_view key) {
  constexpr size_t kMax = 120;
  if (key.size() <= kMax) return std::string(key);
  return absl::StrCat(key.substr(0, kMax), "... (", key.size(), " bytes)");
}

}  // namespace

// ---------------------------------------------------------------------------
// safetensors

namespace {

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kBool, "BOOL", 1},      {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},          {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},        {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},      {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},        {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF64, "F64", 8},        {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kU64, "U64", 8},        {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1},
    {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
};

const DtypeInfo& Info(SafetensorsDtype dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.dtype == dtype) return info;
  }
  return kDtypes[0];  // unreachable: every enumerator is listed
}

}  // namespace

absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return info.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}
const char* SafetensorsDtypeName(SafetensorsDtype dtype) { return Info(dtype).name; }
size_t SafetensorsDtypeSize(SafetensorsDtype dtype) { return Info(dtype).size; }

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      Map(fd, static_cast<size_t>(st.st_size), path);
  close(fd);  // a mapping keeps the file alive
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const ConfinedFile& file) {
  return Map(file.fd(), static_cast<size_t>(file.size()), file.name());
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Map(int fd, size_t size,
                                                                      const std::string& path) {
  if (size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated safetensors file: ", size,
                                                   " bytes, the header length alone takes 8"));
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  if (map == MAP_FAILED) {
    return absl::Status(absl::ErrnoToStatusCode(map_err),
                        absl::StrCat(path, ": mmap: ", std::strerror(map_err)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian (static_assert above)
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_len, " is more than the format's limit of ",
                     kMaxSafetensorsHeaderBytes, " bytes: corrupt or not a safetensors file"));
  }
  if (header_len > size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " goes beyond the end of the file (", size,
                                                   " bytes): truncated or not a safetensors file"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  Json root = Json::parse(header, header + header_len, nullptr,
                          /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": corrupt safetensors header (",
                                                   header_len, " bytes): not a JSON object"));
  }
  const uint8_t* data = bytes + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  for (auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ is not an object"));
      }
      for (auto& [key, value] : entry.items()) {
        file->metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
      }
      continue;
    }
    // Not the binding itself: clang before 16 cannot capture one.
    const std::string& tensor_name = name;
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", ShownKey(tensor_name), "': ", what));
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() || !entry.contains("data_offsets") ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return bad("malformed header entry (need dtype, shape, data_offsets [begin, end])");
    }
    SafetensorsTensor tensor;
    tensor.name = name;
    absl::StatusOr<SafetensorsDtype> dtype =
        ParseSafetensorsDtype(entry["dtype"].get<std::string>());
    if (!dtype.ok()) {
      std::vector<std::string> names;
      for (const DtypeInfo& info : kDtypes) names.push_back(info.name);
      return bad(
          absl::StrCat("unknown dtype (the format's dtypes: ", absl::StrJoin(names, ", "), ")"));
    }
    tensor.dtype = *dtype;
    // numel in 128 bits' worth of care: a hostile shape must not overflow.
    uint64_t numel = 1;
    for (const Json& dim : entry["shape"]) {
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad("bad shape (expected an array of non-negative integers)");
      }
      const uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d / 8) {
        return bad(absl::StrCat("shape ", ShapeString(tensor.shape), " x ", d, " is too large"));
      }
      numel *= d;
      tensor.shape.push_back(static_cast<int64_t>(d));
    }
    const Json& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return bad("bad data_offsets (expected two non-negative integers)");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end,
                              "] out of range: the data section has ", data_size,
                              " bytes (truncated or corrupt file)"));
    }
    const uint64_t expected = numel * SafetensorsDtypeSize(tensor.dtype);
    if (end - begin != expected) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] hold ", end - begin,
                              " bytes but ", entry["dtype"].get<std::string>(), " ",
                              ShapeString(tensor.shape), " needs ", expected));
    }
    tensor.data = data + begin;
    tensor.nbytes = static_cast<size_t>(expected);
    file->tensors_.push_back(std::move(tensor));
  }
  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.name < b.name; });
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

const SafetensorsTensor* SafetensorsFile::Find(absl::string_view name) const {
  auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const SafetensorsTensor& t, absl::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const ConfinedDir& dir, const ModelFileLimits& limits) {
  auto checkpoint = std::make_unique<SafetensorsCheckpoint>();
  constexpr absl::string_view kSingle = "model.safetensors";
  constexpr absl::string_view kIndex = "model.safetensors.index.json";
  if (dir.Exists(kSingle)) {
    absl::StatusOr<ConfinedFile> opened = dir.OpenFile(kSingle, limits.max_weights_file_bytes);
    if (!opened.ok()) return opened.status();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(*opened);
    if (!file.ok()) return file.status();
    checkpoint->source_ = dir.DisplayName(kSingle);
    checkpoint->files_.push_back(*std::move(file));
  } else if (dir.Exists(kIndex)) {
    const std::string index_name = dir.DisplayName(kIndex);
    checkpoint->source_ = index_name;
    absl::StatusOr<std::string> text = dir.ReadFile(kIndex, limits.max_metadata_bytes);
    if (!text.ok()) return text.status();
    Json root = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded() || !root.is_object() || !root.contains("weight_map") ||
        !root["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_name, ": not a JSON object with a weight_map object"));
    }
    std::map<std::string, size_t> shard_of_file;
    for (auto& [tensor, shard] : root["weight_map"].items()) {
      const std::string field = absl::StrCat(index_name, ": weight_map['", ShownKey(tensor), "']");
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": must be a file name, got a JSON ", shard.type_name()));
      }
      const std::string name = shard.get<std::string>();
      if (absl::Status s = CheckPlainFileName(name, field); !s.ok()) return s;
      if (!shard_of_file.count(name)) {
        absl::StatusOr<ConfinedFile> opened = dir.OpenFile(name, limits.max_weights_file_bytes);
        if (!opened.ok()) {
          return absl::Status(opened.status().code(),
                              absl::StrCat(field, ": ", opened.status().message()));
        }
        absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(*opened);
        if (!file.ok()) return file.status();
        shard_of_file[name] = checkpoint->files_.size();
        checkpoint->files_.push_back(*std::move(file));
      }
      const SafetensorsFile* file = checkpoint->files_[shard_of_file[name]].get();
      const SafetensorsTensor* t = file->Find(tensor);
      if (t == nullptr) {
        return absl::NotFoundError(absl::StrCat(file->path(), ": tensor '", ShownKey(tensor),
                                                "' not found (", index_name,
                                                " puts it in this shard)"));
      }
      checkpoint->index_[tensor] = Entry{file, t};
    }
    return checkpoint;
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir.display().empty() ? std::string("checkpoint folder") : dir.display(),
                     ": no model.safetensors or model.safetensors.index.json"));
  }
  for (const auto& file : checkpoint->files_) {
    for (const SafetensorsTensor& t : file->tensors()) {
      checkpoint->index_[t.name] = Entry{file.get(), &t};
    }
  }
  return checkpoint;
}

SafetensorsCheckpoint::Entry SafetensorsCheckpoint::Find(absl::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return Entry{nullptr, nullptr};
  return it->second;
}

std::vector<SafetensorsCheckpoint::Entry> SafetensorsCheckpoint::All() const {
  std::vector<Entry> all;
  for (const auto& [name, entry] : index_) all.push_back(entry);
  return all;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<SafetensorsWriteTensor>& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata) {
  // ordered_json keeps the tensors in the order given (the file's data order).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const SafetensorsWriteTensor& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": duplicate or reserved tensor name '", t.name, "'"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel * SafetensorsDtypeSize(t.dtype) != t.nbytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "': ", t.nbytes, " bytes do not match ",
                       SafetensorsDtypeName(t.dtype), " ", ShapeString(t.shape)));
    }
    header[t.name] = {{"dtype", SafetensorsDtypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  // 8 (length) + header is a multiple of 8: every tensor's data (all sizes
  // are multiples of their element size) is aligned for direct use.
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::string tmp = path + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(tmp, ": cannot create: ", std::strerror(err)));
  }
  const uint64_t len = text.size();
  bool ok = std::fwrite(&len, 8, 1, out) == 1 &&
            std::fwrite(text.data(), 1, text.size(), out) == text.size();
  for (const SafetensorsWriteTensor& t : tensors) {
    if (!ok) break;
    ok = t.nbytes == 0 || std::fwrite(t.data, 1, t.nbytes, out) == t.nbytes;
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::Status(absl::ErrnoToStatusCode(err ? err : EIO),
                        absl::StrCat(path, ": write failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Model sources.

std::vector<std::string> HfHubCacheDirs() {
  // huggingface_hub's own order: HF_HUB_CACHE, then HF_HOME/hub, then the
  // default under the home directory.
  std::vector<std::string> dirs;
  if (const char* v = std::getenv("HF_HUB_CACHE"); v != nullptr && *v) dirs.push_back(v);
  if (const char* v = std::getenv("HF_HOME"); v != nullptr && *v) {
    dirs.push_back(JoinPath(v, "hub"));
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home) {
    dirs.push_back(JoinPath(home, ".cache/huggingface/hub"));
  }
  return dirs;
}

absl::StatusOr<HfSnapshot> ResolveHfCacheSnapshot(const std::string& repo_id) {
  const std::vector<std::string> parts = absl::StrSplit(repo_id, '/');
  if (parts.size() != 2 || !CheckPlainFileName(parts[0], "").ok() ||
      !CheckPlainFileName(parts[1], "").ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", repo_id, "' is not a Hugging Face repo id (expected ORG/NAME)"));
  }
  const std::string folder = absl::StrCat("models--", parts[0], "--", parts[1]);
  for (const std::string& cache : HfHubCacheDirs()) {
    const std::string repo = JoinPath(cache, folder);
    if (!IsDirectory(repo)) continue;
    absl::StatusOr<ConfinedDir> repo_dir = ConfinedDir::Open(repo, repo, repo_id);
    if (!repo_dir.ok()) return repo_dir.status();
    const std::string snapshots = JoinPath(repo, "snapshots");
    // refs/main holds the commit hash the default branch pointed at.
    if (repo_dir->Exists("refs/main")) {
      absl::StatusOr<std::string> ref = repo_dir->ReadFile("refs/main", 4096);
      if (!ref.ok()) return ref.status();
      std::string rev(*ref);
      while (!rev.empty() && (rev.back() == '\n' || rev.back() == ' ')) rev.pop_back();
      const std::string snapshot = JoinPath(snapshots, rev);
      if (CheckPlainFileName(rev, "").ok() && IsDirectory(snapshot)) {
        return HfSnapshot{snapshot, repo};
      }
      return absl::NotFoundError(
          absl::StrCat(repo_id,
                       ": refs/main names a revision without a snapshot folder in this "
                       "worker's Hugging Face cache (incomplete download?)"));
    }
    std::vector<std::string> revs;
    if (DIR* d = opendir(snapshots.c_str()); d != nullptr) {
      while (dirent* e = readdir(d)) {
        const std::string name = e->d_name;
        if (name != "." && name != ".." && IsDirectory(JoinPath(snapshots, name))) {
          revs.push_back(name);
        }
      }
      closedir(d);
    }
    std::sort(revs.begin(), revs.end());
    if (revs.size() == 1) return HfSnapshot{JoinPath(snapshots, revs[0]), repo};
    if (revs.size() > 1) {
      return absl::FailedPreconditionError(
          absl::StrCat(repo_id, ": several snapshots (", absl::StrJoin(revs, ", "),
                       ") and no refs/main in this worker's Hugging Face cache; pass the snapshot "
                       "folder itself"));
    }
  }
  return absl::NotFoundError(
      absl::StrCat("model '", repo_id, "' is not in this worker's Hugging Face cache",
                   HfHubCacheDirs().empty() ? " (no cache: HF_HOME and HOME unset)" : "",
                   "; this build never downloads: fetch it with `huggingface-cli download ",
                   repo_id, "` or pass a checkpoint folder under the worker's --model-root"));
}

std::string NormalizePathLexically(absl::string_view path) {
  const bool absolute = !path.empty() && path.front() == '/';
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) {
        parts.pop_back();
      } else if (!absolute) {
        return "";  // climbs above a relative start
      }
      continue;
    }
    parts.push_back(part);
  }
  const std::string joined = absl::StrJoin(parts, "/");
  if (absolute) return "/" + joined;
  return joined.empty() ? "." : joined;
}

std::vector<ModelRoot> ResolveModelRoots(const ModelFilePolicy& policy) {
  std::vector<std::string> given = policy.roots;
  if (policy.hf_cache) {
    for (const std::string& dir : HfHubCacheDirs()) given.push_back(dir);
  }
  std::vector<ModelRoot> roots;
  for (const std::string& root : given) {
    absl::StatusOr<std::string> resolved = RealPath(root, "model root");
    if (!resolved.ok() || !IsDirectory(*resolved)) continue;
    roots.push_back(ModelRoot{NormalizePathLexically(root), *std::move(resolved)});
  }
  return roots;
}

namespace {

// The checkpoint folder `path` (as lexically inside `root`): resolved,
// checked to stay inside a root, holding config.json.
absl::StatusOr<ModelSource> CheckpointUnder(const std::string& path, const std::string& name,
                                            const std::vector<ModelRoot>& roots) {
  absl::StatusOr<std::string> resolved = RealPath(path, absl::StrCat("model '", name, "'"));
  if (!resolved.ok()) return resolved.status();
  bool inside = false;
  for (const ModelRoot& root : roots) inside = inside || PathWithin(*resolved, root.resolved);
  if (!inside) {
    return absl::PermissionDeniedError(
        absl::StrCat("model '", name,
                     "': a symbolic link leads outside this worker's model folders "
                     "(--model-root, the Hugging Face cache)"));
  }
  if (!IsDirectory(*resolved)) {
    return absl::NotFoundError(absl::StrCat("model '", name, "': not a checkpoint folder"));
  }
  ModelSource source;
  source.kind = ModelSource::Kind::kCheckpoint;
  absl::StatusOr<ConfinedDir> folder = ConfinedDir::Open(*resolved, *resolved);
  if (!folder.ok()) return folder.status();
  if (!folder->Exists("config.json")) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "': a folder without config.json is not a checkpoint"));
  }
  source.folder = *std::move(folder);
  return source;
}

}  // namespace

absl::StatusOr<ModelSource> ResolveModelSource(const std::string& name,
                                               const ModelFilePolicy& policy) {
  ModelSource source;
  if (name.find('\0') != std::string::npos || name.size() > 4096) {
    return absl::InvalidArgumentError("model: a name with a NUL byte or over 4096 bytes");
  }
  const bool is_path = name.find('/') != std::string::npos;
  if (!is_path) {
    absl::StatusOr<ModelPreset> preset = FindModelPreset(name);
    if (!preset.ok()) {
      return absl::NotFoundError(
          absl::StrCat("model '", name, "': not a preset (", preset.status().message(),
                       "); a checkpoint is a folder path or an ORG/NAME repo id, with a '/'"));
    }
    source.kind = ModelSource::Kind::kPreset;
    source.preset = *std::move(preset);
    return source;
  }
  const std::vector<ModelRoot> roots = ResolveModelRoots(policy);
  const std::string outside =
      absl::StrCat("model '", name,
                   "': outside this worker's model folders (--model-root, the Hugging "
                   "Face cache); nothing outside them is read");
  if (name.front() == '/') {
    // Lexically first, so that nothing outside the roots is even looked at.
    const std::string lexical = NormalizePathLexically(name);
    for (const ModelRoot& root : roots) {
      if (PathWithin(lexical, root.given) || PathWithin(lexical, root.resolved)) {
        return CheckpointUnder(lexical, name, roots);
      }
    }
    return absl::PermissionDeniedError(outside);
  }
  // Relative: a folder under one of the roots, in order.
  const std::string relative = NormalizePathLexically(name);
  if (relative.empty() || relative == ".") return absl::PermissionDeniedError(outside);
  for (const ModelRoot& root : roots) {
    const std::string candidate = JoinPath(root.resolved, relative);
    if (IsDirectory(candidate)) return CheckpointUnder(candidate, name, roots);
  }
  const std::vector<std::string> parts = absl::StrSplit(name, '/');
  if (policy.hf_cache && parts.size() == 2 && name[0] != '.') {
    absl::StatusOr<HfSnapshot> snapshot = ResolveHfCacheSnapshot(name);
    if (!snapshot.ok()) return snapshot.status();
    absl::StatusOr<ConfinedDir> folder = ConfinedDir::Open(snapshot->dir, snapshot->repo);
    if (!folder.ok()) return folder.status();
    if (!folder->Exists("config.json")) {
      return absl::NotFoundError(
          absl::StrCat("model '", name, "': the cached snapshot has no config.json"));
    }
    source.kind = ModelSource::Kind::kCheckpoint;
    source.folder = *std::move(folder);
    return source;
  }
  return absl::NotFoundError(absl::StrCat(
      "model '", name,
      "': no such checkpoint folder under this worker's model folders "
      "(--model-root",
      policy.hf_cache ? ", the Hugging Face cache" : "", ") and not an ORG/NAME repo id"));
}

}  // namespace layerflow::worker
