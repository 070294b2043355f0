#include "client/coordinator_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_limits.h"

namespace layerflow::client {

void CallCanceller::Cancel(absl::Status reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reason_.ok()) reason_ = reason.ok() ? absl::CancelledError("cancelled") : reason;
  if (active_ != nullptr) active_->TryCancel();
}

bool CallCanceller::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !reason_.ok();
}

absl::Status CallCanceller::reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

bool CallCanceller::Attach(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!reason_.ok()) return false;
  active_ = context;
  return true;
}

void CallCanceller::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  active_ = nullptr;
}

CoordinatorClient::CoordinatorClient(std::string address, std::chrono::milliseconds rpc_timeout)
    : CoordinatorClient(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                    [] {
                                      grpc::ChannelArguments args;
                                      args.SetMaxReceiveMessageSize(kMaxQueryReplyBytes);
                                      return args;
                                    }()),
          address, rpc_timeout) {}

CoordinatorClient::CoordinatorClient(std::string address, const ChannelSecurity& security,
                                     std::chrono::milliseconds rpc_timeout)
    : address_(std::move(address)), rpc_timeout_(rpc_timeout) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxQueryReplyBytes);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeCoordinatorChannel(address_, security, args);
  if (channel.ok()) {
    stub_ = v1::Coordinator::NewStub(*std::move(channel));
  } else {
    channel_status_ = channel.status();
  }
}

CoordinatorClient::CoordinatorClient(std::shared_ptr<grpc::Channel> channel, std::string address,
                                     std::chrono::milliseconds rpc_timeout)
    : address_(std::move(address)),
      rpc_timeout_(rpc_timeout),
      stub_(v1::Coordinator::NewStub(std::move(channel))) {}

absl::Status CoordinatorClient::Prepare(grpc::ClientContext* context, bool with_deadline) {
  if (stub_ == nullptr) return channel_status_;
  if (with_deadline) {
    context->set_deadline(std::chrono::system_clock::now() + rpc_timeout_);
  }
  if (canceller_ != nullptr && !canceller_->Attach(context)) {
    return canceller_->reason();
  }
  return absl::OkStatus();
}

absl::Status CoordinatorClient::Finish(const grpc::Status& status) {
  if (canceller_ != nullptr) {
    canceller_->Detach();
    // A call we cancelled ourselves reports why, not gRPC's "Cancelled".
    if (status.error_code() == grpc::StatusCode::CANCELLED && canceller_->cancelled()) {
      return canceller_->reason();
    }
  }
  absl::Status result = FromGrpcStatus(status);
  if (result.code() == absl::StatusCode::kUnavailable ||
      result.code() == absl::StatusCode::kDeadlineExceeded) {
    // Most often a wrong --coordinator or a coordinator that is not up.
    return absl::Status(result.code(),
                        absl::StrCat(result.message(), " (coordinator ", address_, ")"));
  }
  return result;
}

absl::StatusOr<v1::SubmitSweepResponse> CoordinatorClient::SubmitSweep(const v1::SweepSpec& spec) {
  grpc::ClientContext context;
  if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
  v1::SubmitSweepRequest request;
  *request.mutable_spec() = spec;
  v1::SubmitSweepResponse response;
  absl::Status status = Finish(stub_->SubmitSweep(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::Sweep> CoordinatorClient::GetSweep(const std::string& sweep_id) {
  grpc::ClientContext context;
  if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
  v1::GetSweepRequest request;
  request.set_sweep_id(sweep_id);
  v1::Sweep response;
  absl::Status status = Finish(stub_->GetSweep(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<std::vector<v1::Job>> CoordinatorClient::ListJobs(const std::string& sweep_id,
                                                                 v1::JobState state) {
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep_id);
  request.set_state(state);
  request.set_page_size(page_size_);
  std::vector<v1::Job> jobs;
  // Every page, each call with its own deadline.
  do {
    grpc::ClientContext context;
    if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
    v1::ListJobsResponse response;
    absl::Status status = Finish(stub_->ListJobs(&context, request, &response));
    if (!status.ok()) return status;
    for (v1::Job& job : *response.mutable_jobs()) jobs.push_back(std::move(job));
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return jobs;
}

absl::StatusOr<v1::Sweep> CoordinatorClient::CancelSweep(const std::string& sweep_id) {
  grpc::ClientContext context;
  if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
  v1::CancelSweepRequest request;
  request.set_sweep_id(sweep_id);
  v1::Sweep response;
  absl::Status status = Finish(stub_->CancelSweep(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::Sweep> CoordinatorClient::RetrySweep(const std::string& sweep_id) {
  grpc::ClientContext context;
  if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
  v1::RetrySweepRequest request;
  request.set_sweep_id(sweep_id);
  v1::Sweep response;
  absl::Status status = Finish(stub_->RetrySweep(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ListWorkersResponse> CoordinatorClient::ListWorkers() {
  grpc::ClientContext context;
  if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
  v1::ListWorkersResponse response;
  absl::Status status = Finish(stub_->ListWorkers(&context, {}, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::GetQueueResponse> CoordinatorClient::GetQueue(const std::string& sweep_id) {
  grpc::ClientContext context;
  if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
  v1::GetQueueRequest request;
  request.set_sweep_id(sweep_id);
  v1::GetQueueResponse response;
  absl::Status status = Finish(stub_->GetQueue(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<std::vector<v1::ResultRow>> CoordinatorClient::QueryResults(
    const v1::QueryResultsRequest& first) {
  v1::QueryResultsRequest request = first;
  request.clear_page_token();
  if (request.page_size() == 0) request.set_page_size(page_size_);
  std::vector<v1::ResultRow> rows;
  do {
    grpc::ClientContext context;
    if (absl::Status s = Prepare(&context, true); !s.ok()) return s;
    v1::QueryResultsResponse response;
    absl::Status status = Finish(stub_->QueryResults(&context, request, &response));
    if (!status.ok()) return status;
    for (v1::ResultRow& row : *response.mutable_rows()) rows.push_back(std::move(row));
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return rows;
}

absl::StatusOr<v1::Sweep> CoordinatorClient::WatchSweep(
    const std::string& sweep_id, const std::function<void(const v1::Sweep&)>& on_update) {
  grpc::ClientContext context;
  // No deadline: a sweep may run for days.
  if (absl::Status s = Prepare(&context, false); !s.ok()) return s;
  v1::WatchSweepRequest request;
  request.set_sweep_id(sweep_id);
  std::unique_ptr<grpc::ClientReader<v1::Sweep>> reader = stub_->WatchSweep(&context, request);
  v1::Sweep sweep;
  bool finished = false;
  while (reader->Read(&sweep)) {
    if (on_update) on_update(sweep);
    if (sweep.state() != v1::SWEEP_STATE_ACTIVE && sweep.state() != v1::SWEEP_STATE_UNSPECIFIED) {
      finished = true;
      // The server ends the stream itself; cancelling just avoids waiting
      // on a server that keeps it open.
      context.TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (finished) {
    if (canceller_ != nullptr) canceller_->Detach();
    return sweep;
  }
  absl::Status result = Finish(status);
  if (!result.ok()) return result;
  return absl::UnavailableError(absl::StrCat("the coordinator ended the watch of sweep ", sweep_id,
                                             " before it finished (coordinator ", address_, ")"));
}

}  // namespace layerflow::client
