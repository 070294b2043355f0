#include "server/coordinator_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/server_interceptor.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_limits.h"
#include "common/status_macros.h"
#include "server/artifacts/artifact_store.h"
#include "server/auth/authorizer.h"
#include "server/auth/token_store.h"
#include "server/core/coordinator_core.h"
#include "server/metrics/metrics.h"
#include "server/metrics/pool_view.h"
#include "server/service/coordinator_service.h"
#include "server/service/worker_service.h"
#include "server/store/open_store.h"
#include "server/web/http_server.h"
#include "server/web/page_auth.h"
#include "server/web/results_site.h"

namespace layerflow::server {
namespace {

// How long Shutdown lets in-flight calls finish before cancelling them.
constexpr auto kShutdownGrace = std::chrono::seconds(2);

absl::Status ValidateOptions(const CoordinatorOptions& o) {
  auto positive = [](absl::string_view name, int64_t v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("options.", name, ": ", v, " is not positive"));
  };
  if (o.listen_address.empty()) {
    return absl::InvalidArgumentError("options.listen_address: required");
  }
  if (o.db_path.empty()) {
    return absl::InvalidArgumentError("options.db_path: required");
  }
  LF_RETURN_IF_ERROR(positive("lease_ttl_ms", o.lease_ttl_ms));
  LF_RETURN_IF_ERROR(positive("heartbeat_interval_ms", o.heartbeat_interval_ms));
  LF_RETURN_IF_ERROR(positive("reaper_interval_ms", o.reaper_interval_ms));
  LF_RETURN_IF_ERROR(positive("max_attempts", o.max_attempts));
  if (o.artifact_quota_bytes < 0 || o.artifact_max_bytes < 0) {
    return absl::InvalidArgumentError(
        "options.artifact_quota_bytes / artifact_max_bytes: negative (0 means "
        "unlimited)");
  }
  if (o.max_queued_jobs < 0 || o.max_queued_jobs_per_user < 0 || o.max_submissions_per_minute < 0) {
    return absl::InvalidArgumentError(
        "options.max_queued_jobs / max_queued_jobs_per_user / max_submissions_per_minute: "
        "negative (0 means no limit)");
  }
  if (o.max_running_jobs_per_user < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.max_running_jobs_per_user: ", o.max_running_jobs_per_user,
                     " is negative (0 means no quota)"));
  }
  if (o.retry_backoff_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.retry_backoff_ms: ", o.retry_backoff_ms, " is negative"));
  }
  if (o.retry_backoff_cap_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.retry_backoff_cap_ms: ", o.retry_backoff_cap_ms, " is negative"));
  }
  if (o.quarantine_after < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.quarantine_after: ", o.quarantine_after, " is negative"));
  }
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "options.tls_cert_file / tls_key_file: give both (TLS) or neither (plaintext)");
  }
  if (!o.tls_client_ca_file.empty() && o.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "options.tls_client_ca_file: client certificates need TLS (tls_cert_file, "
        "tls_key_file)");
  }
  if (o.max_job_seconds < 0) {
    return absl::InvalidArgumentError(absl::StrCat("options.max_job_seconds: ", o.max_job_seconds,
                                                   " is negative (0: no deadline)"));
  }
  if (o.progress_timeout_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.progress_timeout_ms: ", o.progress_timeout_ms, " is negative (0: off)"));
  }
  // A heartbeat interval at or above the TTL lets healthy leases lapse.
  if (o.heartbeat_interval_ms >= o.lease_ttl_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.heartbeat_interval_ms: ", o.heartbeat_interval_ms,
                     " must be less than lease_ttl_ms ", o.lease_ttl_ms));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPemFile(absl::string_view what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(what, ": cannot read '", path, "'"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (bytes.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", path, "' is empty"));
  }
  return bytes.str();
}

// Plaintext, or TLS with the options' certificate; with a client CA the
// server asks for a client certificate and verifies the one it gets, but
// lets a client without one in (the CLI): the Authorizer then refuses it
// the worker RPCs.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const CoordinatorOptions& o) {
  if (o.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(o.tls_client_ca_file.empty()
                                            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  LF_ASSIGN_OR_RETURN(pair.private_key, ReadPemFile("--tls-key", o.tls_key_file));
  LF_ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile("--tls-cert", o.tls_cert_file));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!o.tls_client_ca_file.empty()) {
    LF_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile("--tls-client-ca", o.tls_client_ca_file));
  }
  return grpc::SslServerCredentials(ssl);
}

// "127.0.0.1:7531", "localhost:1", "[::1]:2": only this host can connect.
bool IsLoopbackAddress(absl::string_view address) {
  absl::string_view host = address;
  if (absl::ConsumePrefix(&host, "[")) {
    host = host.substr(0, host.find(']'));
  } else if (size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    host = host.substr(0, colon);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

class CoordinatorServerImpl final : public CoordinatorServer {
 public:
  CoordinatorServerImpl(std::unique_ptr<Metrics> metrics, std::unique_ptr<CoordinatorCore> core,
                        std::unique_ptr<artifacts::ArtifactStore> artifacts,
                        std::unique_ptr<auth::Authorizer> authorizer)
      : metrics_(std::move(metrics)),
        core_(std::move(core)),
        artifacts_(std::move(artifacts)),
        authorizer_(std::move(authorizer)),
        coordinator_service_(core_.get(), authorizer_.get(), metrics_.get()),
        worker_service_(core_.get(), artifacts_.get(), authorizer_.get()),
        pool_(core_.get(), authorizer_.get(), metrics_.get()) {
    // The pool gauges are read from the store at each scrape.
    metrics_->SetPoolSource([this] { return pool_.Snapshot(); });
  }

  ~CoordinatorServerImpl() override {
    Shutdown();
    // Members go in reverse order: the server (and every reactor) before
    // the services, the services before the core, the core before metrics.
  }

  absl::Status Listen(const std::string& address,
                      std::shared_ptr<grpc::ServerCredentials> credentials) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.SetMaxReceiveMessageSize(kMaxChunkMessageBytes);
    builder.AddListeningPort(address, std::move(credentials), &port_);
    builder.RegisterService(&coordinator_service_);
    builder.RegisterService(&worker_service_);
    // layerflow_rpc_duration_seconds of every call.
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(metrics_->NewRpcInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on '", address, "'"));
    }
    core_->StartReaper();
    return absl::OkStatus();
  }

  absl::Status ServeResultsPage(const std::string& address) {
    site_ = std::make_unique<web::ResultsSite>(core_.get());
    // The page answers only what the caller's token may see (page_auth.h).
    LF_ASSIGN_OR_RETURN(
        http_, web::HttpServer::Start(address, [site = site_.get(), authorizer = authorizer_.get()](
                                                   const web::HttpRequest& r) {
          web::HttpRequest request = r;
          if (std::optional<web::HttpResponse> refused = web::GatePage(*authorizer, &request)) {
            return *refused;
          }
          return site->Handle(request);
        }));
    return absl::OkStatus();
  }

  int port() const override { return port_; }
  int metrics_port() const override { return metrics_->port(); }
  int http_port() const override { return http_ == nullptr ? 0 : http_->port(); }

  void Shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) return;
      shut_down_ = true;
    }
    // Order: stop the pool gauges and the results page (both read the
    // core), stop the reaper and wake watchers, end the watch streams, then
    // let the gRPC server drain (cancelling what is left after the grace).
    metrics_->SetPoolSource(nullptr);
    http_.reset();
    core_->Shutdown();
    coordinator_service_.StopWatches();
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
      server_->Wait();
    }
    done_.Notify();
  }

  void Wait() override { done_.WaitForNotification(); }

 private:
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<CoordinatorCore> core_;
  std::unique_ptr<artifacts::ArtifactStore> artifacts_;
  std::unique_ptr<auth::Authorizer> authorizer_;  // before the services that use it
  CoordinatorService coordinator_service_;
  WorkerService worker_service_;
  PoolView pool_;
  std::unique_ptr<web::ResultsSite> site_;
  std::unique_ptr<web::HttpServer> http_;  // before site_ in destruction
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Notification done_;
};

}  // namespace

std::string DefaultArtifactDir(const std::string& db_path) {
  // A PostgreSQL URL has no directory: the working directory's.
  if (IsPostgresUrl(db_path)) return "artifacts";
  const size_t slash = db_path.rfind('/');
  if (slash == std::string::npos) return "artifacts";
  if (slash == 0) return "/artifacts";
  return absl::StrCat(db_path.substr(0, slash), "/artifacts");
}

std::string DescribeDb(const std::string& db_path) { return DescribeStoreLocation(db_path); }

absl::StatusOr<std::string> AdministerWorkers(const std::string& db_path,
                                              const std::string& release_worker_id) {
  LF_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(db_path));
  if (!release_worker_id.empty()) {
    LF_RETURN_IF_ERROR(store->ReleaseWorker(release_worker_id));
  }
  LF_ASSIGN_OR_RETURN(std::vector<WorkerRecord> workers, store->ListWorkers());
  const int64_t now = absl::ToUnixMillis(absl::Now());
  std::string out;
  for (const WorkerRecord& w : workers) {
    absl::StrAppend(&out, w.worker_id, " ", w.name.empty() ? "-" : w.name, " ",
                    w.quarantined ? "quarantined" : "active", " last seen ",
                    (now - w.last_seen_unix_ms) / 1000, " s ago",
                    w.quarantined ? absl::StrCat(": ", w.quarantine_reason) : "", "\n");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorOptions& options) {
  LF_RETURN_IF_ERROR(ValidateOptions(options));
  LF_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(options.db_path));
  LF_ASSIGN_OR_RETURN(std::unique_ptr<Metrics> metrics, Metrics::Create(options.metrics_address));
  CoreOptions core_options;
  core_options.lease_ttl_ms = options.lease_ttl_ms;
  core_options.heartbeat_interval_ms = options.heartbeat_interval_ms;
  core_options.reaper_interval_ms = options.reaper_interval_ms;
  core_options.max_attempts = options.max_attempts;
  core_options.retry_backoff_ms = options.retry_backoff_ms;
  core_options.retry_backoff_cap_ms = options.retry_backoff_cap_ms;
  core_options.quarantine_after = options.quarantine_after;
  core_options.max_job_seconds = options.max_job_seconds;
  core_options.progress_timeout_ms = options.progress_timeout_ms;
  core_options.max_queued_jobs = options.max_queued_jobs;
  core_options.max_queued_jobs_per_user = options.max_queued_jobs_per_user;
  core_options.max_submissions_per_minute = options.max_submissions_per_minute;
  core_options.max_running_jobs_per_user = options.max_running_jobs_per_user;
  // A stall shorter than ttl - heartbeat cannot lapse a lease renewed on
  // time; half that is caught well before, and is far above the reaper's
  // own jitter.
  core_options.stall_threshold_ms = std::max<int64_t>(
      (options.lease_ttl_ms - options.heartbeat_interval_ms) / 2, 2 * options.reaper_interval_ms);
  artifacts::ArtifactStoreOptions artifact_options;
  artifact_options.root =
      options.artifact_dir.empty() ? DefaultArtifactDir(options.db_path) : options.artifact_dir;
  artifact_options.quota_bytes = options.artifact_quota_bytes;
  artifact_options.max_artifact_bytes = options.artifact_max_bytes;
  artifact_options.on_bytes_stored = [m = metrics.get()](int64_t bytes) {
    m->SetArtifactBytes(bytes);
  };
  LF_ASSIGN_OR_RETURN(std::unique_ptr<artifacts::ArtifactStore> artifact_store,
                      artifacts::ArtifactStore::Open(artifact_options));
  auto core = std::make_unique<CoordinatorCore>(std::move(store), core_options, SystemUnixMillis,
                                                metrics.get());
  // The recovery pass: leases held when the last coordinator stopped get a
  // lease TTL from now for their workers to re-attach; the downtime costs
  // no attempt (issue 14, failure 4).
  LF_RETURN_IF_ERROR(core->Recover().status()) << "recovery pass";
  std::unique_ptr<auth::TokenStore> tokens;
  if (!options.auth_db_path.empty()) {
    LF_ASSIGN_OR_RETURN(tokens, auth::OpenSqliteTokenStore(options.auth_db_path));
  }
  LF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      MakeServerCredentials(options));
  const bool auth_on = tokens != nullptr;
  auto authorizer = std::make_unique<auth::Authorizer>(
      std::move(tokens), auth::AuthorizerOptions{.require_worker_client_certificate =
                                                     !options.tls_client_ca_file.empty()});
  auto server = std::make_unique<CoordinatorServerImpl>(
      std::move(metrics), std::move(core), std::move(artifact_store), std::move(authorizer));
  LF_RETURN_IF_ERROR(server->Listen(options.listen_address, std::move(credentials)));
  // Said once, at start, whatever starts the coordinator (the binary, the
  // CLI's embedded `layerflow run`, tests): whether anybody who reaches
  // the port may do everything.
  const bool tls = !options.tls_cert_file.empty();
  // The bound port, not the asked-for 0.
  const std::string where = absl::StrCat(
      options.listen_address.substr(0, options.listen_address.rfind(':')), ":", server->port());
  if (!auth_on) {
    std::cerr << "layerflow-coordinator: authentication is off (no --auth-db): every "
                 "client that reaches "
              << where << " may submit, read and cancel any sweep and act as a worker" << std::endl;
    if (!IsLoopbackAddress(options.listen_address)) {
      std::cerr << "layerflow-coordinator: WARNING: authentication is off and " << where
                << " is not a loopback address; start with --auth-db (docs/operations.md, "
                   "\"Tokens and TLS\")"
                << std::endl;
    }
  } else {
    std::cerr << "layerflow-coordinator: authentication on: tokens in " << options.auth_db_path
              << std::endl;
  }
  std::cerr << "layerflow-coordinator: gRPC " << (tls ? "over TLS" : "in plaintext")
            << (options.tls_client_ca_file.empty() ? ""
                                                   : ", worker calls need a client certificate")
            << std::endl;
  if (!options.http_address.empty()) {
    LF_RETURN_IF_ERROR(server->ServeResultsPage(options.http_address));
  }
  return std::unique_ptr<CoordinatorServer>(std::move(server));
}

}  // namespace layerflow::server
