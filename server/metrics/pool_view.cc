#include "server/metrics/pool_view.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "layerflow/v1/worker.pb.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;

}  // namespace

std::string HostOfWorkerName(absl::string_view name) {
  const size_t colon = name.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == name.size()) {
    return std::string(name);
  }
  for (char c : name.substr(colon + 1)) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::string(name);
  }
  return std::string(name.substr(0, colon));
}

PoolView::PoolView(CoordinatorCore* core, const auth::Authorizer* auth, const Metrics* metrics,
                   Clock clock)
    : core_(core), auth_(auth), metrics_(metrics), clock_(std::move(clock)) {}

absl::StatusOr<std::vector<v1::Job>> PoolView::AllJobs(const std::string& sweep_id,
                                                       v1::JobState state) {
  std::vector<v1::Job> jobs;
  v1::ListJobsRequest request;
  request.set_sweep_id(sweep_id);
  request.set_state(state);
  request.set_page_size(kPageSize);
  while (true) {
    LF_ASSIGN_OR_RETURN(v1::ListJobsResponse page, core_->ListJobs(request));
    for (v1::Job& job : *page.mutable_jobs()) jobs.push_back(std::move(job));
    if (page.next_page_token().empty()) return jobs;
    request.set_page_token(page.next_page_token());
  }
}

absl::StatusOr<std::shared_ptr<const PoolView::Jobs>> PoolView::CurrentJobs() {
  // Read before the jobs: a change while they are read leaves the cache
  // labelled older than it is, so the next call reads again.
  const uint64_t version = core_->version();
  {
    absl::MutexLock lock(&mu_);
    if (jobs_ != nullptr && jobs_->version == version) return jobs_;
  }
  auto jobs = std::make_shared<Jobs>();
  jobs->version = version;
  LF_ASSIGN_OR_RETURN(std::vector<v1::Job> queued, AllJobs("", v1::JOB_STATE_QUEUED));
  LF_ASSIGN_OR_RETURN(jobs->running, AllJobs("", v1::JOB_STATE_RUNNING));
  // Each sweep's owner and priority, once.
  absl::flat_hash_map<std::string, int32_t> priority;
  auto owner = [&](const std::string& sweep_id) -> absl::StatusOr<std::string> {
    auto it = jobs->owner_of.find(sweep_id);
    if (it != jobs->owner_of.end()) return it->second;
    std::string user = "anonymous";
    if (auth_ != nullptr) {
      LF_ASSIGN_OR_RETURN(user, auth_->SweepOwner(sweep_id));
      if (user.empty()) user = "unknown";
    }
    jobs->owner_of.emplace(sweep_id, user);
    return user;
  };
  // Store::LeaseNextJob's order, played forward as if no job ended
  // meanwhile: each lease goes to the user with the fewest running jobs
  // (ties by name) among those with queued ones; within a user, the
  // highest priority, then the oldest (creation order, which AllJobs gives).
  std::map<std::string, std::vector<v1::Job>> by_user;
  for (v1::Job& job : queued) {
    if (!priority.contains(job.sweep_id())) {
      LF_ASSIGN_OR_RETURN(const v1::Sweep sweep, core_->GetSweep(job.sweep_id()));
      priority[job.sweep_id()] = sweep.spec().priority();
    }
    LF_ASSIGN_OR_RETURN(std::string user, owner(job.sweep_id()));
    by_user[user].push_back(std::move(job));
  }
  std::map<std::string, int64_t> running_of;
  for (const v1::Job& job : jobs->running) {
    LF_ASSIGN_OR_RETURN(std::string user, owner(job.sweep_id()));
    ++running_of[user];
  }
  // (running, user) -> the user's next job; the smallest leases next.
  std::set<std::pair<int64_t, std::string>> turn;
  std::map<std::string, size_t> next;
  for (auto& [user, list] : by_user) {
    std::stable_sort(list.begin(), list.end(), [&](const v1::Job& a, const v1::Job& b) {
      return priority[a.sweep_id()] > priority[b.sweep_id()];
    });
    turn.emplace(running_of[user], user);
    next[user] = 0;
  }
  jobs->queued.reserve(queued.size());
  while (!turn.empty()) {
    auto [running, user] = *turn.begin();
    turn.erase(turn.begin());
    std::vector<v1::Job>& list = by_user[user];
    jobs->queued.push_back(std::move(list[next[user]++]));
    if (next[user] < list.size()) turn.emplace(running + 1, user);
  }
  absl::MutexLock lock(&mu_);
  jobs_ = jobs;
  return jobs_;
}

absl::StatusOr<v1::ListWorkersResponse> PoolView::Workers(bool include_reasons,
                                                          const std::vector<v1::Job>& running) {
  LF_ASSIGN_OR_RETURN(std::vector<WorkerRecord> workers, core_->ListWorkers());
  absl::flat_hash_map<std::string, std::string> job_of;  // worker -> job it holds
  for (const v1::Job& job : running) {
    if (!job.worker_id().empty()) job_of[job.worker_id()] = job.job_id();
  }
  const int64_t live_since = clock_() - kLiveHeartbeats * core_->options().heartbeat_interval_ms;
  v1::ListWorkersResponse response;
  int64_t gpus_total = 0, gpus_busy = 0;
  for (const WorkerRecord& w : workers) {
    v1::WorkerInfo& info = *response.add_workers();
    info.set_worker_id(w.worker_id);
    info.set_name(w.name);
    info.set_host(HostOfWorkerName(w.name));
    v1::WorkerCapabilities caps;
    // Written by RegisterWorker from a parsed message: a row that does not
    // parse shows no device rather than failing the listing.
    if (caps.ParseFromString(w.capabilities_bytes)) {
      info.set_device_type(caps.device_type());
      info.set_gpu_count(caps.gpu_count());
      info.set_gpu_memory_bytes(caps.gpu_memory_bytes());
    }
    info.set_registered_unix_ms(w.registered_unix_ms);
    info.set_last_seen_unix_ms(w.last_seen_unix_ms);
    if (auto it = job_of.find(w.worker_id); it != job_of.end()) info.set_job_id(it->second);
    const bool live = w.last_seen_unix_ms >= live_since;
    if (w.quarantined) {
      info.set_state(v1::WORKER_STATE_QUARANTINED);
      if (include_reasons) info.set_quarantine_reason(w.quarantine_reason);
    } else if (!live) {
      info.set_state(v1::WORKER_STATE_GONE);
    } else {
      info.set_state(info.job_id().empty() ? v1::WORKER_STATE_IDLE : v1::WORKER_STATE_RUNNING);
    }
    if (live) {
      gpus_total += info.gpu_count();
      if (!info.job_id().empty()) gpus_busy += info.gpu_count();
    }
  }
  response.set_gpus_total(static_cast<int32_t>(gpus_total));
  response.set_gpus_busy(static_cast<int32_t>(gpus_busy));
  return response;
}

absl::StatusOr<v1::ListWorkersResponse> PoolView::ListWorkers(bool include_reasons) {
  LF_ASSIGN_OR_RETURN(std::shared_ptr<const Jobs> jobs, CurrentJobs());
  return Workers(include_reasons, jobs->running);
}

absl::StatusOr<v1::GetQueueResponse> PoolView::GetQueue(const std::string& sweep_id) {
  // INVALID_ARGUMENT / NOT_FOUND as GetSweep.
  LF_RETURN_IF_ERROR(core_->GetSweep(sweep_id).status());
  LF_ASSIGN_OR_RETURN(std::shared_ptr<const Jobs> jobs, CurrentJobs());
  const std::vector<v1::Job>& queued = jobs->queued;
  const std::vector<v1::Job>& running = jobs->running;
  LF_ASSIGN_OR_RETURN(v1::ListWorkersResponse pool, Workers(false, running));

  int32_t available = 0, idle = 0;
  for (const v1::WorkerInfo& w : pool.workers()) {
    if (w.state() == v1::WORKER_STATE_IDLE || w.state() == v1::WORKER_STATE_RUNNING) ++available;
    if (w.state() == v1::WORKER_STATE_IDLE) ++idle;
  }
  const RecentDurations recent =
      metrics_ != nullptr ? metrics_->RecentJobSeconds() : RecentDurations{};
  v1::GetQueueResponse response;
  response.set_queued_total(static_cast<int64_t>(queued.size()));
  response.set_running_total(static_cast<int64_t>(running.size()));
  response.set_workers_available(available);
  response.set_recent_job_seconds(recent.mean_seconds);
  response.set_recent_jobs(recent.jobs);

  // The states of the sweep's jobs, for its dependencies.
  absl::flat_hash_map<std::string, v1::JobState> state_of;
  bool has_dependents = false;
  for (const v1::Job& job : queued) {
    if (job.sweep_id() == sweep_id && !job.depends_on().empty()) has_dependents = true;
  }
  if (has_dependents) {
    LF_ASSIGN_OR_RETURN(std::vector<v1::Job> all, AllJobs(sweep_id, v1::JOB_STATE_UNSPECIFIED));
    for (const v1::Job& job : all) state_of[job.job_id()] = job.state();
  }
  for (size_t p = 0; p < queued.size(); ++p) {
    const v1::Job& job = queued[p];
    if (job.sweep_id() != sweep_id) continue;
    v1::QueuedJob& out = *response.add_jobs();
    out.set_job_id(job.job_id());
    out.set_position(static_cast<int64_t>(p));
    if (!job.depends_on().empty()) {
      auto it = state_of.find(job.depends_on());
      out.set_blocked(it == state_of.end() || it->second != v1::JOB_STATE_SUCCEEDED);
    }
    double start = -1;
    if (available > 0) {
      if (static_cast<int64_t>(p) < idle) {
        start = 0;
      } else if (recent.jobs > 0) {
        start = static_cast<double>(static_cast<int64_t>(p) - idle + 1) * recent.mean_seconds /
                available;
      }
    }
    out.set_expected_start_seconds(start);
  }
  return response;
}

absl::StatusOr<PoolSnapshot> PoolView::Snapshot() {
  LF_ASSIGN_OR_RETURN(std::shared_ptr<const Jobs> jobs, CurrentJobs());
  const std::vector<v1::Job>& queued = jobs->queued;
  const std::vector<v1::Job>& running = jobs->running;
  PoolSnapshot snapshot;
  auto count = [&](const std::vector<v1::Job>& list, const std::string& state) -> absl::Status {
    for (const v1::Job& job : list) {
      auto it = jobs->owner_of.find(job.sweep_id());
      if (it == jobs->owner_of.end()) {
        return absl::InternalError(absl::StrCat("no owner read for sweep ", job.sweep_id()));
      }
      ++snapshot.user_jobs[{it->second, state}];
    }
    return absl::OkStatus();
  };
  LF_RETURN_IF_ERROR(count(queued, "queued"));
  LF_RETURN_IF_ERROR(count(running, "running"));
  LF_ASSIGN_OR_RETURN(v1::ListWorkersResponse pool, Workers(false, running));
  for (const v1::WorkerInfo& w : pool.workers()) {
    if (w.state() != v1::WORKER_STATE_GONE && !w.job_id().empty()) ++snapshot.workers_busy;
  }
  snapshot.gpus_total = pool.gpus_total();
  snapshot.gpus_busy = pool.gpus_busy();
  return snapshot;
}

}  // namespace layerflow::server
