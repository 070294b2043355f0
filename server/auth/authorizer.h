// The one place where the coordinator decides who may call what.
//
// Every gRPC handler starts with Authorizer::Authorize(context, rpc,
// resource): it reads the caller's token from the `authorization: Bearer
// <token>` metadata, checks the role the RPC needs (the table in
// authorizer.cc) and whether the caller may touch the named sweep, worker
// or lease. UNAUTHENTICATED without a valid token, PERMISSION_DENIED for a
// role or an owner that does not match; both with a message saying why.
//
// Off (no --auth-db, the embedded default) every call is allowed and acts
// as the admin "anonymous".
#ifndef LAYERFLOW_SERVER_AUTH_AUTHORIZER_H_
#define LAYERFLOW_SERVER_AUTH_AUTHORIZER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/auth/token_store.h"

namespace grpc {
class ServerContextBase;
}

namespace layerflow::server::auth {

// Every RPC of coordinator.proto and worker.proto.
enum class Rpc {
  kSubmitSweep,
  kGetSweep,
  kListJobs,
  kCancelSweep,
  kRetrySweep,
  kWatchSweep,
  kQueryResults,
  kListWorkers,
  kGetQueue,
  kRegisterWorker,
  kLeaseJob,
  kHeartbeat,
  kStreamResults,
  kCompleteJob,
  kFailJob,
  kReleaseJob,
  kUploadArtifact,
  kDownloadArtifact,
  kListArtifacts,
};

absl::string_view RpcName(Rpc rpc);
// True for the WorkerProtocol RPCs.
bool IsWorkerRpc(Rpc rpc);

struct Identity {
  std::string user;
  Role role = Role::kAdmin;
  std::string token_id;  // empty when authentication is off
};

// What a call touches; empty fields are not checked.
struct Resource {
  std::string sweep_id;       // sweep RPCs: must be the caller's sweep
  std::string worker_id;      // worker RPCs: registered by the caller
  std::string lease_id;       // calls under a lease: granted to the caller
  std::string job_id;         // UploadArtifact: the uploading job ...
  std::string artifact_name;  // ... and the name, which must lie under "<job_id>/"
};

struct AuthorizerOptions {
  // Worker RPCs need a TLS client certificate that the server verified
  // (--tls-client-ca); UNAUTHENTICATED otherwise.
  bool require_worker_client_certificate = false;
};

class Authorizer {
 public:
  // Authentication off.
  Authorizer() = default;
  // A null `store`: tokens off (every caller acts as admin "anonymous"),
  // the client certificate of `options` still checked.
  Authorizer(std::unique_ptr<TokenStore> store, AuthorizerOptions options);

  // Tokens on.
  bool enabled() const { return store_ != nullptr; }

  // Authenticate + CheckAccess, reading the metadata and the TLS peer of
  // `context`.
  absl::StatusOr<Identity> Authorize(const grpc::ServerContextBase& context, Rpc rpc,
                                     const Resource& resource = {}) const;

  // Who calls: `authorization` is the metadata value (nullopt when absent).
  // UNAUTHENTICATED for a missing, malformed, unknown, wrong or revoked
  // token and for a worker RPC without a required client certificate;
  // PERMISSION_DENIED when the token's role may not call `rpc`.
  absl::StatusOr<Identity> Authenticate(std::optional<absl::string_view> authorization,
                                        bool peer_certificate_verified, Rpc rpc) const;
  // Whether `who` may touch `resource` in `rpc` (admins may touch all).
  // PERMISSION_DENIED naming the resource otherwise. Streams call it for
  // each message that names a lease.
  absl::Status CheckAccess(const Identity& who, Rpc rpc, const Resource& resource) const;

  // After a call succeeded: the new sweep, worker id or lease is `who`'s.
  // PERMISSION_DENIED when a worker id is already another principal's.
  absl::Status RecordOwner(const Identity& who, OwnedKind kind, const std::string& id) const;
  // A lease that ended (completed, failed, released) is forgotten.
  void ForgetLease(const std::string& lease_id) const;
  // Who submitted the sweep: "anonymous" with authentication off, "" when
  // nobody claimed it (an owner row that failed to be written).
  absl::StatusOr<std::string> SweepOwner(const std::string& sweep_id) const;

 private:
  std::unique_ptr<TokenStore> store_;
  AuthorizerOptions options_;
};

}  // namespace layerflow::server::auth

#endif  // LAYERFLOW_SERVER_AUTH_AUTHORIZER_H_
