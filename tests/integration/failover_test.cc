// A coordinator and two worker PROCESSES on loopback run a sweep; one worker
// is killed (SIGKILL) in the middle of a job. Every job must still finish
// exactly once, resume after its last committed chunk, and give results equal
// to a failure-free run of the same sweep.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "server/coordinator_server.h"

extern char** environ;

namespace layerflow {
namespace {

using namespace std::chrono_literals;

class WorkerProcess {
 public:
  WorkerProcess(int port, const std::string& name) {
    std::vector<std::string> args = {
        LAYERFLOW_WORKER_BINARY,       "--coordinator",
        absl::StrCat("127.0.0.1:", port), "--name",
        name,                          "--device",
        "cpu",                         "--idle-poll-ms",
        "50",                          "--pause-after-chunk-ms",
        // Slow enough that a kill lands in the middle of a job.
        "150"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ);
    EXPECT_EQ(rc, 0) << "spawning " << argv[0];
  }
  ~WorkerProcess() { Kill(SIGTERM); }
  void Kill(int signal) {
    if (pid_ <= 0) return;
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

class FailoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerflow_failover_", getpid());
    std::filesystem::create_directories(dir_);
    server::CoordinatorOptions options;
    options.listen_address = "127.0.0.1:0";
    options.db_path = (dir_ / "store.db").string();
    options.metrics_address = "";
    // Short leases so the killed worker's job comes back quickly.
    options.lease_ttl_ms = 1500;
    options.heartbeat_interval_ms = 200;
    options.reaper_interval_ms = 100;
    options.retry_backoff_ms = 50;
    auto started = server::CoordinatorServer::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  v1::SweepSpec Spec(const std::string& name) {
    v1::SweepSpec spec;
    spec.set_name(name);
    spec.add_models("pythia-tiny");
    for (int seed = 0; seed < 4; ++seed) spec.add_seeds(seed);
    // 2 classes keep prompts short (a KVPR prompt holds one pair per class).
    v1::DatasetSpec* kvpr = spec.add_datasets();
    kvpr->set_name("kvpr");
    kvpr->set_num_classes(2);
    spec.add_context_lengths(512);
    spec.set_num_prompts(6);
    spec.set_prompts_per_chunk(1);
    return spec;
  }

  std::string Submit(const v1::SweepSpec& spec) {
    grpc::ClientContext ctx;
    v1::SubmitSweepRequest request;
    *request.mutable_spec() = spec;
    v1::SubmitSweepResponse response;
    grpc::Status status = stub_->SubmitSweep(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.jobs(), 4);
    return response.sweep_id();
  }

  std::vector<v1::Job> Jobs(const std::string& sweep_id) {
    grpc::ClientContext ctx;
    v1::ListJobsRequest request;
    request.set_sweep_id(sweep_id);
    v1::ListJobsResponse response;
    grpc::Status status = stub_->ListJobs(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.jobs().begin(), response.jobs().end()};
  }

  v1::Sweep WaitForSweep(const std::string& sweep_id) {
    auto deadline = std::chrono::steady_clock::now() + 300s;
    v1::Sweep sweep;
    while (std::chrono::steady_clock::now() < deadline) {
      grpc::ClientContext ctx;
      v1::GetSweepRequest request;
      request.set_sweep_id(sweep_id);
      EXPECT_TRUE(stub_->GetSweep(&ctx, request, &sweep).ok());
      if (sweep.state() != v1::SWEEP_STATE_ACTIVE) return sweep;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "sweep " << sweep_id << " did not finish";
    return sweep;
  }

  // (seed, metric, layer) -> row
  std::map<std::tuple<int64_t, std::string, int>, v1::ResultRow> Results(
      const std::string& sweep_id) {
    grpc::ClientContext ctx;
    v1::QueryResultsRequest request;
    request.set_sweep_id(sweep_id);
    v1::QueryResultsResponse response;
    grpc::Status status = stub_->QueryResults(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::map<std::tuple<int64_t, std::string, int>, v1::ResultRow> rows;
    for (const auto& row : response.rows()) {
      rows[{row.seed(), row.metric(), row.layer()}] = row;
    }
    return rows;
  }

  std::filesystem::path dir_;
  std::unique_ptr<server::CoordinatorServer> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(FailoverTest, KilledWorkerMidJobStillGivesEveryJobExactlyOnce) {
  const std::string sweep_id = Submit(Spec("failover"));
  WorkerProcess doomed(server_->port(), "doomed");
  WorkerProcess survivor(server_->port(), "survivor");

  // Wait until both workers are inside a job (some chunks committed, not all),
  // then kill one without warning.
  bool killed = false;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    int mid_job = 0;
    for (const v1::Job& job : Jobs(sweep_id)) {
      if (job.state() == v1::JOB_STATE_RUNNING && job.chunks_committed() > 0 &&
          job.chunks_committed() < job.chunks_total()) {
        ++mid_job;
      }
    }
    if (mid_job == 2) {
      doomed.Kill(SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(killed) << "never saw both workers in the middle of a job";

  v1::Sweep sweep = WaitForSweep(sweep_id);
  ASSERT_EQ(sweep.state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(sweep.jobs_succeeded(), 4);
  EXPECT_EQ(sweep.chunks_committed(), 4 * 6);
  int retried = 0;
  for (const v1::Job& job : Jobs(sweep_id)) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id() << ": " << job.error();
    EXPECT_EQ(job.chunks_committed(), job.chunks_total());
    if (job.attempts() > 1) ++retried;
  }
  // The killed worker's job went back to the queue and was leased again.
  EXPECT_GE(retried, 1);

  // A failure-free run of the same sweep by the surviving worker.
  const std::string clean_id = Submit(Spec("failure-free"));
  ASSERT_EQ(WaitForSweep(clean_id).state(), v1::SWEEP_STATE_SUCCEEDED);
  for (const v1::Job& job : Jobs(clean_id)) EXPECT_EQ(job.attempts(), 1);

  auto with_failure = Results(sweep_id);
  auto failure_free = Results(clean_id);
  ASSERT_FALSE(failure_free.empty());
  ASSERT_EQ(with_failure.size(), failure_free.size());
  for (const auto& [key, expected] : failure_free) {
    auto it = with_failure.find(key);
    ASSERT_NE(it, with_failure.end()) << std::get<1>(key) << " layer " << std::get<2>(key);
    const v1::ResultRow& got = it->second;
    // Exactly once: every prompt counted once, none lost, none twice.
    EXPECT_EQ(got.count(), 6) << got.metric() << " layer " << got.layer();
    EXPECT_EQ(expected.count(), 6);
    EXPECT_NEAR(got.value(), expected.value(), 1e-9 * (1 + std::abs(expected.value())))
        << got.metric() << " layer " << got.layer() << " seed " << got.seed();
    EXPECT_NEAR(got.std(), expected.std(), 1e-9 * (1 + std::abs(expected.std())));
  }
}

}  // namespace
}  // namespace layerflow
