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
bool IsFile(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
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
    {SafetensorsDtype::kBool, "BOOL", 1},   {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},       {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},     {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},   {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},     {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF64, "F64", 8},     {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kU64, "U64", 8},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1},
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

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(path, ": stat: ", std::strerror(err)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": truncated safetensors file: ", size,
        " bytes, the header length alone takes 8"));
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  close(fd);  // the mapping keeps the file alive
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
  if (header_len > size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": header length ", header_len, " goes beyond the end of the file (",
        size, " bytes): truncated or not a safetensors file"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  Json root = Json::parse(header, header + header_len, nullptr,
                          /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": corrupt safetensors header (", header_len,
        " bytes): not a JSON object"));
  }
  const uint8_t* data = bytes + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  for (auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": __metadata__ is not an object"));
      }
      for (auto& [key, value] : entry.items()) {
        file->metadata_[key] = value.is_string() ? value.get<std::string>()
                                                 : value.dump();
      }
      continue;
    }
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", name, "': ", what));
    };
    if (!entry.is_object() || !entry.contains("dtype") ||
        !entry["dtype"].is_string() || !entry.contains("shape") ||
        !entry["shape"].is_array() || !entry.contains("data_offsets") ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return bad(absl::StrCat("malformed header entry ", entry.dump(),
                              " (need dtype, shape, data_offsets [begin, end])"));
    }
    SafetensorsTensor tensor;
    tensor.name = name;
    absl::StatusOr<SafetensorsDtype> dtype =
        ParseSafetensorsDtype(entry["dtype"].get<std::string>());
    if (!dtype.ok()) return bad(std::string(dtype.status().message()));
    tensor.dtype = *dtype;
    // numel in 128 bits' worth of care: a hostile shape must not overflow.
    uint64_t numel = 1;
    for (const Json& dim : entry["shape"]) {
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad(absl::StrCat("bad shape ", entry["shape"].dump()));
      }
      const uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d / 8) {
        return bad(absl::StrCat("shape ", entry["shape"].dump(), " is too large"));
      }
      numel *= d;
      tensor.shape.push_back(static_cast<int64_t>(d));
    }
    const Json& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return bad(absl::StrCat("bad data_offsets ", offsets.dump()));
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
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] hold ",
                              end - begin, " bytes but ", entry["dtype"].get<std::string>(),
                              " ", ShapeString(tensor.shape), " needs ", expected));
    }
    tensor.data = data + begin;
    tensor.nbytes = static_cast<size_t>(expected);
    file->tensors_.push_back(std::move(tensor));
  }
  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.name < b.name;
            });
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

const SafetensorsTensor* SafetensorsFile::Find(absl::string_view name) const {
  auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const SafetensorsTensor& t, absl::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const std::string& dir) {
  auto checkpoint = std::make_unique<SafetensorsCheckpoint>();
  const std::string single = JoinPath(dir, "model.safetensors");
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (IsFile(single)) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(single);
    if (!file.ok()) return file.status();
    checkpoint->source_ = single;
    checkpoint->files_.push_back(*std::move(file));
  } else if (IsFile(index_path)) {
    checkpoint->source_ = index_path;
    absl::StatusOr<std::string> text = ReadWholeFile(index_path);
    if (!text.ok()) return text.status();
    Json root = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded() || !root.is_object() || !root.contains("weight_map") ||
        !root["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": not a JSON object with a weight_map object"));
    }
    std::map<std::string, size_t> shard_of_file;
    for (auto& [tensor, shard] : root["weight_map"].items()) {
      if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map['", tensor, "'] must be a file name, got ",
            shard.dump()));
      }
      const std::string name = shard.get<std::string>();
      if (!shard_of_file.count(name)) {
        absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
            SafetensorsFile::Open(JoinPath(dir, name));
        if (!file.ok()) return file.status();
        shard_of_file[name] = checkpoint->files_.size();
        checkpoint->files_.push_back(*std::move(file));
      }
      const SafetensorsFile* file = checkpoint->files_[shard_of_file[name]].get();
      const SafetensorsTensor* t = file->Find(tensor);
      if (t == nullptr) {
        return absl::NotFoundError(absl::StrCat(
            file->path(), ": tensor '", tensor, "' not found (", index_path,
            " puts it in this shard)"));
      }
      checkpoint->index_[tensor] = Entry{file, t};
    }
    return checkpoint;
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or ",
                                            "model.safetensors.index.json"));
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

absl::Status WriteSafetensors(
    const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
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
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", t.name, "': ", t.nbytes, " bytes do not match ",
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

absl::StatusOr<std::string> ResolveHfCacheSnapshot(const std::string& repo_id) {
  const std::vector<std::string> parts = absl::StrSplit(repo_id, '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty() ||
      parts[0] == ".." || parts[1] == "..") {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", repo_id, "' is not a Hugging Face repo id (expected ORG/NAME)"));
  }
  const std::string folder = absl::StrCat("models--", parts[0], "--", parts[1]);
  std::vector<std::string> tried;
  for (const std::string& cache : HfHubCacheDirs()) {
    const std::string repo = JoinPath(cache, folder);
    tried.push_back(repo);
    if (!IsDirectory(repo)) continue;
    const std::string snapshots = JoinPath(repo, "snapshots");
    // refs/main holds the commit hash the default branch pointed at.
    absl::StatusOr<std::string> ref = ReadWholeFile(JoinPath(repo, "refs/main"));
    if (ref.ok()) {
      std::string rev(*ref);
      while (!rev.empty() && (rev.back() == '\n' || rev.back() == ' ')) rev.pop_back();
      const std::string snapshot = JoinPath(snapshots, rev);
      if (!rev.empty() && rev.find('/') == std::string::npos && IsDirectory(snapshot)) {
        return snapshot;
      }
      return absl::NotFoundError(absl::StrCat(
          repo, ": refs/main names revision '", rev, "' but ", snapshot,
          " does not exist (incomplete download?)"));
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
    if (revs.size() == 1) return JoinPath(snapshots, revs[0]);
    if (revs.size() > 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          repo, ": several snapshots (", absl::StrJoin(revs, ", "),
          ") and no refs/main; pass the snapshot folder itself"));
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "model '", repo_id, "' is not in the local Hugging Face cache (looked at: ",
      tried.empty() ? std::string("no cache: HF_HOME and HOME unset")
                    : absl::StrJoin(tried, ", "),
      "); this build never downloads: fetch it with `huggingface-cli download ",
      repo_id, "` or pass a checkpoint folder"));
}

absl::StatusOr<ModelSource> ResolveModelSource(const std::string& name) {
  ModelSource source;
  if (IsDirectory(name)) {
    if (!IsFile(JoinPath(name, "config.json"))) {
      return absl::NotFoundError(
          absl::StrCat(name, ": a folder without config.json is not a checkpoint"));
    }
    source.kind = ModelSource::Kind::kCheckpoint;
    source.dir = name;
    return source;
  }
  if (absl::StatusOr<ModelPreset> preset = FindModelPreset(name); preset.ok()) {
    source.kind = ModelSource::Kind::kPreset;
    source.preset = *std::move(preset);
    return source;
  }
  if (name.find('/') != std::string::npos && name[0] != '/' && name[0] != '.') {
    absl::StatusOr<std::string> dir = ResolveHfCacheSnapshot(name);
    if (!dir.ok()) return dir.status();
    source.kind = ModelSource::Kind::kCheckpoint;
    source.dir = *dir;
    return source;
  }
  return absl::NotFoundError(absl::StrCat(
      "model '", name, "': not a checkpoint folder, a preset (",
      FindModelPreset(name).status().message(), ") or an ORG/NAME repo id"));
}

}  // namespace layerflow::worker
