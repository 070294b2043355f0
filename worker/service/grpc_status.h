// The one place where the worker's side of the protocol turns gRPC statuses
// into absl ones (the codes share their numeric values by design).
#ifndef LAYERFLOW_WORKER_SERVICE_GRPC_STATUS_H_
#define LAYERFLOW_WORKER_SERVICE_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace layerflow::worker {

inline absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_SERVICE_GRPC_STATUS_H_
