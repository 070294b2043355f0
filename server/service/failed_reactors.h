// Stream reactors that end the call at once with a status (a call refused
// before any message is read or written, e.g. by the Authorizer).
#ifndef LAYERFLOW_SERVER_SERVICE_FAILED_REACTORS_H_
#define LAYERFLOW_SERVER_SERVICE_FAILED_REACTORS_H_

#include <grpcpp/grpcpp.h>

#include <utility>

namespace layerflow::server {

template <typename Message>
class FailedReadReactor final : public grpc::ServerReadReactor<Message> {
 public:
  explicit FailedReadReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

template <typename Message>
class FailedWriteReactor final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit FailedWriteReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_SERVICE_FAILED_REACTORS_H_
