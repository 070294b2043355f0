#include "server/auth/authorizer.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_context.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace layerflow::server::auth {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

// The whole policy: which roles may call which RPC. Admins may call all;
// users the Coordinator service, workers the WorkerProtocol.
bool RoleMayCall(Role role, Rpc rpc) {
  if (role == Role::kAdmin) return true;
  return IsWorkerRpc(rpc) ? role == Role::kWorker : role == Role::kUser;
}

// RPCs whose resource.sweep_id names an existing sweep of the caller: the
// Coordinator service's, but SubmitSweep (whose sweep does not exist yet)
// and ListWorkers (the pool, which every user may see).
bool IsSweepRpc(Rpc rpc) {
  return !IsWorkerRpc(rpc) && rpc != Rpc::kSubmitSweep && rpc != Rpc::kListWorkers;
}

}  // namespace

absl::string_view RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kSubmitSweep:
      return "SubmitSweep";
    case Rpc::kGetSweep:
      return "GetSweep";
    case Rpc::kListJobs:
      return "ListJobs";
    case Rpc::kCancelSweep:
      return "CancelSweep";
    case Rpc::kRetrySweep:
      return "RetrySweep";
    case Rpc::kWatchSweep:
      return "WatchSweep";
    case Rpc::kQueryResults:
      return "QueryResults";
    case Rpc::kListWorkers:
      return "ListWorkers";
    case Rpc::kGetQueue:
      return "GetQueue";
    case Rpc::kRegisterWorker:
      return "RegisterWorker";
    case Rpc::kLeaseJob:
      return "LeaseJob";
    case Rpc::kHeartbeat:
      return "Heartbeat";
    case Rpc::kStreamResults:
      return "StreamResults";
    case Rpc::kCompleteJob:
      return "CompleteJob";
    case Rpc::kFailJob:
      return "FailJob";
    case Rpc::kReleaseJob:
      return "ReleaseJob";
    case Rpc::kUploadArtifact:
      return "UploadArtifact";
    case Rpc::kDownloadArtifact:
      return "DownloadArtifact";
    case Rpc::kListArtifacts:
      return "ListArtifacts";
  }
  return "?";
}

bool IsWorkerRpc(Rpc rpc) {
  switch (rpc) {
    case Rpc::kSubmitSweep:
    case Rpc::kGetSweep:
    case Rpc::kListJobs:
    case Rpc::kCancelSweep:
    case Rpc::kRetrySweep:
    case Rpc::kWatchSweep:
    case Rpc::kQueryResults:
    case Rpc::kListWorkers:
    case Rpc::kGetQueue:
      return false;
    default:
      return true;
  }
}

Authorizer::Authorizer(std::unique_ptr<TokenStore> store, AuthorizerOptions options)
    : store_(std::move(store)), options_(options) {}

absl::StatusOr<Identity> Authorizer::Authorize(const grpc::ServerContextBase& context, Rpc rpc,
                                               const Resource& resource) const {
  if (!enabled() && !options_.require_worker_client_certificate) {
    return Identity{.user = "anonymous", .role = Role::kAdmin};
  }
  std::optional<absl::string_view> authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  bool verified = false;
  if (options_.require_worker_client_certificate) {
    // With GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY the peer has an
    // identity only when it sent a certificate that the CA signed.
    std::shared_ptr<const grpc::AuthContext> peer = context.auth_context();
    verified = peer != nullptr && peer->IsPeerAuthenticated();
  }
  LF_ASSIGN_OR_RETURN(Identity who, Authenticate(authorization, verified, rpc));
  LF_RETURN_IF_ERROR(CheckAccess(who, rpc, resource));
  return who;
}

absl::StatusOr<Identity> Authorizer::Authenticate(std::optional<absl::string_view> authorization,
                                                  bool peer_certificate_verified, Rpc rpc) const {
  // The client certificate first: it is checked with tokens off too.
  if (IsWorkerRpc(rpc) && options_.require_worker_client_certificate &&
      !peer_certificate_verified) {
    return absl::UnauthenticatedError(
        absl::StrCat(RpcName(rpc),
                     ": worker calls need a TLS client certificate signed by the coordinator's "
                     "--tls-client-ca"));
  }
  if (!enabled()) return Identity{.user = "anonymous", .role = Role::kAdmin};
  if (!authorization.has_value() || authorization->empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat(RpcName(rpc),
                     ": no token; send the metadata 'authorization: Bearer <token>' (layerflow "
                     "--token or LAYERFLOW_TOKEN)"));
  }
  absl::string_view token = *authorization;
  if (!absl::ConsumePrefix(&token, kBearer)) {
    return absl::UnauthenticatedError(
        absl::StrCat(RpcName(rpc), ": the authorization metadata is not 'Bearer <token>'"));
  }
  absl::StatusOr<TokenRecord> record = store_->Authenticate(token);
  if (!record.ok()) {
    if (record.status().code() != absl::StatusCode::kUnauthenticated) return record.status();
    return absl::UnauthenticatedError(absl::StrCat(RpcName(rpc), ": ", record.status().message()));
  }
  if (!RoleMayCall(record->role, rpc)) {
    return absl::PermissionDeniedError(absl::StrCat(
        RpcName(rpc), " needs role ", IsWorkerRpc(rpc) ? "worker" : "user", " or admin; token ",
        record->id, " of '", record->user, "' has role ", RoleName(record->role)));
  }
  return Identity{.user = record->user, .role = record->role, .token_id = record->id};
}

absl::Status Authorizer::CheckAccess(const Identity& who, Rpc rpc, const Resource& resource) const {
  if (!enabled() || who.role == Role::kAdmin) return absl::OkStatus();
  if (IsSweepRpc(rpc)) {
    if (resource.sweep_id.empty()) {
      // Only ListJobs may leave the sweep out ("every sweep"); the others
      // answer INVALID_ARGUMENT for the missing id themselves.
      if (rpc == Rpc::kListJobs) {
        return absl::PermissionDeniedError(
            "ListJobs of every sweep needs role admin; name one of your sweeps");
      }
    } else {
      LF_ASSIGN_OR_RETURN(std::optional<std::string> owner,
                          store_->GetOwner(OwnedKind::kSweep, resource.sweep_id));
      // One answer for "another user's" and "no such sweep", so that
      // nobody learns which ids exist.
      if (!owner.has_value() || *owner != who.user) {
        return absl::PermissionDeniedError(absl::StrCat(RpcName(rpc), ": sweep ", resource.sweep_id,
                                                        " is not a sweep of '", who.user, "'"));
      }
    }
  }
  if (!resource.worker_id.empty()) {
    LF_ASSIGN_OR_RETURN(std::optional<std::string> owner,
                        store_->GetOwner(OwnedKind::kWorker, resource.worker_id));
    // A worker id nobody claimed is new (RegisterWorker) or unknown (the
    // core answers NOT_FOUND).
    if (owner.has_value() && *owner != who.user) {
      return absl::PermissionDeniedError(absl::StrCat(RpcName(rpc), ": worker ", resource.worker_id,
                                                      " was registered by another principal, not '",
                                                      who.user, "'"));
    }
  }
  if (!resource.lease_id.empty()) {
    LF_ASSIGN_OR_RETURN(std::optional<std::string> owner,
                        store_->GetOwner(OwnedKind::kLease, resource.lease_id));
    if (!owner.has_value() || *owner != who.user) {
      return absl::PermissionDeniedError(absl::StrCat(RpcName(rpc), ": lease ", resource.lease_id,
                                                      " was not granted to '", who.user, "'"));
    }
  }
  if (rpc == Rpc::kUploadArtifact && !resource.job_id.empty()) {
    // An upload may only write under its own job's folder: a worker holding
    // one lease must not overwrite another job's features.
    const std::string folder = absl::StrCat(resource.job_id, "/");
    if (!absl::StartsWith(resource.artifact_name, folder)) {
      return absl::PermissionDeniedError(
          absl::StrCat("UploadArtifact: artifact '", resource.artifact_name,
                       "' is not under its job's folder '", folder, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status Authorizer::RecordOwner(const Identity& who, OwnedKind kind,
                                     const std::string& id) const {
  if (!enabled() || id.empty()) return absl::OkStatus();
  LF_ASSIGN_OR_RETURN(std::string owner, store_->ClaimOwner(kind, id, who.user));
  if (owner != who.user && who.role != Role::kAdmin) {
    const absl::string_view what = kind == OwnedKind::kSweep    ? "sweep "
                                   : kind == OwnedKind::kWorker ? "worker "
                                                                : "lease ";
    return absl::PermissionDeniedError(
        absl::StrCat(what, id, " belongs to another principal, not '", who.user, "'"));
  }
  return absl::OkStatus();
}

void Authorizer::ForgetLease(const std::string& lease_id) const {
  if (!enabled() || lease_id.empty()) return;
  // Only housekeeping: a row left behind names a lease that is over.
  (void)store_->DropOwner(OwnedKind::kLease, lease_id);
}

absl::StatusOr<std::string> Authorizer::SweepOwner(const std::string& sweep_id) const {
  if (!enabled()) return std::string("anonymous");
  LF_ASSIGN_OR_RETURN(std::optional<std::string> owner,
                      store_->GetOwner(OwnedKind::kSweep, sweep_id));
  return owner.value_or("");
}

}  // namespace layerflow::server::auth
