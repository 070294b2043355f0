// The worker's side of the coordinator's artifact store (worker.proto:
// UploadArtifact / DownloadArtifact / ListArtifacts): files on the worker's
// local disk go up and come down in CRC-32C-checked chunks with a SHA-256 of
// the whole, so no shared file system is needed between workers.
#ifndef LAYERFLOW_WORKER_SERVICE_ARTIFACT_CLIENT_H_
#define LAYERFLOW_WORKER_SERVICE_ARTIFACT_CLIENT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "layerflow/v1/worker.grpc.pb.h"

namespace layerflow::worker {

// Chunk size of uploads (downloads use the coordinator's).
inline constexpr size_t kArtifactChunkBytes = size_t{1} << 20;

// Uploads the file at `path` as artifact `name` under the job's lease.
// Returns the stored artifact's info (its SHA-256 checked against ours).
absl::StatusOr<v1::ArtifactInfo> UploadArtifactFile(v1::WorkerProtocol::Stub& stub,
                                                    const std::string& name,
                                                    const std::string& path,
                                                    const std::string& job_id,
                                                    const std::string& lease_id);

// Downloads artifact `name` into `path` (written through a temporary file,
// renamed when the size, every chunk's CRC-32C and the SHA-256 check out;
// DATA_LOSS otherwise).
absl::Status DownloadArtifactFile(v1::WorkerProtocol::Stub& stub, const std::string& worker_id,
                                  const std::string& name, const std::string& path);

// The artifacts whose names start with `prefix`, sorted by name.
absl::StatusOr<std::vector<v1::ArtifactInfo>> ListArtifacts(v1::WorkerProtocol::Stub& stub,
                                                            const std::string& worker_id,
                                                            const std::string& prefix);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_SERVICE_ARTIFACT_CLIENT_H_
