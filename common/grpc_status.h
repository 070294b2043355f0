// The one conversion from a gRPC status to an absl one on the calling side
// of the protocol (the CLI's client and the worker); the coordinator's
// services convert the other way in server/. Header-only: its users link
// gRPC already.
#ifndef LAYERFLOW_COMMON_GRPC_STATUS_H_
#define LAYERFLOW_COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace layerflow {

// gRPC and absl use the canonical codes 0..16 with equal values.
inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_GRPC_STATUS_H_
