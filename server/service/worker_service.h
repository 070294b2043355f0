// The WorkerProtocol service: translation between gRPC and CoordinatorCore.
#ifndef LAYERFLOW_SERVER_SERVICE_WORKER_SERVICE_H_
#define LAYERFLOW_SERVER_SERVICE_WORKER_SERVICE_H_

#include "layerflow/v1/worker.grpc.pb.h"
#include "server/core/coordinator_core.h"

namespace layerflow::server {

class WorkerService final
    : public layerflow::v1::WorkerProtocol::CallbackService {
 public:
  // `core` must outlive the service.
  explicit WorkerService(CoordinatorCore* core) : core_(core) {}

  grpc::ServerUnaryReactor* RegisterWorker(
      grpc::CallbackServerContext* context,
      const layerflow::v1::RegisterWorkerRequest* request,
      layerflow::v1::RegisterWorkerResponse* response) override;
  grpc::ServerUnaryReactor* LeaseJob(
      grpc::CallbackServerContext* context,
      const layerflow::v1::LeaseJobRequest* request,
      layerflow::v1::LeaseJobResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(
      grpc::CallbackServerContext* context,
      const layerflow::v1::HeartbeatRequest* request,
      layerflow::v1::HeartbeatResponse* response) override;
  // Commits each chunk as it is read; the first failing chunk ends the
  // stream with its status (earlier chunks stay committed).
  grpc::ServerReadReactor<layerflow::v1::ResultChunk>* StreamResults(
      grpc::CallbackServerContext* context,
      layerflow::v1::StreamResultsResponse* response) override;
  grpc::ServerUnaryReactor* CompleteJob(
      grpc::CallbackServerContext* context,
      const layerflow::v1::CompleteJobRequest* request,
      layerflow::v1::CompleteJobResponse* response) override;
  grpc::ServerUnaryReactor* FailJob(
      grpc::CallbackServerContext* context,
      const layerflow::v1::FailJobRequest* request,
      layerflow::v1::FailJobResponse* response) override;

 private:
  CoordinatorCore* const core_;
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_SERVICE_WORKER_SERVICE_H_
