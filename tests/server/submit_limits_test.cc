// Submission limits and fair share through the coordinator core (issue 14):
// a bounded queue, a per-user quota of queued jobs and a per-user
// submission rate, each RESOURCE_EXHAUSTED naming its flag; and a sweep's
// submitter as the unit of the lease's fair share.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "server/core/coordinator_core.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::CoreOnSqlite;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;

class SubmitLimitsTest : public ::testing::Test {
 protected:
  void Start(const CoreOptions& options) {
    LF_ASSERT_OK_AND_ASSIGN(
        core_, CoreOnSqlite(dir_.File("lf.db"), options, [this] { return now_.load(); }));
  }

  // `jobs` pythia-tiny jobs, one a seed.
  static v1::SweepSpec Spec(int jobs) {
    v1::SweepSpec spec;
    spec.set_name("limits");
    spec.add_models("pythia-tiny");
    for (int i = 0; i < jobs; ++i) spec.add_seeds(i);
    spec.set_num_prompts(2);
    spec.set_prompts_per_chunk(2);
    return spec;
  }

  int QueuedJobs() {
    v1::ListJobsRequest request;
    request.set_state(v1::JOB_STATE_QUEUED);
    auto jobs = core_->ListJobs(request);
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    return jobs.ok() ? jobs->jobs_size() : -1;
  }

  TempDir dir_;
  std::atomic<int64_t> now_{1'000'000};
  std::unique_ptr<CoordinatorCore> core_;
};

TEST_F(SubmitLimitsTest, BoundedQueueRefusesTheSweepThatWouldOverflowIt) {
  CoreOptions options;
  options.max_queued_jobs = 5;
  Start(options);
  LF_ASSERT_OK(core_->SubmitSweep(Spec(3), "alice").status());
  EXPECT_THAT(core_->SubmitSweep(Spec(3), "bob").status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "queue full: 3 jobs queued and this sweep adds 3; the coordinator "
                       "queues at most 5 (--max-queued-jobs)"));
  EXPECT_EQ(QueuedJobs(), 3);  // nothing of the refused sweep
  LF_ASSERT_OK(core_->SubmitSweep(Spec(2), "bob").status());
  EXPECT_EQ(QueuedJobs(), 5);
}

TEST_F(SubmitLimitsTest, PerUserQuotaCountsOnlyThatUsersQueuedJobs) {
  CoreOptions options;
  options.max_queued_jobs_per_user = 2;
  Start(options);
  LF_ASSERT_OK(core_->SubmitSweep(Spec(2), "alice").status());
  EXPECT_THAT(core_->SubmitSweep(Spec(1), "alice").status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "user 'alice' has 2 jobs queued and this sweep adds 1; a user may "
                       "queue at most 2 (--max-queued-jobs-per-user)"));
  LF_ASSERT_OK(core_->SubmitSweep(Spec(2), "bob").status());
  // A leased job is no longer queued: alice may queue one more.
  auto worker = core_->RegisterWorker(v1::RegisterWorkerRequest());
  ASSERT_TRUE(worker.ok()) << worker.status();
  v1::LeaseJobRequest lease;
  lease.set_worker_id(worker->worker_id());
  LF_ASSERT_OK_AND_ASSIGN(auto leased, core_->LeaseJob(lease));  // alice's (by name)
  ASSERT_TRUE(leased.leased());
  LF_ASSERT_OK(core_->SubmitSweep(Spec(1), "alice").status());
}

TEST_F(SubmitLimitsTest, SubmissionRateIsPerUserOverASlidingMinute) {
  CoreOptions options;
  options.max_submissions_per_minute = 2;
  options.max_queued_jobs = 4;
  Start(options);
  LF_ASSERT_OK(core_->SubmitSweep(Spec(1), "alice").status());
  now_ += 30'000;
  LF_ASSERT_OK(core_->SubmitSweep(Spec(1), "alice").status());
  EXPECT_THAT(core_->SubmitSweep(Spec(1), "alice").status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "user 'alice' submitted 2 sweeps in the last minute; a user may submit "
                       "at most 2 a minute (--max-submissions-per-minute)"));
  // Another user has a minute of their own; a sweep the queue bound
  // refuses does not use up a submission.
  EXPECT_THAT(core_->SubmitSweep(Spec(3), "bob").status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "queue full"));
  LF_ASSERT_OK(core_->SubmitSweep(Spec(1), "bob").status());
  LF_ASSERT_OK(core_->SubmitSweep(Spec(1), "bob").status());
  // 60 s after alice's first, one slot is free again, not two.
  now_ += 30'001;
  v1::LeaseJobRequest lease;
  auto worker = core_->RegisterWorker(v1::RegisterWorkerRequest());
  ASSERT_TRUE(worker.ok()) << worker.status();
  lease.set_worker_id(worker->worker_id());
  LF_ASSERT_OK(core_->LeaseJob(lease).status());  // room in the queue
  LF_ASSERT_OK(core_->SubmitSweep(Spec(1), "alice").status());
  EXPECT_THAT(core_->SubmitSweep(Spec(1), "alice").status(),
              StatusIs(absl::StatusCode::kResourceExhausted, "submitted 2 sweeps"));
}

TEST_F(SubmitLimitsTest, TheSubmitterIsTheUnitOfFairShare) {
  Start(CoreOptions());
  LF_ASSERT_OK_AND_ASSIGN(auto a, core_->SubmitSweep(Spec(3), "alice"));
  LF_ASSERT_OK_AND_ASSIGN(auto b, core_->SubmitSweep(Spec(1), "bob"));
  auto worker = core_->RegisterWorker(v1::RegisterWorkerRequest());
  ASSERT_TRUE(worker.ok()) << worker.status();
  v1::LeaseJobRequest lease;
  lease.set_worker_id(worker->worker_id());
  std::vector<std::string> sweeps;
  for (int i = 0; i < 4; ++i) {
    LF_ASSERT_OK_AND_ASSIGN(auto leased, core_->LeaseJob(lease));
    ASSERT_TRUE(leased.leased());
    sweeps.push_back(leased.job().sweep_id());
  }
  // alice, then bob (0 running against 1), then alice's other two.
  EXPECT_THAT(sweeps,
              ::testing::ElementsAre(a.sweep_id(), b.sweep_id(), a.sweep_id(), a.sweep_id()));
}

TEST_F(SubmitLimitsTest, AUserAtTheRunningQuotaIsLeasedNothingMore) {
  CoreOptions options;
  options.max_running_jobs_per_user = 1;
  Start(options);
  LF_ASSERT_OK_AND_ASSIGN(auto a, core_->SubmitSweep(Spec(2), "alice"));
  auto worker = core_->RegisterWorker(v1::RegisterWorkerRequest());
  ASSERT_TRUE(worker.ok()) << worker.status();
  v1::LeaseJobRequest lease;
  lease.set_worker_id(worker->worker_id());
  LF_ASSERT_OK_AND_ASSIGN(auto first, core_->LeaseJob(lease));
  ASSERT_TRUE(first.leased());
  // alice's second job waits while her first runs; bob's does not.
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->LeaseJob(lease));
  EXPECT_FALSE(none.leased());
  LF_ASSERT_OK_AND_ASSIGN(auto b, core_->SubmitSweep(Spec(1), "bob"));
  LF_ASSERT_OK_AND_ASSIGN(auto bobs, core_->LeaseJob(lease));
  ASSERT_TRUE(bobs.leased());
  EXPECT_EQ(bobs.job().sweep_id(), b.sweep_id());
  v1::FailJobRequest fail;
  fail.set_job_id(first.job().job_id());
  fail.set_lease_id(first.lease_id());
  fail.set_error("bad input");
  fail.set_code(static_cast<int>(absl::StatusCode::kInvalidArgument));
  LF_ASSERT_OK(core_->FailJob(fail));
  LF_ASSERT_OK_AND_ASSIGN(auto second, core_->LeaseJob(lease));
  ASSERT_TRUE(second.leased());
  EXPECT_EQ(second.job().sweep_id(), a.sweep_id());
}

}  // namespace
}  // namespace layerflow::server
