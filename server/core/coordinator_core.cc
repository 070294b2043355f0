#include "server/core/coordinator_core.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "catalog/train.h"
#include "common/status_macros.h"
#include "common/api_limits.h"
#include "common/job_failures.h"
#include "server/core/chunk_validation.h"
#include "server/core/request_limits.h"
#include "server/core/result_pages.h"
#include "server/spec/sweep_spec.h"

namespace layerflow::server {
namespace {

using ::layerflow::v1::JobState;

std::string RandomId(absl::string_view prefix) {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return absl::StrCat(prefix, absl::Hex(absl::Uniform<uint64_t>(*gen), absl::kZeroPad16));
}

absl::Status Required(absl::string_view field, const std::string& value) {
  if (!value.empty()) return CheckLength(field, value, limits::kMaxIdBytes);
  return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
}

// An optional id (a filter): empty, or at most limits::kMaxIdBytes.
absl::Status OptionalId(absl::string_view field, const std::string& value) {
  return CheckLength(field, value, limits::kMaxIdBytes);
}

constexpr absl::string_view kJobsToken = "ListJobs";

// SweepSpec.max_job_seconds: at most 30 days.
constexpr int64_t kMaxJobSecondsLimit = int64_t{30} * 24 * 3600;

}  // namespace

int64_t SystemUnixMillis() { return absl::ToUnixMillis(absl::Now()); }

CoordinatorCore::CoordinatorCore(std::unique_ptr<Store> store, CoreOptions options, Clock clock,
                                 Metrics* metrics)
    : store_(std::move(store)), options_(options), clock_(std::move(clock)), metrics_(metrics) {
  RefreshGauges();
}

CoordinatorCore::~CoordinatorCore() { Shutdown(); }

absl::StatusOr<layerflow::v1::SubmitSweepResponse> CoordinatorCore::SubmitSweep(
    const layerflow::v1::SweepSpec& spec, const std::string& user) {
  LF_RETURN_IF_ERROR(ValidateSweepSpec(spec));
  if (spec.max_job_seconds() < 0 || spec.max_job_seconds() > kMaxJobSecondsLimit) {
    return absl::InvalidArgumentError(absl::StrCat("max_job_seconds: ", spec.max_job_seconds(),
                                                   " is outside [0, ", kMaxJobSecondsLimit,
                                                   "] (0: the coordinator's default)"));
  }
  NewSweep sweep;
  sweep.sweep_id = RandomId("sw-");
  sweep.spec = WithDefaults(spec);
  sweep.created_unix_ms = clock_();
  sweep.user = user;
  sweep.limits = {options_.max_queued_jobs, options_.max_queued_jobs_per_user};
  std::vector<ExpandedJob> jobs = ExpandSweepJobs(sweep.spec);
  sweep.jobs.reserve(jobs.size());
  // Ids carry the sweep and the expansion index: readable in logs and
  // stable for a sweep's lifetime.
  auto job_id = [&](int i) { return absl::StrCat(sweep.sweep_id, "-", i); };
  for (size_t i = 0; i < jobs.size(); ++i) {
    NewJob& job = sweep.jobs.emplace_back();
    job.job_id = job_id(static_cast<int>(i));
    job.chunks_total = ChunksTotal(jobs[i].spec);
    // Each job carries its sweep's deadline: the heartbeat judges it
    // without reading the sweep.
    jobs[i].spec.set_max_job_seconds(spec.max_job_seconds());
    if (jobs[i].depends_on >= 0) job.depends_on = job_id(jobs[i].depends_on);
    // An analysis of a TRAIN job's checkpoint names it by the placeholder id
    // ExpandSweepJobs gave; the id is known now. (Only then: a PROBE job
    // keeps its EXTRACT job's model, which may name another sweep's
    // checkpoint.)
    std::string placeholder;
    bool init = false;
    if (jobs[i].depends_on >= 0 &&
        sweep.jobs[jobs[i].depends_on].spec.kind() == layerflow::v1::JOB_KIND_TRAIN &&
        catalog::ParseTrainedModelName(jobs[i].spec.model(), &placeholder, &init)) {
      jobs[i].spec.set_model(catalog::TrainedModelName(job.depends_on, init));
    }
    job.spec = std::move(jobs[i].spec);
  }
  if (options_.max_submissions_per_minute > 0) {
    // A sliding minute; the slot is taken now and given back when the
    // sweep is not stored, so concurrent submissions cannot overrun it.
    absl::MutexLock lock(&submit_mu_);
    std::deque<int64_t>& times = submitted_ms_[user];
    while (!times.empty() && times.front() <= sweep.created_unix_ms - 60000) times.pop_front();
    if (static_cast<int64_t>(times.size()) >= options_.max_submissions_per_minute) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "user '", user, "' submitted ", times.size(),
          " sweeps in the last minute; a user may submit at most ",
          options_.max_submissions_per_minute, " a minute (--max-submissions-per-minute)"));
    }
    times.push_back(sweep.created_unix_ms);
  }
  if (absl::Status stored = store_->CreateSweep(sweep); !stored.ok()) {
    if (options_.max_submissions_per_minute > 0) {
      absl::MutexLock lock(&submit_mu_);
      std::deque<int64_t>& times = submitted_ms_[user];
      if (auto it = std::find(times.rbegin(), times.rend(), sweep.created_unix_ms);
          it != times.rend()) {
        times.erase(std::next(it).base());
      }
    }
    // The limits' message stands alone; other errors say what failed.
    if (absl::IsResourceExhausted(stored)) return stored;
    return absl::Status(stored.code(), absl::StrCat("storing sweep: ", stored.message()));
  }
  if (metrics_ != nullptr) metrics_->AddSweepsSubmitted(1);
  NotifyChanged();
  RefreshGauges();
  layerflow::v1::SubmitSweepResponse response;
  response.set_sweep_id(sweep.sweep_id);
  response.set_jobs(static_cast<int32_t>(sweep.jobs.size()));
  return response;
}

absl::StatusOr<layerflow::v1::Sweep> CoordinatorCore::GetSweep(const std::string& sweep_id) {
  LF_RETURN_IF_ERROR(Required("sweep_id", sweep_id));
  return store_->GetSweep(sweep_id);
}

absl::StatusOr<layerflow::v1::ListJobsResponse> CoordinatorCore::ListJobs(
    const layerflow::v1::ListJobsRequest& request) {
  LF_RETURN_IF_ERROR(OptionalId("sweep_id", request.sweep_id()));
  if (!layerflow::v1::JobState_IsValid(request.state())) {
    return absl::InvalidArgumentError(absl::StrCat("state: unknown job state ", request.state()));
  }
  LF_ASSIGN_OR_RETURN(const int32_t page_size,
                      EffectivePageSize(request.page_size(), limits::kDefaultJobsPageSize,
                                        limits::kMaxJobsPageSize));
  const std::vector<std::string> filters = {request.sweep_id(),
                                            absl::StrCat(static_cast<int>(request.state()))};
  LF_ASSIGN_OR_RETURN(const PageCursor cursor,
                      DecodePageToken(request.page_token(), kJobsToken, filters));
  // One more than the page: whether another page follows.
  LF_ASSIGN_OR_RETURN(std::vector<layerflow::v1::Job> jobs,
                      store_->ListJobs(JobFilter{request.sweep_id(), request.state(),
                                                 cursor.after_job_id, int64_t{page_size} + 1}));
  layerflow::v1::ListJobsResponse response;
  const bool more = static_cast<int64_t>(jobs.size()) > page_size;
  if (more) jobs.resize(page_size);
  for (auto& job : jobs) *response.add_jobs() = std::move(job);
  if (more) {
    response.set_next_page_token(
        EncodePageToken(kJobsToken, filters, PageCursor{response.jobs(page_size - 1).job_id(), 0}));
  }
  return response;
}

absl::StatusOr<layerflow::v1::Sweep> CoordinatorCore::CancelSweep(const std::string& sweep_id) {
  LF_RETURN_IF_ERROR(Required("sweep_id", sweep_id));
  LF_ASSIGN_OR_RETURN(layerflow::v1::Sweep sweep, store_->CancelSweep(sweep_id, clock_()));
  NotifyChanged();
  RefreshGauges();
  return sweep;
}

absl::StatusOr<layerflow::v1::Sweep> CoordinatorCore::RetrySweep(const std::string& sweep_id) {
  LF_RETURN_IF_ERROR(Required("sweep_id", sweep_id));
  LF_ASSIGN_OR_RETURN(layerflow::v1::Sweep sweep, store_->RetrySweep(sweep_id, clock_()));
  NotifyChanged();
  RefreshGauges();
  return sweep;
}

absl::StatusOr<layerflow::v1::QueryResultsResponse> CoordinatorCore::QueryResults(
    const layerflow::v1::QueryResultsRequest& request) {
  LF_RETURN_IF_ERROR(Required("sweep_id", request.sweep_id()));
  LF_RETURN_IF_ERROR(CheckLength("model", request.model(), limits::kMaxModelBytes));
  LF_RETURN_IF_ERROR(CheckLength("metric", request.metric(), limits::kMaxShortNameBytes));
  LF_RETURN_IF_ERROR(OptionalId("job_id", request.job_id()));
  return QueryResultsPage(*store_, request);
}

absl::StatusOr<layerflow::v1::RegisterWorkerResponse> CoordinatorCore::RegisterWorker(
    const layerflow::v1::RegisterWorkerRequest& request) {
  LF_RETURN_IF_ERROR(ValidateRegisterWorkerRequest(request));
  const std::string worker_id = RandomId("worker-");
  LF_RETURN_IF_ERROR(store_->RegisterWorker(worker_id, request.name(),
                                            request.capabilities().SerializeAsString(), clock_()));
  layerflow::v1::RegisterWorkerResponse response;
  response.set_worker_id(worker_id);
  response.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  response.set_lease_ttl_ms(options_.lease_ttl_ms);
  return response;
}

absl::StatusOr<layerflow::v1::LeaseJobResponse> CoordinatorCore::LeaseJob(
    const layerflow::v1::LeaseJobRequest& request) {
  LF_RETURN_IF_ERROR(Required("worker_id", request.worker_id()));
  LF_RETURN_IF_ERROR(ValidateLeaseJobRequest(request));
  std::vector<ResidentModelRef> resident;
  resident.reserve(request.resident_models_size());
  for (const layerflow::v1::ResidentModel& m : request.resident_models()) {
    resident.push_back({m.model(), m.init_scheme(), m.seed(), m.dtype()});
  }
  const int64_t now = clock_();
  RecoverIfStalled(now);
  LF_RETURN_IF_ERROR(store_->TouchWorker(request.worker_id(), now));
  // A quarantined worker stays registered and heartbeating (so it is
  // shown), but gets no work: an empty queue, as far as it can tell.
  LF_ASSIGN_OR_RETURN(const WorkerRecord worker, store_->GetWorker(request.worker_id()));
  if (worker.quarantined) return layerflow::v1::LeaseJobResponse();
  LF_ASSIGN_OR_RETURN(std::optional<Lease> lease,
                      store_->LeaseNextJob(request.worker_id(), now, options_.lease_ttl_ms,
                                           resident, options_.max_running_jobs_per_user));
  layerflow::v1::LeaseJobResponse response;
  if (!lease.has_value()) return response;
  response.set_leased(true);
  {
    absl::MutexLock lock(&leases_mu_);
    LeaseClock& clock = leases_[lease->lease_id];
    clock.job_id = lease->job.job_id();
    clock.started_ms = now;
    clock.limit_ms = LimitMs(lease->job.spec());
    clock.progress_ms = now;
    clock.seen_ms = now;
  }
  *response.mutable_job() = std::move(lease->job);
  response.set_lease_id(lease->lease_id);
  response.set_resume_from_sequence(lease->resume_from_sequence);
  if (metrics_ != nullptr) metrics_->ObserveLeased(response.job(), now);
  NotifyChanged();
  return response;
}

absl::StatusOr<layerflow::v1::HeartbeatResponse> CoordinatorCore::Heartbeat(
    const layerflow::v1::HeartbeatRequest& request) {
  LF_RETURN_IF_ERROR(Required("worker_id", request.worker_id()));
  const int64_t now = clock_();
  RecoverIfStalled(now);
  LF_RETURN_IF_ERROR(store_->TouchWorker(request.worker_id(), now));
  layerflow::v1::HeartbeatResponse response;
  if (request.job_id().empty()) return response;
  LF_RETURN_IF_ERROR(Required("job_id", request.job_id()));
  LF_RETURN_IF_ERROR(Required("lease_id", request.lease_id()));
  if (request.has_progress() && request.progress() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("progress: ", request.progress(), " is negative"));
  }
  // The deadline and the watchdog first: a lease they end is not renewed.
  LF_ASSIGN_OR_RETURN(const std::string stopped, EndLeaseIfDue(request, now));
  if (!stopped.empty()) {
    response.set_stopped(stopped);
    return response;
  }
  absl::StatusOr<bool> cancelled =
      store_->RenewLease(request.job_id(), request.lease_id(), now, options_.lease_ttl_ms);
  if (!cancelled.ok() || *cancelled) ForgetLease(request.lease_id());
  LF_RETURN_IF_ERROR(cancelled.status());
  response.set_cancelled(*cancelled);
  return response;
}

int64_t CoordinatorCore::LimitMs(const layerflow::v1::JobSpec& spec) const {
  const int64_t seconds =
      spec.max_job_seconds() > 0 ? spec.max_job_seconds() : options_.max_job_seconds;
  return seconds > 0 ? seconds * 1000 : 0;
}

void CoordinatorCore::ForgetLease(const std::string& lease_id) {
  absl::MutexLock lock(&leases_mu_);
  leases_.erase(lease_id);
}

absl::StatusOr<std::string> CoordinatorCore::EndLeaseIfDue(
    const layerflow::v1::HeartbeatRequest& request, int64_t now) {
  const std::string& job_id = request.job_id();
  const std::string& lease_id = request.lease_id();
  bool known = false;
  {
    absl::MutexLock lock(&leases_mu_);
    auto it = leases_.find(lease_id);
    known = it != leases_.end() && it->second.job_id == job_id;
  }
  if (!known) {
    // Granted before this coordinator started (or by another one on the
    // same database): both clocks start now. An unknown job is left to
    // RenewLease's answer.
    absl::StatusOr<layerflow::v1::Job> job = store_->GetJob(job_id);
    if (!job.ok() || job->state() != JobState::JOB_STATE_RUNNING) return std::string();
    absl::MutexLock lock(&leases_mu_);
    LeaseClock& clock = leases_[lease_id];
    if (clock.job_id.empty()) {
      clock.job_id = job_id;
      clock.started_ms = now;
      clock.limit_ms = LimitMs(job->spec());
      clock.progress_ms = now;
    }
  }
  LeaseClock clock;
  {
    absl::MutexLock lock(&leases_mu_);
    LeaseClock& c = leases_[lease_id];
    c.seen_ms = now;
    if (request.has_progress() && (!c.has_progress || request.progress() != c.progress)) {
      // The first report is when the job starts (a lease taken ahead waits
      // for the worker's current job unjudged).
      if (!c.has_progress) c.started_ms = now;
      c.has_progress = true;
      c.progress = request.progress();
      c.progress_ms = now;
    }
    clock = c;
  }
  // Judged from the first progress report: a lease taken ahead waits
  // unjudged, and so does every lease of a worker that reports none (an
  // older build; its hung jobs still lapse when the process dies).
  if (clock.limit_ms > 0 && clock.has_progress && now - clock.started_ms > clock.limit_ms) {
    const std::string error = absl::StrCat(
        "DEADLINE_EXCEEDED: job ", job_id, " ran ", (now - clock.started_ms) / 1000,
        " s under one lease, past its limit of max_job_seconds = ", clock.limit_ms / 1000);
    // ABORTED: the lease ended meanwhile (cancelled, lapsed): RenewLease
    // then gives the worker the usual answer.
    if (absl::Status failed = store_->FailJob(job_id, lease_id, error, now); !failed.ok()) {
      if (absl::IsAborted(failed) || absl::IsNotFound(failed)) return std::string();
      return failed;
    }
    ForgetLease(lease_id);
    std::cerr << "[coordinator] " << error << "; failed, its worker told to stop" << std::endl;
    NotifyChanged();
    RefreshGauges();
    return error;
  }
  if (options_.progress_timeout_ms > 0 && clock.has_progress &&
      now - clock.progress_ms > options_.progress_timeout_ms) {
    const std::string error =
        absl::StrCat("UNAVAILABLE: job ", job_id, " made no progress for ", now - clock.progress_ms,
                     " ms on this worker (at ", clock.progress, "; --progress-timeout-ms ",
                     options_.progress_timeout_ms, "): lease not renewed");
    const RetryPolicy policy{options_.max_attempts, options_.retry_backoff_ms,
                             options_.retry_backoff_cap_ms, options_.quarantine_after};
    absl::StatusOr<RetryResult> result = store_->RetryJob(
        job_id, lease_id, error, now, now - 3 * options_.heartbeat_interval_ms, policy);
    if (!result.ok()) {
      if (absl::IsAborted(result.status()) || absl::IsNotFound(result.status())) {
        return std::string();
      }
      return result.status();
    }
    ForgetLease(lease_id);
    if (result->requeued && metrics_ != nullptr) metrics_->AddJobRetries(1);
    std::cerr << "[coordinator] " << error << "; "
              << (result->requeued ? "retried on another worker" : "its last attempt; failed")
              << (result->worker_quarantined ? "; the worker is quarantined" : "") << std::endl;
    NotifyChanged();
    RefreshGauges();
    return error;
  }
  return std::string();
}

absl::StatusOr<CommitResult> CoordinatorCore::CommitChunk(const layerflow::v1::ResultChunk& chunk) {
  LF_RETURN_IF_ERROR(ValidateResultChunk(chunk));
  // The "commit" phase: the coordinator's own part of a chunk, measured here
  // on a real clock (clock_ may be a test's), from the lease check to the
  // stored transaction.
  const auto commit_start = std::chrono::steady_clock::now();
  RecoverIfStalled(clock_());
  // A lapsed or replaced lease is ABORTED before the content is judged (the
  // commit checks it again in its transaction); the job's spec is immutable,
  // so it is read outside that transaction.
  LF_RETURN_IF_ERROR(store_->CheckLease(chunk.job_id(), chunk.lease_id(), clock_()));
  LF_ASSIGN_OR_RETURN(const layerflow::v1::Job job, store_->GetJob(chunk.job_id()));
  LF_RETURN_IF_ERROR(ValidateChunkForJob(chunk, job));
  std::vector<layerflow::v1::MetricStat> stats(chunk.stats().begin(), chunk.stats().end());
  std::vector<int32_t> tokens(chunk.prompt_tokens().begin(), chunk.prompt_tokens().end());
  LF_ASSIGN_OR_RETURN(CommitResult result,
                      store_->CommitChunk(chunk.job_id(), chunk.lease_id(), chunk.sequence(), stats,
                                          tokens, clock_()));
  if (result.newly_committed) {
    std::vector<layerflow::v1::PhaseTime> phases(chunk.phase_times().begin(),
                                                 chunk.phase_times().end());
    layerflow::v1::PhaseTime& commit = phases.emplace_back();
    commit.set_phase("commit");
    commit.set_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_start).count());
    commit.set_count(1);
    if (metrics_ != nullptr) {
      metrics_->AddChunksCommitted(1);
      for (const layerflow::v1::PhaseTime& t : phases) {
        metrics_->ObservePhase(t.phase(), t.seconds());
      }
    }
    // Diagnostics only: the chunk is committed whatever becomes of them.
    if (absl::Status s = store_->AddPhaseTimes(chunk.job_id(), phases); !s.ok()) {
      std::cerr << "[coordinator] phase times of job " << chunk.job_id() << " not kept: " << s
                << std::endl;
    }
    NotifyChanged();
  }
  return result;
}

absl::Status CoordinatorCore::CompleteJob(const layerflow::v1::CompleteJobRequest& request) {
  LF_RETURN_IF_ERROR(Required("job_id", request.job_id()));
  LF_RETURN_IF_ERROR(Required("lease_id", request.lease_id()));
  RecoverIfStalled(clock_());
  // Whatever the answer, the worker holds this lease no longer.
  ForgetLease(request.lease_id());
  const int64_t now = clock_();
  LF_RETURN_IF_ERROR(store_->CompleteJob(request.job_id(), request.lease_id(), now));
  if (metrics_ != nullptr) metrics_->ObserveJobEnded(request.job_id(), "succeeded", now);
  NotifyChanged();
  return absl::OkStatus();
}

absl::Status CoordinatorCore::FailJob(const layerflow::v1::FailJobRequest& request) {
  LF_RETURN_IF_ERROR(Required("job_id", request.job_id()));
  LF_RETURN_IF_ERROR(Required("lease_id", request.lease_id()));
  RecoverIfStalled(clock_());
  ForgetLease(request.lease_id());
  LF_RETURN_IF_ERROR(CheckLength("error", request.error(), limits::kMaxErrorBytes));
  if (request.code() < 0 || request.code() > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(
        absl::StrCat("code: ", request.code(), " is not a status code (0..16)"));
  }
  const std::string error = request.error().empty() ? "worker reported failure" : request.error();
  const absl::Status reported(static_cast<absl::StatusCode>(request.code()), error);
  // No code (code 0, an older worker): final, as every error was before.
  if (reported.ok() || ClassifyJobError(reported) == JobErrorClass::kBadInput) {
    const int64_t now = clock_();
    LF_RETURN_IF_ERROR(store_->FailJob(request.job_id(), request.lease_id(), error, now));
    if (metrics_ != nullptr) metrics_->ObserveJobEnded(request.job_id(), "failed", now);
    NotifyChanged();
    RefreshGauges();
    return absl::OkStatus();
  }
  const int64_t now = clock_();
  const RetryPolicy policy{options_.max_attempts, options_.retry_backoff_ms,
                           options_.retry_backoff_cap_ms, options_.quarantine_after};
  // "Another live worker" uses the same 3 heartbeats as the connected gauge.
  LF_ASSIGN_OR_RETURN(const RetryResult result,
                      store_->RetryJob(request.job_id(), request.lease_id(), error, now,
                                       now - 3 * options_.heartbeat_interval_ms, policy));
  if (metrics_ != nullptr) {
    metrics_->ObserveJobEnded(request.job_id(), result.requeued ? "retried" : "failed", now);
  }
  if (result.requeued) {
    if (metrics_ != nullptr) metrics_->AddJobRetries(1);
    std::cerr << "[coordinator] job " << request.job_id() << ": host error, retried after "
              << result.not_before_unix_ms - now << " ms: " << error << std::endl;
  } else {
    std::cerr << "[coordinator] job " << request.job_id()
              << ": host error on its last attempt; failed" << std::endl;
  }
  if (result.worker_quarantined) {
    std::cerr << "[coordinator] worker of job " << request.job_id() << " quarantined after "
              << options_.quarantine_after << " host errors in a row" << std::endl;
  }
  NotifyChanged();
  RefreshGauges();
  return absl::OkStatus();
}

absl::Status CoordinatorCore::ReleaseWorker(const std::string& worker_id) {
  LF_RETURN_IF_ERROR(Required("worker_id", worker_id));
  LF_RETURN_IF_ERROR(store_->ReleaseWorker(worker_id));
  NotifyChanged();
  RefreshGauges();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WorkerRecord>> CoordinatorCore::ListWorkers() {
  return store_->ListWorkers();
}

absl::Status CoordinatorCore::ReleaseJob(const layerflow::v1::ReleaseJobRequest& request) {
  LF_RETURN_IF_ERROR(Required("job_id", request.job_id()));
  LF_RETURN_IF_ERROR(Required("lease_id", request.lease_id()));
  RecoverIfStalled(clock_());
  ForgetLease(request.lease_id());
  LF_RETURN_IF_ERROR(store_->ReleaseLease(request.job_id(), request.lease_id(), clock_()));
  NotifyChanged();
  RefreshGauges();
  return absl::OkStatus();
}

absl::Status CoordinatorCore::CheckLease(const std::string& job_id, const std::string& lease_id) {
  LF_RETURN_IF_ERROR(Required("job_id", job_id));
  LF_RETURN_IF_ERROR(Required("lease_id", lease_id));
  const int64_t now = clock_();
  RecoverIfStalled(now);
  return store_->CheckLease(job_id, lease_id, now);
}

absl::Status CoordinatorCore::TouchWorker(const std::string& worker_id) {
  LF_RETURN_IF_ERROR(Required("worker_id", worker_id));
  return store_->TouchWorker(worker_id, clock_());
}

absl::StatusOr<int64_t> CoordinatorCore::Recover() {
  const int64_t now = clock_();
  LF_ASSIGN_OR_RETURN(const int64_t extended,
                      store_->ExtendRunningLeases(now, options_.lease_ttl_ms));
  {
    absl::MutexLock lock(&alive_mu_);
    alive_ms_ = std::max(alive_ms_, now);
  }
  if (extended > 0) {
    std::cerr << "[coordinator] recovery: " << extended << " running lease"
              << (extended == 1 ? "" : "s") << " extended by " << options_.lease_ttl_ms
              << " ms for their workers to re-attach (no attempt charged)" << std::endl;
    NotifyChanged();
  }
  return extended;
}

void CoordinatorCore::RecoverIfStalled(int64_t now) {
  if (options_.stall_threshold_ms <= 0) return;
  // Held across the recovery pass: a call that arrives with the stalled
  // one waits for the extension instead of finding its lease expired.
  absl::MutexLock lock(&alive_mu_);
  const int64_t gap = alive_ms_ == 0 ? 0 : now - alive_ms_;
  alive_ms_ = std::max(alive_ms_, now);
  if (gap < options_.stall_threshold_ms) return;
  absl::StatusOr<int64_t> extended = store_->ExtendRunningLeases(now, options_.lease_ttl_ms);
  if (!extended.ok()) {
    // Retried at the next sign of life.
    alive_ms_ = now - options_.stall_threshold_ms;
    std::cerr << "[coordinator] recovery after a " << gap
              << " ms stall failed: " << extended.status() << std::endl;
    return;
  }
  std::cerr << "[coordinator] stalled for " << gap << " ms; " << *extended << " running lease"
            << (*extended == 1 ? "" : "s") << " extended by " << options_.lease_ttl_ms
            << " ms (no attempt charged)" << std::endl;
}

absl::StatusOr<int64_t> CoordinatorCore::ReapOnce() {
  const int64_t now = clock_();
  RecoverIfStalled(now);
  {
    // Clocks of leases nobody heartbeats any more (lapsed, or given up
    // without a word): the store has requeued them or will.
    absl::MutexLock lock(&leases_mu_);
    absl::erase_if(leases_, [&](const auto& entry) {
      return now - entry.second.seen_ms > 2 * options_.lease_ttl_ms;
    });
  }
  LF_ASSIGN_OR_RETURN(int64_t lapsed, store_->RequeueLapsedLeases(now, options_.max_attempts,
                                                                  options_.retry_backoff_ms));
  if (lapsed > 0) {
    if (metrics_ != nullptr) metrics_->AddLeasesLapsed(lapsed);
    NotifyChanged();
  }
  RefreshGauges();
  return lapsed;
}

void CoordinatorCore::StartReaper() {
  if (reaper_.joinable()) return;
  reaper_ = std::thread([this] {
    // A notification, not change_mu_'s condition variable: the reaper keeps
    // its own pace instead of waking on every change.
    while (!stop_reaper_.WaitForNotificationWithTimeout(
        absl::Milliseconds(options_.reaper_interval_ms))) {
      // A failed pass (database busy beyond the timeout) is retried on the
      // next tick; nothing is lost.
      (void)ReapOnce();
    }
  });
}

void CoordinatorCore::Shutdown() {
  bool first = false;
  {
    absl::MutexLock lock(&change_mu_);
    first = !shut_down_;
    shut_down_ = true;
    changed_.SignalAll();
  }
  if (!first) return;
  stop_reaper_.Notify();
  if (reaper_.joinable()) reaper_.join();
}

bool CoordinatorCore::is_shut_down() const {
  absl::MutexLock lock(&change_mu_);
  return shut_down_;
}

uint64_t CoordinatorCore::version() const {
  absl::MutexLock lock(&change_mu_);
  return version_;
}

uint64_t CoordinatorCore::WaitForChange(uint64_t seen, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&change_mu_);
  while (version_ == seen && !shut_down_) {
    if (changed_.WaitWithDeadline(&change_mu_, deadline)) break;
  }
  return version_;
}

void CoordinatorCore::NotifyChanged() {
  absl::MutexLock lock(&change_mu_);
  ++version_;
  changed_.SignalAll();
}

void CoordinatorCore::RefreshGauges() {
  if (metrics_ == nullptr) return;
  if (absl::StatusOr<JobStateCounts> counts = store_->CountJobsByState(); counts.ok()) {
    metrics_->SetJobs("queued", (*counts)[JobState::JOB_STATE_QUEUED]);
    metrics_->SetJobs("running", (*counts)[JobState::JOB_STATE_RUNNING]);
    metrics_->SetJobs("succeeded", (*counts)[JobState::JOB_STATE_SUCCEEDED]);
    metrics_->SetJobs("failed", (*counts)[JobState::JOB_STATE_FAILED]);
    metrics_->SetJobs("cancelled", (*counts)[JobState::JOB_STATE_CANCELLED]);
  }
  // "Connected" = seen within 3 heartbeat intervals: one missed heartbeat
  // is noise, three is a worker gone.
  const int64_t since = clock_() - 3 * options_.heartbeat_interval_ms;
  if (absl::StatusOr<int64_t> live = store_->CountLiveWorkers(since); live.ok()) {
    metrics_->SetWorkersConnected(*live);
  }
  if (absl::StatusOr<std::vector<WorkerRecord>> workers = store_->ListWorkers(); workers.ok()) {
    int64_t quarantined = 0;
    for (const WorkerRecord& w : *workers) quarantined += w.quarantined ? 1 : 0;
    metrics_->SetWorkersQuarantined(quarantined);
  }
}

}  // namespace layerflow::server
