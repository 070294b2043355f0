// Locality through the real worker loop (issue 13): a worker tells LeaseJob
// which models it holds, and the coordinator gives it the jobs of those
// models before an older job of another model of the same sweep.
//
// The scene, on the CPU with pythia-tiny: a sweep of 5 jobs of model X
// (seed 0) then 5 of model Y (seed 1); a worker PROCESS whose model budget
// holds one model. A stand-in worker (this test, over the worker protocol)
// leases X's first job and lets the lease lapse once the real worker has
// moved on to Y, so that X's job comes back while Y's jobs are still
// queued. The primary order alone would hand the real worker that X job
// next (build X, evicting Y, then build Y again: 4 builds); with locality it
// finishes Y first and builds X once more at the end: 3 builds, the fewest
// possible. The count comes from the worker's own model-cache stats line.
//
// Also here: a worker stopped mid-job (SIGTERM) gives its lease back
// (WorkerProtocol.ReleaseJob) instead of leaving it to lapse, and so does a
// worker that leased its next job ahead (--lease-ahead), for both jobs.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "layerflow/v1/coordinator.grpc.pb.h"
#include "layerflow/v1/worker.grpc.pb.h"
#include "server/coordinator_server.h"
#include "tests/integration/integration_util.h"

extern char** environ;

namespace layerflow {
namespace {

using namespace std::chrono_literals;

// pythia-tiny's fp32 parameters are about 0.66 MB: this budget keeps one
// model, never two (the test checks the worker's "1 models kept").
constexpr int64_t kOneModelBudget = 1'000'000;

class LocalityTest : public integration::LoopbackCoordinatorTest {
 protected:
  LocalityTest() : LoopbackCoordinatorTest("locality") {}
  void Configure(server::CoordinatorOptions& options) override {
    // Short leases: the stand-in's job comes back about a second after it
    // stops heartbeating.
    options.lease_ttl_ms = 1000;
    options.heartbeat_interval_ms = 150;
    options.reaper_interval_ms = 50;
    options.retry_backoff_ms = 10;
  }
  void SetUp() override {
    LoopbackCoordinatorTest::SetUp();
    if (HasFatalFailure()) return;
    workers_ = v1::WorkerProtocol::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    LoopbackCoordinatorTest::TearDown();
  }

  // The worker process, its stderr into worker.log; it exits 2 s after the
  // queue empties.
  void StartWorker(const std::string& log_name = "worker.log",
                   const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {LAYERFLOW_WORKER_BINARY,
                                     "--coordinator",
                                     absl::StrCat("127.0.0.1:", server_->port()),
                                     "--name",
                                     "local",
                                     "--device",
                                     "cpu",
                                     "--idle-poll-ms",
                                     "50",
                                     "--exit-after-idle-ms",
                                     "2000",
                                     "--pause-after-chunk-ms",
                                     "100",
                                     "--resident-model-bytes",
                                     absl::StrCat(kOneModelBudget)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    const std::string log = (dir_ / log_name).string();
    posix_spawn_file_actions_addopen(&files, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int rc = posix_spawn(&pid_, argv[0], &files, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    ASSERT_EQ(rc, 0) << "spawning " << argv[0];
  }

  // Waits for the worker to exit on its own; its log.
  std::string WaitForWorkerLog(const std::string& log_name = "worker.log") {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker status " << status;
        break;
      }
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(pid_, -1) << "worker did not exit after the queue emptied";
    std::ifstream in(dir_ / log_name);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::vector<v1::Job> Jobs(const std::string& sweep_id) {
    return integration::ListJobs(*stub_, sweep_id);
  }

  std::unique_ptr<v1::WorkerProtocol::Stub> workers_;
  pid_t pid_ = -1;
};

TEST_F(LocalityTest, WorkerFinishesTheModelItHoldsBeforeAnOlderJobOfAnother) {
  v1::SweepSpec spec;
  spec.set_name("locality");
  spec.add_models("pythia-tiny");
  spec.add_seeds(0);  // model X: jobs 0-4
  spec.add_seeds(1);  // model Y: jobs 5-9
  v1::DatasetSpec* kvpr = spec.add_datasets();
  kvpr->set_name("kvpr");
  kvpr->set_num_classes(2);
  for (int n : {448, 480, 512, 544, 576}) spec.add_context_lengths(n);
  spec.set_num_prompts(3);
  spec.set_prompts_per_chunk(1);
  const v1::SubmitSweepResponse submitted = integration::SubmitSweep(*stub_, spec);
  ASSERT_EQ(submitted.jobs(), 10);
  const std::string sweep_id = submitted.sweep_id();

  // The stand-in takes job 0 (model X) and heartbeats it until told to stop.
  std::string stand_in;
  {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest request;
    request.set_name("stand-in");
    v1::RegisterWorkerResponse response;
    ASSERT_TRUE(workers_->RegisterWorker(&ctx, request, &response).ok());
    stand_in = response.worker_id();
  }
  v1::LeaseJobResponse held;
  {
    grpc::ClientContext ctx;
    v1::LeaseJobRequest request;
    request.set_worker_id(stand_in);
    ASSERT_TRUE(workers_->LeaseJob(&ctx, request, &held).ok());
    ASSERT_TRUE(held.leased());
  }
  const std::vector<v1::Job> jobs = Jobs(sweep_id);
  ASSERT_EQ(jobs.size(), 10u);
  ASSERT_EQ(held.job().job_id(), jobs[0].job_id());
  ASSERT_EQ(jobs[4].spec().seed(), 0);
  ASSERT_EQ(jobs[5].spec().seed(), 1);
  std::atomic<bool> keep_alive{true};
  std::thread heartbeat([&] {
    while (keep_alive.load()) {
      grpc::ClientContext ctx;
      v1::HeartbeatRequest request;
      request.set_worker_id(stand_in);
      request.set_job_id(held.job().job_id());
      request.set_lease_id(held.lease_id());
      v1::HeartbeatResponse response;
      (void)workers_->Heartbeat(&ctx, request, &response);
      std::this_thread::sleep_for(100ms);
    }
  });
  struct Join {
    std::atomic<bool>& flag;
    std::thread& thread;
    ~Join() {
      flag = false;
      if (thread.joinable()) thread.join();
    }
  } join{keep_alive, heartbeat};

  StartWorker();
  // Once the real worker is on Y, the stand-in goes silent. Then watch for
  // job 0 coming back: the scene needs Y jobs still queued at that moment
  // (else the primary order would give the same result and prove nothing).
  bool silent = false, back = false, y_still_queued = false;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!back && std::chrono::steady_clock::now() < deadline) {
    const std::vector<v1::Job> now = Jobs(sweep_id);
    ASSERT_EQ(now.size(), 10u);
    if (!silent && now[5].state() != v1::JOB_STATE_QUEUED) {
      keep_alive = false;
      heartbeat.join();
      silent = true;
    }
    if (silent && now[0].state() == v1::JOB_STATE_QUEUED) {
      back = true;
      for (int i = 5; i < 10; ++i) y_still_queued |= now[i].state() == v1::JOB_STATE_QUEUED;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(back) << "the stand-in's job never came back to the queue";
  EXPECT_TRUE(y_still_queued) << "job 0 came back after every Y job was leased: too slow a "
                                 "lapse for this test to tell locality from the primary order";

  const std::string log = WaitForWorkerLog();
  const std::vector<v1::Job> done = Jobs(sweep_id);
  int64_t last_y_update = 0;
  for (const v1::Job& job : done) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id() << ": " << job.error();
    EXPECT_EQ(job.chunks_committed(), job.chunks_total()) << job.job_id();
    EXPECT_EQ(job.attempts(), job.job_id() == jobs[0].job_id() ? 2 : 1) << job.job_id();
    if (job.spec().seed() == 1) last_y_update = std::max(last_y_update, job.updated_unix_ms());
  }
  // Job 0 ran after all of Y, the model the worker held when it came back.
  EXPECT_GE(done[0].updated_unix_ms(), last_y_update);

  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m,
                                std::regex(R"(model cache: (\d+) builds, (\d+) hits, (\d+) )"
                                           R"(evictions, (\d+) models kept)")))
      << log;
  EXPECT_EQ(m[4], "1") << "the budget must hold exactly one pythia-tiny\n" << log;
  // X, then Y (evicting X), then X again for job 0.
  EXPECT_EQ(m[1], "3") << log;
  EXPECT_EQ(m[2], "7") << log;  // the real worker ran 10 jobs, 3 of them built
  EXPECT_EQ(m[3], "2") << log;
}

// Before ReleaseJob a stopped worker left its lease to lapse: the job sat
// RUNNING for the lease's TTL and was charged an attempt it never used.
TEST_F(LocalityTest, WorkerStoppedMidJobGivesItsLeaseBack) {
  v1::SweepSpec spec;
  spec.set_name("stop");
  spec.add_models("pythia-tiny");
  spec.add_seeds(0);
  v1::DatasetSpec* kvpr = spec.add_datasets();
  kvpr->set_name("kvpr");
  kvpr->set_num_classes(2);
  spec.add_context_lengths(448);
  spec.set_num_prompts(12);
  spec.set_prompts_per_chunk(1);
  const v1::SubmitSweepResponse submitted = integration::SubmitSweep(*stub_, spec);
  ASSERT_FALSE(submitted.sweep_id().empty());
  const std::string sweep_id = submitted.sweep_id();
  StartWorker("first.log");
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  int64_t committed = 0;
  while (committed < 2 && std::chrono::steady_clock::now() < deadline) {
    committed = Jobs(sweep_id).at(0).chunks_committed();
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(committed, 2) << "the job never got going";
  ASSERT_LT(committed, 12) << "the job ended before the worker could be stopped";
  kill(pid_, SIGTERM);
  const std::string first_log = WaitForWorkerLog("first.log");
  EXPECT_NE(first_log.find("lease given back"), std::string::npos) << first_log;

  // Queued again at once (the lease has 1 s to run), uncharged, with the
  // chunks the worker streamed before it stopped.
  v1::Job job = Jobs(sweep_id).at(0);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.attempts(), 0);
  EXPECT_GE(job.chunks_committed(), committed);
  const int64_t kept = job.chunks_committed();

  // Another worker finishes it from there: every chunk committed once.
  StartWorker("second.log");
  const std::string second_log = WaitForWorkerLog("second.log");
  job = Jobs(sweep_id).at(0);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_EQ(job.attempts(), 1);
  EXPECT_EQ(job.chunks_committed(), 12);
  EXPECT_NE(second_log.find(absl::StrCat("resuming at chunk ", kept)), std::string::npos)
      << second_log;
}

TEST_F(LocalityTest, LeaseAheadJobIsGivenBackAtStopAndRunsOnceLater) {
  v1::SweepSpec spec;
  spec.set_name("ahead");
  spec.add_models("pythia-tiny");
  spec.add_seeds(0);
  v1::DatasetSpec* kvpr = spec.add_datasets();
  kvpr->set_name("kvpr");
  kvpr->set_num_classes(2);
  for (int n : {448, 480, 512}) spec.add_context_lengths(n);
  spec.set_num_prompts(8);
  spec.set_prompts_per_chunk(1);
  const v1::SubmitSweepResponse submitted = integration::SubmitSweep(*stub_, spec);
  ASSERT_EQ(submitted.jobs(), 3);
  const std::string sweep_id = submitted.sweep_id();
  StartWorker("first.log", {"--lease-ahead"});
  // The worker inside its first job with the second leased ahead: both
  // RUNNING under its id, only the first with chunks.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  bool both = false;
  std::vector<v1::Job> jobs;
  while (!both && std::chrono::steady_clock::now() < deadline) {
    jobs = Jobs(sweep_id);
    ASSERT_EQ(jobs.size(), 3u);
    both = jobs[0].state() == v1::JOB_STATE_RUNNING && jobs[0].chunks_committed() >= 1 &&
           jobs[0].chunks_committed() < 8 && jobs[1].state() == v1::JOB_STATE_RUNNING;
    if (!both) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(both) << "never saw job 1 leased ahead while job 0 ran";
  EXPECT_EQ(jobs[1].worker_id(), jobs[0].worker_id());
  EXPECT_EQ(jobs[1].chunks_committed(), 0);
  EXPECT_EQ(jobs[2].state(), v1::JOB_STATE_QUEUED);  // one job ahead, no more
  kill(pid_, SIGTERM);
  const std::string first_log = WaitForWorkerLog("first.log");
  EXPECT_NE(
      first_log.find(absl::StrCat("job ", jobs[1].job_id(), " leased ahead: lease given back")),
      std::string::npos)
      << first_log;

  // Both back in the queue at once, uncharged; job 0 keeps its chunks.
  std::vector<v1::Job> stopped = Jobs(sweep_id);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(stopped[i].state(), v1::JOB_STATE_QUEUED) << i;
    EXPECT_EQ(stopped[i].attempts(), 0) << i;
  }
  EXPECT_GE(stopped[0].chunks_committed(), jobs[0].chunks_committed());
  EXPECT_EQ(stopped[1].chunks_committed(), 0);

  // A second worker, leasing ahead too, runs the sweep to its end: every
  // job once, every prompt counted once.
  StartWorker("second.log", {"--lease-ahead"});
  const std::string second_log = WaitForWorkerLog("second.log");
  EXPECT_NE(second_log.find("ahead"), std::string::npos) << second_log;
  for (const v1::Job& job : Jobs(sweep_id)) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id() << ": " << job.error();
    EXPECT_EQ(job.attempts(), 1) << job.job_id();
    EXPECT_EQ(job.chunks_committed(), 8) << job.job_id();
  }
  grpc::ClientContext ctx;
  v1::QueryResultsRequest request;
  request.set_sweep_id(sweep_id);
  v1::QueryResultsResponse response;
  ASSERT_TRUE(stub_->QueryResults(&ctx, request, &response).ok());
  ASSERT_GT(response.rows_size(), 0);
  for (const v1::ResultRow& row : response.rows()) {
    EXPECT_EQ(row.count(), 8) << row.job_id() << " " << row.metric() << " layer " << row.layer();
  }
}

}  // namespace
}  // namespace layerflow
