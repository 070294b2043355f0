// The one way a layerflow client (the CLI, a worker, a test) opens a
// channel to the coordinator: plaintext or TLS, and the API token sent as
// `authorization: Bearer <token>` metadata on every call.
#ifndef LAYERFLOW_COMMON_CHANNEL_H_
#define LAYERFLOW_COMMON_CHANNEL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace layerflow {

struct ChannelSecurity {
  // API token (layerflow-coordinator tokens create); empty: none sent.
  std::string token;
  // PEM CA bundle that signed the coordinator's certificate: TLS. Empty:
  // plaintext.
  std::string tls_ca_file;
  // PEM client certificate and key (workers, for a coordinator started
  // with --tls-client-ca); both or neither, and only with tls_ca_file.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// INVALID_ARGUMENT for inconsistent fields, NOT_FOUND for an unreadable
// file. The token goes by a client interceptor, so it is sent over
// plaintext channels too (gRPC's call credentials refuse those): keep
// plaintext on loopback.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeCoordinatorChannel(
    const std::string& address, const ChannelSecurity& security,
    const grpc::ChannelArguments& args = grpc::ChannelArguments());

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_CHANNEL_H_
