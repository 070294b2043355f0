#include "server/service/worker_service.h"

#include "common/status_macros.h"
#include "server/service/status_conversion.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;

class StreamResultsReactor final
    : public grpc::ServerReadReactor<v1::ResultChunk> {
 public:
  StreamResultsReactor(CoordinatorCore* core,
                       v1::StreamResultsResponse* response)
      : core_(core), response_(response) {
    StartRead(&chunk_);
  }

  // Reads are strictly one at a time, so chunk_ and response_ need no lock.
  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or went away): done
      Finish(grpc::Status::OK);
      return;
    }
    absl::StatusOr<CommitResult> result = core_->CommitChunk(chunk_);
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    if (result->newly_committed) {
      response_->set_chunks_committed(response_->chunks_committed() + 1);
    }
    response_->set_job_chunks_committed(result->job_chunks_committed);
    StartRead(&chunk_);
  }

  void OnDone() override { delete this; }

 private:
  CoordinatorCore* const core_;
  v1::StreamResultsResponse* const response_;
  v1::ResultChunk chunk_;
};

}  // namespace

grpc::ServerUnaryReactor* WorkerService::RegisterWorker(
    grpc::CallbackServerContext* context, const v1::RegisterWorkerRequest* request,
    v1::RegisterWorkerResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(*response, core_->RegisterWorker(*request));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* WorkerService::LeaseJob(
    grpc::CallbackServerContext* context, const v1::LeaseJobRequest* request,
    v1::LeaseJobResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(*response, core_->LeaseJob(*request));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* WorkerService::Heartbeat(
    grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(*response, core_->Heartbeat(*request));
    return absl::OkStatus();
  }());
}

grpc::ServerReadReactor<v1::ResultChunk>* WorkerService::StreamResults(
    grpc::CallbackServerContext* /*context*/,
    v1::StreamResultsResponse* response) {
  return new StreamResultsReactor(core_, response);
}

grpc::ServerUnaryReactor* WorkerService::CompleteJob(
    grpc::CallbackServerContext* context, const v1::CompleteJobRequest* request,
    v1::CompleteJobResponse* /*response*/) {
  return FinishUnary(context, core_->CompleteJob(*request));
}

grpc::ServerUnaryReactor* WorkerService::FailJob(
    grpc::CallbackServerContext* context, const v1::FailJobRequest* request,
    v1::FailJobResponse* /*response*/) {
  return FinishUnary(context, core_->FailJob(*request));
}

}  // namespace layerflow::server
