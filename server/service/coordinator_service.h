// The Coordinator service: translation between gRPC and CoordinatorCore,
// plus the WatchSweep streams.
#ifndef LAYERFLOW_SERVER_SERVICE_COORDINATOR_SERVICE_H_
#define LAYERFLOW_SERVER_SERVICE_COORDINATOR_SERVICE_H_

#include <memory>

#include "layerflow/v1/coordinator.grpc.pb.h"
#include "server/auth/authorizer.h"
#include "server/core/coordinator_core.h"
#include "server/metrics/metrics.h"
#include "server/metrics/pool_view.h"

namespace layerflow::server {

class WatchHub;

class CoordinatorService final : public layerflow::v1::Coordinator::CallbackService {
 public:
  // `core`, `auth` and `metrics` must outlive the service. Every handler
  // starts with auth->Authorize; null: authentication off. `metrics` gives
  // GetQueue the recent job durations; null: expected starts unknown.
  explicit CoordinatorService(CoordinatorCore* core, const auth::Authorizer* auth = nullptr,
                              const Metrics* metrics = nullptr);
  ~CoordinatorService() override;

  // Ends every open WatchSweep stream (UNAVAILABLE) and refuses new ones;
  // call before shutting the gRPC server down so that it does not wait on
  // streams that would otherwise stay open until their sweeps finish.
  void StopWatches();

  grpc::ServerUnaryReactor* SubmitSweep(grpc::CallbackServerContext* context,
                                        const layerflow::v1::SubmitSweepRequest* request,
                                        layerflow::v1::SubmitSweepResponse* response) override;
  grpc::ServerUnaryReactor* GetSweep(grpc::CallbackServerContext* context,
                                     const layerflow::v1::GetSweepRequest* request,
                                     layerflow::v1::Sweep* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const layerflow::v1::ListJobsRequest* request,
                                     layerflow::v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelSweep(grpc::CallbackServerContext* context,
                                        const layerflow::v1::CancelSweepRequest* request,
                                        layerflow::v1::Sweep* response) override;
  grpc::ServerUnaryReactor* RetrySweep(grpc::CallbackServerContext* context,
                                       const layerflow::v1::RetrySweepRequest* request,
                                       layerflow::v1::Sweep* response) override;
  // Sends the sweep at once, then on every change; finishes OK after
  // sending a terminal state (SUCCEEDED, FAILED, CANCELLED).
  grpc::ServerWriteReactor<layerflow::v1::Sweep>* WatchSweep(
      grpc::CallbackServerContext* context,
      const layerflow::v1::WatchSweepRequest* request) override;
  grpc::ServerUnaryReactor* QueryResults(grpc::CallbackServerContext* context,
                                         const layerflow::v1::QueryResultsRequest* request,
                                         layerflow::v1::QueryResultsResponse* response) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                        const layerflow::v1::ListWorkersRequest* request,
                                        layerflow::v1::ListWorkersResponse* response) override;
  grpc::ServerUnaryReactor* GetQueue(grpc::CallbackServerContext* context,
                                     const layerflow::v1::GetQueueRequest* request,
                                     layerflow::v1::GetQueueResponse* response) override;

 private:
  CoordinatorCore* const core_;
  const auth::Authorizer* const auth_;
  std::unique_ptr<WatchHub> hub_;
  PoolView pool_;
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_SERVICE_COORDINATOR_SERVICE_H_
