// A thin absl::StatusOr wrapper over the Coordinator gRPC stub. gRPC
// statuses become absl statuses in exactly one place (FromGrpcStatus), so
// every command reports errors the same way.
#ifndef LAYERFLOW_CLIENT_COORDINATOR_CLIENT_H_
#define LAYERFLOW_CLIENT_COORDINATOR_CLIENT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"
#include "layerflow/v1/coordinator.grpc.pb.h"

namespace layerflow::client {

// Lets another thread (a signal watcher, a dying embedded worker) end a
// blocking call such as WatchSweep. Once cancelled, later calls fail fast.
class CallCanceller {
 public:
  // Cancels the active call, if any, and every later one with `reason`.
  void Cancel(absl::Status reason);
  bool cancelled() const;
  absl::Status reason() const;

 private:
  friend class CoordinatorClient;
  // Registers the context of a call about to start; false if already
  // cancelled (the call is then not made).
  bool Attach(grpc::ClientContext* context);
  void Detach();

  mutable std::mutex mu_;
  grpc::ClientContext* active_ = nullptr;
  absl::Status reason_;
};

class CoordinatorClient {
 public:
  // `rpc_timeout` bounds each unary call; WatchSweep is not bounded.
  explicit CoordinatorClient(std::string address,
                             std::chrono::milliseconds rpc_timeout = std::chrono::seconds(30));
  // TLS and the API token by `security` (common/channel.h); a bad setting
  // (an unreadable CA file) fails every call with its status.
  CoordinatorClient(std::string address, const ChannelSecurity& security,
                    std::chrono::milliseconds rpc_timeout = std::chrono::seconds(30));
  // For tests: an existing channel (e.g. an in-process server's).
  CoordinatorClient(std::shared_ptr<grpc::Channel> channel, std::string address,
                    std::chrono::milliseconds rpc_timeout = std::chrono::seconds(30));

  const std::string& address() const { return address_; }
  // Optional; must outlive the client.
  void set_canceller(CallCanceller* canceller) { canceller_ = canceller; }

  absl::StatusOr<v1::SubmitSweepResponse> SubmitSweep(const v1::SweepSpec& spec);
  absl::StatusOr<v1::Sweep> GetSweep(const std::string& sweep_id);
  // Page size asked of ListJobs and QueryResults (0: the coordinator's
  // default). Tests make it small to cross page boundaries.
  void set_page_size(int32_t page_size) { page_size_ = page_size; }

  // Empty sweep_id: every sweep; JOB_STATE_UNSPECIFIED: every state. Follows
  // the pages to the end (each page one call with its own deadline).
  absl::StatusOr<std::vector<v1::Job>> ListJobs(const std::string& sweep_id, v1::JobState state);
  absl::StatusOr<v1::Sweep> CancelSweep(const std::string& sweep_id);
  absl::StatusOr<v1::Sweep> RetrySweep(const std::string& sweep_id);
  // Every row, following the pages (the request's page_token is ignored;
  // its page_size, when set, is kept).
  absl::StatusOr<std::vector<v1::ResultRow>> QueryResults(const v1::QueryResultsRequest& request);
  // The pool's workers (ListWorkers) and where a sweep's queued jobs stand
  // (GetQueue).
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers();
  absl::StatusOr<v1::GetQueueResponse> GetQueue(const std::string& sweep_id);
  // Calls `on_update` for every progress message until the sweep leaves the
  // ACTIVE state, and returns that final message. UNAVAILABLE when the
  // stream ends before the sweep finished.
  absl::StatusOr<v1::Sweep> WatchSweep(const std::string& sweep_id,
                                       const std::function<void(const v1::Sweep&)>& on_update);

 private:
  // Sets the deadline and registers the call with the canceller; returns
  // the canceller's reason when it has already fired.
  absl::Status Prepare(grpc::ClientContext* context, bool with_deadline);
  absl::Status Finish(const grpc::Status& status);

  std::string address_;
  absl::Status channel_status_;  // why there is no channel (stub_ null)
  std::chrono::milliseconds rpc_timeout_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  CallCanceller* canceller_ = nullptr;
  int32_t page_size_ = 0;
};

}  // namespace layerflow::client

#endif  // LAYERFLOW_CLIENT_COORDINATOR_CLIENT_H_
