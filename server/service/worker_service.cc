#include "server/service/worker_service.h"

#include "common/api_limits.h"
#include "common/status_macros.h"
#include "server/core/request_limits.h"
#include "server/service/failed_reactors.h"
#include "server/service/status_conversion.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;

class StreamResultsReactor final : public grpc::ServerReadReactor<v1::ResultChunk> {
 public:
  StreamResultsReactor(CoordinatorCore* core, const auth::Authorizer* auth, auth::Identity who,
                       v1::StreamResultsResponse* response)
      : core_(core), auth_(auth), who_(std::move(who)), response_(response) {
    StartRead(&chunk_);
  }

  // Reads are strictly one at a time, so chunk_ and response_ need no lock.
  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or went away): done
      Finish(grpc::Status::OK);
      return;
    }
    // Each chunk names its lease: it must be the caller's.
    if (absl::Status allowed =
            auth_->CheckAccess(who_, auth::Rpc::kStreamResults, {.lease_id = chunk_.lease_id()});
        !allowed.ok()) {
      Finish(ToGrpcStatus(allowed));
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
  const auth::Authorizer* const auth_;
  const auth::Identity who_;
  v1::StreamResultsResponse* const response_;
  v1::ResultChunk chunk_;
};

absl::Status NoArtifactStore() {
  return absl::UnimplementedError("this coordinator has no artifact store");
}

// Feeds the stream to an UploadSession; publishes at the client's
// half-close. The first failing message ends the call with its status (the
// temporary file is discarded).
class UploadArtifactReactor final : public grpc::ServerReadReactor<v1::ArtifactChunk> {
 public:
  UploadArtifactReactor(CoordinatorCore* core, artifacts::ArtifactStore* store,
                        const auth::Authorizer* auth, auth::Identity who,
                        v1::ArtifactInfo* response)
      : auth_(auth),
        who_(std::move(who)),
        session_(store,
                 [core](const std::string& job_id, const std::string& lease_id) {
                   return core->CheckLease(job_id, lease_id);
                 }),
        response_(response) {
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::StatusOr<v1::ArtifactInfo> info = session_.Finish();
      if (info.ok()) *response_ = *std::move(info);
      Finish(ToGrpcStatus(info.status()));
      return;
    }
    if (first_) {
      // The first message names job, lease and artifact: the lease must be
      // the uploader's and the name under its job's folder (the session
      // then checks that the lease is the job's live one).
      first_ = false;
      if (absl::Status allowed = auth_->CheckAccess(who_, auth::Rpc::kUploadArtifact,
                                                    {.lease_id = chunk_.lease_id(),
                                                     .job_id = chunk_.job_id(),
                                                     .artifact_name = chunk_.name()});
          !allowed.ok()) {
        Finish(ToGrpcStatus(allowed));
        return;
      }
    }
    if (absl::Status s = session_.OnChunk(chunk_); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    StartRead(&chunk_);
  }

  void OnDone() override { delete this; }

 private:
  const auth::Authorizer* const auth_;
  const auth::Identity who_;
  bool first_ = true;
  artifacts::UploadSession session_;
  v1::ArtifactInfo* const response_;
  v1::ArtifactChunk chunk_;
};

// Writes one message at a time from a DownloadSession.
class DownloadArtifactReactor final : public grpc::ServerWriteReactor<v1::ArtifactChunk> {
 public:
  DownloadArtifactReactor(CoordinatorCore* core, artifacts::ArtifactStore* store,
                          const v1::DownloadArtifactRequest& request) {
    absl::Status status =
        store == nullptr ? NoArtifactStore() : core->TouchWorker(request.worker_id());
    if (status.ok()) {
      absl::StatusOr<std::unique_ptr<artifacts::DownloadSession>> session =
          artifacts::DownloadSession::Open(*store, request.name());
      status = session.status();
      if (session.ok()) session_ = *std::move(session);
    }
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {  // the client went away
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
      return;
    }
    WriteNext();
  }

  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    absl::StatusOr<bool> more = session_->Next(&chunk_);
    if (!more.ok()) {
      Finish(ToGrpcStatus(more.status()));
    } else if (!*more) {
      Finish(grpc::Status::OK);
    } else {
      StartWrite(&chunk_);
    }
  }

  std::unique_ptr<artifacts::DownloadSession> session_;
  v1::ArtifactChunk chunk_;
};

const auth::Authorizer& AuthOff() {
  static const auth::Authorizer* off = new auth::Authorizer();
  return *off;
}

}  // namespace

WorkerService::WorkerService(CoordinatorCore* core, artifacts::ArtifactStore* artifacts,
                             const auth::Authorizer* auth)
    : core_(core), artifacts_(artifacts), auth_(auth != nullptr ? auth : &AuthOff()) {}

grpc::ServerUnaryReactor* WorkerService::RegisterWorker(grpc::CallbackServerContext* context,
                                                        const v1::RegisterWorkerRequest* request,
                                                        v1::RegisterWorkerResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(const auth::Identity who,
                        auth_->Authorize(*context, auth::Rpc::kRegisterWorker));
    LF_ASSIGN_OR_RETURN(*response, core_->RegisterWorker(*request));
    return auth_->RecordOwner(who, auth::OwnedKind::kWorker, response->worker_id());
  }());
}

grpc::ServerUnaryReactor* WorkerService::LeaseJob(grpc::CallbackServerContext* context,
                                                  const v1::LeaseJobRequest* request,
                                                  v1::LeaseJobResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(
        const auth::Identity who,
        auth_->Authorize(*context, auth::Rpc::kLeaseJob, {.worker_id = request->worker_id()}));
    LF_ASSIGN_OR_RETURN(*response, core_->LeaseJob(*request));
    // Later calls under this lease (results, artifacts) must come from the
    // same principal.
    if (response->leased()) {
      LF_RETURN_IF_ERROR(auth_->RecordOwner(who, auth::OwnedKind::kLease, response->lease_id()));
    }
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* WorkerService::Heartbeat(grpc::CallbackServerContext* context,
                                                   const v1::HeartbeatRequest* request,
                                                   v1::HeartbeatResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_
            ->Authorize(*context, auth::Rpc::kHeartbeat,
                        {.worker_id = request->worker_id(), .lease_id = request->lease_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, core_->Heartbeat(*request));
    return absl::OkStatus();
  }());
}

grpc::ServerReadReactor<v1::ResultChunk>* WorkerService::StreamResults(
    grpc::CallbackServerContext* context, v1::StreamResultsResponse* response) {
  absl::StatusOr<auth::Identity> who = auth_->Authorize(*context, auth::Rpc::kStreamResults);
  if (!who.ok()) return new FailedReadReactor<v1::ResultChunk>(ToGrpcStatus(who.status()));
  return new StreamResultsReactor(core_, auth_, *std::move(who), response);
}

grpc::ServerUnaryReactor* WorkerService::CompleteJob(grpc::CallbackServerContext* context,
                                                     const v1::CompleteJobRequest* request,
                                                     v1::CompleteJobResponse* /*response*/) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kCompleteJob, {.lease_id = request->lease_id()})
            .status());
    LF_RETURN_IF_ERROR(core_->CompleteJob(*request));
    auth_->ForgetLease(request->lease_id());
    return absl::OkStatus();
  }());
}

grpc::ServerReadReactor<v1::ArtifactChunk>* WorkerService::UploadArtifact(
    grpc::CallbackServerContext* context, v1::ArtifactInfo* response) {
  absl::StatusOr<auth::Identity> who = auth_->Authorize(*context, auth::Rpc::kUploadArtifact);
  if (!who.ok()) return new FailedReadReactor<v1::ArtifactChunk>(ToGrpcStatus(who.status()));
  if (artifacts_ == nullptr) {
    // A reactor that fails at once; the client's messages are never read.
    class Unimplemented final : public grpc::ServerReadReactor<v1::ArtifactChunk> {
     public:
      Unimplemented() { Finish(ToGrpcStatus(NoArtifactStore())); }
      void OnDone() override { delete this; }
    };
    return new Unimplemented();
  }
  return new UploadArtifactReactor(core_, artifacts_, auth_, *std::move(who), response);
}

grpc::ServerWriteReactor<v1::ArtifactChunk>* WorkerService::DownloadArtifact(
    grpc::CallbackServerContext* context, const v1::DownloadArtifactRequest* request) {
  if (absl::Status allowed = auth_
                                 ->Authorize(*context, auth::Rpc::kDownloadArtifact,
                                             {.worker_id = request->worker_id()})
                                 .status();
      !allowed.ok()) {
    return new FailedWriteReactor<v1::ArtifactChunk>(ToGrpcStatus(allowed));
  }
  return new DownloadArtifactReactor(core_, artifacts_, *request);
}

grpc::ServerUnaryReactor* WorkerService::ListArtifacts(grpc::CallbackServerContext* context,
                                                       const v1::ListArtifactsRequest* request,
                                                       v1::ListArtifactsResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kListArtifacts, {.worker_id = request->worker_id()})
            .status());
    if (artifacts_ == nullptr) return NoArtifactStore();
    LF_RETURN_IF_ERROR(core_->TouchWorker(request->worker_id()));
    LF_RETURN_IF_ERROR(CheckLength("prefix", request->prefix(), limits::kMaxArtifactNameBytes));
    for (const artifacts::ArtifactMeta& meta : artifacts_->List(request->prefix())) {
      v1::ArtifactInfo* info = response->add_artifacts();
      info->set_name(meta.name);
      info->set_bytes(meta.bytes);
      info->set_sha256(meta.sha256);
    }
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* WorkerService::ReleaseJob(grpc::CallbackServerContext* context,
                                                    const v1::ReleaseJobRequest* request,
                                                    v1::ReleaseJobResponse* /*response*/) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kReleaseJob, {.lease_id = request->lease_id()})
            .status());
    LF_RETURN_IF_ERROR(core_->ReleaseJob(*request));
    auth_->ForgetLease(request->lease_id());
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* WorkerService::FailJob(grpc::CallbackServerContext* context,
                                                 const v1::FailJobRequest* request,
                                                 v1::FailJobResponse* /*response*/) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kFailJob, {.lease_id = request->lease_id()})
            .status());
    LF_RETURN_IF_ERROR(core_->FailJob(*request));
    auth_->ForgetLease(request->lease_id());
    return absl::OkStatus();
  }());
}

}  // namespace layerflow::server
