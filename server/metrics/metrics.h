// The coordinator's Prometheus metrics (docs/operations.md, "Monitoring"):
//   layerflow_jobs{state="queued|running|succeeded|failed|cancelled"}  gauge
//   layerflow_workers_connected                                       gauge
//   layerflow_workers_quarantined                                     gauge
//   layerflow_job_retries_total                                       counter
//   layerflow_chunks_committed_total                                  counter
//   layerflow_leases_lapsed_total                                     counter
//   layerflow_sweeps_submitted_total                                  counter
//   layerflow_artifact_bytes                                          gauge
//   layerflow_job_phase_seconds{phase}                                histogram
//   layerflow_queue_wait_seconds{kind}                                histogram
//   layerflow_job_duration_seconds{kind,outcome}                      histogram
//   layerflow_rpc_duration_seconds{service,method,code}               histogram
// and, read from the pool at each scrape (SetPoolSource):
//   layerflow_user_jobs{user,state="queued|running"}                  gauge
//     (a pair once seen stays, at 0 when the user has no such jobs now)
//   layerflow_workers_busy, layerflow_gpus_total, layerflow_gpus_busy gauge
// Gauges of the first block are set from the store by the core's periodic
// tick; counters and histograms where the events happen. Thread-safe.
#ifndef LAYERFLOW_SERVER_METRICS_METRICS_H_
#define LAYERFLOW_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "layerflow/v1/experiment.pb.h"

namespace grpc::experimental {
class ServerInterceptorFactoryInterface;
}

namespace layerflow::server {

// What the pool looks like now (server/metrics/pool_view.h computes it).
struct PoolSnapshot {
  // (user, state) -> jobs, state "queued" or "running"; the user is the
  // sweep's owner ("anonymous" with authentication off).
  std::map<std::pair<std::string, std::string>, int64_t> user_jobs;
  // Over workers seen within 3 heartbeat intervals.
  int64_t workers_busy = 0;  // holding a lease
  int64_t gpus_total = 0;
  int64_t gpus_busy = 0;  // GPUs of the busy workers
};

// Mean lease-to-completion seconds of the last succeeded jobs.
struct RecentDurations {
  double mean_seconds = 0;
  int32_t jobs = 0;  // 0: none yet (mean_seconds 0)
};

class Metrics {
 public:
  // Serves /metrics on `address`: "host:port", or just "port" meaning
  // 127.0.0.1:port; port 0 picks a free one. Empty: metrics are kept but
  // not served (port() is 0). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& address);
  ~Metrics();

  int port() const { return port_; }

  // `state` is one of queued, running, succeeded, failed, cancelled.
  void SetJobs(absl::string_view state, int64_t count);
  void SetWorkersConnected(int64_t count);
  // Workers the coordinator leases nothing to (host errors in a row).
  void SetWorkersQuarantined(int64_t count);
  // Attempts that ended in a host error and were requeued for another try.
  void AddJobRetries(int64_t n);
  void AddChunksCommitted(int64_t n);
  void AddLeasesLapsed(int64_t n);
  void AddSweepsSubmitted(int64_t n);
  // One worker-reported phase of a job chunk (layerflow_job_phase_seconds,
  // a histogram by phase: build, compute, upload).
  void ObservePhase(absl::string_view phase, double seconds);
  // Bytes of all artifacts in the artifact store.
  void SetArtifactBytes(int64_t bytes);

  // A lease of `job` (as leased: RUNNING, attempts counted) at now_ms. Its
  // first lease (attempts 1) observes the queue wait, now_ms minus
  // job.created_unix_ms, labelled with the job's kind; every lease starts
  // the clock that ObserveJobEnded reads.
  void ObserveLeased(const layerflow::v1::Job& job, int64_t now_ms);
  // The lease of job_id ended at now_ms: `outcome` "succeeded"
  // (CompleteJob), "failed" (for good) or "retried" (a host error, queued
  // again). Observes layerflow_job_duration_seconds, from its lease, when
  // this process saw the lease (not across a coordinator restart); a
  // succeeded one joins RecentJobSeconds.
  void ObserveJobEnded(const std::string& job_id, absl::string_view outcome, int64_t now_ms);
  // The last (up to kRecentJobs) succeeded jobs' lease-to-completion times.
  static constexpr int kRecentJobs = 32;
  RecentDurations RecentJobSeconds() const;

  // One finished RPC: `method` its name ("SubmitSweep"), `service` the
  // proto service's short name ("Coordinator"), `code` the gRPC status code
  // name ("OK", "INVALID_ARGUMENT", ...). A stream's time is its whole life.
  void ObserveRpc(absl::string_view service, absl::string_view method, absl::string_view code,
                  double seconds);
  // A gRPC server interceptor that calls ObserveRpc for every call of the
  // server it is given to (ServerBuilder::experimental().
  // SetInterceptorCreators). The factory must not outlive this object.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRpcInterceptorFactory();

  // Called at every scrape of /metrics for the pool gauges; a failed call
  // leaves them out of that scrape. Unset: they are not exported. The
  // source must stay callable until this object is destroyed or the source
  // replaced.
  using PoolSource = std::function<absl::StatusOr<PoolSnapshot>()>;
  void SetPoolSource(PoolSource source);

 private:
  struct Impl;
  explicit Metrics(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// "OK", "CANCELLED", ..., "UNAUTHENTICATED" for a gRPC status code value
// (0..16); "UNKNOWN" otherwise.
absl::string_view GrpcCodeName(int code);

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_METRICS_METRICS_H_
