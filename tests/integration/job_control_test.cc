// Issue 14, item 4, end to end: a coordinator and real layerflow-worker
// processes on loopback.
//  - A cancellation reaches the running worker within 2 s (before, the
//    worker learnt of it at its next heartbeat, every 5 s by default, and
//    only after the chunk in progress), commits nothing more and frees the
//    worker for the next job.
//  - A job past its sweep's max_job_seconds fails with DEADLINE_EXCEEDED
//    and its worker stops.
//  - A job hung on one worker (LAYERFLOW_TEST_HANG_MS) is taken from it by
//    the progress watchdog and finished on another.
//  - Three kills (SIGKILL) of the coordinator during one job cost it no
//    attempt.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "server/coordinator_server.h"
#include "tests/integration/integration_util.h"
#include "tests/server/test_util.h"

namespace layerflow {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

double SecondsBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A layerflow-worker process whose stderr goes to `log`; `env` entries
// ("NAME=value") are added to the test's environment.
class Worker {
 public:
  Worker(int port, const std::string& name, const std::filesystem::path& log,
         std::vector<std::string> extra_args = {}, std::vector<std::string> env = {})
      : log_(log),
        process_(integration::WorkerCommand(port, name, std::move(extra_args)),
                 {.log = log, .stderr_only = true, .env = std::move(env)}) {}
  // SIGKILL for a worker hung in a job (SIGTERM waits for its chunk).
  void Kill(int signal) { process_.Kill(signal); }
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // Polls the log every 5 ms until it contains `line`; the time it was
  // first seen, or nullopt after `timeout`.
  std::optional<SteadyClock::time_point> WaitForLog(const std::string& line,
                                                    std::chrono::seconds timeout) const {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      if (absl::StrContains(Log(), line)) return SteadyClock::now();
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  }

 private:
  std::filesystem::path log_;
  integration::ChildProcess process_;  // SIGTERMed at the end
};

class JobControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerflow_job_control_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    options_ = integration::LoopbackOptions((dir_ / "store.db").string());
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  void Start() {
    auto started = server::CoordinatorServer::Start(options_);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    // A restart listens where the first start did, so workers find it.
    options_.listen_address = absl::StrCat("127.0.0.1:", server_->port());
    stub_ = integration::CoordinatorStub(server_->port());
  }

  // One job (the default seed) of `chunks` one-prompt chunks.
  static v1::SweepSpec Spec(const std::string& name, int chunks) {
    return integration::KvprSweep(name, 0, chunks);
  }

  std::string Submit(const v1::SweepSpec& spec) {
    return integration::SubmitSweep(*stub_, spec).sweep_id();
  }

  v1::Job Job(const std::string& job_id) {
    grpc::ClientContext ctx;
    v1::ListJobsRequest request;
    request.set_sweep_id(job_id.substr(0, job_id.rfind('-')));
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(&ctx, request, &response).ok());
    for (const v1::Job& job : response.jobs()) {
      if (job.job_id() == job_id) return job;
    }
    ADD_FAILURE() << "no job " << job_id;
    return v1::Job();
  }

  // Waits until `done(job)` holds; false after `timeout`.
  bool WaitForJob(const std::string& job_id, const std::function<bool(const v1::Job&)>& done,
                  std::chrono::seconds timeout = 120s) {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      if (done(Job(job_id))) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  using RowKey = std::tuple<std::string, int, int, int, int>;
  std::map<RowKey, v1::ResultRow> Results(const std::string& sweep_id) {
    grpc::ClientContext ctx;
    v1::QueryResultsRequest request;
    request.set_sweep_id(sweep_id);
    request.set_page_size(10000);
    v1::QueryResultsResponse response;
    grpc::Status status = stub_->QueryResults(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.next_page_token(), "");
    std::map<RowKey, v1::ResultRow> rows;
    for (const auto& row : response.rows()) {
      rows[{row.metric(), row.layer(), row.has_layer_b() ? row.layer_b() : -1,
            row.has_head() ? row.head() : -1, row.has_position() ? row.position() : -1}] = row;
    }
    return rows;
  }

  // Rows of two sweeps of the same spec agree: value and count.
  void ExpectSameRows(const std::string& sweep_id, const std::string& reference_id) {
    auto rows = Results(sweep_id);
    auto reference = Results(reference_id);
    ASSERT_FALSE(reference.empty());
    ASSERT_EQ(rows.size(), reference.size());
    for (const auto& [key, expected] : reference) {
      auto it = rows.find(key);
      ASSERT_NE(it, rows.end()) << std::get<0>(key) << " layer " << std::get<1>(key);
      EXPECT_EQ(it->second.count(), expected.count()) << std::get<0>(key);
      EXPECT_NEAR(it->second.value(), expected.value(), 1e-9 * (1 + std::abs(expected.value())))
          << std::get<0>(key) << " layer " << std::get<1>(key);
    }
  }

  std::string WorkerId(const std::string& name) {
    absl::StatusOr<std::string> report = server::AdministerWorkers(options_.db_path, "");
    EXPECT_TRUE(report.ok()) << report.status();
    for (absl::string_view line : absl::StrSplit(report.ok() ? *report : "", '\n')) {
      std::vector<std::string> fields = absl::StrSplit(line, ' ');
      if (fields.size() > 1 && fields[1] == name) return fields[0];
    }
    return "";
  }

  std::filesystem::path dir_;
  server::CoordinatorOptions options_;
  std::unique_ptr<server::CoordinatorServer> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

// The coordinator's defaults (heartbeat interval, TTL) as a lab runs them.
// The worker spends 3 s after each chunk (--pause-after-chunk-ms), so the
// cancellation finds it between chunks with no chunk to send: only the
// heartbeat's reply can tell it, as for a job inside a long chunk.
TEST_F(JobControlTest, CancelReachesTheRunningWorkerWithinTwoSeconds) {
  Start();
  ASSERT_EQ(options_.heartbeat_interval_ms, 1000);
  Worker worker(server_->port(), "runner", dir_ / "runner.log", {"--pause-after-chunk-ms", "3000"});
  const std::string long_id = Submit(Spec("long", 60));
  const std::string job_id = long_id + "-0";
  ASSERT_TRUE(WaitForJob(job_id, [](const v1::Job& j) { return j.chunks_committed() >= 1; }))
      << worker.Log();
  std::this_thread::sleep_for(500ms);  // inside the pause
  // The next sweep waits for the worker.
  const std::string next_id = Submit(Spec("next", 2));
  ASSERT_EQ(Job(next_id + "-0").state(), v1::JOB_STATE_QUEUED);

  grpc::ClientContext ctx;
  v1::CancelSweepRequest request;
  request.set_sweep_id(long_id);
  v1::Sweep cancelled;
  const auto cancel_start = SteadyClock::now();
  grpc::Status status = stub_->CancelSweep(&ctx, request, &cancelled);
  const auto cancel_returned = SteadyClock::now();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(cancelled.jobs_cancelled(), 1);
  const int64_t committed_at_cancel = cancelled.chunks_committed();
  std::optional<SteadyClock::time_point> stopped =
      worker.WaitForLog(absl::StrCat("stopped job ", job_id, " (cancelled)"), 10s);
  ASSERT_TRUE(stopped.has_value()) << worker.Log();
  const double latency = SecondsBetween(cancel_start, *stopped);
  std::cerr << "cancel latency (CancelSweep call to the worker stopping the job): " << latency
            << " s (the call itself " << SecondsBetween(cancel_start, cancel_returned) << " s)"
            << std::endl;
  EXPECT_LE(latency, 2.0) << worker.Log();

  EXPECT_TRUE(absl::StrContains(worker.Log(), absl::StrCat("job ", job_id, " cancelled; stopping")))
      << worker.Log();  // told by the heartbeat's reply
  // The worker is free at once: the next sweep's job runs there and
  // succeeds; the cancelled job committed nothing after the cancel.
  std::optional<SteadyClock::time_point> next_leased =
      worker.WaitForLog(absl::StrCat("leased job ", next_id, "-0"), 10s);
  ASSERT_TRUE(next_leased.has_value()) << worker.Log();
  const double next_started = SecondsBetween(cancel_start, *next_leased);
  std::cerr << "the next job leased " << next_started << " s after the cancel" << std::endl;
  EXPECT_LE(next_started, 2.5);
  ASSERT_TRUE(WaitForJob(next_id + "-0", [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_SUCCEEDED;
  })) << worker.Log();
  const v1::Job after = Job(job_id);
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(after.chunks_committed(), committed_at_cancel);
  EXPECT_LT(after.chunks_committed(), 60);
  EXPECT_FALSE(absl::StrContains(worker.Log(), "FailJob")) << worker.Log();
}

TEST_F(JobControlTest, JobPastMaxJobSecondsFailsWithDeadlineExceededAndItsWorkerStops) {
  options_.lease_ttl_ms = 3000;
  options_.heartbeat_interval_ms = 200;
  options_.reaper_interval_ms = 100;
  Start();
  Worker worker(server_->port(), "slow", dir_ / "slow.log", {"--pause-after-chunk-ms", "200"});
  v1::SweepSpec spec = Spec("deadline", 60);
  spec.set_max_job_seconds(2);
  const std::string sweep_id = Submit(spec);
  const std::string job_id = sweep_id + "-0";
  ASSERT_TRUE(WaitForJob(
      job_id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_FAILED; }, 60s))
      << worker.Log();
  const v1::Job job = Job(job_id);
  EXPECT_TRUE(absl::StartsWith(
      job.error(), absl::StrCat("DEADLINE_EXCEEDED: job ", job_id, " ran 2 s under one lease")))
      << job.error();
  EXPECT_TRUE(absl::EndsWith(job.error(), "past its limit of max_job_seconds = 2")) << job.error();
  EXPECT_EQ(job.attempts(), 1);  // final, not retried
  EXPECT_GT(job.chunks_committed(), 0);
  EXPECT_LT(job.chunks_committed(), 60);
  // The worker was told in the heartbeat's reply and stopped: within a
  // heartbeat and a chunk, and it committed nothing more.
  ASSERT_TRUE(worker.WaitForLog(absl::StrCat("stopped job ", job_id, " (lease lost)"), 5s))
      << worker.Log();
  EXPECT_TRUE(absl::StrContains(worker.Log(), "ended by the coordinator: DEADLINE_EXCEEDED"))
      << worker.Log();
  EXPECT_EQ(Job(job_id).chunks_committed(), job.chunks_committed());
  // And runs the next job.
  const std::string next_id = Submit(Spec("after-deadline", 2));
  EXPECT_TRUE(WaitForJob(next_id + "-0", [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_SUCCEEDED;
  })) << worker.Log();
}

TEST_F(JobControlTest, JobHungOnOneWorkerIsRetriedAndFinishedOnAnother) {
  options_.lease_ttl_ms = 3000;
  options_.heartbeat_interval_ms = 200;
  options_.reaper_interval_ms = 100;
  options_.progress_timeout_ms = 2000;
  options_.retry_backoff_ms = 50;
  Start();
  // The hung worker alone first, so that it takes the job; it sleeps 10
  // minutes before each chunk, heedless of anything, while its heartbeat
  // thread keeps renewing the lease.
  Worker hung(server_->port(), "hung", dir_ / "hung.log", {}, {"LAYERFLOW_TEST_HANG_MS=600000"});
  const std::string sweep_id = Submit(Spec("hang", 4));
  const std::string job_id = sweep_id + "-0";
  ASSERT_TRUE(WaitForJob(job_id, [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_RUNNING;
  })) << hung.Log();
  const std::string hung_id = WorkerId("hung");
  ASSERT_FALSE(hung_id.empty());
  EXPECT_EQ(Job(job_id).worker_id(), hung_id);
  Worker healthy(server_->port(), "healthy", dir_ / "healthy.log");

  const auto start = SteadyClock::now();
  ASSERT_TRUE(
      WaitForJob(job_id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_SUCCEEDED; }))
      << hung.Log() << healthy.Log();
  std::cerr << "hung job finished elsewhere after " << SecondsBetween(start, SteadyClock::now())
            << " s" << std::endl;
  const v1::Job job = Job(job_id);
  EXPECT_EQ(job.attempts(), 2);  // the hung one, then the healthy one
  EXPECT_EQ(job.chunks_committed(), 4);
  EXPECT_EQ(job.error(), "");
  EXPECT_TRUE(absl::StrContains(
      hung.Log(), "ended by the coordinator: UNAVAILABLE: job " + job_id + " made no progress for"))
      << hung.Log();
  EXPECT_TRUE(absl::StrContains(healthy.Log(), absl::StrCat("job ", job_id, " done")))
      << healthy.Log();
  hung.Kill(SIGKILL);
  // Its rows equal a failure-free run's.
  const std::string clean_id = Submit(Spec("hang", 4));
  ASSERT_TRUE(WaitForJob(clean_id + "-0",
                         [](const v1::Job& j) { return j.state() == v1::JOB_STATE_SUCCEEDED; }));
  ExpectSameRows(sweep_id, clean_id);
}

// Issue 14, failure 4 (regression): three coordinator restarts during one
// 32-chunk job failed it ("lease lapsed 3 times") at 12/32 chunks on a
// healthy worker. Here a layerflow-coordinator process is killed with
// SIGKILL three times mid-job, each time down longer than the lease TTL,
// and started again on the same database and port.
TEST_F(JobControlTest, ThreeCoordinatorKillsDuringOneJobCostItNoAttempt) {
  const int port = server::testing::FreeLoopbackPort();
  ASSERT_GT(port, 0);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  constexpr int64_t kChunks = 64;
  auto start = [&] {
    // Output appended to its log; SIGKILLed at the end.
    auto coordinator = std::make_unique<integration::ChildProcess>(
        std::vector<std::string>{LAYERFLOW_COORDINATOR_BINARY, "--listen", address, "--db",
                                 options_.db_path, "--metrics", "", "--lease-ttl-ms", "8000",
                                 "--heartbeat-interval-ms", "200", "--reaper-interval-ms", "100",
                                 "--max-attempts", "3"},
        integration::ChildProcess::Options{.log = dir_ / "coordinator.log",
                                           .stop_signal = SIGKILL});
    // Reconnect within 50-200 ms: with gRPC's default backoff (1 s, then
    // x1.6) the probe below saw the new coordinator 3-6 s after the worker
    // did, by when the job had run on 6-22 more chunks at 100 ms a chunk;
    // once it ran to within 4 chunks of its end, the next kill's wait could
    // never be met (a CI failure: "want 33", of 32 chunks). Even so a
    // restart takes the probe up to 5 s here (process start on a loaded
    // 2-core machine), hence 64 chunks at 250 ms: at most ~24 a restart.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
    stub_ = v1::Coordinator::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    integration::WaitUntilServing(*stub_, 60s, 20ms);
    return coordinator;
  };
  auto coordinator_log = [&] {
    std::ifstream in(dir_ / "coordinator.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  std::unique_ptr<integration::ChildProcess> coordinator = start();
  Worker worker(port, "steady", dir_ / "steady.log", {"--pause-after-chunk-ms", "250"});
  const std::string sweep_id = Submit(Spec("restarts", kChunks));
  const std::string job_id = sweep_id + "-0";
  int64_t last = 0;
  for (int kill = 1; kill <= 3; ++kill) {
    const int64_t want = last + 4;
    int64_t seen = -1;
    ASSERT_TRUE(WaitForJob(job_id,
                           [&](const v1::Job& j) {
                             seen = j.chunks_committed();
                             return seen >= want;
                           }))
        << "before kill " << kill << ": want " << want << " chunks, last seen " << seen << "\n"
        << worker.Log() << coordinator_log();
    last = Job(job_id).chunks_committed();
    // Each kill lands mid-job, or the test proves nothing.
    ASSERT_LT(last, kChunks) << "kill " << kill << " came after the job's last chunk";
    std::cerr << "kill " << kill << " at " << last << " of " << kChunks << " chunks" << std::endl;
    coordinator->Kill(SIGKILL);
    // Down longer than the TTL: before the recovery pass, the lease
    // lapsed at the new coordinator's first reaper pass. (The TTL leaves
    // the worker's channel its few seconds to reconnect.)
    std::this_thread::sleep_for(9000ms);
    coordinator = start();
  }
  ASSERT_TRUE(WaitForJob(job_id, [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_SUCCEEDED;
  })) << worker.Log();
  const v1::Job job = Job(job_id);
  EXPECT_EQ(job.attempts(), 1) << worker.Log() << coordinator_log();
  EXPECT_EQ(job.chunks_committed(), kChunks);
  EXPECT_EQ(job.error(), "");
  const std::string log = worker.Log();
  EXPECT_TRUE(absl::StrContains(log, "keeping the lease and retrying")) << log;
  EXPECT_FALSE(absl::StrContains(log, "lease on job")) << log;  // never lost
  // Leased once: the worker kept its job through every outage.
  const std::string leased = absl::StrCat("leased job ", job_id, " ");
  int leases = 0;
  for (size_t at = log.find(leased); at != std::string::npos; at = log.find(leased, at + 1)) {
    ++leases;
  }
  EXPECT_EQ(leases, 1) << log;
  EXPECT_TRUE(absl::StrContains(coordinator_log(), "recovery: 1 running lease extended by 8000 ms"))
      << coordinator_log();
  const std::string clean_id = Submit(Spec("restarts", kChunks));
  ASSERT_TRUE(WaitForJob(clean_id + "-0",
                         [](const v1::Job& j) { return j.state() == v1::JOB_STATE_SUCCEEDED; }));
  ExpectSameRows(sweep_id, clean_id);
}

}  // namespace
}  // namespace layerflow
