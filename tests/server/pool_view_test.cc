// PoolView over a real core and SQLite store with a fake clock: worker
// states, GPUs, queue positions in lease order and the expected starts of
// pool_view.h's estimate, worked out by hand below.
#include "server/metrics/pool_view.h"

#include <atomic>
#include <map>

#include "absl/strings/str_cat.h"

#include "server/auth/authorizer.h"
#include "server/auth/token_store.h"
#include "tests/server/core_util.h"
#include "tests/server/test_util.h"

namespace layerflow::server {
namespace {

namespace v1 = ::layerflow::v1;
// CoreOnSqlite, OneStatChunk, TempDir: the server tests' shared fixtures.
using namespace ::layerflow::server::testing;  // NOLINT(build/namespaces)
using ::layerflow::testing::StatusIs;

class PoolViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto metrics = Metrics::Create("");  // kept, not served
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = *std::move(metrics);
    CoreOptions options;
    options.lease_ttl_ms = 60'000;
    options.heartbeat_interval_ms = 200;  // connected: seen within 600 ms
    options.retry_backoff_ms = 0;
    options.quarantine_after = 1;
    LF_ASSERT_OK_AND_ASSIGN(
        core_, CoreOnSqlite(
                   dir_.File("lf.db"), options, [this] { return now_.load(); }, metrics_.get()));
    view_ = std::make_unique<PoolView>(core_.get(), nullptr, metrics_.get(),
                                       [this] { return now_.load(); });
  }

  std::string Register(const std::string& name, const std::string& device, int gpus) {
    v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.mutable_capabilities()->set_device_type(device);
    request.mutable_capabilities()->set_gpu_count(gpus);
    request.mutable_capabilities()->set_gpu_memory_bytes(int64_t{80} << 30);
    auto r = core_->RegisterWorker(request);
    EXPECT_TRUE(r.ok()) << r.status();
    now_ += 1;  // registration order is the listing's
    return r.ok() ? r->worker_id() : "";
  }

  std::string Submit(int jobs, int priority) {
    v1::SweepSpec spec;
    spec.set_name("pool");
    spec.add_models("pythia-tiny");
    for (int s = 0; s < jobs; ++s) spec.add_seeds(s);
    spec.set_num_prompts(2);
    spec.set_prompts_per_chunk(2);  // one chunk a job
    spec.set_priority(priority);
    auto r = core_->SubmitSweep(spec);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->sweep_id() : "";
  }

  v1::LeaseJobResponse Lease(const std::string& worker) {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker);
    auto r = core_->LeaseJob(request);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r.ok() && r->leased());
    return r.ok() ? *r : v1::LeaseJobResponse();
  }

  void Finish(const v1::LeaseJobResponse& lease) {
    ASSERT_TRUE(core_->CommitChunk(OneStatChunk(lease)).ok());
    v1::CompleteJobRequest complete;
    complete.set_job_id(lease.job().job_id());
    complete.set_lease_id(lease.lease_id());
    ASSERT_TRUE(core_->CompleteJob(complete).ok());
  }

  std::vector<double> Starts(const v1::GetQueueResponse& queue) {
    std::vector<double> out;
    for (const v1::QueuedJob& j : queue.jobs()) out.push_back(j.expected_start_seconds());
    return out;
  }
  std::vector<int64_t> Positions(const v1::GetQueueResponse& queue) {
    std::vector<int64_t> out;
    for (const v1::QueuedJob& j : queue.jobs()) out.push_back(j.position());
    return out;
  }

  TempDir dir_;
  std::atomic<int64_t> now_{1'000'000};
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<CoordinatorCore> core_;
  std::unique_ptr<PoolView> view_;
};

TEST(HostOfWorkerNameTest, DropsOnlyAPidSuffix) {
  EXPECT_EQ(HostOfWorkerName("gpu-host-3:4127"), "gpu-host-3");
  EXPECT_EQ(HostOfWorkerName("gpu-host-3"), "gpu-host-3");
  EXPECT_EQ(HostOfWorkerName("rack:a"), "rack:a");
  EXPECT_EQ(HostOfWorkerName("trailing:"), "trailing:");
  EXPECT_EQ(HostOfWorkerName(":12"), ":12");
  EXPECT_EQ(HostOfWorkerName(""), "");
}

TEST_F(PoolViewTest, QueuePositionsAndExpectedStarts) {
  const std::string a = Register("gpu-a:101", "cuda", 2);
  const std::string b = Register("gpu-b", "cuda", 4);
  const std::string s1 = Submit(5, 0);

  // Two idle workers, nothing finished yet: positions 0 and 1 start now,
  // the rest are unknown.
  auto queue = view_->GetQueue(s1);
  ASSERT_TRUE(queue.ok()) << queue.status();
  EXPECT_EQ(Positions(*queue), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Starts(*queue), (std::vector<double>{0, 0, -1, -1, -1}));
  EXPECT_EQ(queue->queued_total(), 5);
  EXPECT_EQ(queue->running_total(), 0);
  EXPECT_EQ(queue->workers_available(), 2);
  EXPECT_EQ(queue->recent_jobs(), 0);

  // Job 0 runs 10 s on A: D = 10 s.
  const v1::LeaseJobResponse first = Lease(a);
  EXPECT_EQ(first.job().job_id(), s1 + "-0");
  now_ += 10'000;
  ASSERT_TRUE(core_->TouchWorker(a).ok());
  ASSERT_TRUE(core_->TouchWorker(b).ok());
  Finish(first);
  // B takes job 1; A idle. W = 2, I = 1: p = 0 now, p = 1 after
  // (1 - 1 + 1) * 10 / 2 = 5 s, p = 2 after 10 s.
  EXPECT_EQ(Lease(b).job().job_id(), s1 + "-1");
  queue = view_->GetQueue(s1);
  ASSERT_TRUE(queue.ok()) << queue.status();
  EXPECT_EQ(queue->jobs(0).job_id(), s1 + "-2");
  EXPECT_EQ(Positions(*queue), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(Starts(*queue), (std::vector<double>{0, 5, 10}));
  EXPECT_EQ(queue->recent_jobs(), 1);
  EXPECT_DOUBLE_EQ(queue->recent_job_seconds(), 10);
  EXPECT_EQ(queue->running_total(), 1);

  // A sweep of higher priority goes ahead of every job of s1.
  const std::string s2 = Submit(1, 5);
  queue = view_->GetQueue(s1);
  ASSERT_TRUE(queue.ok()) << queue.status();
  EXPECT_EQ(Positions(*queue), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(Starts(*queue), (std::vector<double>{5, 10, 15}));
  auto queue2 = view_->GetQueue(s2);
  ASSERT_TRUE(queue2.ok()) << queue2.status();
  EXPECT_EQ(Positions(*queue2), (std::vector<int64_t>{0}));
  EXPECT_EQ(queue2->queued_total(), 4);

  // A fails s2's job with a host error and is quarantined (quarantine_after
  // 1, B still live): W = 1, I = 0, so s1's jobs at p = 1, 2, 3 start
  // after 2, 3 and 4 jobs of 10 s.
  const v1::LeaseJobResponse on_a = Lease(a);
  EXPECT_EQ(on_a.job().job_id(), s2 + "-0");
  v1::FailJobRequest fail;
  fail.set_job_id(on_a.job().job_id());
  fail.set_lease_id(on_a.lease_id());
  fail.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  fail.set_error("CUDA out of memory");
  ASSERT_TRUE(core_->FailJob(fail).ok());
  queue = view_->GetQueue(s1);
  ASSERT_TRUE(queue.ok()) << queue.status();
  EXPECT_EQ(Positions(*queue), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(Starts(*queue), (std::vector<double>{20, 30, 40}));
  EXPECT_EQ(queue->workers_available(), 1);
  // A retried attempt is no recent duration.
  EXPECT_EQ(queue->recent_jobs(), 1);

  EXPECT_THAT(view_->GetQueue("").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "sweep_id: required"));
  EXPECT_THAT(view_->GetQueue("sw-nope").status(),
              StatusIs(absl::StatusCode::kNotFound, "unknown sweep 'sw-nope'"));
}

// More queued jobs than one page (PoolView::kPageSize), read again only
// after a change.
TEST_F(PoolViewTest, PositionsSpanPagesAndFollowChanges) {
  const std::string a = Register("gpu-a:101", "cuda", 2);
  const int big = PoolView::kPageSize + 100;
  const std::string s1 = Submit(big, 0);
  const std::string s2 = Submit(5, 1);
  auto queue = view_->GetQueue(s1);
  ASSERT_TRUE(queue.ok()) << queue.status();
  ASSERT_EQ(queue->jobs_size(), big);
  EXPECT_EQ(queue->queued_total(), big + 5);
  // s2 has the higher priority: s1's jobs come after its 5.
  EXPECT_EQ(queue->jobs(0).position(), 5);
  EXPECT_EQ(queue->jobs(big - 1).position(), big + 4);
  EXPECT_EQ(queue->jobs(big - 1).job_id(), absl::StrCat(s1, "-", big - 1));
  auto queue2 = view_->GetQueue(s2);
  ASSERT_TRUE(queue2.ok()) << queue2.status();
  EXPECT_EQ(Positions(*queue2), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // A lease (a change) moves everyone up by one.
  EXPECT_EQ(Lease(a).job().job_id(), s2 + "-0");
  queue2 = view_->GetQueue(s2);
  ASSERT_TRUE(queue2.ok()) << queue2.status();
  EXPECT_EQ(Positions(*queue2), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(queue2->running_total(), 1);
  queue = view_->GetQueue(s1);
  ASSERT_TRUE(queue.ok()) << queue.status();
  EXPECT_EQ(queue->jobs(0).position(), 4);
}

// With several users, positions follow the store's fair share: the order
// GetQueue predicts is the order in which leases then go, one by one.
TEST_F(PoolViewTest, PositionsAreTheFairShareLeaseOrder) {
  auto tokens = auth::OpenSqliteTokenStore(dir_.File("auth.db"));
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  auth::Authorizer authorizer(*std::move(tokens), {});
  PoolView view(core_.get(), &authorizer, metrics_.get(), [this] { return now_.load(); });
  const std::string w1 = Register("gpu-a:1", "cuda", 1);
  const std::string w2 = Register("gpu-b:2", "cuda", 1);
  auto submit = [&](const std::string& user, int jobs, int priority) {
    v1::SweepSpec spec;
    spec.set_name("fair");
    spec.add_models("pythia-tiny");
    for (int s = 0; s < jobs; ++s) spec.add_seeds(s);
    spec.set_num_prompts(2);
    spec.set_prompts_per_chunk(2);
    spec.set_priority(priority);
    auto r = core_->SubmitSweep(spec, user);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(authorizer
                    .RecordOwner(auth::Identity{.user = user, .role = auth::Role::kUser},
                                 auth::OwnedKind::kSweep, r->sweep_id())
                    .ok());
    return r->sweep_id();
  };
  // alice first with 4 jobs, then bob 2 (priority 3 only orders bob's own),
  // then alice again at priority 9: within alice, her second sweep first.
  const std::string a1 = submit("alice", 4, 0);
  const std::string b1 = submit("bob", 2, 3);
  const std::string a2 = submit("alice", 1, 9);
  // One running job of alice's: bob (0 running) goes first.
  EXPECT_EQ(Lease(w1).job().job_id(), a2 + "-0");

  std::map<int64_t, std::string> predicted;  // position -> job
  for (const std::string& sweep : {a1, b1, a2}) {
    auto queue = view.GetQueue(sweep);
    ASSERT_TRUE(queue.ok()) << queue.status();
    for (const v1::QueuedJob& j : queue->jobs()) predicted[j.position()] = j.job_id();
  }
  // alice 1 running, bob 0: bob, then tie 1-1 by name: alice, then bob
  // (alice 2 vs bob 1), then alice's remaining three.
  EXPECT_EQ(predicted, (std::map<int64_t, std::string>{{0, b1 + "-0"},
                                                       {1, a1 + "-0"},
                                                       {2, b1 + "-1"},
                                                       {3, a1 + "-1"},
                                                       {4, a1 + "-2"},
                                                       {5, a1 + "-3"}}));
  // The store agrees, lease after lease (no job ends meanwhile).
  for (const auto& [position, job_id] : predicted) {
    EXPECT_EQ(Lease(position % 2 == 0 ? w2 : w1).job().job_id(), job_id) << "position " << position;
  }

  auto snapshot = view.Snapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->user_jobs, (std::map<std::pair<std::string, std::string>, int64_t>{
                                     {{"alice", "running"}, 5}, {{"bob", "running"}, 2}}));
}

TEST_F(PoolViewTest, WorkersStatesGpusAndSnapshot) {
  const std::string a = Register("gpu-a:101", "cuda", 2);
  const std::string b = Register("gpu-b", "cuda", 4);
  const std::string c = Register("cpu-c:7", "cpu", 0);
  const std::string s1 = Submit(3, 0);
  now_ += 1'000;  // all three silent for 1 s > 600 ms: gone until seen
  ASSERT_TRUE(core_->TouchWorker(a).ok());
  const v1::LeaseJobResponse on_b = Lease(b);

  auto workers = view_->ListWorkers(true);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->workers_size(), 3);
  const v1::WorkerInfo& wa = workers->workers(0);
  EXPECT_EQ(wa.worker_id(), a);
  EXPECT_EQ(wa.name(), "gpu-a:101");
  EXPECT_EQ(wa.host(), "gpu-a");
  EXPECT_EQ(wa.device_type(), "cuda");
  EXPECT_EQ(wa.gpu_count(), 2);
  EXPECT_EQ(wa.gpu_memory_bytes(), int64_t{80} << 30);
  EXPECT_EQ(wa.state(), v1::WORKER_STATE_IDLE);
  EXPECT_EQ(wa.job_id(), "");
  EXPECT_EQ(wa.last_seen_unix_ms(), 1'001'003);
  EXPECT_EQ(wa.registered_unix_ms(), 1'000'000);
  const v1::WorkerInfo& wb = workers->workers(1);
  EXPECT_EQ(wb.host(), "gpu-b");
  EXPECT_EQ(wb.state(), v1::WORKER_STATE_RUNNING);
  EXPECT_EQ(wb.job_id(), on_b.job().job_id());
  const v1::WorkerInfo& wc = workers->workers(2);
  EXPECT_EQ(wc.host(), "cpu-c");
  EXPECT_EQ(wc.device_type(), "cpu");
  EXPECT_EQ(wc.state(), v1::WORKER_STATE_GONE);
  // Connected: A (2) and B (4, busy).
  EXPECT_EQ(workers->gpus_total(), 6);
  EXPECT_EQ(workers->gpus_busy(), 4);

  auto snapshot = view_->Snapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->user_jobs, (std::map<std::pair<std::string, std::string>, int64_t>{
                                     {{"anonymous", "queued"}, 2}, {{"anonymous", "running"}, 1}}));
  EXPECT_EQ(snapshot->workers_busy, 1);
  EXPECT_EQ(snapshot->gpus_total, 6);
  EXPECT_EQ(snapshot->gpus_busy, 4);

  // A host error quarantines A (B is live); only admins see why.
  const v1::LeaseJobResponse on_a = Lease(a);
  v1::FailJobRequest fail;
  fail.set_job_id(on_a.job().job_id());
  fail.set_lease_id(on_a.lease_id());
  fail.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  fail.set_error("CUDA out of memory");
  ASSERT_TRUE(core_->FailJob(fail).ok());
  workers = view_->ListWorkers(true);
  ASSERT_TRUE(workers.ok()) << workers.status();
  EXPECT_EQ(workers->workers(0).state(), v1::WORKER_STATE_QUARANTINED);
  EXPECT_THAT(workers->workers(0).quarantine_reason(), ::testing::HasSubstr("CUDA out of memory"));
  workers = view_->ListWorkers(false);
  ASSERT_TRUE(workers.ok()) << workers.status();
  EXPECT_EQ(workers->workers(0).state(), v1::WORKER_STATE_QUARANTINED);
  EXPECT_EQ(workers->workers(0).quarantine_reason(), "");
  // Quarantined but connected: its GPUs still count, none busy.
  EXPECT_EQ(workers->gpus_total(), 6);
  EXPECT_EQ(workers->gpus_busy(), 4);
  (void)s1;
  (void)c;
}

}  // namespace
}  // namespace layerflow::server
