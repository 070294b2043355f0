// The coordinator's Prometheus metrics:
//   layerflow_jobs{state="queued|running|succeeded|failed|cancelled"}  gauge
//   layerflow_workers_connected                                       gauge
//   layerflow_workers_quarantined                                     gauge
//   layerflow_job_retries_total                                       counter
//   layerflow_chunks_committed_total                                  counter
//   layerflow_leases_lapsed_total                                     counter
//   layerflow_sweeps_submitted_total                                  counter
//   layerflow_artifact_bytes                                          gauge
// Gauges are set from the store by the core's periodic tick; counters are
// bumped where the events happen. Thread-safe.
#ifndef LAYERFLOW_SERVER_METRICS_METRICS_H_
#define LAYERFLOW_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace layerflow::server {

class Metrics {
 public:
  // Serves /metrics on `address`: "host:port", or just "port" meaning
  // 127.0.0.1:port; port 0 picks a free one. Empty: metrics are kept but
  // not served (port() is 0). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const std::string& address);
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

 private:
  struct Impl;
  explicit Metrics(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace layerflow::server

#endif  // LAYERFLOW_SERVER_METRICS_METRICS_H_
