// The coordinator's artifact store (DESIGN.md: features of EXTRACT jobs for
// the PROBE jobs that depend on them; no shared file system needed).
//
// Artifacts are immutable byte strings named like relative paths
// ("<job_id>/features/000003"), kept as files under one local directory:
//   ROOT/<name>          the bytes
//   ROOT/.meta/<name>    the SHA-256 (hex) of the bytes
//   ROOT/.tmp/           uploads in progress
// An upload is written to ROOT/.tmp and renamed into place only when its
// size, every chunk's CRC-32C and the final SHA-256 verify, so a listed
// artifact is always complete. Uploading a name again replaces it (a retried
// job re-uploads its features). Limits: a total quota over all stored
// artifacts and a per-artifact maximum (RESOURCE_EXHAUSTED). Thread-safe.
#ifndef LAYERFLOW_SERVER_ARTIFACTS_ARTIFACT_STORE_H_
#define LAYERFLOW_SERVER_ARTIFACTS_ARTIFACT_STORE_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "layerflow/v1/worker.pb.h"
#include "common/checksum.h"

namespace layerflow::artifacts {

inline constexpr int64_t kDefaultArtifactQuotaBytes = int64_t{64} << 30;  // 64 GiB
inline constexpr int64_t kDefaultArtifactMaxBytes = int64_t{4} << 30;     // 4 GiB
// Data bytes per download message.
inline constexpr int64_t kDownloadChunkBytes = int64_t{1} << 20;  // 1 MiB
inline constexpr size_t kMaxArtifactNameLength = 512;

struct ArtifactStoreOptions {
  // Created (with parents) if missing.
  std::string root = "artifacts";
  // Total bytes of all stored artifacts (plus uploads in progress); 0 means
  // unlimited.
  int64_t quota_bytes = kDefaultArtifactQuotaBytes;
  // Bytes of one artifact; 0 means unlimited.
  int64_t max_artifact_bytes = kDefaultArtifactMaxBytes;
  // Called with bytes_stored() after Open and after every change (the
  // coordinator's layerflow_artifact_bytes gauge). May be empty.
  std::function<void(int64_t)> on_bytes_stored;
};

struct ArtifactMeta {
  std::string name;
  int64_t bytes = 0;
  std::string sha256;  // lowercase hex
};

// OK for 1-512 characters of [A-Za-z0-9._-/] forming a relative path whose
// components are non-empty and do not start with '.' (so no "." or "..",
// and the store's own .meta and .tmp cannot be named); INVALID_ARGUMENT
// naming `field` otherwise.
absl::Status ValidateArtifactName(absl::string_view name, absl::string_view field = "name");

class ArtifactStore {
 public:
  class Upload;

  // Opens (or creates) the store: clears leftover uploads in ROOT/.tmp and
  // indexes the stored artifacts (recomputing a missing SHA-256).
  static absl::StatusOr<std::unique_ptr<ArtifactStore>> Open(ArtifactStoreOptions options);
  ~ArtifactStore();

  // Starts an upload of `total_bytes` bytes and reserves them against the
  // quota. INVALID_ARGUMENT for a bad name or negative size,
  // RESOURCE_EXHAUSTED over the per-artifact maximum or the quota.
  absl::StatusOr<std::unique_ptr<Upload>> BeginUpload(const std::string& name, int64_t total_bytes);

  // NOT_FOUND for an artifact that does not exist.
  absl::StatusOr<ArtifactMeta> Stat(const std::string& name) const;
  // Artifacts whose name starts with `prefix`, sorted by name.
  std::vector<ArtifactMeta> List(absl::string_view prefix) const;
  // Opens an artifact for reading: the file and its meta, consistent even
  // if the name is replaced meanwhile. NOT_FOUND when missing.
  absl::StatusOr<std::pair<ArtifactMeta, std::FILE*>> OpenForRead(const std::string& name) const;

  int64_t bytes_stored() const;
  const ArtifactStoreOptions& options() const { return options_; }

 private:
  explicit ArtifactStore(ArtifactStoreOptions options);
  absl::Status Index();
  void Release(int64_t reserved);
  absl::StatusOr<ArtifactMeta> CommitUpload(const std::string& temp_path, const std::string& name,
                                            int64_t bytes, const std::string& sha256,
                                            int64_t reserved);
  void Published();

  const ArtifactStoreOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, ArtifactMeta> index_ ABSL_GUARDED_BY(mu_);
  int64_t stored_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_temp_ ABSL_GUARDED_BY(mu_) = 0;
};

// One upload in progress. Destroying it before Commit succeeds discards the
// temporary file and releases the reservation.
class ArtifactStore::Upload {
 public:
  ~Upload();
  Upload(const Upload&) = delete;
  Upload& operator=(const Upload&) = delete;

  // Appends `data`, which must start at received() (INVALID_ARGUMENT
  // otherwise, or when it runs past total_bytes) and whose CRC-32C must be
  // `crc32c` (DATA_LOSS otherwise: nothing is written).
  absl::Status Append(int64_t offset, absl::string_view data, uint32_t crc32c);
  // Checks that every byte arrived and that the SHA-256 matches (DATA_LOSS
  // otherwise), then renames the file into place.
  absl::StatusOr<ArtifactMeta> Commit(absl::string_view sha256_hex);

  const std::string& name() const { return name_; }
  int64_t total_bytes() const { return total_bytes_; }
  int64_t received() const { return received_; }

 private:
  friend class ArtifactStore;
  Upload(ArtifactStore* store, std::string name, int64_t total_bytes, std::string temp_path,
         std::FILE* file);

  ArtifactStore* const store_;
  const std::string name_;
  const int64_t total_bytes_;
  const std::string temp_path_;
  std::FILE* file_;
  int64_t received_ = 0;
  Sha256 sha_;
  bool done_ = false;
};

// The UploadArtifact protocol (worker.proto, ArtifactChunk) over messages,
// without gRPC: the service feeds it the stream. The first message names
// the artifact, the job and lease (checked with `check_lease`, also again
// before the rename) and total_bytes; later messages may repeat those
// fields but not change them; every message's data starts at `offset`
// with its CRC-32C; the SHA-256 comes with the last one (or any message).
class UploadSession {
 public:
  using LeaseCheck =
      std::function<absl::Status(const std::string& job_id, const std::string& lease_id)>;
  UploadSession(ArtifactStore* store, LeaseCheck check_lease);

  absl::Status OnChunk(const layerflow::v1::ArtifactChunk& chunk);
  // The client finished sending: verify and publish. INVALID_ARGUMENT for
  // an empty stream or no SHA-256, DATA_LOSS for missing bytes or a wrong
  // SHA-256, ABORTED when the lease is no longer live.
  absl::StatusOr<layerflow::v1::ArtifactInfo> Finish();

 private:
  ArtifactStore* const store_;
  const LeaseCheck check_lease_;
  std::unique_ptr<ArtifactStore::Upload> upload_;
  std::string job_id_, lease_id_, sha256_;
  int64_t messages_ = 0;
};

// The DownloadArtifact stream: Next fills the next message (the first with
// name, total_bytes and sha256; each with up to kDownloadChunkBytes of data
// at its offset and their CRC-32C) and returns false after the last. An
// empty artifact is one message without data.
class DownloadSession {
 public:
  // NOT_FOUND for a missing artifact, INVALID_ARGUMENT for a bad name.
  static absl::StatusOr<std::unique_ptr<DownloadSession>> Open(
      const ArtifactStore& store, const std::string& name,
      int64_t chunk_bytes = kDownloadChunkBytes);
  ~DownloadSession();

  // DATA_LOSS when the file cannot be read back in full.
  absl::StatusOr<bool> Next(layerflow::v1::ArtifactChunk* out);

 private:
  DownloadSession(ArtifactMeta meta, std::FILE* file, int64_t chunk_bytes);
  const ArtifactMeta meta_;
  std::FILE* file_;
  const int64_t chunk_bytes_;
  int64_t offset_ = 0;
  bool first_ = true;
};

}  // namespace layerflow::artifacts

#endif  // LAYERFLOW_SERVER_ARTIFACTS_ARTIFACT_STORE_H_
