#include "server/core/coordinator_core.h"

#include <atomic>
#include <filesystem>
#include <optional>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/api_limits.h"
#include "server/store/sqlite_store.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
// CoreOnSqlite, OneStatChunk, TempDir: the server tests' shared fixtures.
using namespace ::layerflow::server::testing;  // NOLINT(build/namespaces)
using ::layerflow::testing::StatusIs;

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoreOptions options;
    options.lease_ttl_ms = 1000;
    options.heartbeat_interval_ms = 200;
    options.max_attempts = 2;
    options.retry_backoff_ms = 0;
    LF_ASSERT_OK_AND_ASSIGN(
        core_, CoreOnSqlite(dir_.File("lf.db"), options, [this] { return now_.load(); }));
  }

  v1::SweepSpec Spec(int num_prompts = 3, int per_chunk = 2) {
    v1::SweepSpec spec;
    spec.set_name("core");
    spec.add_models("pythia-tiny");
    spec.set_num_prompts(num_prompts);
    spec.set_prompts_per_chunk(per_chunk);
    return spec;
  }

  std::string Register() {
    auto r = core_->RegisterWorker(v1::RegisterWorkerRequest());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->worker_id() : "";
  }

  TempDir dir_;
  std::atomic<int64_t> now_{1'000'000};
  std::unique_ptr<CoordinatorCore> core_;
};

TEST_F(CoreTest, InvalidSubmissionStoresNothing) {
  v1::SweepSpec spec = Spec();
  spec.add_models("gpt-5");
  EXPECT_THAT(
      core_->SubmitSweep(spec).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "spec.models[1]: unknown model preset 'gpt-5'"));
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(v1::ListJobsRequest()));
  EXPECT_EQ(jobs.jobs_size(), 0);
  EXPECT_EQ(core_->version(), 0u);
}

TEST_F(CoreTest, SubmitStoresDefaultedExpandedSweep) {
  v1::SweepSpec spec = Spec(5, 2);
  spec.add_seeds(1);
  spec.add_seeds(2);
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  EXPECT_EQ(submitted.jobs(), 2);
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, core_->GetSweep(submitted.sweep_id()));
  EXPECT_EQ(sweep.spec().dtype(), "fp32");  // defaults are stored
  EXPECT_EQ(sweep.chunks_total(), 6);       // 2 jobs * ceil(5/2)
  EXPECT_EQ(sweep.created_unix_ms(), 1'000'000);
  v1::ListJobsRequest request;
  request.set_sweep_id(submitted.sweep_id());
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(request));
  ASSERT_EQ(jobs.jobs_size(), 2);
  EXPECT_EQ(jobs.jobs(0).job_id(), submitted.sweep_id() + "-0");
  EXPECT_EQ(jobs.jobs(1).spec().seed(), 2);
  EXPECT_THAT(core_->GetSweep("").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "sweep_id: required"));
  EXPECT_THAT(core_->GetSweep("sw-unknown").status(),
              StatusIs(absl::StatusCode::kNotFound, "sw-unknown"));
}

// A TRAIN sweep's analysis jobs name the checkpoints of the TRAIN job they
// depend on, by its id (which only the coordinator knows at submit).
TEST_F(CoreTest, TrainSweepAnalysesNameTheirTrainJobsCheckpoints) {
  v1::SweepSpec spec;
  spec.set_name("trained-vs-init");
  spec.add_models("mamba2");
  spec.mutable_train()->set_steps(20);
  spec.add_analyses("spectrum");
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  EXPECT_EQ(submitted.jobs(), 3);
  v1::ListJobsRequest request;
  request.set_sweep_id(submitted.sweep_id());
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(request));
  ASSERT_EQ(jobs.jobs_size(), 3);
  const std::string train = submitted.sweep_id() + "-0";
  EXPECT_EQ(jobs.jobs(0).spec().kind(), v1::JOB_KIND_TRAIN);
  EXPECT_EQ(jobs.jobs(1).spec().model(), "artifact:" + train + "/init_model");
  EXPECT_EQ(jobs.jobs(1).depends_on(), train);
  EXPECT_EQ(jobs.jobs(2).spec().model(), "artifact:" + train + "/model");
  EXPECT_EQ(jobs.jobs(2).depends_on(), train);
  EXPECT_EQ(jobs.jobs(2).spec().kind(), v1::JOB_KIND_EXTRACT);

  // A probed sweep of another sweep's checkpoint: its PROBE job depends on
  // an EXTRACT job, and keeps the model it names.
  v1::SweepSpec probed;
  probed.set_name("probe-trained");
  probed.add_models("artifact:sw-elsewhere-0/model");
  probed.add_datasets()->set_name("kvpr");
  probed.mutable_probe()->set_task("kvpr");
  LF_ASSERT_OK_AND_ASSIGN(auto probe_sweep, core_->SubmitSweep(probed));
  request.set_sweep_id(probe_sweep.sweep_id());
  LF_ASSERT_OK_AND_ASSIGN(auto probe_jobs, core_->ListJobs(request));
  ASSERT_EQ(probe_jobs.jobs_size(), 2);
  EXPECT_EQ(probe_jobs.jobs(1).spec().kind(), v1::JOB_KIND_PROBE);
  EXPECT_EQ(probe_jobs.jobs(1).spec().model(), "artifact:sw-elsewhere-0/model");
}

TEST_F(CoreTest, WorkerCallsCheckTheirArguments) {
  LF_ASSERT_OK(core_->SubmitSweep(Spec()).status());
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id("worker-nobody");
  EXPECT_THAT(core_->LeaseJob(lease_request).status(),
              StatusIs(absl::StatusCode::kNotFound, "unknown worker"));
  lease_request.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(lease_request));
  ASSERT_TRUE(lease.leased());

  v1::ResultChunk chunk = OneStatChunk(lease, 0);
  chunk.add_stats()->set_layer(1);  // stats[1] has no metric
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.stats[1].metric: empty"));
  chunk = OneStatChunk(lease, 0);
  *chunk.add_stats() = chunk.stats(0);
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[1]: duplicate metric 'adjacent_cos' at layer 0"));
  chunk = OneStatChunk(lease, 0);
  chunk.mutable_stats(0)->set_head(-2);
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.stats[0].head: -2 is negative"));
  chunk = OneStatChunk(lease, 0);
  chunk.mutable_stats(0)->set_position(-1);
  EXPECT_THAT(
      core_->CommitChunk(chunk).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "chunk.stats[0].position: -1 is negative"));
  chunk = OneStatChunk(lease, 0);
  chunk.mutable_stats(0)->set_layer_b(-3);
  EXPECT_THAT(
      core_->CommitChunk(chunk).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "chunk.stats[0].layer_b: -3 is negative"));
  chunk = OneStatChunk(lease, 0);
  chunk.mutable_stats(0)->set_layer_b(2);
  chunk.mutable_stats(0)->set_head(0);
  *chunk.add_stats() = chunk.stats(0);
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.stats[1]: duplicate metric 'adjacent_cos' at layer 0 "
                       "layer_b 2 head 0"));
  chunk = OneStatChunk(lease, 0);
  chunk.mutable_stats(0)->set_count(0);
  EXPECT_THAT(
      core_->CommitChunk(chunk).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "chunk.stats[0].count: 0 is not positive"));
  chunk = OneStatChunk(lease, 0);
  chunk.mutable_stats(0)->set_sum(std::nan(""));
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.stats[0].sum: not finite"));
  EXPECT_THAT(core_->CommitChunk(OneStatChunk(lease, 2)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.sequence: 2"));
  chunk = OneStatChunk(lease, 0);
  chunk.set_lease_id("lease-forged");
  EXPECT_THAT(core_->CommitChunk(chunk).status(),
              StatusIs(absl::StatusCode::kAborted, "lease-forged"));
  // Nothing above was committed.
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, core_->GetSweep(lease.job().sweep_id()));
  EXPECT_EQ(sweep.chunks_committed(), 0);
}

TEST_F(CoreTest, QueryResultsAddsDerivedRowsThatObeyTheMetricFilter) {
  v1::SweepSpec spec = Spec(2, 2);
  spec.set_models(0, "pythia-14m");  // 6 blocks: layers 0..7 (pythia-tiny has 0..3)
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  const std::string worker = Register();
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(worker);
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(lease_request));
  ASSERT_TRUE(lease.leased());
  v1::ResultChunk chunk;
  chunk.set_job_id(lease.job().job_id());
  chunk.set_lease_id(lease.lease_id());
  chunk.set_sequence(0);
  for (int l = 0; l < 6; ++l) {  // adjacent_cos = l/10 over 6 pairs
    v1::MetricStat* stat = chunk.add_stats();
    stat->set_metric("adjacent_cos");
    stat->set_layer(l);
    stat->set_sum(2 * 0.1 * l);
    stat->set_sum_sq(2 * 0.01 * l * l);
    stat->set_count(2);
  }
  LF_ASSERT_OK(core_->CommitChunk(chunk).status());

  v1::QueryResultsRequest request;
  request.set_sweep_id(submitted.sweep_id());
  LF_ASSERT_OK_AND_ASSIGN(auto all, core_->QueryResults(request));
  ASSERT_EQ(all.rows_size(), 6 + 6);
  EXPECT_EQ(all.rows(6).metric(), "cubic(adjacent_cos)");
  EXPECT_EQ(all.rows(11).metric(), "v_loc(adjacent_cos)");

  request.set_metric("adjacent_cos");
  LF_ASSERT_OK_AND_ASSIGN(auto base, core_->QueryResults(request));
  EXPECT_EQ(base.rows_size(), 6);

  request.set_metric("v_glob(adjacent_cos)");
  LF_ASSERT_OK_AND_ASSIGN(auto v_glob, core_->QueryResults(request));
  ASSERT_EQ(v_glob.rows_size(), 1);
  EXPECT_EQ(v_glob.rows(0).metric(), "v_glob(adjacent_cos)");
  EXPECT_NEAR(v_glob.rows(0).value(), 0.01 * 35.0 / 12.0, 1e-15);
  EXPECT_EQ(v_glob.rows(0).count(), 6);

  request.set_metric("v_glob(intertoken_cos)");
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->QueryResults(request));
  EXPECT_EQ(none.rows_size(), 0);
}

// Bug pinned: a `layers` job's series (here adjacent_cos at 0..4 of a
// 6-block model) got a cubic fit as if the model ended at its last listed
// point (L read as 5). A job with layers has no derived rows.
TEST_F(CoreTest, QueryResultsGivesNoDerivedRowsForALayersJob) {
  v1::SweepSpec spec = Spec(2, 2);
  spec.set_models(0, "pythia-14m");
  for (int l = 0; l < 5; ++l) spec.add_layers(l);
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(lease_request));
  ASSERT_TRUE(lease.leased());
  v1::ResultChunk chunk;
  chunk.set_job_id(lease.job().job_id());
  chunk.set_lease_id(lease.lease_id());
  chunk.set_sequence(0);
  for (int l = 0; l < 5; ++l) {
    v1::MetricStat* stat = chunk.add_stats();
    stat->set_metric("adjacent_cos");
    stat->set_layer(l);
    stat->set_sum(2 * 0.1 * l * l);
    stat->set_sum_sq(2 * 0.01 * l * l * l * l);
    stat->set_count(2);
  }
  LF_ASSERT_OK(core_->CommitChunk(chunk).status());
  v1::QueryResultsRequest request;
  request.set_sweep_id(submitted.sweep_id());
  LF_ASSERT_OK_AND_ASSIGN(auto all, core_->QueryResults(request));
  ASSERT_EQ(all.rows_size(), 5);
  for (const v1::ResultRow& row : all.rows()) EXPECT_EQ(row.metric(), "adjacent_cos");
  request.set_metric("v_loc(adjacent_cos)");
  LF_ASSERT_OK_AND_ASSIGN(auto v_loc, core_->QueryResults(request));
  EXPECT_EQ(v_loc.rows_size(), 0);
}

TEST_F(CoreTest, ReaperRequeuesThenFailsWithFakeClock) {
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(Spec()));
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(lease_request));
  LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(lease, 0)).status());

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(lease_request.worker_id());
  heartbeat.set_job_id(lease.job().job_id());
  heartbeat.set_lease_id(lease.lease_id());
  now_ += 900;
  LF_ASSERT_OK(core_->Heartbeat(heartbeat).status());  // expiry now +1000
  now_ += 1000;
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, core_->ReapOnce());
  EXPECT_EQ(lapsed, 0);
  now_ += 1;
  const uint64_t before = core_->version();
  LF_ASSERT_OK_AND_ASSIGN(lapsed, core_->ReapOnce());
  EXPECT_EQ(lapsed, 1);
  EXPECT_GT(core_->version(), before);
  EXPECT_THAT(core_->Heartbeat(heartbeat).status(), StatusIs(absl::StatusCode::kAborted, "lapsed"));

  LF_ASSERT_OK_AND_ASSIGN(auto again, core_->LeaseJob(lease_request));
  ASSERT_TRUE(again.leased());
  EXPECT_EQ(again.resume_from_sequence(), 1);
  now_ += 5000;
  LF_ASSERT_OK_AND_ASSIGN(lapsed, core_->ReapOnce());
  EXPECT_EQ(lapsed, 1);
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, core_->GetSweep(submitted.sweep_id()));
  EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_FAILED);
  v1::ListJobsRequest list;
  list.set_state(v1::JOB_STATE_FAILED);
  LF_ASSERT_OK_AND_ASSIGN(auto failed, core_->ListJobs(list));
  ASSERT_EQ(failed.jobs_size(), 1);
  EXPECT_EQ(failed.jobs(0).error(), "lease lapsed 2 times");
  EXPECT_THAT(core_->CancelSweep(submitted.sweep_id()).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "already finished"));
}

TEST_F(CoreTest, WaitForChangeWakesOnCommitAndOnShutdown) {
  LF_ASSERT_OK(core_->SubmitSweep(Spec()).status());
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(lease_request));
  const uint64_t seen = core_->version();
  std::thread committer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    (void)core_->CommitChunk(OneStatChunk(lease, 0));
  });
  const absl::Time start = absl::Now();
  EXPECT_GT(core_->WaitForChange(seen, absl::Seconds(30)), seen);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  committer.join();
  // A repeat changes nothing, so it does not wake watchers.
  const uint64_t after = core_->version();
  LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(lease, 0)).status());
  EXPECT_EQ(core_->version(), after);
  EXPECT_EQ(core_->WaitForChange(after, absl::Milliseconds(20)), after);
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(50));
    core_->Shutdown();
  });
  EXPECT_EQ(core_->WaitForChange(after, absl::Seconds(30)), after);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_TRUE(core_->is_shut_down());
  stopper.join();
}

TEST_F(CoreTest, ReaperThreadRunsOnItsInterval) {
  TempDir dir;
  CoreOptions options;
  options.lease_ttl_ms = 10;
  options.heartbeat_interval_ms = 5;
  options.reaper_interval_ms = 10;
  LF_ASSERT_OK_AND_ASSIGN(auto store, OpenSqliteStore(dir.File("r.db")));
  CoordinatorCore core(std::move(store), options);  // real clock
  LF_ASSERT_OK(core.SubmitSweep(Spec()).status());
  LF_ASSERT_OK_AND_ASSIGN(auto worker, core.RegisterWorker({}));
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(worker.worker_id());
  LF_ASSERT_OK(core.LeaseJob(lease_request).status());
  core.StartReaper();
  v1::ListJobsRequest queued;
  queued.set_state(v1::JOB_STATE_QUEUED);
  bool requeued = false;
  for (int i = 0; i < 500 && !requeued; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    auto jobs = core.ListJobs(queued);
    requeued = jobs.ok() && jobs->jobs_size() == 1;
  }
  EXPECT_TRUE(requeued);
  core.Shutdown();  // joins the reaper promptly
}

// A probe sweep through the core: PROBE jobs wait for their EXTRACT job,
// then run; a failed EXTRACT job fails its PROBE job.
TEST_F(CoreTest, ProbeJobsRunAfterTheirExtractJobAndFailWithIt) {
  v1::SweepSpec spec = Spec(2, 2);  // one chunk per EXTRACT job
  spec.add_seeds(0);
  spec.add_seeds(1);
  spec.mutable_probe()->set_task("kvpr");
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  EXPECT_EQ(submitted.jobs(), 4);
  const std::string& id = submitted.sweep_id();
  v1::ListJobsRequest list;
  list.set_sweep_id(id);
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(list));
  ASSERT_EQ(jobs.jobs_size(), 4);
  EXPECT_EQ(jobs.jobs(2).depends_on(), id + "-0");
  EXPECT_EQ(jobs.jobs(3).depends_on(), id + "-1");
  EXPECT_EQ(jobs.jobs(3).spec().kind(), v1::JOB_KIND_PROBE);
  EXPECT_EQ(jobs.jobs(3).chunks_total(), 1);
  EXPECT_TRUE(jobs.jobs(0).spec().has_probe());
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, core_->GetSweep(id));
  EXPECT_EQ(sweep.chunks_total(), 4);  // 2 EXTRACT chunks + 2 PROBE chunks
  EXPECT_EQ(sweep.spec().probe().epochs(), 150);

  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto a, core_->LeaseJob(lease_request));
  LF_ASSERT_OK_AND_ASSIGN(auto b, core_->LeaseJob(lease_request));
  EXPECT_EQ(a.job().job_id(), id + "-0");
  EXPECT_EQ(b.job().job_id(), id + "-1");
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->LeaseJob(lease_request));
  EXPECT_FALSE(none.leased());  // both PROBE jobs wait

  // The artifact upload check: the live lease passes, others do not.
  LF_ASSERT_OK(core_->CheckLease(a.job().job_id(), a.lease_id()));
  EXPECT_THAT(core_->CheckLease(a.job().job_id(), b.lease_id()),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(core_->CheckLease("", a.lease_id()),
              StatusIs(absl::StatusCode::kInvalidArgument, "job_id: required"));

  // EXTRACT 0 succeeds: its PROBE job becomes runnable.
  LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(a, 0)).status());
  v1::CompleteJobRequest complete;
  complete.set_job_id(a.job().job_id());
  complete.set_lease_id(a.lease_id());
  LF_ASSERT_OK(core_->CompleteJob(complete));
  now_ += 10;
  LF_ASSERT_OK_AND_ASSIGN(auto probe, core_->LeaseJob(lease_request));
  ASSERT_TRUE(probe.leased());
  EXPECT_EQ(probe.job().job_id(), id + "-2");
  EXPECT_EQ(probe.job().spec().kind(), v1::JOB_KIND_PROBE);
  EXPECT_EQ(probe.job().depends_on(), id + "-0");

  // EXTRACT 1's lease lapses past max_attempts (2): its PROBE job fails.
  now_ += 5000;
  LF_ASSERT_OK(core_->ReapOnce().status());  // b and the probe lapse
  LF_ASSERT_OK_AND_ASSIGN(auto again, core_->LeaseJob(lease_request));
  EXPECT_EQ(again.job().job_id(), id + "-1");
  const uint64_t before = core_->version();
  now_ += 5000;
  LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, core_->ReapOnce());
  EXPECT_EQ(lapsed, 1);
  EXPECT_GT(core_->version(), before);
  LF_ASSERT_OK_AND_ASSIGN(jobs, core_->ListJobs(list));
  EXPECT_EQ(jobs.jobs(1).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(jobs.jobs(3).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(jobs.jobs(3).error(), "dependency " + id + "-1 failed: lease lapsed 2 times");
  LF_ASSERT_OK_AND_ASSIGN(sweep, core_->GetSweep(id));
  EXPECT_EQ(sweep.jobs_succeeded(), 1);
  EXPECT_EQ(sweep.jobs_failed(), 2);
  EXPECT_EQ(sweep.jobs_queued(), 1);  // the requeued PROBE job 2
  EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_ACTIVE);
  // Cancelling stops what is left.
  LF_ASSERT_OK_AND_ASSIGN(sweep, core_->CancelSweep(id));
  EXPECT_EQ(sweep.jobs_cancelled(), 1);
  EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_CANCELLED);
}

TEST_F(CoreTest, FailedExtractJobFailsItsProbeJobWithTheReason) {
  v1::SweepSpec spec = Spec(2, 2);
  spec.mutable_probe()->set_task("kvpr");
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto a, core_->LeaseJob(lease_request));
  v1::FailJobRequest fail;
  fail.set_job_id(a.job().job_id());
  fail.set_lease_id(a.lease_id());
  fail.set_error("checkpoint not found");
  LF_ASSERT_OK(core_->FailJob(fail));
  v1::ListJobsRequest list;
  list.set_sweep_id(submitted.sweep_id());
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(list));
  ASSERT_EQ(jobs.jobs_size(), 2);
  EXPECT_EQ(jobs.jobs(1).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(jobs.jobs(1).error(),
            "dependency " + a.job().job_id() + " failed: checkpoint not found");
  LF_ASSERT_OK_AND_ASSIGN(auto sweep, core_->GetSweep(submitted.sweep_id()));
  EXPECT_EQ(sweep.jobs_failed(), 2);
  EXPECT_EQ(sweep.state(), v1::SWEEP_STATE_FAILED);
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->LeaseJob(lease_request));
  EXPECT_FALSE(none.leased());
}

// --- Locality (issue 13): LeaseJob prefers a job of a model the worker
// holds, within the sweep and priority the primary order picks. ---

// The resident entry a worker that ran `job` reports (its model cache's key).
v1::ResidentModel ResidentOf(const v1::Job& job) {
  v1::ResidentModel m;
  m.set_model(job.spec().model());
  m.set_init_scheme(job.spec().init_scheme());
  m.set_seed(job.spec().seed());
  m.set_dtype(job.spec().dtype());
  return m;
}

v1::LeaseJobRequest LeaseRequest(const std::string& worker_id,
                                 std::vector<v1::ResidentModel> resident = {}) {
  v1::LeaseJobRequest request;
  request.set_worker_id(worker_id);
  for (v1::ResidentModel& m : resident) *request.add_resident_models() = std::move(m);
  return request;
}

TEST_F(CoreTest, LeaseJobPrefersAJobOfAModelTheWorkerHolds) {
  v1::SweepSpec spec = Spec();
  for (int seed : {0, 1, 2}) spec.add_seeds(seed);
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  ASSERT_EQ(submitted.jobs(), 3);
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs([&] {
    v1::ListJobsRequest r;
    r.set_sweep_id(submitted.sweep_id());
    return r;
  }()));
  ASSERT_EQ(jobs.jobs_size(), 3);
  const v1::Job& first = jobs.jobs(0);
  const v1::Job& third = jobs.jobs(2);
  ASSERT_EQ(third.spec().seed(), 2);
  const std::string holder = Register(), empty = Register();

  // Same model name, seed and scheme, another dtype: other weights, no match.
  v1::ResidentModel other_dtype = ResidentOf(third);
  other_dtype.set_dtype(other_dtype.dtype() == "bf16" ? "fp32" : "bf16");
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(holder, {other_dtype})));
  EXPECT_EQ(lease.job().job_id(), first.job_id());

  // The holder of the third job's model gets it over the older second.
  LF_ASSERT_OK_AND_ASSIGN(lease,
                          core_->LeaseJob(LeaseRequest(holder, {other_dtype, ResidentOf(third)})));
  EXPECT_EQ(lease.job().job_id(), third.job_id());
  // A worker holding nothing gets the oldest.
  LF_ASSERT_OK_AND_ASSIGN(lease, core_->LeaseJob(LeaseRequest(empty)));
  EXPECT_EQ(lease.job().job_id(), jobs.jobs(1).job_id());
  LF_ASSERT_OK_AND_ASSIGN(lease, core_->LeaseJob(LeaseRequest(empty)));
  EXPECT_FALSE(lease.leased());
}

TEST_F(CoreTest, LocalityNeverPassesOverAnotherSweepOrAHigherPriority) {
  // Sweep A (seeds 0, 1), then sweep B (seed 7), then sweep C (priority 5,
  // seed 0): the primary order is C-0, A-0, A-1, B-0.
  auto submit = [&](std::vector<int> seeds, int priority) {
    v1::SweepSpec spec = Spec();
    for (int seed : seeds) spec.add_seeds(seed);
    spec.set_priority(priority);
    auto submitted = core_->SubmitSweep(spec);
    EXPECT_TRUE(submitted.ok()) << submitted.status();
    v1::ListJobsRequest r;
    r.set_sweep_id(submitted.ok() ? submitted->sweep_id() : "");
    auto jobs = core_->ListJobs(r);
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    return std::vector<v1::Job>(jobs->jobs().begin(), jobs->jobs().end());
  };
  const std::vector<v1::Job> a = submit({0, 1}, 0);
  const std::vector<v1::Job> b = submit({7}, 0);
  const std::vector<v1::Job> c = submit({0}, 5);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_EQ(c.size(), 1u);
  const std::string worker = Register();
  // The worker holds B-0's and A-1's models, not C-0's or A-0's.
  const std::vector<v1::ResidentModel> holds = {ResidentOf(b[0]), ResidentOf(a[1])};
  std::vector<std::string> order;
  for (int i = 0; i < 4; ++i) {
    LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(worker, holds)));
    ASSERT_TRUE(lease.leased());
    order.push_back(lease.job().job_id());
  }
  // C-0 (priority), then within A: A-1 (resident) before A-0; B-0, resident
  // too, waits for its sweep's turn behind A-0.
  EXPECT_EQ(order,
            (std::vector<std::string>{c[0].job_id(), a[1].job_id(), a[0].job_id(), b[0].job_id()}));
}

TEST_F(CoreTest, LocalityNeverPicksAProbeJobForItsModel) {
  // A PROBE job's spec names its EXTRACT job's model but takes nothing from
  // the model cache: holding that model must not move it ahead.
  v1::SweepSpec spec = Spec(2, 2);  // one chunk per EXTRACT job
  for (int seed : {0, 1, 2}) spec.add_seeds(seed);
  spec.mutable_probe()->set_task("kvpr");
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(spec));
  ASSERT_EQ(submitted.jobs(), 6);  // EXTRACT 0-2, then PROBE 3-5
  const std::string& id = submitted.sweep_id();
  const std::string worker = Register();
  LF_ASSERT_OK_AND_ASSIGN(auto first, core_->LeaseJob(LeaseRequest(worker)));
  ASSERT_EQ(first.job().job_id(), id + "-0");
  LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(first, 0)).status());
  v1::CompleteJobRequest complete;
  complete.set_job_id(first.job().job_id());
  complete.set_lease_id(first.lease_id());
  LF_ASSERT_OK(core_->CompleteJob(complete));
  // Runnable now: EXTRACT 1 and 2, and PROBE 3 (same model key as job 0).
  LF_ASSERT_OK_AND_ASSIGN(auto next,
                          core_->LeaseJob(LeaseRequest(worker, {ResidentOf(first.job())})));
  EXPECT_EQ(next.job().job_id(), id + "-1");
  EXPECT_EQ(next.job().spec().kind(), v1::JOB_KIND_EXTRACT);
}

TEST_F(CoreTest, LeaseJobChecksResidentModels) {
  LF_ASSERT_OK(core_->SubmitSweep(Spec()).status());
  const std::string worker = Register();
  v1::ResidentModel good;
  good.set_model("pythia-tiny");
  good.set_init_scheme("reference");
  good.set_dtype("fp32");

  std::vector<v1::ResidentModel> too_many(limits::kMaxResidentModels + 1, good);
  EXPECT_THAT(
      core_->LeaseJob(LeaseRequest(worker, too_many)).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               absl::StrCat("resident_models: ", limits::kMaxResidentModels + 1,
                            " entries, more than the limit of ", limits::kMaxResidentModels)));
  v1::ResidentModel no_model = good;
  no_model.clear_model();
  EXPECT_THAT(core_->LeaseJob(LeaseRequest(worker, {good, no_model})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "resident_models[1].model: required"));
  v1::ResidentModel long_scheme = good;
  long_scheme.set_init_scheme(std::string(limits::kMaxShortNameBytes + 1, 'x'));
  EXPECT_THAT(core_->LeaseJob(LeaseRequest(worker, {long_scheme})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("resident_models[0].init_scheme: ",
                                    limits::kMaxShortNameBytes + 1, " bytes")));
  v1::ResidentModel long_dtype = good;
  long_dtype.set_dtype(std::string(limits::kMaxShortNameBytes + 1, 'x'));
  EXPECT_THAT(core_->LeaseJob(LeaseRequest(worker, {long_dtype})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "resident_models[0].dtype: "));
  v1::ResidentModel long_model = good;
  long_model.set_model(std::string(limits::kMaxModelBytes + 1, 'm'));
  EXPECT_THAT(core_->LeaseJob(LeaseRequest(worker, {long_model})).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "resident_models[0].model: "));
  // None of the refused requests leased anything; exactly the cap is fine.
  std::vector<v1::ResidentModel> at_cap(limits::kMaxResidentModels, good);
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(worker, at_cap)));
  EXPECT_TRUE(lease.leased());
  EXPECT_EQ(lease.job().attempts(), 1);
}

// Issue 14, failure 3: every FailJob was final, so a worker short of memory
// failed jobs for good and kept leasing. FailJob now judges the code.
TEST_F(CoreTest, FailJobRetriesHostErrorsAndFailsBadInputAtOnce) {
  LF_ASSERT_OK_AND_ASSIGN(auto submitted, core_->SubmitSweep(Spec(6, 2)));
  (void)submitted;
  v1::LeaseJobRequest bad;
  bad.set_worker_id(Register());
  v1::LeaseJobRequest good;
  good.set_worker_id(Register());
  LF_ASSERT_OK_AND_ASSIGN(auto a, core_->LeaseJob(bad));
  ASSERT_TRUE(a.leased());
  v1::FailJobRequest fail;
  fail.set_job_id(a.job().job_id());
  fail.set_lease_id(a.lease_id());
  fail.set_error("RESOURCE_EXHAUSTED: CUDA out of memory");
  fail.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  LF_ASSERT_OK(core_->FailJob(fail));
  // Requeued (backoff 0 here), not to the worker that failed it.
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->LeaseJob(bad));
  EXPECT_FALSE(none.leased());
  LF_ASSERT_OK_AND_ASSIGN(auto b, core_->LeaseJob(good));
  ASSERT_TRUE(b.leased());
  EXPECT_EQ(b.job().job_id(), a.job().job_id());
  EXPECT_EQ(b.job().attempts(), 2);
  EXPECT_EQ(b.job().error(),
            "attempt 1 on " + bad.worker_id() +
                " failed (host error, retrying): RESOURCE_EXHAUSTED: CUDA out of memory");
  // The same job, now with bad input: final although an attempt is left.
  fail.set_lease_id(b.lease_id());
  fail.set_error("INVALID_ARGUMENT: dataset.name: unknown data set 'kvpr2'");
  fail.set_code(static_cast<int>(absl::StatusCode::kInvalidArgument));
  LF_ASSERT_OK(core_->FailJob(fail));
  v1::ListJobsRequest list;
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(list));
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(jobs.jobs(0).error(), "INVALID_ARGUMENT: dataset.name: unknown data set 'kvpr2'");
  fail.set_code(17);
  EXPECT_THAT(core_->FailJob(fail),
              StatusIs(absl::StatusCode::kInvalidArgument, "code: 17 is not a status code"));
}

TEST_F(CoreTest, HostErrorsOnTheLastAttemptFailListingEveryAttempt) {
  LF_ASSERT_OK(core_->SubmitSweep(Spec(2, 2)).status());  // max_attempts 2
  v1::LeaseJobRequest w1;
  w1.set_worker_id(Register());
  v1::LeaseJobRequest w2;
  w2.set_worker_id(Register());
  std::string job_id;
  for (const v1::LeaseJobRequest* w : {&w1, &w2}) {
    LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(*w));
    ASSERT_TRUE(lease.leased());
    job_id = lease.job().job_id();
    v1::FailJobRequest fail;
    fail.set_job_id(job_id);
    fail.set_lease_id(lease.lease_id());
    fail.set_error(absl::StrCat("INTERNAL: CUDA error on ", w->worker_id()));
    fail.set_code(static_cast<int>(absl::StatusCode::kInternal));
    LF_ASSERT_OK(core_->FailJob(fail));
  }
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(v1::ListJobsRequest()));
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(jobs.jobs(0).error(),
            absl::StrCat("failed on 2 attempts: attempt 1 on ", w1.worker_id(),
                         ": INTERNAL: CUDA error on ", w1.worker_id(), "; attempt 2 on ",
                         w2.worker_id(), ": INTERNAL: CUDA error on ", w2.worker_id()));
}

TEST_F(CoreTest, QuarantinedWorkerIsLeasedNothingUntilReleased) {
  // 4 jobs; max_attempts 2, so each job survives one host error.
  LF_ASSERT_OK(core_->SubmitSweep(Spec(8, 2)).status());
  v1::SweepSpec more = Spec(2, 2);
  more.set_name("more");
  for (int i = 0; i < 3; ++i) LF_ASSERT_OK(core_->SubmitSweep(more).status());
  v1::LeaseJobRequest bad;
  bad.set_worker_id(Register());
  v1::LeaseJobRequest good;
  good.set_worker_id(Register());  // alive: the retries go to it
  for (int i = 0; i < 3; ++i) {    // quarantine_after defaults to 3
    LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(bad));
    ASSERT_TRUE(lease.leased()) << i;
    v1::FailJobRequest fail;
    fail.set_job_id(lease.job().job_id());
    fail.set_lease_id(lease.lease_id());
    fail.set_error("RESOURCE_EXHAUSTED: out of memory");
    fail.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
    LF_ASSERT_OK(core_->FailJob(fail));
  }
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->LeaseJob(bad));
  EXPECT_FALSE(none.leased());  // one job never tried by it is still queued
  LF_ASSERT_OK_AND_ASSIGN(auto workers, core_->ListWorkers());
  ASSERT_EQ(workers.size(), 2u);
  for (const WorkerRecord& w : workers) {
    EXPECT_EQ(w.quarantined, w.worker_id == bad.worker_id()) << w.worker_id;
  }
  EXPECT_THAT(core_->ReleaseWorker(good.worker_id()),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not quarantined"));
  EXPECT_THAT(core_->ReleaseWorker(""),
              StatusIs(absl::StatusCode::kInvalidArgument, "worker_id: required"));
  LF_ASSERT_OK(core_->ReleaseWorker(bad.worker_id()));
  LF_ASSERT_OK_AND_ASSIGN(auto after, core_->LeaseJob(bad));
  ASSERT_TRUE(after.leased());
  EXPECT_EQ(after.job().attempts(), 1);  // the one it never tried
}

TEST_F(CoreTest, ReleaseJobGivesTheLeaseBack) {
  LF_ASSERT_OK(core_->SubmitSweep(Spec()).status());
  const std::string worker = Register();
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(worker)));
  ASSERT_TRUE(lease.leased());
  v1::ReleaseJobRequest request;
  request.set_job_id(lease.job().job_id());
  EXPECT_THAT(core_->ReleaseJob(request),
              StatusIs(absl::StatusCode::kInvalidArgument, "lease_id: required"));
  request.set_lease_id(lease.lease_id());
  request.clear_job_id();
  EXPECT_THAT(core_->ReleaseJob(request),
              StatusIs(absl::StatusCode::kInvalidArgument, "job_id: required"));
  request.set_job_id(lease.job().job_id());
  const uint64_t before = core_->version();
  LF_ASSERT_OK(core_->ReleaseJob(request));
  EXPECT_GT(core_->version(), before);  // watchers see the job queued again
  LF_ASSERT_OK_AND_ASSIGN(auto again, core_->LeaseJob(LeaseRequest(worker)));
  EXPECT_EQ(again.job().job_id(), lease.job().job_id());
  EXPECT_EQ(again.job().attempts(), 1);
  EXPECT_NE(again.lease_id(), lease.lease_id());
}

// --- Issue 14, item 4: deadlines, the progress watchdog, recovery -------

// A core on the fixture's database with other options (the fixture's is
// closed first, as a restarted coordinator's predecessor would be).
std::unique_ptr<CoordinatorCore> Reopen(TempDir& dir, CoreOptions options,
                                        std::atomic<int64_t>& now) {
  auto store = OpenSqliteStore(dir.File("lf.db"));
  EXPECT_TRUE(store.ok()) << store.status();
  return std::make_unique<CoordinatorCore>(*std::move(store), options,
                                           [&now] { return now.load(); });
}

CoreOptions LimitOptions() {
  CoreOptions options;
  options.lease_ttl_ms = 1000;
  options.heartbeat_interval_ms = 200;
  options.max_attempts = 3;
  options.retry_backoff_ms = 0;
  return options;
}

v1::HeartbeatRequest Beat(const std::string& worker, const v1::LeaseJobResponse& lease,
                          std::optional<int64_t> progress = std::nullopt) {
  v1::HeartbeatRequest beat;
  beat.set_worker_id(worker);
  beat.set_job_id(lease.job().job_id());
  beat.set_lease_id(lease.lease_id());
  if (progress.has_value()) beat.set_progress(*progress);
  return beat;
}

// Issue 14, failure 5 (regression): no job had a deadline.
TEST_F(CoreTest, JobPastItsSweepsDeadlineFailsWithDeadlineExceeded) {
  v1::SweepSpec spec = Spec(4, 1);
  spec.set_max_job_seconds(-1);
  EXPECT_THAT(
      core_->SubmitSweep(spec).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "max_job_seconds: -1 is outside [0, 2592000]"));
  spec.set_max_job_seconds(2592001);
  EXPECT_THAT(core_->SubmitSweep(spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "max_job_seconds: 2592001 is outside [0, 2592000]"));
  spec.set_max_job_seconds(5);
  LF_ASSERT_OK(core_->SubmitSweep(spec).status());
  const std::string worker = Register();
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(worker)));
  ASSERT_TRUE(lease.leased());
  EXPECT_EQ(lease.job().spec().max_job_seconds(), 5);
  const std::string job_id = lease.job().job_id();
  // Renewed (and progressing) up to the limit: the clock starts at the
  // first heartbeat that reports progress, 100 ms after the grant.
  for (int64_t t = 100, p = 0; t <= 5100; t += 500, ++p) {
    now_ = 1'000'000 + t;
    LF_ASSERT_OK_AND_ASSIGN(auto beat, core_->Heartbeat(Beat(worker, lease, p)));
    EXPECT_FALSE(beat.cancelled());
    EXPECT_EQ(beat.stopped(), "") << "at " << t << " ms";
  }
  now_ = 1'000'000 + 5101;  // 5.001 s after the first progress report
  LF_ASSERT_OK_AND_ASSIGN(auto beat, core_->Heartbeat(Beat(worker, lease, 99)));
  const std::string expected = "DEADLINE_EXCEEDED: job " + job_id +
                               " ran 5 s under one lease, past its limit of "
                               "max_job_seconds = 5";
  EXPECT_EQ(beat.stopped(), expected);
  LF_ASSERT_OK_AND_ASSIGN(auto job, core_->ListJobs(v1::ListJobsRequest()));
  ASSERT_EQ(job.jobs_size(), 1);
  EXPECT_EQ(job.jobs(0).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.jobs(0).error(), expected);
  // The lease is gone: a later heartbeat or chunk of it is ABORTED.
  EXPECT_THAT(core_->Heartbeat(Beat(worker, lease, 100)).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(core_->CommitChunk(OneStatChunk(lease, 0)).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(core_->Heartbeat(Beat(worker, lease, -1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "progress: -1 is negative"));
}

TEST_F(CoreTest, CoordinatorDefaultDeadlineAppliesToSweepsWithoutOne) {
  CoreOptions options = LimitOptions();
  options.max_job_seconds = 2;
  core_.reset();
  core_ = Reopen(dir_, options, now_);
  v1::SweepSpec spec = Spec(4, 1);
  LF_ASSERT_OK(core_->SubmitSweep(spec).status());  // max_job_seconds 0: the default
  spec.set_max_job_seconds(10);
  LF_ASSERT_OK(core_->SubmitSweep(spec).status());  // its own, longer limit
  const std::string worker = Register();
  LF_ASSERT_OK_AND_ASSIGN(auto first, core_->LeaseJob(LeaseRequest(worker)));
  LF_ASSERT_OK_AND_ASSIGN(auto second, core_->LeaseJob(LeaseRequest(worker)));
  ASSERT_TRUE(first.leased() && second.leased());
  ASSERT_EQ(first.job().spec().max_job_seconds(), 0);
  // A lease whose heartbeats report no progress (held ahead, or an older
  // worker) is not judged: the clock starts at the first report.
  for (int64_t t = 500; t <= 5000; t += 500) {
    now_ = 1'000'000 + t;
    LF_ASSERT_OK_AND_ASSIGN(auto waiting, core_->Heartbeat(Beat(worker, first)));
    EXPECT_EQ(waiting.stopped(), "");
    LF_ASSERT_OK(core_->Heartbeat(Beat(worker, second)).status());
  }
  for (int64_t t = 5500, p = 0; t <= 7500; t += 500, ++p) {
    now_ = 1'000'000 + t;
    LF_ASSERT_OK_AND_ASSIGN(auto a, core_->Heartbeat(Beat(worker, first, p)));
    EXPECT_EQ(a.stopped(), "");
    LF_ASSERT_OK_AND_ASSIGN(auto b, core_->Heartbeat(Beat(worker, second, p)));
    EXPECT_EQ(b.stopped(), "");
  }
  now_ = 1'000'000 + 7501;
  LF_ASSERT_OK_AND_ASSIGN(auto a, core_->Heartbeat(Beat(worker, first, 9)));
  EXPECT_EQ(a.stopped(), "DEADLINE_EXCEEDED: job " + first.job().job_id() +
                             " ran 2 s under one lease, past its limit of max_job_seconds = 2");
  LF_ASSERT_OK_AND_ASSIGN(auto b, core_->Heartbeat(Beat(worker, second, 9)));
  EXPECT_EQ(b.stopped(), "");
}

// Issue 14, failure 5 (regression): the heartbeat renewed a lease whether
// or not its job progressed, so a job hung inside LibTorch held its GPU for
// ever.
TEST_F(CoreTest, LeaseWithoutProgressIsRetriedOnAnotherWorker) {
  CoreOptions options = LimitOptions();
  options.progress_timeout_ms = 1000;
  core_.reset();
  core_ = Reopen(dir_, options, now_);
  LF_ASSERT_OK(core_->SubmitSweep(Spec(4, 1)).status());
  const std::string hung = Register();
  const std::string healthy = Register();
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(hung)));
  ASSERT_TRUE(lease.leased());
  const std::string job_id = lease.job().job_id();
  // Progress 0, 1, 2 within the timeout of each other: renewed.
  int64_t t = 0;
  for (int64_t p : {0, 1, 1, 2}) {
    t += 600;
    now_ = 1'000'000 + t;
    LF_ASSERT_OK(core_->TouchWorker(healthy));
    LF_ASSERT_OK_AND_ASSIGN(auto beat, core_->Heartbeat(Beat(hung, lease, p)));
    EXPECT_EQ(beat.stopped(), "") << "progress " << p << " at " << t;
  }
  // Still 2, 1000 ms after it became 2: not yet; 1001 ms: the lease ends.
  now_ = 1'000'000 + t + 1000;
  LF_ASSERT_OK(core_->TouchWorker(healthy));
  LF_ASSERT_OK_AND_ASSIGN(auto still, core_->Heartbeat(Beat(hung, lease, 2)));
  EXPECT_EQ(still.stopped(), "");
  now_ = 1'000'000 + t + 1001;
  LF_ASSERT_OK(core_->TouchWorker(healthy));
  LF_ASSERT_OK_AND_ASSIGN(auto ended, core_->Heartbeat(Beat(hung, lease, 2)));
  const std::string expected = "UNAVAILABLE: job " + job_id +
                               " made no progress for 1001 ms on this worker (at 2; "
                               "--progress-timeout-ms 1000): lease not renewed";
  EXPECT_EQ(ended.stopped(), expected);
  EXPECT_THAT(core_->Heartbeat(Beat(hung, lease, 3)).status(),
              StatusIs(absl::StatusCode::kAborted, "lapsed"));
  // A host error: requeued, never to the hung worker while the healthy one
  // lives, and resumed there with its attempt history.
  LF_ASSERT_OK_AND_ASSIGN(auto none, core_->LeaseJob(LeaseRequest(hung)));
  EXPECT_FALSE(none.leased());
  LF_ASSERT_OK_AND_ASSIGN(auto again, core_->LeaseJob(LeaseRequest(healthy)));
  ASSERT_TRUE(again.leased());
  EXPECT_EQ(again.job().job_id(), job_id);
  EXPECT_EQ(again.job().attempts(), 2);
  EXPECT_EQ(again.job().error(),
            "attempt 1 on " + hung + " failed (host error, retrying): " + expected);
}

// Issue 14, failure 4 (regression): a 10 s stall of the coordinator
// revoked healthy leases, each costing an attempt.
TEST_F(CoreTest, StalledCoordinatorExtendsLeasesInsteadOfReapingThem) {
  for (const bool detect : {false, true}) {
    CoreOptions options = LimitOptions();
    options.stall_threshold_ms = detect ? 400 : 0;
    core_.reset();
    std::filesystem::remove(dir_.File("lf.db"));
    now_ = 1'000'000;
    core_ = Reopen(dir_, options, now_);
    LF_ASSERT_OK(core_->SubmitSweep(Spec(4, 2)).status());
    const std::string worker = Register();
    LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(worker)));
    ASSERT_TRUE(lease.leased());
    now_ = 1'000'200;
    LF_ASSERT_OK(core_->Heartbeat(Beat(worker, lease, 1)).status());
    LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, core_->ReapOnce());
    EXPECT_EQ(lapsed, 0);
    // Frozen for 10 s: nothing ran, the lease (until 1'001'200) expired.
    now_ = 1'010'200;
    if (!detect) {
      // Without the recovery pass the worker's first heartbeat after the
      // stall is refused and the reaper charges an attempt.
      EXPECT_THAT(core_->Heartbeat(Beat(worker, lease, 2)).status(),
                  StatusIs(absl::StatusCode::kAborted, "lapsed"));
      LF_ASSERT_OK_AND_ASSIGN(lapsed, core_->ReapOnce());
      EXPECT_EQ(lapsed, 1);
      continue;
    }
    // Whichever comes first after the stall, the reaper pass here, finds
    // the gap and extends the lease before anything is reaped.
    LF_ASSERT_OK_AND_ASSIGN(lapsed, core_->ReapOnce());
    EXPECT_EQ(lapsed, 0);
    LF_ASSERT_OK_AND_ASSIGN(auto beat, core_->Heartbeat(Beat(worker, lease, 2)));
    EXPECT_FALSE(beat.cancelled());
    EXPECT_EQ(beat.stopped(), "");
    LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(lease, 0)).status());
    LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(v1::ListJobsRequest()));
    ASSERT_EQ(jobs.jobs_size(), 1);
    EXPECT_EQ(jobs.jobs(0).state(), v1::JOB_STATE_RUNNING);
    EXPECT_EQ(jobs.jobs(0).attempts(), 1);
    // A worker that really went silent still lapses, a TTL later (the
    // reaper ticking every 200 ms: no stall).
    int64_t total = 0;
    for (int tick = 1; tick <= 6; ++tick) {
      now_ = 1'010'200 + 200 * tick;
      LF_ASSERT_OK_AND_ASSIGN(lapsed, core_->ReapOnce());
      total += lapsed;
      EXPECT_EQ(total, tick == 6 ? 1 : 0) << "at tick " << tick;
    }
  }
}

// Issue 14, failure 4 (regression): three coordinator restarts during one
// job failed it ("lease lapsed 3 times") on a healthy worker.
TEST_F(CoreTest, RestartsNeverCostTheRunningJobAnAttempt) {
  LF_ASSERT_OK(core_->SubmitSweep(Spec(16, 2)).status());
  const std::string worker = Register();
  LF_ASSERT_OK_AND_ASSIGN(auto lease, core_->LeaseJob(LeaseRequest(worker)));
  ASSERT_TRUE(lease.leased());
  for (int restart = 0; restart < 3; ++restart) {
    LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(lease, restart)).status());
    // Down for 5 s, five lease TTLs; the new coordinator's recovery pass
    // runs before its reaper.
    core_.reset();
    now_ += 5000;
    core_ = Reopen(dir_, LimitOptions(), now_);
    LF_ASSERT_OK_AND_ASSIGN(int64_t extended, core_->Recover());
    EXPECT_EQ(extended, 1);
    LF_ASSERT_OK_AND_ASSIGN(int64_t lapsed, core_->ReapOnce());
    EXPECT_EQ(lapsed, 0);
    // The worker re-attaches with its next heartbeat.
    now_ += 300;
    LF_ASSERT_OK_AND_ASSIGN(auto beat, core_->Heartbeat(Beat(worker, lease, restart)));
    EXPECT_FALSE(beat.cancelled());
  }
  for (int seq = 3; seq < 8; ++seq) {
    LF_ASSERT_OK(core_->CommitChunk(OneStatChunk(lease, seq)).status());
  }
  v1::CompleteJobRequest complete;
  complete.set_job_id(lease.job().job_id());
  complete.set_lease_id(lease.lease_id());
  LF_ASSERT_OK(core_->CompleteJob(complete));
  LF_ASSERT_OK_AND_ASSIGN(auto jobs, core_->ListJobs(v1::ListJobsRequest()));
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(jobs.jobs(0).attempts(), 1);
  EXPECT_EQ(jobs.jobs(0).chunks_committed(), 8);
}

}  // namespace
}  // namespace layerflow::server
