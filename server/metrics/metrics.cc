#include "server/metrics/metrics.h"

#include <grpcpp/support/server_interceptor.h>

#include <chrono>
#include <algorithm>
#include <deque>
#include <iterator>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace layerflow::server {
namespace {

// Seconds to ~8 h: queue waits and whole jobs, from a tiny CPU job to a
// large model's sweep point.
const prometheus::Histogram::BucketBoundaries& JobBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800};
  return *b;
}

// 0.5 ms to 60 s: unary calls on loopback up to long streams.
const prometheus::Histogram::BucketBoundaries& RpcBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *b;
}

std::string KindLabel(layerflow::v1::JobKind kind) {
  const std::string& full = layerflow::v1::JobKind_Name(kind);
  absl::string_view name = full;
  absl::ConsumePrefix(&name, "JOB_KIND_");
  return absl::AsciiStrToLower(name.empty() ? "unknown" : name);
}

// The pool gauges, collected at each scrape from the source.
class PoolCollectable final : public prometheus::Collectable {
 public:
  void SetSource(Metrics::PoolSource source) {
    std::lock_guard<std::mutex> lock(mu_);  // waits for a scrape in flight
    source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!source_) return {};
    absl::StatusOr<PoolSnapshot> pool = source_();
    if (!pool.ok()) return {};
    std::vector<prometheus::MetricFamily> out;
    prometheus::MetricFamily users{"layerflow_user_jobs",
                                   "Queued and running jobs by the owner of their sweep.",
                                   prometheus::MetricType::Gauge,
                                   {}};
    // A (user, state) once seen stays, at 0 when it has no jobs now: its
    // line drops to zero instead of vanishing (bounded: kMaxUserSeries).
    for (const auto& [key, count] : pool->user_jobs) {
      if (seen_.size() < kMaxUserSeries) seen_.insert(key);
    }
    for (const auto& key : seen_) {
      auto it = pool->user_jobs.find(key);
      prometheus::ClientMetric m;
      m.label = {{"state", key.second}, {"user", key.first}};
      m.gauge.value = it == pool->user_jobs.end() ? 0.0 : static_cast<double>(it->second);
      users.metric.push_back(std::move(m));
    }
    out.push_back(std::move(users));
    auto gauge = [&](const char* name, const char* help, int64_t value) {
      prometheus::ClientMetric m;
      m.gauge.value = static_cast<double>(value);
      out.push_back({name, help, prometheus::MetricType::Gauge, {std::move(m)}});
    };
    gauge("layerflow_workers_busy", "Connected workers holding a lease.", pool->workers_busy);
    gauge("layerflow_gpus_total", "GPUs of the connected workers.", pool->gpus_total);
    gauge("layerflow_gpus_busy", "GPUs of the connected workers holding a lease.", pool->gpus_busy);
    return out;
  }

 private:
  static constexpr size_t kMaxUserSeries = 10000;
  mutable std::mutex mu_;
  Metrics::PoolSource source_;
  mutable std::set<std::pair<std::string, std::string>> seen_;  // guarded by mu_
};

}  // namespace

absl::string_view GrpcCodeName(int code) {
  static constexpr absl::string_view kNames[] = {"OK",
                                                 "CANCELLED",
                                                 "UNKNOWN",
                                                 "INVALID_ARGUMENT",
                                                 "DEADLINE_EXCEEDED",
                                                 "NOT_FOUND",
                                                 "ALREADY_EXISTS",
                                                 "PERMISSION_DENIED",
                                                 "RESOURCE_EXHAUSTED",
                                                 "FAILED_PRECONDITION",
                                                 "ABORTED",
                                                 "OUT_OF_RANGE",
                                                 "UNIMPLEMENTED",
                                                 "INTERNAL",
                                                 "UNAVAILABLE",
                                                 "DATA_LOSS",
                                                 "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
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

  prometheus::Family<prometheus::Histogram>* queue_wait = nullptr;
  prometheus::Family<prometheus::Histogram>* job_duration = nullptr;
  prometheus::Family<prometheus::Histogram>* rpc = nullptr;
  std::mutex jobs_mu;
  struct Running {
    int64_t leased_ms = 0;
    std::string kind;
  };
  // Leases this process granted and not yet saw end; a lease that lapses
  // stays until the job's next lease replaces it (bounded: kMaxRunning).
  std::map<std::string, Running, std::less<>> running;
  std::deque<double> recent;  // seconds of the last succeeded jobs
  std::mutex rpc_mu;
  std::map<std::string, prometheus::Histogram*, std::less<>> rpc_by_key;

  std::shared_ptr<PoolCollectable> pool = std::make_shared<PoolCollectable>();
};

namespace {
constexpr size_t kMaxRunning = 1 << 16;
}  // namespace

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& address) {
  auto impl = std::make_unique<Impl>();
  auto& jobs = prometheus::BuildGauge()
                   .Name("layerflow_jobs")
                   .Help("Jobs by state.")
                   .Register(*impl->registry);
  // Every state is present from the start, so dashboards see 0, not "no data".
  for (const char* state : {"queued", "running", "succeeded", "failed", "cancelled"}) {
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
                      .Help(
                          "Seconds spent in each phase of a job chunk "
                          "(workers: build, data, compute, upload; the coordinator: commit).")
                      .Register(*impl->registry);
  impl->queue_wait = &prometheus::BuildHistogram()
                          .Name("layerflow_queue_wait_seconds")
                          .Help("Seconds from a job's submission to its first lease, by kind.")
                          .Register(*impl->registry);
  impl->job_duration = &prometheus::BuildHistogram()
                            .Name("layerflow_job_duration_seconds")
                            .Help(
                                "Seconds from a lease to its job's end (outcome succeeded, "
                                "failed or retried), by kind.")
                            .Register(*impl->registry);
  impl->rpc = &prometheus::BuildHistogram()
                   .Name("layerflow_rpc_duration_seconds")
                   .Help(
                       "Seconds the coordinator spent on each gRPC call (a stream: its "
                       "life), by service, method and status code.")
                   .Register(*impl->registry);
  int port = 0;
  if (!address.empty()) {
    const std::string bind =
        address.find(':') == std::string::npos ? absl::StrCat("127.0.0.1:", address) : address;
    // prometheus-cpp (civetweb) reports bind failures by throwing; keep
    // exceptions from crossing this boundary.
    try {
      impl->exposer = std::make_unique<prometheus::Exposer>(bind);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on '", bind, "': ", e.what()));
    }
    impl->exposer->RegisterCollectable(impl->registry);
    impl->exposer->RegisterCollectable(impl->pool);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    if (ports.empty()) {
      return absl::UnavailableError(absl::StrCat("metrics exposer on '", bind, "' bound no port"));
    }
    port = ports.front();
  }
  return std::unique_ptr<Metrics>(new Metrics(std::move(impl), port));
}

Metrics::Metrics(std::unique_ptr<Impl> impl, int port) : impl_(std::move(impl)), port_(port) {}

Metrics::~Metrics() {
  // A scrape in flight finishes before the source (and what it reads) goes.
  if (impl_ != nullptr) impl_->pool->SetSource(nullptr);
}

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

void Metrics::AddJobRetries(int64_t n) { impl_->retries->Increment(static_cast<double>(n)); }

void Metrics::AddChunksCommitted(int64_t n) { impl_->chunks->Increment(static_cast<double>(n)); }

void Metrics::AddLeasesLapsed(int64_t n) { impl_->lapsed->Increment(static_cast<double>(n)); }

void Metrics::AddSweepsSubmitted(int64_t n) { impl_->sweeps->Increment(static_cast<double>(n)); }

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

namespace layerflow::server {

void Metrics::ObserveLeased(const layerflow::v1::Job& job, int64_t now_ms) {
  const std::string kind = KindLabel(job.spec().kind());
  prometheus::Histogram* wait = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->jobs_mu);
    if (impl_->running.size() >= kMaxRunning) impl_->running.clear();
    impl_->running[job.job_id()] = Impl::Running{now_ms, kind};
    if (job.attempts() == 1) wait = &impl_->queue_wait->Add({{"kind", kind}}, JobBuckets());
  }
  if (wait != nullptr) {
    wait->Observe(std::max<int64_t>(0, now_ms - job.created_unix_ms()) / 1000.0);
  }
}

void Metrics::ObserveJobEnded(const std::string& job_id, absl::string_view outcome,
                              int64_t now_ms) {
  std::lock_guard<std::mutex> lock(impl_->jobs_mu);
  auto it = impl_->running.find(job_id);
  if (it == impl_->running.end()) return;
  const double seconds = std::max<int64_t>(0, now_ms - it->second.leased_ms) / 1000.0;
  impl_->job_duration
      ->Add({{"kind", it->second.kind}, {"outcome", std::string(outcome)}}, JobBuckets())
      .Observe(seconds);
  impl_->running.erase(it);
  if (outcome == "succeeded") {
    impl_->recent.push_back(seconds);
    if (impl_->recent.size() > static_cast<size_t>(kRecentJobs)) impl_->recent.pop_front();
  }
}

RecentDurations Metrics::RecentJobSeconds() const {
  std::lock_guard<std::mutex> lock(impl_->jobs_mu);
  RecentDurations out;
  if (impl_->recent.empty()) return out;
  double sum = 0;
  for (double s : impl_->recent) sum += s;
  out.jobs = static_cast<int32_t>(impl_->recent.size());
  out.mean_seconds = sum / out.jobs;
  return out;
}

void Metrics::ObserveRpc(absl::string_view service, absl::string_view method,
                         absl::string_view code, double seconds) {
  const std::string key = absl::StrCat(service, "/", method, "/", code);
  prometheus::Histogram* h = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->rpc_mu);
    auto it = impl_->rpc_by_key.find(key);
    if (it == impl_->rpc_by_key.end()) {
      it = impl_->rpc_by_key
               .emplace(key, &impl_->rpc->Add({{"service", std::string(service)},
                                               {"method", std::string(method)},
                                               {"code", std::string(code)}},
                                              RpcBuckets()))
               .first;
    }
    h = it->second;
  }
  h->Observe(seconds);
}

void Metrics::SetPoolSource(PoolSource source) { impl_->pool->SetSource(std::move(source)); }

namespace {

// "/layerflow.v1.Coordinator/SubmitSweep" -> ("Coordinator", "SubmitSweep");
// "/grpc.health.v1.Health/Check" -> ("Health", "Check").
std::pair<std::string, std::string> SplitMethod(absl::string_view full) {
  absl::ConsumePrefix(&full, "/");
  const size_t slash = full.rfind('/');
  if (slash == absl::string_view::npos) return {"", std::string(full)};
  absl::string_view service = full.substr(0, slash);
  if (const size_t dot = service.rfind('.'); dot != absl::string_view::npos) {
    service = service.substr(dot + 1);
  }
  return {std::string(service), std::string(full.substr(slash + 1))};
}

class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(Metrics* metrics, const char* method)
      : metrics_(metrics),
        start_(std::chrono::steady_clock::now()),
        names_(SplitMethod(method == nullptr ? "" : method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->ObserveRpc(names_.first, names_.second,
                           GrpcCodeName(static_cast<int>(status.error_code())), seconds);
    }
    methods->Proceed();
  }

 private:
  Metrics* const metrics_;
  const std::chrono::steady_clock::time_point start_;
  const std::pair<std::string, std::string> names_;
};

class RpcInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(metrics_, info->method());
  }

 private:
  Metrics* const metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::NewRpcInterceptorFactory() {
  return std::make_unique<RpcInterceptorFactory>(this);
}

}  // namespace layerflow::server
