// A coordinator and two worker PROCESSES on loopback run a sweep; one worker
// is killed (SIGKILL) in the middle of a job. Every job must still finish
// exactly once, resume after its last committed chunk, and give results equal
// to a failure-free run of the same sweep.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "server/coordinator_server.h"
#include "tests/integration/integration_util.h"

namespace layerflow {
namespace {

using namespace std::chrono_literals;
using integration::ChildProcess;
using integration::WorkerCommand;

// A worker slow enough that a kill lands in the middle of a job.
std::unique_ptr<ChildProcess> SlowWorker(int port, const std::string& name) {
  return std::make_unique<ChildProcess>(
      WorkerCommand(port, name, {"--pause-after-chunk-ms", "150"}), ChildProcess::Options{});
}

class FailoverTest : public integration::LoopbackCoordinatorTest {
 protected:
  FailoverTest() : LoopbackCoordinatorTest("failover") {}
  void Configure(server::CoordinatorOptions& options) override {
    // Short leases so the killed worker's job comes back quickly.
    options.lease_ttl_ms = 1500;
    options.heartbeat_interval_ms = 200;
    options.reaper_interval_ms = 100;
    options.retry_backoff_ms = 50;
  }

  std::string Submit(const v1::SweepSpec& spec) {
    const v1::SubmitSweepResponse response = integration::SubmitSweep(*stub_, spec);
    EXPECT_EQ(response.jobs(), 4);
    return response.sweep_id();
  }
  // Four seeds, 6 prompts a job.
  static v1::SweepSpec Spec(const std::string& name) { return integration::KvprSweep(name, 4, 6); }
  std::vector<v1::Job> Jobs(const std::string& sweep_id) {
    return integration::ListJobs(*stub_, sweep_id);
  }
  v1::Sweep WaitForSweep(const std::string& sweep_id) {
    return integration::WaitForSweep(*stub_, sweep_id, 300s);
  }
};

TEST_F(FailoverTest, KilledWorkerMidJobStillGivesEveryJobExactlyOnce) {
  const std::string sweep_id = Submit(Spec("failover"));
  std::unique_ptr<ChildProcess> doomed = SlowWorker(server_->port(), "doomed");
  std::unique_ptr<ChildProcess> survivor = SlowWorker(server_->port(), "survivor");

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
      doomed->Kill(SIGKILL);
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

  integration::ExpectSameRowsCountedOnce(integration::ResultsBySeed(*stub_, sweep_id),
                                         integration::ResultsBySeed(*stub_, clean_id), 6);
}

}  // namespace
}  // namespace layerflow
