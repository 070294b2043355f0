#include "server/service/coordinator_service.h"

#include <set>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "server/service/failed_reactors.h"
#include "server/service/status_conversion.h"

namespace layerflow::server {

namespace v1 = ::layerflow::v1;

// Callback reactors must not block, so WatchSweep streams do not wait on
// the core's condition variable themselves. One hub thread waits on it
// (CoordinatorCore::WaitForChange) and pokes every open stream; a poke
// reads the sweep and starts a write unless one is in flight, in which
// case the stream sends the newest state when that write completes.
class WatchReactor;

class WatchHub {
 public:
  explicit WatchHub(CoordinatorCore* core) : core_(core), thread_([this] { Run(); }) {}
  ~WatchHub() { Stop(); }

  // False when the hub has stopped (the caller finishes the stream).
  bool Add(WatchReactor* reactor);
  void Remove(WatchReactor* reactor);
  void Stop();

 private:
  void Run();

  CoordinatorCore* const core_;
  absl::Mutex mu_;
  std::set<WatchReactor*> reactors_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::Sweep> {
 public:
  WatchReactor(CoordinatorCore* core, WatchHub* hub, std::string sweep_id)
      : core_(core), hub_(hub), sweep_id_(std::move(sweep_id)) {
    if (!hub_->Add(this)) {
      absl::MutexLock lock(&mu_);
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down"));
      return;
    }
    Poke();
  }

  // Something changed (or the stream just opened): send the sweep if it
  // differs from what the client last received.
  void Poke() {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (writing_) {
      dirty_ = true;
      return;
    }
    SendLocked();
  }

  // Server shutdown: end the stream now, or right after the write in flight.
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (!finished_ && !writing_) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down"));
    }
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {  // the client went away
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
    } else if (terminal_sent_) {
      FinishLocked(grpc::Status::OK);
    } else if (stopping_) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator is shutting down"));
    } else if (dirty_) {
      dirty_ = false;
      SendLocked();
    }
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    // With a write in flight, OnWriteDone(false) follows and finishes.
    if (!writing_) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    }
  }

  void OnDone() override {
    hub_->Remove(this);
    delete this;
  }

 private:
  void SendLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<v1::Sweep> sweep = core_->GetSweep(sweep_id_);
    if (!sweep.ok()) {
      FinishLocked(ToGrpcStatus(sweep.status()));
      return;
    }
    std::string bytes = sweep->SerializeAsString();
    if (bytes == last_sent_) return;  // another sweep changed
    last_sent_ = std::move(bytes);
    current_ = *std::move(sweep);
    terminal_sent_ = current_.state() != v1::SWEEP_STATE_ACTIVE;
    writing_ = true;
    StartWrite(&current_);
  }

  // Invariant: Finish is called exactly once, never with a write in flight.
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(std::move(status));
  }

  CoordinatorCore* const core_;
  WatchHub* const hub_;
  const std::string sweep_id_;
  absl::Mutex mu_;
  v1::Sweep current_ ABSL_GUARDED_BY(mu_);  // alive until OnWriteDone
  std::string last_sent_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool terminal_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

bool WatchHub::Add(WatchReactor* reactor) {
  absl::MutexLock lock(&mu_);
  if (stopped_) return false;
  reactors_.insert(reactor);
  return true;
}

void WatchHub::Remove(WatchReactor* reactor) {
  absl::MutexLock lock(&mu_);
  reactors_.erase(reactor);
}

void WatchHub::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) {
      stopped_ = true;
      // Reactors stay registered until OnDone; holding mu_ keeps them alive
      // while they are told to stop (OnDone runs on another thread and
      // waits for mu_ in Remove).
      for (WatchReactor* reactor : reactors_) reactor->Stop();
    }
  }
  if (thread_.joinable()) thread_.join();
}

void WatchHub::Run() {
  uint64_t seen = core_->version();
  while (true) {
    // The timeout bounds how long Stop() waits when the core is not shut
    // down first.
    seen = core_->WaitForChange(seen, absl::Milliseconds(100));
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    for (WatchReactor* reactor : reactors_) reactor->Poke();
  }
}

namespace {
const auth::Authorizer& AuthOff() {
  static const auth::Authorizer* off = new auth::Authorizer();
  return *off;
}
}  // namespace

CoordinatorService::CoordinatorService(CoordinatorCore* core, const auth::Authorizer* auth,
                                       const Metrics* metrics)
    : core_(core),
      auth_(auth != nullptr ? auth : &AuthOff()),
      hub_(std::make_unique<WatchHub>(core)),
      pool_(core, auth_, metrics) {}

CoordinatorService::~CoordinatorService() = default;

void CoordinatorService::StopWatches() { hub_->Stop(); }

grpc::ServerUnaryReactor* CoordinatorService::SubmitSweep(grpc::CallbackServerContext* context,
                                                          const v1::SubmitSweepRequest* request,
                                                          v1::SubmitSweepResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(const auth::Identity who,
                        auth_->Authorize(*context, auth::Rpc::kSubmitSweep));
    LF_ASSIGN_OR_RETURN(*response, core_->SubmitSweep(request->spec(), who.user));
    // The sweep is stored; should the owner row fail, only admins can
    // reach it, which the error says.
    LF_RETURN_IF_ERROR(auth_->RecordOwner(who, auth::OwnedKind::kSweep, response->sweep_id()))
        << "sweep " << response->sweep_id() << " stored, but its owner not";
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* CoordinatorService::GetSweep(grpc::CallbackServerContext* context,
                                                       const v1::GetSweepRequest* request,
                                                       v1::Sweep* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kGetSweep, {.sweep_id = request->sweep_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, core_->GetSweep(request->sweep_id()));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* CoordinatorService::ListJobs(grpc::CallbackServerContext* context,
                                                       const v1::ListJobsRequest* request,
                                                       v1::ListJobsResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kListJobs, {.sweep_id = request->sweep_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, core_->ListJobs(*request));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* CoordinatorService::CancelSweep(grpc::CallbackServerContext* context,
                                                          const v1::CancelSweepRequest* request,
                                                          v1::Sweep* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kCancelSweep, {.sweep_id = request->sweep_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, core_->CancelSweep(request->sweep_id()));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* CoordinatorService::RetrySweep(grpc::CallbackServerContext* context,
                                                         const v1::RetrySweepRequest* request,
                                                         v1::Sweep* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kRetrySweep, {.sweep_id = request->sweep_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, core_->RetrySweep(request->sweep_id()));
    return absl::OkStatus();
  }());
}

grpc::ServerWriteReactor<v1::Sweep>* CoordinatorService::WatchSweep(
    grpc::CallbackServerContext* context, const v1::WatchSweepRequest* request) {
  if (absl::Status allowed =
          auth_->Authorize(*context, auth::Rpc::kWatchSweep, {.sweep_id = request->sweep_id()})
              .status();
      !allowed.ok()) {
    return new FailedWriteReactor<v1::Sweep>(ToGrpcStatus(allowed));
  }
  return new WatchReactor(core_, hub_.get(), request->sweep_id());
}

grpc::ServerUnaryReactor* CoordinatorService::QueryResults(grpc::CallbackServerContext* context,
                                                           const v1::QueryResultsRequest* request,
                                                           v1::QueryResultsResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kQueryResults, {.sweep_id = request->sweep_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, core_->QueryResults(*request));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* CoordinatorService::ListWorkers(grpc::CallbackServerContext* context,
                                                          const v1::ListWorkersRequest* /*request*/,
                                                          v1::ListWorkersResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_ASSIGN_OR_RETURN(const auth::Identity who,
                        auth_->Authorize(*context, auth::Rpc::kListWorkers));
    // Quarantine reasons quote job errors, which may be any user's.
    LF_ASSIGN_OR_RETURN(*response, pool_.ListWorkers(who.role == auth::Role::kAdmin));
    return absl::OkStatus();
  }());
}

grpc::ServerUnaryReactor* CoordinatorService::GetQueue(grpc::CallbackServerContext* context,
                                                       const v1::GetQueueRequest* request,
                                                       v1::GetQueueResponse* response) {
  return FinishUnary(context, [&]() -> absl::Status {
    LF_RETURN_IF_ERROR(
        auth_->Authorize(*context, auth::Rpc::kGetQueue, {.sweep_id = request->sweep_id()})
            .status());
    LF_ASSIGN_OR_RETURN(*response, pool_.GetQueue(request->sweep_id()));
    return absl::OkStatus();
  }());
}

}  // namespace layerflow::server
