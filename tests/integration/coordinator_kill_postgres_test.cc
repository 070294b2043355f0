// kill -9 of the coordinator with a PostgreSQL store (issue 14): a
// layerflow-coordinator PROCESS on a PostgreSQL database that the test
// starts on loopback, and a real worker process, run a sweep; the
// coordinator is killed with SIGKILL in the middle of a job and started
// again on the same port and database. Every job must succeed with every
// chunk counted once, and the results must equal a failure-free run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "tests/integration/integration_util.h"
#include "tests/server/postgres_harness.h"
#include "tests/server/test_util.h"

namespace layerflow {
namespace {

using namespace std::chrono_literals;
using integration::ChildProcess;

// A child process with stdout and stderr appended to `log`; SIGKILLed at
// destruction unless it was waited for.
std::unique_ptr<ChildProcess> Spawn(std::vector<std::string> args,
                                    const std::filesystem::path& log) {
  return std::make_unique<ChildProcess>(std::move(args),
                                        ChildProcess::Options{.log = log, .stop_signal = SIGKILL});
}

class CoordinatorKillPostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("layerflow_coordinator_kill_", getpid());
    std::filesystem::create_directories(dir_);
    auto url = server::testing::PostgresUrlFor(dir_.string());
    ASSERT_TRUE(url.ok()) << url.status();
    url_ = *url;
    port_ = server::testing::FreeLoopbackPort();
    ASSERT_GT(port_, 0);
    stub_ = integration::CoordinatorStub(port_);
  }
  void TearDown() override {
    worker_.reset();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Starts layerflow-coordinator and waits until it answers.
  void StartCoordinator() {
    coordinator_ = Spawn(
        std::vector<std::string>{LAYERFLOW_COORDINATOR_BINARY, "--listen",
                                 absl::StrCat("127.0.0.1:", port_), "--db", url_, "--metrics", "",
                                 "--artifact-dir", (dir_ / "artifacts").string(),
                                 // Leases outlive the restart: the job resumes under its lease.
                                 "--lease-ttl-ms", "10000", "--heartbeat-interval-ms", "200",
                                 "--reaper-interval-ms", "100", "--retry-backoff-ms", "50"},
        dir_ / "coordinator.log");
    if (!integration::WaitUntilServing(*stub_, 60s, 50ms)) FAIL() << "coordinator did not come up";
  }

  // Three seeds, 6 prompts a job.
  static v1::SweepSpec Spec(const std::string& name) { return integration::KvprSweep(name, 3, 6); }
  std::string Submit(const v1::SweepSpec& spec) {
    const v1::SubmitSweepResponse response = integration::SubmitSweep(*stub_, spec);
    EXPECT_EQ(response.jobs(), 3);
    return response.sweep_id();
  }
  std::vector<v1::Job> Jobs(const std::string& sweep_id) {
    return integration::ListJobs(*stub_, sweep_id);
  }
  v1::Sweep WaitForSweep(const std::string& sweep_id) {
    return integration::WaitForSweep(*stub_, sweep_id, 300s, integration::OnCallError::kRetry);
  }

  std::filesystem::path dir_;
  std::string url_;
  int port_ = 0;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::unique_ptr<ChildProcess> coordinator_;
  std::unique_ptr<ChildProcess> worker_;
};

TEST_F(CoordinatorKillPostgresTest, KilledCoordinatorMidJobLosesNothingAndCountsNothingTwice) {
  StartCoordinator();
  const std::string sweep_id = Submit(Spec("killed"));
  worker_ = Spawn(integration::WorkerCommand(port_, "w", {"--pause-after-chunk-ms", "150"}),
                  dir_ / "worker.log");

  // Kill the coordinator while a job is half done.
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    for (const v1::Job& job : Jobs(sweep_id)) {
      if (job.state() == v1::JOB_STATE_RUNNING && job.chunks_committed() >= 2 &&
          job.chunks_committed() < job.chunks_total()) {
        const int status = coordinator_->Kill(SIGKILL);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
        killed = true;
        break;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(killed) << "never saw a job half done";
  std::this_thread::sleep_for(1s);  // the worker finds nobody there
  StartCoordinator();

  v1::Sweep sweep = WaitForSweep(sweep_id);
  ASSERT_EQ(sweep.state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(sweep.jobs_succeeded(), 3);
  EXPECT_EQ(sweep.chunks_committed(), 3 * 6);
  for (const v1::Job& job : Jobs(sweep_id)) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id() << ": " << job.error();
    EXPECT_EQ(job.chunks_committed(), job.chunks_total());
  }

  // A failure-free run of the same sweep on the same coordinator.
  const std::string clean_id = Submit(Spec("failure-free"));
  ASSERT_EQ(WaitForSweep(clean_id).state(), v1::SWEEP_STATE_SUCCEEDED);
  integration::ExpectSameRowsCountedOnce(integration::ResultsBySeed(*stub_, sweep_id),
                                         integration::ResultsBySeed(*stub_, clean_id), 6);
}

}  // namespace
}  // namespace layerflow
