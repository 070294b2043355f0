#include "worker/service/artifact_client.h"

#include <cstdio>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"
#include "common/checksum.h"

namespace layerflow::worker {
absl::StatusOr<v1::ArtifactInfo> UploadArtifactFile(v1::WorkerProtocol::Stub& stub,
                                                    const std::string& name,
                                                    const std::string& path,
                                                    const std::string& job_id,
                                                    const std::string& lease_id) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  const int64_t total = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  grpc::ClientContext ctx;
  v1::ArtifactInfo info;
  std::unique_ptr<grpc::ClientWriter<v1::ArtifactChunk>> writer = stub.UploadArtifact(&ctx, &info);
  artifacts::Sha256 sha;
  std::string buffer(kArtifactChunkBytes, '\0');
  int64_t offset = 0;
  std::string digest;
  do {
    const int64_t want = std::min<int64_t>(total - offset, kArtifactChunkBytes);
    in.read(buffer.data(), want);
    if (in.gcount() != want) {
      writer->WritesDone();
      writer->Finish();
      return absl::DataLossError(absl::StrCat(path, ": short read at byte ", offset));
    }
    const absl::string_view data(buffer.data(), static_cast<size_t>(want));
    sha.Update(data);
    v1::ArtifactChunk chunk;
    if (offset == 0) {  // the first chunk names the artifact
      chunk.set_name(name);
      chunk.set_job_id(job_id);
      chunk.set_lease_id(lease_id);
      chunk.set_total_bytes(total);
    }
    chunk.set_offset(offset);
    chunk.set_data(std::string(data));
    chunk.set_crc32c(artifacts::Crc32c(data));
    offset += want;
    if (offset == total) {
      digest = sha.HexDigest();
      chunk.set_sha256(digest);
    }
    if (!writer->Write(chunk)) break;  // Finish() says why
  } while (offset < total);
  writer->WritesDone();
  if (absl::Status s = FromGrpcStatus(writer->Finish()); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("upload ", name, ": ", s.message()));
  }
  if (info.sha256() != digest || info.bytes() != total) {
    return absl::DataLossError(absl::StrCat("upload ", name, ": the store reports ", info.bytes(),
                                            " bytes sha256 ", info.sha256(), ", sent ", total,
                                            " bytes sha256 ", digest));
  }
  return info;
}

absl::Status DownloadArtifactFile(v1::WorkerProtocol::Stub& stub, const std::string& worker_id,
                                  const std::string& name, const std::string& path) {
  grpc::ClientContext ctx;
  v1::DownloadArtifactRequest request;
  request.set_worker_id(worker_id);
  request.set_name(name);
  std::unique_ptr<grpc::ClientReader<v1::ArtifactChunk>> reader =
      stub.DownloadArtifact(&ctx, request);
  const std::string partial = path + ".partial";
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(partial, ": cannot create"));
  artifacts::Sha256 sha;
  v1::ArtifactChunk chunk;
  int64_t offset = 0, total = -1;
  std::string expected_sha;
  absl::Status error;
  while (reader->Read(&chunk)) {
    if (total < 0) {
      total = chunk.total_bytes();
      expected_sha = chunk.sha256();
    }
    if (chunk.offset() != offset) {
      error = absl::DataLossError(absl::StrCat("download ", name, ": chunk at byte ",
                                               chunk.offset(), ", expected ", offset));
      break;
    }
    if (artifacts::Crc32c(chunk.data()) != chunk.crc32c()) {
      error = absl::DataLossError(
          absl::StrCat("download ", name, ": CRC-32C mismatch at byte ", offset));
      break;
    }
    sha.Update(chunk.data());
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    offset += static_cast<int64_t>(chunk.data().size());
  }
  absl::Status rpc = FromGrpcStatus(reader->Finish());
  out.close();
  if (error.ok() && !rpc.ok()) {
    error = absl::Status(rpc.code(), absl::StrCat("download ", name, ": ", rpc.message()));
  }
  if (error.ok() && (offset != total || sha.HexDigest() != expected_sha)) {
    error = absl::DataLossError(absl::StrCat("download ", name, ": got ", offset, " of ", total,
                                             " bytes or a SHA-256 mismatch"));
  }
  if (error.ok() && !out) error = absl::InternalError(absl::StrCat(partial, ": write failed"));
  if (!error.ok()) {
    std::remove(partial.c_str());
    return error;
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    std::remove(partial.c_str());
    return absl::InternalError(absl::StrCat(path, ": rename failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::ArtifactInfo>> ListArtifacts(v1::WorkerProtocol::Stub& stub,
                                                            const std::string& worker_id,
                                                            const std::string& prefix) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ListArtifactsRequest request;
  request.set_worker_id(worker_id);
  request.set_prefix(prefix);
  v1::ListArtifactsResponse response;
  if (absl::Status s = FromGrpcStatus(stub.ListArtifacts(&ctx, request, &response)); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("list artifacts ", prefix, ": ", s.message()));
  }
  return std::vector<v1::ArtifactInfo>(response.artifacts().begin(), response.artifacts().end());
}

}  // namespace layerflow::worker
