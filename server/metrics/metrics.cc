#include "server/metrics/metrics.h"

#include <exception>
#include <map>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace layerflow::server {

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry =
      std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  std::map<std::string, prometheus::Gauge*, std::less<>> jobs;
  prometheus::Gauge* workers = nullptr;
  prometheus::Gauge* quarantined = nullptr;
  prometheus::Counter* retries = nullptr;
  prometheus::Counter* chunks = nullptr;
  prometheus::Counter* lapsed = nullptr;
  prometheus::Counter* sweeps = nullptr;
  prometheus::Gauge* artifact_bytes = nullptr;
  prometheus::Family<prometheus::Histogram>* phases = nullptr;
  std::mutex phases_mu;
  std::map<std::string, prometheus::Histogram*, std::less<>> phase;  // by phase name
};

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    const std::string& address) {
  auto impl = std::make_unique<Impl>();
  auto& jobs = prometheus::BuildGauge()
                   .Name("layerflow_jobs")
                   .Help("Jobs by state.")
                   .Register(*impl->registry);
  // Every state is present from the start, so dashboards see 0, not "no data".
  for (const char* state :
       {"queued", "running", "succeeded", "failed", "cancelled"}) {
    impl->jobs[state] = &jobs.Add({{"state", state}});
  }
  impl->workers = &prometheus::BuildGauge()
                       .Name("layerflow_workers_connected")
                       .Help("Workers seen within 3 heartbeat intervals.")
                       .Register(*impl->registry)
                       .Add({});
  impl->quarantined = &prometheus::BuildGauge()
                           .Name("layerflow_workers_quarantined")
                           .Help("Workers leased nothing after host errors in a row.")
                           .Register(*impl->registry)
                           .Add({});
  impl->retries = &prometheus::BuildCounter()
                       .Name("layerflow_job_retries_total")
                       .Help("Failed attempts (host errors) requeued for another worker.")
                       .Register(*impl->registry)
                       .Add({});
  impl->chunks = &prometheus::BuildCounter()
                      .Name("layerflow_chunks_committed_total")
                      .Help("Result chunks committed (repeats not counted).")
                      .Register(*impl->registry)
                      .Add({});
  impl->lapsed = &prometheus::BuildCounter()
                      .Name("layerflow_leases_lapsed_total")
                      .Help("Leases that lapsed without a heartbeat.")
                      .Register(*impl->registry)
                      .Add({});
  impl->sweeps = &prometheus::BuildCounter()
                      .Name("layerflow_sweeps_submitted_total")
                      .Help("Sweeps accepted by SubmitSweep.")
                      .Register(*impl->registry)
                      .Add({});
  impl->artifact_bytes = &prometheus::BuildGauge()
                              .Name("layerflow_artifact_bytes")
                              .Help("Bytes of all artifacts in the artifact store.")
                              .Register(*impl->registry)
                              .Add({});
  impl->phases = &prometheus::BuildHistogram()
                      .Name("layerflow_job_phase_seconds")
                      .Help("Seconds workers spent in each phase of a job chunk "
                            "(build, compute, upload).")
                      .Register(*impl->registry);
  int port = 0;
  if (!address.empty()) {
    const std::string bind = address.find(':') == std::string::npos
                                 ? absl::StrCat("127.0.0.1:", address)
                                 : address;
    // prometheus-cpp (civetweb) reports bind failures by throwing; keep
    // exceptions from crossing this boundary.
    try {
      impl->exposer = std::make_unique<prometheus::Exposer>(bind);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(
          "cannot serve metrics on '", bind, "': ", e.what()));
    }
    impl->exposer->RegisterCollectable(impl->registry);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    if (ports.empty()) {
      return absl::UnavailableError(
          absl::StrCat("metrics exposer on '", bind, "' bound no port"));
    }
    port = ports.front();
  }
  return std::unique_ptr<Metrics>(new Metrics(std::move(impl), port));
}

Metrics::Metrics(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

Metrics::~Metrics() = default;

void Metrics::SetJobs(absl::string_view state, int64_t count) {
  auto it = impl_->jobs.find(state);
  if (it != impl_->jobs.end()) it->second->Set(static_cast<double>(count));
}

void Metrics::SetWorkersConnected(int64_t count) {
  impl_->workers->Set(static_cast<double>(count));
}

void Metrics::SetWorkersQuarantined(int64_t count) {
  impl_->quarantined->Set(static_cast<double>(count));
}

void Metrics::AddJobRetries(int64_t n) {
  impl_->retries->Increment(static_cast<double>(n));
}

void Metrics::AddChunksCommitted(int64_t n) {
  impl_->chunks->Increment(static_cast<double>(n));
}

void Metrics::AddLeasesLapsed(int64_t n) {
  impl_->lapsed->Increment(static_cast<double>(n));
}

void Metrics::AddSweepsSubmitted(int64_t n) {
  impl_->sweeps->Increment(static_cast<double>(n));
}

void Metrics::ObservePhase(absl::string_view phase, double seconds) {
  prometheus::Histogram* h = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->phases_mu);
    auto it = impl_->phase.find(phase);
    if (it == impl_->phase.end()) {
      // 1 ms to ~17 min, a factor of 4 apart: model builds and chunks alike.
      static const prometheus::Histogram::BucketBoundaries kBuckets = {
          0.001, 0.004, 0.016, 0.064, 0.256, 1.024, 4.096, 16.384, 65.536, 262.144, 1048.576};
      it = impl_->phase
               .emplace(std::string(phase),
                        &impl_->phases->Add({{"phase", std::string(phase)}}, kBuckets))
               .first;
    }
    h = it->second;
  }
  h->Observe(seconds);
}

void Metrics::SetArtifactBytes(int64_t bytes) {
  impl_->artifact_bytes->Set(static_cast<double>(bytes));
}

}  // namespace layerflow::server
