#include "server/artifacts/artifact_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace layerflow::artifacts {
namespace {

namespace v1 = ::layerflow::v1;

constexpr char kMetaDir[] = ".meta";
constexpr char kTempDir[] = ".tmp";

// POSIX, not std::filesystem: binaries that load libtorch.so get its own,
// incompatible std::filesystem symbols (client/sweep_file.cc says more).
absl::Status ErrnoError(int error, absl::string_view what, absl::string_view path) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat(what, " ", path, ": ", std::strerror(error)));
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// mkdir -p.
absl::Status MakeDirs(const std::string& path) {
  if (path.empty() || path == "." || path == "/") return absl::OkStatus();
  struct stat info;
  if (stat(path.c_str(), &info) == 0) {
    if (S_ISDIR(info.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("artifact store: ", path, " exists and is not a directory"));
  }
  LF_RETURN_IF_ERROR(MakeDirs(Dirname(path)));
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "artifact store: cannot create directory", path);
  }
  return absl::OkStatus();
}

// Relative paths of the regular files under dir/rel, recursively, skipping
// entries starting with '.' at the top level (the store's own folders).
absl::Status ListFiles(const std::string& root, const std::string& rel,
                       std::vector<std::string>* out) {
  const std::string dir = rel.empty() ? root : absl::StrCat(root, "/", rel);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoError(errno, "artifact store: cannot list", dir);
  absl::Status status;
  while (struct dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (rel.empty() && name[0] == '.') continue;
    const std::string child = rel.empty() ? name : absl::StrCat(rel, "/", name);
    struct stat info;
    if (stat(absl::StrCat(root, "/", child).c_str(), &info) != 0) continue;
    if (S_ISDIR(info.st_mode)) {
      status.Update(ListFiles(root, child, out));
    } else if (S_ISREG(info.st_mode)) {
      out->push_back(child);
    }
  }
  closedir(d);
  return status;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoError(errno, "cannot open", path);
  std::string text;
  char buffer[256];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) text.append(buffer, n);
  std::fclose(f);
  return text;
}

absl::StatusOr<std::string> HashFile(const std::string& path, int64_t* bytes) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoError(errno, "cannot open", path);
  Sha256 sha;
  std::string buffer(1 << 16, '\0');
  size_t n;
  *bytes = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0) {
    sha.Update(absl::string_view(buffer.data(), n));
    *bytes += static_cast<int64_t>(n);
  }
  std::fclose(f);
  return sha.HexDigest();
}

// Writes `text` to `path` through a temporary file and a rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& temp,
                                 absl::string_view text) {
  std::FILE* f = std::fopen(temp.c_str(), "wb");
  if (f == nullptr) return ErrnoError(errno, "artifact store: cannot write", temp);
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    unlink(temp.c_str());
    return absl::InternalError(absl::StrCat("artifact store: cannot write ", temp));
  }
  LF_RETURN_IF_ERROR(MakeDirs(Dirname(path)));
  if (rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    unlink(temp.c_str());
    return ErrnoError(error, "artifact store: cannot rename into", path);
  }
  return absl::OkStatus();
}

bool ValidNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-' || c == '/';
}

}  // namespace

absl::Status ValidateArtifactName(absl::string_view name, absl::string_view field) {
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
  };
  if (name.empty()) return invalid("required");
  if (name.size() > kMaxArtifactNameLength) {
    return invalid(absl::StrCat("longer than ", kMaxArtifactNameLength, " characters"));
  }
  for (char c : name) {
    if (!ValidNameChar(c)) {
      return invalid(absl::StrCat("'", name,
                                  "' may contain only letters, digits, '_', '.', "
                                  "'-' and '/'"));
    }
  }
  if (name.front() == '/') {
    return invalid(absl::StrCat("'", name, "' is an absolute path"));
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty()) return invalid(absl::StrCat("'", name, "' has an empty path component"));
    if (part == "..") return invalid(absl::StrCat("'", name, "' contains '..'"));
    if (part.front() == '.') {
      return invalid(absl::StrCat("'", name, "': a path component starts with '.'"));
    }
  }
  return absl::OkStatus();
}

// --- ArtifactStore -----------------------------------------------------------

ArtifactStore::ArtifactStore(ArtifactStoreOptions options) : options_(std::move(options)) {}

ArtifactStore::~ArtifactStore() = default;

absl::StatusOr<std::unique_ptr<ArtifactStore>> ArtifactStore::Open(ArtifactStoreOptions options) {
  if (options.root.empty()) {
    return absl::InvalidArgumentError("artifact store: root directory required");
  }
  if (options.quota_bytes < 0 || options.max_artifact_bytes < 0) {
    return absl::InvalidArgumentError(
        "artifact store: quota and maximum size must be >= 0 (0: unlimited)");
  }
  while (options.root.size() > 1 && options.root.back() == '/') options.root.pop_back();
  std::unique_ptr<ArtifactStore> store(new ArtifactStore(std::move(options)));
  LF_RETURN_IF_ERROR(store->Index());
  store->Published();
  return store;
}

absl::Status ArtifactStore::Index() {
  const std::string& root = options_.root;
  LF_RETURN_IF_ERROR(MakeDirs(root));
  const std::string temp_dir = absl::StrCat(root, "/", kTempDir);
  LF_RETURN_IF_ERROR(MakeDirs(temp_dir));
  LF_RETURN_IF_ERROR(MakeDirs(absl::StrCat(root, "/", kMetaDir)));
  // Uploads that were in progress when the process stopped are gone.
  std::vector<std::string> leftovers;
  LF_RETURN_IF_ERROR(ListFiles(temp_dir, "", &leftovers));
  for (const std::string& f : leftovers) unlink(absl::StrCat(temp_dir, "/", f).c_str());

  std::vector<std::string> files;
  LF_RETURN_IF_ERROR(ListFiles(root, "", &files));
  absl::MutexLock lock(&mu_);
  for (const std::string& name : files) {
    if (!ValidateArtifactName(name).ok()) continue;  // not ours
    const std::string path = absl::StrCat(root, "/", name);
    const std::string meta_path = absl::StrCat(root, "/", kMetaDir, "/", name);
    struct stat info;
    if (stat(path.c_str(), &info) != 0) continue;
    ArtifactMeta meta{name, static_cast<int64_t>(info.st_size), ""};
    absl::StatusOr<std::string> sha = ReadSmallFile(meta_path);
    if (sha.ok() && sha->size() == 64) {
      meta.sha256 = *sha;
    } else {
      // Written by hand or the meta was lost: recompute and keep it.
      int64_t bytes = 0;
      LF_ASSIGN_OR_RETURN(meta.sha256, HashFile(path, &bytes));
      meta.bytes = bytes;
      LF_RETURN_IF_ERROR(WriteFileAtomically(
          meta_path, absl::StrCat(temp_dir, "/meta-", next_temp_++), meta.sha256));
    }
    stored_bytes_ += meta.bytes;
    index_[name] = std::move(meta);
  }
  return absl::OkStatus();
}

void ArtifactStore::Published() {
  if (options_.on_bytes_stored) options_.on_bytes_stored(bytes_stored());
}

int64_t ArtifactStore::bytes_stored() const {
  absl::MutexLock lock(&mu_);
  return stored_bytes_;
}

absl::StatusOr<std::unique_ptr<ArtifactStore::Upload>> ArtifactStore::BeginUpload(
    const std::string& name, int64_t total_bytes) {
  LF_RETURN_IF_ERROR(ValidateArtifactName(name, "chunk.name"));
  if (total_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk.total_bytes: ", total_bytes, " is negative"));
  }
  if (options_.max_artifact_bytes > 0 && total_bytes > options_.max_artifact_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "artifact ", name, ": ", total_bytes, " bytes exceed the per-artifact limit of ",
        options_.max_artifact_bytes, " bytes (--artifact-max-bytes)"));
  }
  std::string temp_path;
  {
    absl::MutexLock lock(&mu_);
    // Replacing an artifact frees its old bytes.
    auto existing = index_.find(name);
    const int64_t replaced = existing == index_.end() ? 0 : existing->second.bytes;
    if (options_.quota_bytes > 0 &&
        stored_bytes_ + reserved_bytes_ - replaced + total_bytes > options_.quota_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "artifact ", name, ": ", total_bytes, " more bytes would exceed the quota of ",
          options_.quota_bytes, " bytes (", stored_bytes_, " stored, ", reserved_bytes_,
          " being uploaded; --artifact-quota-bytes)"));
    }
    reserved_bytes_ += total_bytes;
    temp_path = absl::StrCat(options_.root, "/", kTempDir, "/upload-", getpid(), "-", next_temp_++);
  }
  std::FILE* file = std::fopen(temp_path.c_str(), "wb");
  if (file == nullptr) {
    const int error = errno;
    Release(total_bytes);
    return ErrnoError(error, "artifact store: cannot create", temp_path);
  }
  return std::unique_ptr<Upload>(new Upload(this, name, total_bytes, temp_path, file));
}

void ArtifactStore::Release(int64_t reserved) {
  absl::MutexLock lock(&mu_);
  reserved_bytes_ -= reserved;
}

absl::StatusOr<ArtifactMeta> ArtifactStore::CommitUpload(const std::string& temp_path,
                                                         const std::string& name, int64_t bytes,
                                                         const std::string& sha256,
                                                         int64_t reserved) {
  const std::string path = absl::StrCat(options_.root, "/", name);
  const std::string meta_path = absl::StrCat(options_.root, "/", kMetaDir, "/", name);
  ArtifactMeta meta{name, bytes, sha256};
  {
    absl::MutexLock lock(&mu_);
    reserved_bytes_ -= reserved;
    // The meta first: a crash between the two renames leaves a meta without
    // data (never listed), not data with a stale checksum.
    LF_RETURN_IF_ERROR(WriteFileAtomically(
        meta_path,
        absl::StrCat(options_.root, "/", kTempDir, "/meta-", getpid(), "-", next_temp_++), sha256));
    LF_RETURN_IF_ERROR(MakeDirs(Dirname(path)));
    if (rename(temp_path.c_str(), path.c_str()) != 0) {
      return ErrnoError(errno, "artifact store: cannot rename into", path);
    }
    auto [it, inserted] = index_.try_emplace(name, meta);
    if (!inserted) {
      stored_bytes_ -= it->second.bytes;
      it->second = meta;
    }
    stored_bytes_ += bytes;
  }
  Published();
  return meta;
}

absl::StatusOr<ArtifactMeta> ArtifactStore::Stat(const std::string& name) const {
  LF_RETURN_IF_ERROR(ValidateArtifactName(name));
  absl::MutexLock lock(&mu_);
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("no artifact '", name, "'"));
  }
  return it->second;
}

std::vector<ArtifactMeta> ArtifactStore::List(absl::string_view prefix) const {
  absl::MutexLock lock(&mu_);
  std::vector<ArtifactMeta> out;
  for (auto it = index_.lower_bound(std::string(prefix));
       it != index_.end() && absl::StartsWith(it->first, prefix); ++it) {
    out.push_back(it->second);
  }
  return out;
}

absl::StatusOr<std::pair<ArtifactMeta, std::FILE*>> ArtifactStore::OpenForRead(
    const std::string& name) const {
  LF_RETURN_IF_ERROR(ValidateArtifactName(name));
  absl::MutexLock lock(&mu_);  // no rename between the lookup and the open
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("no artifact '", name, "'"));
  }
  const std::string path = absl::StrCat(options_.root, "/", name);
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return ErrnoError(errno, "artifact store: cannot open", path);
  }
  return std::make_pair(it->second, file);
}

// --- Upload ------------------------------------------------------------------

ArtifactStore::Upload::Upload(ArtifactStore* store, std::string name, int64_t total_bytes,
                              std::string temp_path, std::FILE* file)
    : store_(store),
      name_(std::move(name)),
      total_bytes_(total_bytes),
      temp_path_(std::move(temp_path)),
      file_(file) {}

ArtifactStore::Upload::~Upload() {
  if (file_ != nullptr) std::fclose(file_);
  if (!done_) {
    unlink(temp_path_.c_str());
    store_->Release(total_bytes_);
  }
}

absl::Status ArtifactStore::Upload::Append(int64_t offset, absl::string_view data,
                                           uint32_t crc32c) {
  if (done_) return absl::FailedPreconditionError("upload already committed");
  if (offset != received_) {
    return absl::InvalidArgumentError(absl::StrCat("chunk.offset: ", offset, " but ", received_,
                                                   " bytes of ", name_,
                                                   " were received (chunks must arrive in order)"));
  }
  if (static_cast<int64_t>(data.size()) > total_bytes_ - received_) {
    return absl::InvalidArgumentError(absl::StrCat("chunk.data: ", data.size(), " bytes at offset ",
                                                   offset, " run past total_bytes ", total_bytes_,
                                                   " of ", name_));
  }
  if (const uint32_t actual = Crc32c(data); actual != crc32c) {
    return absl::DataLossError(absl::StrCat("chunk.crc32c: ", crc32c, " but the ", data.size(),
                                            " bytes at offset ", offset, " of ", name_,
                                            " have CRC-32C ", actual));
  }
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
    return absl::InternalError(
        absl::StrCat("artifact store: cannot write ", temp_path_, ": ", std::strerror(errno)));
  }
  sha_.Update(data);
  received_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<ArtifactMeta> ArtifactStore::Upload::Commit(absl::string_view sha256_hex) {
  if (done_) return absl::FailedPreconditionError("upload already committed");
  if (received_ != total_bytes_) {
    return absl::DataLossError(
        absl::StrCat("artifact ", name_, ": received ", received_, " of ", total_bytes_, " bytes"));
  }
  const std::string actual = sha_.HexDigest();
  if (actual != sha256_hex) {
    return absl::DataLossError(absl::StrCat("chunk.sha256: '", sha256_hex, "' but the ", received_,
                                            " bytes of ", name_, " have SHA-256 ", actual));
  }
  // Durable before it is visible.
  const bool flushed = std::fflush(file_) == 0 && fsync(fileno(file_)) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    return absl::InternalError(absl::StrCat("artifact store: cannot write ", temp_path_));
  }
  LF_ASSIGN_OR_RETURN(ArtifactMeta meta,
                      store_->CommitUpload(temp_path_, name_, received_, actual, total_bytes_));
  done_ = true;
  return meta;
}

// --- UploadSession -------------------------------------------------------------

UploadSession::UploadSession(ArtifactStore* store, LeaseCheck check_lease)
    : store_(store), check_lease_(std::move(check_lease)) {}

absl::Status UploadSession::OnChunk(const v1::ArtifactChunk& chunk) {
  ++messages_;
  if (upload_ == nullptr) {
    if (chunk.job_id().empty()) {
      return absl::InvalidArgumentError("chunk.job_id: required in the first message");
    }
    if (chunk.lease_id().empty()) {
      return absl::InvalidArgumentError("chunk.lease_id: required in the first message");
    }
    LF_RETURN_IF_ERROR(check_lease_(chunk.job_id(), chunk.lease_id()));
    job_id_ = chunk.job_id();
    lease_id_ = chunk.lease_id();
    LF_ASSIGN_OR_RETURN(upload_, store_->BeginUpload(chunk.name(), chunk.total_bytes()));
  } else {
    auto same = [](absl::string_view field, const std::string& got,
                   const std::string& want) -> absl::Status {
      if (got.empty() || got == want) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk.", field, ": '", got, "' differs from the first message's '", want, "'"));
    };
    LF_RETURN_IF_ERROR(same("name", chunk.name(), upload_->name()));
    LF_RETURN_IF_ERROR(same("job_id", chunk.job_id(), job_id_));
    LF_RETURN_IF_ERROR(same("lease_id", chunk.lease_id(), lease_id_));
    if (chunk.total_bytes() != 0 && chunk.total_bytes() != upload_->total_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("chunk.total_bytes: ", chunk.total_bytes(),
                                                     " differs from the first message's ",
                                                     upload_->total_bytes()));
    }
  }
  LF_RETURN_IF_ERROR(upload_->Append(chunk.offset(), chunk.data(), chunk.crc32c()));
  if (!chunk.sha256().empty()) sha256_ = chunk.sha256();
  return absl::OkStatus();
}

absl::StatusOr<v1::ArtifactInfo> UploadSession::Finish() {
  if (upload_ == nullptr) {
    return absl::InvalidArgumentError("empty upload: no ArtifactChunk was sent");
  }
  if (sha256_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk.sha256: required (with the last message of ", upload_->name(), ")"));
  }
  // The job may have lost its lease while the bytes were streaming.
  LF_RETURN_IF_ERROR(check_lease_(job_id_, lease_id_));
  LF_ASSIGN_OR_RETURN(ArtifactMeta meta, upload_->Commit(sha256_));
  upload_.reset();
  v1::ArtifactInfo info;
  info.set_name(meta.name);
  info.set_bytes(meta.bytes);
  info.set_sha256(meta.sha256);
  return info;
}

// --- DownloadSession -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<DownloadSession>> DownloadSession::Open(const ArtifactStore& store,
                                                                       const std::string& name,
                                                                       int64_t chunk_bytes) {
  LF_RETURN_IF_ERROR(ValidateArtifactName(name));
  LF_ASSIGN_OR_RETURN(auto opened, store.OpenForRead(name));
  return std::unique_ptr<DownloadSession>(new DownloadSession(
      std::move(opened.first), opened.second, chunk_bytes > 0 ? chunk_bytes : kDownloadChunkBytes));
}

DownloadSession::DownloadSession(ArtifactMeta meta, std::FILE* file, int64_t chunk_bytes)
    : meta_(std::move(meta)), file_(file), chunk_bytes_(chunk_bytes) {}

DownloadSession::~DownloadSession() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::StatusOr<bool> DownloadSession::Next(v1::ArtifactChunk* out) {
  if (!first_ && offset_ >= meta_.bytes) return false;
  out->Clear();
  if (first_) {
    out->set_name(meta_.name);
    out->set_total_bytes(meta_.bytes);
    out->set_sha256(meta_.sha256);
  }
  const int64_t n = std::min(chunk_bytes_, meta_.bytes - offset_);
  std::string* data = out->mutable_data();
  data->resize(static_cast<size_t>(n));
  if (n > 0 &&
      std::fread(data->data(), 1, static_cast<size_t>(n), file_) != static_cast<size_t>(n)) {
    return absl::DataLossError(
        absl::StrCat("artifact ", meta_.name, ": cannot read ", n, " bytes at offset ", offset_));
  }
  out->set_offset(offset_);
  out->set_crc32c(Crc32c(*data));
  offset_ += n;
  first_ = false;
  return true;
}

}  // namespace layerflow::artifacts
