// The coordinator as a library: the layerflow-coordinator binary, the CLI's
// embedded `layerflow run` and the integration tests all start it this way.
#ifndef LAYERFLOW_SERVER_COORDINATOR_SERVER_H_
#define LAYERFLOW_SERVER_COORDINATOR_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace layerflow::server {

struct CoordinatorOptions {
  // gRPC listen address; port 0 picks a free port (see port()).
  std::string listen_address = "127.0.0.1:7531";
  // The store: a SQLite database file, or a PostgreSQL URL
  // (postgresql://user:password@host:port/db or postgres://...), created or
  // migrated to the current schema when opened (server/store/open_store.h).
  std::string db_path = "layerflow.db";
  // Prometheus /metrics on 127.0.0.1:PORT ("host:port" also accepted);
  // empty disables the exposer.
  std::string metrics_address = "127.0.0.1:9464";
  // The results web page (server/web) on "host:port", or "port" meaning
  // 127.0.0.1:port; port 0 picks a free one. Empty (the default): off.
  std::string http_address;
  // A lease lapses after this long without a heartbeat; the job is requeued.
  int64_t lease_ttl_ms = 30000;
  // Interval workers are told to heartbeat at (a running job's worker
  // heartbeats at least every second whatever this says, so that a
  // cancellation reaches it within 2 s).
  int64_t heartbeat_interval_ms = 1000;
  // How often lapsed leases are looked for.
  int64_t reaper_interval_ms = 1000;
  // Leases granted per job before it fails for good.
  int32_t max_attempts = 3;
  // Delay before a requeued job may be leased again: base * 2^(attempts-1),
  // after a host error at most retry_backoff_cap_ms (0: no cap).
  int64_t retry_backoff_ms = 1000;
  int64_t retry_backoff_cap_ms = 60000;
  // A worker whose last this-many jobs all failed with host errors is
  // quarantined (leased nothing until released); 0 never quarantines.
  int32_t quarantine_after = 3;
  // The deadline of a job whose sweep sets no max_job_seconds; 0: none.
  int64_t max_job_seconds = 0;
  // A running job whose worker reports no progress for this long is
  // retried on another worker as a host error; 0: off.
  int64_t progress_timeout_ms = 900000;
  // Submission limits (0: none; CoreOptions says what each bounds):
  // SubmitSweep past one is RESOURCE_EXHAUSTED naming it.
  int64_t max_queued_jobs = 0;
  int64_t max_queued_jobs_per_user = 0;
  int32_t max_submissions_per_minute = 0;
  // A user with this many running jobs is leased nothing more (0: none).
  int64_t max_running_jobs_per_user = 0;
  // Artifact store directory (features of EXTRACT jobs for PROBE jobs).
  // Empty: "artifacts" beside the database file (DefaultArtifactDir).
  std::string artifact_dir;
  // Total bytes of stored artifacts; 0 = unlimited. Uploads beyond it are
  // RESOURCE_EXHAUSTED.
  int64_t artifact_quota_bytes = int64_t{64} << 30;  // 64 GiB
  // Bytes of one artifact; 0 = unlimited.
  int64_t artifact_max_bytes = int64_t{4} << 30;  // 4 GiB
  // Authentication (server/auth): the SQLite file of users and token
  // hashes (`layerflow-coordinator tokens ...` fills it). Empty (the
  // default): authentication off, every caller may do everything, which
  // Start logs.
  std::string auth_db_path;
  // TLS on the gRPC port: PEM certificate chain and private key files.
  // Both empty: plaintext. Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle: clients may present a certificate signed by it, and
  // worker RPCs must (with auth on: UNAUTHENTICATED otherwise). Needs TLS.
  std::string tls_client_ca_file;
};

// The admin's view of the pool, straight from the database (a running
// coordinator reads the quarantine flag on every lease, so a release takes
// effect at once): releases `release_worker_id` first when not empty, then
// returns one line per registered worker, "<id> <name> <state> last seen
// <n> s ago[: reason]", state "active" or "quarantined". NOT_FOUND /
// FAILED_PRECONDITION as Store::ReleaseWorker.
absl::StatusOr<std::string> AdministerWorkers(const std::string& db_path,
                                              const std::string& release_worker_id);

// "<directory of db_path>/artifacts", or "artifacts" (the working
// directory) for a db_path without a directory or a PostgreSQL URL.
std::string DefaultArtifactDir(const std::string& db_path);

// db_path fit for logs: a PostgreSQL URL as "PostgreSQL at host:port/db
// (user u)", never its password; a file path as is.
std::string DescribeDb(const std::string& db_path);

class CoordinatorServer {
 public:
  virtual ~CoordinatorServer() = default;
  // Starts serving. Errors (bad address, unopenable database) come back as
  // a status, never an exception.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      const CoordinatorOptions& options);
  // The bound gRPC port (useful with port 0).
  virtual int port() const = 0;
  // The bound metrics port, 0 when disabled.
  virtual int metrics_port() const = 0;
  // The bound results page port, 0 when disabled.
  virtual int http_port() const = 0;
  // Stops accepting calls, ends open streams and closes the store.
  virtual void Shutdown() = 0;
  // Blocks until Shutdown().
  virtual void Wait() = 0;
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_COORDINATOR_SERVER_H_
