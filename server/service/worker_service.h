// The WorkerProtocol service: translation between gRPC and CoordinatorCore.
#ifndef LAYERFLOW_SERVER_SERVICE_WORKER_SERVICE_H_
#define LAYERFLOW_SERVER_SERVICE_WORKER_SERVICE_H_

#include "layerflow/v1/worker.grpc.pb.h"
#include "server/artifacts/artifact_store.h"
#include "server/auth/authorizer.h"
#include "server/core/coordinator_core.h"

namespace layerflow::server {

class WorkerService final : public layerflow::v1::WorkerProtocol::CallbackService {
 public:
  // `core`, `artifacts` and `auth` must outlive the service. Without an
  // artifact store the artifact RPCs answer UNIMPLEMENTED. Every handler
  // starts with auth->Authorize (role worker or admin; worker ids and
  // leases bound to the principal that registered or leased them); null:
  // authentication off.
  explicit WorkerService(CoordinatorCore* core, artifacts::ArtifactStore* artifacts = nullptr,
                         const auth::Authorizer* auth = nullptr);

  grpc::ServerUnaryReactor* RegisterWorker(
      grpc::CallbackServerContext* context, const layerflow::v1::RegisterWorkerRequest* request,
      layerflow::v1::RegisterWorkerResponse* response) override;
  grpc::ServerUnaryReactor* LeaseJob(grpc::CallbackServerContext* context,
                                     const layerflow::v1::LeaseJobRequest* request,
                                     layerflow::v1::LeaseJobResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const layerflow::v1::HeartbeatRequest* request,
                                      layerflow::v1::HeartbeatResponse* response) override;
  // Commits each chunk as it is read; the first failing chunk ends the
  // stream with its status (earlier chunks stay committed).
  grpc::ServerReadReactor<layerflow::v1::ResultChunk>* StreamResults(
      grpc::CallbackServerContext* context,
      layerflow::v1::StreamResultsResponse* response) override;
  grpc::ServerUnaryReactor* CompleteJob(grpc::CallbackServerContext* context,
                                        const layerflow::v1::CompleteJobRequest* request,
                                        layerflow::v1::CompleteJobResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseJob(grpc::CallbackServerContext* context,
                                       const layerflow::v1::ReleaseJobRequest* request,
                                       layerflow::v1::ReleaseJobResponse* response) override;
  grpc::ServerUnaryReactor* FailJob(grpc::CallbackServerContext* context,
                                    const layerflow::v1::FailJobRequest* request,
                                    layerflow::v1::FailJobResponse* response) override;
  // Artifacts (server/artifacts/artifact_store.h has the protocol). Upload:
  // under the live lease of chunk.job_id (ABORTED otherwise), checked at
  // the first message and again before the artifact is published.
  // Download and List: for registered workers (NOT_FOUND otherwise).
  grpc::ServerReadReactor<layerflow::v1::ArtifactChunk>* UploadArtifact(
      grpc::CallbackServerContext* context, layerflow::v1::ArtifactInfo* response) override;
  grpc::ServerWriteReactor<layerflow::v1::ArtifactChunk>* DownloadArtifact(
      grpc::CallbackServerContext* context,
      const layerflow::v1::DownloadArtifactRequest* request) override;
  grpc::ServerUnaryReactor* ListArtifacts(grpc::CallbackServerContext* context,
                                          const layerflow::v1::ListArtifactsRequest* request,
                                          layerflow::v1::ListArtifactsResponse* response) override;

 private:
  CoordinatorCore* const core_;
  artifacts::ArtifactStore* const artifacts_;
  const auth::Authorizer* const auth_;
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_SERVICE_WORKER_SERVICE_H_
