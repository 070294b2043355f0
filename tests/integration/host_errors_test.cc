// Issue 14, failure 3 (regression): a worker short of memory beside a
// healthy one failed 3 of 6 jobs for good within 4 s and kept leasing,
// because every job error was final. Here a simulated worker speaking the
// real worker protocol on loopback fails every job it leases with
// RESOURCE_EXHAUSTED (what an out-of-memory worker reports) next to a real
// layerflow-worker process: every job of the 6-job sweep must succeed, its
// rows must equal a failure-free run's, no failure of the bad worker may be
// final, and the bad worker must end quarantined (and leased nothing more)
// until an admin releases it.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "server/coordinator_server.h"
#include "tests/integration/integration_util.h"

namespace layerflow {
namespace {

using namespace std::chrono_literals;
using integration::ChildProcess;
using integration::WorkerCommand;

// The memory-starved worker: registers, then leases as fast as it can and
// fails every job with the code and text an out-of-memory worker sends.
class OutOfMemoryWorker {
 public:
  explicit OutOfMemoryWorker(int port)
      : stub_(v1::WorkerProtocol::NewStub(grpc::CreateChannel(
            absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()))) {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest request;
    request.set_name("starved");
    v1::RegisterWorkerResponse response;
    grpc::Status status = stub_->RegisterWorker(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    worker_id_ = response.worker_id();
    thread_ = std::thread([this] { Loop(); });
  }
  ~OutOfMemoryWorker() {
    stop_ = true;
    thread_.join();
  }
  const std::string& worker_id() const { return worker_id_; }
  int failed() const { return failed_; }
  std::set<std::string> failed_jobs() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_jobs_;
  }

 private:
  void Loop() {
    while (!stop_) {
      grpc::ClientContext ctx;
      v1::LeaseJobRequest request;
      request.set_worker_id(worker_id_);
      v1::LeaseJobResponse lease;
      if (!stub_->LeaseJob(&ctx, request, &lease).ok() || !lease.leased()) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      grpc::ClientContext fail_ctx;
      v1::FailJobRequest fail;
      fail.set_job_id(lease.job().job_id());
      fail.set_lease_id(lease.lease_id());
      fail.set_error("RESOURCE_EXHAUSTED: CUDA out of memory. Tried to allocate 2.00 GiB");
      fail.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
      v1::FailJobResponse response;
      grpc::Status status = stub_->FailJob(&fail_ctx, fail, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      ++failed_;
      std::lock_guard<std::mutex> lock(mu_);
      failed_jobs_.insert(lease.job().job_id());
    }
  }

  std::unique_ptr<v1::WorkerProtocol::Stub> stub_;
  std::string worker_id_;
  std::atomic<bool> stop_{false};
  std::atomic<int> failed_{0};
  std::mutex mu_;
  std::set<std::string> failed_jobs_;
  std::thread thread_;
};

class HostErrorsTest : public integration::LoopbackCoordinatorTest {
 protected:
  HostErrorsTest() : LoopbackCoordinatorTest("host_errors") {}
  void Configure(server::CoordinatorOptions& options) override {
    options.lease_ttl_ms = 3000;
    options.heartbeat_interval_ms = 200;
    options.reaper_interval_ms = 100;
    options.max_attempts = 3;
    options.retry_backoff_ms = 50;
    options.retry_backoff_cap_ms = 200;
    options.quarantine_after = 3;
  }

  // Six seeds, 2 prompts a job.
  std::string Submit(const std::string& name) {
    const v1::SubmitSweepResponse response =
        integration::SubmitSweep(*stub_, integration::KvprSweep(name, 6, 2));
    EXPECT_EQ(response.jobs(), 6);
    return response.sweep_id();
  }
  std::vector<v1::Job> Jobs(const std::string& sweep_id) {
    return integration::ListJobs(*stub_, sweep_id);
  }
  v1::Sweep WaitForSweep(const std::string& sweep_id) {
    return integration::WaitForSweep(*stub_, sweep_id, 240s);
  }

  // The workers' lines of the admin listing (AdministerWorkers).
  std::string WorkersReport(const std::string& release = "") {
    absl::StatusOr<std::string> report = server::AdministerWorkers(options_.db_path, release);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *report : "";
  }
};

TEST_F(HostErrorsTest, StarvedWorkerBesideAHealthyOneCostsNoJobAndIsQuarantined) {
  ChildProcess healthy(WorkerCommand(server_->port(), "healthy"), {});
  // The healthy worker registers first: a host error goes elsewhere only
  // while somewhere else is alive.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!absl::StrContains(WorkersReport(), "healthy active") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(absl::StrContains(WorkersReport(), "healthy active"));
  const std::string sweep_id = Submit("starved");
  OutOfMemoryWorker starved(server_->port());

  v1::Sweep sweep = WaitForSweep(sweep_id);
  ASSERT_EQ(sweep.state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(sweep.jobs_succeeded(), 6);
  EXPECT_EQ(sweep.jobs_failed(), 0);
  // Quarantined after exactly quarantine_after failures: leased nothing more
  // although it kept asking for the whole sweep.
  EXPECT_EQ(starved.failed(), 3);
  const std::set<std::string> failed_jobs = starved.failed_jobs();
  EXPECT_EQ(failed_jobs.size(), 3u);  // three different jobs, none twice
  for (const v1::Job& job : Jobs(sweep_id)) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id() << ": " << job.error();
    EXPECT_EQ(job.error(), "") << job.job_id();
    EXPECT_EQ(job.chunks_committed(), job.chunks_total());
    // A job the starved worker failed took one more attempt, on the healthy
    // worker; the others one.
    EXPECT_EQ(job.attempts(), failed_jobs.count(job.job_id()) ? 2 : 1) << job.job_id();
  }
  const std::string report = WorkersReport();
  EXPECT_TRUE(absl::StrContains(
      report, absl::StrCat(starved.worker_id(), " starved quarantined last seen")))
      << report;
  EXPECT_TRUE(absl::StrContains(report, "3 host errors in a row")) << report;
  EXPECT_TRUE(absl::StrContains(report, "healthy active")) << report;

  // Rows equal to a failure-free run (the healthy worker alone: the starved
  // one is quarantined), so no failed attempt left a row behind.
  const std::string clean_id = Submit("failure-free");
  ASSERT_EQ(WaitForSweep(clean_id).state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(starved.failed(), 3);
  for (const v1::Job& job : Jobs(clean_id)) EXPECT_EQ(job.attempts(), 1);
  auto with_failures = integration::ResultsBySeed(*stub_, sweep_id);
  auto failure_free = integration::ResultsBySeed(*stub_, clean_id);
  ASSERT_FALSE(failure_free.empty());
  ASSERT_EQ(with_failures.size(), failure_free.size());
  for (const auto& [key, expected] : failure_free) {
    auto it = with_failures.find(key);
    ASSERT_NE(it, with_failures.end()) << std::get<1>(key) << " layer " << std::get<2>(key);
    EXPECT_EQ(it->second.count(), expected.count());
    EXPECT_NEAR(it->second.value(), expected.value(), 1e-9 * (1 + std::abs(expected.value())));
  }

  // An admin's release: shown active again.
  const std::string released = WorkersReport(starved.worker_id());
  EXPECT_TRUE(absl::StrContains(released, absl::StrCat(starved.worker_id(), " starved active")))
      << released;
}

// The real worker sends its error's code and text: a repo id missing from
// its Hugging Face cache (INVALID_ARGUMENT "model: ... not in this worker's
// Hugging Face cache") is a host error. A lone
// worker retries it itself (nobody else could) up to max_attempts, then
// the job fails listing all three attempts; the last worker standing is
// never quarantined.
TEST_F(HostErrorsTest, RealWorkerReportsAMissingFileAsAHostError) {
  ChildProcess lone(WorkerCommand(server_->port(), "lone"), {});
  v1::SweepSpec spec;
  spec.set_name("missing");
  spec.add_models("layerflow-test/no-such-model");
  v1::DatasetSpec* kvpr = spec.add_datasets();
  kvpr->set_name("kvpr");
  kvpr->set_num_classes(2);
  spec.add_context_lengths(512);
  spec.set_num_prompts(1);
  const v1::SubmitSweepResponse response = integration::SubmitSweep(*stub_, spec);
  ASSERT_FALSE(response.sweep_id().empty());
  ASSERT_EQ(WaitForSweep(response.sweep_id()).state(), v1::SWEEP_STATE_FAILED);
  const std::vector<v1::Job> jobs = Jobs(response.sweep_id());
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].attempts(), 3);
  const std::string& error = jobs[0].error();
  EXPECT_TRUE(absl::StartsWith(error, "failed on 3 attempts: attempt 1 on worker-")) << error;
  for (const char* attempt : {"attempt 1 on", "attempt 2 on", "attempt 3 on"}) {
    EXPECT_TRUE(absl::StrContains(error, attempt)) << error;
  }
  EXPECT_TRUE(absl::StrContains(error,
                                "INVALID_ARGUMENT: model: model "
                                "'layerflow-test/no-such-model' is not in this "
                                "worker's Hugging Face cache"))
      << error;
  EXPECT_TRUE(absl::StrContains(WorkersReport(), "lone active")) << WorkersReport();
}

}  // namespace
}  // namespace layerflow
