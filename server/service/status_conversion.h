// The one place where absl::Status becomes grpc::Status.
#ifndef LAYERFLOW_SERVER_SERVICE_STATUS_CONVERSION_H_
#define LAYERFLOW_SERVER_SERVICE_STATUS_CONVERSION_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace layerflow::server {

// Keeps the code (absl and gRPC share the canonical code space) and the
// message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Finishes a unary callback call with `status`; returns the reactor.
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_SERVICE_STATUS_CONVERSION_H_
