#include "client/pool_output.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace layerflow::client {
namespace {

// Left-aligned columns two spaces apart; the last column is not padded.
std::string Columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      absl::StrAppend(&line, row[c]);
      if (c + 1 < row.size()) line.append(width[c] - row[c].size() + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string Seconds(double s) {
  if (s < 10) return absl::StrFormat("%.1f s", s);
  return absl::StrFormat("%.0f s", s);
}

}  // namespace

std::string WorkerStateName(v1::WorkerState state) {
  switch (state) {
    case v1::WORKER_STATE_IDLE:
      return "idle";
    case v1::WORKER_STATE_RUNNING:
      return "running";
    case v1::WORKER_STATE_QUARANTINED:
      return "quarantined";
    case v1::WORKER_STATE_GONE:
      return "gone";
    default:
      return "?";
  }
}

std::string FormatWorkersTable(const v1::ListWorkersResponse& workers, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows = {
      {"WORKER", "HOST", "DEVICE", "GPUS", "STATE", "JOB", "LAST SEEN"}};
  std::set<std::string> hosts;
  int running = 0, idle = 0, quarantined = 0, gone = 0;
  std::string out;
  std::vector<std::pair<size_t, std::string>> reasons;  // row -> reason
  for (const v1::WorkerInfo& w : workers.workers()) {
    hosts.insert(w.host());
    switch (w.state()) {
      case v1::WORKER_STATE_RUNNING:
        ++running;
        break;
      case v1::WORKER_STATE_IDLE:
        ++idle;
        break;
      case v1::WORKER_STATE_QUARANTINED:
        ++quarantined;
        break;
      case v1::WORKER_STATE_GONE:
        ++gone;
        break;
      default:
        break;
    }
    const int64_t ago = std::max<int64_t>(0, now_ms - w.last_seen_unix_ms()) / 1000;
    rows.push_back({w.worker_id(), w.host().empty() ? "-" : w.host(),
                    w.device_type().empty() ? "-" : w.device_type(), absl::StrCat(w.gpu_count()),
                    WorkerStateName(w.state()), w.job_id().empty() ? "-" : w.job_id(),
                    absl::StrCat(ago, " s ago")});
    if (!w.quarantine_reason().empty())
      reasons.emplace_back(rows.size() - 1, w.quarantine_reason());
  }
  // The table, with each reason under its worker's row.
  const std::string table = Columns(rows);
  size_t row = 0, start = 0;
  auto next_reason = reasons.begin();
  while (start < table.size()) {
    const size_t end = table.find('\n', start);
    absl::StrAppend(&out, table.substr(start, end - start + 1));
    if (next_reason != reasons.end() && next_reason->first == row) {
      absl::StrAppend(&out, "    reason: ", next_reason->second, "\n");
      ++next_reason;
    }
    start = end + 1;
    ++row;
  }
  const int n = workers.workers_size();
  absl::StrAppend(&out, n, n == 1 ? " worker" : " workers", " on ", hosts.size(),
                  hosts.size() == 1 ? " host" : " hosts", ": ", running, " running, ", idle,
                  " idle, ", quarantined, " quarantined, ", gone, " gone; GPUs ",
                  workers.gpus_busy(), " of ", workers.gpus_total(), " busy\n");
  return out;
}

std::string FormatExpectedStart(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "unknown";
  if (seconds < 0.5) return "now";
  if (seconds < 90) return absl::StrFormat("in ~%.0f s", seconds);
  if (seconds < 90 * 60) return absl::StrFormat("in ~%.0f min", seconds / 60);
  return absl::StrFormat("in ~%.1f h", seconds / 3600);
}

std::string FormatQueue(const v1::GetQueueResponse& queue, int max_jobs) {
  const int n = queue.jobs_size();
  std::string out =
      absl::StrCat("queue: ", n, n == 1 ? " job" : " jobs",
                   " of this sweep queued; the pool: ", queue.queued_total(), " queued, ",
                   queue.running_total(), " running, ", queue.workers_available(),
                   queue.workers_available() == 1 ? " worker" : " workers");
  if (queue.recent_jobs() > 0) {
    absl::StrAppend(&out, "; recent jobs ", Seconds(queue.recent_job_seconds()), " (",
                    queue.recent_jobs(), ")");
  } else {
    absl::StrAppend(&out, "; no recent job durations");
  }
  absl::StrAppend(&out, "\n");
  if (n == 0) return out;
  std::vector<std::vector<std::string>> rows = {{"  JOB", "POSITION", "EXPECTED START"}};
  for (int i = 0; i < n && i < max_jobs; ++i) {
    const v1::QueuedJob& job = queue.jobs(i);
    std::string start = FormatExpectedStart(job.expected_start_seconds());
    if (job.blocked()) {
      start = job.expected_start_seconds() < 0
                  ? "after its dependency"
                  : absl::StrCat("after its dependency, ", start, " at the earliest");
    }
    rows.push_back({absl::StrCat("  ", job.job_id()), absl::StrCat(job.position()), start});
  }
  absl::StrAppend(&out, Columns(rows));
  if (n > max_jobs) absl::StrAppend(&out, "  ... and ", n - max_jobs, " more\n");
  return out;
}

}  // namespace layerflow::client
